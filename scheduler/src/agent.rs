//! `scheduler agent`: runs replicas as processes on one GPU host.
//!
//! Every 500 ms the agent sends the scheduler what it runs and gets back
//! what it must run; it starts what is missing and stops what is no longer
//! listed. Each replica runs under `scheduler run-replica` (a wrapper in
//! its own mount namespace, [`run_replica`]): fuse-client mounts the
//! replica's dataset versions read-only at their mount paths inside that
//! namespace only, then the command runs; when the command exits the
//! wrapper unmounts and reports its exit code.
//!
//! Nothing outlives its owner: the wrapper, fuse-client and the command are
//! all started with a parent-death signal (SIGKILL), so killing the agent
//! kills its wrappers, which kills their children; the mount namespace dies
//! with its last process, and the FUSE mount with it. If a replica's
//! fuse-client dies, the wrapper stops the command (its data is gone) and
//! reports the failure, so a ReplicaSet replaces it.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::model::{Assignment, Heartbeat, HeartbeatReply, NodeInfo, ReplicaReport};

/// Agent settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub node: NodeInfo,
    /// Scheduler base URL, e.g. http://10.0.0.1:7400.
    pub scheduler: String,
    pub work_dir: PathBuf,
    /// fuse-client binary and the local cache node's socket.
    pub fuse_client: PathBuf,
    pub cache_socket: String,
}

struct Running {
    child: Child,
    health: Option<crate::spec::HealthCheck>,
    ready: bool,
    last_check: Option<Instant>,
}

/// The agent's replicas.
pub struct Agent {
    cfg: Config,
    running: Mutex<HashMap<String, Running>>,
    /// Exits not yet reported: id → (code, message).
    exited: Mutex<BTreeMap<String, (Option<i32>, String)>>,
    http: reqwest::Client,
}

/// What the wrapper needs (written as JSON next to the replica's logs).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplicaSpec {
    pub assignment: Assignment,
    pub fuse_client: PathBuf,
    pub cache_socket: String,
    pub dir: PathBuf,
}

fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe; nothing else runs in pre_exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

impl Agent {
    pub fn new(cfg: Config) -> Result<Arc<Self>> {
        std::fs::create_dir_all(&cfg.work_dir)
            .with_context(|| format!("creating {}", cfg.work_dir.display()))?;
        Ok(Arc::new(Self {
            cfg,
            running: Mutex::new(HashMap::new()),
            exited: Mutex::new(BTreeMap::new()),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()?,
        }))
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.cfg.work_dir.join(id)
    }

    fn start(&self, a: &Assignment) -> Result<()> {
        let dir = self.dir(&a.id);
        if let Some(old) = &a.reused_from {
            // A reused container keeps its working directory.
            let from = self.dir(old);
            if from.is_dir() && !dir.exists() {
                std::fs::rename(&from, &dir)?;
            }
        }
        std::fs::create_dir_all(dir.join("work"))?;
        let spec = ReplicaSpec {
            assignment: a.clone(),
            fuse_client: self.cfg.fuse_client.clone(),
            cache_socket: self.cfg.cache_socket.clone(),
            dir: dir.clone(),
        };
        let spec_path = dir.join("spec.json");
        std::fs::write(&spec_path, serde_json::to_vec(&spec)?)?;
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.arg("run-replica")
            .arg(&spec_path)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("wrapper.log"))?)
            .stderr(std::fs::File::create(dir.join("wrapper.err"))?);
        die_with_parent(&mut cmd);
        let child = cmd.spawn().context("starting the replica wrapper")?;
        tracing::info!(replica = %a.id, pid = child.id(), "replica started");
        self.running.lock().expect("running lock").insert(
            a.id.clone(),
            Running {
                child,
                health: a.health.clone(),
                ready: a.health.is_none(),
                last_check: None,
            },
        );
        Ok(())
    }

    fn stop(&self, id: &str, mut r: Running) {
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(r.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = r.child.try_wait() {
                tracing::info!(replica = %id, "replica stopped");
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = r.child.kill();
        let _ = r.child.wait();
        tracing::warn!(replica = %id, "replica did not stop in 10 s; killed");
    }

    /// Collects exits and runs due health checks.
    async fn observe(&self) {
        let mut due = Vec::new();
        let mut gone = Vec::new();
        {
            let mut running = self.running.lock().expect("running lock");
            for (id, r) in running.iter_mut() {
                if let Ok(Some(status)) = r.child.try_wait() {
                    gone.push((id.clone(), status.code()));
                    continue;
                }
                if let Some(h) = &r.health {
                    let period = Duration::from_secs(h.period_seconds.max(1));
                    if !r.ready && r.last_check.is_none_or(|t| t.elapsed() >= period) {
                        r.last_check = Some(Instant::now());
                        due.push((id.clone(), h.clone()));
                    }
                }
            }
            for (id, _) in &gone {
                running.remove(id);
            }
        }
        // The wrapper's last error line, read with no lock held.
        for (id, code) in gone {
            let msg = std::fs::read_to_string(self.dir(&id).join("wrapper.err"))
                .unwrap_or_default()
                .lines()
                .last()
                .unwrap_or_default()
                .to_string();
            tracing::info!(replica = %id, code = ?code, "replica exited");
            self.exited
                .lock()
                .expect("exited lock")
                .insert(id, (code, msg));
        }
        for (id, h) in due {
            let ok = if !h.http.is_empty() {
                self.http
                    .get(&h.http)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            } else {
                let mut c = tokio::process::Command::new(&h.command[0]);
                c.args(&h.command[1..])
                    .current_dir(self.dir(&id).join("work"));
                matches!(
                    tokio::time::timeout(Duration::from_secs(10), c.status()).await,
                    Ok(Ok(s)) if s.success()
                )
            };
            if ok {
                if let Some(r) = self.running.lock().expect("running lock").get_mut(&id) {
                    r.ready = true;
                }
            }
        }
    }

    fn reports(&self) -> Vec<ReplicaReport> {
        let mut v: Vec<ReplicaReport> = self
            .running
            .lock()
            .expect("running lock")
            .iter()
            .map(|(id, r)| ReplicaReport {
                id: id.clone(),
                state: if r.ready { "Ready" } else { "Running" }.into(),
                exit_code: None,
                message: String::new(),
            })
            .collect();
        for (id, (code, msg)) in self.exited.lock().expect("exited lock").iter() {
            v.push(ReplicaReport {
                id: id.clone(),
                state: "Exited".into(),
                exit_code: *code,
                message: msg.clone(),
            });
        }
        v
    }

    /// One heartbeat and the changes it asks for.
    async fn round(&self) -> Result<()> {
        self.observe().await;
        let hb = Heartbeat {
            node: self.cfg.node.clone(),
            replicas: self.reports(),
        };
        let reported_exits: Vec<String> = hb
            .replicas
            .iter()
            .filter(|r| r.state == "Exited")
            .map(|r| r.id.clone())
            .collect();
        let reply: HeartbeatReply = self
            .http
            .post(format!("{}/v1/agents/heartbeat", self.cfg.scheduler))
            .json(&hb)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        {
            let mut exited = self.exited.lock().expect("exited lock");
            for id in reported_exits {
                exited.remove(&id);
            }
        }
        let want: HashMap<&str, &Assignment> =
            reply.run.iter().map(|a| (a.id.as_str(), a)).collect();
        let stale: Vec<(String, Running)> = {
            let mut running = self.running.lock().expect("running lock");
            let ids: Vec<String> = running
                .keys()
                .filter(|id| !want.contains_key(id.as_str()))
                .cloned()
                .collect();
            ids.into_iter()
                .filter_map(|id| running.remove(&id).map(|r| (id, r)))
                .collect()
        };
        for (id, r) in stale {
            tokio::task::block_in_place(|| self.stop(&id, r));
        }
        for a in &reply.run {
            let known = self
                .running
                .lock()
                .expect("running lock")
                .contains_key(&a.id)
                || self.exited.lock().expect("exited lock").contains_key(&a.id);
            if !known {
                if let Err(e) = self.start(a) {
                    tracing::warn!(replica = %a.id, error = %e, "cannot start replica");
                    self.exited
                        .lock()
                        .expect("exited lock")
                        .insert(a.id.clone(), (None, format!("cannot start: {e:#}")));
                }
            }
        }
        Ok(())
    }

    /// Heartbeats until cancelled, then stops every replica.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let mut failing = false;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tick.tick() => {}
            }
            match self.round().await {
                Ok(()) if failing => {
                    tracing::info!("scheduler reachable again");
                    failing = false;
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    tracing::warn!(error = %e, "heartbeat failed; replicas keep running");
                    failing = true;
                }
                Err(_) => {}
            }
        }
        let all: Vec<(String, Running)> =
            self.running.lock().expect("running lock").drain().collect();
        for (id, r) in all {
            tokio::task::block_in_place(|| self.stop(&id, r));
        }
    }

    /// The agent's HTTP endpoint: replica logs.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/v1/logs/{id}", get(logs))
            .with_state(self.clone())
    }
}

async fn logs(State(a): State<Arc<Agent>>, UrlPath(id): UrlPath<String>) -> (StatusCode, String) {
    if id.contains('/') || id.contains("..") {
        return (StatusCode::BAD_REQUEST, "bad replica id".into());
    }
    let dir = a.dir(&id);
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok();
    match (read("stdout.log"), read("stderr.log")) {
        (None, None) => (
            StatusCode::NOT_FOUND,
            format!("no logs for replica {id} on this host"),
        ),
        (out, err) => (
            StatusCode::OK,
            format!("{}{}", out.unwrap_or_default(), err.unwrap_or_default()),
        ),
    }
}

/// `scheduler run-replica SPEC`: one replica in its own mount namespace.
/// Exits with the command's code (125 when it could not start).
pub fn run_replica(spec_path: &Path) -> Result<i32> {
    let spec: ReplicaSpec = serde_json::from_slice(
        &std::fs::read(spec_path).with_context(|| format!("reading {}", spec_path.display()))?,
    )?;
    let a = &spec.assignment;
    // SAFETY: plain syscalls on our own process before any thread starts.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            bail!("unshare(CLONE_NEWNS): {}", std::io::Error::last_os_error());
        }
        let root = c"/";
        if libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            bail!("making mounts private: {}", std::io::Error::last_os_error());
        }
    }
    let mut mounts: Vec<Child> = Vec::new();
    let result = (|| -> Result<i32> {
        for (i, (dataset, version, path)) in a.mounts.iter().enumerate() {
            std::fs::create_dir_all(path)
                .with_context(|| format!("creating mount point {path}"))?;
            let ready = spec.dir.join(format!("mount-{i}.ready"));
            let _ = std::fs::remove_file(&ready);
            let mut cmd = Command::new(&spec.fuse_client);
            cmd.args(["--endpoint", &spec.cache_socket, "--dataset", dataset])
                .args(["--version", &version.to_string()])
                .arg("--ready-file")
                .arg(&ready)
                .arg(path)
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(
                    spec.dir.join(format!("fuse-{i}.log")),
                )?)
                .stderr(std::fs::File::create(
                    spec.dir.join(format!("fuse-{i}.err")),
                )?);
            die_with_parent(&mut cmd);
            let mut child = cmd.spawn().context("starting fuse-client")?;
            let deadline = Instant::now() + Duration::from_secs(30);
            while !ready.exists() {
                if child.try_wait()?.is_some() || Instant::now() > deadline {
                    let err = std::fs::read_to_string(spec.dir.join(format!("fuse-{i}.err")))
                        .unwrap_or_default();
                    bail!(
                        "mounting {dataset} at {path} failed: {}",
                        err.lines().last().unwrap_or("timed out")
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            mounts.push(child);
        }
        let mut cmd = Command::new(&a.command[0]);
        cmd.args(&a.command[1..])
            .envs(&a.env)
            .current_dir(spec.dir.join("work"))
            .stdin(Stdio::null())
            .stdout(
                std::fs::File::options()
                    .create(true)
                    .append(true)
                    .open(spec.dir.join("stdout.log"))?,
            )
            .stderr(
                std::fs::File::options()
                    .create(true)
                    .append(true)
                    .open(spec.dir.join("stderr.log"))?,
            );
        die_with_parent(&mut cmd);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {:?}", a.command[0]))?;
        let term = Arc::new(std::sync::atomic::AtomicBool::new(false));
        signal_hook_flag(&term)?;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status.code().unwrap_or(128 + status_signal(&status)));
            }
            if term.load(std::sync::atomic::Ordering::SeqCst) {
                // SAFETY: signalling our own child.
                unsafe {
                    libc::kill(child.id() as i32, libc::SIGTERM);
                }
                let status = child.wait()?;
                return Ok(status.code().unwrap_or(128 + status_signal(&status)));
            }
            if let Some(i) = mounts
                .iter_mut()
                .position(|m| matches!(m.try_wait(), Ok(Some(_))))
            {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "fuse-client of mount {} exited; the replica's data is gone",
                    a.mounts[i].2
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })();
    for mut m in mounts {
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(m.id() as i32, libc::SIGTERM);
        }
        let _ = m.wait();
    }
    result
}

fn status_signal(s: &std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    s.signal().unwrap_or(0)
}

static TERM_FLAG: std::sync::OnceLock<Arc<std::sync::atomic::AtomicBool>> =
    std::sync::OnceLock::new();

extern "C" fn on_term(_: libc::c_int) {
    if let Some(f) = TERM_FLAG.get() {
        f.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Sets `flag` on SIGTERM/SIGINT (the wrapper then stops its command).
fn signal_hook_flag(flag: &Arc<std::sync::atomic::AtomicBool>) -> Result<()> {
    let _ = TERM_FLAG.set(flag.clone());
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: installs an async-signal-safe handler (one atomic store).
        let prev = unsafe { libc::signal(sig, on_term as *const () as libc::sighandler_t) };
        if prev == libc::SIG_ERR {
            bail!(
                "installing a signal handler: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}
