//! The tiered, content-addressed chunk store.
//!
//! Files are split into fixed-size chunks. A chunk is fetched from the origin
//! once, hashed with blake3, and written at its own offset into a sparse
//! backing file for its file version in the memory tier (tmpfs) or the disk
//! tier. The RocksDB index records (file version, chunk) → hash in the
//! chunk map, and residency (tier, offset, hash, last access) for resident
//! chunks. See `docs/DESIGN.md` for why bytes are laid out per file version
//! rather than once per hash.
//!
//! Concurrency: every chunk has at most one *flight* at a time — a fetch, a
//! move between tiers or an eviction — tracked in `inflight`. Concurrent
//! misses of the same chunk wait on the same flight, so the origin sees one
//! request; an eviction holds the flight while it moves or drops bytes, so
//! no fetch can write the same offset underneath it. Readers pin a chunk for
//! the duration of their copy (`readers` in [`residency::Entry`]), and
//! eviction never picks a chunk being read, so nobody reads a punched hole.
//!
//! A flight is a task of the store (`flights`), not part of the future
//! that asked for it: it runs to its end when every waiter is dropped (a
//! cancelled prewarm job, a multi-chunk read abandoned because one chunk
//! failed, a peer that timed out). A flight is a sequence of steps on
//! shared state — reserve room, mark victims leaving, write, commit — and
//! one cut short in the middle used to leave a chunk marked leaving for
//! ever (every later read of it spun a core) and tier bytes reserved for
//! nothing. A chunk is only ever marked leaving by its own flight, or just
//! before one starts with no await in between.

pub mod files;
pub mod residency;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::future::{BoxFuture, Shared};
use futures::{FutureExt, StreamExt, TryStreamExt};
use rocksdb::WriteBatch;
use tokio::sync::{Notify, Semaphore};
use tokio_util::task::TaskTracker;

use crate::bandwidth::Meter;
use crate::index::{self, keys, ChunkKey, FileVersionId, Index, IndexError, ResidentRecord};
use crate::metrics::Metrics;
use crate::origin::{ObjectMeta, OriginError, SharedOrigin};
pub use residency::{Budget, GroupKey, TierKind};
use residency::{Entry, Residency, Room};

/// One tier's directory and byte budget.
#[derive(Debug, Clone)]
pub struct TierConfig {
    /// Directory holding the backing files (tmpfs for the memory tier).
    pub dir: PathBuf,
    /// Byte quota.
    pub quota: u64,
    /// High watermark as a fraction of the quota (eviction trigger).
    pub high: f64,
    /// Low watermark as a fraction of the quota (eviction target).
    pub low: f64,
}

/// Store configuration.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Memory tier; `None` disables it.
    pub memory: Option<TierConfig>,
    /// Disk tier; `None` disables it.
    pub disk: Option<TierConfig>,
    /// Maximum concurrent origin requests for this node.
    pub origin_concurrency: usize,
    /// Chunks fetched or read concurrently for one read request.
    pub read_concurrency: usize,
    /// Treat every recovered chunk as suspect until its bytes are hashed
    /// again (after an unclean stop that may have lost written pages).
    pub verify_recovered: bool,
}

/// A recovered chunk not yet proven intact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Suspect {
    /// Not hashed since recovery: served only after its bytes match.
    Unverified,
    /// Hashed and found different: being dropped, never served.
    Corrupt,
}

/// Recovered chunks still to verify, and how many per file version (a
/// file with any is never handed out for direct or passthrough reads).
#[derive(Debug, Default)]
struct Suspects {
    keys: HashMap<ChunkKey, Suspect>,
    per_fv: HashMap<FileVersionId, u32>,
}

impl Suspects {
    fn get(&self, key: &ChunkKey) -> Option<Suspect> {
        self.keys.get(key).copied()
    }

    fn insert(&mut self, key: ChunkKey) {
        if self.keys.insert(key, Suspect::Unverified).is_none() {
            *self.per_fv.entry(key.fv).or_default() += 1;
        }
    }

    fn remove(&mut self, key: &ChunkKey) {
        if self.keys.remove(key).is_some() {
            if let Some(n) = self.per_fv.get_mut(&key.fv) {
                *n -= 1;
                if *n == 0 {
                    self.per_fv.remove(&key.fv);
                }
            }
        }
    }
}

/// See `Inner::files_busy`.
#[derive(Debug, Default)]
struct FilesBusy {
    writes: HashMap<(FileVersionId, TierKind), u32>,
    removing: std::collections::HashSet<(FileVersionId, TierKind)>,
}

/// A chunk write in progress on a backing file (see `Inner::files_busy`).
struct WriteGuard<'a> {
    store: &'a Inner,
    file: (FileVersionId, TierKind),
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        let mut busy = self.store.files_busy.lock().expect("files lock");
        if let Some(n) = busy.writes.get_mut(&self.file) {
            *n -= 1;
            if *n == 0 {
                busy.writes.remove(&self.file);
            }
        }
    }
}

/// What [`ChunkStore::verify_recovered`] found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VerifyReport {
    pub checked: u64,
    pub bytes: u64,
    pub corrupt: u64,
}

/// Where a dataset's chunks may live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TierPolicy {
    #[default]
    MemoryThenDisk,
    DiskOnly,
    MemoryOnly,
}

/// Placement rules for a file's chunks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Placement {
    pub policy: TierPolicy,
    /// Pinned chunks are never evicted.
    pub pin: bool,
    /// Place new chunks in this tier only (a prewarm `--tier`), without
    /// restricting where they may move later.
    pub only: Option<TierKind>,
}

/// Where a file sits in the catalog, so peers can be asked for its chunks.
/// Opaque to the store: passed through to the [`PeerSource`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Locator {
    pub dataset: String,
    pub version: u64,
}

/// A file version the store can read: identity, shape and where to fetch it.
#[derive(Debug, Clone)]
pub struct FileRef {
    pub fv: FileVersionId,
    pub size: u64,
    pub chunk_size: u64,
    pub object: ObjectMeta,
    pub origin: SharedOrigin,
    pub placement: Placement,
    /// Set when peers may be asked for this file's chunks.
    pub locator: Option<Locator>,
}

/// Other nodes that may hold a chunk (the P2P mesh), behind a trait so the
/// store does not know about transports.
#[async_trait::async_trait]
pub trait PeerSource: Send + Sync {
    /// The bytes of chunk `idx` of `file` and their blake3, already
    /// verified (the caller does not hash them again); `None` means "fetch
    /// it from the origin".
    async fn fetch(&self, file: &FileRef, idx: u32) -> Option<(Bytes, [u8; 32])>;

    /// Whether a peer may hold bytes of `file` (cheap, no I/O): a direct
    /// origin read is not worth it when one does.
    fn may_hold(&self, file: &FileRef) -> bool;
}

impl FileRef {
    fn chunks(&self) -> u64 {
        self.size.div_ceil(self.chunk_size)
    }

    fn chunk_range(&self, idx: u32) -> std::ops::Range<u64> {
        let start = u64::from(idx) * self.chunk_size;
        start..(start + self.chunk_size).min(self.size)
    }

    fn key(&self, idx: u32) -> ChunkKey {
        ChunkKey { fv: self.fv, idx }
    }
}

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Origin(#[from] OriginError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("cache tier i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Shared(Arc<StoreError>),
}

impl StoreError {
    /// The underlying error, looking through shared flights.
    pub fn root(&self) -> &StoreError {
        match self {
            StoreError::Shared(e) => e.root(),
            e => e,
        }
    }
}

/// Where a cached range can be read directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backing {
    pub path: PathBuf,
    pub tier: TierKind,
    /// Every chunk of the file is in this one backing file.
    pub complete: bool,
}

/// Usage of one tier.
#[derive(Debug, Clone)]
pub struct TierUsage {
    pub tier: TierKind,
    pub dir: PathBuf,
    pub used: u64,
    pub quota: u64,
    /// Bytes eviction can never free.
    pub pinned: u64,
    /// Eviction starts above this.
    pub high: u64,
}

#[derive(Debug, Clone)]
enum Flight {
    /// The chunk's bytes (also stored, unless no tier had room).
    Bytes(Bytes),
    /// Look again: the chunk was resident, moved or evicted meanwhile.
    Retry,
    /// A move between tiers ended: whether the chunk moved.
    Moved(bool),
}

type FlightResult = Result<Flight, Arc<StoreError>>;

/// The end of a chunk's flight, for any number of waiters.
type FlightWait = Shared<BoxFuture<'static, FlightResult>>;

/// Removes a flight from `inflight` when its task ends, however it ends
/// (also when the runtime drops it unpolled at shutdown).
struct FlightEnd {
    store: Arc<Inner>,
    key: ChunkKey,
    wait: FlightWait,
}

impl Drop for FlightEnd {
    fn drop(&mut self) {
        let mut map = self.store.inflight.lock().expect("inflight lock");
        if map.get(&self.key).is_some_and(|w| w.ptr_eq(&self.wait)) {
            map.remove(&self.key);
        }
    }
}

struct Inner {
    index: Arc<Index>,
    dirs: [Option<PathBuf>; 2],
    state: Mutex<Residency>,
    inflight: Mutex<HashMap<ChunkKey, FlightWait>>,
    /// Every flight's task (see the module docs); a clean stop waits for them.
    flights: TaskTracker,
    /// A reader released a chunk (what dropping a corrupt chunk waits for).
    released: Notify,
    /// A backing file's removal ended (what a write to it waits for).
    files_changed: Notify,
    origin_permits: Semaphore,
    suspects: Mutex<Suspects>,
    /// Backing files being written and being removed: a purge never
    /// removes a file a chunk write has opened (its record would then
    /// point into a removed file, and the next write would recreate the
    /// file sparse: zeros), and a write waits for a removal under way.
    files_busy: Mutex<FilesBusy>,
    /// Direct reads have their own permits: they must not queue behind
    /// whole-chunk fetches (that wait is what they exist to avoid).
    direct_permits: Semaphore,
    read_concurrency: usize,
    metrics: Arc<Metrics>,
    peers: std::sync::OnceLock<Arc<dyn PeerSource>>,
    /// Measured throughput of origin and peer fetches (locality hints).
    origin_meter: Meter,
    peer_meter: Meter,
}

/// The chunk store. Cheap to clone.
#[derive(Clone)]
pub struct ChunkStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ChunkStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkStore")
            .field("dirs", &self.inner.dirs)
            .finish()
    }
}

/// Releases a reader's hold on a chunk.
struct ReadGuard<'a> {
    store: &'a Inner,
    key: ChunkKey,
}

impl Drop for ReadGuard<'_> {
    fn drop(&mut self) {
        let unread = self
            .store
            .state
            .lock()
            .expect("state lock")
            .release(&self.key);
        if unread {
            self.store.released.notify_waiters();
        }
    }
}

const MAX_ORIGIN_ATTEMPTS: u32 = 3;
/// Reads of a disk chunk that make it hot enough to promote.
const PROMOTE_AFTER_HITS: u8 = 2;
/// How long a holder waits for a chunk it is still storing.
const FLIGHT_WAIT: Duration = Duration::from_secs(2);
/// Looks a read takes at a chunk that is moved or evicted under it before
/// it fails (each look waits for the flight that moved it, so reaching
/// this means something is wrong: an error, never a spinning core).
const MAX_LOOKS: u32 = 100;

/// Wall-clock milliseconds since the epoch.
pub fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl ChunkStore {
    /// Opens the store and recovers from whatever state a crash left:
    /// writes that began but were not recorded are punched out, records
    /// whose backing file is gone (a tmpfs after reboot) are dropped, and
    /// backing files nothing refers to are removed.
    pub fn open(
        index: Arc<Index>,
        cfg: &StoreConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StoreError> {
        let tiers = [&cfg.memory, &cfg.disk];
        let mut dirs: [Option<PathBuf>; 2] = [None, None];
        let mut budgets: [Option<Budget>; 2] = [None, None];
        for (i, t) in tiers.iter().enumerate() {
            if let Some(t) = t {
                if t.quota == 0 {
                    continue;
                }
                std::fs::create_dir_all(&t.dir)?;
                dirs[i] = Some(t.dir.clone());
                budgets[i] = Some(Budget {
                    quota: t.quota,
                    high: t.high,
                    low: t.low,
                });
            }
        }
        let mut state = Residency::new(budgets[0], budgets[1]);
        let path_of = |tier: u8, fv: &FileVersionId| -> Option<PathBuf> {
            let d = dirs.get(tier as usize)?.as_ref()?;
            Some(d.join(fv.hex()))
        };

        let mut batch = WriteBatch::default();
        let mut punched = 0usize;
        for (k, v) in index.scan(keys::PENDING)? {
            if let (Some(key), Some(rec)) = (keys::chunk_of(&k), ResidentRecord::decode(&v)) {
                if let Some(path) = path_of(rec.tier, &key.fv) {
                    files::punch_hole(&path, rec.offset, u64::from(rec.len))?;
                    punched += 1;
                }
            }
            batch.delete(k);
        }
        let mut dropped = 0usize;
        let mut suspects = Suspects::default();
        for (k, v) in index.scan(keys::RESIDENT)? {
            let (Some(key), Some(rec)) = (keys::chunk_of(&k), ResidentRecord::decode(&v)) else {
                batch.delete(k);
                continue;
            };
            let present = path_of(rec.tier, &key.fv)
                .and_then(|p| std::fs::metadata(p).ok())
                .is_some_and(|m| m.len() >= rec.offset + u64::from(rec.len));
            if present {
                state.restore(key, &rec);
                if cfg.verify_recovered {
                    suspects.insert(key);
                }
            } else {
                batch.delete(k);
                batch.delete(keys::by_hash(&rec.hash, &key));
                dropped += 1;
            }
        }
        index.write(batch)?;
        let mut orphans = 0usize;
        for (i, d) in dirs.iter().enumerate() {
            let Some(d) = d else { continue };
            for entry in std::fs::read_dir(d)? {
                let entry = entry?;
                // Only our own backing files (regular files named by a file
                // version id) are ever removed; anything else in a shared
                // directory is left alone.
                let ours = entry.file_type()?.is_file().then(|| {
                    hex::decode(entry.file_name().to_string_lossy().as_bytes())
                        .ok()
                        .and_then(|b| FileVersionId::from_slice(&b))
                });
                if let Some(Some(fv)) = ours {
                    if state.fv_usage(&fv).chunks[i] == 0 {
                        std::fs::remove_file(entry.path())?;
                        orphans += 1;
                    }
                }
            }
        }
        tracing::info!(
            punched_incomplete_writes = punched,
            dropped_missing = dropped,
            removed_orphan_files = orphans,
            to_verify = suspects.keys.len(),
            memory_bytes = state.used(TierKind::Memory),
            disk_bytes = state.used(TierKind::Disk),
            "chunk store recovered"
        );
        for t in TierKind::ALL {
            if let Some(b) = state.budget(t) {
                metrics
                    .tier_capacity
                    .get_or_create(&vec![("tier", t.name())])
                    .set(b.quota as i64);
            }
        }
        let store = Self {
            inner: Arc::new(Inner {
                index,
                dirs,
                state: Mutex::new(state),
                inflight: Mutex::new(HashMap::new()),
                flights: TaskTracker::new(),
                released: Notify::new(),
                files_changed: Notify::new(),
                origin_permits: Semaphore::new(cfg.origin_concurrency.max(1)),
                suspects: Mutex::new(suspects),
                files_busy: Mutex::new(FilesBusy::default()),
                direct_permits: Semaphore::new(cfg.origin_concurrency.max(1)),
                read_concurrency: cfg.read_concurrency.max(1),
                metrics,
                peers: std::sync::OnceLock::new(),
                origin_meter: Meter::default(),
                peer_meter: Meter::default(),
            }),
        };
        store.update_gauges();
        Ok(store)
    }

    /// Lets misses ask peers before the origin.
    pub fn set_peers(&self, peers: Arc<dyn PeerSource>) {
        let _ = self.inner.peers.set(peers);
    }

    fn path(&self, tier: TierKind, fv: &FileVersionId) -> PathBuf {
        self.inner.dirs[tier as usize]
            .as_ref()
            .expect("a chunk only lives in a configured tier")
            .join(fv.hex())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Residency> {
        self.inner.state.lock().expect("state lock")
    }

    fn update_gauges(&self) {
        let st = self.state();
        for t in TierKind::ALL {
            self.inner
                .metrics
                .tier_bytes
                .get_or_create(&vec![("tier", t.name())])
                .set(st.used(t) as i64);
        }
    }

    /// Reads `[offset, offset+len)` of a file (clamped to its size), fetching
    /// missing chunks from the origin, several at a time.
    pub async fn read(&self, file: &FileRef, offset: u64, len: u64) -> Result<Bytes, StoreError> {
        let end = offset.saturating_add(len).min(file.size);
        if offset >= end {
            return Ok(Bytes::new());
        }
        let first = (offset / file.chunk_size) as u32;
        let last = ((end - 1) / file.chunk_size) as u32;
        if first == last {
            return self.read_part(file, first, offset, end).await;
        }
        let parts: Vec<Bytes> = futures::stream::iter(first..=last)
            .map(|idx| self.read_part(file, idx, offset, end))
            .buffered(self.inner.read_concurrency)
            .try_collect()
            .await?;
        let mut out = BytesMut::with_capacity((end - offset) as usize);
        for p in parts {
            out.extend_from_slice(&p);
        }
        Ok(out.freeze())
    }

    /// Reads `[offset, offset+len)` for a reader that will not read the
    /// rest of its chunks soon: a seek, or the first bytes of a stream
    /// whose chunks are being warmed separately. Resident chunks are served
    /// from their tier; otherwise exactly these bytes are fetched from the
    /// origin, leaving the chunks as they are, so a 4 KiB read costs one
    /// round trip and 4 KiB instead of a whole chunk. When a live peer may
    /// hold the file, the chunks are fetched as usual (peer first): the
    /// origin is asked once per cluster.
    pub async fn read_direct(
        &self,
        file: &FileRef,
        offset: u64,
        len: u64,
    ) -> Result<Bytes, StoreError> {
        let end = offset.saturating_add(len).min(file.size);
        if offset >= end {
            return Ok(Bytes::new());
        }
        let first = (offset / file.chunk_size) as u32;
        let last = ((end - 1) / file.chunk_size) as u32;
        let resident = {
            let st = self.state();
            (first..=last).all(|idx| st.get(&file.key(idx)).is_some())
        };
        let peer_may_hold = self.inner.peers.get().is_some_and(|p| p.may_hold(file));
        if resident || peer_may_hold {
            return self.read(file, offset, len).await;
        }
        self.inner.metrics.direct_reads.inc();
        self.fetch_origin(file, offset..end, &self.inner.direct_permits)
            .await
    }

    /// Makes every chunk of `[offset, offset+len)` resident without returning bytes.
    pub async fn warm(&self, file: &FileRef, offset: u64, len: u64) -> Result<(), StoreError> {
        let end = offset.saturating_add(len).min(file.size);
        if offset >= end {
            return Ok(());
        }
        let first = (offset / file.chunk_size) as u32;
        let last = ((end - 1) / file.chunk_size) as u32;
        futures::stream::iter(first..=last)
            .map(|idx| self.ensure(file, idx, None))
            .buffer_unordered(self.inner.read_concurrency)
            .try_collect::<()>()
            .await
    }

    /// Chunk `idx` of a file if it is resident here; never fetches (a
    /// holder serving a redirected peer).
    pub async fn read_resident(
        &self,
        file: &FileRef,
        idx: u32,
    ) -> Result<Option<Bytes>, StoreError> {
        let key = file.key(idx);
        // A chunk still arriving (its flight is writing it) is as good as
        // resident: an owner redirects to a holder as soon as it has sent
        // the bytes, possibly before the holder has stored them.
        let deadline = tokio::time::Instant::now() + FLIGHT_WAIT;
        let entry = loop {
            if let Some(e) = self.state().acquire(&key) {
                break e;
            }
            let flight = self
                .inner
                .inflight
                .lock()
                .expect("inflight lock")
                .get(&key)
                .cloned();
            let Some(flight) = flight else {
                return Ok(None);
            };
            // Wait for the chunk's flight to end, then look again.
            if tokio::time::timeout_at(deadline, flight).await.is_err() {
                return Ok(None);
            }
        };
        let _guard = ReadGuard {
            store: &self.inner,
            key,
        };
        if self.suspect(&key).is_some() {
            // Not verified since an unclean stop: the asker goes elsewhere.
            return Ok(None);
        }
        let path = self.path(entry.tier, &key.fv);
        Ok(Some(
            files::read_at(path, entry.offset, entry.len as usize).await?,
        ))
    }

    /// Number of chunks of a file.
    pub fn chunk_count(file: &FileRef) -> u32 {
        file.chunks() as u32
    }

    /// Makes chunk `idx` resident in `tier` (any tier when `None`):
    /// fetched if missing (into `tier` only), moved if it sits in the other
    /// tier — which is how a prewarm to memory promotes chunks that were
    /// demoted to disk. Fails when the tier cannot keep it (no room that
    /// eviction can free).
    pub async fn ensure(
        &self,
        file: &FileRef,
        idx: u32,
        tier: Option<TierKind>,
    ) -> Result<(), StoreError> {
        let key = file.key(idx);
        for _ in 0..8 {
            let here = self
                .state()
                .get(&key)
                .filter(|e| !e.leaving)
                .map(|e| e.tier);
            match (here, tier) {
                (Some(_), None) => return Ok(()),
                (Some(t), Some(want)) if t == want => return Ok(()),
                (Some(_), Some(want)) => {
                    if self.relocate_now(key, want).await? {
                        return Ok(());
                    }
                }
                (None, None) => {
                    self.fetch(file, idx).await?;
                }
                (None, Some(_)) => {
                    let mut f = file.clone();
                    f.placement.only = tier;
                    self.fetch(&f, idx).await?;
                }
            }
        }
        Err(StoreError::Io(std::io::Error::other(format!(
            "chunk {idx} of {} could not be kept in the {} tier (no room that eviction can free, or the file is open and its chunks cannot move)",
            file.object.path,
            tier.map_or("any", TierKind::name)
        ))))
    }

    /// Moves a resident chunk to `to` in a flight of its own; false when
    /// it could not (another flight had the chunk, gone, or no room).
    async fn relocate_now(&self, key: ChunkKey, to: TierKind) -> Result<bool, StoreError> {
        let (wait, started) = self.start_relocation(key, to);
        let result = wait.await;
        if !started {
            // Another flight (a fetch or an eviction) had the chunk.
            return Ok(false);
        }
        match result {
            Ok(Flight::Moved(moved)) => Ok(moved),
            Ok(_) => Ok(false),
            Err(e) => Err(StoreError::Shared(e)),
        }
    }

    /// Starts moving a chunk to `to` in a flight of its own, unless another
    /// flight has the chunk (then that flight's end and false).
    fn start_relocation(&self, key: ChunkKey, to: TierKind) -> (FlightWait, bool) {
        self.flight(key, || {
            let store = self.clone();
            async move {
                let moved = store.relocate_claimed(key, to).await;
                store.update_gauges();
                match &moved {
                    Ok(true) => tracing::debug!(idx = key.idx, tier = to.name(), "moved a chunk"),
                    Ok(false) => {}
                    Err(e) => tracing::debug!(error = %e, tier = to.name(), "moving a chunk failed; it stays"),
                }
                moved.map(Flight::Moved).map_err(Arc::new)
            }
        })
    }

    /// The body of a move's flight: claims the chunk and moves it.
    async fn relocate_claimed(&self, key: ChunkKey, to: TierKind) -> Result<bool, StoreError> {
        let Some(entry) = self.state().get(&key).copied() else {
            return Ok(false);
        };
        if entry.tier == to {
            return Ok(true);
        }
        if !self.state().claim_move(&key) {
            return Ok(false);
        }
        let r = self.relocate(key, entry, to).await;
        if !matches!(r, Ok(true)) {
            self.state().stay(&key);
        }
        r
    }

    /// Copies a chunk (marked leaving, under its flight) into tier `to` and
    /// punches it out of its old tier. False when `to` has no room.
    async fn relocate(
        &self,
        key: ChunkKey,
        entry: Entry,
        to: TierKind,
    ) -> Result<bool, StoreError> {
        let len = u64::from(entry.len);
        if self.inner.dirs[to as usize].is_none() || !self.make_room(to, len).await {
            return Ok(false);
        }
        let from = self.path(entry.tier, &key.fv);
        // The source file stays until the moved chunk's hole is punched in
        // it (see evict_now).
        let _busy = self.begin_write(key.fv, entry.tier).await;
        let bytes = match files::read_at(from.clone(), entry.offset, entry.len as usize).await {
            Ok(b) => b,
            Err(e) => {
                self.state().unreserve(to, len);
                return Err(e.into());
            }
        };
        self.write_chunk(to, key, bytes, entry).await?;
        files::punch(from, entry.offset, len).await?;
        let action = if to == TierKind::Memory {
            "promote"
        } else {
            "demote"
        };
        self.inner
            .metrics
            .evictions
            .get_or_create(&vec![("tier", entry.tier.name()), ("action", action)])
            .inc();
        Ok(true)
    }

    async fn read_part(
        &self,
        file: &FileRef,
        idx: u32,
        offset: u64,
        end: u64,
    ) -> Result<Bytes, StoreError> {
        let chunk = file.chunk_range(idx);
        let (s, e) = (offset.max(chunk.start), end.min(chunk.end));
        let key = file.key(idx);
        for _ in 0..MAX_LOOKS {
            let hit = self.state().acquire(&key);
            if let Some(entry) = hit {
                let _guard = ReadGuard {
                    store: &self.inner,
                    key,
                };
                if self.suspect(&key).is_some() {
                    // Recovered after an unclean stop: served only once its
                    // bytes hash right; otherwise dropped and fetched again.
                    let path = self.path(entry.tier, &key.fv);
                    let whole = files::read_at(path, entry.offset, entry.len as usize).await?;
                    drop(_guard);
                    if self.verified(key, &entry, whole.clone()).await {
                        let at = (s - chunk.start) as usize..(e - chunk.start) as usize;
                        return Ok(whole.slice(at));
                    }
                    self.drop_corrupt(key).await;
                    continue;
                }
                self.inner
                    .metrics
                    .hits
                    .get_or_create(&vec![("tier", entry.tier.name())])
                    .inc();
                let path = self.path(entry.tier, &key.fv);
                let bytes = files::read_at(path, s, (e - s) as usize).await?;
                drop(_guard);
                self.promote_if_hot(file, key, &entry);
                return Ok(bytes);
            }
            match self.fetch(file, idx).await? {
                Flight::Bytes(b) => {
                    return Ok(b.slice((s - chunk.start) as usize..(e - chunk.start) as usize))
                }
                Flight::Retry | Flight::Moved(_) => {}
            }
        }
        Err(StoreError::Io(std::io::Error::other(format!(
            "chunk {idx} of {} was moved or evicted on each of {MAX_LOOKS} looks",
            file.object.path
        ))))
    }

    fn suspect(&self, key: &ChunkKey) -> Option<Suspect> {
        self.inner.suspects.lock().expect("suspects lock").get(key)
    }

    /// Hashes a suspect chunk's bytes (off the async workers) against the
    /// hash recorded when it was stored: clears it when they match, marks
    /// it corrupt (never served again) when not.
    async fn verified(&self, key: ChunkKey, entry: &Entry, bytes: Bytes) -> bool {
        let ok = match tokio::task::spawn_blocking(move || *blake3::hash(&bytes).as_bytes()).await {
            Ok(h) => h == entry.hash,
            Err(_) => false,
        };
        let mut sus = self.inner.suspects.lock().expect("suspects lock");
        if ok {
            sus.remove(&key);
        } else if let Some(s) = sus.keys.get_mut(&key) {
            *s = Suspect::Corrupt;
        }
        drop(sus);
        let result = if ok { "ok" } else { "corrupt" };
        self.inner
            .metrics
            .verified_chunks
            .get_or_create(&vec![("result", result)])
            .inc();
        if !ok {
            tracing::warn!(fv = %key.fv.hex(), idx = key.idx, tier = entry.tier.name(), "a recovered chunk's bytes do not match its hash (lost writes?); dropping it, it will be fetched again");
        }
        ok
    }

    /// Drops a chunk whose bytes are bad, whatever pins or holds it has,
    /// once no reader is copying it, in a flight of its own (readers wait
    /// for it rather than spin on a chunk marked leaving).
    async fn drop_corrupt(&self, key: ChunkKey) {
        loop {
            let (wait, started) = self.flight(key, || {
                let store = self.clone();
                async move {
                    store.drop_corrupt_now(key).await;
                    Ok(Flight::Retry)
                }
            });
            let _ = wait.await;
            if started {
                return;
            }
        }
    }

    /// The body of [`ChunkStore::drop_corrupt`]'s flight.
    async fn drop_corrupt_now(&self, key: ChunkKey) {
        loop {
            let released = self.inner.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let state = self.state().condemn(&key);
            match state {
                None => break,
                Some(true) => {
                    if let Err(e) = self.evict_now(key, false).await {
                        // Stays condemned as a suspect: never served, and
                        // the next reader tries to drop it again.
                        tracing::warn!(error = %e, "dropping a corrupt chunk failed");
                        self.state().stay(&key);
                        return;
                    }
                    break;
                }
                Some(false) => released.await,
            }
        }
        self.inner
            .suspects
            .lock()
            .expect("suspects lock")
            .remove(&key);
        self.update_gauges();
    }

    /// Chunks recovered after an unclean stop that are not verified yet.
    pub fn unverified_chunks(&self) -> usize {
        self.inner
            .suspects
            .lock()
            .expect("suspects lock")
            .keys
            .len()
    }

    /// Hashes every recovered chunk not verified yet, one at a time in the
    /// background while reads are served (a read of a suspect chunk
    /// verifies it first), and drops those whose bytes changed.
    pub async fn verify_recovered(&self) -> VerifyReport {
        let mut keys: Vec<ChunkKey> = {
            let sus = self.inner.suspects.lock().expect("suspects lock");
            sus.keys.keys().copied().collect()
        };
        keys.sort();
        let mut report = VerifyReport::default();
        for key in keys {
            match self.suspect(&key) {
                None => continue,
                Some(Suspect::Corrupt) => {
                    self.drop_corrupt(key).await;
                    continue;
                }
                Some(Suspect::Unverified) => {}
            }
            let Some(entry) = self.state().acquire_quiet(&key) else {
                // Gone, or leaving: nobody can read it any more.
                self.inner
                    .suspects
                    .lock()
                    .expect("suspects lock")
                    .remove(&key);
                continue;
            };
            let guard = ReadGuard {
                store: &self.inner,
                key,
            };
            let path = self.path(entry.tier, &key.fv);
            let read = files::read_at(path, entry.offset, entry.len as usize).await;
            drop(guard);
            report.checked += 1;
            report.bytes += u64::from(entry.len);
            let ok = match read {
                Ok(bytes) => self.verified(key, &entry, bytes).await,
                Err(e) => {
                    tracing::warn!(error = %e, "reading a recovered chunk failed; dropping it");
                    false
                }
            };
            if !ok {
                report.corrupt += 1;
                self.drop_corrupt(key).await;
            }
        }
        report
    }

    /// Makes what the tiers and the index hold durable (a clean stop):
    /// syncs each tier's filesystem and the index's log.
    pub async fn sync(&self) -> Result<(), StoreError> {
        self.quiesce().await;
        let dirs: Vec<PathBuf> = self.inner.dirs.iter().flatten().cloned().collect();
        tokio::task::spawn_blocking(move || {
            for d in dirs {
                files::sync_filesystem(&d)?;
            }
            Ok::<_, std::io::Error>(())
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
        self.inner.index.sync()?;
        Ok(())
    }

    /// Moves a disk chunk read for the second time since it landed there
    /// back to the memory tier, when the file may live in memory and the
    /// memory tier has room below its high watermark (so promotion never
    /// evicts, and cannot thrash). Demoted chunks that are read again thus
    /// come back, and a fully promoted file is served by passthrough from
    /// memory again. The move runs as the chunk's flight; the reader, who
    /// has its bytes already, does not wait for it.
    fn promote_if_hot(&self, file: &FileRef, key: ChunkKey, entry: &Entry) {
        if entry.tier != TierKind::Disk
            || entry.hits < PROMOTE_AFTER_HITS
            || file.placement.policy == TierPolicy::DiskOnly
            || file.placement.only == Some(TierKind::Disk)
            || !self.state().fits(TierKind::Memory, u64::from(entry.len))
        {
            return;
        }
        // Started or already under way: either way not waited for.
        let _ = self.start_relocation(key, TierKind::Memory);
    }

    /// Joins (or starts) the one flight of a chunk, and waits for its end.
    async fn fetch(&self, file: &FileRef, idx: u32) -> Result<Flight, StoreError> {
        let (wait, _) = self.flight(file.key(idx), || {
            let (store, file) = (self.clone(), file.clone());
            async move { store.fetch_now(&file, idx).await.map_err(Arc::new) }
        });
        wait.await.map_err(StoreError::Shared)
    }

    /// The chunk's flight: the one under way (false), or a new task
    /// running `work` (true). The caller awaits the returned end or not:
    /// the flight runs to its end either way.
    fn flight<F>(&self, key: ChunkKey, work: impl FnOnce() -> F) -> (FlightWait, bool)
    where
        F: std::future::Future<Output = FlightResult> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        {
            let mut map = self.inner.inflight.lock().expect("inflight lock");
            if let Some(wait) = map.get(&key) {
                return (wait.clone(), false);
            }
            let wait = rx
                .map(|r| {
                    r.unwrap_or_else(|_| {
                        Err(Arc::new(StoreError::Io(std::io::Error::other(
                            "the chunk's flight was stopped (shutting down)",
                        ))))
                    })
                })
                .boxed()
                .shared();
            map.insert(key, wait.clone());
            drop(map);
            let end = FlightEnd {
                store: self.inner.clone(),
                key,
                wait: wait.clone(),
            };
            let work = work();
            self.inner.flights.spawn(async move {
                let result = work.await;
                // Out of the map before anyone sees the result: a waiter
                // that looks again starts a new flight, never this one.
                drop(end);
                let _ = tx.send(result);
            });
            (wait, true)
        }
    }

    /// Waits until no flight is under way (a clean stop; tests).
    pub async fn quiesce(&self) {
        let flights = &self.inner.flights;
        flights.close();
        flights.wait().await;
        flights.reopen();
    }

    async fn fetch_now(&self, file: &FileRef, idx: u32) -> Result<Flight, StoreError> {
        let key = file.key(idx);
        if self.state().get(&key).is_some() {
            return Ok(Flight::Retry);
        }
        let m = &self.inner.metrics;
        m.misses.inc();
        let range = file.chunk_range(idx);
        let known = self
            .inner
            .index
            .get(&keys::chunk_map(&key))?
            .and_then(|v| index::decode_chunk_map(&v));
        // Every source below yields bytes with their verified hash, so no
        // chunk is hashed twice on this path.
        let local = match known {
            Some((hash, _)) => self.read_identical(&hash, &key).await.map(|b| (b, hash)),
            None => None,
        };
        let from_peer = match (&local, self.inner.peers.get()) {
            (None, Some(peers)) => {
                self.inner.peer_meter.begin(std::time::Instant::now());
                let got = peers
                    .fetch(file, idx)
                    .await
                    .filter(|(b, _)| b.len() as u64 == range.end - range.start)
                    .filter(|(_, h)| known.is_none_or(|(k, _)| k == *h));
                let n = got.as_ref().map_or(0, |(b, _)| b.len() as u64);
                self.inner
                    .peer_meter
                    .end(std::time::Instant::now(), n, unix_ms());
                got
            }
            _ => None,
        };
        let (bytes, hash) = match (local, from_peer) {
            (Some(found), _) => {
                m.dedup_fills.inc();
                found
            }
            (None, Some(found)) => found,
            (None, None) => {
                let b = self
                    .fetch_origin(file, range.clone(), &self.inner.origin_permits)
                    .await?;
                let h = *blake3::hash(&b).as_bytes();
                (b, h)
            }
        };
        match known {
            Some((want, _)) if want != hash => {
                return Err(OriginError::Changed {
                    path: file.object.path.clone(),
                    detail: "bytes differ from the hash recorded for this version".into(),
                }
                .into())
            }
            Some(_) => {}
            None => {
                let mut seen = false;
                self.inner
                    .index
                    .for_each(&keys::by_hash_prefix(&hash), |_, _| {
                        seen = true;
                        false
                    })?;
                if seen {
                    m.dedup_chunks.inc();
                }
            }
        }
        if !self.place(file, key, range.start, &bytes, hash).await? {
            m.uncached_reads.inc();
        }
        self.update_gauges();
        Ok(Flight::Bytes(bytes))
    }

    /// Bytes with hash `hash` resident under another key, verified.
    async fn read_identical(&self, hash: &[u8; 32], except: &ChunkKey) -> Option<Bytes> {
        let mut candidates = Vec::new();
        self.inner
            .index
            .for_each(&keys::by_hash_prefix(hash), |k, _| {
                if let Some(c) = keys::chunk_of(k) {
                    if c != *except {
                        candidates.push(c);
                    }
                }
                true
            })
            .ok()?;
        for c in candidates {
            if self.suspect(&c).is_some() {
                continue;
            }
            let Some(entry) = self.state().acquire(&c) else {
                continue;
            };
            let _guard = ReadGuard {
                store: &self.inner,
                key: c,
            };
            let got = files::read_at(
                self.path(entry.tier, &c.fv),
                entry.offset,
                entry.len as usize,
            )
            .await;
            if let Ok(b) = got {
                if blake3::hash(&b).as_bytes() == hash {
                    return Some(b);
                }
            }
        }
        None
    }

    async fn fetch_origin(
        &self,
        file: &FileRef,
        range: std::ops::Range<u64>,
        permits: &Semaphore,
    ) -> Result<Bytes, StoreError> {
        let _permit = permits.acquire().await.expect("semaphore never closed");
        let m = &self.inner.metrics;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let meter = &self.inner.origin_meter;
            meter.begin(std::time::Instant::now());
            let got = file.origin.read_range(&file.object, range.clone()).await;
            let n = got.as_ref().map_or(0, |b| b.len() as u64);
            meter.end(std::time::Instant::now(), n, unix_ms());
            match got {
                Ok(b) => {
                    m.origin_requests
                        .get_or_create(&vec![("result", "ok")])
                        .inc();
                    m.origin_bytes.inc_by(b.len() as u64);
                    return Ok(b);
                }
                Err(e @ OriginError::Changed { .. }) => {
                    m.origin_requests
                        .get_or_create(&vec![("result", "changed")])
                        .inc();
                    return Err(e.into());
                }
                Err(e) => {
                    m.origin_requests
                        .get_or_create(&vec![("result", "error")])
                        .inc();
                    let transient = matches!(
                        e,
                        OriginError::Unavailable(_)
                            | OriginError::ShortRead { .. }
                            | OriginError::Io(_)
                    );
                    if !transient || attempt >= MAX_ORIGIN_ATTEMPTS {
                        return Err(e.into());
                    }
                    tracing::warn!(path = %file.object.path, attempt, error = %e, "origin read failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100 << (2 * attempt))).await;
                }
            }
        }
    }

    /// Stores a fetched chunk in the first tier of its policy with room.
    /// Returns false when no tier could take it (the read still succeeds).
    async fn place(
        &self,
        file: &FileRef,
        key: ChunkKey,
        offset: u64,
        bytes: &Bytes,
        hash: [u8; 32],
    ) -> Result<bool, StoreError> {
        let tiers: &[TierKind] = match (file.placement.only, file.placement.policy) {
            (Some(TierKind::Memory), _) => &[TierKind::Memory],
            (Some(TierKind::Disk), _) => &[TierKind::Disk],
            (None, TierPolicy::MemoryThenDisk) => &[TierKind::Memory, TierKind::Disk],
            (None, TierPolicy::DiskOnly) => &[TierKind::Disk],
            (None, TierPolicy::MemoryOnly) => &[TierKind::Memory],
        };
        let entry = Entry {
            tier: TierKind::Memory,
            len: bytes.len() as u32,
            hash,
            tick: 0,
            pinned: file.placement.pin,
            memory_only: file.placement.policy == TierPolicy::MemoryOnly,
            readers: 0,
            leaving: false,
            hits: 0,
            offset,
        };
        for &tier in tiers {
            if !self.make_room(tier, bytes.len() as u64).await {
                continue;
            }
            match self.write_chunk(tier, key, bytes.clone(), entry).await {
                Ok(()) => return Ok(true),
                Err(StoreError::Io(e)) if files::is_no_space(&e) => {
                    tracing::warn!(
                        tier = tier.name(),
                        "tier medium is full; trying the next tier"
                    );
                }
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    /// Reserves room in a tier, evicting as the residency state asks.
    async fn make_room(&self, tier: TierKind, len: u64) -> bool {
        for _ in 0..16 {
            let room = self.state().reserve(tier, len);
            match room {
                Room::Reserved => return true,
                Room::Full => return false,
                Room::Evict(victims) => {
                    // Every victim's flight starts before anything is
                    // awaited: a chunk marked leaving always has one.
                    let evictions: Vec<FlightWait> =
                        victims.into_iter().map(|v| self.evict(v, true)).collect();
                    futures::future::join_all(evictions).await;
                }
            }
        }
        false
    }

    async fn write_chunk(
        &self,
        tier: TierKind,
        key: ChunkKey,
        bytes: Bytes,
        mut entry: Entry,
    ) -> Result<(), StoreError> {
        entry.tier = tier;
        let len = u64::from(entry.len);
        let path = self.path(tier, &key.fv);
        let rec = entry.record();
        let _writing = self.begin_write(key.fv, tier).await;
        let written = async {
            self.inner.index.put(&keys::pending(&key), &rec.encode())?;
            files::write_at(path.clone(), entry.offset, bytes).await?;
            let mut batch = WriteBatch::default();
            batch.delete(keys::pending(&key));
            batch.put(keys::resident(&key), rec.encode());
            batch.put(
                keys::chunk_map(&key),
                index::encode_chunk_map(&entry.hash, entry.len),
            );
            batch.put(keys::by_hash(&entry.hash, &key), []);
            self.inner.index.write(batch)?;
            Ok::<_, StoreError>(())
        }
        .await;
        match written {
            Ok(()) => {
                self.state().commit(tier, key, entry);
                Ok(())
            }
            Err(e) => {
                self.state().unreserve(tier, len);
                if files::punch(path, entry.offset, len).await.is_ok() {
                    let mut batch = WriteBatch::default();
                    batch.delete(keys::pending(&key));
                    let _ = self.inner.index.write(batch);
                }
                Err(e)
            }
        }
    }

    /// Starts evicting one chunk (already marked leaving) in a flight of
    /// its own, and returns its end; a memory chunk is demoted to disk when
    /// `demote` and the disk has room. When another flight has the chunk,
    /// the chunk stays (and that flight's end is returned).
    fn evict(&self, key: ChunkKey, demote: bool) -> FlightWait {
        let (wait, started) = self.flight(key, || {
            let store = self.clone();
            async move {
                if let Err(e) = store.evict_now(key, demote).await {
                    tracing::warn!(error = %e, "eviction failed; chunk stays");
                    store.state().stay(&key);
                }
                store.update_gauges();
                Ok(Flight::Retry)
            }
        });
        if !started {
            self.state().stay(&key);
        }
        wait
    }

    async fn evict_now(&self, key: ChunkKey, demote: bool) -> Result<(), StoreError> {
        let Some(entry) = self.state().get(&key).copied() else {
            return Ok(());
        };
        let len = u64::from(entry.len);
        let m = &self.inner.metrics;
        let from = self.path(entry.tier, &key.fv);
        if demote
            && entry.tier == TierKind::Memory
            && !entry.memory_only
            && matches!(self.relocate(key, entry, TierKind::Disk).await, Ok(true))
        {
            return Ok(());
        }
        // The file stays (no purge removes it) until its hole is punched:
        // a punch landing on a file recreated meanwhile would zero a chunk
        // written there since.
        let _busy = self.begin_write(key.fv, entry.tier).await;
        let mut batch = WriteBatch::default();
        batch.delete(keys::resident(&key));
        batch.delete(keys::by_hash(&entry.hash, &key));
        self.inner.index.write(batch)?;
        self.state().remove(&key);
        files::punch(from, entry.offset, len).await?;
        m.evictions
            .get_or_create(&vec![("tier", entry.tier.name()), ("action", "drop")])
            .inc();
        Ok(())
    }

    /// Drops every resident chunk of a file version and its backing files
    /// (used when no dataset refers to it any more).
    pub async fn purge(&self, fv: FileVersionId) {
        let chunks = self.state().chunks_of(&fv);
        for key in chunks {
            if self.state().claim(&key) {
                let _ = self.evict(key, false).await;
            }
        }
        for t in TierKind::ALL {
            if self.inner.dirs[t as usize].is_none() {
                continue;
            }
            // Only a file no chunk lives in and no write has open; writes
            // starting meanwhile wait until it is gone (begin_write).
            let file = (fv, t);
            {
                let mut busy = self.inner.files_busy.lock().expect("files lock");
                if busy.writes.contains_key(&file)
                    || self.state().fv_usage(&fv).chunks[t as usize] > 0
                {
                    continue;
                }
                busy.removing.insert(file);
            }
            let _ = files::remove(self.path(t, &fv)).await;
            self.inner
                .files_busy
                .lock()
                .expect("files lock")
                .removing
                .remove(&file);
            self.inner.files_changed.notify_waiters();
        }
        self.update_gauges();
    }

    /// Registers a write (a chunk, or a hole) on a backing file, after any
    /// removal of that file under way; the file is not removed until the
    /// guard drops.
    async fn begin_write(&self, fv: FileVersionId, tier: TierKind) -> WriteGuard<'_> {
        let file = (fv, tier);
        let register = || {
            let mut busy = self.inner.files_busy.lock().expect("files lock");
            if busy.removing.contains(&file) {
                return None;
            }
            *busy.writes.entry(file).or_default() += 1;
            Some(WriteGuard {
                store: &self.inner,
                file,
            })
        };
        loop {
            // Removals are rare: wait for one only when it is under way.
            if let Some(guard) = register() {
                return guard;
            }
            let removed = self.inner.files_changed.notified();
            tokio::pin!(removed);
            removed.as_mut().enable();
            if let Some(guard) = register() {
                return guard;
            }
            removed.await;
        }
    }

    /// Where `[offset, offset+len)` of a file can be read directly, if every
    /// chunk of it is resident in one tier.
    pub fn backing(&self, file: &FileRef, offset: u64, len: u64) -> Option<Backing> {
        // Direct readers bypass the node: nothing unverified goes to them.
        if self
            .inner
            .suspects
            .lock()
            .expect("suspects lock")
            .per_fv
            .contains_key(&file.fv)
        {
            return None;
        }
        let end = offset.saturating_add(len).min(file.size);
        let st = self.state();
        let first = (offset / file.chunk_size) as u32;
        let last = (end.saturating_sub(1) / file.chunk_size) as u32;
        let mut tier = None;
        for idx in first..=last.max(first) {
            let e = st.get(&file.key(idx)).filter(|e| !e.leaving)?;
            if *tier.get_or_insert(e.tier) != e.tier {
                return None;
            }
        }
        let tier = tier?;
        let complete = u64::from(st.fv_usage(&file.fv).chunks[tier as usize]) == file.chunks();
        drop(st);
        Some(Backing {
            path: self.path(tier, &file.fv),
            tier,
            complete,
        })
    }

    /// The blake3 recorded for a chunk when it was first fetched, if any.
    pub fn chunk_hash(&self, fv: FileVersionId, idx: u32) -> Result<Option<[u8; 32]>, StoreError> {
        let key = ChunkKey { fv, idx };
        Ok(self
            .inner
            .index
            .get(&keys::chunk_map(&key))?
            .and_then(|v| index::decode_chunk_map(&v))
            .map(|(h, _)| h))
    }

    /// Pins a file version against eviction until [`ChunkStore::unpin`]
    /// (a prewarm `--pin`; persisted by the caller).
    pub fn pin(&self, fv: FileVersionId) {
        self.state().pin(fv);
    }

    /// Drops one [`ChunkStore::pin`].
    pub fn unpin(&self, fv: &FileVersionId) {
        self.state().unpin(fv);
    }

    /// Registers a locality group (a dataset version) over its file versions.
    pub fn add_group(&self, group: GroupKey, fvs: impl IntoIterator<Item = FileVersionId>) {
        self.state().add_group(group, fvs);
    }

    /// Forgets a locality group.
    pub fn remove_group(&self, group: &GroupKey) {
        self.state().remove_group(group);
    }

    /// Resident bytes per tier (memory, disk) of a registered group.
    pub fn group_bytes(&self, group: &GroupKey) -> Option<[u64; 2]> {
        self.state().group_bytes(group)
    }

    /// Every registered group with its resident bytes per tier.
    pub fn groups(&self) -> Vec<(GroupKey, [u64; 2])> {
        self.state().groups()
    }

    /// Resident bytes of a set of files per tier (memory, disk), in one
    /// pass under one lock.
    pub fn resident_of(&self, files: &[FileRef]) -> [u64; 2] {
        let st = self.state();
        files.iter().fold([0, 0], |[m, d], f| {
            let b = st.fv_usage(&f.fv).bytes;
            [m + b[0].min(f.size), d + b[1].min(f.size)]
        })
    }

    /// Measured origin and peer throughput: ((bytes/s, at ms), (bytes/s, at ms)).
    pub fn bandwidth(&self) -> ((u64, i64), (u64, i64)) {
        let now = std::time::Instant::now();
        (
            self.inner.origin_meter.sample(now),
            self.inner.peer_meter.sample(now),
        )
    }

    /// Node-wide (origin bytes, verified peer bytes) received so far.
    pub fn transfer_counters(&self) -> (u64, u64) {
        let m = &self.inner.metrics;
        (m.origin_bytes.get(), m.peer_bytes.get())
    }

    /// Pins a file version's chunks against eviction (an open handle).
    pub fn hold(&self, fv: FileVersionId) {
        self.state().hold(fv);
    }

    /// Releases one [`ChunkStore::hold`].
    pub fn unhold(&self, fv: &FileVersionId) {
        self.state().unhold(fv);
    }

    /// Resident bytes of a file version across tiers.
    pub fn resident_bytes(&self, fv: &FileVersionId) -> u64 {
        self.state().fv_usage(fv).bytes.iter().sum()
    }

    /// Every file version with resident chunks.
    pub fn file_versions(&self) -> Vec<FileVersionId> {
        self.state().file_versions()
    }

    /// Usage of each configured tier.
    pub fn usage(&self) -> Vec<TierUsage> {
        let st = self.state();
        TierKind::ALL
            .iter()
            .filter_map(|&t| {
                let b = st.budget(t)?;
                Some(TierUsage {
                    tier: t,
                    dir: self.inner.dirs[t as usize].clone()?,
                    used: st.used(t),
                    quota: b.quota,
                    pinned: st.pinned(t),
                    high: b.high_bytes(),
                })
            })
            .collect()
    }

    /// Persists access clocks changed since the last flush (LRU order and
    /// access statistics survive restarts).
    pub fn flush_access(&self) -> Result<usize, StoreError> {
        // Written under the state lock, skipping leaving chunks: an eviction
        // marks its chunk leaving (under this lock) before deleting the
        // record, so this can never resurrect a record it deleted.
        let mut st = self.state();
        let dirty = st.take_dirty();
        let mut batch = WriteBatch::default();
        let mut n = 0;
        for (k, e) in dirty.iter().filter(|(_, e)| !e.leaving) {
            batch.put(keys::resident(k), e.record().encode());
            n += 1;
        }
        self.inner.index.write(batch)?;
        drop(st);
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
