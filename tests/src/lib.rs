//! Test harness: starts real processes — `rclone serve s3`, `cache-node` —
//! on free loopback ports, and runs `dataset-ctl` against them.
//!
//! Binaries are looked up next to the test executable's target directory
//! (`target/<profile>/`), so `cargo build --release` followed by
//! `cargo test --release` tests exactly what was built.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Access key the test S3 server accepts.
pub const ACCESS_KEY: &str = "shoaltest";
/// Secret key the test S3 server accepts (tests check it never leaks).
pub const SECRET_KEY: &str = "shoal-secret-8f2e1c";

/// Path of a workspace binary built in the same profile as this test.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} not built: run `cargo build --release` first",
        p.display()
    );
    p
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Waits until `check` succeeds or `timeout` passes, polling every 20 ms.
pub fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("timed out after {timeout:?} waiting for {what}")
}

/// Minimal HTTP GET on loopback, returning (status, body).
pub fn http_get(addr: &str, path: &str) -> Result<(u16, String)> {
    use std::io::Write;
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    let status = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("bad HTTP status line")?;
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// A process killed on drop.
pub struct Proc {
    child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(cmd: &mut Command, log: PathBuf) -> Result<Self> {
        let out = std::fs::File::create(&log)?;
        let child = cmd
            .stdout(out.try_clone()?)
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("spawning {cmd:?}"))?;
        Ok(Self { child, log })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait; returns the exit status code.
    pub fn terminate(&mut self) -> Option<i32> {
        // SAFETY: sending a signal to our own child process id.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        self.child.wait().ok().and_then(|s| s.code())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A process stopped with SIGSTOP (a frozen host, a stuck disk), resumed
/// with SIGCONT on drop so a failing test never leaves it stopped.
pub struct Frozen(u32);

impl Frozen {
    pub fn new(pid: u32) -> Self {
        // SAFETY: sending a signal to a process id we own.
        unsafe {
            libc::kill(pid as i32, libc::SIGSTOP);
        }
        Self(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe {
            libc::kill(self.0 as i32, libc::SIGCONT);
        }
    }
}

/// The value of one series (exact text, labels included) in /metrics text.
pub fn parse_metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

/// Waits for `child` to exit within `limit`; None if it is still running.
/// The logs of a process's starts 1..=`starts` (each start writes its own
/// file, named by `path`), joined: what a failure report shows.
pub fn logs_of_starts(starts: u32, path: impl Fn(u32) -> PathBuf) -> String {
    (1..=starts)
        .map(|i| std::fs::read_to_string(path(i)).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn wait_child(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `rclone serve s3` over a directory whose subdirectories are buckets.
pub struct S3Server {
    pub root: PathBuf,
    pub endpoint: String,
    _proc: Proc,
}

impl S3Server {
    /// Starts the server. `etag_hash` is rclone's `--etag-hash` ("MD5", or
    /// "" for no ETags at all).
    pub fn start(root: &Path, log_dir: &Path, etag_hash: &str) -> Result<Self> {
        std::fs::create_dir_all(root)?;
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let proc = Proc::spawn(
            Command::new("rclone")
                .args(["serve", "s3", "--addr", &addr])
                .arg(format!("--auth-key={ACCESS_KEY},{SECRET_KEY}"))
                .arg(format!("--etag-hash={etag_hash}"))
                .args(["--dir-cache-time", "0s", "--config", "/dev/null"])
                .arg(root),
            log_dir.join(format!("rclone-{port}.log")),
        )?;
        wait_for("rclone serve s3", Duration::from_secs(20), || {
            TcpStream::connect(&addr).is_ok()
        })?;
        Ok(Self {
            root: root.to_path_buf(),
            endpoint: format!("http://{addr}"),
            _proc: proc,
        })
    }
}

/// A small ext4 filesystem in a file, loop-mounted at `dir`: a disk that
/// fills up or freezes (`fsfreeze`: writes block in the kernel, as on a
/// stuck disk). Thawed and unmounted on drop.
pub struct LoopFs {
    pub dir: PathBuf,
    image: PathBuf,
}

fn run_ok(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl LoopFs {
    pub fn mount(image: &Path, dir: &Path, size_mib: u64) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        std::fs::File::create(image)?.set_len(size_mib << 20)?;
        run_ok(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(image))?;
        run_ok(
            Command::new("mount")
                .args(["-o", "loop"])
                .arg(image)
                .arg(dir),
        )?;
        Ok(Self {
            dir: dir.to_path_buf(),
            image: image.to_path_buf(),
        })
    }

    pub fn freeze(&self) -> Result<()> {
        run_ok(Command::new("fsfreeze").arg("-f").arg(&self.dir))
    }

    pub fn thaw(&self) -> Result<()> {
        run_ok(Command::new("fsfreeze").arg("-u").arg(&self.dir))
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let _ = self.thaw();
        let _ = Command::new("umount").arg(&self.dir).status();
        let _ = std::fs::remove_file(&self.image);
    }
}

/// Whether a thread of process `pid` sleeps uninterruptibly (state D):
/// blocked in the kernel, e.g. writing to a frozen filesystem.
pub fn has_thread_in_d_state(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|t| {
        std::fs::read_to_string(t.path().join("stat"))
            .ok()
            .and_then(|s| s.rsplit_once(") ").map(|(_, r)| r.starts_with('D')))
            .unwrap_or(false)
    })
}

/// moto's S3 server (PyPI `moto[server]`): in memory, with real ETags and
/// If-Match enforced, and keys no filesystem can hold. Objects are put
/// with boto3 (installed with moto).
pub struct MotoServer {
    pub endpoint: String,
    _proc: Proc,
}

impl MotoServer {
    pub fn start(log_dir: &Path) -> Result<Self> {
        let port = free_port();
        let proc = Proc::spawn(
            Command::new("moto_server").args(["-H", "127.0.0.1", "-p", &port.to_string()]),
            log_dir.join(format!("moto-{port}.log")),
        )?;
        let addr = format!("127.0.0.1:{port}");
        wait_for("moto_server", Duration::from_secs(30), || {
            TcpStream::connect(&addr).is_ok()
        })?;
        Ok(Self {
            endpoint: format!("http://{addr}"),
            _proc: proc,
        })
    }

    /// Creates `bucket` and puts each (key, body); keys go to Python as
    /// JSON, so any character survives the trip.
    pub fn put(&self, bucket: &str, objects: &[(String, Vec<u8>)]) -> Result<()> {
        let objs: Vec<serde_json::Value> = objects
            .iter()
            .map(|(k, b)| serde_json::json!([k, b]))
            .collect();
        let script = r#"
import boto3, json, sys
a = json.load(sys.stdin)
s3 = boto3.client("s3", endpoint_url=a["endpoint"], aws_access_key_id=a["ak"],
                  aws_secret_access_key=a["sk"], region_name="us-east-1")
s3.create_bucket(Bucket=a["bucket"])
for k, b in a["objects"]:
    s3.put_object(Bucket=a["bucket"], Key=k, Body=bytes(b))
"#;
        let input = serde_json::json!({
            "endpoint": self.endpoint, "ak": ACCESS_KEY, "sk": SECRET_KEY,
            "bucket": bucket, "objects": objs,
        });
        let mut child = Command::new("python3")
            .args(["-c", script])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(input.to_string().as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "putting objects into moto: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}

/// Mesh settings of a node under test.
#[derive(Debug, Clone)]
pub struct MeshOpts {
    pub tls_dir: PathBuf,
    pub seeds: Vec<String>,
}

/// Options of a cache node under test.
#[derive(Debug, Clone)]
pub struct NodeOpts {
    pub memory_quota: String,
    pub disk_quota: String,
    pub env: Vec<(String, String)>,
    pub name: Option<String>,
    pub mesh: Option<MeshOpts>,
    /// Further cache-node flags.
    pub args: Vec<String>,
}

impl Default for NodeOpts {
    fn default() -> Self {
        Self {
            memory_quota: "256MiB".into(),
            disk_quota: "1GiB".into(),
            env: vec![
                ("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY.into()),
                ("AWS_SECRET_ACCESS_KEY".into(), SECRET_KEY.into()),
            ],
            name: None,
            mesh: None,
            args: Vec::new(),
        }
    }
}

/// A cache-node process with its own directories and ports.
pub struct Node {
    pub dir: PathBuf,
    pub listen: String,
    pub admin: String,
    /// QUIC address for peers (used when the node is in a mesh).
    pub peer: String,
    pub opts: NodeOpts,
    pub proc: Option<Proc>,
    starts: u32,
}

impl Node {
    pub fn start(dir: &Path, opts: NodeOpts) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut n = Self {
            dir: dir.to_path_buf(),
            listen: format!("127.0.0.1:{}", free_port()),
            admin: format!("127.0.0.1:{}", free_port()),
            peer: format!("127.0.0.1:{}", free_port()),
            opts,
            proc: None,
            starts: 0,
        };
        // A port picked free can be taken by another test before the node
        // binds it: pick new ports and try again in that case only.
        for _ in 0..4 {
            match n.restart() {
                Err(e) if n.logs().contains("Address already in use") => {
                    eprintln!("cache-node lost a port race, retrying: {e:#}");
                    n.listen = format!("127.0.0.1:{}", free_port());
                    n.admin = format!("127.0.0.1:{}", free_port());
                    n.peer = format!("127.0.0.1:{}", free_port());
                }
                r => return r.map(|()| n),
            }
        }
        n.restart().map(|()| n)
    }

    pub fn memory_dir(&self) -> PathBuf {
        self.dir.join("mem")
    }

    pub fn disk_dir(&self) -> PathBuf {
        self.dir.join("disk")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("data/node.sock")
    }

    /// (Re)starts the process on the same directories and ports and waits
    /// for `/readyz`.
    pub fn restart(&mut self) -> Result<()> {
        self.starts += 1;
        let mut cmd = Command::new(bin("cache-node"));
        cmd.arg("--data-dir")
            .arg(self.dir.join("data"))
            .arg("--memory-dir")
            .arg(self.memory_dir())
            .arg("--memory-quota")
            .arg(&self.opts.memory_quota)
            .arg("--disk-dir")
            .arg(self.disk_dir())
            .arg("--disk-quota")
            .arg(&self.opts.disk_quota)
            .args(["--listen", &self.listen, "--admin", &self.admin])
            .env_remove("AWS_PROFILE")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("SHOAL_LOG", "info,shoal_cache_node=debug");
        for (k, v) in &self.opts.env {
            cmd.env(k, v);
        }
        if let Some(name) = &self.opts.name {
            cmd.args(["--name", name]);
        }
        cmd.args(&self.opts.args);
        if let Some(m) = &self.opts.mesh {
            cmd.args(["--peer-listen", &self.peer])
                .arg("--tls-dir")
                .arg(&m.tls_dir);
            for s in &m.seeds {
                cmd.args(["--seed", s]);
            }
        }
        let proc = Proc::spawn(&mut cmd, self.dir.join(format!("node-{}.log", self.starts)))?;
        self.proc = Some(proc);
        let admin = self.admin.clone();
        let proc = self.proc.as_mut().expect("just set");
        let mut exited = false;
        wait_for("cache-node /readyz", Duration::from_secs(30), || {
            exited = proc.child.try_wait().ok().flatten().is_some();
            exited || matches!(http_get(&admin, "/readyz"), Ok((200, _)))
        })
        .with_context(|| self.logs())?;
        if exited {
            bail!("cache-node exited during start:\n{}", self.logs());
        }
        Ok(())
    }

    pub fn kill9(&mut self) {
        if let Some(p) = self.proc.as_mut() {
            p.kill9();
        }
    }

    /// Every log this node wrote, across restarts.
    pub fn logs(&self) -> String {
        logs_of_starts(self.starts, |i| self.dir.join(format!("node-{i}.log")))
    }

    /// Runs dataset-ctl against this node.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(bin("dataset-ctl"))
            .arg("--endpoint")
            .arg(&self.listen)
            .args(args)
            .output()
            .expect("run dataset-ctl")
    }

    /// Runs dataset-ctl and requires success, returning stdout.
    pub fn ctl_ok(&self, args: &[&str]) -> Vec<u8> {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "dataset-ctl {args:?} failed: {}\nnode log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        out.stdout
    }

    /// `dataset-ctl create NAME --source SOURCE [--s3-endpoint EP] EXTRA...`.
    pub fn create(
        &self,
        name: &str,
        source: &str,
        endpoint: Option<&str>,
        extra: &[&str],
    ) -> Output {
        let mut args = vec!["create", name, "--source", source];
        if let Some(ep) = endpoint {
            args.extend(["--s3-endpoint", ep]);
        }
        args.extend(extra);
        self.ctl(&args)
    }

    /// Creates an S3 dataset with 1 MiB chunks and requires success.
    pub fn create_ok(&self, name: &str, source: &str, endpoint: &str) {
        let out = self.create(name, source, Some(endpoint), &["--chunk-size", "1MiB"]);
        assert!(
            out.status.success(),
            "create {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `dataset-ctl get NAME -o json`.
    pub fn dataset(&self, name: &str) -> serde_json::Value {
        serde_json::from_slice(&self.ctl_ok(&["get", name, "-o", "json"])).expect("json")
    }

    /// The value of one metric line (exact series text) from `/metrics`.
    pub fn metric(&self, series: &str) -> f64 {
        self.metric_opt(series).unwrap_or(0.0)
    }

    /// One series of this node's /metrics; `None` when it is not exported.
    pub fn metric_opt(&self, series: &str) -> Option<f64> {
        let (_, body) = http_get(&self.admin, "/metrics").expect("metrics");
        parse_metric(&body, series)
    }
}

/// Deterministic pseudo-random bytes (xorshift), so origins and checks agree.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Asserts a failed command: non-zero exit, one line on stderr containing `needle`.
pub fn assert_fails(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "expected one error line, got:\n{err}"
    );
    assert!(
        err.to_lowercase().contains(&needle.to_lowercase()),
        "expected {needle:?} in: {err}"
    );
}

/// The usual end-to-end setup: an S3 server with one bucket and a node.
pub struct Fixture {
    pub s3: S3Server,
    pub node: Node,
    /// Kept last so directories outlive the processes using them.
    pub tmp: tempfile::TempDir,
}

impl Fixture {
    /// Starts `rclone serve s3` (`etag_hash` as for [`S3Server::start`]),
    /// writes `files` into bucket `bucket`, and starts a node with `opts`.
    pub fn new(etag_hash: &str, files: &[(String, Vec<u8>)], opts: NodeOpts) -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let s3 = S3Server::start(&tmp.path().join("s3"), tmp.path(), etag_hash).expect("s3 server");
        for (p, b) in files {
            let path = s3.root.join("bucket").join(p);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, b).expect("write origin file");
        }
        std::fs::create_dir_all(s3.root.join("bucket")).expect("bucket");
        let node = Node::start(&tmp.path().join("node"), opts).expect("node");
        Self { s3, node, tmp }
    }

    pub fn bucket(&self) -> PathBuf {
        self.s3.root.join("bucket")
    }
}

/// A `fuse-client` mount, unmounted (SIGTERM) on drop.
pub struct Mount {
    pub dir: PathBuf,
    pub proc: Proc,
    ready: PathBuf,
}

impl Mount {
    /// Mounts `dataset` from `node` at `dir` and waits for the ready file.
    pub fn start(node: &Node, dataset: &str, dir: &Path, extra: &[&str]) -> Result<Self> {
        // A stale mount (ENOTCONN) is left for fuse-client to clear.
        if matches!(std::fs::symlink_metadata(dir), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
        {
            std::fs::create_dir_all(dir)?;
        }
        let ready = dir.with_extension("ready");
        let _ = std::fs::remove_file(&ready);
        let log = dir.with_extension(format!("log{}", std::process::id()));
        let mut cmd = Command::new(bin("fuse-client"));
        cmd.arg("--endpoint")
            .arg(format!("unix://{}", node.socket().display()))
            .args(["--dataset", dataset, "--ready-file"])
            .arg(&ready)
            .args(extra)
            .arg(dir)
            .env("SHOAL_LOG", "info,fuse_client=debug");
        let mut proc = Proc::spawn(&mut cmd, log)?;
        let r = ready.clone();
        let waited = wait_for("fuse-client ready file", Duration::from_secs(20), || {
            r.exists() || proc.child.try_wait().ok().flatten().is_some()
        });
        if waited.is_err() || !ready.exists() {
            bail!("fuse-client did not become ready: {}", proc.log_text());
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            proc,
            ready,
        })
    }

    /// Whether `dir` is currently a FUSE mount (per /proc/self/mountinfo).
    pub fn is_mounted(dir: &Path) -> bool {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let d = dir.to_string_lossy();
        mounts
            .lines()
            .any(|l| l.split(' ').nth(4) == Some(&d) && l.contains("fuse"))
    }

    pub fn ready_file(&self) -> &Path {
        &self.ready
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        self.proc.terminate();
        if Self::is_mounted(&self.dir) {
            let _ = Command::new("fusermount3")
                .arg("-uz")
                .arg(&self.dir)
                .status();
        }
    }
}

/// Runs `cache-node ca ...` and requires success.
pub fn ca(args: &[&std::ffi::OsStr]) {
    let out = Command::new(bin("cache-node"))
        .arg("ca")
        .args(args)
        .output()
        .expect("run cache-node ca");
    assert!(
        out.status.success(),
        "cache-node ca {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts `n` mesh nodes named node-0.. with certificates from one cluster
/// CA, each seeded with node-0, and waits until every node sees all of them.
pub fn cluster(dir: &Path, n: usize, opts: impl Fn(usize) -> NodeOpts) -> Result<Vec<Node>> {
    let ca_dir = dir.join("ca");
    ca(&["init".as_ref(), "--out".as_ref(), ca_dir.as_os_str()]);
    let mut nodes: Vec<Node> = Vec::new();
    for i in 0..n {
        let name = format!("node-{i}");
        let tls = dir.join(format!("tls-{i}"));
        ca(&[
            "issue".as_ref(),
            "--ca".as_ref(),
            ca_dir.as_os_str(),
            "--name".as_ref(),
            name.as_ref(),
            "--out".as_ref(),
            tls.as_os_str(),
        ]);
        let seeds = nodes
            .first()
            .map(|n0| vec![n0.peer.clone()])
            .unwrap_or_default();
        let mut o = opts(i);
        o.name = Some(name);
        o.mesh = Some(MeshOpts {
            tls_dir: tls,
            seeds,
        });
        nodes.push(Node::start(&dir.join(format!("node-{i}")), o)?);
    }
    for node in &nodes {
        wait_for(
            "every node to see the whole cluster",
            Duration::from_secs(30),
            || node.ready_members() == n,
        )?;
    }
    Ok(nodes)
}

impl Node {
    /// Members this node lists as Ready.
    pub fn ready_members(&self) -> usize {
        let out = self.ctl(&["nodes", "-o", "json"]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|v| {
                v.as_array()
                    .map(|a| a.iter().filter(|n| n["state"] == "Ready").count())
            })
            .unwrap_or(0)
    }
}

/// A TCP proxy in front of the S3 server that counts ranged GETs (chunk
/// fetches) and the bytes the origin sent, at the origin side, independent
/// of what nodes report; optionally throttled (a slow origin link).
pub struct CountingProxy {
    pub endpoint: String,
    ranged_gets: std::sync::Arc<std::sync::atomic::AtomicU64>,
    bytes: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl CountingProxy {
    pub fn start(target: &str) -> Result<Self> {
        Self::start_throttled(target, None)
    }

    /// Like [`CountingProxy::start`], with the origin's answers limited to
    /// `bytes_per_sec` per connection.
    pub fn start_throttled(target: &str, bytes_per_sec: Option<u64>) -> Result<Self> {
        use std::sync::atomic::Ordering;
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let target = target.trim_start_matches("http://").to_string();
        let ranged_gets = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let bytes = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (counter, sent) = (ranged_gets.clone(), bytes.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                let (mut c_r, mut s_w) = (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                let (mut s_r, mut c_w) = (server, client);
                let counter = counter.clone();
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 << 10];
                    let mut tail: Vec<u8> = Vec::new();
                    loop {
                        let n = match c_r.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        tail.extend_from_slice(&buf[..n]);
                        let text = String::from_utf8_lossy(&tail).to_ascii_lowercase();
                        let hits = text.matches("\r\nrange: bytes=").count() as u64;
                        counter.fetch_add(hits, Ordering::SeqCst);
                        // Keep a short tail so a header split across reads is still seen once.
                        let keep = tail.len().min(32);
                        let cut = text
                            .rfind("\r\nrange: bytes=")
                            .map(|i| i + 1)
                            .unwrap_or(0)
                            .max(tail.len() - keep);
                        tail.drain(..cut);
                        if std::io::Write::write_all(&mut s_w, &buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = s_w.shutdown(std::net::Shutdown::Write);
                });
                let sent = sent.clone();
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 16 << 10];
                    let start = Instant::now();
                    let mut total = 0u64;
                    loop {
                        let n = match s_r.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        total += n as u64;
                        sent.fetch_add(n as u64, Ordering::SeqCst);
                        if let Some(rate) = bytes_per_sec {
                            // Pace the link: never ahead of `rate`.
                            let due = Duration::from_secs_f64(total as f64 / rate as f64);
                            if let Some(wait) = due.checked_sub(start.elapsed()) {
                                std::thread::sleep(wait);
                            }
                        }
                        if std::io::Write::write_all(&mut c_w, &buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = c_w.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        Ok(Self {
            endpoint,
            ranged_gets,
            bytes,
        })
    }

    /// Ranged GETs that reached the origin so far.
    pub fn ranged_gets(&self) -> u64 {
        self.ranged_gets.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Bytes the origin sent so far (bodies and headers).
    pub fn bytes(&self) -> u64 {
        self.bytes.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Bytes of data (not holes) in the regular files of `dir`, found with
/// SEEK_DATA/SEEK_HOLE: what a tier really holds, measured with the
/// filesystem rather than the node's index.
pub fn data_bytes(dir: &Path) -> u64 {
    use std::os::fd::AsRawFd;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut total = 0u64;
    for e in entries.flatten() {
        if !e.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let Ok(f) = std::fs::File::open(e.path()) else {
            continue;
        };
        let fd = f.as_raw_fd();
        let mut off: libc::off_t = 0;
        loop {
            // SAFETY: lseek on an open descriptor we own.
            let data = unsafe { libc::lseek(fd, off, libc::SEEK_DATA) };
            if data < 0 {
                break;
            }
            // SAFETY: as above.
            let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
            if hole <= data {
                break;
            }
            total += (hole - data) as u64;
            off = hole;
        }
    }
    total
}

pub mod nemesis;
