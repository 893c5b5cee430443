//! Local-directory origins (`file:///path`), e.g. an NFS share.
//!
//! Local files have no ETag; a file version is pinned by size and mtime
//! (nanoseconds), checked before and after every read so a file rewritten
//! during the read is reported as changed rather than served mixed.

use std::ops::Range;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;

use super::{expect_len, ObjectKind, ObjectMeta, Origin, OriginError};

/// A directory tree on a local or network file system.
#[derive(Debug)]
pub struct LocalOrigin {
    root: PathBuf,
}

impl LocalOrigin {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }
}

fn mtime_nanos(meta: &std::fs::Metadata) -> i64 {
    meta.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(meta.mtime_nsec())
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<ObjectMeta>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path)?;
        let rel = path
            .strip_prefix(root)
            .expect("walked path is under root")
            .to_string_lossy()
            .into_owned();
        let ft = meta.file_type();
        let (kind, target) = if ft.is_symlink() {
            let t = std::fs::read_link(&path)?;
            (ObjectKind::Symlink, t.to_string_lossy().into_owned())
        } else if ft.is_dir() {
            (ObjectKind::Directory, String::new())
        } else if ft.is_file() {
            (ObjectKind::File, String::new())
        } else {
            continue; // sockets, fifos, devices are not dataset content
        };
        out.push(ObjectMeta {
            path: rel,
            kind,
            size: if kind == ObjectKind::File {
                meta.len()
            } else {
                target.len() as u64
            },
            mtime_nanos: mtime_nanos(&meta),
            mode: meta.mode(),
            owner: Some((meta.uid(), meta.gid())),
            etag: String::new(),
            version_id: String::new(),
            symlink_target: target,
        });
        if kind == ObjectKind::Directory {
            walk(root, &path, out)?;
        }
    }
    Ok(())
}

fn map_io(root: &Path, e: std::io::Error) -> OriginError {
    match e.kind() {
        std::io::ErrorKind::NotFound => {
            OriginError::NotFound(format!("{} does not exist", root.display()))
        }
        std::io::ErrorKind::PermissionDenied => {
            OriginError::Denied(format!("{}: permission denied", root.display()))
        }
        _ => OriginError::Io(e),
    }
}

#[async_trait]
impl Origin for LocalOrigin {
    async fn list(&self) -> Result<Vec<ObjectMeta>, OriginError> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || {
            let meta = std::fs::metadata(&root).map_err(|e| map_io(&root, e))?;
            if !meta.is_dir() {
                return Err(OriginError::NotFound(format!(
                    "{} is not a directory",
                    root.display()
                )));
            }
            let mut out = Vec::new();
            walk(&root, &root, &mut out).map_err(|e| map_io(&root, e))?;
            Ok(out)
        })
        .await
        .map_err(|e| OriginError::Io(std::io::Error::other(e)))?
    }

    async fn read_range(
        &self,
        object: &ObjectMeta,
        range: Range<u64>,
    ) -> Result<Bytes, OriginError> {
        let path = self.root.join(&object.path);
        let object = object.clone();
        tokio::task::spawn_blocking(move || {
            let changed = |detail: String| OriginError::Changed {
                path: object.path.clone(),
                detail,
            };
            let file = std::fs::File::open(&path).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => changed("file no longer exists".into()),
                _ => OriginError::Io(e),
            })?;
            let check = |file: &std::fs::File| -> Result<(), OriginError> {
                let meta = file.metadata()?;
                if meta.len() != object.size || mtime_nanos(&meta) != object.mtime_nanos {
                    return Err(changed(format!(
                        "size/mtime {}/{} differ from listed {}/{}",
                        meta.len(),
                        mtime_nanos(&meta),
                        object.size,
                        object.mtime_nanos
                    )));
                }
                Ok(())
            };
            check(&file)?;
            let mut buf = vec![0u8; (range.end - range.start) as usize];
            let mut done = 0;
            while done < buf.len() {
                let n = file.read_at(&mut buf[done..], range.start + done as u64)?;
                if n == 0 {
                    break;
                }
                done += n;
            }
            check(&file)?;
            expect_len(&object.path, &range, done)?;
            Ok(Bytes::from(buf))
        })
        .await
        .map_err(|e| OriginError::Io(std::io::Error::other(e)))?
    }

    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }
}
