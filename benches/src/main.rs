//! `shoal-bench`: whole-workload throughput of Shoal, each figure printed
//! next to a baseline measured in the same run on the same machine, so the
//! ratio says how much the cache costs (or gains) rather than how fast this
//! particular host is.
//!
//! What it measures, and against what:
//!
//! 1. **Chunk store, per tier** (library `shoal_cache_node::store`, no
//!    process or network in between). A source file on tmpfs is read through
//!    `ChunkStore::read` in 16 MiB requests: the first pass is the *ingest*
//!    (origin read + blake3 + write into the tier + index update), the next
//!    passes are *warm reads* served from the tier. Baselines: writing the
//!    same bytes with `write_all` into a file in the same tier directory (no
//!    fsync on either side), and reading that file back in 16 MiB pieces.
//!    The memory tier lives under /dev/shm, the disk tier under /var/tmp.
//!    For the disk tier the page cache is dropped (`sync` + `drop_caches`)
//!    before the device-cold reads; every number is labelled with the page
//!    cache state it ran in.
//! 2. **blake3**, as the store hashes: `blake3::hash` per 4 MiB chunk on one
//!    thread, against one `blake3::Hasher` updated over the whole buffer
//!    (what single-threaded `b3sum` does), and `b3sum --num-threads 1` when
//!    it is installed.
//! 3. **End to end**: cold and warm `dataset-ctl cat` of one large object
//!    through a real `cache-node` backed by `rclone serve s3` on loopback,
//!    against downloading the same object from the same server with
//!    aws-sdk-s3 as sequential 8 MiB ranged GETs and as 8 parallel ones.
//!
//! Run after `cargo build --release --workspace --all-targets`:
//! `target/release/shoal-bench [--size-mib N] [--cat-size-mib N]`.
//! It must run as root (to drop the page cache) and needs `rclone` on PATH.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
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
use shoal_cache_node::origin::{ObjectKind, Origin};
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
/// Repetitions of the hashing measurements (the best one is kept).
const HASH_REPEATS: usize = 3;
const BUCKET: &str = "bench";
const OBJECT: &str = "big.bin";

struct Args {
    size_mib: u64,
    cat_size_mib: u64,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        size_mib: 512,
        cat_size_mib: 1024,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) => (f.to_string(), Some(v.to_string())),
            None => (a.clone(), None),
        };
        let mut value = |name: &str| -> Result<u64> {
            let v = inline.clone().or_else(|| it.next());
            let v = v.with_context(|| format!("{name} needs a value"))?;
            let n: u64 = v
                .parse()
                .with_context(|| format!("{name} {v}: not a number"))?;
            ensure!(n > 0, "{name} must be at least 1");
            Ok(n)
        };
        match flag.as_str() {
            "--size-mib" => args.size_mib = value("--size-mib")?,
            "--cat-size-mib" => args.cat_size_mib = value("--cat-size-mib")?,
            "-h" | "--help" => {
                println!(
                    "usage: shoal-bench [--size-mib N] [--cat-size-mib N]\n\
                     \x20 --size-mib N      bytes per chunk-store tier and blake3 run (default 512)\n\
                     \x20 --cat-size-mib N  object size for the dataset-ctl cat run (default 1024)"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    Ok(args)
}

/// One line of the final summary. Rates are bytes per second.
struct Row {
    what: String,
    shoal: f64,
    baseline_name: String,
    baseline: f64,
    /// 1e6 for MB/s, 1e9 for GB/s.
    unit: f64,
    /// Where the bytes were during the measurement.
    cache: &'static str,
}

impl Row {
    fn unit_name(&self) -> &'static str {
        if self.unit >= 1e9 {
            "GB/s"
        } else {
            "MB/s"
        }
    }
}

fn rate(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64()
}

fn mbs(r: f64) -> String {
    format!("{:9.1} MB/s", r / 1e6)
}

fn line(what: &str, r: f64, extra: &str) {
    println!("  {what:<58} {} {extra}", mbs(r));
}

fn ratio_text(shoal: f64, base: f64) -> String {
    format!("(shoal ÷ raw = {:.2})", shoal / base)
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let size = args.size_mib * MIB;
    println!(
        "shoal-bench: store/blake3 size {} MiB, cat size {} MiB, chunk size {} MiB, {} CPUs (MB = 10^6 B)",
        args.size_mib,
        args.cat_size_mib,
        DEFAULT_CHUNK_SIZE / MIB,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
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

    bench_cat(&rt, args.cat_size_mib * MIB, &mut rows)?;

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

    fn policy(self) -> TierPolicy {
        match self {
            Tier::Memory => TierPolicy::MemoryOnly,
            Tier::Disk => TierPolicy::DiskOnly,
        }
    }
}

/// Flushes dirty pages and empties the page cache, so the next read comes
/// from the device. tmpfs pages (the origin, the memory tier) stay.
fn drop_page_cache() -> Result<()> {
    let status = Command::new("sync").status().context("running sync")?;
    ensure!(status.success(), "sync failed: {status}");
    std::fs::write("/proc/sys/vm/drop_caches", "3")
        .context("writing /proc/sys/vm/drop_caches (run as root)")
}

/// Writes `data` to a new file in 16 MiB `write_all` calls, without fsync.
fn raw_write(path: &Path, data: &[u8]) -> Result<Duration> {
    let start = Instant::now();
    let mut f = std::fs::File::create(path)?;
    for piece in data.chunks(REQUEST as usize) {
        f.write_all(piece)?;
    }
    drop(f);
    Ok(start.elapsed())
}

/// Reads a file in 16 MiB pieces into fresh buffers (as `std::fs::read`
/// would), timing only the reads; checks the bytes outside the timer.
fn raw_read(path: &Path, expect: &[u8]) -> Result<Duration> {
    let mut busy = Duration::ZERO;
    let start = Instant::now();
    let mut f = std::fs::File::open(path)?;
    busy += start.elapsed();
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
    Ok(busy)
}

/// Reads the whole file through the store in sequential 16 MiB requests,
/// timing only the requests; checks the bytes outside the timer.
async fn store_read(store: &ChunkStore, file: &FileRef, expect: &[u8]) -> Result<Duration> {
    let mut busy = Duration::ZERO;
    let mut off = 0usize;
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
    Ok(busy)
}

async fn bench_tier(tier: Tier, data: &[u8], origin_dir: &Path, rows: &mut Vec<Row>) -> Result<()> {
    let size = data.len() as u64;
    let work = tempdir_in(tier.root())?;
    // The index lives on disk, as a node's data directory does.
    let index_dir = tempdir_in("/var/tmp")?;
    let disk = tier == Tier::Disk;
    println!(
        "\n== 1. Chunk store, {} tier ({}), {} MiB, index in {} ==",
        tier.name(),
        work.path().display(),
        size / MIB,
        index_dir.path().display()
    );

    // Baselines on the same medium.
    let raw_path = work.path().join("raw.bin");
    if disk {
        drop_page_cache()?;
    }
    let raw_w = rate(size, raw_write(&raw_path, data)?);
    let mut raw_cold = None;
    if disk {
        drop_page_cache()?;
        raw_cold = Some(rate(size, raw_read(&raw_path, data)?));
    }
    let raw_warm = rate(size, raw_read(&raw_path, data)?);
    std::fs::remove_file(&raw_path)?;

    // The store, with only this tier enabled.
    let tier_cfg = TierConfig {
        dir: work.path().join("chunks"),
        quota: 2 * size + 64 * MIB,
        high: 0.95,
        low: 0.70,
    };
    let cfg = StoreConfig {
        memory: (!disk).then(|| tier_cfg.clone()),
        disk: disk.then_some(tier_cfg),
        origin_concurrency: 16,
        read_concurrency: 8,
    };
    let metrics = Arc::new(Metrics::default());
    let index = Arc::new(Index::open(index_dir.path())?);
    let store = ChunkStore::open(index, &cfg, metrics.clone())?;
    let origin = Arc::new(LocalOrigin::new(origin_dir.to_path_buf()));
    let object = origin
        .list()
        .await?
        .into_iter()
        .find(|o| o.kind == ObjectKind::File && o.path == "src.bin")
        .context("source file not listed by the local origin")?;
    let file = FileRef {
        fv: FileVersionId([tier as u8 + 1; 16]),
        size,
        chunk_size: DEFAULT_CHUNK_SIZE,
        object,
        origin,
        placement: Placement {
            policy: tier.policy(),
            pin: false,
        },
    };

    if disk {
        drop_page_cache()?;
    }
    let ingest = rate(size, store_read(&store, &file, data).await?);
    let chunks = size.div_ceil(DEFAULT_CHUNK_SIZE);
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
    let mut warm_cold = None;
    if disk {
        drop_page_cache()?;
        warm_cold = Some(rate(size, store_read(&store, &file, data).await?));
    }
    let warm = rate(size, store_read(&store, &file, data).await?);
    ensure!(
        metrics.misses.get() == chunks,
        "warm reads went to the origin ({} misses)",
        metrics.misses.get()
    );

    let t = tier.name();
    let (wcache, rcache) = if disk {
        ("page cache, no fsync", "page cache warm")
    } else {
        ("tmpfs", "tmpfs")
    };
    line(
        &format!("raw write (write_all 16 MiB, no fsync) [{wcache}]"),
        raw_w,
        "",
    );
    line(
        &format!("shoal ingest (cold store.read: fetch+blake3+write) [{wcache}]"),
        ingest,
        &ratio_text(ingest, raw_w),
    );
    rows.push(Row {
        what: format!("{t} tier: ingest (cold store.read)"),
        shoal: ingest,
        baseline_name: "raw write_all".into(),
        baseline: raw_w,
        unit: 1e6,
        cache: if disk {
            "page cache, no fsync"
        } else {
            "tmpfs"
        },
    });
    if let (Some(raw_cold), Some(warm_cold)) = (raw_cold, warm_cold) {
        line(
            "raw read 16 MiB pieces [page cache dropped: device]",
            raw_cold,
            "",
        );
        line(
            "shoal warm read (store.read 16 MiB) [page cache dropped: device]",
            warm_cold,
            &ratio_text(warm_cold, raw_cold),
        );
        rows.push(Row {
            what: format!("{t} tier: warm read, from device"),
            shoal: warm_cold,
            baseline_name: "raw read".into(),
            baseline: raw_cold,
            unit: 1e6,
            cache: "page cache dropped",
        });
    }
    line(&format!("raw read 16 MiB pieces [{rcache}]"), raw_warm, "");
    line(
        &format!("shoal warm read (store.read 16 MiB) [{rcache}]"),
        warm,
        &ratio_text(warm, raw_warm),
    );
    rows.push(Row {
        what: format!("{t} tier: warm read"),
        shoal: warm,
        baseline_name: "raw read".into(),
        baseline: raw_warm,
        unit: 1e6,
        cache: rcache,
    });
    println!("  checked: bytes identical, {chunks} chunks fetched once, warm reads all tier hits");
    Ok(())
}

// ---------------------------------------------------------------------------
// 2. blake3
// ---------------------------------------------------------------------------

/// Best of `HASH_REPEATS` runs of `f`.
fn best_of(mut f: impl FnMut()) -> Duration {
    (0..HASH_REPEATS)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .expect("at least one repeat")
}

fn bench_blake3(data: &[u8], rows: &mut Vec<Row>) -> Result<()> {
    let size = data.len() as u64;
    println!(
        "\n== 2. blake3, {} MiB in memory, one thread, best of {HASH_REPEATS} ==",
        size / MIB
    );
    let chunked = best_of(|| {
        for chunk in data.chunks(DEFAULT_CHUNK_SIZE as usize) {
            std::hint::black_box(blake3::hash(std::hint::black_box(chunk)));
        }
    });
    let whole = best_of(|| {
        let mut h = blake3::Hasher::new();
        h.update(std::hint::black_box(data));
        std::hint::black_box(h.finalize());
    });
    let (chunked, whole) = (rate(size, chunked), rate(size, whole));
    println!(
        "  {:<58} {:9.2} GB/s",
        "shoal: blake3::hash per 4 MiB chunk",
        chunked / 1e9
    );
    println!(
        "  {:<58} {:9.2} GB/s (shoal ÷ baseline = {:.2})",
        "baseline: one Hasher::update over the buffer (b3sum-style)",
        whole / 1e9,
        chunked / whole
    );
    rows.push(Row {
        what: "blake3 per 4 MiB chunk, 1 thread".into(),
        shoal: chunked,
        baseline_name: "Hasher::update whole".into(),
        baseline: whole,
        unit: 1e9,
        cache: "RAM",
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
            let mut runs = Vec::new();
            for _ in 0..HASH_REPEATS {
                let t = Instant::now();
                let out = Command::new("b3sum")
                    .args(["--num-threads", "1"])
                    .arg(&path)
                    .output()?;
                runs.push(t.elapsed());
                ensure!(
                    out.status.success(),
                    "b3sum failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            let r = rate(size, runs.into_iter().min().expect("one run"));
            println!(
                "  {:<58} {:9.2} GB/s (shoal ÷ b3sum = {:.2}; includes process start, file on tmpfs)",
                "b3sum --num-threads 1",
                r / 1e9,
                chunked / r
            );
            rows.push(Row {
                what: "blake3 per 4 MiB chunk, 1 thread".into(),
                shoal: chunked,
                baseline_name: "b3sum --num-threads 1".into(),
                baseline: r,
                unit: 1e9,
                cache: "tmpfs",
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

fn bench_cat(rt: &tokio::runtime::Runtime, size: u64, rows: &mut Vec<Row>) -> Result<()> {
    // Origin bytes on tmpfs so rclone reads from RAM; the node's index and
    // disk tier on disk; its memory tier on tmpfs (via a symlink, since the
    // harness puts it at <node dir>/mem).
    let s3_root = tempdir_in("/dev/shm")?;
    let node_root = tempdir_in("/var/tmp")?;
    let mem_tier = tempdir_in("/dev/shm")?;
    let node_dir = node_root.path().join("node");
    std::fs::create_dir_all(&node_dir)?;
    std::os::unix::fs::symlink(mem_tier.path(), node_dir.join("mem"))?;

    let object_path: PathBuf = s3_root.path().join("s3").join(BUCKET).join(OBJECT);
    std::fs::create_dir_all(object_path.parent().expect("object has a parent"))?;
    let want = {
        let bytes = shoal_tests::pattern(2, size as usize);
        std::fs::write(&object_path, &bytes)?;
        blake3::hash(&bytes)
    };

    let s3 = S3Server::start(&s3_root.path().join("s3"), node_root.path(), "MD5")?;
    let node = Node::start(
        &node_dir,
        NodeOpts {
            memory_quota: "2GiB".into(),
            disk_quota: "4GiB".into(),
            ..Default::default()
        },
    )?;
    println!(
        "\n== 3. dataset-ctl cat of a {} MiB object, cache-node + rclone serve s3 ({}) on loopback ==",
        size / MIB,
        s3.endpoint
    );
    println!(
        "  origin dir {} (tmpfs); node memory tier {} (tmpfs), index + disk tier under {}",
        s3.root.display(),
        mem_tier.path().display(),
        node_dir.display()
    );
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
    let (seq, par) = rt.block_on(async {
        // One small request first, so client setup is not timed.
        get_range(&client, 0, 1).await?;
        let seq = download_sequential(&client, size).await?;
        let par = download_parallel(&client, size).await?;
        Ok::<_, anyhow::Error>((seq, par))
    })?;
    let (seq, par) = (rate(size, seq), rate(size, par));

    let cold = rate(size, timed_cat(&node)?);
    let origin_bytes = node.metric("shoal_origin_bytes_total") as u64;
    ensure!(
        origin_bytes == size,
        "cold cat fetched {origin_bytes} bytes from the origin, expected {size}"
    );
    let warm = rate(size, timed_cat(&node)?);
    let after = node.metric("shoal_origin_bytes_total") as u64;
    ensure!(
        after == origin_bytes,
        "warm cat went to the origin ({} more bytes)",
        after - origin_bytes
    );
    verify_cat(&node, size, &want)?;

    line(
        &format!(
            "baseline: aws-sdk-s3 sequential {} MiB ranged GETs",
            S3_PART / MIB
        ),
        seq,
        "",
    );
    line(
        &format!(
            "baseline: aws-sdk-s3 {S3_PARALLEL} parallel {} MiB ranged GETs",
            S3_PART / MIB
        ),
        par,
        "",
    );
    line(
        "shoal: cold dataset-ctl cat > /dev/null",
        cold,
        &format!(
            "(÷ sequential = {:.2}, ÷ parallel = {:.2})",
            cold / seq,
            cold / par
        ),
    );
    line(
        "shoal: warm dataset-ctl cat > /dev/null [memory tier, tmpfs]",
        warm,
        &format!(
            "(÷ sequential = {:.2}, ÷ parallel = {:.2})",
            warm / seq,
            warm / par
        ),
    );
    println!(
        "  checked: cold cat fetched each byte once, warm cat none; output identical to the object"
    );
    for (baseline_name, baseline) in [("S3 sequential GETs", seq), ("S3 8 parallel GETs", par)] {
        rows.push(Row {
            what: "cold dataset-ctl cat".into(),
            shoal: cold,
            baseline_name: baseline_name.into(),
            baseline,
            unit: 1e6,
            cache: "origin on tmpfs",
        });
    }
    rows.push(Row {
        what: "warm dataset-ctl cat".into(),
        shoal: warm,
        baseline_name: "S3 8 parallel GETs".into(),
        baseline: par,
        unit: 1e6,
        cache: "memory tier",
    });
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
        "  {:<36} {:>14}  {:<22} {:>14}  {:>6}  where the bytes were",
        "measurement", "shoal", "baseline", "baseline", "ratio"
    );
    println!("  {}", "-".repeat(124));
    for r in rows {
        let u = r.unit_name();
        println!(
            "  {:<36} {:>9.2} {u}  {:<22} {:>9.2} {u}  {:>6.2}  {}",
            r.what,
            r.shoal / r.unit,
            r.baseline_name,
            r.baseline / r.unit,
            r.shoal / r.baseline,
            r.cache
        );
    }
}
