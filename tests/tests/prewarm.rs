//! Prewarm jobs and locality hints on real cache-node processes: a mesh
//! fed by one S3 server behind a counting (and, where a job must take a
//! while, throttling) proxy, with tier contents measured on the filesystem.

use std::process::Output;
use std::time::Duration;

use serde_json::Value;
use shoal_tests::{
    assert_fails, cluster, data_bytes, pattern, wait_for, CountingProxy, Fixture, Node, NodeOpts,
};

const MIB: usize = 1 << 20;

fn json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

fn job(node: &Node, id: &str) -> Value {
    json(&node.ctl(&["job", id, "-o", "json"]))
}

fn locality(node: &Node, ds: &str) -> Value {
    json(&node.ctl(&["locality", ds, "-o", "json"]))
}

/// The locality row of `id`.
fn row<'a>(loc: &'a Value, id: &str) -> &'a Value {
    loc["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == id)
        .unwrap_or_else(|| panic!("no locality row for {id}: {loc}"))
}

/// Bytes in a node's tier files, measured with SEEK_DATA/SEEK_HOLE.
fn on_disk(node: &Node) -> (u64, u64) {
    (data_bytes(&node.memory_dir()), data_bytes(&node.disk_dir()))
}

/// Locality's figures for `node` equal what its tier files hold (up to one
/// filesystem block per file for the last, partial chunk).
fn assert_locality_matches_files(loc: &Value, node: &Node, name: &str, files: u64) {
    let r = row(loc, name);
    let (mem, disk) = on_disk(node);
    for (what, reported, real) in [
        ("memory", r["memory_bytes"].as_u64().unwrap(), mem),
        ("disk", r["disk_bytes"].as_u64().unwrap(), disk),
    ] {
        assert!(
            real >= reported && real - reported < 4096 * files.max(1),
            "{name} {what}: locality says {reported}, tier files hold {real}"
        );
    }
}

fn wait_dataset(node: &Node, name: &str) {
    wait_for("the dataset to replicate", Duration::from_secs(20), || {
        node.ctl(&["get", name]).status.success()
    })
    .unwrap();
}

fn wait_state(node: &Node, id: &str, state: &str) -> Value {
    let mut last = Value::Null;
    wait_for(
        &format!("job {id} to be {state}"),
        Duration::from_secs(60),
        || {
            last = job(node, id);
            last["state"] == state
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {last:#}"));
    last
}

#[test]
fn prewarm_to_every_node_fetches_each_byte_once_and_fans_out_over_the_mesh() {
    let files = vec![
        (
            "models/weights.bin".to_string(),
            pattern(41, 24 * MIB + 777),
        ),
        ("models/config.json".to_string(), b"{}\n".to_vec()),
        ("other/skip.bin".to_string(), pattern(42, 3 * MIB)),
    ];
    let fx = Fixture::new("MD5", &files, NodeOpts::default());
    let proxy = CountingProxy::start(&fx.s3.endpoint).unwrap();
    let nodes = cluster(&fx.tmp.path().join("cluster"), 3, |_| NodeOpts::default()).unwrap();
    nodes[0].create_ok("ds", "s3://bucket", &proxy.endpoint);
    for n in &nodes {
        wait_dataset(n, "ds");
    }
    let listing_gets = proxy.ranged_gets();
    let selected = (24 * MIB + 777 + 3) as u64;
    let out = nodes[1].ctl(&[
        "prewarm",
        "ds",
        "--path",
        "models",
        "--all-nodes",
        "--wait",
        "-o",
        "json",
    ]);
    let j = json(&out);
    assert_eq!(j["state"], "Complete", "{j:#}");
    assert_eq!(j["total_bytes"].as_u64(), Some(3 * selected));
    assert_eq!(j["done_bytes"].as_u64(), Some(3 * selected));
    // The origin saw each selected chunk once: 25 + 1 chunks of 1 MiB.
    assert_eq!(proxy.ranged_gets() - listing_gets, 26);
    let parts = j["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 3);
    let mut peer_total = 0;
    for p in parts {
        assert_eq!(p["state"], "Complete");
        assert_eq!(p["done_bytes"].as_u64(), Some(selected));
        let origin = p["origin_bytes"].as_u64().unwrap();
        peer_total += p["peer_bytes"].as_u64().unwrap();
        // Every node fetched its own share from the origin, none all of it.
        assert!(origin > 0 && origin < selected, "{p}");
    }
    assert!(peer_total >= 2 * selected - 2 * MIB as u64, "{j:#}");
    // Every target holds every selected byte, and locality agrees with the
    // tier files, from any node.
    for (i, n) in nodes.iter().enumerate() {
        // Other nodes' figures arrive with their next gossip round.
        wait_for("every node's figures", Duration::from_secs(10), || {
            let loc = locality(n, "ds");
            (0..3).all(|k| row(&loc, &format!("node-{k}"))["resident_bytes"] == selected)
        })
        .unwrap();
        let loc = locality(n, "ds");
        assert_eq!(
            loc["complete_nodes"], 0,
            "3 MiB of other/ were not selected"
        );
        assert_locality_matches_files(&loc, n, &format!("node-{i}"), 2);
    }
    // The job is visible from every node, with the same parts.
    let other = job(&nodes[2], j["id"].as_str().unwrap());
    assert_eq!(other["state"], "Complete");
    // Admin HTTP serves the same locality document.
    let (status, body) = shoal_tests::http_get(&nodes[0].admin, "/v1/locality/ds").unwrap();
    assert_eq!(status, 200);
    let http: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        http["total_bytes"],
        locality(&nodes[0], "ds")["total_bytes"]
    );
    assert_eq!(http["nodes"].as_array().unwrap().len(), 3);
    let (status, _) = shoal_tests::http_get(&nodes[0].admin, "/v1/locality/nope").unwrap();
    assert_eq!(status, 404);

    // A dead node's bytes are not counted as available.
    let mut nodes = nodes;
    nodes[2].kill9();
    wait_for("node-2 to be seen dead", Duration::from_secs(15), || {
        row(&locality(&nodes[0], "ds"), "node-2")["available"] == false
    })
    .unwrap();
    let loc = locality(&nodes[0], "ds");
    assert_eq!(loc["available_bytes"].as_u64(), Some(2 * selected));

    // Evict frees the bytes on the targets, and locality follows.
    nodes[0].ctl_ok(&["evict", "ds", "--nodes", "node-0", "--wait"]);
    let loc = locality(&nodes[0], "ds");
    assert_eq!(row(&loc, "node-0")["resident_bytes"], 0);
    assert_locality_matches_files(&loc, &nodes[0], "node-0", 2);
    assert_eq!(on_disk(&nodes[0]), (0, 0));
}

#[test]
fn cancel_stops_a_job_and_progress_only_grows_to_the_exact_size() {
    let files = [
        ("big/big.bin".to_string(), pattern(51, 40 * MIB + 5)),
        ("small/s.bin".to_string(), pattern(52, 100_000)),
    ];
    let fx = Fixture::new("MD5", &files, NodeOpts::default());
    // 1 MiB/s per connection: the job takes seconds, not milliseconds.
    let slow = CountingProxy::start_throttled(&fx.s3.endpoint, Some(MIB as u64)).unwrap();
    fx.node.create_ok("ds", "s3://bucket/big", &slow.endpoint);
    let out = fx.node.ctl(&["prewarm", "ds", "-o", "json"]);
    let id = json(&out)["id"].as_str().unwrap().to_string();
    let mut seen = Vec::new();
    wait_for("some progress", Duration::from_secs(30), || {
        let d = job(&fx.node, &id)["done_bytes"].as_u64().unwrap();
        seen.push(d);
        d > 4 * MIB as u64
    })
    .unwrap();
    let cancel = fx.node.ctl(&["cancel", &id]);
    assert!(cancel.status.success());
    let j = wait_state(&fx.node, &id, "Cancelled");
    assert_eq!(j["parts"][0]["state"], "Cancelled");
    let at_cancel = j["parts"][0]["done_bytes"].as_u64().unwrap();
    assert!(at_cancel < 40 * MIB as u64);
    // Work stops: while another dataset (straight from the origin, not
    // through the slow proxy) is prewarmed to completion, the cancelled job
    // starts no origin request.
    let gets = slow.ranged_gets();
    fx.node
        .create_ok("small", "s3://bucket/small", &fx.s3.endpoint);
    fx.node.ctl_ok(&["prewarm", "small", "--wait"]);
    assert_eq!(slow.ranged_gets(), gets, "the cancelled job kept fetching");
    let resident = row(
        &locality(&fx.node, "ds"),
        j["parts"][0]["node"].as_str().unwrap(),
    )["resident_bytes"]
        .as_u64()
        .unwrap();
    assert!(resident < 40 * MIB as u64);

    // A new job finishes the rest; its progress never goes backwards and
    // ends at exactly the selected size.
    let out = fx.node.ctl(&["prewarm", "ds", "-o", "json"]);
    let id2 = json(&out)["id"].as_str().unwrap().to_string();
    let mut progress = Vec::new();
    wait_for("the second job", Duration::from_secs(60), || {
        let j = job(&fx.node, &id2);
        progress.push(j["done_bytes"].as_u64().unwrap());
        j["state"] == "Complete"
    })
    .unwrap();
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    assert_eq!(*progress.last().unwrap(), 40 * MIB as u64 + 5);
    assert!(progress.len() > 2, "progress was reported while loading");
}

#[test]
fn a_node_restarted_during_a_job_resumes_its_part() {
    let big = pattern(61, 32 * MIB);
    let fx = Fixture::new("MD5", &[("big.bin".into(), big)], NodeOpts::default());
    let slow = CountingProxy::start_throttled(&fx.s3.endpoint, Some(MIB as u64)).unwrap();
    let mut fx = fx;
    fx.node.create_ok("ds", "s3://bucket", &slow.endpoint);
    let listing = slow.ranged_gets();
    let out = fx
        .node
        .ctl(&["prewarm", "ds", "--tier", "disk", "-o", "json"]);
    let id = json(&out)["id"].as_str().unwrap().to_string();
    wait_for("some progress", Duration::from_secs(30), || {
        job(&fx.node, &id)["done_bytes"].as_u64().unwrap() >= 2 * MIB as u64
    })
    .unwrap();
    fx.node.kill9();
    fx.node.restart().unwrap();
    let j = wait_state(&fx.node, &id, "Complete");
    assert_eq!(j["done_bytes"].as_u64(), Some(32 * MIB as u64));
    assert_eq!(j["parts"][0]["disk_bytes"].as_u64(), Some(32 * MIB as u64));
    // Resumed, not restarted: chunks already resident were not fetched
    // again (at most those in flight at the kill are).
    assert!(slow.ranged_gets() - listing <= 32 + 16);
    assert!(fx
        .node
        .logs()
        .contains("resuming this node's part of a job"));
    let loc = locality(&fx.node, "ds");
    let name = loc["nodes"][0]["id"].as_str().unwrap().to_string();
    assert_locality_matches_files(&loc, &fx.node, &name, 1);
    // After another (clean) restart the figures are the same, and still true.
    assert_eq!(fx.node.proc.as_mut().unwrap().terminate(), Some(0));
    fx.node.restart().unwrap();
    let loc2 = locality(&fx.node, "ds");
    assert_eq!(
        loc2["nodes"][0]["disk_bytes"],
        loc["nodes"][0]["disk_bytes"]
    );
    assert_locality_matches_files(&loc2, &fx.node, &name, 1);
    // A refresh that adds a file makes version 2; its figures count the
    // unchanged file's bytes (same file version) and not the new one's.
    std::fs::write(fx.bucket().join("new.bin"), pattern(62, 3 * MIB)).unwrap();
    fx.node.ctl_ok(&["refresh", "ds"]);
    let v2 = locality(&fx.node, "ds");
    assert_eq!(v2["version"], 2);
    assert_eq!(v2["total_bytes"].as_u64(), Some(35 * MIB as u64));
    assert_eq!(
        v2["nodes"][0]["resident_bytes"].as_u64(),
        Some(32 * MIB as u64)
    );
    let v1 = json(
        &fx.node
            .ctl(&["locality", "ds", "--version", "1", "-o", "json"]),
    );
    assert_eq!(v1["complete_nodes"], 1);
}

#[test]
fn a_prewarm_that_does_not_fit_is_refused_and_changes_nothing() {
    let fx = Fixture::new(
        "MD5",
        &[("big.bin".into(), pattern(71, 40 * MIB))],
        NodeOpts {
            memory_quota: "32MiB".into(),
            disk_quota: "48MiB".into(),
            ..NodeOpts::default()
        },
    );
    fx.node.create_ok("ds", "s3://bucket", &fx.s3.endpoint);
    let out = fx.node.ctl(&["prewarm", "ds", "--tier", "memory"]);
    assert_fails(&out, "does not fit");
    assert_eq!(
        json(&fx.node.ctl(&["jobs", "-o", "json"])),
        Value::Array(vec![])
    );
    assert_eq!(on_disk(&fx.node), (0, 0));
    for (args, needle) in [
        (&["prewarm", "nope"][..], "not found"),
        (&["prewarm", "ds", "--path", "missing/dir"], "no file"),
        (&["prewarm", "ds", "--nodes", "ghost"], "unknown node"),
        (&["prewarm", "ds", "--version", "9"], "version"),
        (&["job", "no-such-job"], "not found"),
        (&["cancel", "no-such-job"], "not found"),
        (&["locality", "nope"], "not found"),
    ] {
        assert_fails(&fx.node.ctl(args), needle);
    }
    // Memory and disk together hold it: pinned, it survives pressure.
    fx.node.ctl_ok(&["prewarm", "ds", "--pin", "--wait"]);
    let loc = locality(&fx.node, "ds");
    assert_eq!(
        loc["nodes"][0]["resident_bytes"].as_u64(),
        Some(40 * MIB as u64)
    );
    // The pinned bytes count against the next prewarm's room: with 8 MiB
    // of the disk tier pinned, 40 MiB no longer fit there...
    let out = fx.node.ctl(&["prewarm", "ds", "--tier", "disk"]);
    assert_fails(&out, "does not fit");
    // ...and once unpinned they do: everything moves to the disk tier.
    fx.node.ctl_ok(&["unpin", "ds", "--wait"]);
    fx.node
        .ctl_ok(&["prewarm", "ds", "--tier", "disk", "--wait"]);
    let loc = locality(&fx.node, "ds");
    assert_eq!(
        loc["nodes"][0]["disk_bytes"].as_u64(),
        Some(40 * MIB as u64)
    );
    assert_eq!(on_disk(&fx.node).0, 0, "nothing left in the memory tier");
}

#[test]
fn a_busy_owner_redirects_to_holders_whose_bytes_are_checked_against_its_hash() {
    let big = pattern(81, 16 * MIB);
    let fx = Fixture::new("MD5", &[("f.bin".into(), big.clone())], NodeOpts::default());
    let slow = CountingProxy::start_throttled(&fx.s3.endpoint, Some(2 * MIB as u64)).unwrap();
    // node-0's tiers outweigh the others' by far in rendezvous hashing, so
    // it owns every chunk, and it serves peers one request at a time.
    let nodes = cluster(&fx.tmp.path().join("cluster"), 3, |i| {
        if i == 0 {
            NodeOpts {
                disk_quota: "400GiB".into(),
                args: vec!["--peer-serve-concurrency".into(), "1".into()],
                ..NodeOpts::default()
            }
        } else {
            NodeOpts::default()
        }
    })
    .unwrap();
    nodes[0].create_ok("ds", "s3://bucket", &slow.endpoint);
    for n in &nodes {
        wait_dataset(n, "ds");
    }
    let listing = slow.ranged_gets();
    let j = json(&nodes[1].ctl(&["prewarm", "ds", "--all-nodes", "--wait", "-o", "json"]));
    assert_eq!(j["state"], "Complete", "{j:#}");
    assert_eq!(
        slow.ranged_gets() - listing,
        16,
        "each chunk from the origin once"
    );
    let sum = |series: &str| nodes.iter().map(|n| n.metric(series)).sum::<f64>();
    assert!(sum("shoal_peer_redirects_total") > 0.0);
    assert!(
        sum("shoal_peer_holder_bytes_total") > 0.0,
        "no node pulled a chunk from a holder other than the owner"
    );
    assert_eq!(sum("shoal_peer_corrupt_chunks_total"), 0.0);
    // And the bytes are right on every node.
    for n in &nodes {
        assert!(n.ctl_ok(&["cat", "ds", "f.bin"]) == big);
    }
}

#[test]
fn a_replicas_job_replaces_a_target_that_dies() {
    let fx = Fixture::new(
        "MD5",
        &[("f.bin".into(), pattern(91, 24 * MIB))],
        NodeOpts::default(),
    );
    let slow = CountingProxy::start_throttled(&fx.s3.endpoint, Some(MIB as u64)).unwrap();
    let mut nodes = cluster(&fx.tmp.path().join("cluster"), 3, |_| NodeOpts {
        args: vec!["--peer-dead-after-ms".into(), "1000".into()],
        ..NodeOpts::default()
    })
    .unwrap();
    nodes[1].create_ok("ds", "s3://bucket", &slow.endpoint);
    for n in &nodes {
        wait_dataset(n, "ds");
    }
    let j = json(&nodes[1].ctl(&["prewarm", "ds", "--replicas", "1", "-o", "json"]));
    let id = j["id"].as_str().unwrap().to_string();
    let target = j["nodes"][0].as_str().unwrap().to_string();
    // All equally cold and roomy: the first by name; the creator (node-1)
    // supervises the job.
    assert_eq!(target, "node-0");
    wait_for("progress on node-0", Duration::from_secs(30), || {
        job(&nodes[1], &id)["done_bytes"].as_u64().unwrap() > 0
    })
    .unwrap();
    nodes[0].kill9();
    let j = wait_state(&nodes[1], &id, "Complete");
    assert_eq!(j["replaced"], serde_json::json!(["node-0"]), "{j:#}");
    let nodes_now: Vec<&str> = j["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert_eq!(nodes_now.len(), 2);
    let replacement = nodes_now[1];
    assert_ne!(replacement, "node-0");
    let part = j["parts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["node"] == replacement)
        .unwrap();
    assert_eq!(part["state"], "Complete");
    assert_eq!(part["done_bytes"].as_u64(), Some(24 * MIB as u64));
    assert_eq!(j["done_bytes"].as_u64(), Some(24 * MIB as u64));
}
