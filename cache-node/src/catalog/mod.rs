//! The dataset catalog: specs, names and immutable manifest versions.
//!
//! A dataset is a name, a source and options. Creating it lists the source
//! into manifest version 1; `refresh` lists again into version N+1. A
//! version is never modified, so a reader pinned to it sees consistent
//! bytes for as long as it exists. Each file entry carries a *file version
//! id* — a hash of the object's identity (full location, ETag or size +
//! mtime, chunk size) — which is what the chunk store keys bytes by: an
//! object that kept its ETag across a refresh, or that two datasets share,
//! has one id and so one chunk map and one set of cached bytes.

pub mod manifest;

use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message;
use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};
use shoal_proto::v1;

use crate::index::{keys, FileVersionId, Index, IndexError};
use crate::store::{Placement, TierPolicy};

/// Errors of the catalog.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("invalid dataset name {0:?}: use 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit")]
    InvalidName(String),
    #[error("invalid dataset spec: {0}")]
    InvalidSpec(String),
    #[error("dataset {0:?} not found")]
    NotFound(String),
    #[error("dataset {0:?} already exists")]
    AlreadyExists(String),
    #[error("dataset {dataset:?} has no manifest version {version}")]
    NoVersion { dataset: String, version: u64 },
    #[error("{0}: no such file or directory")]
    NoPath(String),
    #[error("{0}: not a directory")]
    NotDirectory(String),
    #[error("{0}: is a directory")]
    IsDirectory(String),
    #[error(transparent)]
    Index(#[from] IndexError),
}

/// Default chunk size: 4 MiB.
pub const DEFAULT_CHUNK_SIZE: u64 = 4 << 20;
/// Chunk sizes accepted.
pub const CHUNK_SIZE_RANGE: std::ops::RangeInclusive<u64> = (64 << 10)..=(64 << 20);

/// A dataset spec as stored (credentials are never part of it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    pub name: String,
    pub source: String,
    #[serde(default)]
    pub s3_endpoint: String,
    #[serde(default)]
    pub region: String,
    pub chunk_size: u64,
    #[serde(default)]
    pub tier_policy: String,
    #[serde(default)]
    pub pin: bool,
}

impl Spec {
    /// Validates a wire spec and fills defaults.
    pub fn from_wire(s: &v1::DatasetSpec) -> Result<Self, CatalogError> {
        validate_name(&s.name)?;
        let chunk_size = if s.chunk_size == 0 {
            DEFAULT_CHUNK_SIZE
        } else {
            s.chunk_size
        };
        if !CHUNK_SIZE_RANGE.contains(&chunk_size) {
            return Err(CatalogError::InvalidSpec(format!(
                "chunk size {chunk_size} must be between 64 KiB and 64 MiB"
            )));
        }
        let policy = v1::TierPolicy::try_from(s.tier_policy).map_err(|_| {
            CatalogError::InvalidSpec(format!("unknown tier policy {}", s.tier_policy))
        })?;
        if s.source.contains('@') || s.s3_endpoint.contains('@') {
            return Err(CatalogError::InvalidSpec(
                "credentials do not belong in a source or endpoint URL; use AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a credentials file on the node".into(),
            ));
        }
        Ok(Self {
            name: s.name.clone(),
            source: s.source.trim_end_matches('/').to_string(),
            s3_endpoint: s.s3_endpoint.clone(),
            region: s.region.clone(),
            chunk_size,
            tier_policy: policy.as_str_name().to_string(),
            pin: s.pin,
        })
    }

    pub fn to_wire(&self) -> v1::DatasetSpec {
        v1::DatasetSpec {
            name: self.name.clone(),
            source: self.source.clone(),
            s3_endpoint: self.s3_endpoint.clone(),
            region: self.region.clone(),
            chunk_size: self.chunk_size,
            tier_policy: self.wire_policy() as i32,
            pin: self.pin,
        }
    }

    fn wire_policy(&self) -> v1::TierPolicy {
        v1::TierPolicy::from_str_name(&self.tier_policy).unwrap_or(v1::TierPolicy::MemoryThenDisk)
    }

    /// Where this dataset's chunks may be cached.
    pub fn placement(&self) -> Placement {
        Placement {
            policy: match self.wire_policy() {
                v1::TierPolicy::MemoryThenDisk => TierPolicy::MemoryThenDisk,
                v1::TierPolicy::DiskOnly => TierPolicy::DiskOnly,
                v1::TierPolicy::MemoryOnly => TierPolicy::MemoryOnly,
            },
            pin: self.pin,
            only: None,
        }
    }
}

/// Summary of one manifest version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    pub version: u64,
    pub created_unix: i64,
    pub files: u64,
    pub directories: u64,
    pub total_bytes: u64,
    /// Origin keys no path shows (count, and the first few with a reason).
    #[serde(default)]
    pub skipped: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_examples: Vec<manifest::SkippedKey>,
}

/// A deleted dataset, kept so the delete replicates and a stale peer
/// cannot bring the dataset back (`t/<name>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    /// The latest version the dataset had when it was deleted.
    pub version: u64,
    pub deleted_unix: i64,
}

/// Skipped keys kept as examples per manifest version.
pub const SKIPPED_EXAMPLES: usize = 5;

/// A dataset as stored under `d/<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetRecord {
    pub spec: Spec,
    pub created_unix: i64,
    pub versions: Vec<VersionInfo>,
}

impl DatasetRecord {
    pub fn latest(&self) -> &VersionInfo {
        self.versions
            .last()
            .expect("a dataset always has a version")
    }

    /// The version `v` (0 = latest).
    pub fn version(&self, v: u64) -> Result<&VersionInfo, CatalogError> {
        if v == 0 {
            return Ok(self.latest());
        }
        self.versions
            .iter()
            .find(|i| i.version == v)
            .ok_or_else(|| CatalogError::NoVersion {
                dataset: self.spec.name.clone(),
                version: v,
            })
    }
}

/// Checks a dataset name: `[a-z0-9][a-z0-9-]{0,62}`.
pub fn validate_name(name: &str) -> Result<(), CatalogError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(CatalogError::InvalidName(name.to_string()))
    }
}

/// Normalises a dataset-relative path a client sent: leading and trailing
/// '/' dropped, then it must be a path a key can have
/// ([`manifest::key_path`]).
pub fn clean_path(path: &str) -> Result<String, CatalogError> {
    let trimmed = path.trim_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    match manifest::key_path(trimmed) {
        Ok(p) => Ok(p.to_string()),
        Err(_) => Err(CatalogError::NoPath(path.to_string())),
    }
}

pub(crate) fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The catalog over the node's index.
#[derive(Debug)]
pub struct Catalog<'a> {
    index: &'a Index,
}

impl<'a> Catalog<'a> {
    pub fn new(index: &'a Index) -> Self {
        Self { index }
    }

    pub fn get(&self, name: &str) -> Result<DatasetRecord, CatalogError> {
        validate_name(name)?;
        let raw = self
            .index
            .get(&keys::dataset(name))?
            .ok_or_else(|| CatalogError::NotFound(name.to_string()))?;
        serde_json::from_slice(&raw).map_err(|e| {
            IndexError::Corrupt {
                key: format!("d/{name}"),
                detail: e.to_string(),
            }
            .into()
        })
    }

    pub fn exists(&self, name: &str) -> Result<bool, CatalogError> {
        Ok(self.index.get(&keys::dataset(name))?.is_some())
    }

    pub fn list(&self) -> Result<Vec<DatasetRecord>, CatalogError> {
        let mut out = Vec::new();
        for (k, v) in self.index.scan(keys::DATASET)? {
            let rec: DatasetRecord =
                serde_json::from_slice(&v).map_err(|e| IndexError::Corrupt {
                    key: String::from_utf8_lossy(&k).into_owned(),
                    detail: e.to_string(),
                })?;
            out.push(rec);
        }
        Ok(out)
    }

    /// Writes a new manifest version (and the dataset record) in one batch:
    /// either all of it is there afterwards or none of it.
    pub fn commit_version(
        &self,
        mut record: DatasetRecord,
        entries: &[v1::FileEntry],
        skipped: &[manifest::SkippedKey],
    ) -> Result<DatasetRecord, CatalogError> {
        let name = record.spec.name.clone();
        // A re-created dataset numbers its versions above its tombstone, so
        // peers that kept the tombstone take the new dataset.
        let tomb = self.tombstone(&name)?;
        let version = record
            .versions
            .last()
            .map_or(tomb.map_or(1, |t| t.version + 1), |v| v.version + 1);
        let files = entries.iter().filter(|e| e.kind() == v1::FileKind::File);
        record.versions.push(VersionInfo {
            version,
            created_unix: now_unix(),
            files: files.clone().count() as u64,
            directories: entries
                .iter()
                .filter(|e| e.kind() == v1::FileKind::Directory)
                .count() as u64,
            total_bytes: files.map(|e| e.size).sum(),
            skipped: skipped.len() as u64,
            skipped_examples: skipped.iter().take(SKIPPED_EXAMPLES).cloned().collect(),
        });
        let mut batch = WriteBatch::default();
        batch.delete(keys::tombstone(&name));
        for e in entries {
            batch.put(
                keys::manifest_entry(&name, version, &e.path),
                e.encode_to_vec(),
            );
        }
        batch.put(
            keys::dataset(&name),
            serde_json::to_vec(&record).expect("record serialises"),
        );
        self.index.write_durable(batch)?;
        Ok(record)
    }

    /// Stores a dataset received from a peer, if it is newer than ours
    /// (record and every manifest version in one batch). Returns whether
    /// anything was written.
    pub fn import(
        &self,
        record: DatasetRecord,
        versions: &[(u64, Vec<v1::FileEntry>)],
    ) -> Result<bool, CatalogError> {
        validate_name(&record.spec.name)?;
        validate_import(&record, versions)?;
        let name = record.spec.name.clone();
        let have = match self.get(&name) {
            Ok(r) => Some(r.latest().version),
            Err(CatalogError::NotFound(_)) => None,
            Err(e) => return Err(e),
        };
        let buried = self.tombstone(&name)?.map(|t| t.version);
        if record.versions.is_empty()
            || have.is_some_and(|v| v >= record.latest().version)
            || buried.is_some_and(|v| v >= record.latest().version)
        {
            return Ok(false);
        }
        let mut batch = WriteBatch::default();
        batch.delete(keys::tombstone(&name));
        for (version, entries) in versions {
            if have.is_some_and(|v| v >= *version) {
                continue;
            }
            for e in entries {
                batch.put(
                    keys::manifest_entry(&name, *version, &e.path),
                    e.encode_to_vec(),
                );
            }
        }
        batch.put(
            keys::dataset(&name),
            serde_json::to_vec(&record).expect("record serialises"),
        );
        self.index.write_durable(batch)?;
        Ok(true)
    }

    /// Removes a dataset and every manifest version of it.
    /// Deletes a dataset and leaves a tombstone at `at_least` or its
    /// latest version, whichever is higher; returns the tombstone.
    pub fn delete(&self, name: &str, at_least: u64) -> Result<Tombstone, CatalogError> {
        let rec = self.get(name)?;
        let tomb = Tombstone {
            version: rec.latest().version.max(at_least),
            deleted_unix: now_unix(),
        };
        let mut batch = WriteBatch::default();
        self.index
            .delete_prefix_into(&keys::manifest_prefix(name, None), &mut batch)?;
        batch.delete(keys::dataset(name));
        batch.put(
            keys::tombstone(name),
            serde_json::to_vec(&tomb).expect("tombstone serialises"),
        );
        self.index.write_durable(batch)?;
        Ok(tomb)
    }

    /// Removes manifest versions `versions` of a dataset (never its latest)
    /// and their entries, in one durable batch.
    pub fn drop_versions(&self, name: &str, versions: &[u64]) -> Result<(), CatalogError> {
        let mut rec = self.get(name)?;
        let latest = rec.latest().version;
        let mut batch = WriteBatch::default();
        for v in versions.iter().filter(|v| **v != latest) {
            self.index
                .delete_prefix_into(&keys::manifest_prefix(name, Some(*v)), &mut batch)?;
        }
        rec.versions
            .retain(|v| v.version == latest || !versions.contains(&v.version));
        batch.put(
            keys::dataset(name),
            serde_json::to_vec(&rec).expect("record serialises"),
        );
        self.index.write_durable(batch)?;
        Ok(())
    }

    /// Records a peer's tombstone for a dataset this node does not have
    /// (so it spreads, and stale peers cannot resurrect the dataset).
    /// Returns whether anything was written.
    pub fn bury(&self, name: &str, version: u64) -> Result<bool, CatalogError> {
        validate_name(name)?;
        if self.exists(name)? || self.tombstone(name)?.is_some_and(|t| t.version >= version) {
            return Ok(false);
        }
        let tomb = Tombstone {
            version,
            deleted_unix: now_unix(),
        };
        let mut batch = WriteBatch::default();
        batch.put(
            keys::tombstone(name),
            serde_json::to_vec(&tomb).expect("tombstone serialises"),
        );
        self.index.write_durable(batch)?;
        Ok(true)
    }

    pub fn tombstone(&self, name: &str) -> Result<Option<Tombstone>, CatalogError> {
        Ok(self
            .index
            .get(&keys::tombstone(name))?
            .and_then(|b| serde_json::from_slice(&b).ok()))
    }

    /// Every tombstone, by dataset name.
    pub fn tombstones(&self) -> Result<Vec<(String, Tombstone)>, CatalogError> {
        Ok(self
            .index
            .scan(keys::TOMBSTONE)?
            .into_iter()
            .filter_map(|(k, v)| {
                let name = String::from_utf8(k.get(keys::TOMBSTONE.len()..)?.to_vec()).ok()?;
                Some((name, serde_json::from_slice(&v).ok()?))
            })
            .collect())
    }

    /// The entry at `path` of a manifest version.
    pub fn stat(
        &self,
        name: &str,
        version: u64,
        path: &str,
    ) -> Result<v1::FileEntry, CatalogError> {
        let path = clean_path(path)?;
        let raw = self
            .index
            .get(&keys::manifest_entry(name, version, &path))?
            .ok_or_else(|| CatalogError::NoPath(format!("/{path}")))?;
        decode_entry(&raw)
    }

    /// The children of directory `path`, in name order.
    pub fn list_dir(
        &self,
        name: &str,
        version: u64,
        path: &str,
    ) -> Result<Vec<v1::FileEntry>, CatalogError> {
        let dir = self.stat(name, version, path)?;
        if dir.kind() != v1::FileKind::Directory {
            return Err(CatalogError::NotDirectory(format!("/{}", dir.path)));
        }
        let mut out = Vec::new();
        for (_, v) in self
            .index
            .scan(&keys::manifest_children(name, version, &dir.path))?
        {
            out.push(decode_entry(&v)?);
        }
        Ok(out)
    }

    /// Calls `f` on every entry of a manifest version.
    pub fn for_each_entry(
        &self,
        name: &str,
        version: u64,
        mut f: impl FnMut(v1::FileEntry),
    ) -> Result<(), CatalogError> {
        let mut err = None;
        self.index.for_each(
            &keys::manifest_prefix(name, Some(version)),
            |_, v| match decode_entry(v) {
                Ok(e) => {
                    f(e);
                    true
                }
                Err(e) => {
                    err = Some(e);
                    false
                }
            },
        )?;
        err.map_or(Ok(()), Err)
    }

    /// File versions referenced by any manifest of any dataset except `except`.
    pub fn referenced_file_versions(
        &self,
        except: &str,
    ) -> Result<std::collections::HashSet<FileVersionId>, CatalogError> {
        let mut out = std::collections::HashSet::new();
        for rec in self.list()? {
            if rec.spec.name == except {
                continue;
            }
            for v in &rec.versions {
                self.for_each_entry(&rec.spec.name, v.version, |e| {
                    if let Some(fv) = FileVersionId::from_slice(&e.file_version) {
                        out.insert(fv);
                    }
                })?;
            }
        }
        Ok(out)
    }
}

fn decode_entry(raw: &[u8]) -> Result<v1::FileEntry, CatalogError> {
    v1::FileEntry::decode(raw).map_err(|e| {
        CatalogError::Index(IndexError::Corrupt {
            key: "manifest entry".into(),
            detail: e.to_string(),
        })
    })
}

/// A dataset from a peer is checked like one an operator creates: a
/// buggy or hostile peer must not plant a chunk size the store divides by,
/// a file with more chunks than a chunk index can name, a path that
/// escapes the dataset, or a file without an identity.
fn validate_import(
    record: &DatasetRecord,
    versions: &[(u64, Vec<v1::FileEntry>)],
) -> Result<(), CatalogError> {
    let bad = |what: String| {
        CatalogError::InvalidSpec(format!(
            "peer sent dataset {:?} with {what}",
            record.spec.name
        ))
    };
    if !CHUNK_SIZE_RANGE.contains(&record.spec.chunk_size) {
        return Err(bad(format!("chunk size {}", record.spec.chunk_size)));
    }
    if let Some(v) = record
        .versions
        .iter()
        .find(|v| v.skipped_examples.len() > SKIPPED_EXAMPLES)
    {
        return Err(bad(format!(
            "{} skipped-key examples in version {}",
            v.skipped_examples.len(),
            v.version
        )));
    }
    for (version, entries) in versions {
        for e in entries {
            if !e.path.is_empty() && manifest::key_path(&e.path).is_err() {
                return Err(bad(format!("path {:?} in version {version}", e.path)));
            }
            if e.kind() == v1::FileKind::File
                && (!CHUNK_SIZE_RANGE.contains(&e.chunk_size)
                    || !manifest::chunks_fit(e.size, e.chunk_size)
                    || e.file_version.len() != 16)
            {
                return Err(bad(format!(
                    "file {:?} of {} bytes with chunk size {} and a {}-byte id in version {version}",
                    e.path,
                    e.size,
                    e.chunk_size,
                    e.file_version.len()
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imports_from_peers_are_validated() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("index")).unwrap();
        let catalog = Catalog::new(&index);
        let spec = Spec::from_wire(&v1::DatasetSpec {
            name: "ds".into(),
            source: "file:///x".into(),
            ..Default::default()
        })
        .unwrap();
        let record = DatasetRecord {
            spec,
            created_unix: 1,
            versions: vec![VersionInfo {
                version: 1,
                created_unix: 1,
                files: 1,
                directories: 0,
                total_bytes: 10,
                skipped: 0,
                skipped_examples: Vec::new(),
            }],
        };
        let file = |path: &str, chunk_size: u64| v1::FileEntry {
            path: path.into(),
            kind: v1::FileKind::File as i32,
            size: 10,
            chunk_size,
            file_version: vec![7u8; 16].into(),
            ..Default::default()
        };
        for (entries, needle) in [
            (vec![file("a", 0)], "chunk size 0"),
            (vec![file("../etc/passwd", 1 << 20)], "path"),
            (vec![file("a//b", 1 << 20)], "path"),
            (
                vec![v1::FileEntry {
                    size: u64::MAX,
                    ..file("huge", 64 << 10)
                }],
                "file \"huge\"",
            ),
        ] {
            let err = catalog.import(record.clone(), &[(1, entries)]).unwrap_err();
            assert!(err.to_string().contains(needle), "{err}");
            assert!(catalog.get("ds").is_err(), "nothing was stored");
        }
        let mut zero = record.clone();
        zero.spec.chunk_size = 0;
        assert!(catalog
            .import(zero, &[(1, vec![file("a", 1 << 20)])])
            .is_err());
        assert!(catalog
            .import(record, &[(1, vec![file("a", 1 << 20)])])
            .unwrap());
    }

    #[test]
    fn names_follow_the_rule() {
        for ok in ["a", "imagenet-1k", "0abc", &"x".repeat(63)] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "A", "a_b", "a.b", "a/b", &"x".repeat(64), "é"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn paths_are_cleaned_or_refused() {
        assert_eq!(clean_path("/a/b/").unwrap(), "a/b");
        assert_eq!(clean_path("/").unwrap(), "");
        for bad in ["a//b", "../x", "a/./b", "a/\0"] {
            assert!(clean_path(bad).is_err(), "{bad}");
        }
        // Control characters are legal in file names, so in paths.
        assert_eq!(clean_path("a/\u{1}\t").unwrap(), "a/\u{1}\t");
    }
}
