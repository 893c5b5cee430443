//! The nemesis: Shoal's promise — never a wrong byte, never a hang,
//! nothing lost, no one in who does not belong — checked under combined
//! faults.
//!
//! A run builds a cluster of cache nodes in network namespaces (origin
//! behind a shaped link and a fault-injecting proxy, each node's disk tier
//! on a small loop filesystem), mounts the dataset on every node, and lets
//! readers compare every byte they read while a seeded schedule of faults
//! runs ([`plan`]). Then it heals everything and requires the cluster to
//! converge by itself and every mount to serve every file.
//!
//! Invariants (each breach is a named violation in the [`Report`]):
//! - `wrong-bytes`: a read returned bytes other than the origin's.
//! - `hang`: a system call on a mount took longer than the hang bound
//!   (`--retry-secs` twice, plus 5 s), reported while it hangs.
//! - `enospc`: a reader saw ENOSPC (a full disk tier must never show).
//! - `unexplained-error`: a read failed and no fault explains it. EIO is
//!   explained by a fault that can make data unreachable (a node killed,
//!   stopped, cut off or partitioned; an origin fault), while it holds or
//!   within the grace after it (`--retry-secs` twice, plus 5 s: a request
//!   caught by the fault may retry for that long); ENOTCONN, ECONNABORTED
//!   and ENOENT only on the mount whose fuse-client was killed. A full disk
//!   and an intruder explain nothing.
//! - `quota`: a tier held more than its quota (its files' real data, and
//!   the node's own figures).
//! - `intruder-admitted`, `api-without-token`: a node listed a member from
//!   outside the cluster CA, or served a request without the API token.
//! - `crash`, `restart-failed`: a process died by itself, or did not start.
//! - `no-convergence`, `final-pass`: after the nemesis, the cluster did not
//!   agree on members and the dataset within the bound, or a mount did not
//!   serve every file correctly.

pub mod check;
pub mod cluster;
pub mod net;
pub mod plan;
pub mod proxy;
pub mod readers;
pub mod report;
pub mod sampler;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use self::check::{Violations, Window, Windows};
use self::cluster::{start_intruder, start_origin, tail, NodeSpec, NsMount, NsNode};
use self::net::{Block, Testbed};
use self::plan::{Fault, Kind, OriginFault, Plan, PlanOpts, Rng, Target};
use self::proxy::{Active, FaultProxy};
use self::readers::{Bounds, FileSpec, Readers};
use self::report::Report;
use self::sampler::Sampler;
use crate::{pattern, Frozen, Proc};

/// Share of a core an idle node may use (gossip, background
/// verification); above it, after the run, the node is spinning.
const SPINNING_SHARE: f64 = 0.5;

const DATASET: &str = "ds";
const BUCKET: &str = "bucket";
const MIB: u64 = 1 << 20;

/// A run's settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub seed: u64,
    /// How long the nemesis injects faults.
    pub secs: u64,
    pub nodes: usize,
    /// fuse-client `--retry-secs`: the most a reader waits for its node.
    pub retry_secs: u64,
    /// The origin link's rate, as tc spells it.
    pub origin_rate: String,
    pub readers_per_mount: usize,
    /// Faults holding at once, at most.
    pub concurrent: usize,
    /// How long the cluster may take to converge after the nemesis.
    pub converge_secs: u64,
    /// The fault kinds drawn (all by default; fewer to narrow a replay).
    pub kinds: Vec<Kind>,
    /// Print faults and progress on stderr as they happen.
    pub verbose: bool,
    /// Keep the work directory (logs) even when the run passes.
    pub keep: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            seed: 1,
            secs: 120,
            nodes: 3,
            retry_secs: 5,
            origin_rate: "400mbit".into(),
            readers_per_mount: 2,
            concurrent: 2,
            converge_secs: 60,
            kinds: Kind::ALL.to_vec(),
            verbose: true,
            keep: false,
        }
    }
}

impl Config {
    /// The command that replays a run of this configuration.
    pub fn replay_command(&self) -> String {
        let mut cmd = format!(
            ". scripts/env.sh && $CARGO_TARGET_DIR/release/nemesis --seed {} --secs {} --nodes {}",
            self.seed, self.secs, self.nodes
        );
        let d = Config::default();
        for (flag, value, default) in [
            ("--retry-secs", self.retry_secs, d.retry_secs),
            (
                "--readers",
                self.readers_per_mount as u64,
                d.readers_per_mount as u64,
            ),
            ("--concurrent", self.concurrent as u64, d.concurrent as u64),
        ] {
            if value != default {
                cmd.push_str(&format!(" {flag} {value}"));
            }
        }
        if self.origin_rate != d.origin_rate {
            cmd.push_str(&format!(" --origin-rate {}", self.origin_rate));
        }
        let skipped: Vec<&str> = Kind::ALL
            .iter()
            .filter(|k| !self.kinds.contains(k))
            .map(|k| k.name())
            .collect();
        let kept: Vec<&str> = self.kinds.iter().map(|k| k.name()).collect();
        if !skipped.is_empty() && skipped.len() < kept.len() {
            cmd.push_str(&format!(" --skip {}", skipped.join(",")));
        } else if !skipped.is_empty() {
            cmd.push_str(&format!(" --kinds {}", kept.join(",")));
        }
        cmd
    }

    /// The schedule this configuration's seed draws.
    pub fn plan(&self) -> Plan {
        Plan::new(
            self.seed,
            &PlanOpts {
                nodes: self.nodes,
                files: layout(self.seed).len(),
                secs: self.secs,
                concurrent: self.concurrent,
                kinds: self.kinds.clone(),
            },
        )
    }

    fn bounds(&self) -> Bounds {
        let b = Duration::from_secs(2 * self.retry_secs + 5);
        Bounds { grace: b, hang: b }
    }
}

/// A seed from the clock, for runs that do not ask for one.
pub fn random_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Rng::new(t.as_nanos() as u64 ^ u64::from(std::process::id())).next_u64() % 1_000_000_000
}

/// The dataset's paths and sizes: three multi-chunk files, two dozen of
/// one or two chunks, and small files (one empty), about 70 MiB.
fn layout(seed: u64) -> Vec<(String, u64)> {
    let mut rng = Rng::new(seed ^ 0xD5);
    let mut files: Vec<(String, u64)> = vec![
        ("models/big-0.bin".into(), 20 * MIB + 12_345),
        ("models/big-1.bin".into(), 12 * MIB + 777),
        ("models/big-2.bin".into(), 8 * MIB),
    ];
    for i in 0..24 {
        files.push((
            format!("data/mid/{i:02}.bin"),
            rng.between(256 << 10, 2 * MIB + 999),
        ));
    }
    for i in 0..60 {
        let size = if i == 0 { 0 } else { rng.between(1, 64 << 10) };
        files.push((format!("data/small/{i:03}.txt"), size));
    }
    files
}

/// The dataset with its bytes, which follow from the seed.
pub fn dataset(seed: u64) -> Vec<FileSpec> {
    layout(seed)
        .into_iter()
        .enumerate()
        .map(|(i, (path, size))| FileSpec {
            path,
            data: pattern(
                seed.wrapping_mul(1_000).wrapping_add(i as u64),
                size as usize,
            ),
        })
        .collect()
}

/// Polls `check` every `every` until it holds or `limit` passes.
fn poll_until(limit: Duration, every: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}

/// Everything a run starts, dropped in this order: mounts, nodes (then
/// their loop filesystems), intruder, proxy, origin, network.
struct Cluster {
    mounts: Vec<NsMount>,
    nodes: Vec<NsNode>,
    intruder: Option<Proc>,
    proxy: FaultProxy,
    _origin: Proc,
    tb: Testbed,
    dir: PathBuf,
    token: PathBuf,
}

impl Cluster {
    fn start(cfg: &Config, dir: &Path, files: &[FileSpec]) -> Result<Self> {
        let tb = Testbed::new(cfg.nodes)?;
        let root = dir.join("origin");
        for f in files {
            let p = root.join(BUCKET).join(&f.path);
            std::fs::create_dir_all(p.parent().expect("a file has a parent"))?;
            std::fs::write(&p, &f.data)?;
        }
        let (origin, origin_addr) = start_origin(&tb, &root, dir.join("rclone.log"))?;
        tb.shape(&tb.origin_ns, &cfg.origin_rate)?;
        let objects = files
            .iter()
            .map(|f| (format!("{BUCKET}/{}", f.path), Arc::new(f.data.clone())))
            .collect::<HashMap<_, _>>();
        let proxy = FaultProxy::start(
            tb.mgmt_ip(),
            origin_addr,
            objects,
            cfg.seed,
            &dir.join("proxy.log"),
        )?;

        let token = dir.join("api-token");
        std::fs::write(&token, format!("nemesis-{}-token-0123456789\n", cfg.seed))?;
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600))?;
        let ca = dir.join("ca");
        crate::ca(&["init".as_ref(), "--out".as_ref(), ca.as_os_str()]);
        let spec = NodeSpec {
            memory_quota: 12 * MIB,
            disk_quota: 40 * MIB,
            disk_fs_mib: 64,
            token: token.clone(),
        };
        let mut nodes: Vec<NsNode> = Vec::new();
        for i in 0..cfg.nodes {
            let name = format!("node-{i}");
            let tls = dir.join(format!("tls-{i}"));
            crate::ca(&[
                "issue".as_ref(),
                "--ca".as_ref(),
                ca.as_os_str(),
                "--name".as_ref(),
                name.as_ref(),
                "--out".as_ref(),
                tls.as_os_str(),
            ]);
            let seeds = nodes.first().map(|n| vec![n.peer()]).unwrap_or_default();
            let mut node = NsNode::new(
                name,
                tb.node_ns[i].clone(),
                tb.node_ip(i),
                &dir.join(format!("node-{i}")),
                spec.clone(),
                tls,
                seeds,
            )?;
            node.start()?;
            nodes.push(node);
        }
        let mut cluster = Self {
            mounts: Vec::new(),
            nodes,
            intruder: None,
            proxy,
            _origin: origin,
            tb,
            dir: dir.to_path_buf(),
            token,
        };
        cluster.create_dataset(files)?;
        for i in 0..cfg.nodes {
            let mut m = NsMount::new(
                &cluster.nodes[i],
                DATASET,
                &dir.join(format!("mnt-{i}")),
                vec![
                    "--retry-secs".into(),
                    cfg.retry_secs.to_string(),
                    // The tiers are small: prefetch must not flush them.
                    "--prefetch-budget".into(),
                    "8MiB".into(),
                ],
            )?;
            m.start()?;
            cluster.mounts.push(m);
        }
        Ok(cluster)
    }

    fn create_dataset(&self, files: &[FileSpec]) -> Result<()> {
        let names = self.names();
        let converged = poll_until(Duration::from_secs(30), Duration::from_millis(200), || {
            self.nodes.iter().all(|n| {
                n.probe()
                    .members()
                    .is_some_and(|m| m.iter().filter(|(_, s)| s == "Ready").count() == names.len())
            })
        });
        if !converged {
            bail!(
                "the cluster did not form: {}",
                tail(&self.nodes[0].logs(), 30)
            );
        }
        let out = self.nodes[0].probe().ctl(
            &[
                "create",
                DATASET,
                "--source",
                &format!("s3://{BUCKET}"),
                "--s3-endpoint",
                &self.proxy.endpoint,
                "--chunk-size",
                "1MiB",
            ],
            Duration::from_secs(60),
        )?;
        if !out.status.success() {
            bail!("create failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let want = expected_dataset(files);
        let replicated = poll_until(Duration::from_secs(30), Duration::from_millis(200), || {
            self.nodes
                .iter()
                .all(|n| n.probe().dataset(DATASET).as_ref() == Some(&want))
        });
        if !replicated {
            bail!(
                "the dataset did not reach every node as {want:?}: {:?}",
                self.nodes
                    .iter()
                    .map(|n| n.probe().dataset(DATASET))
                    .collect::<Vec<_>>()
            );
        }
        Ok(())
    }

    fn names(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }
}

fn expected_dataset(files: &[FileSpec]) -> cluster::DatasetState {
    cluster::DatasetState {
        version: 1,
        files: files.len() as u64,
        total_bytes: files.iter().map(|f| f.data.len() as u64).sum(),
    }
}

/// After a final-pass failure: the same file read again a few seconds
/// later through the mount and through the node's API (`dataset-ctl
/// cat`), to tell a lasting failure from a slow recovery, and the mount
/// from the node.
fn second_look(f: &FileSpec, m: &NsMount, node: &NsNode) -> String {
    std::thread::sleep(Duration::from_secs(5));
    let mount = match readers::verify_all(std::slice::from_ref(f), &m.dir, 1)
        .1
        .pop()
    {
        None => "ok".to_string(),
        Some((_, p)) => p,
    };
    let api = match node
        .probe()
        .ctl(&["cat", DATASET, &f.path], Duration::from_secs(30))
    {
        Ok(out) if out.status.success() && out.stdout == f.data => "ok".to_string(),
        Ok(out) if out.status.success() => "WRONG BYTES".to_string(),
        Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
        Err(e) => format!("{e:#}"),
    };
    let cpu = node.pid().map_or("not running".into(), |p| {
        format!("{:.0}%", cluster::cpu_share(p) * 100.0)
    });
    format!("5 s later: mount {mount}, dataset-ctl cat {api}; the node's CPU then {cpu}")
}

/// How to undo an applied fault.
enum Undo {
    RestartNode(usize),
    RestartMount(usize),
    Thaw(Frozen),
    Unblock(Vec<(String, String)>),
    LinkUp(String),
    RemoveBallast(PathBuf),
    Proxy(usize),
    Intruder,
}

const EIO: &[i32] = &[libc::EIO];
/// What readers of a mount whose fuse-client died may see until it is back.
const MOUNT_DOWN: &[i32] = &[libc::EIO, libc::ENOTCONN, libc::ECONNABORTED, libc::ENOENT];

/// Runs the nemesis and reports; Err only when the harness itself cannot
/// run (no namespaces, a tool missing, the cluster never formed).
pub fn run(cfg: &Config) -> Result<Report> {
    let started = Instant::now();
    eprintln!(
        "nemesis: seed {} ({} s, {} nodes); replay: {}",
        cfg.seed,
        cfg.secs,
        cfg.nodes,
        cfg.replay_command()
    );
    let tmp = tempfile::Builder::new()
        .prefix("shoal-nemesis-")
        .tempdir_in(std::env::temp_dir())?;
    let result = run_in(cfg, tmp.path());
    let keep = cfg.keep || result.as_ref().map_or(true, |r| !r.passed());
    let kept = if keep {
        // The logs are what is worth keeping: the origin's bytes follow
        // from the seed, and the tiers' are gone with their processes.
        let _ = std::fs::remove_dir_all(tmp.path().join("origin"));
        for i in 0..cfg.nodes {
            let _ = std::fs::remove_dir_all(tmp.path().join(format!("node-{i}/mem")));
        }
        let p = tmp.keep();
        eprintln!("nemesis: logs kept in {}", p.display());
        Some(p.display().to_string())
    } else {
        None
    };
    result.map(|mut r| {
        r.work_dir = kept;
        r.elapsed = started.elapsed();
        r
    })
}

fn run_in(cfg: &Config, dir: &Path) -> Result<Report> {
    let files = Arc::new(dataset(cfg.seed));
    let mut cl = Cluster::start(cfg, dir, &files).context("starting the cluster")?;
    let windows = Arc::new(Windows::default());
    let violations = Arc::new(Violations::default());
    let sampler = Sampler::start(
        cl.nodes.iter().map(NsNode::probe).collect(),
        violations.clone(),
    );
    let epoch = Instant::now();
    let readers = Readers::start(
        files.clone(),
        cl.mounts.iter().map(|m| m.dir.clone()).collect(),
        cfg.readers_per_mount,
        cfg.seed,
        windows.clone(),
        violations.clone(),
        cfg.bounds(),
        // The working set reaches the whole dataset at 80 % of the run.
        (epoch, Duration::from_secs(cfg.secs * 4 / 5)),
    );
    let plan = cfg.plan();
    let mut report = Report {
        seed: cfg.seed,
        secs: cfg.secs,
        nodes: cfg.nodes,
        replay: cfg.replay_command(),
        ..Report::default()
    };
    let mut ex = Executor {
        cfg,
        cl: &mut cl,
        files: &files[..],
        windows: &windows,
        violations: &violations,
        start: epoch,
        log: Vec::new(),
        down_nodes: Vec::new(),
        down_mounts: Vec::new(),
    };
    ex.execute(&plan, &readers)?;
    for f in &plan.faults {
        *report.faults.entry(f.kind.name()).or_default() += 1;
    }

    // Healed: the cluster must converge by itself.
    let healed = Instant::now();
    let names = ex.cl.names();
    let want = expected_dataset(&files);
    let mut last = String::new();
    let converged = poll_until(
        Duration::from_secs(cfg.converge_secs),
        Duration::from_millis(250),
        || {
            let probes: Vec<_> = ex.cl.nodes.iter().map(NsNode::probe).collect();
            let members: Vec<_> = probes.iter().map(|p| p.members()).collect();
            let datasets: Vec<_> = probes.iter().map(|p| p.dataset(DATASET)).collect();
            let live: Vec<bool> = ex.cl.mounts.iter().map(NsMount::is_live).collect();
            last = format!("members {members:?}, datasets {datasets:?}, mounts live {live:?}");
            members.iter().all(|m| {
                m.as_ref().is_some_and(|m| {
                    let mut got: Vec<_> = m
                        .iter()
                        .filter(|(_, s)| s == "Ready")
                        .map(|(n, _)| n.clone())
                        .collect();
                    got.sort();
                    got == names && m.len() == names.len()
                })
            }) && datasets.iter().all(|d| d.as_ref() == Some(&want))
                && live.iter().all(|l| *l)
        },
    );
    if converged {
        report.convergence = Some(healed.elapsed());
    } else {
        violations.add(
            "no-convergence",
            format!(
                "not converged {} s after the nemesis: {last}",
                cfg.converge_secs
            ),
        );
    }
    // Readers keep going through convergence; then the final pass.
    let mounts = &ex.cl.mounts;
    let (reads, aborted) = readers.stop(|m| mounts[m].abort_connection());
    report.reads = reads;
    // A mount aborted to free a hung reader (a violation already) is
    // mounted again, so the final pass checks the node behind it.
    for m in aborted {
        ex.cl.mounts[m].kill9();
        ex.cl.mounts[m].start()?;
    }
    let mut looked = 0;
    for (m, node) in ex.cl.mounts.iter().zip(&ex.cl.nodes) {
        let (read, problems) = readers::verify_all(&files, &m.dir, 5);
        report.final_files += read;
        for (fi, problem) in problems {
            // A closer look at the first few only: each costs seconds.
            looked += 1;
            let more = if looked <= 3 {
                second_look(&files[fi], m, node)
            } else {
                "not looked at again".into()
            };
            violations.add("final-pass", format!("{problem}; {more}"));
        }
    }
    report.samples = sampler.stop();
    // Nothing reads now: a node busy all the same is spinning.
    for n in &ex.cl.nodes {
        if let Some(pid) = n.pid() {
            let share = cluster::cpu_share(pid);
            if share > SPINNING_SHARE {
                violations.add(
                    "spinning",
                    format!(
                        "{} used {:.0}% of a core over a second with nothing to do",
                        n.name,
                        share * 100.0
                    ),
                );
            }
            report.idle_cpu.insert(n.name.clone(), share);
        }
    }
    report.origin_injections = ex
        .cl
        .proxy
        .injected()
        .into_iter()
        .map(|(f, n)| (Kind::Origin(f).name(), n))
        .collect();
    report.origin_ranged_gets = ex.cl.proxy.ranged_gets();
    report.passthrough_mounts = ex
        .cl
        .mounts
        .iter()
        .map(|m| m.logs().matches("passthrough: first file opened").count())
        .sum();
    report.fault_log = std::mem::take(&mut ex.log);
    report.violations = violations.counts();
    report.violation_messages = violations.messages();
    if cfg.verbose {
        eprintln!(
            "nemesis: converged {:?}, final pass over {} mounts done",
            report.convergence,
            ex.cl.mounts.len()
        );
    }
    Ok(report)
}

/// Applies and undoes the plan's faults at their times.
struct Executor<'a> {
    cfg: &'a Config,
    cl: &'a mut Cluster,
    files: &'a [FileSpec],
    windows: &'a Windows,
    violations: &'a Violations,
    start: Instant,
    log: Vec<String>,
    /// Nodes and mounts a fault has taken down on purpose.
    down_nodes: Vec<usize>,
    down_mounts: Vec<usize>,
}

impl Executor<'_> {
    fn note(&mut self, what: String) {
        let line = format!("[{:7.2}s] {what}", self.start.elapsed().as_secs_f64());
        if self.cfg.verbose {
            eprintln!("nemesis: {line}");
        }
        self.log.push(line);
    }

    fn execute(&mut self, plan: &Plan, readers: &Readers) -> Result<()> {
        // (time, undo?, fault); at equal times undo first.
        let mut events: Vec<(Duration, bool, usize)> = plan
            .faults
            .iter()
            .enumerate()
            .flat_map(|(i, f)| [(f.at, false, i), (f.at + f.hold, true, i)])
            .collect();
        events.sort_by_key(|&(t, undo, i)| (t, !undo, i));
        let mut active: HashMap<usize, Undo> = HashMap::new();
        let mut next_progress = Duration::from_secs(30);
        for (at, undo, i) in events {
            if let Some(wait) = at.checked_sub(self.start.elapsed()) {
                std::thread::sleep(wait);
            }
            self.check_alive()?;
            let f = &plan.faults[i];
            if undo {
                let u = active.remove(&f.id).expect("applied before undone");
                self.undo(f, u)?;
                self.windows.close(f.id);
                self.note(format!("healed  {}", f.describe()));
            } else {
                self.note(format!("inject  {}", f.describe()));
                if let Some(w) = self.window(f) {
                    self.windows.open(w);
                }
                let u = self
                    .apply(f)
                    .with_context(|| format!("applying {}", f.describe()))?;
                active.insert(f.id, u);
            }
            if self.start.elapsed() >= next_progress {
                next_progress += Duration::from_secs(30);
                let (ops, bytes) = readers.progress();
                self.note(format!(
                    "progress: {ops} reads, {} MiB checked, violations {:?}",
                    bytes >> 20,
                    self.violations.counts()
                ));
            }
        }
        self.check_alive()
    }

    /// The window in which `f` may explain readers' errors.
    fn window(&self, f: &Fault) -> Option<Window> {
        let (mount, file, errnos) = match (f.kind, f.target) {
            (Kind::DiskFull | Kind::Intruder, _) => return None,
            (Kind::KillFuse, Target::Node(i)) => (Some(i), None, MOUNT_DOWN),
            (Kind::Origin(OriginFault::EtagChanged), Target::Origin(file)) => (None, file, EIO),
            _ => (None, None, EIO),
        };
        Some(Window {
            fault: f.id,
            kind: f.kind,
            start: Instant::now(),
            end: None,
            mount,
            file,
            errnos,
        })
    }

    /// A node or fuse-client that died while no fault was killing it has
    /// crashed: a violation; it is restarted so the run goes on.
    fn check_alive(&mut self) -> Result<()> {
        for i in 0..self.cl.nodes.len() {
            let dead = self.cl.nodes[i].pid().is_none_or(|p| !cluster::alive(p));
            if dead && !self.down_nodes.contains(&i) {
                let log = tail(&self.cl.nodes[i].logs(), 30);
                self.violations
                    .add("crash", format!("node-{i} died on its own:\n{log}"));
                self.restart_node(i)?;
            }
        }
        for i in 0..self.cl.mounts.len() {
            let dead = self.cl.mounts[i]
                .proc
                .as_ref()
                .is_none_or(|p| !cluster::alive(p.pid()));
            if dead && !self.down_mounts.contains(&i) {
                let log = tail(&self.cl.mounts[i].logs(), 30);
                self.violations.add(
                    "crash",
                    format!("fuse-client of mount {i} died on its own:\n{log}"),
                );
                self.remount(i)?;
            }
        }
        Ok(())
    }

    fn restart_node(&mut self, i: usize) -> Result<()> {
        for attempt in 1..=3 {
            self.cl.nodes[i].kill9();
            match self.cl.nodes[i].start() {
                Ok(()) => return Ok(()),
                Err(e) => self.violations.add(
                    "restart-failed",
                    format!("node-{i}, attempt {attempt}: {e:#}"),
                ),
            }
        }
        bail!("node-{i} does not start any more")
    }

    fn remount(&mut self, i: usize) -> Result<()> {
        for attempt in 1..=3 {
            self.cl.mounts[i].kill9();
            match self.cl.mounts[i].start() {
                Ok(()) => return Ok(()),
                Err(e) => self.violations.add(
                    "restart-failed",
                    format!("mount {i}, attempt {attempt}: {e:#}"),
                ),
            }
        }
        bail!("mount {i} does not mount any more")
    }

    fn apply(&mut self, f: &Fault) -> Result<Undo> {
        let tb = &self.cl.tb;
        let table = format!("nemesis{}", f.id);
        Ok(match (f.kind, f.target) {
            (Kind::KillNode, Target::Node(i)) => {
                self.down_nodes.push(i);
                self.cl.nodes[i].kill9();
                Undo::RestartNode(i)
            }
            (Kind::KillFuse, Target::Node(i)) => {
                self.down_mounts.push(i);
                self.cl.mounts[i].kill9();
                Undo::RestartMount(i)
            }
            (Kind::StopNode, Target::Node(i)) => {
                let pid = self.cl.nodes[i].pid().context("a running node")?;
                Undo::Thaw(Frozen::new(pid))
            }
            (Kind::IsolateNode, Target::Node(i)) => {
                let others: Vec<Block> = (0..self.cl.nodes.len())
                    .filter(|&j| j != i)
                    .map(|j| Block::Host(tb.node_ip(j)))
                    .collect();
                tb.block(&tb.node_ns[i], &table, &others)?;
                Undo::Unblock(vec![(tb.node_ns[i].clone(), table)])
            }
            (Kind::SplitPair, Target::Pair(i, j)) => {
                tb.block(&tb.node_ns[i], &table, &[Block::Host(tb.node_ip(j))])?;
                tb.block(&tb.node_ns[j], &table, &[Block::Host(tb.node_ip(i))])?;
                Undo::Unblock(vec![
                    (tb.node_ns[i].clone(), table.clone()),
                    (tb.node_ns[j].clone(), table),
                ])
            }
            (Kind::CutOrigin, Target::Node(i)) => {
                let port = self
                    .cl
                    .proxy
                    .endpoint
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.parse().ok())
                    .context("proxy port")?;
                tb.block(
                    &tb.node_ns[i],
                    &table,
                    &[Block::TcpService(tb.mgmt_ip(), port)],
                )?;
                Undo::Unblock(vec![(tb.node_ns[i].clone(), table)])
            }
            (Kind::LinkDown, Target::Node(i)) => {
                tb.set_link(&tb.node_ns[i], false)?;
                Undo::LinkUp(tb.node_ns[i].clone())
            }
            (Kind::OriginLinkDown, _) => {
                tb.set_link(&tb.origin_ns, false)?;
                Undo::LinkUp(tb.origin_ns.clone())
            }
            (Kind::DiskFull, Target::Node(i)) => {
                let ballast = self.cl.nodes[i].disk.dir.join(format!("ballast-{}", f.id));
                fill(&ballast)?;
                Undo::RemoveBallast(ballast)
            }
            (Kind::Origin(fault), Target::Origin(file)) => {
                let (key, percent) = match (fault, file) {
                    // An overwrite is seen by every request.
                    (OriginFault::EtagChanged, Some(fi)) => {
                        (Some(format!("{BUCKET}/{}", self.files[fi].path)), 100)
                    }
                    _ => (None, f.percent),
                };
                self.cl.proxy.add(Active {
                    id: f.id,
                    fault,
                    key,
                    percent,
                    param: f.param,
                });
                if let (OriginFault::EtagChanged, Some(fi)) = (fault, file) {
                    self.evict_everywhere(&self.files[fi].path);
                }
                Undo::Proxy(f.id)
            }
            (Kind::Intruder, _) => {
                self.intrude(f)?;
                Undo::Intruder
            }
            (kind, target) => bail!("no such fault: {kind:?} on {target:?}"),
        })
    }

    /// Asks the cluster (through a node that is up) to drop `path` from
    /// every node's tiers, so the overwritten object's next reads go to the
    /// origin instead of being served from caches; readers still holding
    /// it open keep it (leases). The evict job runs on its own: whether it
    /// was accepted is logged, not required.
    fn evict_everywhere(&mut self, path: &str) {
        let Some(node) = (0..self.cl.nodes.len()).find(|i| !self.down_nodes.contains(i)) else {
            return;
        };
        let out = self.cl.nodes[node]
            .probe()
            .ctl(&["evict", DATASET, "--path", path], Duration::from_secs(10));
        let how = match out {
            Ok(o) if o.status.success() => "accepted".to_string(),
            Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
            Err(e) => format!("{e:#}"),
        };
        self.note(format!("evict {path} through node-{node}: {how}"));
    }

    /// Requests without the token (none, then a wrong one) must be refused
    /// by every node; a node with another CA's certificate asks to join.
    fn intrude(&mut self, f: &Fault) -> Result<()> {
        let wrong = self.cl.dir.join("wrong-token");
        std::fs::write(&wrong, "not-the-cluster-token-000000\n")?;
        std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o600))?;
        for (i, n) in self.cl.nodes.iter().enumerate() {
            if self.down_nodes.contains(&i) {
                continue;
            }
            for token in [None, Some(&wrong)] {
                let mut cmd = std::process::Command::new(crate::bin("dataset-ctl"));
                cmd.arg("--endpoint").arg(n.api().to_string());
                if let Some(t) = token {
                    cmd.arg("--token-file").arg(t);
                }
                let out = cluster::output_within(cmd.arg("list"), Duration::from_secs(5));
                if let Ok(out) = out {
                    if out.status.success() {
                        self.violations.add(
                            "api-without-token",
                            format!("node-{i} served `list` with token {token:?}"),
                        );
                    }
                }
            }
        }
        let seed = self.cl.nodes[(f.param % self.cl.nodes.len() as u64) as usize].peer();
        let proc = start_intruder(
            &self.cl.tb,
            &self.cl.dir.join("intruder"),
            &seed,
            &self.cl.token,
        )?;
        self.cl.intruder = Some(proc);
        Ok(())
    }

    fn undo(&mut self, f: &Fault, u: Undo) -> Result<()> {
        let tb = &self.cl.tb;
        match u {
            Undo::RestartNode(i) => {
                self.restart_node(i)?;
                self.down_nodes.retain(|&n| n != i);
            }
            Undo::RestartMount(i) => {
                self.remount(i)?;
                self.down_mounts.retain(|&m| m != i);
            }
            Undo::Thaw(frozen) => drop(frozen),
            Undo::Unblock(tables) => {
                for (ns, table) in tables {
                    tb.unblock(&ns, &table)?;
                }
            }
            Undo::LinkUp(ns) => tb.set_link(&ns, true)?,
            Undo::RemoveBallast(p) => std::fs::remove_file(&p)?,
            Undo::Proxy(id) => self.cl.proxy.remove(id),
            Undo::Intruder => {
                // The intruder, asked itself, must not count itself in.
                let out = cluster::output_within(
                    std::process::Command::new(crate::bin("dataset-ctl"))
                        .arg("--endpoint")
                        .arg(format!("{}:{}", tb.intruder_ip(), cluster::API_PORT))
                        .arg("--token-file")
                        .arg(&self.cl.token)
                        .args(["nodes", "-o", "json"]),
                    Duration::from_secs(10),
                );
                if let Ok(out) = out {
                    let listed = String::from_utf8_lossy(&out.stdout);
                    if let Some(n) = self.cl.names().iter().find(|n| listed.contains(*n)) {
                        self.violations.add(
                            "intruder-admitted",
                            format!("the intruder (fault #{}) lists {n}: {listed}", f.id),
                        );
                    }
                }
                if let Some(mut p) = self.cl.intruder.take() {
                    p.kill9();
                }
            }
        }
        Ok(())
    }
}

/// Fills the filesystem holding `path` with one file, to the last block
/// `fallocate` can get.
fn fill(path: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::create(path)?;
    // SAFETY: statvfs is plain data; all zeroes is a valid value.
    let mut vfs: libc::statvfs = unsafe { std::mem::zeroed() };
    let c = std::ffi::CString::new(
        path.parent()
            .expect("parent")
            .as_os_str()
            .as_encoded_bytes(),
    )?;
    // SAFETY: a valid C string and a statvfs struct to fill.
    if unsafe { libc::statvfs(c.as_ptr(), &mut vfs) } != 0 {
        bail!("statvfs: {}", std::io::Error::last_os_error());
    }
    let mut len = (vfs.f_bfree as i64) * (vfs.f_frsize as i64);
    while len > 0 {
        // SAFETY: fallocate on a descriptor this function owns.
        if unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) } == 0 {
            return Ok(());
        }
        len -= 256 << 10;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The disk-full fault really leaves no room for a chunk.
    #[test]
    fn a_ballast_fills_the_filesystem() {
        let tmp = tempfile::tempdir().unwrap();
        let fs = crate::LoopFs::mount(&tmp.path().join("img"), &tmp.path().join("fs"), 16).unwrap();
        std::fs::write(fs.dir.join("before"), vec![1u8; 1 << 20]).unwrap();
        fill(&fs.dir.join("ballast")).unwrap();
        let err = std::fs::write(fs.dir.join("chunk"), vec![1u8; 1 << 20]).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
        std::fs::remove_file(fs.dir.join("ballast")).unwrap();
        std::fs::write(fs.dir.join("chunk"), vec![1u8; 1 << 20]).unwrap();
    }

    #[test]
    fn the_replay_command_names_what_was_narrowed() {
        let mut cfg = Config {
            seed: 42,
            ..Config::default()
        };
        assert!(cfg
            .replay_command()
            .ends_with("--seed 42 --secs 120 --nodes 3"));
        cfg.kinds.retain(|k| *k != Kind::Intruder);
        assert!(cfg.replay_command().ends_with(" --skip intruder"));
        cfg.kinds = vec![Kind::KillNode];
        assert!(cfg.replay_command().ends_with(" --kinds kill-node"));
    }
}
