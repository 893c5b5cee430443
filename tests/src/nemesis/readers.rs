//! Readers: threads that read random files and ranges through the mounts
//! and compare every byte with what the origin holds, plus a watchdog that
//! reports any system call in flight past the hang bound while it hangs.
//!
//! Expected bytes come from the dataset's generator, never from the origin
//! directory. Reads are `pread`s of at most 128 KiB, one FUSE request or
//! so each, so the bound on one system call is the mount's retry bound.
//! After most operations the file's page cache is dropped
//! (`POSIX_FADV_DONTNEED`), so the next read reaches fuse-client and the
//! node again rather than the kernel's copy.

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::check::{Histogram, Violations, Windows};
use super::plan::Rng;

/// One file of the dataset and its bytes.
#[derive(Debug)]
pub struct FileSpec {
    pub path: String,
    pub data: Vec<u8>,
}

/// What the readers saw.
#[derive(Debug, Clone, Default)]
pub struct ReadStats {
    pub ops: u64,
    pub syscalls: u64,
    pub bytes_checked: u64,
    pub wrong_ops: u64,
    /// Failed operations by errno.
    pub errors: BTreeMap<i32, u64>,
    /// Failed operations explained by a fault, by fault kind.
    pub explained: BTreeMap<&'static str, u64>,
    pub syscall_latency: Histogram,
    pub op_latency: Histogram,
    /// The slowest system call: what it was, and how it ended.
    pub slowest: Option<(Duration, String)>,
}

impl ReadStats {
    fn merge(&mut self, o: &ReadStats) {
        self.ops += o.ops;
        self.syscalls += o.syscalls;
        self.bytes_checked += o.bytes_checked;
        self.wrong_ops += o.wrong_ops;
        for (k, v) in &o.errors {
            *self.errors.entry(*k).or_default() += v;
        }
        for (k, v) in &o.explained {
            *self.explained.entry(k).or_default() += v;
        }
        self.syscall_latency.merge(&o.syscall_latency);
        self.op_latency.merge(&o.op_latency);
        if o.slowest.as_ref().map(|s| s.0) > self.slowest.as_ref().map(|s| s.0) {
            self.slowest = o.slowest.clone();
        }
    }
}

/// Where one reader is: the system call in flight, for the watchdog.
#[derive(Default)]
struct Slot {
    mount: usize,
    /// Microseconds since the epoch + 1 at which the call started; 0 idle.
    since: AtomicU64,
    /// The `since` value already reported as a hang.
    reported: AtomicU64,
    file: AtomicU64,
    offset: AtomicU64,
}

/// How errors are judged.
#[derive(Debug, Clone)]
pub struct Bounds {
    /// How long after a fault ends it may still explain an error.
    pub grace: Duration,
    /// Longest a system call may take.
    pub hang: Duration,
}

struct Shared {
    files: Arc<Vec<FileSpec>>,
    mounts: Vec<PathBuf>,
    windows: Arc<Windows>,
    violations: Arc<Violations>,
    bounds: Bounds,
    epoch: Instant,
    /// The order in which files join the working set, and how long it grows.
    order: Vec<usize>,
    ramp: Duration,
    slots: Vec<Slot>,
    stop: AtomicBool,
    ops: AtomicU64,
    bytes: AtomicU64,
}

/// Running readers; stopped (bounded) on drop.
pub struct Readers {
    shared: Arc<Shared>,
    readers: Vec<JoinHandle<ReadStats>>,
    watchdog: Option<JoinHandle<()>>,
    stats: ReadStats,
}

enum Failure {
    Errno(i32, &'static str),
    Wrong(String),
}

impl Readers {
    /// Starts `per_mount` readers on each mount; times in messages count
    /// from `epoch`; the working set grows to the whole dataset over `ramp`.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        files: Arc<Vec<FileSpec>>,
        mounts: Vec<PathBuf>,
        per_mount: usize,
        seed: u64,
        windows: Arc<Windows>,
        violations: Arc<Violations>,
        bounds: Bounds,
        (epoch, ramp): (Instant, Duration),
    ) -> Self {
        let mut order: Vec<usize> = (0..files.len()).collect();
        let mut rng = Rng::new(seed ^ 0x0DE5);
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let slots = (0..mounts.len() * per_mount)
            .map(|i| Slot {
                mount: i / per_mount,
                ..Slot::default()
            })
            .collect();
        let shared = Arc::new(Shared {
            files,
            mounts,
            windows,
            violations,
            bounds,
            epoch,
            order,
            ramp,
            slots,
            stop: AtomicBool::new(false),
            ops: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        });
        let readers = (0..shared.slots.len())
            .map(|i| {
                let sh = shared.clone();
                let seed = seed ^ (i as u64 + 1).wrapping_mul(0xA076_1D64_78BD_642F);
                std::thread::spawn(move || reader(&sh, i, seed))
            })
            .collect();
        let sh = shared.clone();
        let watchdog = Some(std::thread::spawn(move || watchdog(&sh)));
        Self {
            shared,
            readers,
            watchdog,
            stats: ReadStats::default(),
        }
    }

    /// Operations and bytes checked so far.
    pub fn progress(&self) -> (u64, u64) {
        (
            self.shared.ops.load(Ordering::Relaxed),
            self.shared.bytes.load(Ordering::Relaxed),
        )
    }

    /// Stops the readers (each leaves after its current system call) and
    /// returns what they saw, with the mounts it had to abort: a reader
    /// still stuck in a call after the hang bound (already reported by the
    /// watchdog) is freed by `abort(mount)`, which must make its mount fail.
    pub fn stop(mut self, abort: impl Fn(usize)) -> (ReadStats, Vec<usize>) {
        let mut aborted = Vec::new();
        self.shared.stop.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + self.shared.bounds.hang + Duration::from_secs(2);
        while Instant::now() < deadline && !self.readers.iter().all(|r| r.is_finished()) {
            std::thread::sleep(Duration::from_millis(50));
        }
        for (i, r) in self.readers.iter().enumerate() {
            let mount = self.shared.slots[i].mount;
            if !r.is_finished() && !aborted.contains(&mount) {
                abort(mount);
                aborted.push(mount);
            }
        }
        for r in std::mem::take(&mut self.readers) {
            if let Ok(s) = r.join() {
                self.stats.merge(&s);
            }
        }
        if let Some(w) = self.watchdog.take() {
            let _ = w.join();
        }
        (std::mem::take(&mut self.stats), aborted)
    }
}

impl Drop for Readers {
    /// On an early return: stop, and give readers the hang bound to leave
    /// (the mounts, dropped next, free any that are stuck).
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
    }
}

fn micros_since(epoch: Instant) -> u64 {
    epoch.elapsed().as_micros() as u64
}

/// Reports calls in flight past the bound; runs until the readers are
/// stopped and none is inside a call.
fn watchdog(sh: &Shared) {
    let bound = sh.bounds.hang.as_micros() as u64;
    let idle = || sh.slots.iter().all(|s| s.since.load(Ordering::SeqCst) == 0);
    while !(sh.stop.load(Ordering::SeqCst) && idle()) {
        let now = micros_since(sh.epoch) + 1;
        for (i, s) in sh.slots.iter().enumerate() {
            let since = s.since.load(Ordering::SeqCst);
            if since != 0
                && now.saturating_sub(since) > bound
                && s.reported.swap(since, Ordering::SeqCst) != since
            {
                let file = &sh.files[s.file.load(Ordering::SeqCst) as usize].path;
                sh.violations.add(
                    "hang",
                    format!(
                        "reader {i} on mount {}: a system call on {file} at offset {} has not returned after {:?}",
                        s.mount,
                        s.offset.load(Ordering::SeqCst),
                        sh.bounds.hang
                    ),
                );
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Picks a file among those the readers have reached: the working set
/// grows (in a seeded order) until `ramp` has passed, so chunks are read
/// for the first time throughout the run, not only in its first seconds,
/// and every fault meets cold reads. Big files (several chunks) are picked
/// half of the time.
fn pick(rng: &mut Rng, sh: &Shared) -> usize {
    let n = sh.order.len();
    let reached = sh.epoch.elapsed().as_secs_f64() / sh.ramp.as_secs_f64().max(1.0);
    let k = ((n as f64 * reached).ceil() as usize).clamp(n.min(8), n);
    let open = &sh.order[..k];
    let big: Vec<usize> = open
        .iter()
        .copied()
        .filter(|&i| sh.files[i].data.len() > 4 << 20)
        .collect();
    if !big.is_empty() && rng.percent(50) {
        big[rng.below(big.len() as u64) as usize]
    } else {
        open[rng.below(k as u64) as usize]
    }
}

/// Bytes per second one reader checks at most. Reads the kernel serves
/// from a page cache (passthrough files) run at memory speed; unpaced,
/// a few readers would take every core from the processes under test.
const READER_RATE: f64 = 32.0 * (1 << 20) as f64;

fn reader(sh: &Shared, idx: usize, seed: u64) -> ReadStats {
    let mut rng = Rng::new(seed);
    let mut st = ReadStats::default();
    let mut buf = vec![0u8; 128 << 10];
    let mount = sh.slots[idx].mount;
    let began = Instant::now();
    while !sh.stop.load(Ordering::SeqCst) {
        let due = Duration::from_secs_f64(st.bytes_checked as f64 / READER_RATE);
        if let Some(ahead) = due.checked_sub(began.elapsed()) {
            std::thread::sleep(ahead.min(Duration::from_millis(500)));
            continue;
        }
        let fi = pick(&mut rng, sh);
        let len = sh.files[fi].data.len() as u64;
        let (off, n) = if len <= 256 << 10 || rng.percent(25) {
            (0, len)
        } else {
            let off = rng.below(len);
            // Now and then a range running past the end of the file.
            let n = if rng.percent(5) {
                len - off + rng.between(1, 4096)
            } else {
                rng.between(1, (len - off).min(2 << 20))
            };
            (off, n)
        };
        let t0 = Instant::now();
        let r = read_range(sh, idx, fi, off, n, &mut rng, &mut buf, &mut st);
        let t1 = Instant::now();
        st.ops += 1;
        st.op_latency.record(t1 - t0);
        sh.ops.fetch_add(1, Ordering::Relaxed);
        let path = &sh.files[fi].path;
        match r {
            Ok(()) => {}
            Err(Failure::Wrong(msg)) => {
                st.wrong_ops += 1;
                sh.violations.add(
                    "wrong-bytes",
                    format!("mount {mount}: {path} [{off}, +{n}): {msg}"),
                );
            }
            Err(Failure::Errno(errno, call)) => {
                *st.errors.entry(errno).or_default() += 1;
                let what = format!(
                    "mount {mount}: {call} of {path} [{off}, +{n}) at +{:.1}s failed with {} after {:.1}s",
                    (t0 - sh.epoch).as_secs_f64(),
                    errno_name(errno),
                    (t1 - t0).as_secs_f64()
                );
                if errno == libc::ENOSPC {
                    sh.violations.add("enospc", what);
                } else if let Some((_, kind)) =
                    sh.windows
                        .explain(mount, fi, errno, (t0, t1), sh.bounds.grace)
                {
                    *st.explained.entry(kind.name()).or_default() += 1;
                } else {
                    sh.violations.add("unexplained-error", what);
                }
                // A dead mount fails at once: do not spin on it.
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    st
}

/// Runs one system call, visible to the watchdog while it is in flight.
fn timed<T>(
    sh: &Shared,
    idx: usize,
    st: &mut ReadStats,
    (file, offset): (usize, u64),
    call: &'static str,
    f: impl FnOnce() -> std::io::Result<T>,
) -> Result<T, Failure> {
    let slot = &sh.slots[idx];
    slot.file.store(file as u64, Ordering::SeqCst);
    slot.offset.store(offset, Ordering::SeqCst);
    let t = Instant::now();
    let since = micros_since(sh.epoch) + 1;
    slot.since.store(since, Ordering::SeqCst);
    let r = f();
    slot.since.store(0, Ordering::SeqCst);
    let took = t.elapsed();
    st.syscalls += 1;
    st.syscall_latency.record(took);
    if st.slowest.as_ref().is_none_or(|s| took > s.0) {
        let how = match &r {
            Ok(_) => "ok".to_string(),
            Err(e) => errno_name(e.raw_os_error().unwrap_or(-1)),
        };
        st.slowest = Some((
            took,
            format!(
                "{call} of {} at offset {offset} on mount {} at +{:.1}s: {how}",
                sh.files[file].path,
                slot.mount,
                (t - sh.epoch).as_secs_f64()
            ),
        ));
    }
    if took > sh.bounds.hang && slot.reported.swap(since, Ordering::SeqCst) != since {
        sh.violations.add(
            "hang",
            format!(
                "reader {idx} on mount {}: {call} of {} at offset {offset} took {took:?}",
                slot.mount, sh.files[file].path
            ),
        );
    }
    r.map_err(|e| Failure::Errno(e.raw_os_error().unwrap_or(-1), call))
}

/// Reads `[off, off + n)` of file `fi` through the reader's mount, whole
/// when `off == 0 && n == len`, and compares every byte.
#[allow(clippy::too_many_arguments)]
fn read_range(
    sh: &Shared,
    idx: usize,
    fi: usize,
    off: u64,
    n: u64,
    rng: &mut Rng,
    buf: &mut [u8],
    st: &mut ReadStats,
) -> Result<(), Failure> {
    let spec = &sh.files[fi];
    let path = sh.mounts[sh.slots[idx].mount].join(&spec.path);
    let f = timed(sh, idx, st, (fi, 0), "open", || std::fs::File::open(&path))?;
    let len = spec.data.len() as u64;
    let want_end = (off + n).min(len);
    let mut pos = off;
    while pos < off + n {
        if sh.stop.load(Ordering::SeqCst) {
            // Stopping: the rest of this operation is not read.
            return Ok(());
        }
        let size = rng.between(4 << 10, buf.len() as u64).min(off + n - pos) as usize;
        let got = timed(sh, idx, st, (fi, pos), "pread", || {
            f.read_at(&mut buf[..size], pos)
        })?;
        if got == 0 {
            break;
        }
        compare(&spec.data, pos, &buf[..got]).map_err(Failure::Wrong)?;
        pos += got as u64;
        st.bytes_checked += got as u64;
        sh.bytes.fetch_add(got as u64, Ordering::Relaxed);
    }
    if pos != want_end {
        return Err(Failure::Wrong(format!(
            "end of file at {pos}, the file has {len} bytes"
        )));
    }
    if rng.percent(80) {
        // SAFETY: advice on a descriptor this function owns.
        unsafe {
            libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
        }
    }
    Ok(())
}

/// Checks `got` against `data` at `pos`; says where and how they differ.
pub fn compare(data: &[u8], pos: u64, got: &[u8]) -> Result<(), String> {
    let pos = pos as usize;
    if pos + got.len() > data.len() {
        return Err(format!(
            "{} bytes past the end of the file at {pos}",
            pos + got.len() - data.len()
        ));
    }
    let want = &data[pos..pos + got.len()];
    if want == got {
        return Ok(());
    }
    let first = want.iter().zip(got).position(|(a, b)| a != b).unwrap_or(0);
    let differing = want.iter().zip(got).filter(|(a, b)| a != b).count();
    let mut hint = String::new();
    if want.iter().zip(got).all(|(a, b)| a ^ 0x5A == *b || a == b) {
        hint = "; they are the overwritten object's bytes (etag-changed)".into();
    } else if got.len() >= 64 {
        let probe = &got[first..(first + 64).min(got.len())];
        if let Some(at) = data.windows(probe.len()).position(|w| w == probe) {
            hint = format!(
                "; they are the file's bytes from offset {at}, {} bytes away (another range)",
                at as i64 - (pos + first) as i64
            );
        }
    }
    Err(format!(
        "{differing} of {} bytes differ, the first at offset {} (got {:#04x}, want {:#04x}){hint}",
        got.len(),
        pos + first,
        got[first],
        want[first]
    ))
}

/// The symbolic name of an errno.
pub fn errno_name(e: i32) -> String {
    match e {
        libc::EIO => "EIO".into(),
        libc::ENOSPC => "ENOSPC".into(),
        libc::ENOTCONN => "ENOTCONN".into(),
        libc::ECONNABORTED => "ECONNABORTED".into(),
        libc::ENOENT => "ENOENT".into(),
        libc::EINTR => "EINTR".into(),
        libc::ESTALE => "ESTALE".into(),
        libc::ETIMEDOUT => "ETIMEDOUT".into(),
        libc::EAGAIN => "EAGAIN".into(),
        libc::EBADF => "EBADF".into(),
        _ => format!("errno {e}"),
    }
}

/// Reads every file through one mount, once, after dropping its cached
/// pages; returns how many files it read and the problems found, with the
/// file's index. After `give_up` problems the rest is not read (a failing
/// mount may cost two retry bounds per file) and one more problem says so.
pub fn verify_all(
    files: &[FileSpec],
    mount: &std::path::Path,
    give_up: usize,
) -> (u64, Vec<(usize, String)>) {
    let mut problems = Vec::new();
    let mut read = 0;
    for (fi, spec) in files.iter().enumerate() {
        if problems.len() == give_up {
            problems.push((
                fi,
                format!(
                    "{}: {} files from {} on not read, the mount failed {give_up} times already",
                    mount.display(),
                    files.len() - fi,
                    spec.path
                ),
            ));
            break;
        }
        read += 1;
        let path = mount.join(&spec.path);
        let got = std::fs::File::open(&path).and_then(|f| {
            // SAFETY: advice on a descriptor this closure owns.
            unsafe {
                libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
            }
            let mut out = Vec::with_capacity(spec.data.len());
            std::io::Read::read_to_end(&mut &f, &mut out)?;
            Ok(out)
        });
        let problem = match got {
            Err(e) => Some(format!(
                "{}: {}",
                path.display(),
                errno_name(e.raw_os_error().unwrap_or(-1))
            )),
            Ok(got) if got.len() != spec.data.len() => Some(format!(
                "{}: {} bytes, want {}",
                path.display(),
                got.len(),
                spec.data.len()
            )),
            Ok(got) => compare(&spec.data, 0, &got)
                .err()
                .map(|e| format!("{}: {e}", path.display())),
        };
        problems.extend(problem.map(|p| (fi, p)));
    }
    (read, problems)
}

#[cfg(test)]
mod tests {
    use super::compare;

    #[test]
    fn a_difference_is_located_and_explained() {
        let data: Vec<u8> = crate::pattern(5, 4096);
        assert!(compare(&data, 100, &data[100..300]).is_ok());
        let shifted = &data[1100..1300];
        let e = compare(&data, 100, shifted).unwrap_err();
        assert!(e.contains("another range"), "{e}");
        let flipped: Vec<u8> = data[..200].iter().map(|b| b ^ 0x5A).collect();
        let e = compare(&data, 0, &flipped).unwrap_err();
        assert!(e.contains("etag-changed"), "{e}");
        assert!(compare(&data, 4000, &data[..200])
            .unwrap_err()
            .contains("past the end"));
    }
}
