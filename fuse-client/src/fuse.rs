//! The thin FUSE adapter: unpacks `fuser` callbacks, runs the operation on
//! the tokio runtime (so the single FUSE dispatch thread never blocks and
//! operations run concurrently), and maps [`FsError`] to errno — here and
//! nowhere else.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fuser::consts::{FOPEN_KEEP_CACHE, FUSE_DO_READDIRPLUS, FUSE_PASSTHROUGH};
use fuser::{
    fuse_forget_one, BackingId, FileAttr, FileType, Filesystem, KernelConfig, ReplyAttr, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyXattr,
    Request,
};
use libc::{c_int, EBADF, EIO, EISDIR, ENAMETOOLONG, ENODATA, ENOENT, ENOTDIR, EROFS};

/// Longest file name (NAME_MAX).
const NAME_MAX: usize = 255;

use crate::core::{Attr, Core, FsError, Kind};

/// Attributes and entries never change within a mount (the manifest
/// version is immutable), so the kernel may keep them for a long time.
const TTL: Duration = Duration::from_secs(24 * 3600);

fn errno(e: &FsError) -> c_int {
    match e {
        FsError::NotFound => ENOENT,
        FsError::NotDirectory => ENOTDIR,
        FsError::IsDirectory => EISDIR,
        FsError::BadHandle => EBADF,
        FsError::Unavailable(_) | FsError::TimedOut(_) | FsError::Remote(_) | FsError::Io(_) => EIO,
    }
}

/// Counters visible in logs at unmount (and to tests via the log), with
/// the core's [`crate::inodes::Counts`].
#[derive(Debug, Default)]
pub struct Stats {
    pub passthrough_opens: AtomicU64,
    pub plain_opens: AtomicU64,
}

/// How an inode's open files are served. The kernel requires every open of
/// an inode to agree (all passthrough with one backing file, or none):
/// mixing fails the open with EIO.
enum IoMode {
    Cached(u32),
    Passthrough { id: Arc<BackingId>, opens: u32 },
}

/// Open files per inode, and the inode of each handle.
#[derive(Default)]
struct OpenTable {
    modes: HashMap<u64, IoMode>,
    inode_of: HashMap<u64, u64>,
}

impl OpenTable {
    fn release(&mut self, fh: u64) {
        let Some(ino) = self.inode_of.remove(&fh) else {
            return;
        };
        let last = match self.modes.get_mut(&ino) {
            Some(IoMode::Cached(n)) | Some(IoMode::Passthrough { opens: n, .. }) => {
                *n -= 1;
                *n == 0
            }
            None => false,
        };
        if last {
            self.modes.remove(&ino);
        }
    }
}

/// How attributes are shown: the origin's owners and modes when it has
/// them (local and NFS origins), the mount's otherwise (S3), and the
/// mount's flags when they force them (as mountpoint-s3's `--uid`,
/// `--gid`, `--file-mode`, `--dir-mode`).
#[derive(Debug, Clone, Copy)]
pub struct Presentation {
    /// Owner of entries without one (and of all, when forced).
    pub uid: u32,
    pub gid: u32,
    pub force_uid: bool,
    pub force_gid: bool,
    pub file_mode: Option<u16>,
    pub dir_mode: Option<u16>,
}

/// The `fuser::Filesystem` over a [`Core`].
pub struct ShoalFs {
    core: Arc<Core>,
    rt: tokio::runtime::Handle,
    view: Presentation,
    passthrough: Arc<AtomicBool>,
    opens: Arc<Mutex<OpenTable>>,
    pub stats: Arc<Stats>,
}

impl ShoalFs {
    pub fn new(
        core: Arc<Core>,
        rt: tokio::runtime::Handle,
        stats: Arc<Stats>,
        view: Presentation,
    ) -> Self {
        Self {
            core,
            rt,
            view,
            passthrough: Arc::new(AtomicBool::new(false)),
            opens: Arc::new(Mutex::new(OpenTable::default())),
            stats,
        }
    }

    fn file_attr(view: &Presentation, a: &Attr) -> FileAttr {
        let kind = file_type(a.kind);
        let (uid, gid) = match a.owner {
            Some((u, g)) => (
                if view.force_uid { view.uid } else { u },
                if view.force_gid { view.gid } else { g },
            ),
            None => (view.uid, view.gid),
        };
        let perm = match a.kind {
            Kind::File => view.file_mode.unwrap_or(a.perm),
            Kind::Directory => view.dir_mode.unwrap_or(a.perm),
            Kind::Symlink => a.perm,
        };
        FileAttr {
            ino: a.ino,
            size: a.size,
            blocks: a.size.div_ceil(512),
            atime: a.mtime,
            mtime: a.mtime,
            ctime: a.mtime,
            crtime: a.mtime,
            kind,
            perm,
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            uid,
            gid,
            rdev: 0,
            blksize: 1 << 20,
            flags: 0,
        }
    }
}

fn file_type(k: Kind) -> FileType {
    match k {
        Kind::File => FileType::RegularFile,
        Kind::Directory => FileType::Directory,
        Kind::Symlink => FileType::Symlink,
    }
}

impl Filesystem for ShoalFs {
    fn init(&mut self, _req: &Request<'_>, config: &mut KernelConfig) -> Result<(), c_int> {
        let _ = config.set_max_readahead(1 << 20);
        // One READDIRPLUS instead of READDIR plus a LOOKUP per entry.
        let _ = config.add_capabilities(FUSE_DO_READDIRPLUS);
        let passthrough = config.add_capabilities(FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(1).is_ok();
        self.passthrough.store(passthrough, Ordering::SeqCst);
        if passthrough {
            tracing::info!("FUSE passthrough available: fully cached files are read by the kernel from the tier file");
        } else {
            tracing::warn!(
                "FUSE passthrough not offered by this kernel; every read goes through this process"
            );
        }
        Ok(())
    }

    fn destroy(&mut self) {
        self.core.shutdown();
    }

    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        // No key with such a name is shown (docs/SEMANTICS.md): say why.
        if name.len() > NAME_MAX {
            return reply.error(ENAMETOOLONG);
        }
        let (core, view) = (self.core.clone(), self.view);
        let name = name.to_string_lossy().into_owned();
        self.rt.spawn(async move {
            match core.lookup(parent, &name).await {
                Ok(a) => reply.entry(&TTL, &Self::file_attr(&view, &a), 0),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    // Every entry reply (lookup, READDIRPLUS) counted a reference in the
    // core; the kernel gives them back here when it evicts the inode.
    fn forget(&mut self, _req: &Request<'_>, ino: u64, nlookup: u64) {
        self.core.forget([(ino, nlookup)]);
    }

    fn batch_forget(&mut self, _req: &Request<'_>, nodes: &[fuse_forget_one]) {
        self.core
            .forget(nodes.iter().map(|n| (n.nodeid, n.nlookup)));
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        match self.core.getattr(ino) {
            Ok(a) => reply.attr(&TTL, &Self::file_attr(&self.view, &a)),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readlink(&mut self, _req: &Request<'_>, ino: u64, reply: ReplyData) {
        match self.core.readlink(ino) {
            Ok(t) => reply.data(t.as_bytes()),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, flags: i32, reply: ReplyOpen) {
        if flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0 {
            return reply.error(EROFS);
        }
        let core = self.core.clone();
        let passthrough = self.passthrough.clone();
        let opens = self.opens.clone();
        let stats = self.stats.clone();
        self.rt.spawn(async move {
            let opened = match core.open(ino).await {
                Ok(o) => o,
                Err(e) => return reply.error(errno(&e)),
            };
            let mut table = opens.lock().expect("open table lock");
            table.inode_of.insert(opened.fh, ino);
            match table.modes.get_mut(&ino) {
                Some(IoMode::Passthrough { id, opens }) => {
                    *opens += 1;
                    stats.passthrough_opens.fetch_add(1, Ordering::Relaxed);
                    return reply.opened_passthrough(opened.fh, 0, id);
                }
                Some(IoMode::Cached(n)) => {
                    *n += 1;
                    stats.plain_opens.fetch_add(1, Ordering::Relaxed);
                    return reply.opened(opened.fh, FOPEN_KEEP_CACHE);
                }
                None => {}
            }
            if let (true, Some(file)) = (passthrough.load(Ordering::SeqCst), opened.passthrough.as_ref()) {
                match reply.open_backing(file) {
                    Ok(id) => {
                        // No FOPEN_KEEP_CACHE here: the kernel refuses it with passthrough
                        // (EIO at open); the page cache is the tier file's own.
                        reply.opened_passthrough(opened.fh, 0, &id);
                        table.modes.insert(ino, IoMode::Passthrough { id: Arc::new(id), opens: 1 });
                        if stats.passthrough_opens.fetch_add(1, Ordering::Relaxed) == 0 {
                            tracing::info!(ino, "passthrough: first file opened with a kernel backing file");
                        }
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "passthrough refused by the kernel; falling back to reads through this process");
                        passthrough.store(false, Ordering::SeqCst);
                    }
                }
            }
            table.modes.insert(ino, IoMode::Cached(1));
            stats.plain_opens.fetch_add(1, Ordering::Relaxed);
            reply.opened(opened.fh, FOPEN_KEEP_CACHE);
        });
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        let core = self.core.clone();
        self.rt.spawn(async move {
            match core.read(fh, offset.max(0) as u64, size).await {
                Ok(b) => reply.data(&b),
                Err(e) => {
                    tracing::warn!(fh, offset, size, error = %e, "read failed");
                    reply.error(errno(&e))
                }
            }
        });
    }

    fn release(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        _flags: i32,
        _lock_owner: Option<u64>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.opens.lock().expect("open table lock").release(fh);
        let core = self.core.clone();
        self.rt.spawn(async move {
            core.release(fh).await;
            reply.ok();
        });
    }

    fn flush(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        _fh: u64,
        _lock_owner: u64,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn opendir(&mut self, _req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        match self.core.getattr(ino) {
            Ok(a) if a.kind == Kind::Directory => {
                reply.opened(0, 0);
                // Background listing fetches are spawned on the runtime.
                let _rt = self.rt.enter();
                self.core.opened_dir(ino);
            }
            Ok(_) => reply.error(ENOTDIR),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        let core = self.core.clone();
        self.rt.spawn(async move {
            let listing = match core.listing(ino).await {
                Ok(l) => l,
                Err(e) => return reply.error(errno(&e)),
            };
            // Offsets: 1 and 2 are `.` and `..`, 3.. the listing's entries.
            for i in offset.max(0) as usize..listing.len() + 2 {
                let full = match i {
                    0 => reply.add(ino, 1, FileType::Directory, "."),
                    1 => reply.add(1, 2, FileType::Directory, ".."),
                    _ => reply.add(
                        core.number(&listing, i - 2),
                        (i + 1) as i64,
                        file_type(listing.meta(i - 2).kind),
                        listing.name(i - 2),
                    ),
                };
                if full {
                    break;
                }
            }
            reply.ok();
        });
    }

    fn readdirplus(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let (core, view) = (self.core.clone(), self.view);
        self.rt.spawn(async move {
            let listing = match core.listing(ino).await {
                Ok(l) => l,
                Err(e) => return reply.error(errno(&e)),
            };
            let me = match core.getattr(ino) {
                Ok(a) => Self::file_attr(&view, &a),
                Err(e) => return reply.error(errno(&e)),
            };
            // Offsets as in readdir. The kernel takes no reference for `.`
            // and `..`, and one for every other entry in the reply: each
            // is counted before it is added, and given back if it did not
            // fit.
            for i in offset.max(0) as usize..listing.len() + 2 {
                let full = match i {
                    0 | 1 => reply.add(ino, (i + 1) as i64, [".", ".."][i], &TTL, &me, 0),
                    _ => {
                        let a = core.reference(&listing, i - 2);
                        let attr = Self::file_attr(&view, &a);
                        let name = listing.name(i - 2);
                        let full = reply.add(a.ino, (i + 1) as i64, name, &TTL, &attr, 0);
                        if full {
                            core.forget([(a.ino, 1)]);
                        }
                        full
                    }
                };
                if full {
                    break;
                }
            }
            reply.ok();
        });
    }

    fn statfs(&mut self, _req: &Request<'_>, _ino: u64, reply: ReplyStatfs) {
        let (bytes, files) = self.core.totals();
        let bsize = 4096u64;
        reply.statfs(
            bytes.div_ceil(bsize),
            0,
            0,
            files,
            0,
            bsize as u32,
            255,
            bsize as u32,
        );
    }

    fn access(&mut self, _req: &Request<'_>, ino: u64, mask: i32, reply: ReplyEmpty) {
        match self.core.getattr(ino) {
            Ok(_) if mask & libc::W_OK != 0 => reply.error(EROFS),
            Ok(_) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn getxattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        match self.core.getattr(ino) {
            Ok(_) => reply.error(ENODATA),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn listxattr(&mut self, _req: &Request<'_>, ino: u64, size: u32, reply: ReplyXattr) {
        match self.core.getattr(ino) {
            Ok(_) if size == 0 => reply.size(0),
            Ok(_) => reply.data(&[]),
            Err(e) => reply.error(errno(&e)),
        }
    }

    // Everything that would change the tree is refused: the mount is read-only.

    fn setattr(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        _fh: Option<u64>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        reply.error(EROFS);
    }

    fn mknod(
        &mut self,
        _req: &Request<'_>,
        _p: u64,
        _n: &OsStr,
        _m: u32,
        _u: u32,
        _r: u32,
        reply: ReplyEntry,
    ) {
        reply.error(EROFS);
    }

    fn mkdir(
        &mut self,
        _req: &Request<'_>,
        _p: u64,
        _n: &OsStr,
        _m: u32,
        _u: u32,
        reply: ReplyEntry,
    ) {
        reply.error(EROFS);
    }

    fn unlink(&mut self, _req: &Request<'_>, _p: u64, _n: &OsStr, reply: ReplyEmpty) {
        reply.error(EROFS);
    }

    fn rmdir(&mut self, _req: &Request<'_>, _p: u64, _n: &OsStr, reply: ReplyEmpty) {
        reply.error(EROFS);
    }

    fn symlink(
        &mut self,
        _req: &Request<'_>,
        _p: u64,
        _n: &OsStr,
        _l: &std::path::Path,
        reply: ReplyEntry,
    ) {
        reply.error(EROFS);
    }

    fn rename(
        &mut self,
        _req: &Request<'_>,
        _p: u64,
        _n: &OsStr,
        _np: u64,
        _nn: &OsStr,
        _f: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(EROFS);
    }

    fn link(&mut self, _req: &Request<'_>, _i: u64, _np: u64, _nn: &OsStr, reply: ReplyEntry) {
        reply.error(EROFS);
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        _fh: u64,
        _offset: i64,
        _data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: fuser::ReplyWrite,
    ) {
        reply.error(EROFS);
    }

    fn create(
        &mut self,
        _req: &Request<'_>,
        _p: u64,
        _n: &OsStr,
        _m: u32,
        _u: u32,
        _f: i32,
        reply: fuser::ReplyCreate,
    ) {
        reply.error(EROFS);
    }

    fn setxattr(
        &mut self,
        _req: &Request<'_>,
        _i: u64,
        _n: &OsStr,
        _v: &[u8],
        _f: i32,
        _p: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(EROFS);
    }

    fn removexattr(&mut self, _req: &Request<'_>, _i: u64, _n: &OsStr, reply: ReplyEmpty) {
        reply.error(EROFS);
    }

    fn fallocate(
        &mut self,
        _req: &Request<'_>,
        _i: u64,
        _fh: u64,
        _o: i64,
        _l: i64,
        _m: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(EROFS);
    }
}
