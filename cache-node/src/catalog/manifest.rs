//! Building a manifest version from an origin listing.

use std::collections::BTreeMap;

use shoal_proto::v1;

use super::Spec;
use crate::index::FileVersionId;
use crate::origin::{ObjectKind, ObjectMeta};

/// Identity of one version of an object's bytes.
///
/// Derived from the object's full location (endpoint, source and path, so
/// two datasets over overlapping prefixes agree), its version evidence (ETag
/// and version id when the origin has them, else size and mtime) and the
/// chunk size (chunk boundaries are part of the layout).
pub fn file_version_id(spec: &Spec, obj: &ObjectMeta) -> FileVersionId {
    let mut h = blake3::Hasher::new();
    let location = format!("{}\0{}/{}", spec.s3_endpoint, spec.source, obj.path);
    h.update(location.as_bytes());
    h.update(b"\0");
    if obj.etag.is_empty() {
        h.update(format!("size={} mtime={}", obj.size, obj.mtime_nanos).as_bytes());
    } else {
        h.update(
            format!(
                "etag={} version={} size={}",
                obj.etag, obj.version_id, obj.size
            )
            .as_bytes(),
        );
    }
    h.update(format!("\0chunk={}", spec.chunk_size).as_bytes());
    let mut id = [0u8; 16];
    id.copy_from_slice(&h.finalize().as_bytes()[..16]);
    FileVersionId(id)
}

/// An origin key no path shows, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SkippedKey {
    pub key: String,
    pub reason: String,
}

const SHADOWED: &str = "shadowed by a directory of the same name";
const TOO_MANY_CHUNKS: &str = "has more chunks than a file may have (2^32 - 1) at this chunk size";

/// Most chunks a file may have: chunk indexes are `u32` on the wire
/// (`FetchChunk.index`) and in the store's keys.
pub const MAX_CHUNKS: u64 = u32::MAX as u64;

/// Whether a file of `size` bytes can be cut into chunks of `chunk_size`
/// that the store can index (`chunk_size` > 0).
pub fn chunks_fit(size: u64, chunk_size: u64) -> bool {
    size.div_ceil(chunk_size) <= MAX_CHUNKS
}

/// Longest file name Linux accepts (NAME_MAX).
const NAME_MAX: usize = 255;

/// The path an origin key is shown at, or why no path can show it
/// (docs/SEMANTICS.md, "Object keys that are not paths"). Keys are never
/// rewritten: two keys can never end up at one path, and a path always
/// reads the key it was listed from.
pub fn key_path(key: &str) -> Result<&str, &'static str> {
    if key.starts_with('/') {
        return Err("starts with '/'");
    }
    if key.contains('\0') {
        return Err("contains a NUL byte");
    }
    for name in key.split('/') {
        if name.is_empty() {
            return Err("has an empty path segment");
        }
        if name == "." || name == ".." {
            return Err("has a '.' or '..' segment");
        }
        if name.len() > NAME_MAX {
            return Err("has a name longer than 255 bytes");
        }
    }
    Ok(key)
}

/// Turns a listing into manifest entries: the root, every directory
/// (explicit or implied by a key), every file and symlink. Keys no path
/// can show ([`key_path`]), files shadowed by a directory of the same
/// name (in whichever order they are listed) and files too large to chunk
/// ([`chunks_fit`]) are skipped and returned for reporting: every key is
/// either shown at its own path or reported.
pub fn build(spec: &Spec, objects: Vec<ObjectMeta>) -> (Vec<v1::FileEntry>, Vec<SkippedKey>) {
    let mut entries: BTreeMap<String, v1::FileEntry> = BTreeMap::new();
    let mut skipped = Vec::new();
    let dir_entry = |path: &str, mtime: i64| v1::FileEntry {
        path: path.to_string(),
        kind: v1::FileKind::Directory as i32,
        mode: 0o40555,
        mtime_nanos: mtime,
        ..Default::default()
    };
    entries.insert(String::new(), dir_entry("", 0));
    for obj in objects {
        if obj.path.is_empty() {
            continue; // the root
        }
        let path = match key_path(&obj.path) {
            Ok(_) if obj.kind == ObjectKind::File && !chunks_fit(obj.size, spec.chunk_size) => {
                skipped.push(SkippedKey {
                    key: obj.path,
                    reason: TOO_MANY_CHUNKS.into(),
                });
                continue;
            }
            Ok(p) => p.to_string(),
            Err(reason) => {
                skipped.push(SkippedKey {
                    key: obj.path,
                    reason: reason.into(),
                });
                continue;
            }
        };
        // Implied parent directories.
        let mut parent = path.as_str();
        while let Some((p, _)) = parent.rsplit_once('/') {
            match entries.get(p) {
                Some(e) if e.kind() == v1::FileKind::Directory => {}
                // An object named like a prefix (`a` and `a/b`, listed in
                // that order): the directory wins, as in mountpoint-s3.
                Some(_) => {
                    entries.insert(p.to_string(), dir_entry(p, obj.mtime_nanos));
                    skipped.push(SkippedKey {
                        key: p.to_string(),
                        reason: SHADOWED.into(),
                    });
                }
                None => {
                    entries.insert(p.to_string(), dir_entry(p, obj.mtime_nanos));
                }
            }
            parent = p;
        }
        let (has_owner, (uid, gid)) = (obj.owner.is_some(), obj.owner.unwrap_or_default());
        let entry = match obj.kind {
            // An origin's own directory keeps its mode and owner; implied
            // ones (S3 prefixes) are r-x for all.
            ObjectKind::Directory => v1::FileEntry {
                mode: if obj.mode & 0o170000 == 0o040000 {
                    obj.mode
                } else {
                    0o40555
                },
                has_owner,
                uid,
                gid,
                ..dir_entry(&path, obj.mtime_nanos)
            },
            ObjectKind::File | ObjectKind::Symlink => v1::FileEntry {
                path: path.clone(),
                kind: if obj.kind == ObjectKind::File {
                    v1::FileKind::File
                } else {
                    v1::FileKind::Symlink
                } as i32,
                size: obj.size,
                mtime_nanos: obj.mtime_nanos,
                mode: obj.mode,
                etag: obj.etag.clone(),
                version_id: obj.version_id.clone(),
                symlink_target: obj.symlink_target.clone(),
                file_version: if obj.kind == ObjectKind::File {
                    bytes::Bytes::copy_from_slice(&file_version_id(spec, &obj).0)
                } else {
                    bytes::Bytes::new()
                },
                chunk_size: spec.chunk_size,
                has_owner,
                uid,
                gid,
            },
        };
        // A file and a directory of the same name (`a` and the marker
        // `a/`, possible in S3): keep the directory, report the file.
        match entries.get(&path) {
            Some(e) if e.kind() == v1::FileKind::Directory => {
                if entry.kind() != v1::FileKind::Directory {
                    skipped.push(SkippedKey {
                        key: path,
                        reason: SHADOWED.into(),
                    });
                }
            }
            Some(_) if entry.kind() == v1::FileKind::Directory => {
                skipped.push(SkippedKey {
                    key: path.clone(),
                    reason: SHADOWED.into(),
                });
                entries.insert(path, entry);
            }
            _ => {
                entries.insert(path, entry);
            }
        }
    }
    (entries.into_values().collect(), skipped)
}

/// Rebuilds the origin's view of a manifest file entry, for reads.
pub fn object_of(entry: &v1::FileEntry) -> ObjectMeta {
    ObjectMeta {
        path: entry.path.clone(),
        kind: ObjectKind::File,
        size: entry.size,
        mtime_nanos: entry.mtime_nanos,
        mode: entry.mode,
        owner: entry.has_owner.then_some((entry.uid, entry.gid)),
        etag: entry.etag.clone(),
        version_id: entry.version_id.clone(),
        symlink_target: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        Spec {
            name: "d".into(),
            source: "s3://b/p".into(),
            s3_endpoint: String::new(),
            region: String::new(),
            chunk_size: 1 << 20,
            tier_policy: String::new(),
            pin: false,
        }
    }

    fn obj(path: &str, etag: &str) -> ObjectMeta {
        ObjectMeta {
            path: path.into(),
            kind: ObjectKind::File,
            size: 10,
            mtime_nanos: 5,
            mode: 0o100444,
            owner: None,
            etag: etag.into(),
            version_id: String::new(),
            symlink_target: String::new(),
        }
    }

    #[test]
    fn implied_directories_and_bad_keys() {
        let (entries, skipped) = build(
            &spec(),
            vec![obj("a/b/c.bin", "e1"), obj("a//x", "e2"), obj("top", "e3")],
        );
        let paths: Vec<_> = entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, vec!["", "a", "a/b", "a/b/c.bin", "top"]);
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].key, "a//x");
        assert_eq!(skipped[0].reason, "has an empty path segment");
    }

    #[test]
    fn a_file_listed_before_its_directory_marker_is_reported() {
        let mut marker = obj("a", "");
        marker.kind = ObjectKind::Directory;
        let (entries, skipped) = build(&spec(), vec![obj("a", "e1"), marker]);
        let kinds: Vec<_> = entries
            .iter()
            .map(|e| (e.path.as_str(), e.kind()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("", v1::FileKind::Directory),
                ("a", v1::FileKind::Directory)
            ]
        );
        assert_eq!(
            skipped,
            vec![SkippedKey {
                key: "a".into(),
                reason: SHADOWED.into()
            }]
        );
    }

    #[test]
    fn files_with_more_chunks_than_an_index_can_name_are_reported() {
        let mut huge = obj("huge", "e");
        huge.size = MAX_CHUNKS * (1 << 20) + 1;
        let mut largest = obj("largest", "e");
        largest.size = MAX_CHUNKS * (1 << 20);
        let (entries, skipped) = build(&spec(), vec![huge, largest]);
        let paths: Vec<_> = entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, vec!["", "largest"]);
        assert_eq!(skipped.len(), 1);
        assert_eq!(
            (skipped[0].key.as_str(), skipped[0].reason.as_str()),
            ("huge", TOO_MANY_CHUNKS)
        );
    }

    #[test]
    fn file_version_follows_etag_and_location() {
        let s = spec();
        assert_eq!(
            file_version_id(&s, &obj("x", "e")),
            file_version_id(&s, &obj("x", "e"))
        );
        assert_ne!(
            file_version_id(&s, &obj("x", "e")),
            file_version_id(&s, &obj("x", "f"))
        );
        assert_ne!(
            file_version_id(&s, &obj("x", "e")),
            file_version_id(&s, &obj("y", "e"))
        );
        // The same object seen through a narrower prefix has the same identity.
        let mut narrow = spec();
        narrow.source = "s3://b/p/sub".into();
        assert_eq!(
            file_version_id(&s, &obj("sub/x", "e")),
            file_version_id(&narrow, &obj("x", "e"))
        );
        // Without an ETag, mtime pins the version.
        let mut touched = obj("x", "");
        touched.mtime_nanos += 1;
        assert_ne!(
            file_version_id(&s, &obj("x", "")),
            file_version_id(&s, &touched)
        );
    }

    #[test]
    fn origin_modes_and_owners_are_kept_implied_directories_get_defaults() {
        let mut dir = obj("d", "");
        dir.kind = ObjectKind::Directory;
        dir.mode = 0o40750;
        dir.owner = Some((7, 8));
        let mut secret = obj("d/secret", "");
        secret.mode = 0o100600;
        secret.owner = Some((7, 8));
        let (entries, _) = build(&spec(), vec![dir, secret, obj("s3/x", "e")]);
        let got: Vec<_> = entries
            .iter()
            .map(|e| (e.path.as_str(), e.mode, e.has_owner, e.uid, e.gid))
            .collect();
        assert_eq!(
            got,
            vec![
                ("", 0o40555, false, 0, 0),
                ("d", 0o40750, true, 7, 8),
                ("d/secret", 0o100600, true, 7, 8),
                ("s3", 0o40555, false, 0, 0),
                ("s3/x", 0o100444, false, 0, 0),
            ]
        );
    }

    #[test]
    fn hostile_keys_are_skipped_with_a_reason_never_rewritten() {
        let long = "n".repeat(256);
        let ok255 = "m".repeat(255);
        let keys = [
            "/lead.bin",
            "../x",
            "d/./e",
            "d/../e",
            "a//b",
            ".",
            "nul\0byte",
            long.as_str(),
            "shadow",
            "shadow/inner.bin",
            "tab\there",
            "ctl\u{1}x",
            "sp ace+plus%41",
            ok255.as_str(),
        ];
        let (entries, skipped) = build(&spec(), keys.iter().map(|k| obj(k, "e")).collect());
        let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
        let mut want = vec![
            "",
            "ctl\u{1}x",
            ok255.as_str(),
            "shadow",
            "shadow/inner.bin",
            "sp ace+plus%41",
            "tab\there",
        ];
        want.sort();
        assert_eq!(paths, want);
        let reasons: Vec<(&str, &str)> = skipped
            .iter()
            .map(|s| (s.key.as_str(), s.reason.as_str()))
            .collect();
        assert_eq!(
            reasons,
            vec![
                ("/lead.bin", "starts with '/'"),
                ("../x", "has a '.' or '..' segment"),
                ("d/./e", "has a '.' or '..' segment"),
                ("d/../e", "has a '.' or '..' segment"),
                ("a//b", "has an empty path segment"),
                (".", "has a '.' or '..' segment"),
                ("nul\0byte", "contains a NUL byte"),
                (long.as_str(), "has a name longer than 255 bytes"),
                ("shadow", "shadowed by a directory of the same name"),
            ]
        );
    }
}
