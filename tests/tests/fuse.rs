//! Real FUSE mounts of a dataset served by a real node over a real S3 server.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::process::Command;
use std::time::Duration;

use proptest::prelude::*;
use shoal_tests::{pattern, wait_child, wait_for, Fixture, Frozen, Mount, NodeOpts};

fn tree() -> Vec<(String, Vec<u8>)> {
    let mut files = vec![
        (
            "models/weights.safetensors".to_string(),
            pattern(11, (12 << 20) + 4321),
        ),
        (
            "models/config.json".to_string(),
            b"{\"hidden\": 4096}\n".to_vec(),
        ),
        ("data/empty".to_string(), Vec::new()),
        ("data/odd.bin".to_string(), pattern(12, 1_000_003)),
    ];
    for i in 0..40 {
        files.push((
            format!("data/small/{i:03}.txt"),
            pattern(100 + i, 100 + i as usize * 37),
        ));
    }
    files
}

fn setup() -> (Fixture, Vec<(String, Vec<u8>)>) {
    let files = tree();
    let fx = Fixture::new("MD5", &files, NodeOpts::default());
    fx.node.create_ok("ds", "s3://bucket", &fx.s3.endpoint);
    (fx, files)
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn every_file_reads_back_identical_through_every_kind_of_reader() {
    let (fx, files) = setup();
    let mnt = fx.tmp.path().join("mnt");
    let m = Mount::start(&fx.node, "ds", &mnt, &[]).unwrap();
    // cat / std::fs::read of every file.
    for (p, b) in &files {
        let got = std::fs::read(mnt.join(p)).unwrap();
        assert!(got == *b, "{p}");
    }
    // dd with odd offsets and sizes.
    let big = &files[0].1;
    let out = Command::new("dd")
        .arg(format!("if={}", mnt.join(&files[0].0).display()))
        .args(["bs=4093", "skip=1001", "count=7", "status=none"])
        .output()
        .unwrap();
    assert_eq!(out.stdout, big[4093 * 1001..4093 * 1008]);
    // pread at odd places across chunk boundaries.
    let f = std::fs::File::open(mnt.join(&files[0].0)).unwrap();
    for (off, len) in [
        (0usize, 1usize),
        ((4 << 20) - 3, 7),
        ((8 << 20) - 1, 70_001),
        (big.len() - 5, 5),
    ] {
        let mut buf = vec![0u8; len];
        f.read_exact_at(&mut buf, off as u64).unwrap();
        assert_eq!(buf, big[off..off + len], "pread {off}+{len}");
    }
    // Reading past the end gives EOF, not an error.
    let mut buf = [0u8; 10];
    assert_eq!(f.read_at(&mut buf, big.len() as u64 + 100).unwrap(), 0);
    // mmap and python readers.
    let script = "import hashlib, mmap, sys\nf = open(sys.argv[1], 'rb')\nm = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)\nprint(hashlib.sha256(m[:]).hexdigest(), hashlib.sha256(open(sys.argv[1], 'rb').read()).hexdigest())";
    for (p, _) in files.iter().filter(|(_, b)| !b.is_empty()).take(3) {
        let got = run(Command::new("python3")
            .args(["-c", script])
            .arg(mnt.join(p)));
        let want = run(Command::new("sha256sum").arg(fx.bucket().join(p)));
        let want = want.split_whitespace().next().unwrap();
        assert_eq!(got.trim(), format!("{want} {want}"), "{p}");
    }
    // Parallel readers of the same and different files.
    std::thread::scope(|s| {
        for t in 0..6 {
            let (p, b) = &files[t % 4];
            let path = mnt.join(p);
            s.spawn(move || {
                let mut f = std::fs::File::open(&path).unwrap();
                let mut got = Vec::new();
                f.seek(SeekFrom::Start(0)).unwrap();
                f.read_to_end(&mut got).unwrap();
                assert!(got == *b);
            });
        }
    });
    // find / ls -lR / stat agree with the origin tree.
    let found = run(Command::new("find")
        .arg(&mnt)
        .args(["-type", "f", "-printf", "%P %s\n"]));
    let mut found: Vec<&str> = found.lines().collect();
    found.sort();
    let mut want: Vec<String> = files
        .iter()
        .map(|(p, b)| format!("{p} {}", b.len()))
        .collect();
    want.sort();
    assert_eq!(found, want);
    let ls = run(Command::new("ls").arg("-lR").arg(&mnt));
    assert!(ls.contains("weights.safetensors") && ls.contains("039.txt"));
    let st = run(Command::new("stat")
        .args(["-c", "%s %A"])
        .arg(mnt.join(&files[3].0)));
    assert_eq!(st.trim(), "1000003 -r--r--r--");
    drop(m);
    assert!(!Mount::is_mounted(&mnt));
}

fn errno_of(r: std::io::Result<impl Sized>) -> i32 {
    r.err().and_then(|e| e.raw_os_error()).unwrap_or(0)
}

#[test]
fn errno_per_situation_matches_semantics_md() {
    let (fx, files) = setup();
    let mnt = fx.tmp.path().join("mnt");
    let _m = Mount::start(&fx.node, "ds", &mnt, &[]).unwrap();
    let file = mnt.join(&files[1].0);
    assert_eq!(
        errno_of(std::fs::File::open(mnt.join("nope"))),
        libc::ENOENT
    );
    assert_eq!(
        errno_of(std::fs::metadata(mnt.join("models/nope/x"))),
        libc::ENOENT
    );
    assert_eq!(errno_of(std::fs::metadata(file.join("x"))), libc::ENOTDIR);
    assert_eq!(
        errno_of(std::fs::OpenOptions::new().write(true).open(&file)),
        libc::EROFS
    );
    assert_eq!(
        errno_of(std::fs::File::create(mnt.join("new"))),
        libc::EROFS
    );
    assert_eq!(errno_of(std::fs::create_dir(mnt.join("d"))), libc::EROFS);
    assert_eq!(errno_of(std::fs::remove_file(&file)), libc::EROFS);
    assert_eq!(
        errno_of(std::fs::rename(&file, mnt.join("moved"))),
        libc::EROFS
    );
    assert_eq!(
        errno_of(std::os::unix::fs::symlink("x", mnt.join("l"))),
        libc::EROFS
    );
    let mut dir_read = std::fs::File::open(mnt.join("models")).unwrap();
    assert_eq!(errno_of(dir_read.read(&mut [0u8; 8])), libc::EISDIR);
    let c = std::ffi::CString::new(file.to_string_lossy().as_bytes()).unwrap();
    let name = std::ffi::CString::new("user.x").unwrap();
    // SAFETY: valid C strings and a null buffer of size 0 (size query).
    let rc = unsafe { libc::getxattr(c.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0) };
    assert_eq!(rc, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::ENODATA)
    );
    // statfs reports the dataset size.
    let df = run(Command::new("stat").args(["-f", "-c", "%b %S"]).arg(&mnt));
    let mut it = df.split_whitespace().map(|v| v.parse::<u64>().unwrap());
    let (blocks, bsize) = (it.next().unwrap(), it.next().unwrap());
    let total: u64 = files.iter().map(|(_, b)| b.len() as u64).sum();
    assert!(blocks * bsize >= total);
    // An origin failure surfaces as EIO, after bounded retries, not a hang.
    std::fs::write(fx.bucket().join(&files[3].0), pattern(99, 1_000_003)).unwrap();
    let started = std::time::Instant::now();
    let err = std::fs::read(mnt.join(&files[3].0)).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn passthrough_serves_fully_cached_files_and_version_stays_pinned() {
    let (fx, files) = setup();
    let mnt = fx.tmp.path().join("mnt");
    let m = Mount::start(&fx.node, "ds", &mnt, &[]).unwrap();
    let (p, b) = &files[0];
    assert!(std::fs::read(mnt.join(p)).unwrap() == *b);
    // Fully cached now: the next open is handed to the kernel.
    assert!(std::fs::read(mnt.join(p)).unwrap() == *b);
    let log = m.proc.log_text();
    assert!(log.contains("passthrough: first file opened"), "{log}");
    // The origin changes and the dataset is refreshed: this mount still sees version 1.
    std::fs::write(fx.bucket().join(p), pattern(77, b.len())).unwrap();
    let d: serde_json::Value =
        serde_json::from_slice(&fx.node.ctl_ok(&["refresh", "ds", "-o", "json"])).unwrap();
    assert_eq!(d["version"], 2);
    assert!(
        std::fs::read(mnt.join(p)).unwrap() == *b,
        "pinned mount changed under a reader"
    );
    // A new mount sees version 2.
    let mnt2 = fx.tmp.path().join("mnt2");
    let m2 = Mount::start(&fx.node, "ds", &mnt2, &[]).unwrap();
    assert_eq!(
        std::fs::read_to_string(m2.ready_file()).unwrap().trim(),
        "2"
    );
    assert!(std::fs::read(mnt2.join(p)).unwrap() == pattern(77, b.len()));
}

#[test]
fn node_restart_mid_read_is_a_delay_not_an_error() {
    let (mut fx, files) = setup();
    let mnt = fx.tmp.path().join("mnt");
    let m = Mount::start(&fx.node, "ds", &mnt, &[]).unwrap();
    let (p, b) = &files[0];
    let mut f = std::fs::File::open(mnt.join(p)).unwrap();
    let mut first = vec![0u8; 3 << 20];
    f.read_exact(&mut first).unwrap();
    assert_eq!(first, b[..3 << 20]);
    fx.node.kill9();
    // Restart the node in the background while the reader continues.
    let restarter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        fx.node.restart().unwrap();
        fx
    });
    let mut rest = Vec::new();
    f.read_to_end(&mut rest).unwrap();
    assert!(rest == b[3 << 20..], "bytes after the restart differ");
    let fx = restarter.join().unwrap();
    // New opens work too, and the node-side lease was re-established.
    assert!(std::fs::read(mnt.join(&files[1].0)).unwrap() == files[1].1);
    // Unmount before the fixture's directories (which hold the mount point) go.
    drop(f);
    drop(m);
    drop(fx);
}

/// A frozen node (SIGSTOP: a stuck disk, a paused VM) accepts connections
/// and answers nothing. Readers of its mounts must get EIO within
/// `--retry-secs` — both a read on a file opened before the freeze and a
/// new open — instead of sleeping uninterruptibly until the node resumes.
#[test]
fn a_frozen_node_fails_readers_with_eio_instead_of_hanging_them() {
    let (fx, files) = setup();
    let mnt = fx.tmp.path().join("mnt");
    let _m = Mount::start(&fx.node, "ds", &mnt, &["--retry-secs", "2"]).unwrap();
    let (p, b) = &files[0];
    let mut reader = HeldReader::open(&mnt.join(p), "bs=1M");
    let frozen = Frozen::new(fx.node.proc.as_ref().unwrap().pid());
    let t0 = std::time::Instant::now();
    reader.go();
    // A new open of another uncached file while the node is frozen.
    let opener = Command::new("dd")
        .arg(format!("if={}", mnt.join(&files[3].0).display()))
        .args(["of=/dev/null", "bs=1M", "status=none"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let failed = fail_within([reader.0, opener], Duration::from_secs(20));
    let waited = t0.elapsed();
    drop(frozen); // SIGCONT, also when an assertion below fails
    failed.unwrap();
    assert!(waited < Duration::from_secs(10), "took {waited:?}");
    serves_again(&mnt.join(p), b);
}

/// Readers waiting on the same page of a frozen node's mount each get EIO
/// after about one --retry-secs. The kernel retries a failed readahead
/// page synchronously, and each reader queued on the page lock then reads
/// it again itself: each of those requests waited the whole bound, so the
/// last of three readers waited four bounds (the nemesis saw 15 s with
/// --retry-secs 5). A retry of a read that just timed out now fails at once.
#[test]
fn readers_queued_on_a_frozen_page_wait_one_retry_bound_not_one_each() {
    let (fx, files) = setup();
    let mnt = fx.tmp.path().join("mnt");
    let retry = Duration::from_secs(3);
    let _m = Mount::start(&fx.node, "ds", &mnt, &["--retry-secs", "3"]).unwrap();
    let (p, b) = &files[0];
    let mut readers: Vec<HeldReader> = (0..3)
        .map(|_| HeldReader::open(&mnt.join(p), "bs=4k count=1"))
        .collect();
    let frozen = Frozen::new(fx.node.proc.as_ref().unwrap().pid());
    let t0 = std::time::Instant::now();
    for r in &mut readers {
        r.go();
    }
    let failed = fail_within(readers.into_iter().map(|r| r.0), Duration::from_secs(30));
    let waited = t0.elapsed();
    drop(frozen); // SIGCONT, also when an assertion below fails
    failed.unwrap();
    assert!(
        waited < retry * 3 / 2,
        "three readers of one page took {waited:?} with --retry-secs 3"
    );
    serves_again(&mnt.join(p), b);
}

/// A `dd` of a file on a mount that opens it (its lease taken) at once and
/// reads only when told to: it can be made to read while the node is frozen.
struct HeldReader(std::process::Child);

impl HeldReader {
    fn open(path: &std::path::Path, dd_args: &str) -> Self {
        use std::io::BufRead;
        let script = format!(
            r#"exec 3<"$1"; echo opened; read go; exec dd {dd_args} status=none of=/dev/null <&3"#
        );
        let mut c = Command::new("sh")
            .args(["-c", &script, "sh"])
            .arg(path)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(c.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "opened");
        Self(c)
    }

    fn go(&mut self) {
        use std::io::Write;
        writeln!(self.0.stdin.as_mut().unwrap(), "go").unwrap();
    }
}

/// Waits for every process (all within `limit`); each must have failed
/// with EIO. Returns the first problem instead of panicking, so the caller
/// can resume a frozen node first.
fn fail_within(
    children: impl IntoIterator<Item = std::process::Child>,
    limit: Duration,
) -> Result<(), String> {
    for mut child in children {
        let status = wait_child(&mut child, limit)
            .ok_or_else(|| format!("a reader still blocked {limit:?} after the node froze"))?;
        let mut err = String::new();
        child.stderr.unwrap().read_to_string(&mut err).unwrap();
        if status.success() || !err.contains("Input/output error") {
            return Err(format!("a reader did not fail with EIO: {status}: {err}"));
        }
    }
    Ok(())
}

/// Once a frozen node resumes, the mount serves the file's bytes again
/// (within 100 ms of the timeouts, a read of them is a retry: EIO).
fn serves_again(path: &std::path::Path, bytes: &[u8]) {
    wait_for(
        "the resumed node to serve the file",
        Duration::from_secs(10),
        || std::fs::read(path).is_ok_and(|got| got == bytes),
    )
    .unwrap();
}

/// A process opening a directory's files in listing order gets the next
/// files warmed in the node before it opens them.
#[test]
fn walking_a_directory_warms_the_next_files() {
    let (fx, files) = setup();
    let mnt = fx.tmp.path().join("mnt");
    let _m = Mount::start(&fx.node, "ds", &mnt, &[]).unwrap();
    let dir = mnt.join("data/small");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let size_of = |n: &str| {
        files
            .iter()
            .find(|(p, _)| *p == format!("data/small/{n}"))
            .unwrap()
            .1
            .len() as u64
    };
    let cached = || fx.node.dataset("ds")["cached_bytes"].as_u64().unwrap();
    assert_eq!(cached(), 0);
    std::fs::read(dir.join(&names[0])).unwrap();
    std::fs::read(dir.join(&names[1])).unwrap();
    // The two files read, and exactly the next 32 nobody opened yet.
    let ahead: u64 = names[..34].iter().map(|n| size_of(n)).sum();
    wait_for(
        "the next files to be warmed",
        Duration::from_secs(10),
        || cached() == ahead,
    )
    .unwrap();
    // Reading out of order warms nothing more.
    let before = cached();
    std::fs::read(mnt.join("models/config.json")).unwrap();
    assert_eq!(cached(), before + 17);
}

/// A process listing a directory's subdirectories in order (a tree walk)
/// gets the next two subdirectories' listings fetched ahead; every
/// directory is still listed by the node once.
#[test]
fn walking_a_tree_fetches_the_next_listings_ahead() {
    let fx = Fixture::new("MD5", &[], NodeOpts::default());
    let src = fx.tmp.path().join("tree");
    let dirs = ["a", "b", "c", "d", "e", "f"];
    for d in dirs {
        std::fs::create_dir_all(src.join(d)).unwrap();
        for f in ["1", "2"] {
            std::fs::write(src.join(d).join(f), d).unwrap();
        }
    }
    let source = format!("file://{}", src.display());
    fx.node.ctl_ok(&["create", "tree", "--source", &source]);
    let mnt = fx.tmp.path().join("mnt");
    let _m = Mount::start(&fx.node, "tree", &mnt, &[]).unwrap();
    let listings = || fx.node.metric("shoal_api_requests_total{op=\"list_dir\"}") as u64;
    let list = |d: &str| std::fs::read_dir(mnt.join(d)).unwrap().count();
    assert_eq!(list(""), dirs.len());
    assert_eq!(list("a"), 2);
    assert_eq!(listings(), 2, "the root and a");
    // Two subdirectories in order: c and d are listed without being read.
    assert_eq!(list("b"), 2);
    wait_for(
        "c and d to be listed ahead",
        Duration::from_secs(10),
        || listings() == 5,
    )
    .unwrap();
    for d in &dirs[2..] {
        assert_eq!(list(d), 2);
    }
    wait_for(
        "e and f to be listed ahead",
        Duration::from_secs(10),
        || listings() == 7,
    )
    .unwrap();
    // Listed again: from the cache.
    for d in dirs {
        assert_eq!(list(d), 2);
    }
    assert_eq!(listings(), 7, "each directory listed once");
}

/// A `/proc/<pid>/status` field in KiB (VmRSS, VmHWM).
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} for {pid}"))
}

/// The inode counts fuse-client reported, in order (its debug log reports
/// the table whenever it changed).
fn inodes_held(m: &Mount) -> Vec<u64> {
    m.proc
        .log_text()
        .lines()
        .filter(|l| l.contains("inode table"))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("inodes="))?
                .parse()
                .ok()
        })
        .collect()
}

/// fuse-client keeps what the kernel holds, not everything ever walked: a
/// walk grows its inode table, the kernel forgetting the inodes (evicted
/// here with drop_caches, as memory pressure would) shrinks it again, a
/// path keeps its inode number across that, and memory stays within a few
/// hundred bytes per file.
#[test]
fn forgotten_inodes_are_dropped_and_memory_stays_bounded() {
    const DIRS: usize = 40;
    const PER_DIR: usize = 1000;
    const FILES: u64 = (DIRS * PER_DIR) as u64;
    let fx = Fixture::new("MD5", &[], NodeOpts::default());
    let src = fx.tmp.path().join("many");
    let mut want = Vec::new();
    for d in 0..DIRS {
        let dir = src.join(format!("dir{d:02}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..PER_DIR {
            let name = format!("file{f:04}.bin");
            let size = (d + f) % 5;
            std::fs::write(dir.join(&name), &b"12345"[..size]).unwrap();
            want.push(format!("dir{d:02}/{name} {size}"));
        }
    }
    want.sort();
    let source = format!("file://{}", src.display());
    fx.node.ctl_ok(&["create", "many", "--source", &source]);
    let mnt = fx.tmp.path().join("mnt");
    let m = Mount::start(&fx.node, "many", &mnt, &[]).unwrap();
    let pid = m.proc.pid();
    let rss_at_mount = status_kib(pid, "VmRSS");
    let walk = || {
        let out = run(Command::new("find")
            .arg(&mnt)
            .args(["-type", "f", "-printf", "%P %s\n"]));
        let mut found: Vec<String> = out.lines().map(str::to_string).collect();
        found.sort();
        found
    };
    let ino = |p: &str| run(Command::new("stat").args(["-c", "%i"]).arg(mnt.join(p)));

    assert!(walk() == want, "first walk differs from the origin");
    wait_for(
        "the walk's inodes to be held",
        Duration::from_secs(10),
        || inodes_held(&m).into_iter().max() >= Some(FILES),
    )
    .unwrap();
    // What a walk costs: the inodes the kernel holds and the cached
    // listings, about 220 bytes per file here (fixed costs included); it
    // was 700 when nothing was ever dropped.
    let grown = status_kib(pid, "VmHWM").saturating_sub(rss_at_mount);
    assert!(
        grown * 1024 < FILES * 400,
        "fuse-client grew by {grown} KiB for {FILES} files"
    );
    let before = ino("dir07/file0042.bin");

    // The kernel evicts the unused dentries and inodes and sends FORGET.
    wait_for(
        "forgotten inodes to be dropped",
        Duration::from_secs(20),
        || {
            std::fs::write("/proc/sys/vm/drop_caches", "2").unwrap();
            inodes_held(&m).last().is_some_and(|&n| n < FILES / 10)
        },
    )
    .unwrap();
    // Looked up again (from the node: its directory's listing went with
    // the directory): the same number, and every file is there.
    assert_eq!(ino("dir07/file0042.bin"), before);
    assert!(walk() == want, "walk after the kernel forgot differs");
    let grown = status_kib(pid, "VmHWM").saturating_sub(rss_at_mount);
    assert!(
        grown * 1024 < FILES * 400,
        "fuse-client grew by {grown} KiB over two walks of {FILES} files"
    );
}

#[test]
fn unmount_under_load_and_restart_after_a_crash() {
    let (fx, files) = setup();
    let mnt = fx.tmp.path().join("mnt");
    let mut m = Mount::start(&fx.node, "ds", &mnt, &[]).unwrap();
    let path = mnt.join(&files[0].0);
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || {
                for _ in 0..50 {
                    if std::fs::read(&path).is_err() {
                        return;
                    }
                }
            })
        })
        .collect();
    wait_for("reads to start", Duration::from_secs(10), || {
        fx.node.metric("shoal_api_requests_total{op=\"read\"}") > 0.0
            || fx.node.metric("shoal_api_requests_total{op=\"backing\"}") > 0.0
    })
    .unwrap();
    assert_eq!(m.proc.terminate(), Some(0), "{}", m.proc.log_text());
    for r in readers {
        r.join().unwrap(); // no reader hangs
    }
    assert!(!Mount::is_mounted(&mnt));
    // A fuse-client killed with SIGKILL leaves no wedged mount for the next start.
    let mut m = Mount::start(&fx.node, "ds", &mnt, &[]).unwrap();
    m.proc.kill9();
    // The dead mount answers ENOTCONN; the next start clears it (SEMANTICS.md).
    assert_eq!(
        std::fs::metadata(&mnt).err().and_then(|e| e.raw_os_error()),
        Some(libc::ENOTCONN)
    );
    let m = Mount::start(&fx.node, "ds", &mnt, &[]).unwrap();
    assert!(std::fs::read(mnt.join(&files[1].0)).unwrap() == files[1].1);
    drop(m);
}

#[test]
fn bad_mount_requests_fail_with_one_line() {
    let (fx, _) = setup();
    let fc = shoal_tests::bin("fuse-client");
    let sock = format!("unix://{}", fx.node.socket().display());
    let mnt = fx.tmp.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let cases: [(&[&str], &str); 4] = [
        (&["--endpoint", &sock, "--dataset", "nope"], "not found"),
        (
            &["--endpoint", "unix:///nonexistent.sock", "--dataset", "ds"],
            "cannot reach",
        ),
        (
            &["--endpoint", &sock, "--dataset", "ds", "--version", "9"],
            "no manifest version 9",
        ),
        (&["--endpoint", &sock, "--dataset", "ds"], "unusable"),
    ];
    for (i, (args, needle)) in cases.iter().enumerate() {
        let target = if i == 3 {
            fx.tmp.path().join("missing-dir")
        } else {
            mnt.clone()
        };
        let out = Command::new(&fc).args(*args).arg(&target).output().unwrap();
        shoal_tests::assert_fails(&out, needle);
        assert!(!Mount::is_mounted(&mnt));
    }
}

fn random_reads() -> impl Strategy<Value = Vec<(usize, u64, usize)>> {
    proptest::collection::vec((0usize..4, 0u64..(13 << 20), 1usize..(3 << 20)), 1..40)
}

#[test]
fn random_reads_through_the_mount_match_the_origin() {
    let (fx, files) = setup();
    let mnt = fx.tmp.path().join("mnt");
    let _m = Mount::start(&fx.node, "ds", &mnt, &[]).unwrap();
    let handles: Vec<_> = files[..4]
        .iter()
        .map(|(p, _)| std::fs::File::open(mnt.join(p)).unwrap())
        .collect();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 16,
        ..ProptestConfig::default()
    });
    runner
        .run(&random_reads(), |reads| {
            for (i, off, len) in reads {
                let want = &files[i].1;
                let mut buf = vec![0u8; len];
                let n = read_full(&handles[i], &mut buf, off);
                let s = (off as usize).min(want.len());
                let e = (off as usize + len).min(want.len());
                prop_assert_eq!(&buf[..n], &want[s..e]);
            }
            Ok(())
        })
        .unwrap();
}

fn read_full(f: &std::fs::File, buf: &mut [u8], off: u64) -> usize {
    let mut done = 0;
    while done < buf.len() {
        let n = f.read_at(&mut buf[done..], off + done as u64).unwrap();
        if n == 0 {
            break;
        }
        done += n;
    }
    done
}
