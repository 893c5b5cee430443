//! `scheduler serve`: the deployment scheduler.
//!
//! State (deployments, replicas, nodes, blacklist, events) lives in memory
//! and is written through to RocksDB, so a restarted scheduler recovers
//! every deployment and replica and reconciles with the agents' reports
//! instead of starting anything twice. Agents pull: every heartbeat
//! carries what the agent runs and gets back what it must run, so an agent
//! or scheduler restart converges without a separate handshake.
//!
//! A reconcile round (every 500 ms) marks hosts that stopped heartbeating
//! lost (their replicas too), creates or stops replicas to match each
//! deployment, places pending ones ([`crate::placement`], with locality
//! from the cache nodes' admin HTTP), starts a prewarm job where locality
//! is required and the host is cold, and starts the replica once the job
//! is Complete.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use shoal_proto::client::{Client, Endpoint};
use shoal_proto::v1::{self, request::Kind as Req, response::Kind as Resp};
use tokio_util::sync::CancellationToken;

use crate::model::*;
use crate::placement::{self, DatasetLocality, Host, Policy, Rates, Residency, Spread, Start};
use crate::spec::{self, Kind, LocalityPolicy};

/// Server settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: std::path::PathBuf,
    /// A host silent this long is lost.
    pub lost_after: Duration,
    /// Stopped containers stay reusable this long (at most 7 days).
    pub reuse_ttl: Duration,
    pub rates: Rates,
}

#[derive(Default)]
struct Inner {
    deployments: BTreeMap<String, DeploymentRecord>,
    replicas: BTreeMap<String, Replica>,
    nodes: BTreeMap<String, NodeRecord>,
    blacklist: BTreeMap<String, i64>,
    events: Vec<Event>,
    next_event: u64,
}

/// The scheduler.
pub struct Scheduler {
    cfg: Config,
    persist: Persist,
    inner: Mutex<Inner>,
    events_changed: tokio::sync::Notify,
    http: reqwest::Client,
    estimate_error: Histogram,
    replica_states: Family<Vec<(&'static str, String)>, Gauge>,
}

/// Events kept in memory (older ones stay in RocksDB).
const EVENTS_KEPT: usize = 10_000;

/// Write-behind persistence: changes are queued in order and written to
/// RocksDB by one thread, so neither the state lock nor an async worker
/// ever waits on the database. A crash can lose the last queued writes;
/// the agents' next heartbeats reconcile what they describe.
///
/// The writer thread holds the database; [`Persist::close`] (a stop, or
/// the drop) ends the queue and waits for the thread, so every queued write
/// is done and the database closed before the process exits (RocksDB still
/// open at exit aborted the process in its static destructors: "pthread
/// lock: Invalid argument", 1 stop in 10).
struct Persist {
    tx: Mutex<Option<std::sync::mpsc::Sender<Op>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for Persist {
    fn drop(&mut self) {
        self.close();
    }
}

enum Op {
    Put(String, Vec<u8>),
    Delete(String),
}

impl Persist {
    fn start(db: Arc<rocksdb::DB>) -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel::<Op>();
        let writer = std::thread::Builder::new()
            .name("scheduler-state".into())
            .spawn(move || {
                for op in rx {
                    let r = match op {
                        Op::Put(k, v) => db.put(k.as_bytes(), v),
                        Op::Delete(k) => db.delete(k.as_bytes()),
                    };
                    if let Err(e) = r {
                        tracing::error!(error = %e, "writing scheduler state failed");
                    }
                }
            })?;
        Ok(Self {
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
        })
    }

    /// Queues `op`; after [`Persist::close`] nothing is written any more.
    fn send(&self, op: Op) {
        if let Some(tx) = self.tx.lock().expect("persist lock").as_ref() {
            let _ = tx.send(op);
        }
    }

    fn put<T: Serialize>(&self, key: String, v: &T) {
        let bytes = serde_json::to_vec(v).expect("records serialise");
        self.send(Op::Put(key, bytes));
    }

    fn delete(&self, key: String) {
        self.send(Op::Delete(key));
    }

    /// Writes everything queued, stops the writer and closes the database.
    fn close(&self) {
        self.tx.lock().expect("persist lock").take();
        let writer = self.writer.lock().expect("persist lock").take();
        if let Some(w) = writer {
            let _ = w.join();
        }
    }
}

fn load<T: DeserializeOwned>(db: &rocksdb::DB, prefix: &str) -> Vec<T> {
    db.prefix_iterator(prefix.as_bytes())
        .flatten()
        .take_while(|(k, _)| k.starts_with(prefix.as_bytes()))
        .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
        .collect()
}

type ApiResult = Result<Response, (StatusCode, String)>;

fn bad(code: StatusCode, msg: impl Into<String>) -> (StatusCode, String) {
    (code, msg.into())
}

fn json<T: Serialize>(v: &T) -> ApiResult {
    Ok(Json(serde_json::to_value(v).expect("serialisable")).into_response())
}

impl Scheduler {
    /// Opens (or creates) the state and loads it.
    pub fn open(cfg: Config) -> anyhow::Result<Arc<Self>> {
        std::fs::create_dir_all(&cfg.data_dir)?;
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        let db = Arc::new(rocksdb::DB::open(&opts, cfg.data_dir.join("state"))?);
        let mut inner = Inner::default();
        for d in load::<DeploymentRecord>(&db, "d/") {
            inner
                .deployments
                .insert(d.deployment.metadata.name.clone(), d);
        }
        for r in load::<Replica>(&db, "r/") {
            inner.replicas.insert(r.id.clone(), r);
        }
        // Agents get a full `lost_after` to check in with a restarted
        // scheduler before their hosts (and replicas) count as lost.
        let started = now_ms();
        for mut n in load::<NodeRecord>(&db, "n/") {
            n.last_heartbeat_ms = started;
            inner.nodes.insert(n.info.name.clone(), n);
        }
        for (host, at) in load::<(String, i64)>(&db, "b/") {
            inner.blacklist.insert(host, at);
        }
        let mut events = load::<Event>(&db, "e/");
        events.sort_by_key(|e| e.seq);
        inner.next_event = events.last().map_or(1, |e| e.seq + 1);
        let skip = events.len().saturating_sub(EVENTS_KEPT);
        inner.events = events.split_off(skip);
        tracing::info!(
            deployments = inner.deployments.len(),
            replicas = inner.replicas.len(),
            nodes = inner.nodes.len(),
            "scheduler state loaded"
        );
        Ok(Arc::new(Self {
            cfg,
            persist: Persist::start(db)?,
            inner: Mutex::new(inner),
            events_changed: tokio::sync::Notify::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()?,
            estimate_error: Histogram::new([
                -30.0, -10.0, -3.0, -1.0, -0.3, 0.0, 0.3, 1.0, 3.0, 10.0, 30.0,
            ]),
            replica_states: Family::default(),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("scheduler lock")
    }

    fn save_replica(&self, r: &Replica) {
        self.persist.put(format!("r/{}", r.id), r);
    }

    fn event(&self, inner: &mut Inner, kind: &str, r: &Replica, message: String) {
        let e = Event {
            seq: inner.next_event,
            time_ms: now_ms(),
            kind: kind.into(),
            deployment: r.deployment.clone(),
            replica: r.id.clone(),
            host: r.host.clone().unwrap_or_default(),
            endpoint: r.endpoint.clone(),
            message,
        };
        inner.next_event += 1;
        self.persist.put(format!("e/{:020}", e.seq), &e);
        tracing::info!(kind, replica = %r.id, host = %e.host, message = %e.message, "event");
        inner.events.push(e);
        if inner.events.len() > EVENTS_KEPT {
            inner.events.remove(0);
        }
        self.events_changed.notify_waiters();
    }

    /// The HTTP API for clients and agents.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/v1/deployments", get(list_deployments).post(apply))
            .route(
                "/v1/deployments/{name}",
                get(get_deployment).delete(delete_deployment),
            )
            .route("/v1/deployments/{name}/scale", post(scale))
            .route("/v1/replicas", get(list_replicas))
            .route("/v1/replicas/{id}", get(get_replica))
            .route("/v1/replicas/{id}/stop", post(stop_replica))
            .route("/v1/replicas/{id}/logs", get(replica_logs))
            .route("/v1/nodes", get(list_nodes))
            .route("/v1/blacklist", get(list_blacklist))
            .route("/v1/blacklist/{host}", post(add_blacklist))
            .route("/v1/blacklist/{host}", delete(rm_blacklist))
            .route("/v1/events", get(events))
            .route("/v1/agents/heartbeat", post(heartbeat))
            .route("/metrics", get(metrics))
            .with_state(self.clone())
    }

    /// Runs reconcile rounds until cancelled.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => self.reconcile().await,
            }
        }
    }

    /// One reconcile round.
    async fn reconcile(&self) {
        self.mark_lost();
        self.match_counts();
        self.place_pending().await;
        self.finish_warming().await;
        self.update_gauges();
    }

    fn mark_lost(&self) {
        let now = now_ms();
        let lost_after = self.cfg.lost_after.as_millis() as i64;
        let mut inner = self.lock();
        let newly: Vec<String> = inner
            .nodes
            .values()
            .filter(|n| !n.lost && now - n.last_heartbeat_ms > lost_after)
            .map(|n| n.info.name.clone())
            .collect();
        for name in newly {
            if let Some(n) = inner.nodes.get_mut(&name) {
                n.lost = true;
                self.persist.put(format!("n/{name}"), n);
            }
            let ids: Vec<String> = inner
                .replicas
                .values()
                .filter(|r| r.host.as_deref() == Some(name.as_str()) && r.state.active())
                .map(|r| r.id.clone())
                .collect();
            for id in ids {
                let r = inner.replicas.get_mut(&id).expect("listed");
                r.state = ReplicaState::Lost;
                r.finished_ms = Some(now);
                r.message = format!("host {name} stopped heartbeating");
                let r = r.clone();
                self.save_replica(&r);
                self.event(&mut inner, "lost", &r, r.message.clone());
            }
        }
    }

    /// Creates or stops replicas so each deployment has what it asks for.
    fn match_counts(&self) {
        let mut inner = self.lock();
        let deps: Vec<DeploymentRecord> = inner.deployments.values().cloned().collect();
        for d in deps {
            let name = d.deployment.metadata.name.clone();
            let want = d.deployment.spec.replicas as usize;
            let mine: Vec<Replica> = inner
                .replicas
                .values()
                .filter(|r| r.deployment == name)
                .cloned()
                .collect();
            let active: Vec<&Replica> = mine
                .iter()
                .filter(|r| r.state.active() && !r.stop_requested)
                .collect();
            let to_create = match d.deployment.kind {
                Kind::ReplicaSet => want.saturating_sub(active.len()),
                Kind::Job => {
                    let done = mine
                        .iter()
                        .filter(|r| r.state == ReplicaState::Succeeded)
                        .count();
                    let failed = mine
                        .iter()
                        .filter(|r| matches!(r.state, ReplicaState::Failed | ReplicaState::Lost))
                        .count();
                    let phase = if done >= want {
                        "Succeeded"
                    } else if failed > d.deployment.spec.retries as usize * want.max(1) {
                        "Failed"
                    } else {
                        "Running"
                    };
                    if phase != d.phase {
                        let rec = inner.deployments.get_mut(&name).expect("listed");
                        rec.phase = phase.into();
                        self.persist.put(format!("d/{name}"), rec);
                    }
                    if phase == "Running" {
                        want.saturating_sub(done + active.len())
                    } else {
                        0
                    }
                }
            };
            for _ in 0..to_create {
                let r = Replica {
                    id: format!("{name}-{}", &uuid::Uuid::new_v4().simple().to_string()[..6]),
                    deployment: name.clone(),
                    generation: d.generation,
                    state: ReplicaState::Pending,
                    host: None,
                    container_uuid: String::new(),
                    mounts: Vec::new(),
                    exit_code: None,
                    message: String::new(),
                    created_ms: now_ms(),
                    scheduled_ms: None,
                    started_ms: None,
                    ready_ms: None,
                    finished_ms: None,
                    estimate_s: None,
                    explain: None,
                    prewarm_job: None,
                    stop_requested: false,
                    reuse_key: d.deployment.reuse_key(),
                    reusable_until_ms: None,
                    reused_from: None,
                    endpoint: String::new(),
                };
                self.save_replica(&r);
                inner.replicas.insert(r.id.clone(), r);
            }
            if d.deployment.kind == Kind::ReplicaSet && active.len() > want {
                // Scale down: the newest replicas go first.
                let mut extra: Vec<&Replica> = active.clone();
                extra.sort_by_key(|r| std::cmp::Reverse(r.created_ms));
                let ids: Vec<String> = extra[..active.len() - want]
                    .iter()
                    .map(|r| r.id.clone())
                    .collect();
                for id in ids {
                    self.stop_locked(&mut inner, &id, "scaled down");
                }
            }
        }
    }

    /// Marks a replica to stop (pending ones stop at once).
    fn stop_locked(&self, inner: &mut Inner, id: &str, why: &str) {
        let Some(r) = inner.replicas.get_mut(id) else {
            return;
        };
        r.stop_requested = true;
        let now_final = matches!(r.state, ReplicaState::Pending | ReplicaState::Warming);
        if now_final {
            r.state = ReplicaState::Stopped;
            r.finished_ms = Some(now_ms());
        }
        r.message = why.into();
        let r = r.clone();
        self.save_replica(&r);
        // A running replica's "stopped" event comes when its agent stopped it.
        if now_final {
            self.event(inner, "stopped", &r, why.into());
        }
    }

    /// Hosts with their free capacity, pooled containers and flags.
    fn hosts(&self, inner: &Inner) -> Vec<(Host, NodeInfo)> {
        let now = now_ms();
        inner
            .nodes
            .values()
            .map(|n| {
                let mut gpus = n.info.gpus;
                let mut cpu = n.info.cpu_millis;
                let mut mem = n.info.memory_bytes;
                let mut reusable = Vec::new();
                for r in inner
                    .replicas
                    .values()
                    .filter(|r| r.host.as_deref() == Some(n.info.name.as_str()))
                {
                    if r.state.active() {
                        if let Some(d) = inner.deployments.get(&r.deployment) {
                            gpus = gpus.saturating_sub(d.deployment.spec.gpu.count);
                            cpu = cpu.saturating_sub(d.deployment.spec.cpu_millis);
                            mem = mem.saturating_sub(d.deployment.memory_bytes());
                        }
                    } else if r.reusable_until_ms.is_some_and(|t| t > now) {
                        reusable.push(r.reuse_key.clone());
                    }
                }
                (
                    Host {
                        name: n.info.name.clone(),
                        gpu_model: n.info.gpu_model.clone(),
                        gpus_free: gpus,
                        cpu_free: cpu,
                        memory_free: mem,
                        labels: n.info.labels.clone().into_iter().collect(),
                        healthy: !n.lost,
                        blacklisted: inner.blacklist.contains_key(&n.info.name),
                        reusable,
                    },
                    n.info.clone(),
                )
            })
            .collect()
    }

    /// Locality of one dataset version from a cache node, keyed by host
    /// (agents name their cache node; locality names cache nodes).
    async fn locality(
        &self,
        dataset: &str,
        version: u64,
        nodes: &[NodeInfo],
    ) -> Result<(u64, DatasetLocality), String> {
        let mut last = String::from("no cache node registered");
        for n in nodes.iter().filter(|n| !n.cache_admin.is_empty()) {
            let url = format!(
                "http://{}/v1/locality/{dataset}?version={version}",
                n.cache_admin
            );
            let resp = match self.http.get(&url).send().await {
                Ok(r) => r,
                Err(e) => {
                    last = format!("{url}: {e}");
                    continue;
                }
            };
            if resp.status() == reqwest::StatusCode::NOT_FOUND {
                return Err(format!("dataset {dataset:?} (version {version}) not found"));
            }
            let doc: serde_json::Value = match resp.json().await {
                Ok(v) => v,
                Err(e) => {
                    last = format!("{url}: {e}");
                    continue;
                }
            };
            let by_cache: HashMap<&str, &str> = nodes
                .iter()
                .map(|n| (n.cache_node.as_str(), n.name.as_str()))
                .collect();
            let mut loc = DatasetLocality {
                total_bytes: doc["total_bytes"].as_u64().unwrap_or(0),
                hosts: HashMap::new(),
            };
            for row in doc["nodes"].as_array().into_iter().flatten() {
                let Some(host) = row["id"].as_str().and_then(|id| by_cache.get(id)) else {
                    continue;
                };
                loc.hosts.insert(
                    host.to_string(),
                    Residency {
                        memory_bytes: row["memory_bytes"].as_u64().unwrap_or(0),
                        disk_bytes: row["disk_bytes"].as_u64().unwrap_or(0),
                        origin_bps: row["bandwidth"]["origin_bps"].as_u64().unwrap_or(0),
                        peer_bps: row["bandwidth"]["peer_bps"].as_u64().unwrap_or(0),
                        available: row["available"].as_bool().unwrap_or(false),
                    },
                );
            }
            return Ok((doc["version"].as_u64().unwrap_or(version), loc));
        }
        Err(format!("cannot read locality of {dataset:?}: {last}"))
    }

    async fn place_pending(&self) {
        let (pending, hosts) = {
            let inner = self.lock();
            let pending: Vec<(Replica, DeploymentRecord)> = inner
                .replicas
                .values()
                .filter(|r| r.state == ReplicaState::Pending && !r.stop_requested)
                .filter_map(|r| {
                    inner
                        .deployments
                        .get(&r.deployment)
                        .map(|d| (r.clone(), d.clone()))
                })
                .collect();
            (pending, self.hosts(&inner))
        };
        if pending.is_empty() {
            return;
        }
        let infos: Vec<NodeInfo> = hosts.iter().map(|(_, i)| i.clone()).collect();
        let mut hosts: Vec<Host> = hosts.into_iter().map(|(h, _)| h).collect();
        for (r, d) in pending {
            let spec = &d.deployment.spec;
            let mut locality = HashMap::new();
            let mut mounts = Vec::new();
            let mut keys = Vec::new();
            let mut failed = None;
            for ds in &spec.datasets {
                match self.locality(&ds.name, ds.version, &infos).await {
                    Ok((version, loc)) => {
                        let key = format!("{}@{version}", ds.name);
                        locality.insert(key.clone(), loc);
                        keys.push(key);
                        mounts.push((ds.name.clone(), version, ds.mount_path.clone()));
                    }
                    Err(e) => failed = Some(e),
                }
            }
            if let Some(e) = failed {
                self.note(&r.id, e);
                continue;
            }
            let req = placement::Request {
                deployment: r.deployment.clone(),
                gpu_model: spec.gpu.model.clone(),
                gpus: spec.gpu.count,
                cpu: spec.cpu_millis,
                memory: d.deployment.memory_bytes(),
                datasets: keys,
                policy: match spec.locality.policy {
                    LocalityPolicy::Required => Policy::Required,
                    LocalityPolicy::Preferred => Policy::Preferred,
                },
                min_warm: spec.locality.min_warm_fraction,
                reuse: spec.reuse_container.then(|| r.reuse_key.clone()),
            };
            let spread = {
                let inner = self.lock();
                let mut s = Spread::default();
                for o in inner.replicas.values().filter(|o| {
                    o.deployment == r.deployment && o.state.active() && o.host.is_some()
                }) {
                    if let Some(h) = hosts.iter().find(|h| Some(&h.name) == o.host.as_ref()) {
                        s.add(h);
                    }
                }
                s
            };
            let decision = placement::place(&req, &hosts, &locality, &spread, &self.cfg.rates);
            let explain = explain_of(&decision);
            let Some(host) = decision.chosen.clone() else {
                let mut inner = self.lock();
                if let Some(x) = inner.replicas.get_mut(&r.id) {
                    x.explain = Some(explain);
                    x.message = decision.reason.clone();
                    let x = x.clone();
                    self.save_replica(&x);
                }
                continue;
            };
            let chosen = decision
                .candidates
                .iter()
                .find(|c| c.host == host)
                .expect("chosen is a candidate");
            let info = infos.iter().find(|i| i.name == host).expect("host known");
            // Take the capacity now so the next replica in this round sees it.
            if let Some(h) = hosts.iter_mut().find(|h| h.name == host) {
                h.gpus_free = h.gpus_free.saturating_sub(spec.gpu.count);
                h.cpu_free = h.cpu_free.saturating_sub(spec.cpu_millis);
                h.memory_free = h.memory_free.saturating_sub(d.deployment.memory_bytes());
            }
            let prewarm = if decision.start == Start::AfterPrewarm {
                match self.start_prewarm(info, &mounts).await {
                    Ok(id) => Some(id),
                    Err(e) => {
                        self.note(&r.id, format!("prewarm of {host} failed to start: {e}"));
                        continue;
                    }
                }
            } else {
                None
            };
            let mut inner = self.lock();
            let reused_from = chosen.estimate.reused.then(|| {
                inner
                    .replicas
                    .values()
                    .find(|o| {
                        o.host.as_deref() == Some(host.as_str())
                            && o.reuse_key == r.reuse_key
                            && o.reusable_until_ms.is_some_and(|t| t > now_ms())
                    })
                    .map(|o| o.id.clone())
            });
            if let Some(Some(old)) = &reused_from {
                if let Some(o) = inner.replicas.get_mut(old) {
                    o.reusable_until_ms = None;
                    let o = o.clone();
                    self.save_replica(&o);
                }
            }
            let Some(x) = inner.replicas.get_mut(&r.id) else {
                continue;
            };
            if x.state != ReplicaState::Pending || x.stop_requested {
                continue;
            }
            x.host = Some(host.clone());
            // Where clients reach the replica: its host's address (the
            // replica's own ports are its business).
            x.endpoint = info
                .agent_addr
                .rsplit_once(':')
                .map_or(info.agent_addr.clone(), |(h, _)| h.to_string());
            x.mounts = mounts;
            x.scheduled_ms = Some(now_ms());
            x.estimate_s = Some(chosen.estimate.total_s());
            x.explain = Some(explain);
            x.reused_from = reused_from.flatten();
            x.message = decision.reason.clone();
            x.prewarm_job = prewarm.clone();
            x.state = if prewarm.is_some() {
                ReplicaState::Warming
            } else {
                x.container_uuid = uuid::Uuid::new_v4().to_string();
                ReplicaState::Starting
            };
            let x = x.clone();
            self.save_replica(&x);
            let kind = if prewarm.is_some() {
                "warming"
            } else {
                "scheduled"
            };
            let msg = format!(
                "{} (estimated startup {:.1} s)",
                decision.reason,
                chosen.estimate.total_s()
            );
            self.event(&mut inner, kind, &x, msg);
        }
    }

    fn note(&self, id: &str, message: String) {
        let mut inner = self.lock();
        if let Some(x) = inner.replicas.get_mut(id) {
            if x.message != message {
                tracing::warn!(replica = %id, %message, "replica not placed");
                x.message = message;
                let x = x.clone();
                self.save_replica(&x);
            }
        }
    }

    /// Asks the host's cache node for a prewarm job of the replica's data.
    async fn start_prewarm(
        &self,
        info: &NodeInfo,
        mounts: &[(String, u64, String)],
    ) -> Result<String, String> {
        let ep = Endpoint::parse(&info.cache_api).map_err(|e| e.to_string())?;
        let mut c = Client::connect(&ep).await.map_err(|e| e.to_string())?;
        let mut ids = Vec::new();
        for (name, version, _) in mounts {
            let spec = v1::JobSpec {
                kind: v1::JobKind::Prewarm as i32,
                dataset: name.clone(),
                version: *version,
                nodes: vec![info.cache_node.clone()],
                ..Default::default()
            };
            match c
                .call(Req::CreateJob(v1::CreateJob {
                    spec: Some(spec),
                    all_nodes: false,
                }))
                .await
                .map_err(|e| e.to_string())?
            {
                Resp::Job(j) => ids.push(j.spec.map(|s| s.id).unwrap_or_default()),
                _ => return Err("unexpected answer from the cache node".into()),
            }
        }
        Ok(ids.join(","))
    }

    /// Starts warming replicas whose prewarm jobs are Complete.
    async fn finish_warming(&self) {
        let warming: Vec<(Replica, NodeInfo)> = {
            let inner = self.lock();
            inner
                .replicas
                .values()
                .filter(|r| r.state == ReplicaState::Warming)
                .filter_map(|r| {
                    let n = inner.nodes.get(r.host.as_deref()?)?;
                    Some((r.clone(), n.info.clone()))
                })
                .collect()
        };
        for (r, info) in warming {
            let Ok(ep) = Endpoint::parse(&info.cache_api) else {
                continue;
            };
            let Ok(mut c) = Client::connect(&ep).await else {
                continue;
            };
            let mut states = Vec::new();
            for id in r.prewarm_job.as_deref().unwrap_or_default().split(',') {
                match c.call(Req::Job(v1::JobRef { id: id.into() })).await {
                    Ok(Resp::Job(j)) => states.push(j.state),
                    _ => states.push("Unknown".into()),
                }
            }
            let done = states.iter().all(|s| s == "Complete");
            let failed = states.iter().any(|s| s == "Failed" || s == "Cancelled");
            if !done && !failed {
                continue;
            }
            let mut inner = self.lock();
            let Some(x) = inner.replicas.get_mut(&r.id) else {
                continue;
            };
            if x.state != ReplicaState::Warming {
                continue;
            }
            if done {
                x.state = ReplicaState::Starting;
                x.container_uuid = uuid::Uuid::new_v4().to_string();
                x.message = "data resident; starting".into();
            } else {
                x.state = ReplicaState::Pending;
                x.host = None;
                x.message = format!(
                    "prewarm {} ended {states:?}; placing again",
                    r.prewarm_job.unwrap_or_default()
                );
            }
            let x = x.clone();
            self.save_replica(&x);
            let kind = if done { "scheduled" } else { "warming" };
            self.event(&mut inner, kind, &x, x.message.clone());
        }
    }

    fn update_gauges(&self) {
        let inner = self.lock();
        let mut counts: HashMap<(String, String), i64> = HashMap::new();
        for d in inner.deployments.keys() {
            for s in ["Pending", "Warming", "Starting", "Running", "Ready"] {
                counts.insert((d.clone(), s.into()), 0);
            }
        }
        for r in inner.replicas.values().filter(|r| r.state.active()) {
            *counts
                .entry((r.deployment.clone(), format!("{:?}", r.state)))
                .or_default() += 1;
        }
        for ((d, s), n) in counts {
            self.replica_states
                .get_or_create(&vec![("deployment", d), ("state", s)])
                .set(n);
        }
    }

    /// An agent's heartbeat: record the node, take its reports, answer
    /// with what it must run.
    fn heartbeat(&self, hb: Heartbeat) -> HeartbeatReply {
        let now = now_ms();
        let mut inner = self.lock();
        let name = hb.node.name.clone();
        let rec = NodeRecord {
            info: hb.node,
            last_heartbeat_ms: now,
            lost: false,
        };
        if inner
            .nodes
            .get(&name)
            .is_none_or(|n| n.lost || n.info != rec.info)
        {
            self.persist.put(format!("n/{name}"), &rec);
        }
        inner.nodes.insert(name.clone(), rec);
        let reported: HashMap<&str, &ReplicaReport> =
            hb.replicas.iter().map(|r| (r.id.as_str(), r)).collect();
        let mine: Vec<String> = inner
            .replicas
            .values()
            .filter(|r| r.host.as_deref() == Some(name.as_str()) && r.state.assigned())
            .map(|r| r.id.clone())
            .collect();
        for id in mine {
            let r = inner.replicas.get(&id).expect("listed").clone();
            let mut x = r.clone();
            match reported.get(id.as_str()) {
                None if r.stop_requested => {
                    x.state = ReplicaState::Stopped;
                    x.finished_ms = Some(now);
                }
                None if r.state != ReplicaState::Starting => {
                    // The agent no longer runs it (it restarted): gone.
                    x.state = ReplicaState::Lost;
                    x.finished_ms = Some(now);
                    x.message = "the agent no longer runs it".into();
                }
                None => {}
                Some(rep) => match rep.state.as_str() {
                    "Running" if r.state == ReplicaState::Starting => {
                        x.state = ReplicaState::Running;
                        x.started_ms = Some(now);
                    }
                    "Ready" if r.state != ReplicaState::Ready => {
                        x.state = ReplicaState::Ready;
                        x.started_ms.get_or_insert(now);
                        x.ready_ms = Some(now);
                        if let (Some(est), Some(at)) = (r.estimate_s, r.scheduled_ms) {
                            self.estimate_error
                                .observe((now - at) as f64 / 1000.0 - est);
                        }
                    }
                    "Exited" => {
                        x.exit_code = rep.exit_code;
                        x.finished_ms = Some(now);
                        x.message = rep.message.clone();
                        x.state = if r.stop_requested {
                            ReplicaState::Stopped
                        } else if rep.exit_code == Some(0) {
                            ReplicaState::Succeeded
                        } else {
                            ReplicaState::Failed
                        };
                    }
                    _ => {}
                },
            }
            // A container that ended on its host joins the reuse pool.
            let reuse = inner
                .deployments
                .get(&r.deployment)
                .is_some_and(|d| d.deployment.spec.reuse_container);
            if reuse
                && matches!(
                    x.state,
                    ReplicaState::Stopped | ReplicaState::Succeeded | ReplicaState::Failed
                )
                && x.reusable_until_ms.is_none()
            {
                x.reusable_until_ms = Some(now + self.cfg.reuse_ttl.as_millis() as i64);
            }
            if x != r {
                self.save_replica(&x);
                let kind = match x.state {
                    ReplicaState::Running => "started",
                    ReplicaState::Ready => "ready",
                    ReplicaState::Lost => "lost",
                    ReplicaState::Stopped => "stopped",
                    _ => "exited",
                };
                let msg = match x.exit_code {
                    Some(c) => format!("exit code {c} {}", x.message),
                    None => x.message.clone(),
                };
                inner.replicas.insert(id, x.clone());
                if r.state == ReplicaState::Starting && x.state == ReplicaState::Ready {
                    // Started and ready in one report: both events, in order.
                    self.event(&mut inner, "started", &x, String::new());
                }
                self.event(&mut inner, kind, &x, msg.trim().to_string());
            }
        }
        let run = inner
            .replicas
            .values()
            .filter(|r| r.host.as_deref() == Some(name.as_str()))
            .filter(|r| r.state.assigned() && !r.stop_requested)
            .filter_map(|r| {
                let d = inner.deployments.get(&r.deployment)?;
                let mut env = d.deployment.spec.env.clone();
                env.insert("SHOAL_CONTAINER_UUID".into(), r.container_uuid.clone());
                env.insert("SHOAL_REPLICA".into(), r.id.clone());
                env.insert("SHOAL_DEPLOYMENT".into(), r.deployment.clone());
                let mut command = d.deployment.spec.command.clone();
                command.extend(d.deployment.spec.args.iter().cloned());
                Some(Assignment {
                    id: r.id.clone(),
                    deployment: r.deployment.clone(),
                    container_uuid: r.container_uuid.clone(),
                    command,
                    env,
                    mounts: r.mounts.clone(),
                    health: d.deployment.spec.health_check.clone(),
                    reused_from: r.reused_from.clone(),
                })
            })
            .collect();
        HeartbeatReply { run }
    }

    async fn apply(&self, text: &str) -> Result<DeploymentRecord, (StatusCode, String)> {
        let d = spec::parse(text).map_err(|e| bad(StatusCode::BAD_REQUEST, e))?;
        let infos: Vec<NodeInfo> = self.lock().nodes.values().map(|n| n.info.clone()).collect();
        if d.spec.gpu.count > 0 {
            let fits = infos.iter().any(|n| {
                n.gpus >= d.spec.gpu.count
                    && (d.spec.gpu.model.is_empty() || d.spec.gpu.model == n.gpu_model)
            });
            if !fits {
                return Err(bad(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "no registered host has {} GPU(s) of model {:?}",
                        d.spec.gpu.count,
                        if d.spec.gpu.model.is_empty() {
                            "any"
                        } else {
                            &d.spec.gpu.model
                        }
                    ),
                ));
            }
        }
        for ds in &d.spec.datasets {
            self.locality(&ds.name, ds.version, &infos)
                .await
                .map_err(|e| bad(StatusCode::BAD_REQUEST, e))?;
        }
        let mut inner = self.lock();
        let name = d.metadata.name.clone();
        let rec = match inner.deployments.get(&name) {
            Some(old) if old.deployment.kind != d.kind => {
                return Err(bad(
                    StatusCode::CONFLICT,
                    format!(
                        "deployment {name} is a {:?}; its kind cannot change",
                        old.deployment.kind
                    ),
                ))
            }
            Some(old) if old.deployment == d => old.clone(),
            Some(old) => DeploymentRecord {
                deployment: d,
                created_ms: old.created_ms,
                generation: old.generation + 1,
                phase: old.phase.clone(),
            },
            None => DeploymentRecord {
                deployment: d,
                created_ms: now_ms(),
                generation: 1,
                phase: "Running".into(),
            },
        };
        self.persist.put(format!("d/{name}"), &rec);
        inner.deployments.insert(name, rec.clone());
        Ok(rec)
    }
}

fn explain_of(d: &placement::Decision) -> Explain {
    Explain {
        chosen: d.chosen.clone(),
        start: format!("{:?}", d.start),
        reason: d.reason.clone(),
        candidates: d
            .candidates
            .iter()
            .map(|c| ExplainCandidate {
                host: c.host.clone(),
                filtered: c
                    .filtered
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                warm_fraction: c.warm_fraction,
                memory_s: c.estimate.memory_s,
                disk_s: c.estimate.disk_s,
                zone_peer_s: c.estimate.zone_peer_s,
                cluster_peer_s: c.estimate.cluster_peer_s,
                origin_s: c.estimate.origin_s,
                container_s: c.estimate.container_s,
                reused: c.estimate.reused,
                estimate_s: if c.filtered.is_some() {
                    0.0
                } else {
                    c.estimate.total_s()
                },
                spread_s: c.spread_s,
                score: if c.score.is_finite() { c.score } else { -1.0 },
            })
            .collect(),
    }
}

type S = State<Arc<Scheduler>>;

async fn apply(State(s): S, body: String) -> ApiResult {
    json(&s.apply(&body).await?)
}

async fn list_deployments(State(s): S) -> ApiResult {
    let inner = s.lock();
    let v: Vec<serde_json::Value> = inner
        .deployments
        .values()
        .map(|d| deployment_view(&inner, d))
        .collect();
    json(&v)
}

fn deployment_view(inner: &Inner, d: &DeploymentRecord) -> serde_json::Value {
    let name = &d.deployment.metadata.name;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for r in inner.replicas.values().filter(|r| &r.deployment == name) {
        *counts.entry(format!("{:?}", r.state)).or_default() += 1;
    }
    serde_json::json!({
        "name": name,
        "kind": d.deployment.kind,
        "replicas": d.deployment.spec.replicas,
        "ready": counts.get("Ready").copied().unwrap_or(0),
        "states": counts,
        "generation": d.generation,
        "phase": d.phase,
        "created_ms": d.created_ms,
        "spec": d.deployment,
    })
}

async fn get_deployment(State(s): S, UrlPath(name): UrlPath<String>) -> ApiResult {
    let inner = s.lock();
    let d = inner.deployments.get(&name).ok_or_else(|| {
        bad(
            StatusCode::NOT_FOUND,
            format!("deployment {name:?} not found"),
        )
    })?;
    json(&deployment_view(&inner, d))
}

async fn delete_deployment(State(s): S, UrlPath(name): UrlPath<String>) -> ApiResult {
    let mut inner = s.lock();
    if inner.deployments.remove(&name).is_none() {
        return Err(bad(
            StatusCode::NOT_FOUND,
            format!("deployment {name:?} not found"),
        ));
    }
    s.persist.delete(format!("d/{name}"));
    let ids: Vec<String> = inner
        .replicas
        .values()
        .filter(|r| r.deployment == name && r.state.active())
        .map(|r| r.id.clone())
        .collect();
    for id in ids {
        s.stop_locked(&mut inner, &id, "deployment deleted");
    }
    json(&serde_json::json!({"deleted": name}))
}

#[derive(Deserialize)]
struct ScaleBody {
    replicas: i64,
}

async fn scale(State(s): S, UrlPath(name): UrlPath<String>, Json(b): Json<ScaleBody>) -> ApiResult {
    if b.replicas < 0 {
        return Err(bad(
            StatusCode::BAD_REQUEST,
            format!("replicas must not be negative (got {})", b.replicas),
        ));
    }
    let mut inner = s.lock();
    let d = inner.deployments.get_mut(&name).ok_or_else(|| {
        bad(
            StatusCode::NOT_FOUND,
            format!("deployment {name:?} not found"),
        )
    })?;
    d.deployment.spec.replicas = b.replicas;
    d.generation += 1;
    let d = d.clone();
    s.persist.put(format!("d/{name}"), &d);
    json(&deployment_view(&inner, &d))
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    deployment: String,
}

async fn list_replicas(State(s): S, Query(q): Query<ListQuery>) -> ApiResult {
    let inner = s.lock();
    let v: Vec<&Replica> = inner
        .replicas
        .values()
        .filter(|r| q.deployment.is_empty() || r.deployment == q.deployment)
        .collect();
    json(&v)
}

async fn get_replica(State(s): S, UrlPath(id): UrlPath<String>) -> ApiResult {
    let inner = s.lock();
    let r = inner
        .replicas
        .get(&id)
        .ok_or_else(|| bad(StatusCode::NOT_FOUND, format!("replica {id:?} not found")))?;
    json(r)
}

#[derive(Deserialize)]
struct StopBody {
    #[serde(default)]
    decrease_replicas: bool,
}

async fn stop_replica(
    State(s): S,
    UrlPath(id): UrlPath<String>,
    Json(b): Json<StopBody>,
) -> ApiResult {
    let mut inner = s.lock();
    let r = inner
        .replicas
        .get(&id)
        .cloned()
        .ok_or_else(|| bad(StatusCode::NOT_FOUND, format!("replica {id:?} not found")))?;
    if !r.state.active() {
        return Err(bad(
            StatusCode::CONFLICT,
            format!("replica {id} is already {:?}", r.state),
        ));
    }
    if b.decrease_replicas {
        if let Some(d) = inner.deployments.get_mut(&r.deployment) {
            d.deployment.spec.replicas = (d.deployment.spec.replicas - 1).max(0);
            d.generation += 1;
            let d = d.clone();
            s.persist.put(format!("d/{}", r.deployment), &d);
        }
    }
    s.stop_locked(
        &mut inner,
        &id,
        if b.decrease_replicas {
            "stopped (replicas decreased)"
        } else {
            "stopped"
        },
    );
    json(&inner.replicas[&id])
}

async fn replica_logs(State(s): S, UrlPath(id): UrlPath<String>) -> ApiResult {
    let addr = {
        let inner = s.lock();
        let r = inner
            .replicas
            .get(&id)
            .ok_or_else(|| bad(StatusCode::NOT_FOUND, format!("replica {id:?} not found")))?;
        let host = r.host.clone().ok_or_else(|| {
            bad(
                StatusCode::CONFLICT,
                format!("replica {id} has not run yet"),
            )
        })?;
        inner
            .nodes
            .get(&host)
            .map(|n| n.info.agent_addr.clone())
            .ok_or_else(|| bad(StatusCode::NOT_FOUND, format!("host {host} unknown")))?
    };
    let url = format!("http://{addr}/v1/logs/{id}");
    let resp = s
        .http
        .get(&url)
        .send()
        .await
        .map_err(|e| bad(StatusCode::BAD_GATEWAY, format!("agent at {addr}: {e}")))?;
    let status = resp.status();
    let text = resp
        .text()
        .await
        .map_err(|e| bad(StatusCode::BAD_GATEWAY, e.to_string()))?;
    if !status.is_success() {
        return Err(bad(StatusCode::NOT_FOUND, text));
    }
    Ok(text.into_response())
}

async fn list_nodes(State(s): S) -> ApiResult {
    let inner = s.lock();
    let hosts = s.hosts(&inner);
    let v: Vec<serde_json::Value> = inner
        .nodes
        .values()
        .map(|n| {
            let h = hosts
                .iter()
                .find(|(h, _)| h.name == n.info.name)
                .map(|(h, _)| h);
            serde_json::json!({
                "name": n.info.name,
                "state": if n.lost { "Lost" } else { "Ready" },
                "blacklisted": inner.blacklist.contains_key(&n.info.name),
                "gpu_model": n.info.gpu_model,
                "gpus": n.info.gpus,
                "gpus_free": h.map_or(0, |h| h.gpus_free),
                "cpu_millis": n.info.cpu_millis,
                "memory_bytes": n.info.memory_bytes,
                "labels": n.info.labels,
                "cache_node": n.info.cache_node,
                "agent": n.info.agent_addr,
                "last_heartbeat_ms": n.last_heartbeat_ms,
            })
        })
        .collect();
    json(&v)
}

async fn list_blacklist(State(s): S) -> ApiResult {
    let inner = s.lock();
    let v: Vec<serde_json::Value> = inner
        .blacklist
        .iter()
        .map(|(h, at)| serde_json::json!({"host": h, "since_ms": at}))
        .collect();
    json(&v)
}

async fn add_blacklist(State(s): S, UrlPath(host): UrlPath<String>) -> ApiResult {
    let mut inner = s.lock();
    if !inner.nodes.contains_key(&host) {
        return Err(bad(
            StatusCode::NOT_FOUND,
            format!("host {host:?} is not registered"),
        ));
    }
    let at = now_ms();
    inner.blacklist.insert(host.clone(), at);
    s.persist.put(format!("b/{host}"), &(host.clone(), at));
    json(&serde_json::json!({"host": host, "since_ms": at}))
}

async fn rm_blacklist(State(s): S, UrlPath(host): UrlPath<String>) -> ApiResult {
    let mut inner = s.lock();
    if inner.blacklist.remove(&host).is_none() {
        return Err(bad(
            StatusCode::NOT_FOUND,
            format!("host {host:?} is not blacklisted"),
        ));
    }
    s.persist.delete(format!("b/{host}"));
    json(&serde_json::json!({"host": host}))
}

#[derive(Deserialize)]
struct EventsQuery {
    #[serde(default)]
    since: u64,
    /// Seconds to wait for a newer event (long poll); 0 answers at once.
    #[serde(default)]
    wait: u64,
}

async fn events(State(s): S, Query(q): Query<EventsQuery>) -> ApiResult {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(q.wait.min(60));
    loop {
        let changed = s.events_changed.notified();
        let v: Vec<Event> = s
            .lock()
            .events
            .iter()
            .filter(|e| e.seq > q.since)
            .cloned()
            .collect();
        if !v.is_empty() || tokio::time::Instant::now() >= deadline {
            return json(&v);
        }
        let _ = tokio::time::timeout_at(deadline, changed).await;
    }
}

async fn heartbeat(State(s): S, Json(hb): Json<Heartbeat>) -> ApiResult {
    json(&s.heartbeat(hb))
}

async fn metrics(State(s): S) -> impl IntoResponse {
    let mut registry = prometheus_client::registry::Registry::default();
    let reg = registry.sub_registry_with_prefix("shoal_scheduler");
    reg.register(
        "startup_estimate_error_seconds",
        "Measured time from scheduling to ready minus the placement estimate",
        s.estimate_error.clone(),
    );
    reg.register(
        "replicas",
        "Replicas per deployment and state",
        s.replica_states.clone(),
    );
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry).expect("String");
    out
}

/// Serves the API on `listener` and runs reconcile rounds until `cancel`.
pub async fn serve(
    s: Arc<Scheduler>,
    listener: tokio::net::TcpListener,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let app = s.router();
    let rounds = tokio::spawn(s.clone().run(cancel.clone()));
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await?;
    rounds.await?;
    tokio::task::spawn_blocking(move || s.persist.close()).await?;
    Ok(())
}

/// Where state lives by default.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/shoal/scheduler";
