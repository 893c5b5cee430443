//! kill -9 of the node while it fetches: after a restart every byte read
//! matches the origin, and unfinished writes are found and discarded.

use std::process::{Command, Stdio};
use std::time::Duration;

use shoal_tests::{bin, has_thread_in_d_state, pattern, wait_for, Fixture, LoopFs, NodeOpts};

#[test]
fn kill9_during_fetches_then_every_byte_matches_the_origin() {
    let files: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| {
            (
                format!("f{i}.bin"),
                pattern(100 + i, (48 << 20) + i as usize * 777),
            )
        })
        .collect();
    // A small memory tier so demotions to disk are under way too.
    let opts = NodeOpts {
        memory_quota: "24MiB".into(),
        ..NodeOpts::default()
    };
    let mut fx = Fixture::new("MD5", &files, opts);
    let (s3, node) = (&fx.s3, &mut fx.node);
    node.create_ok("ds", "s3://bucket", &s3.endpoint);

    for (round, threshold) in [(0usize, 6u64 << 20), (1, 20 << 20), (2, 36 << 20)] {
        let (path, _) = &files[round];
        let mut readers: Vec<_> = files
            .iter()
            .map(|(p, _)| {
                Command::new(bin("dataset-ctl"))
                    .args(["--endpoint", &node.listen, "cat", "ds", p])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let start = node.metric("shoal_origin_bytes_total") as u64;
        wait_for("origin bytes to flow", Duration::from_secs(60), || {
            node.metric("shoal_origin_bytes_total") as u64 >= start + threshold
        })
        .unwrap_or_else(|e| panic!("{e} ({path})\n{}", node.logs()));
        node.kill9();
        for r in &mut readers {
            let _ = r.wait();
        }
        node.restart().unwrap();
        // The tier files survived the kill: no record may point at bytes
        // that are gone (interrupted writes are punched, not "missing").
        let log = node.proc.as_ref().unwrap().log_text();
        assert_eq!(recovered_field(&log, "dropped_missing"), 0, "{log}");
    }
    for (p, b) in &files {
        let got = node.ctl_ok(&["cat", "ds", p]);
        assert!(got == *b, "{p} differs from the origin after crashes");
    }
    // And once more after a clean restart, from the tiers.
    node.kill9();
    node.restart().unwrap();
    let before = node.metric("shoal_origin_bytes_total");
    for (p, b) in &files {
        assert!(node.ctl_ok(&["cat", "ds", p]) == *b);
    }
    let cached = node.dataset("ds")["cached_bytes"].as_u64().unwrap();
    assert!(cached > 0, "recovered chunks are served from the cache");
    assert_eq!(
        node.metric("shoal_origin_bytes_total"),
        before,
        "after a clean restart every byte comes from the tiers"
    );
}

#[test]
fn a_chunk_write_cut_by_kill9_is_found_and_discarded_on_restart() {
    let big = pattern(7, 16 << 20);
    // No memory tier: every chunk is written to the disk tier, which is a
    // filesystem this test can freeze.
    let opts = NodeOpts {
        memory_quota: "0".into(),
        ..NodeOpts::default()
    };
    let mut fx = Fixture::new("MD5", &[("big.bin".into(), big.clone())], opts);
    let node = &mut fx.node;
    node.kill9();
    std::fs::remove_dir_all(node.disk_dir()).unwrap();
    let disk = LoopFs::mount(&fx.tmp.path().join("disk.img"), &node.disk_dir(), 128).unwrap();
    node.restart().unwrap();
    node.create_ok("ds", "s3://bucket", &fx.s3.endpoint);

    // Freeze the disk, read: the first chunk's write blocks in the kernel
    // after its pending record was stored. Kill the node right there.
    disk.freeze().unwrap();
    let mut reader = Command::new(bin("dataset-ctl"))
        .args(["--endpoint", &node.listen, "cat", "ds", "big.bin"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = node.proc.as_ref().unwrap().pid();
    wait_for(
        "a chunk write blocked on the frozen disk",
        Duration::from_secs(30),
        || has_thread_in_d_state(pid),
    )
    .unwrap();
    // SAFETY: signalling our own child; it dies once the disk thaws.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    disk.thaw().unwrap();
    node.kill9();
    let _ = reader.wait();

    node.restart().unwrap();
    let log = node.proc.as_ref().unwrap().log_text();
    assert!(
        recovered_field(&log, "punched_incomplete_writes") >= 1,
        "the interrupted write was not found: {log}"
    );
    assert!(node.ctl_ok(&["cat", "ds", "big.bin"]) == big);
    assert_eq!(
        node.dataset("ds")["cached_bytes"].as_u64().unwrap(),
        big.len() as u64
    );
}

/// A numeric field of the "chunk store recovered" line in a node's log.
fn recovered_field(log: &str, field: &str) -> u64 {
    let line = log
        .lines()
        .find(|l| l.contains("chunk store recovered"))
        .unwrap_or_else(|| panic!("no recovery line in:\n{log}"));
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{field}=")))
        .and_then(|v| v.trim_matches(|c: char| !c.is_ascii_digit()).parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {line:?}"))
}

#[test]
fn recovered_chunks_are_verified_before_they_are_served_and_bad_ones_fetched_again() {
    let big = pattern(9, 12 << 20);
    let opts = NodeOpts {
        memory_quota: "0".into(),
        args: vec!["--verify-on-start".into(), "always".into()],
        ..NodeOpts::default()
    };
    let mut fx = Fixture::new("MD5", &[("big.bin".into(), big.clone())], opts);
    let node = &mut fx.node;
    node.create_ok("ds", "s3://bucket", &fx.s3.endpoint);
    let chunk = node.dataset("ds")["chunk_size"].as_u64().unwrap() as usize;
    let chunks = big.len().div_ceil(chunk);
    assert!(chunks >= 3);
    assert!(node.ctl_ok(&["cat", "ds", "big.bin"]) == big);
    node.kill9();

    // Pages of the middle chunk were lost (a power loss): zeros on disk
    // under a record that still says the chunk is there.
    let tier_file = std::fs::read_dir(node.disk_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_file())
        .expect("the file's disk-tier backing file");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&tier_file)
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[0u8; 8192], chunk as u64 + 100).unwrap();
    drop(f);

    node.restart().unwrap();
    let origin = node.metric("shoal_origin_bytes_total");
    assert!(
        node.ctl_ok(&["cat", "ds", "big.bin"]) == big,
        "a lost page was served"
    );
    assert_eq!(
        node.metric("shoal_origin_bytes_total") - origin,
        chunk as f64,
        "exactly the bad chunk is fetched again"
    );
    let proc = node.proc.as_ref().unwrap();
    wait_for(
        "the background verification",
        Duration::from_secs(20),
        || proc.log_text().contains("recovered chunks verified"),
    )
    .unwrap();
    assert_eq!(
        node.metric("shoal_verified_chunks_total{result=\"corrupt\"}"),
        1.0
    );
    assert_eq!(
        node.metric("shoal_verified_chunks_total{result=\"ok\"}"),
        (chunks - 1) as f64
    );

    // A clean stop syncs and says so; the next start knows it.
    let code = node.proc.as_mut().unwrap().terminate();
    assert_eq!(code, Some(0));
    let last = std::fs::read_to_string(node.dir.join("data/last-run")).unwrap();
    assert!(last.contains("\"clean\":true"), "{last}");
}
