//! kill -9 of the node while it fetches: after a restart every byte read
//! matches the origin, and unfinished writes are discarded.

use std::process::{Command, Stdio};
use std::time::Duration;

use shoal_tests::{bin, pattern, wait_for, Fixture, NodeOpts};

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
        let logs = node.logs();
        assert!(logs.contains("chunk store recovered"), "{logs}");
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
