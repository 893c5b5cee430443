//! Cluster jobs: prewarm, evict and unpin, with byte-accurate progress.
//!
//! A job is a replicated record (`JobSpec` in RocksDB under `j/`, the
//! highest revision wins) so it survives restarts and any node can show it.
//! Each target node runs its own *part* and is the only writer of that
//! part's progress (`JobPart` under `jp/`, newest wins); records travel
//! with gossip, so a job created on one node starts on its targets within a
//! gossip round, and cancelling it anywhere stops it everywhere.
//!
//! Progress is read from residency, not counted from requests: every
//! half second a running part sums the resident bytes of its selected file
//! versions per tier, and a part is Complete only when every selected byte
//! is resident in the tier the job asked for. A node that restarts during
//! a job finds its part unfinished and runs it again; chunks already
//! resident cost nothing, so that is a resume.
//!
//! The decisions (targets, quota check, merge rules, job state) live in
//! [`model`] without I/O; this module persists records and runs parts.
//! Every part is a task owned by [`Jobs`] and stops with its token.

pub mod model;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::StreamExt;
use prost::Message;
use rocksdb::WriteBatch;
use shoal_proto::v1;
use tokio_util::sync::CancellationToken;

use crate::index::{keys, FileVersionId, Index, IndexError};
use crate::store::{unix_ms, ChunkStore, FileRef, TierKind};
use crate::tasks::Tasks;
use model::{Candidate, Liveness, CANCELLED, COMPLETE, FAILED, RUNNING};

/// Chunks a part keeps in flight (spread over its files).
const PART_CONCURRENCY: usize = 16;
/// How often a running part refreshes its progress from residency.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);
/// Jobs gossiped: every unfinished one plus the most recent finished ones.
const GOSSIP_RECENT: usize = 32;
/// Passes over a part's missing chunks before it fails.
const PASSES: u32 = 3;

/// What jobs need from the node, behind a narrow trait so this module
/// does not depend on the node or the mesh.
pub trait JobHost: Send + Sync {
    /// The selected regular files of a job's dataset version.
    fn select_files<'a>(
        &'a self,
        spec: &'a v1::JobSpec,
    ) -> BoxFuture<'a, Result<Vec<FileRef>, String>>;
    /// Liveness of a member by name (None if unknown).
    fn liveness(&self, node: &str) -> Option<Liveness>;
    /// Every member as a job target candidate for a dataset version.
    fn candidates(&self, dataset: &str, version: u64) -> Vec<Candidate>;
    /// A job record or a part's state changed here: spread it now.
    fn job_changed(&self);
}

/// Errors of job requests.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("job {0:?} not found")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    DoesNotFit(String),
    #[error(transparent)]
    Index(#[from] IndexError),
}

#[derive(Default)]
struct State {
    specs: HashMap<String, v1::JobSpec>,
    parts: HashMap<String, HashMap<String, v1::JobPart>>,
    /// Parts running here, by job id.
    running: HashMap<String, CancellationToken>,
}

/// This node's view of every job, and the parts it runs.
pub struct Jobs {
    me: String,
    index: Arc<Index>,
    store: ChunkStore,
    host: std::sync::OnceLock<Weak<dyn JobHost>>,
    state: Mutex<State>,
    tasks: Tasks,
}

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jobs").field("me", &self.me).finish()
    }
}

fn decode<M: Message + Default>(key: &[u8], v: &[u8]) -> Result<M, IndexError> {
    M::decode(v).map_err(|e| IndexError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        detail: e.to_string(),
    })
}

impl Jobs {
    /// Loads every job record and re-applies this node's prewarm pins.
    pub fn open(index: Arc<Index>, store: ChunkStore, me: &str) -> Result<Self, IndexError> {
        let mut st = State::default();
        for (k, v) in index.scan(keys::JOB)? {
            let spec: v1::JobSpec = decode(&k, &v)?;
            st.specs.insert(spec.id.clone(), spec);
        }
        for (k, v) in index.scan(keys::JOB_PART)? {
            let part: v1::JobPart = decode(&k, &v)?;
            st.parts
                .entry(part.job.clone())
                .or_default()
                .insert(part.node.clone(), part);
        }
        let mut pins = 0usize;
        index.for_each(keys::PIN, |k, _| {
            if let Some(fv) = k
                .get(k.len().saturating_sub(16)..)
                .and_then(FileVersionId::from_slice)
            {
                store.pin(fv);
                pins += 1;
            }
            true
        })?;
        tracing::info!(jobs = st.specs.len(), pins, "jobs loaded");
        Ok(Self {
            me: me.to_string(),
            index,
            store,
            host: std::sync::OnceLock::new(),
            state: Mutex::new(st),
            tasks: Tasks::new(CancellationToken::new()),
        })
    }

    /// Connects the node and resumes this node's unfinished parts.
    pub fn start(self: &Arc<Self>, host: Weak<dyn JobHost>) {
        let _ = self.host.set(host);
        let mine: Vec<v1::JobSpec> = {
            let st = self.state.lock().expect("jobs lock");
            st.specs
                .values()
                .filter(|s| self.should_run(&st, s))
                .cloned()
                .collect()
        };
        for s in mine {
            tracing::info!(job = %s.id, "resuming this node's part of a job");
            self.run_part(s);
        }
        let me = self.clone();
        self.spawn(async move { me.supervise().await });
    }

    fn host(&self) -> Option<Arc<dyn JobHost>> {
        self.host.get().and_then(Weak::upgrade)
    }

    fn changed(&self) {
        if let Some(h) = self.host() {
            h.job_changed();
        }
    }

    fn spawn(&self, f: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(f);
    }

    /// Stops every part and the supervisor.
    pub async fn shutdown(&self) {
        self.tasks.shutdown().await;
    }

    fn should_run(&self, st: &State, s: &v1::JobSpec) -> bool {
        !s.cancelled
            && model::active_targets(s).contains(&self.me)
            && !st.running.contains_key(&s.id)
            && !st
                .parts
                .get(&s.id)
                .and_then(|p| p.get(&self.me))
                .is_some_and(|p| model::is_terminal(&p.state))
    }

    /// Creates a job: resolves targets, checks quotas, stores it and starts
    /// this node's part. Nothing is stored when any check fails.
    pub fn create(
        self: &Arc<Self>,
        mut spec: v1::JobSpec,
        targets: model::Targets,
        tiers_of_policy: &[usize],
    ) -> Result<v1::JobStatus, JobError> {
        let host = self
            .host()
            .ok_or_else(|| JobError::Invalid("node is shutting down".into()))?;
        let members = host.candidates(&spec.dataset, spec.version);
        spec.nodes = model::select(&targets, &members).map_err(JobError::Invalid)?;
        if spec.kind() == v1::JobKind::Prewarm {
            let whole = spec.paths.is_empty();
            model::check_fit(
                &spec.nodes,
                &members,
                spec.tier(),
                tiers_of_policy,
                spec.total_bytes,
                whole,
            )
            .map_err(JobError::DoesNotFit)?;
        }
        let kind = spec.kind().as_str_name().to_ascii_lowercase();
        spec.id = format!("{kind}-{}-{:06x}", spec.dataset, rand::random::<u32>() >> 8);
        spec.revision = 1;
        spec.created_unix = unix_ms() / 1000;
        spec.created_by = self.me.clone();
        self.index
            .put(&keys::job(&spec.id), &spec.encode_to_vec())?;
        tracing::info!(job = %spec.id, kind, dataset = %spec.dataset, version = spec.version, targets = ?spec.nodes, bytes = spec.total_bytes, "job created");
        let start = {
            let mut st = self.state.lock().expect("jobs lock");
            st.specs.insert(spec.id.clone(), spec.clone());
            self.should_run(&st, &spec)
        };
        if start {
            self.run_part(spec.clone());
        }
        self.changed();
        self.status(&spec.id)
    }

    /// Cancels a job everywhere (its record says so; parts stop on sight).
    pub fn cancel_job(&self, id: &str) -> Result<v1::JobStatus, JobError> {
        let spec = {
            let mut st = self.state.lock().expect("jobs lock");
            let s = st
                .specs
                .get_mut(id)
                .ok_or_else(|| JobError::NotFound(id.into()))?;
            if !s.cancelled {
                s.cancelled = true;
                s.revision += 1;
            }
            s.clone()
        };
        self.index.put(&keys::job(id), &spec.encode_to_vec())?;
        self.stop_part(id);
        self.changed();
        tracing::info!(job = %id, "job cancelled");
        self.status(id)
    }

    fn stop_part(&self, id: &str) {
        if let Some(t) = self.state.lock().expect("jobs lock").running.remove(id) {
            t.cancel();
        }
    }

    /// One job's status as this node sees it.
    pub fn status(&self, id: &str) -> Result<v1::JobStatus, JobError> {
        let host = self.host();
        let st = self.state.lock().expect("jobs lock");
        let spec = st
            .specs
            .get(id)
            .ok_or_else(|| JobError::NotFound(id.into()))?;
        Ok(self.aggregate(&st, spec, host.as_deref()))
    }

    fn aggregate(
        &self,
        st: &State,
        spec: &v1::JobSpec,
        host: Option<&dyn JobHost>,
    ) -> v1::JobStatus {
        let empty = HashMap::new();
        let parts = st.parts.get(&spec.id).unwrap_or(&empty);
        let live = |n: &str| host.and_then(|h| h.liveness(n));
        model::aggregate(spec, parts, &live, unix_ms())
    }

    /// Every job, newest first.
    pub fn list(&self) -> Vec<v1::JobStatus> {
        let host = self.host();
        let st = self.state.lock().expect("jobs lock");
        let mut v: Vec<_> = st
            .specs
            .values()
            .map(|s| self.aggregate(&st, s, host.as_deref()))
            .collect();
        v.sort_by_key(|j| {
            let s = j.spec.as_ref().expect("aggregate sets spec");
            (std::cmp::Reverse(s.created_unix), s.id.clone())
        });
        v
    }

    /// (dataset, version) of every unfinished job: versions that must stay.
    pub fn active_versions(&self) -> std::collections::HashSet<(String, u64)> {
        let host = self.host();
        let st = self.state.lock().expect("jobs lock");
        st.specs
            .values()
            .filter(|s| !model::is_terminal(&self.aggregate(&st, s, host.as_deref()).state))
            .map(|s| (s.dataset.clone(), s.version))
            .collect()
    }

    /// What this node gossips: unfinished and recent jobs, with their parts.
    pub fn gossip(&self) -> (Vec<v1::JobSpec>, Vec<v1::JobPart>) {
        let host = self.host();
        let st = self.state.lock().expect("jobs lock");
        let mut specs: Vec<&v1::JobSpec> = st.specs.values().collect();
        specs.sort_by_key(|s| std::cmp::Reverse(s.created_unix));
        let mut out = Vec::new();
        let mut finished = 0;
        for s in specs {
            let done = model::is_terminal(&self.aggregate(&st, s, host.as_deref()).state);
            if done {
                finished += 1;
                if finished > GOSSIP_RECENT {
                    continue;
                }
            }
            out.push(s.clone());
        }
        let parts = out
            .iter()
            .filter_map(|s| st.parts.get(&s.id))
            .flat_map(|p| p.values().cloned())
            .collect();
        (out, parts)
    }

    /// Merges job records and parts from a peer; starts or stops this
    /// node's parts accordingly.
    pub fn absorb(self: &Arc<Self>, specs: Vec<v1::JobSpec>, parts: Vec<v1::JobPart>) {
        let mut batch = WriteBatch::default();
        let mut start = Vec::new();
        let mut stop = Vec::new();
        {
            let mut st = self.state.lock().expect("jobs lock");
            for s in specs {
                if s.id.is_empty() || !model::newer_spec(st.specs.get(&s.id), &s) {
                    continue;
                }
                batch.put(keys::job(&s.id), s.encode_to_vec());
                if s.cancelled || !model::active_targets(&s).contains(&self.me) {
                    stop.push(s.id.clone());
                }
                st.specs.insert(s.id.clone(), s.clone());
                if self.should_run(&st, &s) {
                    start.push(s);
                }
            }
            for p in parts {
                // Our own part is written only by us.
                if p.node == self.me || !st.specs.contains_key(&p.job) {
                    continue;
                }
                let slot = st.parts.entry(p.job.clone()).or_default();
                if model::newer_part(slot.get(&p.node), &p) {
                    if model::is_terminal(&p.state) {
                        batch.put(keys::job_part(&p.job, &p.node), p.encode_to_vec());
                    }
                    slot.insert(p.node.clone(), p);
                }
            }
        }
        if let Err(e) = self.index.write(batch) {
            tracing::warn!(error = %e, "storing replicated jobs failed");
        }
        for id in stop {
            self.stop_part(&id);
        }
        for s in start {
            self.run_part(s);
        }
    }

    /// Forgets finished jobs past their retention (`model::expired`):
    /// their records and parts, here and in the index.
    fn forget_expired(&self) {
        let gone = model::expired(&self.list(), unix_ms());
        if gone.is_empty() {
            return;
        }
        let mut st = self.state.lock().expect("jobs lock");
        let mut batch = WriteBatch::default();
        for id in &gone {
            st.specs.remove(id);
            batch.delete(keys::job(id));
            for node in st.parts.remove(id).unwrap_or_default().into_keys() {
                batch.delete(keys::job_part(id, &node));
            }
        }
        drop(st);
        match self.index.write(batch) {
            Ok(()) => tracing::info!(
                jobs = gone.len(),
                "forgot finished jobs past their retention"
            ),
            Err(e) => tracing::warn!(error = %e, "forgetting finished jobs failed"),
        }
    }

    /// Replaces dead targets of `replicas` jobs this node created, and
    /// forgets finished jobs past their retention once a minute.
    async fn supervise(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut rounds = 0u64;
        loop {
            tick.tick().await;
            if rounds.is_multiple_of(60) {
                self.forget_expired();
            }
            rounds += 1;
            let Some(host) = self.host() else { return };
            let todo: Vec<(v1::JobSpec, HashMap<String, v1::JobPart>)> = {
                let st = self.state.lock().expect("jobs lock");
                st.specs
                    .values()
                    .filter(|s| s.created_by == self.me && s.replicas > 0 && !s.cancelled)
                    .map(|s| (s.clone(), st.parts.get(&s.id).cloned().unwrap_or_default()))
                    .collect()
            };
            for (mut spec, parts) in todo {
                let members = host.candidates(&spec.dataset, spec.version);
                let swaps = model::replacements(&spec, &parts, &members);
                if swaps.is_empty() {
                    continue;
                }
                for (dead, new) in &swaps {
                    tracing::warn!(job = %spec.id, dead = %dead, replacement = %new, "job target lost; picked another node");
                    spec.replaced.push(dead.clone());
                    spec.nodes.push(new.clone());
                }
                spec.revision += 1;
                self.absorb(vec![spec], Vec::new());
                self.changed();
            }
        }
    }

    /// Records this node's part; `persist` (a state change) also stores it
    /// and spreads it at once.
    fn set_part(&self, part: &v1::JobPart, persist: bool) {
        if persist {
            if let Err(e) = self.index.put(
                &keys::job_part(&part.job, &part.node),
                &part.encode_to_vec(),
            ) {
                tracing::warn!(job = %part.job, error = %e, "storing job progress failed");
            }
        }
        self.state
            .lock()
            .expect("jobs lock")
            .parts
            .entry(part.job.clone())
            .or_default()
            .insert(part.node.clone(), part.clone());
        if persist {
            self.changed();
        }
    }

    fn run_part(self: &Arc<Self>, spec: v1::JobSpec) {
        let token = self.tasks.token().child_token();
        self.state
            .lock()
            .expect("jobs lock")
            .running
            .insert(spec.id.clone(), token.clone());
        let me = self.clone();
        self.spawn(async move {
            let id = spec.id.clone();
            let mut part = v1::JobPart {
                job: id.clone(),
                node: me.me.clone(),
                state: RUNNING.into(),
                total_bytes: spec.total_bytes,
                started_unix_ms: unix_ms(),
                updated_ms: unix_ms() as u64,
                ..Default::default()
            };
            me.set_part(&part, true);
            tokio::select! {
                r = me.execute(&spec, &mut part) => {
                    match r {
                        Ok(()) => {}
                        Err(e) => {
                            part.state = FAILED.into();
                            part.message = e;
                        }
                    }
                }
                _ = token.cancelled() => {
                    part.state = CANCELLED.into();
                }
            }
            part.finished_unix_ms = unix_ms();
            part.updated_ms = (unix_ms() as u64).max(part.updated_ms + 1);
            part.rate_bps = 0;
            tracing::info!(job = %id, state = %part.state, done = part.done_bytes, total = part.total_bytes, failed_chunks = part.failed_chunks, "job part finished");
            me.set_part(&part, true);
            me.state.lock().expect("jobs lock").running.remove(&id);
        });
    }

    /// Runs this node's part; `part` ends Complete or Err(message).
    async fn execute(&self, spec: &v1::JobSpec, part: &mut v1::JobPart) -> Result<(), String> {
        let host = self.host().ok_or("node is shutting down")?;
        // Shared by every chunk task of the part, not copied into each.
        let files: Arc<[FileRef]> = host.select_files(spec).await?.into();
        drop(host);
        part.total_bytes = files.iter().map(|f| f.size).sum();
        match spec.kind() {
            v1::JobKind::Prewarm => self.prewarm(spec, &files, part).await,
            v1::JobKind::Evict => self.evict(spec, &files, part).await,
            v1::JobKind::Unpin => {
                self.unpin_dataset(&spec.dataset)?;
                part.done_bytes = part.total_bytes;
                part.state = COMPLETE.into();
                Ok(())
            }
        }
    }

    fn publish(
        &self,
        files: &[FileRef],
        tier: Option<TierKind>,
        part: &mut v1::JobPart,
        rate: &mut Rate,
    ) {
        // One pass under one lock; a chunk sits in one tier only, so the
        // bytes resident anywhere are the sum of the tiers.
        let t = self.store.resident_of(files);
        let done = tier.map_or(t[0] + t[1], |k| t[k as usize]);
        part.memory_bytes = t[0];
        part.disk_bytes = t[1];
        part.done_bytes = done;
        part.rate_bps = rate.update(Instant::now(), done);
        part.updated_ms = (unix_ms() as u64).max(part.updated_ms + 1);
        self.set_part(part, false);
    }

    async fn prewarm(
        &self,
        spec: &v1::JobSpec,
        files: &Arc<[FileRef]>,
        part: &mut v1::JobPart,
    ) -> Result<(), String> {
        let tier = match spec.tier() {
            v1::TierTarget::AnyTier => None,
            v1::TierTarget::Memory => Some(TierKind::Memory),
            v1::TierTarget::Disk => Some(TierKind::Disk),
        };
        if spec.pin {
            self.pin_files(&spec.dataset, files)
                .map_err(|e| e.to_string())?;
        }
        let base = self.store.transfer_counters();
        let mut rate = Rate::default();
        let mut last_error = String::new();
        for pass in 0..PASSES {
            // In file order on every target: targets that are also owners
            // then work in step, each chunk crossing the origin link once
            // and reaching the others right after (measured faster than
            // starting each target elsewhere in the selection). Items are
            // owned (indexes), as a closure over borrowed ones is not `Send`
            // enough for a spawned task.
            let chunks: Vec<(usize, u32)> = files
                .iter()
                .enumerate()
                .flat_map(|(n, f)| (0..ChunkStore::chunk_count(f)).map(move |i| (n, i)))
                .collect();
            let mut work = futures::stream::iter(chunks)
                .map(|(n, i)| {
                    let (store, files) = (self.store.clone(), files.clone());
                    async move { store.ensure(&files[n], i, tier).await }
                })
                .buffer_unordered(PART_CONCURRENCY);
            let mut tick = tokio::time::interval(PROGRESS_EVERY);
            let mut failed = 0u64;
            loop {
                tokio::select! {
                    r = work.next() => match r {
                        Some(Ok(())) => {}
                        Some(Err(e)) => {
                            failed += 1;
                            last_error = e.to_string();
                        }
                        None => break,
                    },
                    _ = tick.tick() => self.publish_transfers(files, tier, base, part, &mut rate),
                }
            }
            drop(work);
            part.failed_chunks = failed;
            self.publish_transfers(files, tier, base, part, &mut rate);
            if part.done_bytes == part.total_bytes {
                part.state = COMPLETE.into();
                return Ok(());
            }
            tracing::warn!(job = %spec.id, pass, missing = part.total_bytes - part.done_bytes, failed, "selection not fully resident; another pass");
        }
        Err(format!(
            "{} of {} bytes not resident after {PASSES} passes ({} chunks failed): {last_error}",
            part.total_bytes - part.done_bytes,
            part.total_bytes,
            part.failed_chunks
        ))
    }

    /// [`Jobs::publish`] with the origin and peer bytes received since
    /// `base` (node-wide counters: concurrent readers are included).
    fn publish_transfers(
        &self,
        files: &[FileRef],
        tier: Option<TierKind>,
        base: (u64, u64),
        part: &mut v1::JobPart,
        rate: &mut Rate,
    ) {
        let (o, p) = self.store.transfer_counters();
        part.origin_bytes = o - base.0;
        part.peer_bytes = p - base.1;
        self.publish(files, tier, part, rate);
    }

    async fn evict(
        &self,
        spec: &v1::JobSpec,
        files: &[FileRef],
        part: &mut v1::JobPart,
    ) -> Result<(), String> {
        self.unpin_dataset(&spec.dataset)?;
        let mut rate = Rate::default();
        for _ in 0..PASSES {
            for f in files {
                self.store.purge(f.fv).await;
            }
            self.publish(files, None, part, &mut rate);
            let left = part.done_bytes;
            if left == 0 {
                part.done_bytes = part.total_bytes;
                part.state = COMPLETE.into();
                return Ok(());
            }
            tokio::time::sleep(PROGRESS_EVERY).await;
        }
        Err(format!(
            "{} bytes still resident (open files hold them)",
            part.done_bytes
        ))
    }

    fn pin_files(&self, dataset: &str, files: &[FileRef]) -> Result<(), IndexError> {
        let mut batch = WriteBatch::default();
        let mut new = Vec::new();
        for f in files {
            let k = keys::pin(dataset, &f.fv);
            if self.index.get(&k)?.is_none() {
                batch.put(k, []);
                new.push(f.fv);
            }
        }
        self.index.write_durable(batch)?;
        for fv in new {
            self.store.pin(fv);
        }
        Ok(())
    }

    /// Removes every prewarm pin `dataset` holds on this node.
    pub fn unpin_dataset(&self, dataset: &str) -> Result<(), String> {
        let pins = self
            .index
            .scan(&keys::pin_prefix(dataset))
            .map_err(|e| e.to_string())?;
        let mut batch = WriteBatch::default();
        for (k, _) in &pins {
            batch.delete(k);
        }
        self.index.write_durable(batch).map_err(|e| e.to_string())?;
        for (k, _) in pins {
            if let Some(fv) = k
                .get(k.len().saturating_sub(16)..)
                .and_then(FileVersionId::from_slice)
            {
                self.store.unpin(&fv);
            }
        }
        Ok(())
    }
}

/// A part's recent progress rate: bytes over the last few seconds.
#[derive(Debug, Default)]
struct Rate {
    samples: std::collections::VecDeque<(Instant, u64)>,
}

impl Rate {
    const WINDOW: Duration = Duration::from_secs(3);

    fn update(&mut self, now: Instant, done: u64) -> u64 {
        self.samples.push_back((now, done));
        while self
            .samples
            .get(1)
            .is_some_and(|(t, _)| now.saturating_duration_since(*t) >= Self::WINDOW)
        {
            self.samples.pop_front();
        }
        let (t0, d0) = *self.samples.front().expect("just pushed");
        let dt = now.saturating_duration_since(t0).as_secs_f64();
        if dt <= 0.0 {
            return 0;
        }
        (done.saturating_sub(d0) as f64 / dt) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::Rate;
    use std::time::{Duration, Instant};

    #[test]
    fn rate_is_bytes_over_the_recent_window() {
        let mut r = Rate::default();
        let t0 = Instant::now();
        assert_eq!(r.update(t0, 0), 0);
        assert_eq!(r.update(t0 + Duration::from_secs(1), 100), 100);
        assert_eq!(r.update(t0 + Duration::from_secs(2), 300), 150);
        // The first sample leaves the 3 s window; baseline is the 1 s sample.
        assert_eq!(r.update(t0 + Duration::from_secs(4), 400), 100);
        // A stall drives the rate to zero.
        assert_eq!(r.update(t0 + Duration::from_secs(9), 400), 0);
    }
}
