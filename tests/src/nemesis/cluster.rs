//! Cache nodes, their mounts, the origin server and the intruder, each
//! running in its network namespace.
//!
//! Nodes serve their TCP control API on their bridge address, so they run
//! with an API token (a node refuses a non-loopback listen without one);
//! the test reaches them over the management leg. Every call into a node
//! has a time limit: a frozen node must cost the harness seconds, not the
//! run.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::net::{ns_command, Testbed};
use crate::{bin, logs_of_starts, wait_for, LoopFs, Mount, Proc, ACCESS_KEY, SECRET_KEY};

pub const API_PORT: u16 = 7070;
pub const ADMIN_PORT: u16 = 9464;
pub const PEER_PORT: u16 = 7071;
pub const ORIGIN_PORT: u16 = 9000;

/// GET `path` with short time limits; None if the server does not answer.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(3))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// Runs `cmd` to completion within `limit`, killing it past that.
pub fn output_within(cmd: &mut Command, limit: Duration) -> Result<Output> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {cmd:?}"))?;
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => Ok(out?),
        Err(_) => {
            // SAFETY: the child is not reaped until its waiter returns, so
            // the pid is still ours.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            let _ = rx.recv();
            bail!("did not finish within {limit:?}")
        }
    }
}

/// The origin: `rclone serve s3` over a directory, in its namespace.
pub fn start_origin(tb: &Testbed, root: &Path, log: PathBuf) -> Result<(Proc, SocketAddr)> {
    let addr = SocketAddr::from((tb.origin_ip(), ORIGIN_PORT));
    let proc = Proc::spawn(
        ns_command(&tb.origin_ns, "rclone")?
            .args(["serve", "s3", "--addr", &addr.to_string()])
            .arg(format!("--auth-key={ACCESS_KEY},{SECRET_KEY}"))
            .args(["--etag-hash=MD5", "--dir-cache-time", "0s"])
            .args(["--config", "/dev/null"])
            .arg(root),
        log,
    )?;
    wait_for("rclone serve s3", Duration::from_secs(30), || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
    })?;
    Ok((proc, addr))
}

/// Settings shared by every node of the run.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub memory_quota: u64,
    pub disk_quota: u64,
    /// Size of each node's disk-tier filesystem.
    pub disk_fs_mib: u64,
    pub token: PathBuf,
}

/// A cache node in its own namespace, with its disk tier on a small
/// loop-mounted filesystem.
pub struct NsNode {
    pub name: String,
    pub ns: String,
    pub ip: Ipv4Addr,
    pub dir: PathBuf,
    pub spec: NodeSpec,
    pub proc: Option<Proc>,
    tls: PathBuf,
    seeds: Vec<String>,
    starts: u32,
    /// Dropped after the process (declared last).
    pub disk: LoopFs,
}

impl NsNode {
    pub fn new(
        name: String,
        ns: String,
        ip: Ipv4Addr,
        dir: &Path,
        spec: NodeSpec,
        tls: PathBuf,
        seeds: Vec<String>,
    ) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let disk = LoopFs::mount(&dir.join("disk.img"), &dir.join("diskfs"), spec.disk_fs_mib)?;
        Ok(Self {
            name,
            ns,
            ip,
            dir: dir.to_path_buf(),
            spec,
            proc: None,
            tls,
            seeds,
            starts: 0,
            disk,
        })
    }

    pub fn memory_dir(&self) -> PathBuf {
        self.dir.join("mem")
    }

    /// The disk tier: a directory of the loop filesystem, so a ballast
    /// file beside it can fill the filesystem without counting as tier data.
    pub fn disk_dir(&self) -> PathBuf {
        self.disk.dir.join("tier")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("data/node.sock")
    }

    pub fn api(&self) -> SocketAddr {
        SocketAddr::from((self.ip, API_PORT))
    }

    pub fn admin(&self) -> SocketAddr {
        SocketAddr::from((self.ip, ADMIN_PORT))
    }

    pub fn peer(&self) -> String {
        SocketAddr::from((self.ip, PEER_PORT)).to_string()
    }

    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Proc::pid)
    }

    /// Starts (or restarts) the process and waits for `/readyz`.
    pub fn start(&mut self) -> Result<()> {
        self.starts += 1;
        let mut cmd = ns_command(&self.ns, bin("cache-node"))?;
        cmd.arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .arg("--memory-dir")
            .arg(self.memory_dir())
            .arg("--memory-quota")
            .arg(self.spec.memory_quota.to_string())
            .arg("--disk-dir")
            .arg(self.disk_dir())
            .arg("--disk-quota")
            .arg(self.spec.disk_quota.to_string())
            .arg("--listen")
            .arg(self.api().to_string())
            .arg("--api-token-file")
            .arg(&self.spec.token)
            .arg("--admin")
            .arg(self.admin().to_string())
            .args(["--peer-listen", &self.peer()])
            .arg("--tls-dir")
            .arg(&self.tls)
            .env_remove("AWS_PROFILE")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("SHOAL_LOG", "info,shoal_cache_node=debug");
        for s in &self.seeds {
            cmd.args(["--seed", s]);
        }
        let log = self.dir.join(format!("node-{}.log", self.starts));
        let mut proc = Proc::spawn(&mut cmd, log)?;
        let admin = self.admin();
        let pid = proc.pid();
        let ready = wait_for("cache-node /readyz", Duration::from_secs(30), || {
            !alive(pid) || matches!(http_get(admin, "/readyz"), Some((200, _)))
        });
        if ready.is_err() || !alive(pid) {
            proc.kill9();
            bail!("{} did not start:\n{}", self.name, tail(&self.logs(), 40));
        }
        self.proc = Some(proc);
        Ok(())
    }

    pub fn kill9(&mut self) {
        if let Some(p) = self.proc.as_mut() {
            p.kill9();
        }
        self.proc = None;
    }

    /// Every log this node wrote, across restarts.
    pub fn logs(&self) -> String {
        logs_of_starts(self.starts, |i| self.dir.join(format!("node-{i}.log")))
    }

    /// What the sampler and the convergence check need to reach the node.
    pub fn probe(&self) -> NodeProbe {
        NodeProbe {
            name: self.name.clone(),
            api: self.api(),
            admin: self.admin(),
            token: self.spec.token.clone(),
            memory_dir: self.memory_dir(),
            disk_dir: self.disk_dir(),
            memory_quota: self.spec.memory_quota,
            disk_quota: self.spec.disk_quota,
        }
    }
}

/// A node's addresses and tiers: how to ask it and where to look.
#[derive(Debug, Clone)]
pub struct NodeProbe {
    pub name: String,
    pub api: SocketAddr,
    pub admin: SocketAddr,
    pub token: PathBuf,
    pub memory_dir: PathBuf,
    pub disk_dir: PathBuf,
    pub memory_quota: u64,
    pub disk_quota: u64,
}

/// One dataset as a node reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetState {
    pub version: u64,
    pub files: u64,
    pub total_bytes: u64,
}

impl NodeProbe {
    /// dataset-ctl against the node's TCP API, with the token.
    pub fn ctl(&self, args: &[&str], limit: Duration) -> Result<Output> {
        output_within(
            Command::new(bin("dataset-ctl"))
                .arg("--endpoint")
                .arg(self.api.to_string())
                .arg("--token-file")
                .arg(&self.token)
                .args(args),
            limit,
        )
    }

    fn ctl_json(&self, args: &[&str]) -> Option<serde_json::Value> {
        let out = self.ctl(args, Duration::from_secs(5)).ok()?;
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// (name, state) of every member the node lists; None if it does not answer.
    pub fn members(&self) -> Option<Vec<(String, String)>> {
        let v = self.ctl_json(&["nodes", "-o", "json"])?;
        Some(
            v.as_array()?
                .iter()
                .map(|n| {
                    (
                        n["name"].as_str().unwrap_or_default().to_string(),
                        n["state"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect(),
        )
    }

    pub fn dataset(&self, name: &str) -> Option<DatasetState> {
        let v = self.ctl_json(&["get", name, "-o", "json"])?;
        Some(DatasetState {
            version: v["version"].as_u64()?,
            files: v["files"].as_u64()?,
            total_bytes: v["total_bytes"].as_u64()?,
        })
    }

    /// The node's /metrics text; None if it does not answer.
    pub fn metrics(&self) -> Option<String> {
        match http_get(self.admin, "/metrics") {
            Some((200, body)) => Some(body),
            _ => None,
        }
    }
}

/// Whether process `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, r)| !r.starts_with('Z')))
        .unwrap_or(false)
}

/// CPU time of process `pid` (all threads), in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s
                .rsplit_once(") ")?
                .1
                .split_whitespace()
                .collect::<Vec<_>>();
            // utime and stime: fields 14 and 15, the 12th and 13th after the name.
            Some(rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

/// The share of one core process `pid` used over the next second.
pub fn cpu_share(pid: u32) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(1));
    (cpu_ticks(pid).saturating_sub(before)) as f64 / hz
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A fuse-client mount of one node's dataset, run in the node's namespace
/// and reached over the node's Unix socket.
pub struct NsMount {
    pub dir: PathBuf,
    ns: String,
    socket: PathBuf,
    dataset: String,
    args: Vec<String>,
    pub proc: Option<Proc>,
    starts: u32,
}

impl NsMount {
    pub fn new(node: &NsNode, dataset: &str, dir: &Path, args: Vec<String>) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            ns: node.ns.clone(),
            socket: node.socket(),
            dataset: dataset.to_string(),
            args,
            proc: None,
            starts: 0,
        })
    }

    fn ready_file(&self) -> PathBuf {
        self.dir.with_extension("ready")
    }

    /// Mounts (a dead mount left by a killed fuse-client is cleared by
    /// fuse-client itself) and waits for the ready file.
    pub fn start(&mut self) -> Result<()> {
        self.starts += 1;
        let ready = self.ready_file();
        let _ = std::fs::remove_file(&ready);
        let log = self.dir.with_extension(format!("log{}", self.starts));
        let mut proc = Proc::spawn(
            ns_command(&self.ns, bin("fuse-client"))?
                .arg("--endpoint")
                .arg(format!("unix://{}", self.socket.display()))
                .args(["--dataset", &self.dataset, "--ready-file"])
                .arg(&ready)
                .args(&self.args)
                .arg(&self.dir)
                .env("SHOAL_LOG", "info,fuse_client=debug"),
            log,
        )?;
        let pid = proc.pid();
        let waited = wait_for("fuse-client ready file", Duration::from_secs(30), || {
            ready.exists() || !alive(pid)
        });
        if waited.is_err() || !ready.exists() {
            let log = proc.log_text();
            proc.kill9();
            bail!("fuse-client did not mount {}: {log}", self.dir.display());
        }
        self.proc = Some(proc);
        Ok(())
    }

    pub fn kill9(&mut self) {
        if let Some(p) = self.proc.as_mut() {
            p.kill9();
        }
        self.proc = None;
    }

    pub fn is_live(&self) -> bool {
        self.proc.as_ref().is_some_and(|p| alive(p.pid())) && self.ready_file().exists()
    }

    /// Every log this mount's fuse-clients wrote.
    pub fn logs(&self) -> String {
        logs_of_starts(self.starts, |i| self.dir.with_extension(format!("log{i}")))
    }

    /// The kernel's FUSE connection of this mount (for aborting it when a
    /// reader is stuck in it past the run).
    pub fn abort_connection(&self) {
        use std::os::unix::fs::MetadataExt;
        if let Ok(m) = std::fs::metadata(&self.dir) {
            let minor = libc::minor(m.dev());
            let _ = std::fs::write(format!("/sys/fs/fuse/connections/{minor}/abort"), "1");
        }
    }
}

impl Drop for NsMount {
    /// Unmounts: SIGTERM (fuse-client detaches and exits), SIGKILL if it
    /// has not within 10 s, and a lazy unmount of whatever is left.
    fn drop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            let pid = p.pid();
            // SAFETY: signalling our own child, not reaped yet.
            unsafe {
                libc::kill(pid as i32, libc::SIGTERM);
            }
            let _ = wait_for("fuse-client to exit", Duration::from_secs(10), || {
                !alive(pid)
            });
            p.kill9();
        }
        if Mount::is_mounted(&self.dir) {
            let _ = Command::new("fusermount3")
                .arg("-uz")
                .arg(&self.dir)
                .status();
        }
    }
}

/// A cache node with a certificate from another CA, in the intruder's
/// namespace, asking `seed` to let it into the mesh.
pub fn start_intruder(tb: &Testbed, dir: &Path, seed: &str, token: &Path) -> Result<Proc> {
    std::fs::create_dir_all(dir)?;
    let ca = dir.join("ca");
    let tls = dir.join("tls");
    if !tls.exists() {
        crate::ca(&["init".as_ref(), "--out".as_ref(), ca.as_os_str()]);
        crate::ca(&[
            "issue".as_ref(),
            "--ca".as_ref(),
            ca.as_os_str(),
            "--name".as_ref(),
            "intruder".as_ref(),
            "--out".as_ref(),
            tls.as_os_str(),
        ]);
    }
    let ip = tb.intruder_ip();
    Proc::spawn(
        ns_command(&tb.intruder_ns, bin("cache-node"))?
            .args(["--name", "intruder", "--data-dir"])
            .arg(dir.join("data"))
            .arg("--memory-dir")
            .arg(dir.join("mem"))
            .args(["--memory-quota", "16MiB", "--disk-quota", "0"])
            .args(["--listen", &format!("{ip}:{API_PORT}")])
            .arg("--api-token-file")
            .arg(token)
            .args(["--admin", &format!("{ip}:{ADMIN_PORT}")])
            .args(["--peer-listen", &format!("{ip}:{PEER_PORT}")])
            .arg("--tls-dir")
            .arg(&tls)
            .args(["--seed", seed]),
        dir.join("intruder.log"),
    )
}
