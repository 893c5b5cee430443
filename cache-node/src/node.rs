//! The node service: one place that turns API requests into catalog,
//! origin, store and job operations, and maps every subsystem error to a
//! wire error code.
//!
//! Locality: every manifest version of every dataset is registered with
//! the store as a locality group when it is created, imported or loaded, so
//! resident bytes per dataset version and tier are kept current as chunks
//! arrive, move and leave; `list`, `get`, `locality` and gossip read those
//! counters instead of scanning manifests.
//!
//! The node is the host of the mesh ([`MeshHost`]) and of jobs
//! ([`JobHost`]): both see it only through those narrow traits.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::FutureExt;
use shoal_proto::v1::{self, request::Kind as Req, response::Kind as Resp};
use tokio::sync::Mutex;

use crate::catalog::manifest::{self, SkippedKey};
use crate::catalog::{self, Catalog, CatalogError, DatasetRecord, Spec};
use crate::durability::{self, VerifyMode};
use crate::index::{FileVersionId, Index, IndexError};
use crate::jobs::model::{self as job_model, Candidate, Liveness, TierRoom};
use crate::jobs::{JobError, JobHost, Jobs};
use crate::mesh::{membership::State, Mesh, MeshHost};
use crate::metrics::Metrics;
use crate::origin::{self, OriginError, OriginSettings, SharedOrigin};
use crate::store::{
    unix_ms, ChunkStore, FileRef, Locator, StoreConfig, StoreError, TierKind, TierPolicy,
};

/// Largest range one read request may ask for.
pub const MAX_READ: u64 = 64 << 20;
/// Symlink hops followed when resolving a path for reading.
const MAX_SYMLINK_HOPS: usize = 8;

/// Node settings (see `config.rs` for the file format and defaults).
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Directory of the RocksDB index.
    pub data_dir: PathBuf,
    /// Name shown by `dataset-ctl nodes`.
    pub name: String,
    /// Control API address, shown to operators.
    pub advertise: String,
    pub store: StoreConfig,
    /// Labels (zone, rack, GPU model...).
    pub labels: HashMap<String, String>,
    /// When chunks recovered at start are hashed again.
    pub verify_on_start: VerifyMode,
    /// Manifest versions kept per dataset whether used or not (the latest
    /// ones); older versions are dropped once unused for `version_grace`.
    pub keep_versions: usize,
    pub version_grace: Duration,
}

/// Errors surfaced by the API, one variant per subsystem.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Origin(#[from] OriginError),
    #[error(transparent)]
    Job(#[from] JobError),
    #[error("{0}")]
    BadRequest(String),
}

impl From<IndexError> for NodeError {
    fn from(e: IndexError) -> Self {
        NodeError::Catalog(e.into())
    }
}

fn origin_code(e: &OriginError) -> v1::ErrorCode {
    use v1::ErrorCode as C;
    match e {
        OriginError::Unavailable(_) | OriginError::ShortRead { .. } | OriginError::Io(_) => {
            C::OriginUnavailable
        }
        OriginError::Denied(_) => C::OriginDenied,
        OriginError::NotFound(_) => C::NotFound,
        OriginError::Changed { .. } => C::OriginChanged,
        OriginError::InvalidSource(_) => C::InvalidArgument,
    }
}

impl NodeError {
    /// The wire code of this error; every variant is named.
    pub fn code(&self) -> v1::ErrorCode {
        use v1::ErrorCode as C;
        match self {
            NodeError::Catalog(e) => match e {
                CatalogError::InvalidName(_) | CatalogError::InvalidSpec(_) => C::InvalidArgument,
                CatalogError::NotFound(_)
                | CatalogError::NoVersion { .. }
                | CatalogError::NoPath(_) => C::NotFound,
                CatalogError::AlreadyExists(_) => C::AlreadyExists,
                CatalogError::NotDirectory(_) => C::NotDirectory,
                CatalogError::IsDirectory(_) => C::IsDirectory,
                CatalogError::Index(_) => C::Internal,
            },
            NodeError::Store(e) => match e.root() {
                StoreError::Origin(o) => origin_code(o),
                StoreError::Index(_) => C::Internal,
                StoreError::Io(io) if crate::store::files::is_no_space(io) => C::NoSpace,
                StoreError::Io(_) => C::Internal,
                StoreError::Shared(_) => C::Internal,
            },
            NodeError::Origin(o) => origin_code(o),
            NodeError::Job(e) => match e {
                JobError::NotFound(_) => C::NotFound,
                JobError::Invalid(_) => C::InvalidArgument,
                JobError::DoesNotFit(_) => C::FailedPrecondition,
                JobError::Index(_) => C::Internal,
            },
            NodeError::BadRequest(_) => C::InvalidArgument,
        }
    }
}

/// Per-connection state: the handles a client opened. Dropping it (the
/// connection ended, or the client crashed) releases every hold.
#[derive(Debug)]
pub struct Session {
    store: ChunkStore,
    /// Open handles: the file version, and whether the handle holds it.
    handles: HashMap<u64, (FileVersionId, bool)>,
    next: u64,
}

impl Session {
    /// A handle holding `fv` against eviction.
    fn open(&mut self, fv: FileVersionId) -> u64 {
        self.store.hold(fv);
        self.next += 1;
        self.handles.insert(self.next, (fv, true));
        self.next
    }

    /// Keeps the handle but gives up its hold.
    fn unhold(&mut self, handle: u64) {
        if let Some((fv, held)) = self.handles.get_mut(&handle) {
            if std::mem::take(held) {
                self.store.unhold(fv);
            }
        }
    }

    fn close(&mut self, handle: u64) -> bool {
        match self.handles.remove(&handle) {
            Some((fv, held)) => {
                if held {
                    self.store.unhold(&fv);
                }
                true
            }
            None => false,
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        for (fv, held) in self.handles.values() {
            if *held {
                self.store.unhold(fv);
            }
        }
    }
}

/// A running node's state.
pub struct Node {
    cfg: NodeConfig,
    index: Arc<Index>,
    store: ChunkStore,
    metrics: Arc<Metrics>,
    origins: Mutex<HashMap<String, SharedOrigin>>,
    /// Serialises catalog changes (create/refresh/delete) so two operators
    /// racing on one name cannot interleave.
    catalog_lock: Mutex<()>,
    mesh: std::sync::OnceLock<Arc<Mesh>>,
    jobs: Arc<Jobs>,
    /// When each (dataset, version) was last resolved by a request (a
    /// mount's lookups, reads and keepalives): what keeps old versions
    /// alive. Versions not seen since start count as used at start.
    version_use: std::sync::Mutex<HashMap<(String, u64), Instant>>,
    started: Instant,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.cfg.name)
            .finish()
    }
}

impl Node {
    /// Opens the index and the store (running crash recovery).
    pub fn open(mut cfg: NodeConfig, metrics: Arc<Metrics>) -> Result<Arc<Self>, NodeError> {
        std::fs::create_dir_all(&cfg.data_dir).map_err(StoreError::from)?;
        let boot = durability::boot_id();
        let last = durability::begin(&cfg.data_dir, &boot).map_err(StoreError::from)?;
        if let Some(why) = durability::decide(cfg.verify_on_start, last.as_ref(), &boot) {
            tracing::warn!(
                reason = why,
                "recovered chunks will be verified before they are served"
            );
            cfg.store.verify_recovered = true;
        }
        let index = Arc::new(Index::open(&cfg.data_dir.join("index"))?);
        let store = ChunkStore::open(index.clone(), &cfg.store, metrics.clone())?;
        let jobs = Arc::new(Jobs::open(index.clone(), store.clone(), &cfg.name)?);
        let node = Arc::new(Self {
            cfg,
            index,
            store,
            metrics,
            origins: Mutex::new(HashMap::new()),
            catalog_lock: Mutex::new(()),
            version_use: std::sync::Mutex::new(HashMap::new()),
            started: Instant::now(),
            mesh: std::sync::OnceLock::new(),
            jobs,
        });
        for rec in node.catalog().list()? {
            for v in &rec.versions {
                node.register_version(&rec.spec.name, v.version)?;
            }
        }
        Ok(node)
    }

    /// Starts the job runner (resuming this node's unfinished parts). Call
    /// once the mesh, if any, is attached.
    pub fn start_jobs(self: &Arc<Self>) {
        let host: std::sync::Weak<dyn JobHost> = Arc::downgrade(self) as _;
        self.jobs.start(host);
    }

    /// Stops job parts and the job supervisor.
    pub async fn shutdown_jobs(&self) {
        self.jobs.shutdown().await;
    }

    /// Registers a manifest version as a locality group.
    fn register_version(&self, name: &str, version: u64) -> Result<(), NodeError> {
        let mut fvs = Vec::new();
        // A whole-manifest scan: off the async worker's hot path.
        tokio::task::block_in_place(|| {
            self.catalog().for_each_entry(name, version, |e| {
                if let Some(fv) = FileVersionId::from_slice(&e.file_version) {
                    fvs.push(fv);
                }
            })
        })?;
        self.store.add_group((name.to_string(), version), fvs);
        Ok(())
    }

    /// Resident bytes (memory, disk) of a dataset version on this node.
    fn resident(&self, name: &str, version: u64) -> [u64; 2] {
        self.store
            .group_bytes(&(name.to_string(), version))
            .unwrap_or_default()
    }

    /// Joins the mesh: node listings show every member, and (when
    /// `peer_fetch`) misses ask peers before the origin.
    pub fn set_mesh(&self, mesh: Arc<Mesh>, peer_fetch: bool) {
        if peer_fetch {
            self.store.set_peers(mesh.clone());
        }
        let _ = self.mesh.set(mesh);
    }

    pub fn mesh(&self) -> Option<Arc<Mesh>> {
        self.mesh.get().cloned()
    }

    /// Tier usage in wire form.
    pub fn tier_usage(&self) -> Vec<v1::TierUsage> {
        self.store
            .usage()
            .into_iter()
            .map(|u| v1::TierUsage {
                name: u.tier.name().into(),
                dir: u.dir.to_string_lossy().into_owned(),
                used_bytes: u.used,
                quota_bytes: u.quota,
                pinned_bytes: u.pinned,
                high_bytes: u.high,
            })
            .collect()
    }

    /// A dataset with every manifest version, for a peer.
    pub fn export_dataset(&self, name: &str) -> Result<v1::DatasetExport, NodeError> {
        let rec = self.catalog().get(name)?;
        let mut versions = Vec::new();
        for v in &rec.versions {
            let mut entries = Vec::new();
            self.catalog()
                .for_each_entry(name, v.version, |e| entries.push(e))?;
            versions.push(v1::ManifestVersion {
                version: v.version,
                entries,
            });
        }
        Ok(v1::DatasetExport {
            record_json: serde_json::to_vec(&rec).expect("record serialises").into(),
            versions,
        })
    }

    /// Stores a dataset received from a peer if it is newer than ours.
    pub fn import_dataset(&self, export: v1::DatasetExport) -> Result<(), NodeError> {
        let record: DatasetRecord = serde_json::from_slice(&export.record_json).map_err(|e| {
            NodeError::BadRequest(format!("peer sent a malformed dataset record: {e}"))
        })?;
        let versions: Vec<_> = export
            .versions
            .into_iter()
            .map(|v| (v.version, v.entries))
            .collect();
        let name = record.spec.name.clone();
        let all: Vec<u64> = record.versions.iter().map(|v| v.version).collect();
        if self.catalog().import(record, &versions)? {
            for v in all {
                self.register_version(&name, v)?;
            }
            tracing::info!(dataset = %name, "dataset replicated from a peer");
        }
        Ok(())
    }

    /// Serves a chunk to a peer from this node's store (fetching it from the
    /// origin if needed, never from another peer): (bytes, blake3).
    pub async fn serve_chunk(
        &self,
        f: &v1::FetchChunk,
    ) -> Result<(bytes::Bytes, [u8; 32]), NodeError> {
        let p = v1::PathRef {
            dataset: f.dataset.clone(),
            version: f.version,
            path: f.path.clone(),
        };
        let (mut file, _) = self.file_ref(Some(&p)).await?;
        file.locator = None;
        let data = if f.resident_only {
            self.store
                .read_resident(&file, f.index)
                .await?
                .ok_or_else(|| NodeError::BadRequest("chunk is not resident here".into()))?
        } else {
            let start = u64::from(f.index) * file.chunk_size;
            self.store.read(&file, start, file.chunk_size).await?
        };
        // The hash recorded when the chunk was verified; only bytes that were
        // served without being cached (no room) need hashing here.
        let hash = match self.store.chunk_hash(file.fv, f.index)? {
            Some(h) => h,
            None => *blake3::hash(&data).as_bytes(),
        };
        Ok((data, hash))
    }

    /// State for one client connection.
    pub fn session(&self) -> Session {
        Session {
            store: self.store.clone(),
            handles: HashMap::new(),
            next: 0,
        }
    }

    pub fn store(&self) -> &ChunkStore {
        &self.store
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    fn catalog(&self) -> Catalog<'_> {
        Catalog::new(&self.index)
    }

    /// Answers one request. Never panics on bad input; errors become
    /// `Response::Error` with a code and one clear line.
    pub async fn handle(&self, req: v1::Request, session: &mut Session) -> v1::Response {
        if req.protocol_version != shoal_proto::PROTOCOL_VERSION {
            return v1::Response::error(
                v1::ErrorCode::UnsupportedVersion,
                format!(
                    "protocol version {} is not supported by this node (speaks {})",
                    req.protocol_version,
                    shoal_proto::PROTOCOL_VERSION
                ),
            );
        }
        let Some(kind) = req.kind else {
            return v1::Response::error(v1::ErrorCode::InvalidArgument, "empty request");
        };
        let op = match &kind {
            Req::Create(_) => "create",
            Req::Get(_) => "get",
            Req::List(_) => "list",
            Req::Delete(_) => "delete",
            Req::Refresh(_) => "refresh",
            Req::Stat(_) => "stat",
            Req::ListDir(_) => "list_dir",
            Req::Read(_) => "read",
            Req::Backing(_) => "backing",
            Req::Nodes(_) => "nodes",
            Req::Open(_) => "open",
            Req::Close(_) => "close",
            Req::Warm(_) => "warm",
            Req::CreateJob(_) => "create_job",
            Req::Jobs(_) => "jobs",
            Req::Job(_) => "job",
            Req::CancelJob(_) => "cancel_job",
            Req::Locality(_) => "locality",
        };
        self.metrics
            .api_requests
            .get_or_create(&vec![("op", op)])
            .inc();
        match self.dispatch(kind, session).await {
            Ok(r) => v1::Response::new(r),
            Err(e) => {
                tracing::debug!(op, error = %e, "request failed");
                let line = e
                    .to_string()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ");
                v1::Response::error(e.code(), line)
            }
        }
    }

    async fn dispatch(&self, kind: Req, session: &mut Session) -> Result<Resp, NodeError> {
        Ok(match kind {
            Req::Create(c) => {
                let spec = c
                    .spec
                    .ok_or_else(|| NodeError::BadRequest("create needs a spec".into()))?;
                Resp::Dataset(self.create(&spec).await?)
            }
            Req::Get(r) => Resp::Dataset(self.status(&self.catalog().get(&r.name)?)?),
            Req::List(_) => {
                let items = self
                    .catalog()
                    .list()?
                    .iter()
                    .map(|r| self.status(r))
                    .collect::<Result<_, _>>()?;
                Resp::Datasets(v1::DatasetList { items })
            }
            Req::Delete(r) => {
                self.delete(&r.name).await?;
                Resp::Deleted(v1::Deleted { name: r.name })
            }
            Req::Refresh(r) => Resp::Dataset(self.refresh(&r.name).await?),
            Req::Stat(p) => {
                let (rec, v) = self.version(&p)?;
                Resp::Entry(self.catalog().stat(&rec.spec.name, v, &p.path)?)
            }
            Req::ListDir(p) => {
                let (rec, v) = self.version(&p)?;
                Resp::Dir(v1::DirListing {
                    version: v,
                    entries: self.catalog().list_dir(&rec.spec.name, v, &p.path)?,
                })
            }
            Req::Read(r) => {
                let (file, version) = self.file_ref(r.file.as_ref()).await?;
                let len = r.length.min(MAX_READ);
                let data = if r.direct {
                    self.store.read_direct(&file, r.offset, len).await?
                } else {
                    self.store.read(&file, r.offset, len).await?
                };
                Resp::Data(v1::ReadData { version, data })
            }
            Req::Backing(r) => {
                let (file, version) = self.file_ref(r.file.as_ref()).await?;
                Resp::Backing(self.backing(&file, version, r.offset, r.length))
            }
            Req::Open(p) => {
                let (file, version) = self.file_ref(Some(&p)).await?;
                // Stat first: a failed open must not leave a hold behind.
                let entry = self
                    .catalog()
                    .stat(&p.dataset, version, &file.object.path)?;
                // Only a file whole in one tier is held open (its tier file
                // may be read directly, by the kernel too); holding others
                // would pin every chunk they fetch, so opening a file larger
                // than the cache would pin the whole cache. Their reads go
                // through the node, which holds each chunk while it copies.
                let handle = session.open(file.fv);
                let backing = self.backing(&file, version, 0, file.size);
                if !backing.complete {
                    session.unhold(handle);
                }
                Resp::Opened(v1::Opened {
                    handle,
                    version,
                    entry: Some(entry),
                    backing: Some(backing),
                })
            }
            Req::Close(h) => {
                if !session.close(h.id) {
                    return Err(NodeError::BadRequest(format!("no open handle {}", h.id)));
                }
                Resp::Closed(h)
            }
            Req::Warm(r) => {
                let (file, version) = self.file_ref(r.file.as_ref()).await?;
                self.store.warm(&file, r.offset, r.length).await?;
                Resp::Warmed(v1::Warmed {
                    version,
                    resident_bytes: self.store.resident_bytes(&file.fv),
                })
            }
            Req::CreateJob(c) => Resp::Job(self.create_job(c).await?),
            Req::Jobs(_) => Resp::Jobs(v1::JobList {
                items: self.job_list(),
            }),
            Req::Job(j) => Resp::Job(self.job(&j.id)?),
            Req::CancelJob(j) => Resp::Job(self.jobs.cancel_job(&j.id)?),
            Req::Locality(l) => Resp::Locality(self.locality(&l.dataset, l.version)?),
            Req::Nodes(_) => Resp::Nodes(v1::NodeList {
                items: match self.mesh() {
                    Some(mesh) => mesh
                        .members()
                        .into_iter()
                        .map(|(m, state)| v1::NodeStatus {
                            name: m.name,
                            address: m.api_addr,
                            state: state.name().into(),
                            tiers: m.tiers,
                            labels: m.labels,
                        })
                        .collect(),
                    None => vec![self.node_status()],
                },
            }),
        })
    }

    fn backing(&self, file: &FileRef, version: u64, offset: u64, len: u64) -> v1::BackingLocation {
        match self.store.backing(file, offset, len) {
            Some(b) => v1::BackingLocation {
                version,
                path: b.path.to_string_lossy().into_owned(),
                tier: b.tier.name().to_string(),
                complete: b.complete,
                offset,
                length: len.min(file.size.saturating_sub(offset)),
            },
            None => v1::BackingLocation {
                version,
                ..Default::default()
            },
        }
    }

    fn version(&self, p: &v1::PathRef) -> Result<(DatasetRecord, u64), NodeError> {
        let rec = self.catalog().get(&p.dataset)?;
        let v = rec.version(p.version)?.version;
        self.version_use
            .lock()
            .expect("version use lock")
            .insert((p.dataset.clone(), v), Instant::now());
        Ok((rec, v))
    }

    /// Drops manifest versions nobody uses: all but the latest
    /// `keep_versions` of each dataset, unless a request resolved them
    /// within `version_grace` (a mount pinned to one keeps it alive with
    /// its keepalives) or an unfinished job refers to them. Chunks no
    /// remaining version of any dataset refers to are released. Returns
    /// the number of versions dropped.
    pub async fn collect_versions(&self) -> Result<usize, NodeError> {
        let _guard = self.catalog_lock.lock().await;
        let now = Instant::now();
        let jobs = self.jobs.active_versions();
        let mut dropped = 0;
        for rec in self.catalog().list()? {
            let name = rec.spec.name.clone();
            let n = rec.versions.len();
            if n <= self.cfg.keep_versions.max(1) {
                continue;
            }
            let old: Vec<u64> = {
                let used = self.version_use.lock().expect("version use lock");
                rec.versions[..n - self.cfg.keep_versions.max(1)]
                    .iter()
                    .map(|v| v.version)
                    .filter(|v| {
                        let last = used
                            .get(&(name.clone(), *v))
                            .copied()
                            .unwrap_or(self.started);
                        now.saturating_duration_since(last) >= self.cfg.version_grace
                            && !jobs.contains(&(name.clone(), *v))
                    })
                    .collect()
            };
            if old.is_empty() {
                continue;
            }
            let mut theirs = std::collections::HashSet::new();
            tokio::task::block_in_place(|| {
                for v in &old {
                    self.catalog().for_each_entry(&name, *v, |e| {
                        if let Some(fv) = FileVersionId::from_slice(&e.file_version) {
                            theirs.insert(fv);
                        }
                    })?;
                }
                self.catalog().drop_versions(&name, &old)
            })?;
            for v in &old {
                self.store.remove_group(&(name.clone(), *v));
                self.version_use
                    .lock()
                    .expect("version use lock")
                    .remove(&(name.clone(), *v));
            }
            let still =
                tokio::task::block_in_place(|| self.catalog().referenced_file_versions(""))?;
            for fv in theirs.difference(&still) {
                self.store.purge(*fv).await;
            }
            tracing::info!(dataset = %name, versions = ?old, "dropped unused manifest versions");
            dropped += old.len();
        }
        self.metrics.versions_dropped.inc_by(dropped as u64);
        self.metrics.version_gc_runs.inc();
        Ok(dropped)
    }

    async fn origin(&self, spec: &Spec) -> Result<SharedOrigin, NodeError> {
        let mut map = self.origins.lock().await;
        if let Some(o) = map.get(&spec.name) {
            return Ok(o.clone());
        }
        let o = connect(spec).await?;
        map.insert(spec.name.clone(), o.clone());
        Ok(o)
    }

    /// Resolves a path to a regular file of a manifest version, following
    /// symlinks that stay inside the dataset.
    async fn file_ref(&self, p: Option<&v1::PathRef>) -> Result<(FileRef, u64), NodeError> {
        let p = p.ok_or_else(|| NodeError::BadRequest("read needs a file".into()))?;
        let (rec, version) = self.version(p)?;
        let catalog = self.catalog();
        let mut path = catalog::clean_path(&p.path)?;
        let mut entry = catalog.stat(&rec.spec.name, version, &path)?;
        for _ in 0..MAX_SYMLINK_HOPS {
            if entry.kind() != v1::FileKind::Symlink {
                break;
            }
            let (parent, _) = crate::index::keys::split_path(&path);
            let target = if entry.symlink_target.starts_with('/') {
                return Err(CatalogError::NoPath(format!(
                    "/{path} -> {} (points outside the dataset)",
                    entry.symlink_target
                ))
                .into());
            } else {
                normalise_join(parent, &entry.symlink_target).ok_or_else(|| {
                    CatalogError::NoPath(format!("/{path} -> {}", entry.symlink_target))
                })?
            };
            path = target;
            entry = catalog.stat(&rec.spec.name, version, &path)?;
        }
        match entry.kind() {
            v1::FileKind::File => {}
            v1::FileKind::Directory => {
                return Err(CatalogError::IsDirectory(format!("/{path}")).into())
            }
            v1::FileKind::Symlink => {
                return Err(CatalogError::NoPath(format!(
                    "/{path}: too many levels of symbolic links"
                ))
                .into())
            }
        }
        let fv =
            FileVersionId::from_slice(&entry.file_version).ok_or_else(|| IndexError::Corrupt {
                key: format!("manifest entry /{path}"),
                detail: "no file version id".into(),
            })?;
        let origin = self.origin(&rec.spec).await?;
        Ok((
            FileRef {
                fv,
                size: entry.size,
                chunk_size: entry.chunk_size,
                object: manifest::object_of(&entry),
                origin,
                placement: rec.spec.placement(),
                locator: Some(Locator {
                    dataset: rec.spec.name.clone(),
                    version,
                }),
            },
            version,
        ))
    }

    async fn list_source(
        &self,
        spec: &Spec,
    ) -> Result<(Vec<v1::FileEntry>, Vec<SkippedKey>), NodeError> {
        let origin = connect(spec).await?;
        let objects = origin.list().await?;
        if !objects
            .iter()
            .any(|o| o.kind != origin::ObjectKind::Directory)
        {
            return Err(
                OriginError::NotFound(format!("{} lists no files", origin.describe())).into(),
            );
        }
        let (entries, skipped) = manifest::build(spec, objects);
        if let Some(first) = skipped.first() {
            tracing::warn!(dataset = %spec.name, count = skipped.len(), first = ?first.key, reason = %first.reason, "skipped origin keys that no path can show (see `dataset-ctl get`)");
        }
        self.origins.lock().await.insert(spec.name.clone(), origin);
        Ok((entries, skipped))
    }

    async fn create(&self, wire: &v1::DatasetSpec) -> Result<v1::DatasetStatus, NodeError> {
        let spec = Spec::from_wire(wire)?;
        let _guard = self.catalog_lock.lock().await;
        if self.catalog().exists(&spec.name)? {
            return Err(CatalogError::AlreadyExists(spec.name).into());
        }
        let (entries, skipped) = self.list_source(&spec).await?;
        let record = DatasetRecord {
            spec,
            created_unix: catalog::now_unix(),
            versions: Vec::new(),
        };
        let record = self.catalog().commit_version(record, &entries, &skipped)?;
        self.register_version(&record.spec.name, record.latest().version)?;
        tracing::info!(dataset = %record.spec.name, source = %record.spec.source, files = record.latest().files, bytes = record.latest().total_bytes, "dataset created");
        self.status(&record)
    }

    async fn refresh(&self, name: &str) -> Result<v1::DatasetStatus, NodeError> {
        let _guard = self.catalog_lock.lock().await;
        let record = self.catalog().get(name)?;
        let (entries, skipped) = self.list_source(&record.spec).await?;
        let latest = record.latest().version;
        let mut current = Vec::new();
        self.catalog()
            .for_each_entry(name, latest, |e| current.push(e))?;
        // The index orders entries by (parent, name), the builder by path.
        current.sort_by(|a, b| a.path.cmp(&b.path));
        if current == entries {
            tracing::info!(dataset = %name, version = latest, "refresh: source unchanged");
            return self.status(&record);
        }
        let changed = entries.iter().filter(|e| !current.contains(e)).count()
            + current.iter().filter(|e| !entries.contains(e)).count();
        let example = entries
            .iter()
            .find(|e| !current.contains(e))
            .map(|e| e.path.clone());
        let record = self.catalog().commit_version(record, &entries, &skipped)?;
        self.register_version(name, record.latest().version)?;
        tracing::info!(dataset = %name, version = record.latest().version, changed, example = ?example, old = current.len(), new = entries.len(), "refresh: new manifest version");
        self.status(&record)
    }

    async fn delete(&self, name: &str) -> Result<(), NodeError> {
        let _guard = self.catalog_lock.lock().await;
        self.delete_locked(name, 0).await?;
        if let Some(mesh) = self.mesh() {
            mesh.nudge();
        }
        Ok(())
    }

    /// Applies a peer's tombstone: deletes the dataset if ours is not newer
    /// than `version`, or keeps the tombstone if we never had it.
    pub async fn apply_tombstone(&self, name: &str, version: u64) -> Result<(), NodeError> {
        let _guard = self.catalog_lock.lock().await;
        match self.catalog().get(name) {
            Ok(rec) if rec.latest().version <= version => {
                self.delete_locked(name, version).await?;
                tracing::info!(dataset = %name, version, "dataset deleted on a peer; deleted here too");
            }
            Ok(_) => {}
            Err(CatalogError::NotFound(_)) => {
                self.catalog().bury(name, version)?;
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// Deletes a dataset (catalog lock held): its manifests, a tombstone
    /// at `at_least` or its latest version, its locality groups, and the
    /// chunks no other dataset refers to.
    async fn delete_locked(&self, name: &str, at_least: u64) -> Result<(), NodeError> {
        let record = self.catalog().get(name)?;
        let mut mine = std::collections::HashSet::new();
        for v in &record.versions {
            self.catalog().for_each_entry(name, v.version, |e| {
                if let Some(fv) = FileVersionId::from_slice(&e.file_version) {
                    mine.insert(fv);
                }
            })?;
        }
        self.catalog().delete(name, at_least)?;
        for v in &record.versions {
            self.store.remove_group(&(name.to_string(), v.version));
        }
        self.origins.lock().await.remove(name);
        let still = self.catalog().referenced_file_versions(name)?;
        for fv in mine.difference(&still) {
            self.store.purge(*fv).await;
        }
        tracing::info!(dataset = %name, "dataset deleted");
        Ok(())
    }

    /// The status `dataset-ctl get/list` shows, cached bytes included.
    pub fn status(&self, rec: &DatasetRecord) -> Result<v1::DatasetStatus, NodeError> {
        let latest = rec.latest();
        let [memory, disk] = self.resident(&rec.spec.name, latest.version);
        let cached = (memory + disk).min(latest.total_bytes);
        let capacity = self.store.usage().iter().map(|u| u.quota).sum();
        let phase = if latest.total_bytes > 0 && cached >= latest.total_bytes {
            "Cached"
        } else {
            "Ready"
        };
        Ok(v1::DatasetStatus {
            spec: Some(rec.spec.to_wire()),
            version: latest.version,
            files: latest.files,
            total_bytes: latest.total_bytes,
            cached_bytes: cached,
            phase: phase.to_string(),
            cache_capacity: capacity,
            created_unix: rec.created_unix,
            refreshed_unix: latest.created_unix,
            directories: latest.directories,
            versions: rec.versions.iter().map(|v| v.version).collect(),
            skipped_keys: latest.skipped,
            skipped_examples: latest
                .skipped_examples
                .iter()
                .map(|k| v1::SkippedKey {
                    key: k.key.clone(),
                    reason: k.reason.clone(),
                })
                .collect(),
        })
    }

    /// Creates a job from a client's request: resolves the version and the
    /// selection, then lets the job model pick targets and check quotas.
    async fn create_job(&self, c: v1::CreateJob) -> Result<v1::JobStatus, NodeError> {
        let mut spec = c
            .spec
            .ok_or_else(|| NodeError::BadRequest("a job needs a spec".into()))?;
        let rec = self.catalog().get(&spec.dataset)?;
        spec.version = rec.version(spec.version)?.version;
        spec.paths = spec
            .paths
            .iter()
            .map(|p| catalog::clean_path(p))
            .collect::<Result<_, _>>()?;
        let mut total = 0u64;
        let mut matched = 0u64;
        let selection = Selection::new(&spec.paths);
        tokio::task::block_in_place(|| {
            self.catalog()
                .for_each_entry(&spec.dataset, spec.version, |e| {
                    if e.kind() == v1::FileKind::File && selection.contains(&e.path) {
                        total += e.size;
                        matched += 1;
                    }
                })
        })?;
        if matched == 0 && !spec.paths.is_empty() {
            return Err(NodeError::BadRequest(format!(
                "no file of dataset {:?} version {} is under {}",
                spec.dataset,
                spec.version,
                spec.paths.join(", ")
            )));
        }
        spec.total_bytes = total;
        let targets = if c.all_nodes {
            job_model::Targets::All
        } else if !spec.nodes.is_empty() {
            job_model::Targets::Named(std::mem::take(&mut spec.nodes))
        } else if !spec.selector.is_empty() {
            job_model::Targets::Selector(spec.selector.clone())
        } else if spec.replicas > 0 {
            job_model::Targets::Replicas(spec.replicas)
        } else {
            job_model::Targets::Local(self.cfg.name.clone())
        };
        let policy: &[usize] = match rec.spec.placement().policy {
            TierPolicy::MemoryThenDisk => &[0, 1],
            TierPolicy::DiskOnly => &[1],
            TierPolicy::MemoryOnly => &[0],
        };
        Ok(self.jobs.create(spec, targets, policy)?)
    }

    /// Where a dataset version's bytes are: every member's resident bytes
    /// per tier and measured bandwidth, as last reported (live for this node).
    pub fn locality(&self, name: &str, version: u64) -> Result<v1::Locality, NodeError> {
        let rec = self.catalog().get(name)?;
        let info = rec.version(version)?.clone();
        let members = self.members();
        let mut nodes = Vec::new();
        for (m, state) in members {
            let entry = m
                .residency
                .iter()
                .find(|r| r.dataset == name && r.version == info.version);
            let (memory, disk) = entry.map_or((0, 0), |r| (r.memory_bytes, r.disk_bytes));
            let available = state == State::Alive;
            nodes.push(v1::NodeLocality {
                id: m.name,
                labels: m.labels,
                state: state.name().into(),
                available,
                resident_bytes: memory.saturating_add(disk),
                memory_bytes: memory,
                disk_bytes: disk,
                measured_at_ms: m.updated_ms,
                bandwidth: m.bandwidth,
                address: m.api_addr,
            });
        }
        // Peers' figures are theirs: summed without trusting them to fit.
        let available_bytes = shoal_proto::units::sum_bytes(
            nodes
                .iter()
                .filter(|n| n.available)
                .map(|n| n.resident_bytes),
        );
        let complete_nodes = nodes
            .iter()
            .filter(|n| n.available && n.resident_bytes >= info.total_bytes)
            .count() as u32;
        Ok(v1::Locality {
            dataset: name.to_string(),
            version: info.version,
            total_bytes: info.total_bytes,
            chunk_size: rec.spec.chunk_size,
            nodes,
            available_bytes,
            complete_nodes,
        })
    }

    /// Every job this node knows, newest first.
    pub fn job_list(&self) -> Vec<v1::JobStatus> {
        self.jobs.list()
    }

    /// One job's status.
    pub fn job(&self, id: &str) -> Result<v1::JobStatus, NodeError> {
        Ok(self.jobs.status(id)?)
    }

    /// This node's facts as a member (what it gossips about itself).
    fn me_as_member(&self) -> v1::Member {
        v1::Member {
            name: self.cfg.name.clone(),
            api_addr: self.cfg.advertise.clone(),
            labels: self.cfg.labels.clone(),
            tiers: self.tier_usage(),
            residency: MeshHost::residency(self),
            bandwidth: Some(MeshHost::bandwidth(self)),
            updated_ms: unix_ms(),
            ..Default::default()
        }
    }

    /// Every member with its state (this node with live figures).
    fn members(&self) -> Vec<(v1::Member, State)> {
        let mut v: Vec<(v1::Member, State)> = match self.mesh() {
            Some(mesh) => mesh
                .members()
                .into_iter()
                .filter(|(m, _)| m.name != self.cfg.name)
                .collect(),
            None => Vec::new(),
        };
        let mut me = self.me_as_member();
        if let Some(mesh) = self.mesh() {
            me.peer_addr = mesh.advertise().to_string();
        }
        v.push((me, State::Alive));
        v.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        v
    }

    fn node_status(&self) -> v1::NodeStatus {
        v1::NodeStatus {
            name: self.cfg.name.clone(),
            address: self.cfg.advertise.clone(),
            state: "Ready".into(),
            tiers: self.tier_usage(),
            labels: self.cfg.labels.clone(),
        }
    }
}

/// Whether `path` is selected by `prefixes` (whole path components; none
/// selects everything).
/// A job's path prefixes (whole components; none selects everything),
/// matched in time linear in a path's length whatever their number (a
/// peer's job may name thousands, over a million files).
struct Selection<'a> {
    all: bool,
    prefixes: std::collections::HashSet<&'a str>,
}

impl<'a> Selection<'a> {
    fn new(prefixes: &'a [String]) -> Self {
        Self {
            all: prefixes.is_empty() || prefixes.iter().any(String::is_empty),
            prefixes: prefixes.iter().map(String::as_str).collect(),
        }
    }

    fn contains(&self, path: &str) -> bool {
        self.all
            || self.prefixes.contains(path)
            || path
                .match_indices('/')
                .any(|(i, _)| self.prefixes.contains(&path[..i]))
    }
}

impl JobHost for Node {
    fn select_files<'a>(
        &'a self,
        spec: &'a v1::JobSpec,
    ) -> BoxFuture<'a, Result<Vec<FileRef>, String>> {
        async move {
            let rec = self
                .catalog()
                .get(&spec.dataset)
                .map_err(|e| e.to_string())?;
            let version = rec
                .version(spec.version)
                .map_err(|e| e.to_string())?
                .version;
            let origin = self.origin(&rec.spec).await.map_err(|e| e.to_string())?;
            let mut files = Vec::new();
            let selection = Selection::new(&spec.paths);
            tokio::task::block_in_place(|| {
                self.catalog().for_each_entry(&spec.dataset, version, |e| {
                    if e.kind() != v1::FileKind::File || !selection.contains(&e.path) {
                        return;
                    }
                    if let Some(fv) = FileVersionId::from_slice(&e.file_version) {
                        files.push(FileRef {
                            fv,
                            size: e.size,
                            chunk_size: e.chunk_size,
                            object: manifest::object_of(&e),
                            origin: origin.clone(),
                            placement: rec.spec.placement(),
                            locator: Some(Locator {
                                dataset: rec.spec.name.clone(),
                                version,
                            }),
                        });
                    }
                })
            })
            .map_err(|e| e.to_string())?;
            Ok(files)
        }
        .boxed()
    }

    fn liveness(&self, node: &str) -> Option<Liveness> {
        // Called for every target of every job shown or gossiped: look the
        // member up, do not assemble every member's facts.
        if node == self.cfg.name {
            return Some(Liveness {
                alive: true,
                updated_ms: unix_ms(),
            });
        }
        self.mesh()?
            .members()
            .into_iter()
            .find(|(m, _)| m.name == node)
            .map(|(m, state)| Liveness {
                alive: state == State::Alive,
                updated_ms: m.updated_ms,
            })
    }

    fn candidates(&self, dataset: &str, version: u64) -> Vec<Candidate> {
        self.members()
            .into_iter()
            .map(|(m, state)| {
                let room = |name: &str| {
                    m.tiers.iter().find(|t| t.name == name).map(|t| TierRoom {
                        quota: t.quota_bytes,
                        high: t.high_bytes,
                        pinned: t.pinned_bytes,
                    })
                };
                let resident = m
                    .residency
                    .iter()
                    .find(|r| r.dataset == dataset && r.version == version)
                    .map_or(0, |r| r.memory_bytes.saturating_add(r.disk_bytes));
                Candidate {
                    alive: state == State::Alive,
                    tiers: [room(TierKind::Memory.name()), room(TierKind::Disk.name())],
                    labels: m.labels,
                    resident,
                    updated_ms: m.updated_ms,
                    name: m.name,
                }
            })
            .collect()
    }

    fn job_changed(&self) {
        if let Some(mesh) = self.mesh() {
            mesh.nudge();
        }
    }
}

impl MeshHost for Node {
    fn name(&self) -> &str {
        &self.cfg.name
    }

    fn api_addr(&self) -> &str {
        &self.cfg.advertise
    }

    fn labels(&self) -> &HashMap<String, String> {
        &self.cfg.labels
    }

    fn tier_usage(&self) -> Vec<v1::TierUsage> {
        Node::tier_usage(self)
    }

    fn residency(&self) -> Vec<v1::DatasetResidency> {
        self.store
            .groups()
            .into_iter()
            .map(
                |((dataset, version), [memory, disk])| v1::DatasetResidency {
                    dataset,
                    version,
                    memory_bytes: memory,
                    disk_bytes: disk,
                },
            )
            .collect()
    }

    fn bandwidth(&self) -> v1::Bandwidth {
        let ((origin_bps, o_at), (peer_bps, p_at)) = self.store.bandwidth();
        v1::Bandwidth {
            origin_bps,
            peer_bps,
            measured_at_ms: o_at.max(p_at),
        }
    }

    fn dataset_digests(&self) -> Vec<v1::DatasetDigest> {
        let live = self
            .catalog()
            .list()
            .unwrap_or_default()
            .into_iter()
            .map(|r| v1::DatasetDigest {
                version: r.latest().version,
                name: r.spec.name,
                deleted: false,
            });
        let buried = self
            .catalog()
            .tombstones()
            .unwrap_or_default()
            .into_iter()
            .map(|(name, t)| v1::DatasetDigest {
                name,
                version: t.version,
                deleted: true,
            });
        live.chain(buried).collect()
    }

    fn apply_tombstone<'a>(
        &'a self,
        name: &'a str,
        version: u64,
    ) -> BoxFuture<'a, Result<(), String>> {
        async move {
            Node::apply_tombstone(self, name, version)
                .await
                .map_err(|e| e.to_string())
        }
        .boxed()
    }

    fn export_dataset(&self, name: &str) -> Result<v1::DatasetExport, String> {
        Node::export_dataset(self, name).map_err(|e| e.to_string())
    }

    fn import_dataset(&self, export: v1::DatasetExport) -> Result<(), String> {
        Node::import_dataset(self, export).map_err(|e| e.to_string())
    }

    fn recorded_hash(&self, f: &v1::FetchChunk) -> Option<[u8; 32]> {
        let entry = self.catalog().stat(&f.dataset, f.version, &f.path).ok()?;
        let fv = FileVersionId::from_slice(&entry.file_version)?;
        self.store.chunk_hash(fv, f.index).ok().flatten()
    }

    fn serve_chunk<'a>(
        &'a self,
        f: &'a v1::FetchChunk,
    ) -> BoxFuture<'a, Result<(bytes::Bytes, [u8; 32]), String>> {
        async move { Node::serve_chunk(self, f).await.map_err(|e| e.to_string()) }.boxed()
    }

    fn job_gossip(&self) -> (Vec<v1::JobSpec>, Vec<v1::JobPart>) {
        self.jobs.gossip()
    }

    fn absorb_jobs(&self, specs: Vec<v1::JobSpec>, parts: Vec<v1::JobPart>) {
        self.jobs.absorb(specs, parts);
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

async fn connect(spec: &Spec) -> Result<SharedOrigin, OriginError> {
    origin::connect(&OriginSettings {
        source: spec.source.clone(),
        s3_endpoint: spec.s3_endpoint.clone(),
        region: spec.region.clone(),
    })
    .await
}

/// Joins a relative symlink target to its directory, resolving "." and
/// ".."; None if it climbs above the dataset root.
fn normalise_join(dir: &str, target: &str) -> Option<String> {
    let mut parts: Vec<&str> = dir.split('/').filter(|s| !s.is_empty()).collect();
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::{normalise_join, Selection};

    #[test]
    fn path_prefixes_select_whole_components() {
        let selected = |v: &[&str], path: &str| {
            let v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
            Selection::new(&v).contains(path)
        };
        assert!(selected(&[], "a/b"));
        assert!(selected(&[""], "a/b"));
        assert!(selected(&["models"], "models/x.bin"));
        assert!(selected(&["models/x.bin"], "models/x.bin"));
        assert!(!selected(&["models"], "models2/x.bin"));
        assert!(!selected(&["models/x"], "models/x.bin"));
        assert!(!selected(&["models/x.bin/y"], "models/x.bin"));
        assert!(selected(&["data", "models"], "models/x.bin"));
        assert!(selected(&["a/b"], "a/b/c/d"));
        assert!(!selected(&["a/b"], "a/bc/d"));
    }

    #[test]
    fn symlink_targets_stay_inside() {
        assert_eq!(normalise_join("a/b", "../c").as_deref(), Some("a/c"));
        assert_eq!(normalise_join("", "x/./y").as_deref(), Some("x/y"));
        assert_eq!(normalise_join("a", "../../etc/passwd"), None);
    }
}
