//! The filesystem core: everything the mount does, as async functions over
//! the cache node's read API, with no `fuser` types (the adapter in
//! `fuse.rs` translates). Errors are [`FsError`]; errno is chosen only in
//! the adapter.
//!
//! A mount is pinned to one manifest version, so every answer may be cached
//! forever: the kernel is told to keep attributes and page cache, and this
//! process keeps what the kernel holds (its inodes) plus a bounded cache of
//! directory listings (`inodes.rs`), so its memory does not grow with the
//! number of files walked.
//!
//! Node restarts: every request is retried on a fresh connection until
//! `retry_for` has passed, so a reader sees a delay, not an error.
//!
//! A reader must never hang: the kernel waits for our reply in
//! uninterruptible sleep, so a node that accepts a request and then never
//! answers (SIGSTOP, a stuck disk, a paused VM) would otherwise leave every
//! reader unkillable. Every request, connect, lock wait and tier-file read
//! is therefore bounded by the same `retry_for` deadline; past it the
//! operation fails with [`FsError::TimedOut`] (EIO) and the connection it
//! was using is dropped, never reused. Open
//! files hold a *lease* on the node (their chunks are never evicted while
//! open, because the kernel or this process may read the tier file
//! directly); leases live on one control connection, and a watchdog
//! re-establishes them when that connection breaks.

use std::collections::HashMap;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use shoal_proto::client::{Client, ClientError, Endpoint};
use shoal_proto::v1::{self, request::Kind as Req, response::Kind as Resp};
use tokio::sync::{OnceCell, Semaphore};
use tokio::task::JoinSet;

use crate::inodes::{join, split, Counts, Listing, Meta, Table};
use crate::prefetch::{Sequential, Siblings};
use crate::stalls::Stalls;

/// Errors of filesystem operations.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("not a directory")]
    NotDirectory,
    #[error("is a directory")]
    IsDirectory,
    #[error("bad file handle")]
    BadHandle,
    #[error("cache node unavailable: {0}")]
    Unavailable(String),
    #[error("cache node did not answer within {0:?}")]
    TimedOut(Duration),
    #[error("origin or cache failure: {0}")]
    Remote(String),
    #[error("local i/o on a tier file: {0}")]
    Io(#[from] std::io::Error),
}

impl FsError {
    fn from_client(e: ClientError) -> Self {
        match e {
            ClientError::Remote { code, message } => match code {
                v1::ErrorCode::NotFound => FsError::NotFound,
                v1::ErrorCode::NotDirectory => FsError::NotDirectory,
                v1::ErrorCode::IsDirectory => FsError::IsDirectory,
                _ => FsError::Remote(message),
            },
            e if e.is_connection() => FsError::Unavailable(e.to_string()),
            e => FsError::Remote(e.to_string()),
        }
    }
}

/// File type, as the manifest has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Directory,
    Symlink,
}

/// Attributes of an inode.
#[derive(Debug, Clone)]
pub struct Attr {
    pub ino: u64,
    pub kind: Kind,
    pub size: u64,
    pub mtime: SystemTime,
    /// Permission bits only.
    pub perm: u16,
    /// The origin's (uid, gid), if it has owners.
    pub owner: Option<(u32, u32)>,
}

/// Settings of a mount.
#[derive(Debug, Clone)]
pub struct Settings {
    pub endpoint: Endpoint,
    pub dataset: String,
    /// 0 = the latest version at mount time.
    pub version: u64,
    /// How long a request keeps retrying while the node is unreachable.
    pub retry_for: Duration,
    /// Bytes of prefetch in flight per mount.
    pub prefetch_budget: u64,
}

/// What `open` decided.
#[derive(Debug)]
pub struct Opened {
    pub fh: u64,
    /// The tier file holding the whole file: hand it to the kernel.
    pub passthrough: Option<std::fs::File>,
}

struct OpenFile {
    path: String,
    size: u64,
    /// The node's handle id for the lease (changes when re-established).
    lease: AtomicU64,
    seq: Mutex<Sequential>,
    /// The node holds the file for this open (it was whole in one tier at
    /// open): only then may its tier file be read directly, eviction
    /// cannot punch a hole under the read.
    held: bool,
    /// Tier file last used for direct reads.
    backing: Mutex<Option<(String, Arc<std::fs::File>)>>,
}

/// One fetch of a directory's listing, shared by everyone who wants it
/// while it is under way.
type ListingFetch = Arc<OnceCell<Arc<Listing>>>;

/// The mounted dataset.
pub struct Core {
    s: Settings,
    version: u64,
    pool: Mutex<Vec<Client>>,
    control: tokio::sync::Mutex<Option<Client>>,
    inodes: Mutex<Table>,
    files: Mutex<HashMap<u64, Arc<OpenFile>>>,
    next_fh: AtomicU64,
    prefetch_budget: Arc<Semaphore>,
    prefetches: Mutex<JoinSet<()>>,
    /// Directory walks in progress, by directory inode.
    walks: Mutex<HashMap<u64, Siblings>>,
    /// Tree walks in progress (subdirectories listed in order), by
    /// directory inode.
    tree_walks: Mutex<HashMap<u64, Siblings<LISTINGS_AHEAD>>>,
    /// Listings being fetched, by directory path: one fetch per directory
    /// however many readers (and prefetches) want it.
    fetching: Mutex<HashMap<Box<str>, ListingFetch>>,
    /// Reads that just timed out (see `stalls.rs`).
    stalls: Mutex<Stalls>,
    total_bytes: u64,
    total_files: u64,
}

/// Directories whose walks are tracked at once.
const MAX_WALKS: usize = 64;

/// Subdirectory listings fetched ahead of a tree walk: the next ones are
/// ready when the walker gets there, instead of each listing's round trip
/// to the node waiting behind the walker's work on the last one.
const LISTINGS_AHEAD: usize = 2;

/// Prefetch budget unit: permits are MiB.
const MIB: u64 = 1 << 20;

/// Bytes of directory listings kept (about 300,000 entries of 20-byte
/// names); the kernel keeps its own copy of what it was given.
const LISTING_BUDGET: usize = 16 << 20;

impl Core {
    /// Connects, resolves the dataset and version, and loads the root.
    /// Errors keep the node's own words (they end up on the operator's terminal).
    pub async fn connect(s: Settings) -> Result<Arc<Self>, FsError> {
        let plain = |e: ClientError| {
            if e.is_connection() {
                FsError::Unavailable(e.to_string())
            } else {
                FsError::Remote(e.to_string())
            }
        };
        let mut c = Client::connect(&s.endpoint).await.map_err(plain)?;
        let Resp::Dataset(d) = c
            .call(Req::Get(v1::DatasetRef {
                name: s.dataset.clone(),
            }))
            .await
            .map_err(plain)?
        else {
            return Err(FsError::Remote("unexpected response".into()));
        };
        let version = if s.version == 0 { d.version } else { s.version };
        if !d.versions.contains(&version) {
            return Err(FsError::Remote(format!(
                "dataset {:?} has no manifest version {version} (versions {:?})",
                s.dataset, d.versions
            )));
        }
        let root = match c
            .call(Req::Stat(v1::PathRef {
                dataset: s.dataset.clone(),
                version,
                path: String::new(),
            }))
            .await
            .map_err(plain)?
        {
            Resp::Entry(e) => e,
            _ => return Err(FsError::Remote("unexpected response".into())),
        };
        let permits = (s.prefetch_budget / MIB).max(1) as usize;
        Ok(Arc::new(Self {
            version,
            pool: Mutex::new(vec![c]),
            control: tokio::sync::Mutex::new(None),
            inodes: Mutex::new(Table::new(Meta::of(&root), LISTING_BUDGET)),
            files: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            prefetch_budget: Arc::new(Semaphore::new(permits)),
            prefetches: Mutex::new(JoinSet::new()),
            walks: Mutex::new(HashMap::new()),
            tree_walks: Mutex::new(HashMap::new()),
            fetching: Mutex::new(HashMap::new()),
            stalls: Mutex::new(Stalls::default()),
            total_bytes: d.total_bytes,
            total_files: d.files + d.directories,
            s,
        }))
    }

    /// The manifest version this mount serves.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// (total bytes, total inodes) for statfs.
    pub fn totals(&self) -> (u64, u64) {
        (self.total_bytes, self.total_files)
    }

    fn path_ref(&self, path: &str) -> v1::PathRef {
        v1::PathRef {
            dataset: self.s.dataset.clone(),
            version: self.version,
            path: path.to_string(),
        }
    }

    /// One request on a pooled connection, retried across node restarts,
    /// and bounded as a whole by `retry_for`.
    async fn call(&self, kind: Req) -> Result<Resp, FsError> {
        self.call_until(Instant::now() + self.s.retry_for, kind)
            .await
    }

    /// [`Core::call`] within a deadline shared with other steps of one
    /// operation.
    async fn call_until(&self, deadline: Instant, kind: Req) -> Result<Resp, FsError> {
        let mut delay = Duration::from_millis(20);
        loop {
            let attempt = async {
                let pooled = self.pool.lock().expect("pool lock").pop();
                let mut c = match pooled {
                    Some(c) => c,
                    None => Client::connect(&self.s.endpoint).await?,
                };
                let r = c.call(kind.clone()).await;
                // A connection is pooled again only after a complete
                // exchange: one abandoned mid-call (deadline) is dropped.
                if !matches!(&r, Err(e) if e.is_connection()) {
                    self.pool.lock().expect("pool lock").push(c);
                }
                r
            };
            match self.bounded(deadline, attempt).await? {
                Err(e) if e.is_connection() && Instant::now() < deadline => {
                    tracing::debug!(error = %e, "cache node unreachable; retrying");
                    self.bounded(deadline, tokio::time::sleep(delay)).await?;
                    delay = (delay * 2).min(Duration::from_millis(500));
                }
                r => return r.map_err(FsError::from_client),
            }
        }
    }

    /// Runs `fut` until `deadline`; past it the work is dropped and the
    /// caller gets [`FsError::TimedOut`].
    async fn bounded<T>(
        &self,
        deadline: Instant,
        fut: impl std::future::Future<Output = T>,
    ) -> Result<T, FsError> {
        tokio::time::timeout_at(deadline.into(), fut)
            .await
            .map_err(|_| {
                tracing::warn!(
                    retry_secs = self.s.retry_for.as_secs(),
                    "cache node did not answer in time; failing the request with EIO"
                );
                FsError::TimedOut(self.s.retry_for)
            })
    }

    /// Path and attributes of a held inode.
    fn node(&self, ino: u64) -> Result<(String, Meta), FsError> {
        let t = self.inodes.lock().expect("inode lock");
        let (path, meta) = t.get(ino).ok_or(FsError::NotFound)?;
        Ok((path.to_string(), meta))
    }

    /// Resolves `name` in directory `parent` and counts the reference the
    /// reply hands the kernel. Answered from the directory's listing when
    /// it is cached, by the node otherwise.
    pub async fn lookup(self: &Arc<Self>, parent: u64, name: &str) -> Result<Attr, FsError> {
        let dir = {
            let mut t = self.inodes.lock().expect("inode lock");
            let (dir, meta) = t.get(parent).ok_or(FsError::NotFound)?;
            if meta.kind != Kind::Directory {
                return Err(FsError::NotDirectory);
            }
            let dir = dir.to_string();
            if let Some(listing) = t.listing(parent) {
                let i = listing.find(name).ok_or(FsError::NotFound)?;
                return Ok(t.reference_entry(&listing, i));
            }
            dir
        };
        // A process opening files by path (from an index, without listing
        // the directory) gets the listing fetched meanwhile: the next
        // lookups are answered locally and a walk over its files is seen
        // (sibling prefetch needs the listing).
        self.list_in_background(parent, &dir);
        match self
            .call(Req::Stat(self.path_ref(&join(&dir, name))))
            .await?
        {
            Resp::Entry(e) => {
                let target = (e.kind() == v1::FileKind::Symlink).then_some(&*e.symlink_target);
                let mut t = self.inodes.lock().expect("inode lock");
                Ok(t.reference(&dir, name, Meta::of(&e), target))
            }
            _ => Err(FsError::Remote("unexpected response".into())),
        }
    }

    /// Counts the reference a READDIRPLUS reply hands the kernel for entry
    /// `i` of `listing`.
    pub fn reference(&self, listing: &Listing, i: usize) -> Attr {
        self.inodes
            .lock()
            .expect("inode lock")
            .reference_entry(listing, i)
    }

    /// The inode number of entry `i` of `listing`, handing out no reference.
    pub fn number(&self, listing: &Listing, i: usize) -> u64 {
        self.inodes
            .lock()
            .expect("inode lock")
            .number(listing.dir(), listing.name(i))
    }

    /// The kernel gives back references: (inode, count) pairs.
    pub fn forget(&self, nodes: impl IntoIterator<Item = (u64, u64)>) {
        let mut t = self.inodes.lock().expect("inode lock");
        for (ino, n) in nodes {
            t.forget(ino, n);
        }
    }

    /// Inodes held and listing entries cached.
    pub fn counts(&self) -> Counts {
        self.inodes.lock().expect("inode lock").counts()
    }

    pub fn getattr(&self, ino: u64) -> Result<Attr, FsError> {
        let t = self.inodes.lock().expect("inode lock");
        let (_, meta) = t.get(ino).ok_or(FsError::NotFound)?;
        Ok(meta.attr(ino))
    }

    pub fn readlink(&self, ino: u64) -> Result<String, FsError> {
        let t = self.inodes.lock().expect("inode lock");
        t.target(ino).map(str::to_string).ok_or(FsError::NotFound)
    }

    /// Every entry of a directory, sorted by name (cached within the
    /// listing budget).
    pub async fn listing(&self, ino: u64) -> Result<Arc<Listing>, FsError> {
        let path = {
            let mut t = self.inodes.lock().expect("inode lock");
            let (path, meta) = t.get(ino).ok_or(FsError::NotFound)?;
            if meta.kind != Kind::Directory {
                return Err(FsError::NotDirectory);
            }
            let path = path.to_string();
            if let Some(listing) = t.listing(ino) {
                return Ok(listing);
            }
            path
        };
        let fetch = self
            .fetching
            .lock()
            .expect("fetching lock")
            .entry(path.as_str().into())
            .or_default()
            .clone();
        let listing = fetch
            .get_or_try_init(|| async {
                let Resp::Dir(d) = self.call(Req::ListDir(self.path_ref(&path))).await? else {
                    return Err(FsError::Remote("unexpected response".into()));
                };
                let listing = Arc::new(Listing::new(&path, d.entries));
                self.inodes
                    .lock()
                    .expect("inode lock")
                    .keep_listing(ino, listing.clone());
                Ok(listing)
            })
            .await
            .cloned();
        let mut fetching = self.fetching.lock().expect("fetching lock");
        if fetching
            .get(path.as_str())
            .is_some_and(|f| Arc::ptr_eq(f, &fetch))
        {
            fetching.remove(path.as_str());
        }
        listing
    }

    /// A process opened directory `ino`: when it is walking its parent's
    /// subdirectories in order, the next ones' listings are fetched in the
    /// background (and cached, within the listing budget).
    pub fn opened_dir(self: &Arc<Self>, ino: u64) {
        let next: Vec<u64> = {
            let mut t = self.inodes.lock().expect("inode lock");
            let Some((path, _)) = t.get(ino) else { return };
            if path.is_empty() {
                return;
            }
            let (dir, name) = split(path);
            let (dir, name) = (dir.to_string(), name.to_string());
            let Some(parent) = t.find_path(&dir) else {
                return;
            };
            let Some(listing) = t.listing(parent) else {
                return;
            };
            let Some(rank) = listing
                .find(&name)
                .and_then(|i| listing.subdirs().binary_search(&(i as u32)).ok())
            else {
                return;
            };
            let range = {
                let mut walks = self.tree_walks.lock().expect("walks lock");
                if walks.len() > MAX_WALKS && !walks.contains_key(&parent) {
                    walks.clear();
                }
                walks
                    .entry(parent)
                    .or_default()
                    .on_open(rank, listing.subdirs().len())
            };
            let Some(range) = range else { return };
            // Only subdirectories the kernel holds (it was handed them by
            // READDIRPLUS) and not listed yet.
            listing.subdirs()[range]
                .iter()
                .filter_map(|&i| t.find(&dir, listing.name(i as usize)))
                .filter(|&sub| !t.has_listing(sub))
                .collect()
        };
        for sub in next {
            let core = self.clone();
            self.spawn_background(async move {
                if let Err(e) = core.listing(sub).await {
                    tracing::debug!(error = %e, "listing prefetch failed");
                }
            });
        }
    }

    /// Runs `f` in the mount's background set (stopped at shutdown),
    /// reaping finished tasks.
    fn spawn_background(&self, f: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut tasks = self.prefetches.lock().expect("prefetch lock");
        while tasks.try_join_next().is_some() {}
        tasks.spawn(f);
    }

    /// Fetches a directory's listing in the background unless it is
    /// already being fetched.
    fn list_in_background(self: &Arc<Self>, ino: u64, path: &str) {
        if self
            .fetching
            .lock()
            .expect("fetching lock")
            .contains_key(path)
        {
            return;
        }
        let core = self.clone();
        self.spawn_background(async move {
            if let Err(e) = core.listing(ino).await {
                tracing::debug!(error = %e, "background listing failed");
            }
        });
    }

    /// Takes a lease on the control connection, (re)connecting and
    /// re-establishing every other lease if the connection was lost. The
    /// wait for the connection and the exchange share one deadline.
    async fn lease(&self, req: Req) -> Result<Resp, FsError> {
        let deadline = Instant::now() + self.s.retry_for;
        let mut control = self.bounded(deadline, self.control.lock()).await?;
        loop {
            let step = async {
                if control.is_none() {
                    *control = Some(self.reconnect_control().await?);
                }
                let c = control.as_mut().expect("connected above");
                c.call(req.clone()).await
            };
            match self.bounded(deadline, step).await {
                Err(timeout) => {
                    // Abandoned mid-exchange: the connection's state is unknown.
                    *control = None;
                    return Err(timeout);
                }
                Ok(Err(e)) if e.is_connection() => {
                    *control = None;
                    if Instant::now() >= deadline {
                        return Err(FsError::from_client(e));
                    }
                    self.bounded(deadline, tokio::time::sleep(Duration::from_millis(100)))
                        .await?;
                }
                Ok(r) => return r.map_err(FsError::from_client),
            }
        }
    }

    /// A new control connection with every open file's lease re-taken.
    async fn reconnect_control(&self) -> Result<Client, ClientError> {
        let mut c = Client::connect(&self.s.endpoint).await?;
        let open: Vec<Arc<OpenFile>> = self
            .files
            .lock()
            .expect("files lock")
            .values()
            .cloned()
            .collect();
        for f in &open {
            if let Resp::Opened(o) = c.call(Req::Open(self.path_ref(&f.path))).await? {
                f.lease.store(o.handle, Ordering::SeqCst);
            }
        }
        if !open.is_empty() {
            tracing::info!(
                leases = open.len(),
                "re-established leases with the cache node"
            );
        }
        Ok(c)
    }

    /// Checks the control connection; re-leases after a node restart.
    pub async fn keepalive(&self) {
        // A Stat of the root of our version: the node sees the version in
        // use (it keeps versions mounts use) and the connection alive.
        let _ = self.lease(Req::Stat(self.path_ref(""))).await;
    }

    pub async fn open(self: &Arc<Self>, ino: u64) -> Result<Opened, FsError> {
        let (path, meta) = self.node(ino)?;
        match meta.kind {
            Kind::Directory => return Err(FsError::IsDirectory),
            Kind::Symlink => return Err(FsError::NotFound),
            Kind::File => {}
        }
        self.warm_siblings(&path);
        let Resp::Opened(o) = self.lease(Req::Open(self.path_ref(&path))).await? else {
            return Err(FsError::Remote("unexpected response".into()));
        };
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        let held = o.backing.as_ref().is_some_and(|b| b.complete);
        self.files.lock().expect("files lock").insert(
            fh,
            Arc::new(OpenFile {
                path,
                size: meta.size,
                lease: AtomicU64::new(o.handle),
                seq: Mutex::new(Sequential::default()),
                held,
                backing: Mutex::new(None),
            }),
        );
        let passthrough = match o.backing {
            Some(b) if b.complete && !b.path.is_empty() => match std::fs::File::open(&b.path) {
                Ok(f) => Some(f),
                Err(e) => {
                    tracing::warn!(path = %b.path, error = %e, "cannot open tier file; serving through the node");
                    None
                }
            },
            _ => None,
        };
        Ok(Opened { fh, passthrough })
    }

    /// When opens walk a listed directory in order, warms the next files
    /// (within the mount's prefetch budget). Needs the directory's listing
    /// cached (it is, right after a walker listed it).
    fn warm_siblings(self: &Arc<Self>, path: &str) {
        let (dir, name) = split(path);
        let next: Vec<(String, u64)> = {
            let mut t = self.inodes.lock().expect("inode lock");
            let Some(dir_ino) = t.find_path(dir) else {
                return;
            };
            let Some(listing) = t.listing(dir_ino) else {
                return;
            };
            let Some(idx) = listing.find(name) else {
                return;
            };
            let range = {
                let mut walks = self.walks.lock().expect("walks lock");
                if walks.len() > MAX_WALKS && !walks.contains_key(&dir_ino) {
                    walks.clear();
                }
                walks
                    .entry(dir_ino)
                    .or_default()
                    .on_open(idx, listing.len())
            };
            let Some(range) = range else { return };
            range
                .filter(|&i| listing.meta(i).kind == Kind::File && listing.meta(i).size > 0)
                .map(|i| (join(dir, listing.name(i)), listing.meta(i).size))
                .collect()
        };
        for (path, size) in next {
            self.prefetch(&path, 0..size);
        }
    }

    /// Drops a file's lease. Best effort and never retried: if the control
    /// connection is gone, so is the lease (the node drops a connection's
    /// leases with it), and a reconnect re-leases only files still open.
    pub async fn release(&self, fh: u64) {
        let f = self.files.lock().expect("files lock").remove(&fh);
        let Some(f) = f else { return };
        let id = f.lease.load(Ordering::SeqCst);
        let deadline = Instant::now() + self.s.retry_for;
        let Ok(mut control) = self.bounded(deadline, self.control.lock()).await else {
            return;
        };
        let Some(c) = control.as_mut() else { return };
        match self
            .bounded(deadline, c.call(Req::Close(v1::Handle { id })))
            .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if !e.is_connection() => tracing::debug!(error = %e, "closing lease"),
            // Lost or abandoned mid-exchange: drop the connection (and with
            // it, on the node, every lease it held; a reconnect re-leases).
            _ => *control = None,
        }
    }

    fn file(&self, fh: u64) -> Result<Arc<OpenFile>, FsError> {
        self.files
            .lock()
            .expect("files lock")
            .get(&fh)
            .cloned()
            .ok_or(FsError::BadHandle)
    }

    /// Reads up to `size` bytes at `offset`: straight from the tier file when
    /// the range is resident, through the node otherwise.
    /// A request that retries one which just timed out (the kernel's
    /// retries, see `stalls.rs`) fails at once.
    pub async fn read(self: &Arc<Self>, fh: u64, offset: u64, size: u32) -> Result<Bytes, FsError> {
        let f = self.file(fh)?;
        let end = offset.saturating_add(u64::from(size)).min(f.size);
        if offset >= end {
            return Ok(Bytes::new());
        }
        let retry = self.stalls.lock().expect("stalls lock").is_retry(
            &f.path,
            &(offset..end),
            Instant::now(),
        );
        if retry {
            return Err(FsError::TimedOut(self.s.retry_for));
        }
        let r = self.read_range(&f, offset, end).await;
        if let Err(FsError::TimedOut(_)) = &r {
            self.stalls.lock().expect("stalls lock").timed_out(
                &f.path,
                offset..end,
                Instant::now(),
            );
        }
        r
    }

    async fn read_range(
        self: &Arc<Self>,
        f: &Arc<OpenFile>,
        offset: u64,
        end: u64,
    ) -> Result<Bytes, FsError> {
        let plan = f.seq.lock().expect("seq lock").on_read(offset, end, f.size);
        // A direct read is small and latency-bound: it goes first, alone on
        // the link. Started together, a whole chunk's transfer fills the
        // shaper's queue ahead of it (a stream's first byte took 37 ms
        // behind a 10 ms round trip).
        let warm_after = match plan.warm {
            Some(range) if plan.direct => Some(range),
            Some(range) => {
                self.prefetch(&f.path, range);
                None
            }
            None => None,
        };
        let range = v1::ReadRange {
            file: Some(self.path_ref(&f.path)),
            offset,
            length: end - offset,
            direct: plan.direct,
        };
        // One deadline for the whole request, however many steps it takes
        // (where the bytes are, the tier file, the node's read).
        let deadline = Instant::now() + self.s.retry_for;
        // Only a held file's tier file may be read directly (see OpenFile).
        if f.held {
            if let Resp::Backing(b) = self
                .call_until(deadline, Req::Backing(range.clone()))
                .await?
            {
                if !b.path.is_empty() {
                    // A stuck disk must not hang the reader either.
                    let read = read_tier_file(f, &b.path, offset, (end - offset) as usize);
                    return self.bounded(deadline, read).await?;
                }
            }
        }
        let answer = self.call_until(deadline, Req::Read(range)).await;
        // Whatever the read's outcome: the plan counts this range as warmed.
        if let Some(range) = warm_after {
            self.prefetch(&f.path, range);
        }
        match answer? {
            Resp::Data(d) => Ok(d.data),
            _ => Err(FsError::Remote("unexpected response".into())),
        }
    }

    /// Warms `range` in the node's tiers in the background, within the
    /// mount's prefetch budget (skipped when the budget is spent).
    fn prefetch(self: &Arc<Self>, path: &str, range: Range<u64>) {
        let mib = (range.end - range.start).div_ceil(MIB).max(1) as u32;
        let Ok(permit) = self.prefetch_budget.clone().try_acquire_many_owned(mib) else {
            return;
        };
        let core = self.clone();
        let req = Req::Warm(v1::ReadRange {
            file: Some(self.path_ref(path)),
            offset: range.start,
            length: range.end - range.start,
            direct: false,
        });
        self.spawn_background(async move {
            if let Err(e) = core.call(req).await {
                tracing::debug!(error = %e, "prefetch failed");
            }
            drop(permit);
        });
    }

    /// Stops background prefetches.
    pub fn shutdown(&self) {
        self.prefetches.lock().expect("prefetch lock").abort_all();
    }
}

async fn read_tier_file(
    f: &OpenFile,
    path: &str,
    offset: u64,
    len: usize,
) -> Result<Bytes, FsError> {
    let cached = {
        let cached = f.backing.lock().expect("backing lock");
        cached
            .as_ref()
            .filter(|(p, _)| p == path)
            .map(|(_, file)| file.clone())
    };
    // Opening and reading both touch the tier's filesystem: off the async
    // workers, so a slow disk stalls only this read.
    let path = path.to_string();
    let (file, data) = tokio::task::spawn_blocking(move || {
        let file = match cached {
            Some(file) => file,
            None => Arc::new(std::fs::File::open(&path)?),
        };
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, offset)?;
        Ok::<_, std::io::Error>(((path, file), Bytes::from(buf)))
    })
    .await
    .map_err(|e| FsError::Io(std::io::Error::other(e)))??;
    *f.backing.lock().expect("backing lock") = Some(file);
    Ok(data)
}
