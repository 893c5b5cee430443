//! Quotas, watermarks, demotion and eviction through a real node, and a
//! local-directory origin with symlinks; graceful shutdown.

use shoal_tests::{http_get, pattern, Fixture, Node, NodeOpts};

#[test]
fn quotas_and_watermarks_hold_under_a_dataset_larger_than_the_cache() {
    let files: Vec<_> = (0..5)
        .map(|i| (format!("f{i}"), pattern(i, 8 << 20)))
        .collect();
    let fx = Fixture::new(
        "MD5",
        &files,
        NodeOpts {
            memory_quota: "8MiB".into(),
            disk_quota: "16MiB".into(),
            ..NodeOpts::default()
        },
    );
    let (s3, node) = (&fx.s3, &fx.node);
    node.create_ok("ds", "s3://bucket", &s3.endpoint);
    for (p, b) in &files {
        assert!(node.ctl_ok(&["cat", "ds", p]) == *b);
        let mem = node.metric("shoal_tier_bytes{tier=\"memory\"}") as u64;
        let disk = node.metric("shoal_tier_bytes{tier=\"disk\"}") as u64;
        assert!(mem <= 8 << 20, "memory tier {mem} over quota");
        assert!(disk <= 16 << 20, "disk tier {disk} over quota");
        // Actual blocks on the media stay within quota too (holes are punched).
        assert!(du(&node.memory_dir()) <= 8 << 20);
        assert!(du(&node.disk_dir()) <= (16 << 20) + (1 << 20));
    }
    assert!(node.metric("shoal_evictions_total{tier=\"memory\",action=\"demote\"}") > 0.0);
    assert!(node.metric("shoal_evictions_total{tier=\"disk\",action=\"drop\"}") > 0.0);
    let d = node.dataset("ds");
    assert!(d["cached_bytes"].as_u64().unwrap() <= 24 << 20);
    assert_eq!(d["total_bytes"], 40 << 20);
    // Evicted data is fetched again, correctly.
    assert!(node.ctl_ok(&["cat", "ds", "f0"]) == files[0].1);
    let nodes: serde_json::Value =
        serde_json::from_slice(&node.ctl_ok(&["nodes", "-o", "json"])).unwrap();
    let tiers = nodes[0]["tiers"].as_array().unwrap();
    assert_eq!(tiers.len(), 2);
    assert!(tiers
        .iter()
        .all(|t| t["used_bytes"].as_u64() <= t["quota_bytes"].as_u64()));
}

/// Allocated bytes under a directory (what the medium really holds).
fn du(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.metadata().map(|m| m.blocks() * 512).unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn local_directory_origin_with_symlinks_and_graceful_shutdown() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
    let big = pattern(7, (3 << 20) + 5);
    std::fs::write(src.join("big.bin"), &big).unwrap();
    std::fs::write(src.join("sub/deeper/small.txt"), b"small\n").unwrap();
    std::fs::write(src.join("empty"), b"").unwrap();
    std::os::unix::fs::symlink("sub/deeper/small.txt", src.join("link")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", src.join("escape")).unwrap();
    let mut node = Node::start(&tmp.path().join("node"), NodeOpts::default()).unwrap();
    let source = format!("file://{}", src.display());
    node.ctl_ok(&[
        "create",
        "local",
        "--source",
        &source,
        "--chunk-size",
        "1MiB",
        "--tier-policy",
        "DiskOnly",
    ]);
    let d = node.dataset("local");
    assert_eq!(d["files"], 3);
    assert_eq!(d["total_bytes"], big.len() as u64 + 6);
    assert!(node.ctl_ok(&["cat", "local", "big.bin"]) == big);
    assert_eq!(node.ctl_ok(&["cat", "local", "link"]), b"small\n");
    assert_eq!(
        node.ctl_ok(&["cat", "local", "/sub/deeper/small.txt"]),
        b"small\n"
    );
    assert!(node.ctl_ok(&["cat", "local", "empty"]).is_empty());
    shoal_tests::assert_fails(
        &node.ctl(&["cat", "local", "escape"]),
        "outside the dataset",
    );
    // DiskOnly: nothing in memory.
    assert_eq!(node.metric("shoal_tier_bytes{tier=\"memory\"}"), 0.0);
    let ls: serde_json::Value =
        serde_json::from_slice(&node.ctl_ok(&["ls", "local", "/", "-o", "json"])).unwrap();
    let names: Vec<_> = ls
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, vec!["big.bin", "empty", "escape", "link", "sub"]);
    // The Unix socket serves the same API.
    let out = std::process::Command::new(shoal_tests::bin("dataset-ctl"))
        .arg("--endpoint")
        .arg(format!("unix://{}", node.socket().display()))
        .args(["cat", "local", "link"])
        .output()
        .unwrap();
    assert_eq!(out.stdout, b"small\n");
    assert_eq!(http_get(&node.admin, "/healthz").unwrap().0, 200);
    // SIGTERM: clean exit, and the cache survives the restart.
    let code = node.proc.as_mut().unwrap().terminate();
    assert_eq!(code, Some(0), "{}", node.logs());
    assert!(node.logs().contains("cache-node stopped"));
    node.restart().unwrap();
    assert_eq!(node.dataset("local")["cached_bytes"], big.len() as u64 + 6);
}
