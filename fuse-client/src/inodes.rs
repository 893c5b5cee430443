//! The inode table and the directory-listing cache, without I/O.
//!
//! A mount may walk datasets of millions of files, so what this process
//! keeps must be bounded by what the kernel holds, not by what was ever
//! walked:
//!
//! - An inode is kept only while the kernel holds a reference to it. Every
//!   reply that hands the kernel an inode (a lookup, each READDIRPLUS entry
//!   but `.` and `..`, for which the kernel takes none) counts one
//!   reference; FORGET gives them back, and at zero the inode is dropped
//!   (never the root). The kernel forgets inodes as it evicts them (memory
//!   pressure, `drop_caches`), so the table follows the kernel's own cache.
//! - An inode's number is a hash of its path, so a path keeps its number
//!   when it is forgotten and looked up again, with no path→number map.
//!   Two paths held at once whose hashes collide are told apart by probing
//!   the next numbers; the few inodes placed off their hash are remembered
//!   by that hash.
//! - An inode holds its path once and a compact [`Meta`]; the target of a
//!   symlink is kept for symlinks only.
//! - Directory listings are packed (one string of names, sorted, searched
//!   by bisection) and kept in an LRU bounded in bytes; a directory's
//!   listing also goes when the directory is forgotten. A lookup missing it
//!   asks the node. The manifest version is immutable, so anything dropped
//!   can be fetched again and is the same.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use shoal_proto::v1;

use crate::core::{Attr, Kind};

/// The root directory's inode number (FUSE's).
pub const ROOT: u64 = 1;

/// Inode numbers are hashes below 2^63 (signed 64-bit readers see them
/// positive); 0 and the root's 1 are never given to a path.
const FIRST: u64 = 2;
const END: u64 = 1 << 63;

/// What is kept of a manifest entry: everything `stat` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// For a symlink, the length of its target.
    pub size: u64,
    pub mtime_nanos: i64,
    /// Permission bits only (with setuid/setgid/sticky), as the origin has them.
    pub perm: u16,
    pub kind: Kind,
    /// The origin's (uid, gid), when it has owners (local and NFS origins).
    pub owner: Option<(u32, u32)>,
}

impl Meta {
    pub fn of(e: &v1::FileEntry) -> Self {
        let kind = match e.kind() {
            v1::FileKind::File => Kind::File,
            v1::FileKind::Directory => Kind::Directory,
            v1::FileKind::Symlink => Kind::Symlink,
        };
        // The origin's bits (S3 objects are listed 0444, their directories
        // 0555); the mount is read-only whatever they say.
        let perm = match kind {
            Kind::Symlink => 0o777,
            Kind::Directory | Kind::File => (e.mode & 0o7777) as u16,
        };
        Self {
            size: if kind == Kind::Symlink {
                e.symlink_target.len() as u64
            } else {
                e.size
            },
            mtime_nanos: e.mtime_nanos,
            perm,
            kind,
            owner: e.has_owner.then_some((e.uid, e.gid)),
        }
    }

    pub fn attr(&self, ino: u64) -> Attr {
        let mtime = match u64::try_from(self.mtime_nanos) {
            Ok(n) => UNIX_EPOCH + Duration::from_nanos(n),
            Err(_) => UNIX_EPOCH,
        };
        Attr {
            ino,
            kind: self.kind,
            size: self.size,
            mtime,
            perm: self.perm,
            owner: self.owner,
        }
    }
}

/// `dir/name` (`name` in the root).
pub fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        return name.to_string();
    }
    let mut p = String::with_capacity(dir.len() + 1 + name.len());
    p.push_str(dir);
    p.push('/');
    p.push_str(name);
    p
}

/// (directory, name) of a path that is not the root.
pub fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

/// One directory's entries, sorted by name, packed: no allocation per
/// entry.
#[derive(Debug)]
pub struct Listing {
    dir: Box<str>,
    names: Box<str>,
    /// End of each name in `names`.
    ends: Box<[u32]>,
    metas: Box<[Meta]>,
    /// (entry, target) of the symlinks.
    links: Box<[(u32, Box<str>)]>,
    /// The entries that are directories.
    subdirs: Box<[u32]>,
}

impl Listing {
    /// The listing of directory `dir` from the node's entries (any order).
    pub fn new(dir: &str, mut entries: Vec<v1::FileEntry>) -> Self {
        fn name(e: &v1::FileEntry) -> &str {
            split(&e.path).1
        }
        if !entries.is_sorted_by(|a, b| name(a) <= name(b)) {
            entries.sort_unstable_by(|a, b| name(a).cmp(name(b)));
        }
        let mut names = String::with_capacity(entries.iter().map(|e| name(e).len()).sum());
        let mut ends = Vec::with_capacity(entries.len());
        let mut metas = Vec::with_capacity(entries.len());
        let mut links = Vec::new();
        let mut subdirs = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            names.push_str(name(e));
            // Frames are at most 80 MiB, so offsets fit.
            ends.push(names.len() as u32);
            metas.push(Meta::of(e));
            match e.kind() {
                v1::FileKind::Symlink => links.push((i as u32, e.symlink_target.as_str().into())),
                v1::FileKind::Directory => subdirs.push(i as u32),
                v1::FileKind::File => {}
            }
        }
        Self {
            dir: dir.into(),
            names: names.into(),
            ends: ends.into(),
            metas: metas.into(),
            links: links.into(),
            subdirs: subdirs.into(),
        }
    }

    /// The directory's path.
    pub fn dir(&self) -> &str {
        &self.dir
    }

    pub fn len(&self) -> usize {
        self.metas.len()
    }

    pub fn name(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.names[start..self.ends[i] as usize]
    }

    pub fn meta(&self, i: usize) -> Meta {
        self.metas[i]
    }

    pub fn target(&self, i: usize) -> Option<&str> {
        let i = i as u32;
        self.links
            .binary_search_by_key(&i, |(n, _)| *n)
            .ok()
            .map(|at| &*self.links[at].1)
    }

    /// The position of `name`.
    pub fn find(&self, name: &str) -> Option<usize> {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.name(mid).cmp(name) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(mid),
            }
        }
        None
    }

    /// The entries that are directories, in order.
    pub fn subdirs(&self) -> &[u32] {
        &self.subdirs
    }

    /// Heap bytes held (what the cache's budget counts).
    fn bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.dir.len()
            + self.names.len()
            + self.ends.len() * std::mem::size_of::<u32>()
            + self.metas.len() * std::mem::size_of::<Meta>()
            + self.subdirs.len() * std::mem::size_of::<u32>()
            + self
                .links
                .iter()
                .map(|(_, t)| std::mem::size_of::<(u32, Box<str>)>() + t.len())
                .sum::<usize>()
    }
}

/// Listings by directory inode, least recently used evicted first once
/// their bytes pass the budget. The listing used last always stays (a
/// directory bigger than the budget is still listed once, not per call).
#[derive(Debug)]
struct Listings {
    by_dir: HashMap<u64, (Arc<Listing>, u64)>,
    /// Last use → directory inode.
    lru: BTreeMap<u64, u64>,
    clock: u64,
    entries: usize,
    bytes: usize,
    budget: usize,
}

impl Listings {
    fn get(&mut self, dir: u64) -> Option<Arc<Listing>> {
        let (listing, used) = self.by_dir.get_mut(&dir)?;
        self.lru.remove(used);
        self.clock += 1;
        *used = self.clock;
        self.lru.insert(self.clock, dir);
        Some(listing.clone())
    }

    fn insert(&mut self, dir: u64, listing: Arc<Listing>) {
        self.remove(dir);
        self.clock += 1;
        self.entries += listing.len();
        self.bytes += listing.bytes();
        self.lru.insert(self.clock, dir);
        self.by_dir.insert(dir, (listing, self.clock));
        while self.bytes > self.budget && self.by_dir.len() > 1 {
            let Some((_, oldest)) = self.lru.pop_first() else {
                break;
            };
            self.remove(oldest);
        }
    }

    fn remove(&mut self, dir: u64) {
        if let Some((listing, used)) = self.by_dir.remove(&dir) {
            self.lru.remove(&used);
            self.entries -= listing.len();
            self.bytes -= listing.bytes();
        }
    }
}

/// Hasher of inode numbers (already hashes): one multiply to spread them.
#[derive(Default)]
struct Numbers(u64);

impl Hasher for Numbers {
    fn finish(&self) -> u64 {
        self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A path's preferred inode number.
fn home(dir: &str, name: &str) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    if !dir.is_empty() {
        h.write(dir.as_bytes());
        h.write(b"/");
    }
    h.write(name.as_bytes());
    (h.finish() >> 1).max(FIRST)
}

fn is_path(p: &str, dir: &str, name: &str) -> bool {
    if dir.is_empty() {
        return p == name;
    }
    p.len() == dir.len() + 1 + name.len()
        && p.starts_with(dir)
        && p.as_bytes()[dir.len()] == b'/'
        && p.ends_with(name)
}

#[derive(Debug)]
struct Inode {
    path: Box<str>,
    meta: Meta,
    /// References the kernel holds.
    lookups: u64,
}

/// How much the table holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Inodes (the root included).
    pub inodes: usize,
    pub listing_entries: usize,
    pub listing_bytes: usize,
}

/// Inodes the kernel holds, and cached listings.
pub struct Table {
    inodes: HashMap<u64, Inode, BuildHasherDefault<Numbers>>,
    /// Inodes held under another number than their path's hash (a
    /// collision), by that hash.
    displaced: HashMap<u64, Vec<u64>>,
    /// Targets of the symlinks held.
    links: HashMap<u64, Box<str>>,
    listings: Listings,
    home: fn(&str, &str) -> u64,
}

impl Table {
    /// A table holding the root; listings kept up to `listing_budget` bytes.
    pub fn new(root: Meta, listing_budget: usize) -> Self {
        let mut inodes = HashMap::default();
        inodes.insert(
            ROOT,
            Inode {
                path: "".into(),
                meta: root,
                lookups: 1,
            },
        );
        Self {
            inodes,
            displaced: HashMap::new(),
            links: HashMap::new(),
            listings: Listings {
                by_dir: HashMap::new(),
                lru: BTreeMap::new(),
                clock: 0,
                entries: 0,
                bytes: 0,
                budget: listing_budget,
            },
            home,
        }
    }

    /// Path and attributes of a held inode.
    pub fn get(&self, ino: u64) -> Option<(&str, Meta)> {
        self.inodes.get(&ino).map(|i| (&*i.path, i.meta))
    }

    /// The target of a held symlink.
    pub fn target(&self, ino: u64) -> Option<&str> {
        self.links.get(&ino).map(|t| &**t)
    }

    /// The number of `dir/name` if it is held.
    pub fn find(&self, dir: &str, name: &str) -> Option<u64> {
        let home = (self.home)(dir, name);
        let away = self.displaced.get(&home).into_iter().flatten().copied();
        std::iter::once(home).chain(away).find(|ino| {
            self.inodes
                .get(ino)
                .is_some_and(|i| is_path(&i.path, dir, name))
        })
    }

    /// The number of `path` if it is held.
    pub fn find_path(&self, path: &str) -> Option<u64> {
        if path.is_empty() {
            return Some(ROOT);
        }
        let (dir, name) = split(path);
        self.find(dir, name)
    }

    /// The number `dir/name` has, or would have if it were looked up now
    /// (for `readdir`, which hands the kernel no reference).
    pub fn number(&self, dir: &str, name: &str) -> u64 {
        self.find(dir, name)
            .unwrap_or_else(|| (self.home)(dir, name))
    }

    /// Counts one more kernel reference to `dir/name`, adding it if it is
    /// not held; its attributes.
    pub fn reference(&mut self, dir: &str, name: &str, meta: Meta, target: Option<&str>) -> Attr {
        let ino = match self.find(dir, name) {
            Some(ino) => ino,
            None => {
                let path: Box<str> = join(dir, name).into();
                let home = (self.home)(dir, name);
                let mut ino = home;
                while self.inodes.contains_key(&ino) {
                    ino = if ino + 1 >= END { FIRST } else { ino + 1 };
                }
                if ino != home {
                    self.displaced.entry(home).or_default().push(ino);
                }
                if let Some(t) = target {
                    self.links.insert(ino, t.into());
                }
                self.inodes.insert(
                    ino,
                    Inode {
                        path,
                        meta,
                        lookups: 0,
                    },
                );
                ino
            }
        };
        let i = self.inodes.get_mut(&ino).expect("found or added above");
        i.lookups = i.lookups.saturating_add(1);
        i.meta.attr(ino)
    }

    /// [`Table::reference`] of entry `i` of a listing.
    pub fn reference_entry(&mut self, listing: &Listing, i: usize) -> Attr {
        self.reference(
            listing.dir(),
            listing.name(i),
            listing.meta(i),
            listing.target(i),
        )
    }

    /// The kernel gives back `n` references; at none left the inode goes,
    /// with its listing.
    pub fn forget(&mut self, ino: u64, n: u64) {
        if ino == ROOT {
            return;
        }
        let Some(i) = self.inodes.get_mut(&ino) else {
            return;
        };
        i.lookups = i.lookups.saturating_sub(n);
        if i.lookups > 0 {
            return;
        }
        let i = self.inodes.remove(&ino).expect("present above");
        if !self.displaced.is_empty() {
            let (dir, name) = split(&i.path);
            let home = (self.home)(dir, name);
            if let Some(away) = self.displaced.get_mut(&home) {
                away.retain(|&n| n != ino);
                if away.is_empty() {
                    self.displaced.remove(&home);
                }
            }
        }
        match i.meta.kind {
            Kind::Symlink => drop(self.links.remove(&ino)),
            Kind::Directory => self.listings.remove(ino),
            Kind::File => {}
        }
    }

    /// The cached listing of directory `ino`.
    pub fn listing(&mut self, ino: u64) -> Option<Arc<Listing>> {
        self.listings.get(ino)
    }

    /// Whether the listing of directory `ino` is cached.
    pub fn has_listing(&self, ino: u64) -> bool {
        self.listings.by_dir.contains_key(&ino)
    }

    /// Caches the listing of directory `ino`, unless `ino` was forgotten
    /// (or is another path) meanwhile.
    pub fn keep_listing(&mut self, ino: u64, listing: Arc<Listing>) {
        if self.get(ino).is_some_and(|(p, _)| p == listing.dir()) {
            self.listings.insert(ino, listing);
        }
    }

    pub fn counts(&self) -> Counts {
        Counts {
            inodes: self.inodes.len(),
            listing_entries: self.listings.entries,
            listing_bytes: self.listings.bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: v1::FileKind, size: u64) -> v1::FileEntry {
        v1::FileEntry {
            path: path.into(),
            kind: kind as i32,
            size,
            symlink_target: if kind == v1::FileKind::Symlink {
                "../elsewhere".into()
            } else {
                String::new()
            },
            ..Default::default()
        }
    }

    fn dir_meta() -> Meta {
        Meta::of(&entry("", v1::FileKind::Directory, 0))
    }

    fn listing(dir: &str, names: &[&str]) -> Arc<Listing> {
        let entries = names
            .iter()
            .enumerate()
            .map(|(i, n)| entry(&join(dir, n), v1::FileKind::File, i as u64))
            .collect();
        Arc::new(Listing::new(dir, entries))
    }

    #[test]
    fn a_listing_is_sorted_packed_and_searchable() {
        let entries = vec![
            entry("d/c", v1::FileKind::File, 3),
            entry("d/a", v1::FileKind::Directory, 0),
            entry("d/link", v1::FileKind::Symlink, 0),
            entry("d/b", v1::FileKind::File, 2),
        ];
        let l = Listing::new("d", entries);
        let names: Vec<&str> = (0..l.len()).map(|i| l.name(i)).collect();
        assert_eq!(names, ["a", "b", "c", "link"]);
        assert_eq!(l.find("c"), Some(2));
        assert_eq!(l.meta(2).size, 3);
        assert_eq!(l.find("nope"), None);
        assert_eq!(l.find(""), None);
        assert_eq!(l.target(3), Some("../elsewhere"));
        assert_eq!(l.meta(3).size, "../elsewhere".len() as u64);
        assert_eq!(l.target(1), None);
        assert_eq!(l.meta(0).kind, Kind::Directory);
        assert_eq!(l.subdirs(), [0]);
    }

    #[test]
    fn an_inode_lives_while_the_kernel_holds_it_and_keeps_its_number() {
        let mut t = Table::new(dir_meta(), 1 << 20);
        let file = Meta::of(&entry("d/f", v1::FileKind::File, 5));
        let a = t.reference("d", "f", file, None);
        assert!(a.ino >= FIRST && a.ino < END);
        assert_eq!(t.reference("d", "f", file, None).ino, a.ino);
        assert_eq!(t.find_path("d/f"), Some(a.ino));
        assert_eq!(t.get(a.ino), Some(("d/f", file)));
        t.forget(a.ino, 1);
        assert_eq!(t.find_path("d/f"), Some(a.ino), "one reference left");
        t.forget(a.ino, 1);
        assert_eq!(t.get(a.ino), None);
        assert_eq!(t.counts().inodes, 1);
        // Looked up again: the same number.
        assert_eq!(t.reference("d", "f", file, None).ino, a.ino);
        assert_eq!(t.number("d", "f"), a.ino);
        // More forgotten than counted, or unknown numbers: no harm.
        t.forget(a.ino, 7);
        t.forget(a.ino, 1);
        t.forget(12345, 1);
        assert_eq!(t.counts().inodes, 1);
        // The root stays whatever the kernel says.
        t.forget(ROOT, u64::MAX);
        assert_eq!(t.get(ROOT).map(|(p, _)| p), Some(""));
    }

    #[test]
    fn colliding_paths_held_at_once_get_distinct_numbers() {
        let mut t = Table::new(dir_meta(), 1 << 20);
        t.home = |_, _| 7;
        let m = Meta::of(&entry("x", v1::FileKind::File, 1));
        let a = t.reference("", "a", m, None).ino;
        let b = t.reference("", "b", m, None).ino;
        assert_eq!((a, b), (7, 8));
        assert_eq!(t.find_path("b"), Some(8));
        // `a` goes: `b` keeps its number, and is not added twice.
        t.forget(a, 1);
        assert_eq!(t.reference("", "b", m, None).ino, 8);
        assert_eq!(t.find_path("a"), None);
        assert_eq!(t.reference("", "a", m, None).ino, 7);
        t.forget(8, 2);
        assert_eq!(t.find_path("b"), None);
        assert!(t.displaced.is_empty());
        // Probing wraps below 2^63, past 0 and the root.
        t.home = |_, _| END - 1;
        assert_eq!(t.reference("", "c", m, None).ino, END - 1);
        assert_eq!(t.reference("", "d", m, None).ino, FIRST);
    }

    #[test]
    fn symlink_targets_and_listings_go_with_their_inode() {
        let mut t = Table::new(dir_meta(), 1 << 20);
        let d = t.reference("", "d", dir_meta(), None).ino;
        t.keep_listing(d, listing("d", &["x", "y"]));
        // A listing fetched for a number that now is another path is not kept.
        t.keep_listing(d + 1, listing("d", &["x"]));
        assert_eq!(t.counts().listing_entries, 2);
        let link = Meta::of(&entry("d/l", v1::FileKind::Symlink, 0));
        let l = t.reference("d", "l", link, Some("../elsewhere")).ino;
        assert_eq!(t.target(l), Some("../elsewhere"));
        let x = t.listing(d).unwrap();
        let a = t.reference_entry(&x, 1);
        assert_eq!((t.get(a.ino).unwrap().0, a.size), ("d/y", 1));
        t.forget(l, 1);
        assert_eq!(t.target(l), None);
        t.forget(d, 1);
        assert!(t.listing(d).is_none());
        assert_eq!(t.counts().listing_entries, 0);
        assert_eq!(t.counts().listing_bytes, 0);
    }

    #[test]
    fn listings_past_the_budget_go_least_recently_used_first() {
        let one = listing("a", &["1", "2", "3"]).bytes();
        let mut t = Table::new(dir_meta(), 2 * one);
        let dirs: Vec<u64> = ["a", "b", "c"]
            .iter()
            .map(|n| t.reference("", n, dir_meta(), None).ino)
            .collect();
        t.keep_listing(dirs[0], listing("a", &["1", "2", "3"]));
        t.keep_listing(dirs[1], listing("b", &["1", "2", "3"]));
        assert!(t.listing(dirs[0]).is_some(), "used: now the most recent");
        t.keep_listing(dirs[2], listing("c", &["1", "2", "3"]));
        assert!(!t.has_listing(dirs[1]), "least recently used");
        assert!(t.listing(dirs[0]).is_some() && t.listing(dirs[2]).is_some());
        assert_eq!(t.counts().listing_entries, 6);
        // A listing bigger than the whole budget is kept alone.
        let big: Vec<String> = (0..100).map(|i| format!("{i:03}")).collect();
        let big: Vec<&str> = big.iter().map(|s| s.as_str()).collect();
        t.keep_listing(dirs[1], listing("b", &big));
        assert_eq!(t.counts().listing_entries, 100);
        assert!(t.listing(dirs[1]).is_some());
    }
}
