//! End to end against a real S3-compatible server (`rclone serve s3`).

use std::time::Duration;

use shoal_tests::{pattern, wait_for, Fixture, Mount, NodeOpts, SECRET_KEY};

/// A small tree: (path, bytes) of every file.
fn tree() -> Vec<(String, Vec<u8>)> {
    let files = vec![
        (
            "models/weights.bin".to_string(),
            pattern(1, (9 << 20) + 123),
        ),
        (
            "models/config.json".to_string(),
            b"{\"layers\": 12}\n".to_vec(),
        ),
        ("models/empty".to_string(), Vec::new()),
        ("a/b/c/deep.txt".to_string(), pattern(2, 4097)),
        ("exact.bin".to_string(), pattern(3, 2 << 20)),
    ];
    files
}

fn run_roundtrip(etag_hash: &str) {
    let files = tree();
    let Fixture { s3, node, .. } = &Fixture::new(etag_hash, &files, NodeOpts::default());
    node.create_ok("ds", "s3://bucket", &s3.endpoint);
    let list: serde_json::Value =
        serde_json::from_slice(&node.ctl_ok(&["list", "-o", "json"])).unwrap();
    let total: u64 = files.iter().map(|(_, b)| b.len() as u64).sum();
    assert_eq!(list[0]["name"], "ds");
    assert_eq!(list[0]["files"], files.len() as u64);
    assert_eq!(list[0]["total_bytes"], total);
    assert_eq!(list[0]["cached_bytes"], 0);
    let mut last_cached = 0;
    for (path, bytes) in &files {
        let got = node.ctl_ok(&["cat", "ds", path]);
        assert!(
            got == *bytes,
            "{path}: {} bytes differ from origin",
            got.len()
        );
        let cached = node.dataset("ds")["cached_bytes"].as_u64().unwrap();
        assert!(
            cached >= last_cached + bytes.len() as u64,
            "cached bytes grow"
        );
        last_cached = cached;
    }
    assert_eq!(node.dataset("ds")["phase"], "Cached");
    let origin_bytes = node.metric("shoal_origin_bytes_total");
    assert_eq!(origin_bytes as u64, total, "each byte fetched once");
    // Warm reads come from the tiers, not the origin.
    for (path, bytes) in &files {
        assert!(node.ctl_ok(&["cat", "ds", path]) == *bytes);
    }
    assert_eq!(node.metric("shoal_origin_bytes_total"), origin_bytes);
    // Ranged reads at odd offsets across chunk boundaries go through the same path.
    let table = String::from_utf8(node.ctl_ok(&["list"])).unwrap();
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.contains("100.0%"), "{table}");
    // No credential anywhere in output or logs.
    let get = String::from_utf8(node.ctl_ok(&["get", "ds", "-o", "json"])).unwrap();
    assert!(!get.contains(SECRET_KEY));
    assert!(
        !node.logs().contains(SECRET_KEY),
        "secret leaked into node logs"
    );
}

#[test]
fn s3_cat_matches_origin_with_etags() {
    run_roundtrip("MD5");
}

#[test]
fn s3_cat_matches_origin_without_etags() {
    run_roundtrip("");
}

#[test]
fn changed_object_is_reported_and_refresh_serves_new_bytes() {
    for etag_hash in ["MD5", ""] {
        let fx = Fixture::new(etag_hash, &tree(), NodeOpts::default());
        let (s3, node, bucket) = (&fx.s3, &fx.node, fx.bucket());
        node.create_ok("ds", "s3://bucket/models", &s3.endpoint);
        // Read only the first chunk, then change the object (same size, new bytes, new mtime).
        let v1 = pattern(1, (9 << 20) + 123);
        std::fs::write(bucket.join("models/weights.bin"), pattern(9, v1.len())).unwrap();
        let t = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(bucket.join("models/weights.bin"))
            .unwrap()
            .set_modified(t)
            .unwrap();
        let out = node.ctl(&["cat", "ds", "weights.bin"]);
        shoal_tests::assert_fails(&out, "changed at the origin");
        assert!(
            out.stdout.is_empty() || out.stdout.len() < v1.len(),
            "never a full mixed file"
        );
        assert!(
            out.stdout.iter().zip(&v1).all(|(a, b)| a == b),
            "bytes before the failure are the old version's"
        );
        // Version 1 still answers what it listed; refresh makes version 2 with the new bytes.
        let d: serde_json::Value =
            serde_json::from_slice(&node.ctl_ok(&["refresh", "ds", "-o", "json"])).unwrap();
        assert_eq!(d["version"], 2, "etag_hash={etag_hash:?}");
        assert!(node.ctl_ok(&["cat", "ds", "weights.bin"]) == pattern(9, v1.len()));
        // Unchanged files kept their identity: config.json is not fetched again.
        node.ctl_ok(&["cat", "ds", "config.json", "--version", "1"]);
        let before = node.metric("shoal_origin_requests_total{result=\"ok\"}");
        node.ctl_ok(&["cat", "ds", "config.json"]);
        assert_eq!(
            node.metric("shoal_origin_requests_total{result=\"ok\"}"),
            before
        );
        // A second refresh with nothing changed keeps version 2.
        let d: serde_json::Value =
            serde_json::from_slice(&node.ctl_ok(&["refresh", "ds", "-o", "json"])).unwrap();
        assert_eq!(
            d["version"],
            2,
            "{}",
            node.logs()
                .lines()
                .filter(|l| l.contains("refresh"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert_eq!(d["versions"], serde_json::json!([1, 2]));
    }
}

#[test]
fn dedup_across_datasets_fetches_once() {
    let files = tree();
    let Fixture { s3, node, .. } = &Fixture::new("MD5", &files, NodeOpts::default());
    node.create_ok("all", "s3://bucket", &s3.endpoint);
    node.create_ok("models", "s3://bucket/models", &s3.endpoint);
    assert!(node.ctl_ok(&["cat", "all", "models/weights.bin"]) == files[0].1);
    let requests = node.metric("shoal_origin_requests_total{result=\"ok\"}");
    let memory = node.metric("shoal_tier_bytes{tier=\"memory\"}");
    // The same object through another dataset (and another prefix) is already cached.
    assert!(node.ctl_ok(&["cat", "models", "weights.bin"]) == files[0].1);
    assert_eq!(
        node.metric("shoal_origin_requests_total{result=\"ok\"}"),
        requests
    );
    assert_eq!(
        node.metric("shoal_tier_bytes{tier=\"memory\"}"),
        memory,
        "stored once"
    );
    assert_eq!(
        node.dataset("models")["cached_bytes"],
        files[0].1.len() as u64
    );
    // Deleting one dataset keeps the bytes the other still uses.
    node.ctl_ok(&["delete", "models"]);
    assert_eq!(node.metric("shoal_tier_bytes{tier=\"memory\"}"), memory);
    node.ctl_ok(&["delete", "all"]);
    assert_eq!(
        node.metric("shoal_tier_bytes{tier=\"memory\"}"),
        0.0,
        "delete frees what nobody uses"
    );
}

#[test]
fn unused_manifest_versions_are_dropped_but_a_mounted_one_stays() {
    let v1 = pattern(31, 3 << 20);
    let opts = NodeOpts {
        args: vec![
            "--keep-versions".into(),
            "1".into(),
            "--version-grace-secs".into(),
            "3".into(),
        ],
        ..NodeOpts::default()
    };
    let fx = Fixture::new("MD5", &[("w.bin".into(), v1.clone())], opts);
    let node = &fx.node;
    node.create_ok("ds", "s3://bucket", &fx.s3.endpoint);
    let mnt = fx.tmp.path().join("mnt");
    let mount = Mount::start(node, "ds", &mnt, &[]).unwrap();
    assert!(std::fs::read(mnt.join("w.bin")).unwrap() == v1);
    let cached = node.metric("shoal_tier_bytes{tier=\"memory\"}");
    assert!(cached >= v1.len() as f64);

    // A new version; version 1 stays while the mount uses it.
    let v2 = pattern(32, 2 << 20);
    std::fs::write(fx.bucket().join("w.bin"), &v2).unwrap();
    node.ctl_ok(&["refresh", "ds"]);
    let versions = || node.dataset("ds")["versions"].clone();
    // Two collector passes (every 10 s) after the refresh, past the grace,
    // with the mount alive.
    let runs = || node.metric("shoal_version_gc_runs_total");
    let after = runs();
    wait_for("two collector passes", Duration::from_secs(40), || {
        runs() >= after + 2.0
    })
    .unwrap();
    assert_eq!(
        versions(),
        serde_json::json!([1, 2]),
        "a mounted version was dropped"
    );
    assert!(
        std::fs::read(mnt.join("w.bin")).unwrap() == v1,
        "the mount still reads version 1"
    );

    // Unmounted: version 1 goes, and its chunks with it.
    drop(mount);
    wait_for("version 1 to be dropped", Duration::from_secs(30), || {
        versions() == serde_json::json!([2])
    })
    .unwrap_or_else(|e| panic!("{e}: {}", node.logs()));
    wait_for(
        "version 1's chunks released",
        Duration::from_secs(10),
        || node.metric("shoal_tier_bytes{tier=\"memory\"}") == 0.0,
    )
    .unwrap();
    assert!(node.ctl_ok(&["cat", "ds", "w.bin"]) == v2);
}
