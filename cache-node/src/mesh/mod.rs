//! The P2P mesh: cache nodes on different hosts become one cache.
//!
//! - Transport: QUIC (quinn) with mutual TLS against a cluster CA ([`tls`]).
//! - Membership: heartbeat gossip every round to a few peers and the seeds
//!   ([`membership`]); dataset specs and manifest versions ride along as
//!   digests and are pulled from a peer that has a newer version, so any
//!   node answers `dataset-ctl` and serves mounts, and views converge after
//!   a partition heals.
//! - Chunks: each chunk has an owner by capacity-weighted rendezvous
//!   hashing over live members ([`rendezvous`]). A node missing a chunk
//!   asks the owner, which fetches it from the origin once (its own misses
//!   share one flight) and serves it. The owner remembers who it served
//!   (they hold the chunk now); when all its serving slots are busy it
//!   redirects the asker to those holders with the hash it recorded, and
//!   the asker pulls from a holder in its own zone first, then the one it
//!   has the fewest requests in flight to, and checks the bytes against the
//!   owner's hash — so a fan-out to many targets is fed by the targets
//!   themselves, not N times by one owner. Bytes from a peer are verified with
//!   blake3 before use; a mismatch counts against the peer and the next
//!   node in rendezvous order is asked, and only when none can serve does
//!   the node go to the origin itself.
//!
//! A frozen peer (SIGSTOP, a stuck disk) answers nothing yet keeps its
//! connections open. It may cost a reader at most the failure detector's
//! delay: a chunk request to a peer is abandoned as soon as membership
//! declares that peer dead, and the next holder is asked. Gossip rounds
//! time out within one round so a frozen member cannot stall the
//! heartbeats that keep the others alive, and connections are set up per
//! address, so a slow handshake never blocks requests to other peers.
//!
//! The mesh sees its node only through [`MeshHost`] (as the store sees the
//! mesh only through `PeerSource`), so `mesh` does not depend on `node`.
//! Each round a node gossips its own facts — tier usage, resident bytes
//! per dataset version, measured bandwidth — and the jobs it knows with
//! their parts' progress; peers keep the newest of each.
//!
//! Every task (accept loop, gossip rounds, connection handlers, catalog
//! pulls) is owned by the mesh's [`Tasks`](crate::tasks::Tasks) and stops with its token.

pub mod membership;
pub mod rendezvous;
pub mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::BoxFuture;
use rand::seq::SliceRandom;
use shoal_proto::v1::{self, peer_request::Kind as PReq, peer_response::Kind as PResp};
use shoal_proto::{read_frame, write_frame};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::store::{unix_ms, FileRef, PeerSource};
use crate::tasks::Tasks;
use membership::{Membership, State};

/// Mesh settings.
#[derive(Debug, Clone)]
pub struct MeshConfig {
    /// UDP address the QUIC endpoint binds.
    pub listen: SocketAddr,
    /// Address other nodes use to reach this one (default: `listen`).
    pub advertise: String,
    /// Seed peers to join through.
    pub seeds: Vec<String>,
    /// Directory with `ca.pem`, `node.pem`, `node.key`.
    pub tls_dir: PathBuf,
    /// Gossip round interval.
    pub interval: Duration,
    /// A member silent this long is dead.
    pub dead_after: Duration,
    /// A member dead this long is forgotten (no longer listed).
    pub forget_after: Duration,
    /// Concurrent chunk requests served to peers (budget that keeps peer
    /// serving from starving local readers).
    pub serve_concurrency: usize,
}

/// What the mesh needs from its node: facts to gossip, catalog records,
/// chunks to serve, and jobs to replicate.
pub trait MeshHost: Send + Sync {
    fn name(&self) -> &str;
    /// Control API address, shown to operators.
    fn api_addr(&self) -> &str;
    fn labels(&self) -> &HashMap<String, String>;
    fn tier_usage(&self) -> Vec<v1::TierUsage>;
    /// Resident bytes per dataset version.
    fn residency(&self) -> Vec<v1::DatasetResidency>;
    fn bandwidth(&self) -> v1::Bandwidth;
    /// (name, latest version) of every dataset.
    fn dataset_digests(&self) -> Vec<v1::DatasetDigest>;
    fn export_dataset(&self, name: &str) -> Result<v1::DatasetExport, String>;
    fn import_dataset(&self, export: v1::DatasetExport) -> Result<(), String>;
    /// Deletes a dataset a peer deleted at `version` (or keeps its tombstone).
    fn apply_tombstone<'a>(
        &'a self,
        name: &'a str,
        version: u64,
    ) -> BoxFuture<'a, Result<(), String>>;
    /// The blake3 this node recorded for a chunk when it first fetched it.
    fn recorded_hash(&self, f: &v1::FetchChunk) -> Option<[u8; 32]>;
    /// A chunk for a peer, with the blake3 recorded for it (only if
    /// resident when `f.resident_only`).
    fn serve_chunk<'a>(
        &'a self,
        f: &'a v1::FetchChunk,
    ) -> BoxFuture<'a, Result<(Bytes, [u8; 32]), String>>;
    fn job_gossip(&self) -> (Vec<v1::JobSpec>, Vec<v1::JobPart>);
    fn absorb_jobs(&self, specs: Vec<v1::JobSpec>, parts: Vec<v1::JobPart>);
    fn metrics(&self) -> &Metrics;
}

/// Errors of the mesh.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("peer endpoint: {0}")]
    Io(#[from] std::io::Error),
    #[error("peer {peer}: {detail}")]
    Request { peer: String, detail: String },
}

/// The running mesh of one node.
pub struct Mesh {
    cfg: MeshConfig,
    endpoint: quinn::Endpoint,
    members: Mutex<Membership>,
    /// One slot per peer address; its async lock is held only while that
    /// address's connection is being (re)established.
    conns: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<quinn::Connection>>>>>,
    node: Weak<dyn MeshHost>,
    me: Weak<Mesh>,
    /// Owner's view: members that fetched a chunk from this node (and so
    /// hold it), for redirects when this node is busy.
    holders: Mutex<HashMap<ChunkName, Vec<String>>>,
    /// Chunk requests this node has in flight, per peer ("least loaded").
    inflight: Mutex<HashMap<String, usize>>,
    /// Wakes requests waiting for a serving slot when a holder is added.
    holders_changed: tokio::sync::Notify,
    /// Runs a gossip round now (a job was created, cancelled or finished).
    nudged: tokio::sync::Notify,
    serve_permits: Semaphore,
    /// Datasets being pulled from a peer: one pull per name at a time and
    /// at most [`MAX_PULLS`], however often (and however many names) peers
    /// gossip — a slow or hostile peer cannot pile up tasks.
    pulls: Mutex<std::collections::HashSet<String>>,
    tasks: Tasks,
}

/// Dataset pulls in flight at once; more wait for a later gossip round.
const MAX_PULLS: usize = 8;

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("listen", &self.cfg.listen)
            .finish()
    }
}

const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// Ends a dataset pull in `Mesh::pulls` (also when its task is dropped).
struct Pulling<'a> {
    mesh: &'a Mesh,
    name: &'a str,
}

impl Drop for Pulling<'_> {
    fn drop(&mut self) {
        self.mesh
            .pulls
            .lock()
            .expect("pulls lock")
            .remove(self.name);
    }
}

impl Mesh {
    /// Binds the endpoint and starts the accept loop and gossip rounds.
    pub fn start(
        cfg: MeshConfig,
        node: Weak<dyn MeshHost>,
        cancel: CancellationToken,
    ) -> Result<Arc<Self>, PeerError> {
        let (server, client) = tls::quic_configs(&cfg.tls_dir)?;
        let mut endpoint = quinn::Endpoint::server(server, cfg.listen)?;
        endpoint.set_default_client_config(client);
        let host = node.upgrade().ok_or_else(|| {
            PeerError::Io(std::io::Error::other("the node stopped before its mesh"))
        })?;
        let me = v1::Member {
            name: host.name().to_string(),
            peer_addr: cfg.advertise.clone(),
            api_addr: host.api_addr().to_string(),
            // Starts at wall-clock milliseconds so a restarted node's
            // heartbeat is newer than anything gossiped about its past life.
            heartbeat: unix_ms() as u64,
            labels: host.labels().clone(),
            tiers: host.tier_usage(),
            residency: host.residency(),
            bandwidth: Some(host.bandwidth()),
            updated_ms: unix_ms(),
            started_ms: unix_ms(),
        };
        drop(host);
        let mesh = Arc::new_cyclic(|weak| Self {
            members: Mutex::new(Membership::new(me, cfg.dead_after, cfg.forget_after)),
            serve_permits: Semaphore::new(cfg.serve_concurrency.max(1)),
            endpoint,
            cfg,
            conns: Mutex::new(HashMap::new()),
            node,
            me: weak.clone(),
            holders: Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
            holders_changed: tokio::sync::Notify::new(),
            nudged: tokio::sync::Notify::new(),
            pulls: Mutex::new(std::collections::HashSet::new()),
            tasks: Tasks::new(cancel),
        });
        let m = mesh.clone();
        mesh.spawn(async move { m.accept_loop().await });
        let m = mesh.clone();
        mesh.spawn(async move { m.gossip_loop().await });
        tracing::info!(listen = %mesh.cfg.listen, seeds = ?mesh.cfg.seeds, "mesh started");
        Ok(mesh)
    }

    /// Gossips now instead of at the next round, so news (a job created,
    /// cancelled or finished) spreads without waiting for the timer.
    pub fn nudge(&self) {
        self.nudged.notify_one();
    }

    /// Address peers use to reach this node.
    pub fn advertise(&self) -> &str {
        &self.cfg.advertise
    }

    fn spawn(&self, f: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(f);
    }

    /// Stops every task and closes the endpoint.
    pub async fn shutdown(&self) {
        self.tasks.shutdown().await;
        self.endpoint.close(0u32.into(), b"shutdown");
    }

    /// Every known member and its state.
    pub fn members(&self) -> Vec<(v1::Member, State)> {
        self.members
            .lock()
            .expect("members lock")
            .all(Instant::now())
    }

    async fn accept_loop(self: Arc<Self>) {
        while let Some(incoming) = self.endpoint.accept().await {
            let m = self.clone();
            self.spawn(async move {
                let conn = match incoming.await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "refused peer connection");
                        return;
                    }
                };
                while let Ok((send, recv)) = conn.accept_bi().await {
                    let m2 = m.clone();
                    m.spawn(async move { m2.serve_stream(send, recv).await });
                }
            });
        }
    }

    async fn serve_stream(&self, mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
        let req: v1::PeerRequest = match read_frame(&mut recv).await {
            Ok(Some(r)) => r,
            _ => return,
        };
        let resp = if req.protocol_version != shoal_proto::PROTOCOL_VERSION {
            PResp::Error(v1::Error {
                code: v1::ErrorCode::UnsupportedVersion as i32,
                message: format!(
                    "peer protocol version {} not supported",
                    req.protocol_version
                ),
            })
        } else {
            match self.handle(req.kind).await {
                Ok(r) => r,
                Err(e) => PResp::Error(v1::Error {
                    code: v1::ErrorCode::Internal as i32,
                    message: e,
                }),
            }
        };
        // One owned buffer handed to QUIC: no second copy into its send buffer.
        if let Ok(frame) = shoal_proto::encode_frame(&v1::PeerResponse::new(resp)) {
            let _ = send.write_chunk(frame).await;
        }
        let _ = send.finish();
        let _ = send.stopped().await;
    }

    async fn handle(&self, kind: Option<PReq>) -> Result<PResp, String> {
        let node = self.node.upgrade().ok_or("node is shutting down")?;
        match kind {
            Some(PReq::Gossip(g)) => {
                self.absorb(&node, g);
                Ok(PResp::Gossip(self.gossip_message(node.as_ref())))
            }
            Some(PReq::Fetch(f)) => self.serve_fetch(node.as_ref(), f).await,
            Some(PReq::Export(d)) => Ok(PResp::Dataset(node.export_dataset(&d.name)?)),
            None => Err("empty peer request".into()),
        }
    }

    fn gossip_message(&self, node: &dyn MeshHost) -> v1::Gossip {
        let now = Instant::now();
        let (jobs, parts) = node.job_gossip();
        let members = self.members.lock().expect("members lock");
        v1::Gossip {
            from: members.me().name.clone(),
            members: members.alive(now),
            datasets: node.dataset_digests(),
            jobs,
            parts,
        }
    }

    /// Merges a peer's gossip, pulls datasets it has newer versions of, and
    /// hands its jobs to the node.
    fn absorb(&self, node: &Arc<dyn MeshHost>, g: v1::Gossip) {
        node.absorb_jobs(g.jobs, g.parts);
        let peer_addr = g
            .members
            .iter()
            .find(|m| m.name == g.from)
            .map(|m| m.peer_addr.clone());
        let restarted = self
            .members
            .lock()
            .expect("members lock")
            .merge(g.members, Instant::now());
        for m in restarted {
            tracing::info!(peer = %m.name, "peer restarted; dropping its old connection");
            self.drop_connection(&m.peer_addr);
        }
        let Some(addr) = peer_addr else { return };
        let local: HashMap<String, (u64, bool)> = node
            .dataset_digests()
            .into_iter()
            .map(|d| (d.name, (d.version, d.deleted)))
            .collect();
        for d in g.datasets {
            let mine = local.get(&d.name).copied();
            if d.deleted {
                // A delete at version v removes versions up to v; a newer
                // version (a re-create, a refresh) or tombstone wins.
                let stale = mine.is_some_and(|(v, dead)| v > d.version || (dead && v == d.version));
                if !stale {
                    let (node, name) = (node.clone(), d.name.clone());
                    self.spawn(async move {
                        if let Err(e) = node.apply_tombstone(&name, d.version).await {
                            tracing::warn!(dataset = %name, error = %e, "applying a peer's delete failed");
                        }
                    });
                }
                continue;
            }
            if mine.is_some_and(|(v, _)| v >= d.version) {
                continue;
            }
            {
                let mut pulls = self.pulls.lock().expect("pulls lock");
                if pulls.len() >= MAX_PULLS || !pulls.insert(d.name.clone()) {
                    continue;
                }
            }
            let (node, addr, name) = (node.clone(), addr.clone(), d.name.clone());
            let me = self.self_arc();
            self.spawn(async move {
                let Some(me) = me else { return };
                let _pulling = Pulling {
                    mesh: &me,
                    name: &name,
                };
                match me.request(&addr, PReq::Export(v1::DatasetRef { name: name.clone() })).await {
                    Ok(PResp::Dataset(export)) => {
                        if let Err(e) = node.import_dataset(export) {
                            tracing::warn!(dataset = %name, error = %e, "importing dataset from peer failed");
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(dataset = %name, error = %e, "pulling dataset from peer failed"),
                }
            });
        }
    }

    fn self_arc(&self) -> Option<Arc<Mesh>> {
        self.me.upgrade()
    }

    async fn gossip_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.cfg.interval);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.nudged.notified() => {}
            }
            let Some(node) = self.node.upgrade() else {
                return;
            };
            let targets = {
                let (tiers, residency, bandwidth) =
                    (node.tier_usage(), node.residency(), node.bandwidth());
                let mut members = self.members.lock().expect("members lock");
                members.tick(Instant::now(), |me| {
                    me.tiers = tiers;
                    me.residency = residency;
                    me.bandwidth = Some(bandwidth);
                    me.updated_ms = unix_ms();
                });
                let me = members.me().name.clone();
                let mut addrs: Vec<String> = members
                    .alive(Instant::now())
                    .into_iter()
                    .filter(|m| m.name != me)
                    .map(|m| m.peer_addr)
                    .collect();
                addrs.shuffle(&mut rand::thread_rng());
                addrs.truncate(3);
                for s in &self.cfg.seeds {
                    if !addrs.contains(s) && *s != self.cfg.advertise {
                        addrs.push(s.clone());
                    }
                }
                addrs
            };
            let msg = self.gossip_message(node.as_ref());
            // A round waits at most two intervals for a target (slack for
            // a loaded host), still well inside the failure detector's
            // delay: an unresponsive target must not hold back the
            // heartbeats sent to the others.
            let round = (self.cfg.interval * 2).max(Duration::from_millis(200));
            let rounds = targets.into_iter().map(|addr| {
                let msg = msg.clone();
                let me = self.clone();
                let node = node.clone();
                async move {
                    match me.request_within(&addr, PReq::Gossip(msg), round).await {
                        Ok(PResp::Gossip(g)) => me.absorb(&node, g),
                        Ok(_) => {}
                        Err(e) => tracing::debug!(peer = %addr, error = %e, "gossip failed"),
                    }
                }
            });
            futures::future::join_all(rounds).await;
        }
    }

    async fn connection(&self, addr: &str) -> Result<quinn::Connection, PeerError> {
        let err = |detail: String| PeerError::Request {
            peer: addr.to_string(),
            detail,
        };
        let slot = self
            .conns
            .lock()
            .expect("conns lock")
            .entry(addr.to_string())
            .or_default()
            .clone();
        let mut slot = slot.lock().await;
        if let Some(c) = slot.as_ref() {
            if c.close_reason().is_none() {
                return Ok(c.clone());
            }
        }
        let sock: SocketAddr = tokio::net::lookup_host(addr)
            .await?
            .next()
            .ok_or_else(|| err("address does not resolve".into()))?;
        let connecting = self
            .endpoint
            .connect(sock, tls::SERVER_NAME)
            .map_err(|e| err(e.to_string()))?;
        let conn = tokio::time::timeout(Duration::from_secs(3), connecting)
            .await
            .map_err(|_| err("connect timed out".into()))?
            .map_err(|e| err(format!("handshake failed: {e}")))?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// One request on a new stream of the (cached) connection to `addr`.
    pub async fn request(&self, addr: &str, kind: PReq) -> Result<PResp, PeerError> {
        self.request_within(addr, kind, REQUEST_TIMEOUT).await
    }

    /// [`Mesh::request`] with its own time limit.
    async fn request_within(
        &self,
        addr: &str,
        kind: PReq,
        limit: Duration,
    ) -> Result<PResp, PeerError> {
        let err = |detail: String| PeerError::Request {
            peer: addr.to_string(),
            detail,
        };
        let exchange = async {
            let conn = self.connection(addr).await?;
            let (mut send, mut recv) = conn.open_bi().await.map_err(|e| err(e.to_string()))?;
            write_frame(&mut send, &v1::PeerRequest::new(kind))
                .await
                .map_err(|e| err(e.to_string()))?;
            let _ = send.finish();
            let resp: v1::PeerResponse = read_frame(&mut recv)
                .await
                .map_err(|e| err(e.to_string()))?
                .ok_or_else(|| err("stream closed".into()))?;
            match resp.kind {
                Some(PResp::Error(e)) => Err(err(e.message)),
                Some(k) => Ok(k),
                None => Err(err("empty response".into())),
            }
        };
        tokio::time::timeout(limit, exchange)
            .await
            .map_err(|_| err("request timed out".into()))?
    }

    /// Resolves once membership no longer counts `name` as alive, or
    /// shows it restarted (its connection, and what was asked on it, died
    /// with the old process; the new one never answers it).
    async fn until_gone(&self, name: &str) {
        let step = (self.cfg.interval / 4).max(Duration::from_millis(10));
        let incarnation = |m: &Self| {
            m.members
                .lock()
                .expect("members lock")
                .alive_incarnation(name, Instant::now())
        };
        let asked = incarnation(self);
        loop {
            tokio::time::sleep(step).await;
            let now = incarnation(self);
            if now.is_none() || now != asked {
                return;
            }
        }
    }

    /// Forgets the connection to a member that restarted: requests on it
    /// would wait for the idle timeout, as the new process never answers.
    fn drop_connection(&self, addr: &str) {
        let slot = self.conns.lock().expect("conns lock").remove(addr);
        if let Some(slot) = slot {
            if let Ok(conn) = slot.try_lock() {
                if let Some(c) = conn.as_ref() {
                    c.close(0u32.into(), b"peer restarted");
                }
            }
        }
    }
}

/// Holders remembered per chunk (the owner's view), and chunks tracked.
const MAX_HOLDERS: usize = 16;
const MAX_TRACKED_CHUNKS: usize = 1 << 20;

/// A chunk as peers name it.
type ChunkName = (String, u64, String, u32);

fn chunk_name(f: &v1::FetchChunk) -> ChunkName {
    (f.dataset.clone(), f.version, f.path.clone(), f.index)
}

/// Counts one in-flight request to a peer while alive.
struct InFlight<'a> {
    map: &'a Mutex<HashMap<String, usize>>,
    peer: String,
}

impl<'a> InFlight<'a> {
    fn new(map: &'a Mutex<HashMap<String, usize>>, peer: &str) -> Self {
        *map.lock()
            .expect("inflight lock")
            .entry(peer.to_string())
            .or_default() += 1;
        Self {
            map,
            peer: peer.to_string(),
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut m = self.map.lock().expect("inflight lock");
        if let Some(n) = m.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.peer);
            }
        }
    }
}

impl Mesh {
    /// The owner's side of a chunk request: serve it, or — when busy, asked
    /// with `may_redirect`, and other members already hold it — redirect
    /// the asker to them with the hash this node recorded.
    async fn serve_fetch(&self, node: &dyn MeshHost, f: v1::FetchChunk) -> Result<PResp, String> {
        let key = chunk_name(&f);
        // Wait for a serving slot; while waiting, a redirect becomes
        // possible as soon as another member holds the chunk.
        let permit = loop {
            let changed = self.holders_changed.notified();
            if let Ok(p) = self.serve_permits.try_acquire() {
                break p;
            }
            if f.may_redirect {
                if let Some(r) = self.redirect(node, &key, &f) {
                    return Ok(PResp::Redirect(r));
                }
            }
            tokio::select! {
                p = self.serve_permits.acquire() => break p.map_err(|e| e.to_string())?,
                () = changed => {}
            }
        };
        let (data, hash) = node.serve_chunk(&f).await?;
        drop(permit);
        if !f.from.is_empty() && !f.resident_only {
            let mut h = self.holders.lock().expect("holders lock");
            if h.len() >= MAX_TRACKED_CHUNKS && !h.contains_key(&key) {
                h.clear();
            }
            let list = h.entry(key).or_default();
            if !list.contains(&f.from) && list.len() < MAX_HOLDERS {
                list.push(f.from.clone());
                drop(h);
                self.holders_changed.notify_waiters();
            }
        }
        Ok(PResp::Chunk(v1::ChunkData {
            data,
            hash: Bytes::copy_from_slice(&hash),
        }))
    }

    /// A redirect to the members holding `key` (other than the asker), with
    /// the hash this node recorded; None if there are none or no hash.
    fn redirect(
        &self,
        node: &dyn MeshHost,
        key: &ChunkName,
        f: &v1::FetchChunk,
    ) -> Option<v1::Redirect> {
        let holders: Vec<String> = self
            .holders
            .lock()
            .expect("holders lock")
            .get(key)
            .map(|h| h.iter().filter(|n| **n != f.from).cloned().collect())
            .unwrap_or_default();
        if holders.is_empty() {
            return None;
        }
        let hash = node.recorded_hash(f)?;
        Some(v1::Redirect {
            hash: Bytes::copy_from_slice(&hash),
            holders,
        })
    }

    /// One chunk request to `name`, abandoned if membership declares it
    /// dead or restarted meanwhile (a frozen peer costs at most the
    /// detector's delay, a restarted one a gossip round).
    async fn ask(&self, name: &str, addr: &str, req: v1::FetchChunk) -> Result<PResp, PeerError> {
        let _count = InFlight::new(&self.inflight, name);
        tokio::select! {
            r = self.request(addr, PReq::Fetch(req)) => r,
            () = self.until_gone(name) => Err(PeerError::Request {
                peer: addr.to_string(),
                detail: "declared dead or restarted while serving a chunk".into(),
            }),
        }
    }

    /// Holders to try after a redirect: same zone first, then those this
    /// node has the fewest requests in flight to, each with its address.
    fn rank_holders(&self, holders: &[String]) -> Vec<(String, String)> {
        let members = self.members.lock().expect("members lock");
        let alive = members.alive(Instant::now());
        let zone = members.me().labels.get("zone").cloned();
        drop(members);
        let inflight = self.inflight.lock().expect("inflight lock");
        let mut v: Vec<(bool, usize, u64, String, String)> = holders
            .iter()
            .filter_map(|h| alive.iter().find(|m| &m.name == h))
            .map(|m| {
                (
                    m.labels.get("zone") != zone.as_ref() || zone.is_none(),
                    inflight.get(&m.name).copied().unwrap_or(0),
                    rand::random::<u64>(),
                    m.name.clone(),
                    m.peer_addr.clone(),
                )
            })
            .collect();
        v.sort();
        v.into_iter().map(|(_, _, _, n, a)| (n, a)).collect()
    }

    /// After a redirect: the chunk from the first holder whose bytes match
    /// the owner's recorded hash.
    async fn pull_from_holders(
        &self,
        m: &Metrics,
        req: &v1::FetchChunk,
        redirect: &v1::Redirect,
    ) -> Option<(Bytes, [u8; 32])> {
        m.peer_redirects.inc();
        for (name, addr) in self.rank_holders(&redirect.holders) {
            let mut r = req.clone();
            r.resident_only = true;
            r.may_redirect = false;
            match self.ask(&name, &addr, r).await {
                Ok(PResp::Chunk(c)) => {
                    let hash = *blake3::hash(&c.data).as_bytes();
                    if hash[..] == redirect.hash[..] {
                        m.peer_bytes.inc_by(c.data.len() as u64);
                        m.peer_holder_bytes.inc_by(c.data.len() as u64);
                        return Some((c.data, hash));
                    }
                    m.peer_corrupt.inc();
                    tracing::warn!(peer = %name, path = %req.path, idx = req.index, "chunk from a holder does not match the owner's hash; trying another");
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(peer = %name, error = %e, "holder could not serve chunk"),
            }
        }
        None
    }
}

#[async_trait]
impl PeerSource for Mesh {
    async fn fetch(&self, file: &FileRef, idx: u32) -> Option<(Bytes, [u8; 32])> {
        let locator = file.locator.as_ref()?;
        let node = self.node.upgrade()?;
        let (candidates, me) = {
            let members = self.members.lock().expect("members lock");
            let alive = members.alive(Instant::now());
            let weights: Vec<(String, String, f64)> = alive
                .iter()
                .map(|m| {
                    // Peers report their own quotas: a sum that saturates.
                    let cap = shoal_proto::units::sum_bytes(m.tiers.iter().map(|t| t.quota_bytes));
                    (
                        m.name.clone(),
                        m.peer_addr.clone(),
                        (cap.max(1) as f64) / 1e9,
                    )
                })
                .collect();
            let mut key = file.fv.0.to_vec();
            key.extend_from_slice(&idx.to_be_bytes());
            let named: Vec<(&str, f64)> =
                weights.iter().map(|(n, _, w)| (n.as_str(), *w)).collect();
            let order: Vec<String> = rendezvous::order(&key, &named)
                .into_iter()
                .map(String::from)
                .collect();
            let addr_of: HashMap<&str, &str> = weights
                .iter()
                .map(|(n, a, _)| (n.as_str(), a.as_str()))
                .collect();
            let candidates: Vec<(String, String)> = order
                .iter()
                .map(|n| (n.clone(), addr_of[n.as_str()].to_string()))
                .collect();
            (candidates, members.me().name.clone())
        };
        let m = node.metrics();
        for (name, addr) in candidates {
            if name == me {
                // We are the first live node in rendezvous order: fetch it ourselves.
                return None;
            }
            let req = v1::FetchChunk {
                dataset: locator.dataset.clone(),
                version: locator.version,
                path: file.object.path.clone(),
                index: idx,
                from: me.clone(),
                resident_only: false,
                may_redirect: true,
            };
            let mut answer = self.ask(&name, &addr, req.clone()).await;
            if let Ok(PResp::Redirect(r)) = &answer {
                if let Some(found) = self.pull_from_holders(m, &req, r).await {
                    return Some(found);
                }
                // No holder could serve it: wait for the owner.
                let mut again = req.clone();
                again.may_redirect = false;
                answer = self.ask(&name, &addr, again).await;
            }
            match answer {
                Ok(PResp::Chunk(c)) => {
                    let hash = *blake3::hash(&c.data).as_bytes();
                    if hash[..] == c.hash[..] {
                        m.peer_bytes.inc_by(c.data.len() as u64);
                        return Some((c.data, hash));
                    }
                    m.peer_corrupt.inc();
                    tracing::warn!(peer = %name, path = %file.object.path, idx, "chunk from peer failed blake3 verification; asking the next node");
                }
                Ok(_) => {}
                Err(e) => {
                    m.peer_errors.inc();
                    tracing::warn!(peer = %name, error = %e, "peer could not serve chunk; asking the next node");
                }
            }
        }
        None
    }

    fn may_hold(&self, file: &FileRef) -> bool {
        let Some(l) = file.locator.as_ref() else {
            return false;
        };
        self.members
            .lock()
            .expect("members lock")
            .peer_holds(&l.dataset, l.version, Instant::now())
    }
}
