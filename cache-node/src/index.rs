//! The RocksDB index: datasets, manifests, chunk maps, residency, access stats.
//!
//! One column family, prefixed keys. Every key layout is built here and only
//! here, so the on-disk schema can be read in one place:
//!
//! | prefix | key                                   | value                          |
//! |--------|---------------------------------------|--------------------------------|
//! | `d/`   | dataset name                          | JSON [`crate::catalog::DatasetRecord`] |
//! | `m/`   | name `\0` version(be64) parent `\0` base | prost `FileEntry`           |
//! | `c/`   | file version(16) chunk index(be32)    | blake3 hash(32) len(be32)      |
//! | `r/`   | file version(16) chunk index(be32)    | [`ResidentRecord`]             |
//! | `p/`   | file version(16) chunk index(be32)    | tier(1) len(be32): write begun |
//! | `h/`   | hash(32) file version(16) index(be32) | empty: where a hash is resident |
//!
//! A residency record is written only after the chunk's bytes are in the
//! backing file, in the same batch as the chunk map entry, so a crash can
//! never leave a record pointing at bytes that were not written.

use std::path::Path;

use rocksdb::{Direction, IteratorMode, WriteBatch, DB};

/// Identity of one version of one file's bytes (see `catalog::file_version_id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileVersionId(pub [u8; 16]);

impl FileVersionId {
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_slice(b: &[u8]) -> Option<Self> {
        Some(Self(b.try_into().ok()?))
    }
}

/// A chunk of a file version: the unit of fetching, residency and eviction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkKey {
    pub fv: FileVersionId,
    pub idx: u32,
}

impl ChunkKey {
    fn bytes(&self) -> [u8; 20] {
        let mut k = [0u8; 20];
        k[..16].copy_from_slice(&self.fv.0);
        k[16..].copy_from_slice(&self.idx.to_be_bytes());
        k
    }

    fn parse(b: &[u8]) -> Option<Self> {
        if b.len() != 20 {
            return None;
        }
        Some(Self {
            fv: FileVersionId::from_slice(&b[..16])?,
            idx: u32::from_be_bytes(b[16..].try_into().ok()?),
        })
    }
}

/// Errors of the index.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("corrupt index record under {key}: {detail}")]
    Corrupt { key: String, detail: String },
}

/// Key builders; the only place key layouts are spelled out.
pub mod keys {
    use super::ChunkKey;

    pub const DATASET: &[u8] = b"d/";
    pub const MANIFEST: &[u8] = b"m/";
    pub const CHUNK_MAP: &[u8] = b"c/";
    pub const RESIDENT: &[u8] = b"r/";
    pub const PENDING: &[u8] = b"p/";
    pub const BY_HASH: &[u8] = b"h/";
    pub const JOB: &[u8] = b"j/";
    pub const JOB_PART: &[u8] = b"jp/";
    pub const PIN: &[u8] = b"pn/";
    pub const TOMBSTONE: &[u8] = b"t/";

    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    pub fn dataset(name: &str) -> Vec<u8> {
        cat(&[DATASET, name.as_bytes()])
    }

    pub fn tombstone(name: &str) -> Vec<u8> {
        cat(&[TOMBSTONE, name.as_bytes()])
    }

    /// Prefix of every entry of one manifest version (or of all versions when `version` is None).
    pub fn manifest_prefix(dataset: &str, version: Option<u64>) -> Vec<u8> {
        let mut k = cat(&[MANIFEST, dataset.as_bytes(), b"\0"]);
        if let Some(v) = version {
            k.extend_from_slice(&v.to_be_bytes());
        }
        k
    }

    /// Splits a dataset-relative path into (parent, base name).
    pub fn split_path(path: &str) -> (&str, &str) {
        match path.rsplit_once('/') {
            Some((parent, base)) => (parent, base),
            None => ("", path),
        }
    }

    /// Prefix of the children of directory `dir` ("" is the root).
    pub fn manifest_children(dataset: &str, version: u64, dir: &str) -> Vec<u8> {
        cat(&[
            &manifest_prefix(dataset, Some(version)),
            dir.as_bytes(),
            b"\0",
        ])
    }

    /// Entry of `path`; the root itself is stored under parent "\u{1}".
    pub fn manifest_entry(dataset: &str, version: u64, path: &str) -> Vec<u8> {
        if path.is_empty() {
            return cat(&[&manifest_prefix(dataset, Some(version)), b"\x01"]);
        }
        let (parent, base) = split_path(path);
        cat(&[
            &manifest_children(dataset, version, parent),
            base.as_bytes(),
        ])
    }

    pub fn chunk_map(key: &ChunkKey) -> Vec<u8> {
        cat(&[CHUNK_MAP, &key.bytes()])
    }

    pub fn resident(key: &ChunkKey) -> Vec<u8> {
        cat(&[RESIDENT, &key.bytes()])
    }

    pub fn pending(key: &ChunkKey) -> Vec<u8> {
        cat(&[PENDING, &key.bytes()])
    }

    pub fn by_hash(hash: &[u8; 32], key: &ChunkKey) -> Vec<u8> {
        cat(&[BY_HASH, hash, &key.bytes()])
    }

    pub fn by_hash_prefix(hash: &[u8; 32]) -> Vec<u8> {
        cat(&[BY_HASH, hash])
    }

    /// A job record (`JobSpec`, prost).
    pub fn job(id: &str) -> Vec<u8> {
        cat(&[JOB, id.as_bytes()])
    }

    /// One node's part of a job (`JobPart`, prost).
    pub fn job_part(id: &str, node: &str) -> Vec<u8> {
        cat(&[JOB_PART, id.as_bytes(), b"\0", node.as_bytes()])
    }

    /// Prefix of every prewarm pin a dataset holds.
    pub fn pin_prefix(dataset: &str) -> Vec<u8> {
        cat(&[PIN, dataset.as_bytes(), b"\0"])
    }

    /// A dataset's prewarm pin of one file version.
    pub fn pin(dataset: &str, fv: &super::FileVersionId) -> Vec<u8> {
        cat(&[&pin_prefix(dataset), &fv.0])
    }

    /// The chunk key at the end of a `c/`, `r/`, `p/` or `h/` key.
    pub fn chunk_of(key: &[u8]) -> Option<ChunkKey> {
        ChunkKey::parse(key.get(key.len().checked_sub(20)?..)?)
    }
}

/// A resident chunk as persisted: where it is and what it hashes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResidentRecord {
    pub tier: u8,
    pub len: u32,
    pub hash: [u8; 32],
    /// Logical clock of the last access (LRU order survives restarts).
    pub last_access: u64,
    /// Pinned chunks are never evicted.
    pub pinned: bool,
    /// Chunks that may not live on disk are dropped, not demoted.
    pub memory_only: bool,
    /// Byte offset of the chunk in its backing file.
    pub offset: u64,
}

impl ResidentRecord {
    const LEN: usize = 1 + 4 + 32 + 8 + 1 + 8;

    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(Self::LEN);
        v.push(self.tier);
        v.extend_from_slice(&self.len.to_be_bytes());
        v.extend_from_slice(&self.hash);
        v.extend_from_slice(&self.last_access.to_be_bytes());
        v.push(u8::from(self.pinned) | (u8::from(self.memory_only) << 1));
        v.extend_from_slice(&self.offset.to_be_bytes());
        v
    }

    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() != Self::LEN {
            return None;
        }
        Some(Self {
            tier: b[0],
            len: u32::from_be_bytes(b[1..5].try_into().ok()?),
            hash: b[5..37].try_into().ok()?,
            last_access: u64::from_be_bytes(b[37..45].try_into().ok()?),
            pinned: b[45] & 1 != 0,
            memory_only: b[45] & 2 != 0,
            offset: u64::from_be_bytes(b[46..54].try_into().ok()?),
        })
    }
}

/// Encodes a chunk-map value.
pub fn encode_chunk_map(hash: &[u8; 32], len: u32) -> Vec<u8> {
    [hash.as_slice(), &len.to_be_bytes()].concat()
}

/// Decodes a chunk-map value.
pub fn decode_chunk_map(b: &[u8]) -> Option<([u8; 32], u32)> {
    if b.len() != 36 {
        return None;
    }
    Some((
        b[..32].try_into().ok()?,
        u32::from_be_bytes(b[32..].try_into().ok()?),
    ))
}

/// One raw (key, value) pair.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// The node's RocksDB database.
pub struct Index {
    db: DB,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("path", &self.db.path())
            .finish()
    }
}

impl Index {
    /// Opens (creating if needed) the index at `path`. RocksDB replays its
    /// write-ahead log, so every batch acknowledged before a crash is there.
    pub fn open(path: &Path) -> Result<Self, IndexError> {
        let mut opts = rocksdb::Options::default();
        opts.create_if_missing(true);
        opts.set_max_open_files(256);
        opts.set_keep_log_file_num(4);
        Ok(Self {
            db: DB::open(&opts, path)?,
        })
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, IndexError> {
        Ok(self.db.get(key)?)
    }

    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<(), IndexError> {
        Ok(self.db.put(key, value)?)
    }

    /// Applies a batch atomically.
    pub fn write(&self, batch: WriteBatch) -> Result<(), IndexError> {
        Ok(self.db.write(batch)?)
    }

    /// Applies a batch atomically and durably: the write-ahead log is
    /// synced before this returns (records an operator would miss after a
    /// power loss: datasets, pins, jobs).
    pub fn write_durable(&self, batch: WriteBatch) -> Result<(), IndexError> {
        let mut opts = rocksdb::WriteOptions::default();
        opts.set_sync(true);
        Ok(self.db.write_opt(batch, &opts)?)
    }

    /// Syncs the write-ahead log: every batch written so far is durable.
    pub fn sync(&self) -> Result<(), IndexError> {
        Ok(self.db.flush_wal(true)?)
    }

    /// Every (key, value) whose key starts with `prefix`, in key order.
    pub fn scan(&self, prefix: &[u8]) -> Result<Vec<KeyValue>, IndexError> {
        let mut out = Vec::new();
        self.for_each(prefix, |k, v| {
            out.push((k.to_vec(), v.to_vec()));
            true
        })?;
        Ok(out)
    }

    /// Calls `f` on every (key, value) under `prefix` until it returns false.
    pub fn for_each(
        &self,
        prefix: &[u8],
        mut f: impl FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), IndexError> {
        for item in self
            .db
            .iterator(IteratorMode::From(prefix, Direction::Forward))
        {
            let (k, v) = item?;
            if !k.starts_with(prefix) || !f(&k, &v) {
                break;
            }
        }
        Ok(())
    }

    /// Adds deletes of every key under `prefix` to `batch`.
    pub fn delete_prefix_into(
        &self,
        prefix: &[u8],
        batch: &mut WriteBatch,
    ) -> Result<(), IndexError> {
        self.for_each(prefix, |k, _| {
            batch.delete(k);
            true
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resident_record_round_trips() {
        let r = ResidentRecord {
            tier: 1,
            len: 4 << 20,
            hash: [7; 32],
            last_access: 99,
            pinned: true,
            memory_only: false,
            offset: 12 << 20,
        };
        assert_eq!(ResidentRecord::decode(&r.encode()), Some(r));
        assert_eq!(ResidentRecord::decode(&[0; 3]), None);
    }

    #[test]
    fn children_prefix_does_not_match_grandchildren_or_siblings() {
        let kids = keys::manifest_children("ds", 1, "a");
        assert!(keys::manifest_entry("ds", 1, "a/x").starts_with(&kids));
        assert!(!keys::manifest_entry("ds", 1, "a/b/x").starts_with(&kids));
        assert!(!keys::manifest_entry("ds", 1, "ab/x").starts_with(&kids));
        let root_kids = keys::manifest_children("ds", 1, "");
        assert!(keys::manifest_entry("ds", 1, "top").starts_with(&root_kids));
        assert!(!keys::manifest_entry("ds", 1, "").starts_with(&root_kids));
        let key = ChunkKey {
            fv: FileVersionId([3; 16]),
            idx: 42,
        };
        assert_eq!(keys::chunk_of(&keys::resident(&key)), Some(key));
        assert_eq!(keys::chunk_of(&keys::by_hash(&[9; 32], &key)), Some(key));
    }

    #[test]
    fn scan_is_bounded_by_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let idx = Index::open(dir.path()).unwrap();
        idx.put(b"a/1", b"x").unwrap();
        idx.put(b"a/2", b"y").unwrap();
        idx.put(b"b/1", b"z").unwrap();
        let got = idx.scan(b"a/").unwrap();
        assert_eq!(got.len(), 2);
        let mut batch = WriteBatch::default();
        idx.delete_prefix_into(b"a/", &mut batch).unwrap();
        idx.write(batch).unwrap();
        assert!(idx.scan(b"a/").unwrap().is_empty());
        assert_eq!(idx.get(b"b/1").unwrap().as_deref(), Some(&b"z"[..]));
    }
}
