//! The nemesis's network: one namespace per cache node, one for the origin,
//! and one holding the bridge that joins them, plus a management leg from
//! the root namespace (where the test, its readers and the origin proxy run)
//! into the bridge.
//!
//! ```text
//!   [origin ns] rclone serve s3 ─eth0 (tbf)─┐
//!   [node-i ns] cache-node, fuse-client ─eth0─┤ [bridge ns] br0
//!   [intruder ns] a node from another CA ─eth0┤
//!   [root ns] test, readers, origin proxy ──mgmt leg (198.18.X.1)
//! ```
//!
//! Processes join a namespace with `setns(CLONE_NEWNET)` only, not through
//! `ip netns exec`, which also unshares the mount namespace: fuse-client's
//! mounts must be visible to the readers in the root namespace. Names
//! carry the test's pid, so runs never collide, and namespaces left by a
//! run that was killed are removed by the next one.

use std::io::Write;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

const PREFIX: &str = "shnem";

/// Namespaces, links and addresses of one run; deleted on drop.
pub struct Testbed {
    /// 198.18.X: this run's /24 (RFC 2544 benchmarking space).
    subnet: [u8; 3],
    pub bridge_ns: String,
    pub origin_ns: String,
    pub intruder_ns: String,
    pub node_ns: Vec<String>,
    mgmt_if: String,
    created: Vec<String>,
}

/// Runs `cmd`, failing with its stderr.
pub fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs `cmd` with `input` on its standard input.
fn run_with_input(cmd: &mut Command, input: &str) -> Result<()> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {cmd:?}"))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(input.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}\ninput:\n{input}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A command that runs `program` in network namespace `ns` (and nothing
/// else of the namespace's: the mount namespace stays the caller's).
pub fn ns_command(ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Result<Command> {
    let handle = std::fs::File::open(format!("/run/netns/{ns}"))
        .with_context(|| format!("opening network namespace {ns}"))?;
    let mut cmd = Command::new(program);
    // SAFETY: the closure runs in the forked child before exec and makes a
    // single async-signal-safe system call on a descriptor it owns (opened
    // close-on-exec, so the program does not inherit it).
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(cmd)
}

impl Testbed {
    /// Builds the bridge, the origin's and every node's namespace, and the
    /// management leg. Fails (never skips) when namespaces are unavailable.
    pub fn new(nodes: usize) -> Result<Self> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            bail!("the nemesis needs root (network namespaces, nftables, loop devices, FUSE)");
        }
        remove_stale();
        let pid = std::process::id();
        let base = format!("{PREFIX}{pid}");
        let mut tb = Self {
            subnet: [198, 18, free_subnet(pid)?],
            bridge_ns: format!("{base}-br"),
            origin_ns: format!("{base}-o"),
            intruder_ns: format!("{base}-x"),
            node_ns: (0..nodes).map(|i| format!("{base}-n{i}")).collect(),
            mgmt_if: format!("{PREFIX}{pid}m"),
            created: Vec::new(),
        };
        tb.build().context("building the nemesis network")?;
        Ok(tb)
    }

    fn add_ns(&mut self, ns: &str) -> Result<()> {
        run(Command::new("ip").args(["netns", "add", ns]))
            .context("network namespaces are required")?;
        self.created.push(ns.to_string());
        run(Command::new("ip").args(["-n", ns, "link", "set", "lo", "up"]))
    }

    fn build(&mut self) -> Result<()> {
        let br = self.bridge_ns.clone();
        self.add_ns(&br)?;
        run(Command::new("ip").args(["-n", &br, "link", "add", "br0", "type", "bridge"]))?;
        run(Command::new("ip").args(["-n", &br, "link", "set", "br0", "up"]))?;
        // Partitions need nftables: find out now, not at the first one.
        run_with_input(
            ns_command(&br, "nft")?.args(["-f", "-"]),
            "table ip nemesis_probe {}\ndelete table ip nemesis_probe\n",
        )
        .context("nftables is required for partitions")?;
        let mut legs = vec![
            (self.origin_ns.clone(), "vo".to_string(), self.origin_ip()),
            (
                self.intruder_ns.clone(),
                "vx".to_string(),
                self.intruder_ip(),
            ),
        ];
        for (i, ns) in self.node_ns.clone().into_iter().enumerate() {
            legs.push((ns, format!("vn{i}"), self.node_ip(i)));
        }
        for (ns, port, ip) in legs {
            self.add_ns(&ns)?;
            run(Command::new("ip").args([
                "-n", &br, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &ns,
            ]))?;
            run(Command::new("ip").args(["-n", &br, "link", "set", &port, "master", "br0", "up"]))?;
            run(Command::new("ip").args([
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                "eth0",
            ]))?;
            run(Command::new("ip").args(["-n", &ns, "link", "set", "eth0", "up"]))?;
        }
        // The management leg: the root end keeps this run's unique name.
        run(Command::new("ip").args([
            "link",
            "add",
            &self.mgmt_if,
            "type",
            "veth",
            "peer",
            "name",
            "vm",
            "netns",
            &br,
        ]))?;
        run(Command::new("ip").args(["-n", &br, "link", "set", "vm", "master", "br0", "up"]))?;
        run(Command::new("ip").args([
            "addr",
            "add",
            &format!("{}/24", self.mgmt_ip()),
            "dev",
            &self.mgmt_if,
        ]))?;
        run(Command::new("ip").args(["link", "set", &self.mgmt_if, "up"]))
    }

    fn ip(&self, host: u8) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        Ipv4Addr::new(a, b, c, host)
    }

    /// The root namespace's address: the test, its readers, the proxy.
    pub fn mgmt_ip(&self) -> Ipv4Addr {
        self.ip(1)
    }

    pub fn origin_ip(&self) -> Ipv4Addr {
        self.ip(2)
    }

    pub fn intruder_ip(&self) -> Ipv4Addr {
        self.ip(3)
    }

    pub fn node_ip(&self, i: usize) -> Ipv4Addr {
        self.ip(10 + i as u8)
    }

    /// Shapes `ns`'s egress with a token bucket (`rate` as tc spells it).
    pub fn shape(&self, ns: &str, rate: &str) -> Result<()> {
        run(ns_command(ns, "tc")?.args([
            "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", rate, "burst", "256kb",
            "latency", "50ms",
        ]))
    }

    /// `ip link set eth0 up|down` in `ns`.
    pub fn set_link(&self, ns: &str, up: bool) -> Result<()> {
        let state = if up { "up" } else { "down" };
        run(Command::new("ip").args(["-n", ns, "link", "set", "eth0", state]))
    }

    /// Drops, in `ns`, the traffic each of `matches` names, both ways,
    /// until [`Testbed::unblock`] with the same `table`.
    pub fn block(&self, ns: &str, table: &str, matches: &[Block]) -> Result<()> {
        let (mut input, mut output) = (String::new(), String::new());
        for m in matches {
            match m {
                Block::Host(ip) => {
                    output.push_str(&format!("  ip daddr {ip} drop\n"));
                    input.push_str(&format!("  ip saddr {ip} drop\n"));
                }
                Block::TcpService(ip, port) => {
                    output.push_str(&format!("  ip daddr {ip} tcp dport {port} drop\n"));
                    input.push_str(&format!("  ip saddr {ip} tcp sport {port} drop\n"));
                }
            }
        }
        let rules = format!(
            "table ip {table} {{\n chain input {{\n  type filter hook input priority -10; policy accept;\n{input} }}\n chain output {{\n  type filter hook output priority -10; policy accept;\n{output} }}\n}}\n"
        );
        run_with_input(ns_command(ns, "nft")?.args(["-f", "-"]), &rules)
    }

    pub fn unblock(&self, ns: &str, table: &str) -> Result<()> {
        run(ns_command(ns, "nft")?.args(["delete", "table", "ip", table]))
    }
}

/// What [`Testbed::block`] drops.
#[derive(Debug, Clone, Copy)]
pub enum Block {
    /// Everything to and from an address.
    Host(Ipv4Addr),
    /// TCP to and from one service (address and port).
    TcpService(Ipv4Addr, u16),
}

/// A 198.18.X.0/24 no route of this host uses yet, starting from the pid.
fn free_subnet(pid: u32) -> Result<u8> {
    let out = Command::new("ip").args(["-4", "route", "show"]).output()?;
    let routes = String::from_utf8_lossy(&out.stdout).into_owned();
    (0..250u32)
        .map(|k| ((pid + k) % 250) as u8 + 1)
        .find(|x| !routes.contains(&format!("198.18.{x}.")))
        .context("no free 198.18.X.0/24 subnet")
}

/// Kills what runs in `ns` and deletes it.
fn delete_ns(ns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                // SAFETY: signalling a process that lives in a namespace
                // this harness created; nothing else runs there.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
    let _ = Command::new("ip")
        .args(["netns", "del", ns])
        .stderr(Stdio::null())
        .status();
}

/// Namespaces of earlier runs whose process is gone (a killed test).
fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            delete_ns(name);
        }
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        // Deleting the bridge's namespace destroys the management leg too.
        for ns in self.created.iter().rev() {
            delete_ns(ns);
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.mgmt_if])
            .stderr(Stdio::null())
            .status();
    }
}
