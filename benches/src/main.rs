//! `shoal-bench`: whole-workload throughput of Shoal, each figure printed
//! next to a baseline measured in the same run on the same machine, so the
//! ratio says what the cache costs (or gains) rather than how fast this
//! particular host happens to be.
//!
//! What it measures, and against what:
//!
//! 1. **Chunk store, per tier** (the library `shoal_cache_node::store`, no
//!    process or network in between). A source file on tmpfs is read through
//!    `ChunkStore::read` in sequential 16 MiB requests: the first pass is the
//!    *ingest* (origin read + blake3 + write into the tier + index update),
//!    later passes are *warm reads* served from the tier. Baselines: writing
//!    the same bytes with `write_all` into a file in the same tier directory
//!    (no fsync on either side), and reading that file back in 16 MiB pieces.
//!    The memory tier lives under /dev/shm, the disk tier under /var/tmp, the
//!    index under /var/tmp (as a node's data directory). For the disk tier
//!    the page cache is dropped (`sync` + `drop_caches`) before the
//!    device-cold reads; every figure is labelled with where its bytes were.
//!    Each repetition measures shoal and its baseline back to back on a fresh
//!    store, each write primed the same way (see [`prime_page_cache`]), and
//!    the median of the repetitions is reported, because page cache and VM
//!    memory effects make single I/O runs noisy.
//! 2. **blake3**, as the store hashes: `blake3::hash` per 4 MiB chunk on one
//!    thread, against one `blake3::Hasher` updated over the whole buffer
//!    (what single-threaded `b3sum` does), and `b3sum --num-threads 1` when
//!    it is installed.
//! 3. **End to end**: cold and warm `dataset-ctl cat` of one large object
//!    through a real `cache-node` backed by `rclone serve s3` on loopback,
//!    against downloading the same object from the same server with
//!    aws-sdk-s3 as sequential 8 MiB ranged GETs and as 8 parallel ones.
//!    Measured once each (a cold read is cold only once).
//!
//! Run after `cargo build --release --workspace --all-targets`:
//! `target/release/shoal-bench [--size-mib N] [--cat-size-mib N] [--etag-hash H]`.
//! It must run as root (to drop the page cache) and needs `rclone` on PATH.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::DisplayErrorContext;
use shoal_cache_node::catalog::DEFAULT_CHUNK_SIZE;
use shoal_cache_node::index::{FileVersionId, Index};
use shoal_cache_node::metrics::Metrics;
use shoal_cache_node::origin::local::LocalOrigin;
use shoal_cache_node::origin::{ObjectKind, ObjectMeta, SharedOrigin};
use shoal_cache_node::store::{
    ChunkStore, FileRef, Placement, StoreConfig, TierConfig, TierPolicy,
};
use shoal_tests::{Node, NodeOpts, S3Server, ACCESS_KEY, SECRET_KEY};

const MIB: u64 = 1 << 20;
/// Bytes per `ChunkStore::read` request and per raw read (what `dataset-ctl cat` asks for).
const REQUEST: u64 = 16 * MIB;
/// Bytes per ranged GET of the S3 baselines.
const S3_PART: u64 = 8 * MIB;
/// Concurrent ranged GETs of the parallel S3 baseline.
const S3_PARALLEL: usize = 8;
/// Repetitions of the store and hashing measurements (the median is reported).
const REPEATS: usize = 5;
const BUCKET: &str = "bench";
const OBJECT: &str = "big.bin";

const USAGE: &str = "usage: shoal-bench [--size-mib N] [--cat-size-mib N] [--etag-hash H]
  --size-mib N      bytes per chunk-store tier and blake3 run (default 512)
  --cat-size-mib N  object size for the dataset-ctl cat run (default 1024)
  --etag-hash H     rclone --etag-hash for the S3 server: MD5 (default) or none";

struct Args {
    size_mib: u64,
    cat_size_mib: u64,
    /// rclone's `--etag-hash` ("" for no ETags).
    etag_hash: String,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        size_mib: 512,
        cat_size_mib: 1024,
        etag_hash: "MD5".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f.to_string(), Some(v.to_string())),
            None => (arg, None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next())
                .with_context(|| format!("{flag} needs a value"))
        };
        let mib = |v: String| -> Result<u64> {
            let n: u64 = v.parse().with_context(|| format!("{v}: not a number"))?;
            ensure!(n > 0, "sizes must be at least 1 MiB");
            Ok(n)
        };
        match flag.as_str() {
            "--size-mib" => args.size_mib = mib(value()?)?,
            "--cat-size-mib" => args.cat_size_mib = mib(value()?)?,
            "--etag-hash" => {
                let v = value()?;
                args.etag_hash = if v.eq_ignore_ascii_case("none") {
                    String::new()
                } else {
                    v
                };
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    Ok(args)
}

/// One line of the final summary. Rates are bytes per second.
struct Row {
    what: String,
    shoal: f64,
    baseline_name: &'static str,
    baseline: f64,
    /// 1e6 for MB/s, 1e9 for GB/s.
    unit: f64,
    /// Where the bytes were during the measurement.
    place: &'static str,
}

fn rate(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64()
}

fn median(runs: &[f64]) -> f64 {
    let mut v = runs.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Prints one measured figure (median of `runs`, in MB/s) and returns it.
fn report(what: &str, place: &str, runs: &[f64], baseline: Option<f64>) -> f64 {
    let m = median(runs);
    let ratio = baseline.map_or(String::new(), |b| format!("{:.2}", m / b));
    let all: Vec<String> = runs.iter().map(|r| format!("{:.0}", r / 1e6)).collect();
    println!(
        "  {what:<46} {place:<22} {:>9.1} MB/s {ratio:>6}   {}",
        m / 1e6,
        all.join(" / ")
    );
    m
}

fn report_header() {
    println!(
        "  {:<46} {:<22} {:>14} {:>6}   runs (MB/s)",
        "measurement", "bytes were in", "median", "ratio"
    );
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let size = args.size_mib * MIB;
    println!(
        "shoal-bench: store/blake3 size {} MiB, cat size {} MiB, chunk size {} MiB, {} CPUs; MB = 10^6 B",
        args.size_mib,
        args.cat_size_mib,
        DEFAULT_CHUNK_SIZE / MIB,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    println!("ratio = shoal ÷ baseline (> 1: shoal is faster)");
    let data = shoal_tests::pattern(1, size as usize);
    let mut rows = Vec::new();

    // The origin of the store benchmark lives on tmpfs, so it is never the bottleneck.
    let origin_dir = tempdir_in("/dev/shm")?;
    std::fs::write(origin_dir.path().join("src.bin"), &data)?;
    for tier in [Tier::Memory, Tier::Disk] {
        rt.block_on(bench_tier(tier, &data, origin_dir.path(), &mut rows))?;
    }
    drop(origin_dir);

    bench_blake3(&data, &mut rows)?;
    drop(data);

    bench_cat(&rt, args.cat_size_mib * MIB, &args.etag_hash, &mut rows)?;

    print_summary(&rows);
    Ok(())
}

fn tempdir_in(parent: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("shoal-bench-")
        .tempdir_in(parent)
        .with_context(|| format!("creating a temporary directory in {parent}"))
}

// ---------------------------------------------------------------------------
// 1. Chunk store per tier
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Tier {
    Memory,
    Disk,
}

impl Tier {
    fn name(self) -> &'static str {
        match self {
            Tier::Memory => "memory",
            Tier::Disk => "disk",
        }
    }

    fn root(self) -> &'static str {
        match self {
            Tier::Memory => "/dev/shm",
            Tier::Disk => "/var/tmp",
        }
    }
}

/// Writes back dirty pages, so one measurement's writeback does not land
/// in the next one.
fn sync() -> Result<()> {
    let status = Command::new("sync").status().context("running sync")?;
    ensure!(status.success(), "sync failed: {status}");
    Ok(())
}

/// Writes and deletes a scratch file of `data` in `dir`, then touches and
/// frees as much anonymous memory, just before a timed write there. On VMs
/// that hand free guest memory back to the host a few seconds after it is
/// freed (balloon free-page reporting, as on the Firecracker host this was
/// written on), writing into pages freed longer ago costs a host page fault
/// per page: there, page-cache writes ran at 0.4-0.8 GB/s after a 3 s pause
/// against 5 GB/s without one. Priming leaves recently freed, host-backed
/// pages for the timed write, so shoal and its baseline start from the same
/// state and the figure is about the code rather than the timing.
fn prime_page_cache(dir: &Path, data: &[u8]) -> Result<()> {
    let path = dir.join("prime.tmp");
    std::fs::write(&path, data)?;
    std::fs::remove_file(&path)?;
    let mut anon = vec![0u8; data.len()];
    for page in anon.chunks_mut(4096) {
        page[0] = 1;
    }
    std::hint::black_box(&anon);
    Ok(())
}

/// Flushes and empties the page cache, so the next read comes from the
/// device. tmpfs pages (the origin, the memory tier) stay.
fn drop_page_cache() -> Result<()> {
    sync()?;
    std::fs::write("/proc/sys/vm/drop_caches", "3")
        .context("writing /proc/sys/vm/drop_caches (run as root)")
}

/// Writes `data` to a new file in 16 MiB `write_all` calls, without fsync.
fn raw_write(path: &Path, data: &[u8]) -> Result<f64> {
    let start = Instant::now();
    let mut f = std::fs::File::create(path)?;
    for piece in data.chunks(REQUEST as usize) {
        f.write_all(piece)?;
    }
    drop(f);
    Ok(rate(data.len() as u64, start.elapsed()))
}

/// Reads a file in 16 MiB pieces into fresh buffers (as `std::fs::read`
/// would), timing only the reads; checks the bytes outside the timer.
fn raw_read(path: &Path, expect: &[u8]) -> Result<f64> {
    let start = Instant::now();
    let mut f = std::fs::File::open(path)?;
    let mut busy = start.elapsed();
    let mut off = 0;
    while off < expect.len() {
        let t = Instant::now();
        let len = (REQUEST as usize).min(expect.len() - off);
        let mut buf = vec![0u8; len];
        f.read_exact(&mut buf)?;
        busy += t.elapsed();
        ensure!(buf == expect[off..off + len], "raw read: bytes differ");
        off += len;
    }
    Ok(rate(expect.len() as u64, busy))
}

/// Reads the whole file through the store in sequential 16 MiB requests,
/// timing only the requests; checks the bytes outside the timer.
async fn store_read(store: &ChunkStore, file: &FileRef, expect: &[u8]) -> Result<f64> {
    let mut busy = Duration::ZERO;
    let mut off = 0;
    while off < expect.len() {
        let t = Instant::now();
        let got = store.read(file, off as u64, REQUEST).await?;
        busy += t.elapsed();
        ensure!(!got.is_empty(), "store read returned nothing at {off}");
        ensure!(
            got[..] == expect[off..off + got.len()],
            "store read: bytes differ at {off}"
        );
        off += got.len();
    }
    Ok(rate(expect.len() as u64, busy))
}

/// A store with only `tier` enabled, room for the file twice over.
fn open_store(
    tier: Tier,
    tier_dir: &Path,
    index_dir: &Path,
    size: u64,
) -> Result<(ChunkStore, Arc<Metrics>)> {
    let cfg = TierConfig {
        dir: tier_dir.to_path_buf(),
        quota: 2 * size + 64 * MIB,
        high: 0.95,
        low: 0.70,
    };
    let cfg = StoreConfig {
        memory: (tier == Tier::Memory).then(|| cfg.clone()),
        disk: (tier == Tier::Disk).then_some(cfg),
        // The node's defaults (config.rs).
        origin_concurrency: 16,
        read_concurrency: 8,
        verify_recovered: false,
    };
    let metrics = Arc::new(Metrics::default());
    let index = Arc::new(Index::open(index_dir)?);
    Ok((ChunkStore::open(index, &cfg, metrics.clone())?, metrics))
}

/// Per-repetition figures of one tier, bytes per second.
#[derive(Default)]
struct TierRuns {
    raw_write: Vec<f64>,
    ingest: Vec<f64>,
    raw_cold: Vec<f64>,
    shoal_cold: Vec<f64>,
    raw_warm: Vec<f64>,
    shoal_warm: Vec<f64>,
}

async fn bench_tier(tier: Tier, data: &[u8], origin_dir: &Path, rows: &mut Vec<Row>) -> Result<()> {
    let size = data.len() as u64;
    let chunks = size.div_ceil(DEFAULT_CHUNK_SIZE);
    let disk = tier == Tier::Disk;
    let work = tempdir_in(tier.root())?;
    println!(
        "\n== 1. Chunk store, {} tier in {}, {} MiB, median of {REPEATS} ==",
        tier.name(),
        work.path().display(),
        size / MIB,
    );
    let origin: SharedOrigin = Arc::new(LocalOrigin::new(origin_dir.to_path_buf()));
    let object: ObjectMeta = origin
        .list()
        .await?
        .into_iter()
        .find(|o| o.kind == ObjectKind::File && o.path == "src.bin")
        .context("source file not listed by the local origin")?;

    let mut runs = TierRuns::default();
    for rep in 0..REPEATS {
        // A fresh store (tier directory and index) per repetition.
        let rep_dir = work.path().join(format!("run{rep}"));
        std::fs::create_dir_all(&rep_dir)?;
        let index_dir = tempdir_in("/var/tmp")?;
        let (store, metrics) = open_store(tier, &rep_dir.join("chunks"), index_dir.path(), size)?;
        let file = FileRef {
            fv: FileVersionId([rep as u8 + 1; 16]),
            size,
            chunk_size: DEFAULT_CHUNK_SIZE,
            object: object.clone(),
            origin: origin.clone(),
            placement: Placement {
                policy: match tier {
                    Tier::Memory => TierPolicy::MemoryOnly,
                    Tier::Disk => TierPolicy::DiskOnly,
                },
                pin: false,
                only: None,
            },
            locator: None,
        };
        let raw_path = rep_dir.join("raw.bin");

        // Writes, each starting with no dirty pages and recently freed memory.
        sync()?;
        prime_page_cache(&rep_dir, data)?;
        runs.raw_write.push(raw_write(&raw_path, data)?);
        sync()?;
        prime_page_cache(&rep_dir, data)?;
        runs.ingest.push(store_read(&store, &file, data).await?);
        ensure!(
            metrics.misses.get() == chunks && metrics.origin_bytes.get() == size,
            "ingest fetched {} chunks / {} bytes from the origin, expected {chunks} / {size}",
            metrics.misses.get(),
            metrics.origin_bytes.get()
        );
        let resident: u64 = store.usage().iter().map(|u| u.used).sum();
        ensure!(
            resident == size,
            "{resident} bytes resident after ingest, expected {size}"
        );

        // Reads: from the device (disk tier only), then from memory.
        if disk {
            drop_page_cache()?;
            runs.raw_cold.push(raw_read(&raw_path, data)?);
            runs.shoal_cold.push(store_read(&store, &file, data).await?);
        }
        runs.raw_warm.push(raw_read(&raw_path, data)?);
        runs.shoal_warm.push(store_read(&store, &file, data).await?);
        ensure!(
            metrics.misses.get() == chunks,
            "warm reads went to the origin ({} misses, {chunks} chunks)",
            metrics.misses.get()
        );

        drop(store);
        std::fs::remove_dir_all(&rep_dir)?;
    }

    let t = tier.name();
    let (wplace, rplace) = if disk {
        ("page cache, no fsync", "page cache (warm)")
    } else {
        ("tmpfs", "tmpfs")
    };
    report_header();
    let raw_w = report(
        "raw write_all 16 MiB (no fsync)",
        wplace,
        &runs.raw_write,
        None,
    );
    let ingest = report(
        "shoal ingest: cold store.read 16 MiB",
        wplace,
        &runs.ingest,
        Some(raw_w),
    );
    rows.push(Row {
        what: format!("{t} tier: ingest (cold store.read)"),
        shoal: ingest,
        baseline_name: "raw write_all",
        baseline: raw_w,
        unit: 1e6,
        place: wplace,
    });
    if disk {
        let raw = report(
            "raw read 16 MiB pieces",
            "device (cache dropped)",
            &runs.raw_cold,
            None,
        );
        let shoal = report(
            "shoal warm read: store.read 16 MiB",
            "device (cache dropped)",
            &runs.shoal_cold,
            Some(raw),
        );
        rows.push(Row {
            what: format!("{t} tier: warm read"),
            shoal,
            baseline_name: "raw read",
            baseline: raw,
            unit: 1e6,
            place: "device (cache dropped)",
        });
    }
    let raw = report("raw read 16 MiB pieces", rplace, &runs.raw_warm, None);
    let shoal = report(
        "shoal warm read: store.read 16 MiB",
        rplace,
        &runs.shoal_warm,
        Some(raw),
    );
    rows.push(Row {
        what: format!("{t} tier: warm read"),
        shoal,
        baseline_name: "raw read",
        baseline: raw,
        unit: 1e6,
        place: rplace,
    });
    println!(
        "  checked: bytes identical; each run fetched its {chunks} chunks once, warm reads were all tier hits"
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// 2. blake3
// ---------------------------------------------------------------------------

/// Median throughput of `REPEATS` runs of `f` over `bytes` bytes.
fn median_rate(bytes: u64, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    let mut runs = Vec::new();
    for _ in 0..REPEATS {
        let t = Instant::now();
        f()?;
        runs.push(rate(bytes, t.elapsed()));
    }
    Ok(median(&runs))
}

fn bench_blake3(data: &[u8], rows: &mut Vec<Row>) -> Result<()> {
    let size = data.len() as u64;
    println!(
        "\n== 2. blake3, {} MiB in memory, one thread, median of {REPEATS} ==",
        size / MIB
    );
    let chunked = median_rate(size, || {
        for chunk in data.chunks(DEFAULT_CHUNK_SIZE as usize) {
            std::hint::black_box(blake3::hash(std::hint::black_box(chunk)));
        }
        Ok(())
    })?;
    let whole = median_rate(size, || {
        let mut h = blake3::Hasher::new();
        h.update(std::hint::black_box(data));
        std::hint::black_box(h.finalize());
        Ok(())
    })?;
    println!(
        "  {:<60} {:6.2} GB/s",
        "shoal: blake3::hash per 4 MiB chunk",
        chunked / 1e9
    );
    println!(
        "  {:<60} {:6.2} GB/s   ratio {:.2}",
        "baseline: one Hasher::update over the buffer (b3sum-style)",
        whole / 1e9,
        chunked / whole
    );
    rows.push(Row {
        what: "blake3 per 4 MiB chunk, 1 thread".into(),
        shoal: chunked,
        baseline_name: "Hasher::update whole",
        baseline: whole,
        unit: 1e9,
        place: "RAM",
    });

    match Command::new("b3sum").arg("--version").output() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("  b3sum --num-threads 1: b3sum not installed");
        }
        Err(e) => println!("  b3sum --num-threads 1: cannot run b3sum: {e}"),
        Ok(_) => {
            let dir = tempdir_in("/dev/shm")?;
            let path = dir.path().join("hash.bin");
            std::fs::write(&path, data)?;
            let b3sum = median_rate(size, || {
                let out = Command::new("b3sum")
                    .args(["--num-threads", "1"])
                    .arg(&path)
                    .output()?;
                ensure!(
                    out.status.success(),
                    "b3sum failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                Ok(())
            })?;
            println!(
                "  {:<60} {:6.2} GB/s   ratio {:.2} (file on tmpfs, includes process start)",
                "baseline: b3sum --num-threads 1",
                b3sum / 1e9,
                chunked / b3sum
            );
            rows.push(Row {
                what: "blake3 per 4 MiB chunk, 1 thread".into(),
                shoal: chunked,
                baseline_name: "b3sum --num-threads 1",
                baseline: b3sum,
                unit: 1e9,
                place: "tmpfs",
            });
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// 3. dataset-ctl cat vs plain S3 download
// ---------------------------------------------------------------------------

fn s3_client(endpoint: &str) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .credentials_provider(Credentials::new(
            ACCESS_KEY,
            SECRET_KEY,
            None,
            None,
            "shoal-bench",
        ))
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// One ranged GET of `[start, end)`; returns the bytes received.
async fn get_range(client: &aws_sdk_s3::Client, start: u64, end: u64) -> Result<u64> {
    let resp = client
        .get_object()
        .bucket(BUCKET)
        .key(OBJECT)
        .range(format!("bytes={start}-{}", end - 1))
        .send()
        .await
        .map_err(|e| anyhow!("GET {OBJECT} [{start}, {end}): {}", DisplayErrorContext(&e)))?;
    let body = resp.body.collect().await?.into_bytes();
    ensure!(
        body.len() as u64 == end - start,
        "GET {OBJECT} [{start}, {end}) returned {} bytes",
        body.len()
    );
    Ok(body.len() as u64)
}

async fn download_sequential(client: &aws_sdk_s3::Client, size: u64) -> Result<Duration> {
    let t = Instant::now();
    let mut got = 0;
    let mut off = 0;
    while off < size {
        let end = (off + S3_PART).min(size);
        got += get_range(client, off, end).await?;
        off = end;
    }
    ensure!(got == size, "downloaded {got} of {size} bytes");
    Ok(t.elapsed())
}

async fn download_parallel(client: &aws_sdk_s3::Client, size: u64) -> Result<Duration> {
    let t = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..S3_PARALLEL {
        let (client, next) = (client.clone(), next.clone());
        workers.spawn(async move {
            let mut got = 0;
            loop {
                let start = next.fetch_add(S3_PART, Ordering::Relaxed);
                if start >= size {
                    return Ok::<_, anyhow::Error>(got);
                }
                got += get_range(&client, start, (start + S3_PART).min(size)).await?;
            }
        });
    }
    let mut got = 0;
    while let Some(r) = workers.join_next().await {
        got += r??;
    }
    ensure!(got == size, "downloaded {got} of {size} bytes");
    Ok(t.elapsed())
}

/// Runs `dataset-ctl` and returns its stdout, or its stderr as the error.
fn ctl(node: &Node, args: &[&str]) -> Result<Vec<u8>> {
    let out = node.ctl(args);
    ensure!(
        out.status.success(),
        "dataset-ctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(out.stdout)
}

/// `dataset-ctl cat big big.bin > /dev/null`, timed from spawn to exit.
fn timed_cat(node: &Node) -> Result<Duration> {
    let t = Instant::now();
    let out = Command::new(shoal_tests::bin("dataset-ctl"))
        .arg("--endpoint")
        .arg(&node.listen)
        .args(["cat", "big", OBJECT])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()?;
    let elapsed = t.elapsed();
    ensure!(
        out.status.success(),
        "dataset-ctl cat failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(elapsed)
}

/// Untimed `dataset-ctl cat` whose output is counted and hashed.
fn verify_cat(node: &Node, size: u64, want: &blake3::Hash) -> Result<()> {
    let mut child = Command::new(shoal_tests::bin("dataset-ctl"))
        .arg("--endpoint")
        .arg(&node.listen)
        .args(["cat", "big", OBJECT])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut stdout = child.stdout.take().context("no stdout pipe")?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; MIB as usize];
    let mut n = 0u64;
    loop {
        let got = stdout.read(&mut buf)?;
        if got == 0 {
            break;
        }
        hasher.update(&buf[..got]);
        n += got as u64;
    }
    ensure!(child.wait()?.success(), "verification cat failed");
    ensure!(n == size, "cat wrote {n} bytes, expected {size}");
    ensure!(
        hasher.finalize() == *want,
        "cat output differs from the object"
    );
    Ok(())
}

/// Prints one end-to-end figure, with its ratios to the two S3 baselines
/// `(sequential, parallel)` when given, and returns its rate.
fn report_cat(what: &str, size: u64, took: Duration, baselines: Option<(f64, f64)>) -> f64 {
    let r = rate(size, took);
    let ratios = baselines.map_or(String::new(), |(seq, par)| {
        format!(
            "ratio {:.2} to sequential, {:.2} to parallel",
            r / seq,
            r / par
        )
    });
    println!(
        "  {what:<58} {:>9.1} MB/s ({:6.1} s)  {ratios}",
        r / 1e6,
        took.as_secs_f64()
    );
    r
}

fn bench_cat(
    rt: &tokio::runtime::Runtime,
    size: u64,
    etag_hash: &str,
    rows: &mut Vec<Row>,
) -> Result<()> {
    // Origin bytes on tmpfs so rclone reads from RAM; the node's index and
    // disk tier under /var/tmp; its memory tier on tmpfs (through a
    // symlink, since the harness puts it at <node dir>/mem).
    let s3_root = tempdir_in("/dev/shm")?;
    let node_root = tempdir_in("/var/tmp")?;
    let mem_tier = tempdir_in("/dev/shm")?;
    let node_dir = node_root.path().join("node");
    std::fs::create_dir_all(&node_dir)?;
    std::os::unix::fs::symlink(mem_tier.path(), node_dir.join("mem"))?;

    let s3_dir = s3_root.path().join("s3");
    let object_path = s3_dir.join(BUCKET).join(OBJECT);
    std::fs::create_dir_all(s3_dir.join(BUCKET))?;
    let want = {
        let bytes = shoal_tests::pattern(2, size as usize);
        std::fs::write(&object_path, &bytes)?;
        blake3::hash(&bytes)
    };

    let s3 = S3Server::start(&s3_dir, node_root.path(), etag_hash)?;
    let node = Node::start(
        &node_dir,
        NodeOpts {
            memory_quota: "2GiB".into(),
            disk_quota: "4GiB".into(),
            ..Default::default()
        },
    )?;
    println!(
        "\n== 3. dataset-ctl cat of a {} MiB object: cache-node + rclone serve s3 --etag-hash={:?} on loopback ==",
        size / MIB,
        etag_hash
    );
    println!(
        "  origin {} (tmpfs); node memory tier {} (tmpfs); index and disk tier under {}",
        object_path.display(),
        mem_tier.path().display(),
        node_dir.display()
    );
    println!("  each measured once: a cold read is cold only once");
    ctl(
        &node,
        &[
            "create",
            "big",
            "--source",
            &format!("s3://{BUCKET}"),
            "--s3-endpoint",
            &s3.endpoint,
        ],
    )?;

    let client = s3_client(&s3.endpoint);
    let (seq_t, par_t) = rt.block_on(async {
        // One small request first, so client setup is not timed.
        get_range(&client, 0, 1).await?;
        let seq = download_sequential(&client, size).await?;
        let par = download_parallel(&client, size).await?;
        Ok::<_, anyhow::Error>((seq, par))
    })?;
    let (seq, par) = (rate(size, seq_t), rate(size, par_t));

    let cold_t = timed_cat(&node)?;
    let fetched = node.metric("shoal_origin_bytes_total") as u64;
    ensure!(
        fetched == size,
        "cold cat fetched {fetched} bytes from the origin, expected {size}"
    );
    let warm_t = timed_cat(&node)?;
    let after = node.metric("shoal_origin_bytes_total") as u64;
    ensure!(
        after == fetched,
        "warm cat went to the origin ({} more bytes)",
        after - fetched
    );
    verify_cat(&node, size, &want)?;

    let part = S3_PART / MIB;
    report_cat(
        &format!("baseline: aws-sdk-s3, sequential {part} MiB ranged GETs"),
        size,
        seq_t,
        None,
    );
    report_cat(
        &format!("baseline: aws-sdk-s3, {S3_PARALLEL} parallel {part} MiB ranged GETs"),
        size,
        par_t,
        None,
    );
    let cold = report_cat(
        "shoal: cold `dataset-ctl cat` > /dev/null",
        size,
        cold_t,
        Some((seq, par)),
    );
    let warm = report_cat(
        "shoal: warm `dataset-ctl cat` > /dev/null (memory tier)",
        size,
        warm_t,
        Some((seq, par)),
    );
    println!(
        "  checked: the cold cat fetched every byte once, the warm cat none; output identical to the object"
    );
    for (baseline_name, baseline) in [("S3 sequential GETs", seq), ("S3 8 parallel GETs", par)] {
        rows.push(Row {
            what: "cold dataset-ctl cat".into(),
            shoal: cold,
            baseline_name,
            baseline,
            unit: 1e6,
            place: "origin (rclone, tmpfs)",
        });
    }
    rows.push(Row {
        what: "warm dataset-ctl cat".into(),
        shoal: warm,
        baseline_name: "S3 8 parallel GETs",
        baseline: par,
        unit: 1e6,
        place: "memory tier (tmpfs)",
    });
    // Processes first, then their directories.
    drop(node);
    drop(s3);
    Ok(())
}

// ---------------------------------------------------------------------------
// Summary
// ---------------------------------------------------------------------------

fn print_summary(rows: &[Row]) {
    println!("\n== Summary (ratio = shoal ÷ baseline; > 1 means shoal is faster) ==");
    println!(
        "  {:<38} {:>14}  {:<22} {:>14}  {:>6}  bytes were in",
        "measurement", "shoal", "baseline", "baseline", "ratio"
    );
    println!("  {}", "-".repeat(128));
    for r in rows {
        let u = if r.unit >= 1e9 { "GB/s" } else { "MB/s" };
        println!(
            "  {:<38} {:>9.2} {u}  {:<22} {:>9.2} {u}  {:>6.2}  {}",
            r.what,
            r.shoal / r.unit,
            r.baseline_name,
            r.baseline / r.unit,
            r.shoal / r.baseline,
            r.place
        );
    }
}
