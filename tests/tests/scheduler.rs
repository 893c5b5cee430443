//! The scheduler end to end on this machine: two cache nodes in a mesh,
//! `scheduler serve`, and two `scheduler agent`s whose replicas are real
//! processes reading their dataset through fuse-client in their own mount
//! namespaces.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use shoal_tests::{bin, cluster, free_port, pattern, wait_for, Fixture, Node, NodeOpts, Proc};

const MIB: usize = 1 << 20;

struct Scheduler {
    url: String,
    dir: std::path::PathBuf,
    proc: Proc,
    starts: u32,
}

impl Scheduler {
    fn start(dir: &Path) -> Self {
        let port = free_port();
        let mut s = Self {
            url: format!("http://127.0.0.1:{port}"),
            dir: dir.to_path_buf(),
            proc: Self::spawn(dir, port, 1),
            starts: 1,
        };
        s.wait_ready();
        s
    }

    fn spawn(dir: &Path, port: u16, n: u32) -> Proc {
        Proc::spawn(
            Command::new(bin("scheduler"))
                .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
                .arg("--data-dir")
                .arg(dir.join("state"))
                .args(["--lost-after-ms", "2000"]),
            dir.join(format!("scheduler-{n}.log")),
        )
        .unwrap()
    }

    fn wait_ready(&mut self) {
        wait_for("the scheduler", Duration::from_secs(20), || {
            self.ctl(&["get", "nodes"]).status.success()
        })
        .unwrap_or_else(|e| panic!("{e}: {}", self.proc.log_text()));
    }

    fn restart(&mut self) {
        self.proc.kill9();
        self.starts += 1;
        let port: u16 = self.url.rsplit(':').next().unwrap().parse().unwrap();
        self.proc = Self::spawn(&self.dir, port, self.starts);
        self.wait_ready();
    }

    fn ctl(&self, args: &[&str]) -> Output {
        Command::new(bin("scheduler"))
            .args(["--server", &self.url])
            .args(args)
            .output()
            .unwrap()
    }

    fn json(&self, args: &[&str]) -> Value {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "scheduler {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn replicas(&self) -> Vec<Value> {
        self.json(&["get", "replicas", "-o", "json"])
            .as_array()
            .unwrap()
            .clone()
    }

    fn active(&self, dep: &str) -> Vec<Value> {
        self.replicas()
            .into_iter()
            .filter(|r| {
                r["deployment"] == dep
                    && ["Pending", "Warming", "Starting", "Running", "Ready"]
                        .contains(&r["state"].as_str().unwrap())
            })
            .collect()
    }

    /// Waits until `dep` has exactly `n` Ready replicas and returns them.
    fn ready(&self, dep: &str, n: usize) -> Vec<Value> {
        let mut last = Vec::new();
        wait_for(
            &format!("{n} ready replica(s) of {dep}"),
            Duration::from_secs(60),
            || {
                last = self.active(dep);
                last.len() == n && last.iter().all(|r| r["state"] == "Ready")
            },
        )
        .unwrap_or_else(|e| panic!("{e}: {last:#?}\n{}", self.proc.log_text()));
        last
    }
}

fn agent(dir: &Path, sched: &Scheduler, name: &str, node: &Node) -> Proc {
    let work = dir.join(name);
    std::fs::create_dir_all(&work).unwrap();
    Proc::spawn(
        Command::new(bin("scheduler"))
            .args(["--server", &sched.url, "agent", "--name", name])
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .arg("--work-dir")
            .arg(&work)
            .args(["--gpu-model", "h100", "--gpus", "2", "--cpu-millis", "8000"])
            .args(["--memory", "16GiB", "--label", "zone=z1"])
            .args(["--cache-node", node.opts.name.as_deref().unwrap()])
            .args(["--cache-api", &node.listen, "--cache-admin", &node.admin])
            .arg("--cache-socket")
            .arg(format!("unix://{}", node.socket().display())),
        dir.join(format!("{name}.log")),
    )
    .unwrap()
}

/// One cache node with dataset "ds" holding `file`, a scheduler, and one
/// agent ("gpu-0") registered with it.
fn one_host(file: (&str, Vec<u8>)) -> (Fixture, Vec<Node>, std::path::PathBuf, Scheduler, Proc) {
    let fx = Fixture::new("MD5", &[(file.0.into(), file.1)], NodeOpts::default());
    let nodes = cluster(&fx.tmp.path().join("cluster"), 1, |_| NodeOpts::default()).unwrap();
    nodes[0].create_ok("ds", "s3://bucket", &fx.s3.endpoint);
    let dir = fx.tmp.path().join("sched");
    std::fs::create_dir_all(&dir).unwrap();
    let sched = Scheduler::start(&dir);
    let agent = agent(&dir, &sched, "gpu-0", &nodes[0]);
    wait_for("the agent", Duration::from_secs(20), || {
        sched
            .json(&["get", "nodes", "-o", "json"])
            .as_array()
            .unwrap()
            .len()
            == 1
    })
    .unwrap();
    (fx, nodes, dir, sched, agent)
}

/// Processes whose command line contains `marker`.
fn count_procs(marker: &str) -> usize {
    let out = Command::new("pgrep")
        .args(["-f", "-c", marker])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

#[test]
fn replicas_land_on_warm_hosts_read_their_data_and_are_replaced() {
    let data = pattern(101, 6 * MIB + 11);
    let fx = Fixture::new(
        "MD5",
        &[("f.bin".into(), data.clone())],
        NodeOpts::default(),
    );
    let nodes = cluster(&fx.tmp.path().join("cluster"), 2, |_| NodeOpts::default()).unwrap();
    nodes[0].create_ok("ds", "s3://bucket", &fx.s3.endpoint);
    wait_for("replication", Duration::from_secs(20), || {
        nodes[1].ctl(&["get", "ds"]).status.success()
    })
    .unwrap();
    nodes[0].ctl_ok(&["prewarm", "ds", "--nodes", "node-0", "--wait"]);
    let dir = fx.tmp.path().join("sched");
    std::fs::create_dir_all(&dir).unwrap();
    let mut sched = Scheduler::start(&dir);
    let mut agents = vec![
        agent(&dir, &sched, "gpu-0", &nodes[0]),
        agent(&dir, &sched, "gpu-1", &nodes[1]),
    ];
    wait_for("both agents", Duration::from_secs(20), || {
        sched
            .json(&["get", "nodes", "-o", "json"])
            .as_array()
            .unwrap()
            .len()
            == 2
    })
    .unwrap();
    let want = {
        let out = Command::new("sha256sum")
            .arg(fx.bucket().join("f.bin"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    let spec = dir.join("svc.yaml");
    std::fs::write(
        &spec,
        "kind: ReplicaSet\nmetadata: {name: svc}\nspec:\n  replicas: 1\n  image: demo:1\n  \
         command: [sh, -c, 'sha256sum /data/f.bin; exec sleep 86397']\n  gpu: {model: h100, count: 1}\n  \
         datasets: [{name: ds}]\n  locality: {policy: preferred, minWarmFraction: 1.0}\n",
    )
    .unwrap();
    let out = sched.ctl(&["apply", "-f", spec.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // It lands on the warm host, reads /data, and its bytes match the origin.
    let r = sched.ready("svc", 1).remove(0);
    assert_eq!(r["host"], "gpu-0", "{r:#}");
    assert_eq!(r["endpoint"], "127.0.0.1");
    let id = r["id"].as_str().unwrap().to_string();
    let explain = sched.json(&["explain", &id, "-o", "json"]);
    assert_eq!(explain["start"], "Now");
    assert_eq!(explain["candidates"].as_array().unwrap().len(), 2);
    wait_for("the replica's output", Duration::from_secs(20), || {
        String::from_utf8_lossy(&sched.ctl(&["logs", &id]).stdout).contains(&want)
    })
    .unwrap();
    // Killing the replica's process brings a replacement.
    assert_eq!(count_procs("sleep 86397"), 1);
    Command::new("pkill")
        .args(["-f", "sleep 86397"])
        .status()
        .unwrap();
    wait_for("a replacement", Duration::from_secs(60), || {
        let a = sched.active("svc");
        a.len() == 1 && a[0]["id"] != id.as_str() && a[0]["state"] == "Ready"
    })
    .unwrap();

    // A blacklisted host gets nothing: scaled to 2, the new one goes to gpu-1.
    assert!(sched.ctl(&["blacklist", "add", "gpu-0"]).status.success());
    assert!(sched
        .ctl(&["scale", "svc", "--replicas", "2"])
        .status
        .success());
    let two = sched.ready("svc", 2);
    let newest = two
        .iter()
        .max_by_key(|r| r["created_ms"].as_i64().unwrap())
        .unwrap();
    assert_eq!(newest["host"], "gpu-1", "{two:#?}");
    let on1 = newest["id"].as_str().unwrap().to_string();
    let ex = sched.json(&["explain", &on1, "-o", "json"]);
    let gpu0 = ex["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["host"] == "gpu-0")
        .unwrap();
    assert_eq!(gpu0["filtered"], "blacklisted");
    assert!(sched.ctl(&["blacklist", "rm", "gpu-0"]).status.success());

    // Stop with --decrease-replicas: not replaced, and the count drops.
    assert!(sched
        .ctl(&["stop", &on1, "--decrease-replicas"])
        .status
        .success());
    wait_for("the stop", Duration::from_secs(30), || {
        sched
            .replicas()
            .iter()
            .any(|r| r["id"] == on1.as_str() && r["state"] == "Stopped")
    })
    .unwrap();
    let dep = sched.json(&["describe", "svc"]);
    assert_eq!(dep["replicas"], 1);

    // A restarted scheduler neither duplicates nor loses replicas.
    let before: Vec<String> = sched
        .active("svc")
        .iter()
        .map(|r| r["id"].to_string())
        .collect();
    let total = sched.replicas().len();
    sched.restart();
    let after = sched.ready("svc", 1);
    assert_eq!(
        after
            .iter()
            .map(|r| r["id"].to_string())
            .collect::<Vec<_>>(),
        before
    );
    assert_eq!(sched.replicas().len(), total, "no replica was created anew");
    assert_eq!(count_procs("sleep 86397"), 1);

    // Killing the agent of the host that runs it: nothing is left behind,
    // and a replacement runs on the other host.
    let host = after[0]["host"].as_str().unwrap().to_string();
    let k = if host == "gpu-0" { 0 } else { 1 };
    agents[k].kill9();
    wait_for(
        "the replica's processes to die with its agent",
        Duration::from_secs(10),
        || count_procs("sleep 86397") == 0,
    )
    .unwrap();
    wait_for(
        "a replacement on the other host",
        Duration::from_secs(60),
        || {
            let a = sched.active("svc");
            a.len() == 1 && a[0]["host"] != host.as_str() && a[0]["state"] == "Ready"
        },
    )
    .unwrap();
    assert_eq!(count_procs("sleep 86397"), 1);
    // One fuse-client per running replica: the dead agent's is gone.
    assert_eq!(
        count_procs(&format!(
            "fuse-client --endpoint unix://{}",
            nodes[k].socket().display()
        )),
        0
    );
    drop(agents);
}

#[test]
fn required_locality_warms_the_host_before_starting_and_bad_specs_change_nothing() {
    let (_fx, nodes, dir, sched, _agent) = one_host(("m.bin", pattern(111, 5 * MIB)));
    let base = "kind: Job\nmetadata: {name: train}\nspec:\n  replicas: 1\n  \
                command: [sh, -c, 'cmp -s /data/m.bin /data/m.bin && test $(wc -c < /data/m.bin) = 5242880']\n  \
                gpu: {model: h100, count: 1}\n  datasets: [{name: ds}]\n  \
                locality: {policy: required, minWarmFraction: 1.0}\n";
    let bad = [
        (
            base.replace("replicas: 1", "replicas: -2"),
            "must not be negative",
        ),
        (base.replace("name: ds", "name: nope"), "not found"),
        (base.replace("count: 1", "count: 9"), "no registered host"),
        (base.replace("command:", "commandd:"), "unknown field"),
        (
            "kind: Job\nmetadata: {name: x\n".to_string(),
            "invalid deployment spec",
        ),
    ];
    for (text, needle) in bad {
        let f = dir.join("bad.yaml");
        std::fs::write(&f, text).unwrap();
        let out = sched.ctl(&["apply", "-f", f.to_str().unwrap()]);
        shoal_tests::assert_fails(&out, needle);
    }
    assert_eq!(
        sched.json(&["get", "deployments", "-o", "json"]),
        Value::Array(vec![])
    );
    let f = dir.join("train.yaml");
    std::fs::write(&f, base).unwrap();
    assert!(sched
        .ctl(&["apply", "-f", f.to_str().unwrap()])
        .status
        .success());
    wait_for("the job to succeed", Duration::from_secs(60), || {
        sched
            .replicas()
            .iter()
            .any(|r| r["deployment"] == "train" && r["state"] == "Succeeded")
    })
    .unwrap_or_else(|e| panic!("{e}: {:#?}", sched.replicas()));
    // It was warmed first and started only once its data was resident.
    let events = sched.json(&["events", "-o", "json"]);
    let kinds: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["deployment"] == "train")
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    let warming = kinds
        .iter()
        .position(|k| *k == "warming")
        .expect("a warming event");
    let started = kinds
        .iter()
        .position(|k| *k == "started" || *k == "exited")
        .expect("it ran");
    assert!(warming < started, "{kinds:?}");
    let r = sched
        .replicas()
        .into_iter()
        .find(|r| r["deployment"] == "train")
        .unwrap();
    let job = nodes[0].ctl_ok(&["job", r["prewarm_job"].as_str().unwrap(), "-o", "json"]);
    let job: Value = serde_json::from_slice(&job).unwrap();
    assert_eq!(job["state"], "Complete");
    // The replica was handed to its agent (the "scheduled" event after
    // warming) only once the prewarm part had finished.
    let finished = job["parts"][0]["finished_unix_ms"].as_i64().unwrap();
    let handed_over = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["deployment"] == "train" && e["kind"] == "scheduled")
        .map(|e| e["time_ms"].as_i64().unwrap())
        .next_back()
        .expect("a scheduled event");
    assert!(handed_over >= finished, "{handed_over} < {finished}");
    assert_eq!(r["exit_code"], 0, "{r:#}");
    wait_for("the job's phase", Duration::from_secs(10), || {
        sched.json(&["describe", "train"])["phase"] == "Succeeded"
    })
    .unwrap();
}

#[test]
fn health_checks_container_reuse_and_a_killed_fuse_client() {
    let (_fx, nodes, dir, sched, _agent) = one_host(("w.bin", pattern(121, MIB)));
    // Ready only once the health check passes: the command creates the
    // file it checks for after reading its data, and keeps a counter in
    // its working directory (kept when the container is reused).
    let spec = dir.join("h.yaml");
    std::fs::write(
        &spec,
        "kind: ReplicaSet\nmetadata: {name: hc}\nspec:\n  replicas: 1\n  image: hc:1\n  \
         command: [sh, -c, 'echo run >> runs; cmp -s /data/w.bin /data/w.bin && touch healthy; echo $SHOAL_CONTAINER_UUID; exec sleep 86393']\n  \
         healthCheck: {command: [test, -f, healthy]}\n  reuseContainer: true\n  \
         datasets: [{name: ds}]\n",
    )
    .unwrap();
    assert!(sched
        .ctl(&["apply", "-f", spec.to_str().unwrap()])
        .status
        .success());
    let first = sched.ready("hc", 1).remove(0);
    let id1 = first["id"].as_str().unwrap().to_string();
    let events = sched.json(&["events", "-o", "json"]);
    let kinds: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["replica"] == id1.as_str())
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["scheduled", "started", "ready"]);
    // Its process exits: the replacement reuses the ended container (same
    // working directory) with a new container UUID.
    Command::new("pkill")
        .args(["-f", "sleep 86393"])
        .status()
        .unwrap();
    let second = loop {
        let r = sched.ready("hc", 1).remove(0);
        if r["id"] != id1.as_str() {
            break r;
        }
    };
    let id2 = second["id"].as_str().unwrap().to_string();
    assert_eq!(second["reused_from"], id1.as_str(), "{second:#}");
    assert_ne!(second["container_uuid"], first["container_uuid"]);
    let ex = sched.json(&["explain", &id2, "-o", "json"]);
    assert_eq!(ex["candidates"][0]["reused"], true);
    let runs = dir.join("gpu-0").join(&id2).join("work/runs");
    wait_for(
        "the reused working directory",
        Duration::from_secs(10),
        || std::fs::read_to_string(&runs).is_ok_and(|s| s.lines().count() == 2),
    )
    .unwrap();
    let logs = String::from_utf8_lossy(&sched.ctl(&["logs", &id2]).stdout).into_owned();
    assert!(
        logs.contains(second["container_uuid"].as_str().unwrap()),
        "{logs}"
    );
    // Killing the replica's fuse-client stops it (its data is gone), and a
    // new replica replaces it; nothing is left behind.
    let sock = format!(
        "fuse-client --endpoint unix://{}",
        nodes[0].socket().display()
    );
    assert_eq!(count_procs(&sock), 1);
    Command::new("pkill")
        .args(["-9", "-f", &sock])
        .status()
        .unwrap();
    wait_for("a replacement", Duration::from_secs(60), || {
        let a = sched.active("hc");
        a.len() == 1 && a[0]["id"] != id2.as_str() && a[0]["state"] == "Ready"
    })
    .unwrap();
    let failed = sched
        .replicas()
        .into_iter()
        .find(|r| r["id"] == id2.as_str())
        .unwrap();
    assert_eq!(failed["state"], "Failed", "{failed:#}");
    assert!(
        failed["message"].as_str().unwrap().contains("fuse-client"),
        "{failed:#}"
    );
    assert_eq!(count_procs("sleep 86393"), 1);
    assert_eq!(count_procs(&sock), 1);
    // The estimate's error was measured for the replicas that became ready.
    let metrics = get_ok(&sched.url, "/metrics");
    let count: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("shoal_scheduler_startup_estimate_error_seconds_count "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(count >= 3.0, "{metrics}");
}

/// The body of a 200 answer from the scheduler at `url`.
/// A scheduler stopped with SIGTERM exits 0, every time, with its state
/// kept: RocksDB still open when the process exited aborted it in about
/// one stop in ten ("pthread lock: Invalid argument", exit 134), which a
/// supervisor sees as a crash.
#[test]
fn a_scheduler_stopped_with_sigterm_exits_cleanly_every_time() {
    let tmp = tempfile::tempdir().unwrap();
    for i in 0..20 {
        let mut s = Scheduler::start(tmp.path());
        let code = s.proc.terminate();
        assert_eq!(code, Some(0), "stop {i}: {}", s.proc.log_text());
    }
}

fn get_ok(url: &str, path: &str) -> String {
    let addr = url.trim_start_matches("http://");
    let (status, body) = shoal_tests::http_get(addr, path).unwrap();
    assert_eq!(status, 200);
    body
}
