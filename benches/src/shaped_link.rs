//! A shaped origin link for `shoal-fuse-bench` (included with `#[path]`):
//!
//! - [`Netns`]: a network namespace for the origin joined to the root
//!   namespace by a veth pair, the origin side's egress shaped with `tc tbf`
//!   (so every byte the origin sends is rate-limited), removed on drop;
//! - [`DelayRelay`]: a TCP relay in the root namespace, in front of a server
//!   in that namespace, that holds every byte for a fixed delay in each
//!   direction (a delay line: `tc netem` is not available here);
//! - [`install_signal_cleanup`]: on SIGINT/SIGTERM/SIGHUP, stops the
//!   processes this one started, unmounts what is left under the registered
//!   directories, deletes the namespaces and removes the directories, then
//!   exits (drop guards do not run on a signal).

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, ensure, Context, Result};

/// Most bytes one direction of one relayed connection holds back (at
/// 100 MB/s, 5 ms of delay is 0.5 MB in flight).
const DELAY_BUF: usize = 4 << 20;
/// Bytes per read() of the relay.
const READ_CHUNK: usize = 64 << 10;
/// Most bytes the relay writes in one batch of due data.
const WRITE_BATCH: usize = 1 << 20;

// ---------------------------------------------------------------------------
// Cleanup on signals
// ---------------------------------------------------------------------------

/// What a signal handler must undo, since drop guards do not run then.
struct Registry {
    /// (namespace, root-side veth name).
    netns: Vec<(String, String)>,
    /// Temporary directories: FUSE mounts below them are unmounted, then
    /// they are removed.
    dirs: Vec<PathBuf>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    netns: Vec::new(),
    dirs: Vec::new(),
});

/// Set once a signal arrived: the main thread stops at its next
/// [`halt_if_interrupted`] instead of starting new work during the cleanup.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Blocks forever once a signal arrived (the cleanup thread then exits the
/// process). Called at the points where the bench starts new work.
pub fn halt_if_interrupted() {
    while INTERRUPTED.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Removes `dir` (after unmounting what is below it) if a signal stops the run.
pub fn register_dir(dir: &Path) {
    registry().dirs.push(dir.to_path_buf());
}

/// Starts a thread that, on SIGINT, SIGTERM or SIGHUP, cleans up what the
/// registry holds and exits with 128 + the signal number. Must be called
/// before any namespace is created.
pub fn install_signal_cleanup() -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Registered here, on this thread, so a signal arriving before the
    // waiting thread runs is not lost (tokio queues it).
    let (mut int, mut term, mut hup) = rt.block_on(async {
        Ok::<_, std::io::Error>((
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
            signal(SignalKind::hangup())?,
        ))
    })?;
    std::thread::Builder::new()
        .name("signal-cleanup".into())
        .spawn(move || {
            let code = rt.block_on(async {
                tokio::select! {
                    _ = int.recv() => 130,
                    _ = term.recv() => 143,
                    _ = hup.recv() => 129,
                }
            });
            INTERRUPTED.store(true, Ordering::SeqCst);
            eprintln!("shoal-fuse-bench: signal received, cleaning up");
            // Held until exit: drop guards elsewhere wait instead of racing.
            let reg = registry();
            stop_children();
            // Whatever the main thread started before reaching a halt point.
            std::thread::sleep(Duration::from_millis(500));
            stop_children();
            for dir in &reg.dirs {
                unmount_below(dir);
            }
            for (ns, veth) in &reg.netns {
                teardown_netns(ns, veth);
            }
            for dir in &reg.dirs {
                for _ in 0..3 {
                    if std::fs::remove_dir_all(dir).is_ok() || !dir.exists() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
            eprintln!(
                "shoal-fuse-bench: cleaned up (namespaces deleted, temporary directories removed)"
            );
            std::process::exit(code);
        })?;
    Ok(())
}

/// Direct children of this process (rclone, cache-node, fuse-client, ...).
fn children() -> Vec<i32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|p| p.parse::<i32>().ok()));
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Whether `pid` still runs (a zombie, exited but not reaped, does not).
fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(|st| st != "Z"))
        })
        .unwrap_or(false)
}

/// SIGTERM to every child (FUSE daemons unmount on it), SIGKILL after 5 s.
fn stop_children() {
    let kids = children();
    for &p in &kids {
        // SAFETY: signalling our own child processes.
        unsafe {
            libc::kill(p, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && kids.iter().any(|&p| running(p)) {
        std::thread::sleep(Duration::from_millis(50));
    }
    for &p in kids.iter().filter(|&&p| running(p)) {
        // SAFETY: as above.
        unsafe {
            libc::kill(p, libc::SIGKILL);
        }
    }
}

/// Lazily unmounts every FUSE mount at or below `dir`.
fn unmount_below(dir: &Path) {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter(|l| l.contains("fuse"))
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| Path::new(p).starts_with(dir))
        .collect();
    // Deepest first.
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = Command::new("fusermount3")
            .arg("-uz")
            .arg(p)
            .stderr(Stdio::null())
            .status();
    }
}

/// Kills what runs inside `ns` (only our processes run there), deletes it
/// and the root side of its veth pair.
fn teardown_netns(ns: &str, veth: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for p in String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            // SAFETY: a process inside the namespace this run created.
            unsafe {
                libc::kill(p, libc::SIGKILL);
            }
        }
    }
    let quiet = |args: &[&str]| {
        let _ = Command::new("ip")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    };
    quiet(&["netns", "del", ns]);
    // Deleting the namespace destroys the veth pair (asynchronously); this
    // only matters when the namespace was never made.
    quiet(&["link", "del", veth]);
}

// ---------------------------------------------------------------------------
// Network namespace with a shaped veth
// ---------------------------------------------------------------------------

/// The origin's network namespace: `eth0` at `origin_ip`/30 inside, its
/// peer `host_if` at `host_ip`/30 in the root namespace, `tbf` on the
/// origin's egress. Everything inside is killed and the namespace deleted
/// on drop.
pub struct Netns {
    pub name: String,
    pub host_if: String,
    pub host_ip: String,
    pub origin_ip: String,
    /// `tc qdisc show dev eth0` inside, after setup.
    pub qdisc: String,
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .with_context(|| format!("running ip {}", args.join(" ")))?;
    ensure!(
        out.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

impl Netns {
    /// Creates the namespace and the veth pair, and shapes the origin's
    /// egress to `rate` (a `tc` rate such as `800mbit`).
    pub fn create(rate: &str) -> Result<Self> {
        let pid = std::process::id();
        let name = format!("shoal-fuse-bench-{pid}");
        let host_if = format!("sfb{pid}");
        // A free /30 in 10.231.7.0/24 (another run may hold one).
        let used = Command::new("ip")
            .args(["-o", "-4", "addr", "show"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let base = (0..64u32)
            .map(|k| 4 * k)
            .find(|b| {
                !used.contains(&format!(" 10.231.7.{}/", b + 1))
                    && !used.contains(&format!(" 10.231.7.{}/", b + 2))
            })
            .ok_or_else(|| anyhow!("no free /30 in 10.231.7.0/24"))?;
        let ns = Self {
            name,
            host_if,
            host_ip: format!("10.231.7.{}", base + 1),
            origin_ip: format!("10.231.7.{}", base + 2),
            qdisc: String::new(),
        };
        // Registered first: a signal during the setup still removes it.
        registry().netns.push((ns.name.clone(), ns.host_if.clone()));
        // From here on, an error drops `ns`, which deletes what was made.
        let mut ns = ns;
        let (n, h) = (ns.name.clone(), ns.host_if.clone());
        ip(&["netns", "add", &n])?;
        ip(&[
            "link", "add", &h, "type", "veth", "peer", "name", "eth0", "netns", &n,
        ])?;
        ip(&["addr", "add", &format!("{}/30", ns.host_ip), "dev", &h])?;
        ip(&["link", "set", &h, "up"])?;
        ip(&[
            "-n",
            &n,
            "addr",
            "add",
            &format!("{}/30", ns.origin_ip),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &n, "link", "set", "eth0", "up"])?;
        ip(&["-n", &n, "link", "set", "lo", "up"])?;
        let tc = |args: &[&str]| -> Result<String> {
            let out = Command::new("ip")
                .args(["netns", "exec", &n, "tc"])
                .args(args)
                .output()
                .context("running tc")?;
            ensure!(
                out.status.success(),
                "tc {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        };
        tc(&[
            "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", rate, "burst", "256kb",
            "latency", "50ms",
        ])?;
        ns.qdisc = tc(&["qdisc", "show", "dev", "eth0"])?
            .lines()
            .next()
            .unwrap_or("")
            .to_string();
        Ok(ns)
    }

    /// `ip netns exec NAME program`: the program runs inside (ip execs it,
    /// so the child's pid is the program's).
    pub fn command(&self, program: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let mut reg = registry();
        teardown_netns(&self.name, &self.host_if);
        reg.netns.retain(|(n, _)| n != &self.name);
    }
}

// ---------------------------------------------------------------------------
// Delay relay
// ---------------------------------------------------------------------------

/// A TCP relay that forwards every connection to `target`, holding each
/// piece of data `delay` in each direction. A new connection is forwarded
/// only after one round trip (2 x delay), as a TCP handshake over such a link
/// would take. Reading never waits for the delay (a writer thread releases
/// each piece at its time stamp + delay), so the delay adds latency, not a
/// rate limit, up to `DELAY_BUF` bytes in flight per direction.
pub struct DelayRelay {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<HashMap<u64, Vec<TcpStream>>>>,
    /// Bytes forwarded from the target to clients.
    down: Arc<AtomicU64>,
    accept: Option<JoinHandle<()>>,
}

impl DelayRelay {
    /// Listens on a free loopback port.
    pub fn start(target: SocketAddr, delay: Duration) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the relay")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<HashMap<u64, Vec<TcpStream>>>> = Arc::default();
        let down = Arc::new(AtomicU64::new(0));
        let (stop2, conns2, down2) = (stop.clone(), conns.clone(), down.clone());
        let accept = std::thread::Builder::new()
            .name("relay-accept".into())
            .spawn(move || {
                let mut id = 0u64;
                for client in listener.incoming() {
                    if stop2.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    id += 1;
                    let (conns, down) = (conns2.clone(), down2.clone());
                    if let Ok(c) = client.try_clone() {
                        lock(&conns).insert(id, vec![c]);
                    }
                    let me = id;
                    let _ =
                        std::thread::Builder::new()
                            .name("relay-conn".into())
                            .spawn(move || {
                                serve(client, target, delay, &down, &conns, me);
                                lock(&conns).remove(&me);
                            });
                }
            })?;
        Ok(Self {
            addr,
            stop,
            conns,
            down,
            accept: Some(accept),
        })
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Bytes forwarded from the target to clients so far.
    pub fn bytes_down(&self) -> u64 {
        self.down.load(Ordering::SeqCst)
    }
}

impl Drop for DelayRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        for socks in lock(&self.conns).values() {
            for s in socks {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One relayed connection: both directions until both are done.
fn serve(
    client: TcpStream,
    target: SocketAddr,
    delay: Duration,
    down: &AtomicU64,
    conns: &Mutex<HashMap<u64, Vec<TcpStream>>>,
    id: u64,
) {
    // The handshake's round trip.
    std::thread::sleep(2 * delay);
    let server = match TcpStream::connect_timeout(&target, Duration::from_secs(10)) {
        Ok(s) => s,
        Err(_) => {
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let clones = (
        client.try_clone(),
        server.try_clone(),
        server.try_clone(),
        client.try_clone(),
    );
    let (Ok(c_r), Ok(s_w), Ok(s_r), Ok(c_w)) = clones else {
        let _ = client.shutdown(Shutdown::Both);
        let _ = server.shutdown(Shutdown::Both);
        return;
    };
    if let (Some(v), Ok(s)) = (lock(conns).get_mut(&id), server.try_clone()) {
        v.push(s);
    }
    let no_count = AtomicU64::new(0);
    std::thread::scope(|s| {
        s.spawn(|| pipe(c_r, s_w, delay, &no_count));
        pipe(s_r, c_w, delay, down);
    });
}

/// The bytes of one direction waiting for their time.
struct Line {
    state: Mutex<LineState>,
    cv: Condvar,
}

#[derive(Default)]
struct LineState {
    chunks: VecDeque<(Instant, Vec<u8>)>,
    bytes: usize,
    /// The reader saw the end of the stream (or an error).
    eof: bool,
    /// The writer failed: stop reading.
    dead: bool,
}

/// Copies `from` to `to`, each piece released `delay` after it was read.
fn pipe(mut from: TcpStream, to: TcpStream, delay: Duration, counter: &AtomicU64) {
    let line = Line {
        state: Mutex::new(LineState::default()),
        cv: Condvar::new(),
    };
    let from_ctl = from.try_clone().ok();
    std::thread::scope(|s| {
        // Writer: sleeps until the oldest piece is due, then writes every
        // piece that is due by then.
        s.spawn(|| {
            let mut to = &to;
            loop {
                let mut st = lock(&line.state);
                let batch = loop {
                    if st.dead {
                        return;
                    }
                    match st.chunks.front() {
                        Some(&(due, _)) => {
                            let now = Instant::now();
                            if due > now {
                                // Later pieces are due later: nothing to
                                // wake for before this one.
                                drop(st);
                                std::thread::sleep(due - now);
                                st = lock(&line.state);
                                continue;
                            }
                            let mut batch = Vec::new();
                            let mut n = 0;
                            while let Some((due, _)) = st.chunks.front() {
                                if *due > now || n >= WRITE_BATCH {
                                    break;
                                }
                                let (_, c) = st.chunks.pop_front().expect("front");
                                n += c.len();
                                batch.push(c);
                            }
                            st.bytes -= n;
                            break batch;
                        }
                        None if st.eof => {
                            let _ = to.shutdown(Shutdown::Write);
                            return;
                        }
                        None => st = line.cv.wait(st).unwrap_or_else(|e| e.into_inner()),
                    }
                };
                line.cv.notify_all();
                drop(st);
                for c in batch {
                    if to.write_all(&c).is_err() {
                        lock(&line.state).dead = true;
                        line.cv.notify_all();
                        let _ = to.shutdown(Shutdown::Both);
                        if let Some(f) = &from_ctl {
                            let _ = f.shutdown(Shutdown::Both);
                        }
                        return;
                    }
                    counter.fetch_add(c.len() as u64, Ordering::Relaxed);
                }
            }
        });
        // Reader: stamps each piece with its release time.
        loop {
            let mut buf = vec![0u8; READ_CHUNK];
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => 0,
                Ok(n) => n,
            };
            let mut st = lock(&line.state);
            if n == 0 {
                st.eof = true;
                line.cv.notify_all();
                break;
            }
            buf.truncate(n);
            let due = Instant::now() + delay;
            while st.bytes + n > DELAY_BUF && !st.dead {
                st = line.cv.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            if st.dead {
                break;
            }
            st.bytes += n;
            st.chunks.push_back((due, buf));
            line.cv.notify_all();
        }
    });
}
