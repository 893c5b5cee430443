//! The filesystem core: everything the mount does, as async functions over
//! the cache node's read API, with no `fuser` types (the adapter in
//! `fuse.rs` translates). Errors are [`FsError`]; errno is chosen only in
//! the adapter.
//!
//! A mount is pinned to one manifest version, so every answer may be cached
//! forever: inodes, attributes and directory listings are kept here, and
//! the kernel is told to keep attributes and page cache.
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
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use shoal_proto::client::{Client, ClientError, Endpoint};
use shoal_proto::v1::{self, request::Kind as Req, response::Kind as Resp};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::prefetch::{Sequential, Siblings};

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
}

/// One directory entry.
#[derive(Debug, Clone)]
pub struct DirEntry {
    pub name: String,
    pub attr: Attr,
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

struct Inode {
    path: String,
    entry: v1::FileEntry,
    children: Option<Arc<Vec<DirEntry>>>,
    /// (directory inode, position in its listing) once the directory was listed.
    sibling: Option<(u64, u32)>,
}

struct OpenFile {
    path: String,
    size: u64,
    /// The node's handle id for the lease (changes when re-established).
    lease: AtomicU64,
    seq: Mutex<Sequential>,
    /// Tier file last used for direct reads.
    backing: Mutex<Option<(String, Arc<std::fs::File>)>>,
}

/// The mounted dataset.
pub struct Core {
    s: Settings,
    version: u64,
    pool: Mutex<Vec<Client>>,
    control: tokio::sync::Mutex<Option<Client>>,
    inodes: Mutex<(HashMap<u64, Inode>, HashMap<String, u64>)>,
    next_ino: AtomicU64,
    files: Mutex<HashMap<u64, Arc<OpenFile>>>,
    next_fh: AtomicU64,
    prefetch_budget: Arc<Semaphore>,
    prefetches: Mutex<JoinSet<()>>,
    /// Directory walks in progress, by directory inode.
    walks: Mutex<HashMap<u64, Siblings>>,
    total_bytes: u64,
    total_files: u64,
}

/// Directories whose walks are tracked at once.
const MAX_WALKS: usize = 64;

/// Prefetch budget unit: permits are MiB.
const MIB: u64 = 1 << 20;

fn mtime(nanos: i64) -> SystemTime {
    if nanos >= 0 {
        UNIX_EPOCH + Duration::from_nanos(nanos as u64)
    } else {
        UNIX_EPOCH
    }
}

fn attr_of(ino: u64, e: &v1::FileEntry) -> Attr {
    let kind = match e.kind() {
        v1::FileKind::File => Kind::File,
        v1::FileKind::Directory => Kind::Directory,
        v1::FileKind::Symlink => Kind::Symlink,
    };
    // Read-only, readable by everyone in the container whatever the origin said.
    let perm = match kind {
        Kind::Directory => 0o555,
        Kind::Symlink => 0o777,
        Kind::File => 0o444 | (e.mode as u16 & 0o111),
    };
    Attr {
        ino,
        kind,
        size: if kind == Kind::Symlink {
            e.symlink_target.len() as u64
        } else {
            e.size
        },
        mtime: mtime(e.mtime_nanos),
        perm,
    }
}

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
        let mut by_ino = HashMap::new();
        by_ino.insert(
            1,
            Inode {
                path: String::new(),
                entry: root,
                children: None,
                sibling: None,
            },
        );
        let mut by_path = HashMap::new();
        by_path.insert(String::new(), 1);
        let permits = (s.prefetch_budget / MIB).max(1) as usize;
        Ok(Arc::new(Self {
            version,
            pool: Mutex::new(vec![c]),
            control: tokio::sync::Mutex::new(None),
            inodes: Mutex::new((by_ino, by_path)),
            next_ino: AtomicU64::new(2),
            files: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            prefetch_budget: Arc::new(Semaphore::new(permits)),
            prefetches: Mutex::new(JoinSet::new()),
            walks: Mutex::new(HashMap::new()),
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
        let deadline = Instant::now() + self.s.retry_for;
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

    fn inode(&self, ino: u64) -> Result<(String, v1::FileEntry), FsError> {
        let t = self.inodes.lock().expect("inode lock");
        let i = t.0.get(&ino).ok_or(FsError::NotFound)?;
        Ok((i.path.clone(), i.entry.clone()))
    }

    fn intern(&self, entry: v1::FileEntry) -> Attr {
        let mut t = self.inodes.lock().expect("inode lock");
        let ino = match t.1.get(&entry.path) {
            Some(&ino) => ino,
            None => {
                let ino = self.next_ino.fetch_add(1, Ordering::Relaxed);
                t.1.insert(entry.path.clone(), ino);
                t.0.insert(
                    ino,
                    Inode {
                        path: entry.path.clone(),
                        entry: entry.clone(),
                        children: None,
                        sibling: None,
                    },
                );
                ino
            }
        };
        attr_of(ino, &entry)
    }

    pub async fn lookup(&self, parent: u64, name: &str) -> Result<Attr, FsError> {
        let (dir, entry) = self.inode(parent)?;
        if entry.kind() != v1::FileKind::Directory {
            return Err(FsError::NotDirectory);
        }
        if let Some(children) = self.inodes.lock().expect("inode lock").0[&parent]
            .children
            .clone()
        {
            return children
                .iter()
                .find(|c| c.name == name)
                .map(|c| c.attr.clone())
                .ok_or(FsError::NotFound);
        }
        let path = if dir.is_empty() {
            name.to_string()
        } else {
            format!("{dir}/{name}")
        };
        match self.call(Req::Stat(self.path_ref(&path))).await? {
            Resp::Entry(e) => Ok(self.intern(e)),
            _ => Err(FsError::Remote("unexpected response".into())),
        }
    }

    pub fn getattr(&self, ino: u64) -> Result<Attr, FsError> {
        let (_, entry) = self.inode(ino)?;
        Ok(attr_of(ino, &entry))
    }

    pub fn readlink(&self, ino: u64) -> Result<String, FsError> {
        let (_, entry) = self.inode(ino)?;
        if entry.kind() != v1::FileKind::Symlink {
            return Err(FsError::NotFound);
        }
        Ok(entry.symlink_target)
    }

    /// Every entry of a directory (cached after the first listing).
    pub async fn readdir(&self, ino: u64) -> Result<Arc<Vec<DirEntry>>, FsError> {
        let (path, entry) = self.inode(ino)?;
        if entry.kind() != v1::FileKind::Directory {
            return Err(FsError::NotDirectory);
        }
        if let Some(c) = self.inodes.lock().expect("inode lock").0[&ino]
            .children
            .clone()
        {
            return Ok(c);
        }
        let Resp::Dir(listing) = self.call(Req::ListDir(self.path_ref(&path))).await? else {
            return Err(FsError::Remote("unexpected response".into()));
        };
        let children: Vec<DirEntry> = listing
            .entries
            .into_iter()
            .map(|e| {
                let name = e.path.rsplit('/').next().unwrap_or(&e.path).to_string();
                DirEntry {
                    name,
                    attr: self.intern(e),
                }
            })
            .collect();
        let children = Arc::new(children);
        let mut t = self.inodes.lock().expect("inode lock");
        for (n, c) in children.iter().enumerate() {
            if let Some(i) = t.0.get_mut(&c.attr.ino) {
                i.sibling = Some((ino, n as u32));
            }
        }
        if let Some(i) = t.0.get_mut(&ino) {
            i.children = Some(children.clone());
        }
        Ok(children)
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
        let (path, entry) = self.inode(ino)?;
        match entry.kind() {
            v1::FileKind::Directory => return Err(FsError::IsDirectory),
            v1::FileKind::Symlink => return Err(FsError::NotFound),
            v1::FileKind::File => {}
        }
        self.warm_siblings(ino);
        let Resp::Opened(o) = self.lease(Req::Open(self.path_ref(&path))).await? else {
            return Err(FsError::Remote("unexpected response".into()));
        };
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.files.lock().expect("files lock").insert(
            fh,
            Arc::new(OpenFile {
                path,
                size: entry.size,
                lease: AtomicU64::new(o.handle),
                seq: Mutex::new(Sequential::default()),
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
    /// (within the mount's prefetch budget).
    fn warm_siblings(self: &Arc<Self>, ino: u64) {
        let next: Vec<(String, u64)> = {
            let t = self.inodes.lock().expect("inode lock");
            let Some((dir, idx)) = t.0.get(&ino).and_then(|i| i.sibling) else {
                return;
            };
            let Some(parent) = t.0.get(&dir) else { return };
            let Some(children) = parent.children.clone() else {
                return;
            };
            let range = {
                let mut walks = self.walks.lock().expect("walks lock");
                if walks.len() > MAX_WALKS && !walks.contains_key(&dir) {
                    walks.clear();
                }
                walks
                    .entry(dir)
                    .or_default()
                    .on_open(idx as usize, children.len())
            };
            let Some(range) = range else { return };
            children[range]
                .iter()
                .filter(|c| c.attr.kind == Kind::File && c.attr.size > 0)
                .map(|c| {
                    let path = if parent.path.is_empty() {
                        c.name.clone()
                    } else {
                        format!("{}/{}", parent.path, c.name)
                    };
                    (path, c.attr.size)
                })
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
    pub async fn read(self: &Arc<Self>, fh: u64, offset: u64, size: u32) -> Result<Bytes, FsError> {
        let f = self.file(fh)?;
        let end = offset.saturating_add(u64::from(size)).min(f.size);
        if offset >= end {
            return Ok(Bytes::new());
        }
        let plan = f.seq.lock().expect("seq lock").on_read(offset, end, f.size);
        if let Some(range) = plan.warm {
            self.prefetch(&f.path, range);
        }
        let range = v1::ReadRange {
            file: Some(self.path_ref(&f.path)),
            offset,
            length: end - offset,
            direct: plan.direct,
        };
        if let Resp::Backing(b) = self.call(Req::Backing(range.clone())).await? {
            if !b.path.is_empty() {
                // A stuck disk must not hang the reader either.
                let deadline = Instant::now() + self.s.retry_for;
                let read = read_tier_file(&f, &b.path, offset, (end - offset) as usize);
                return self.bounded(deadline, read).await?;
            }
        }
        match self.call(Req::Read(range)).await? {
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
        let mut tasks = self.prefetches.lock().expect("prefetch lock");
        while tasks.try_join_next().is_some() {}
        tasks.spawn(async move {
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
