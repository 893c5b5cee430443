//! Origins: where a dataset's bytes really live.
//!
//! An [`Origin`] lists a source tree once per manifest version and then serves
//! byte ranges of the objects it listed, **pinned to the identity it listed
//! them with** (ETag, or size + mtime when the server gives no ETag). A read
//! whose answer does not match that identity fails with
//! [`OriginError::Changed`]: a manifest version never mixes bytes of two
//! object versions. Two real implementations live here ([`s3::S3Origin`],
//! [`local::LocalOrigin`]); [`failure::FailureOrigin`] wraps either one and
//! injects faults and counts requests for tests.

pub mod failure;
pub mod local;
pub mod s3;

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

/// What kind of entry an origin listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKind {
    File,
    Directory,
    Symlink,
}

/// One listed object, relative to the origin root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// '/'-separated path relative to the origin root, no leading slash.
    pub path: String,
    pub kind: ObjectKind,
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_nanos: i64,
    pub mode: u32,
    /// (uid, gid) of the origin's file; `None` for S3.
    pub owner: Option<(u32, u32)>,
    /// Unquoted ETag, empty when the origin has none.
    pub etag: String,
    pub version_id: String,
    pub symlink_target: String,
}

/// Failures talking to an origin. Every variant says what an operator can do.
#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    #[error("origin unreachable: {0}")]
    Unavailable(String),
    #[error("origin denied access (check credentials): {0}")]
    Denied(String),
    #[error("origin not found: {0}")]
    NotFound(String),
    #[error(
        "object {path} changed at the origin since it was listed ({detail}); refresh the dataset"
    )]
    Changed { path: String, detail: String },
    #[error("origin returned {got} bytes for a {want}-byte range of {path}")]
    ShortRead { path: String, want: u64, got: u64 },
    #[error("invalid source: {0}")]
    InvalidSource(String),
    #[error("origin i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// A source of dataset bytes.
#[async_trait]
pub trait Origin: Send + Sync + std::fmt::Debug {
    /// Lists every object under the origin root (all pages).
    async fn list(&self) -> Result<Vec<ObjectMeta>, OriginError>;

    /// Reads `range` of `object`, failing with [`OriginError::Changed`] if the
    /// object is no longer the version it was listed as.
    async fn read_range(
        &self,
        object: &ObjectMeta,
        range: Range<u64>,
    ) -> Result<Bytes, OriginError>;

    /// A description for logs and errors, never containing credentials.
    fn describe(&self) -> String;
}

/// Shared handle to an origin.
pub type SharedOrigin = Arc<dyn Origin>;

/// Parsed dataset source URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceUrl {
    S3 { bucket: String, prefix: String },
    Local { root: std::path::PathBuf },
}

impl SourceUrl {
    /// Parses `s3://bucket[/prefix]` or `file:///absolute/path`.
    pub fn parse(url: &str) -> Result<Self, OriginError> {
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let valid_bucket = (3..=63).contains(&bucket.len())
                && bucket.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                });
            if !valid_bucket {
                return Err(OriginError::InvalidSource(format!(
                    "{url}: bucket name must be 3-63 characters of a-z, 0-9, '-' and '.'"
                )));
            }
            Ok(Self::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
            })
        } else if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(OriginError::InvalidSource(format!(
                    "{url}: a file:// source needs an absolute path (file:///data/set)"
                )));
            }
            Ok(Self::Local {
                root: std::path::PathBuf::from(path),
            })
        } else {
            Err(OriginError::InvalidSource(format!(
                "{url}: expected s3://bucket/prefix or file:///path"
            )))
        }
    }
}

/// Settings needed to build an origin from a dataset spec.
#[derive(Debug, Clone, Default)]
pub struct OriginSettings {
    pub source: String,
    pub s3_endpoint: String,
    pub region: String,
}

/// Builds the origin a source URL names.
pub async fn connect(settings: &OriginSettings) -> Result<SharedOrigin, OriginError> {
    match SourceUrl::parse(&settings.source)? {
        SourceUrl::S3 { bucket, prefix } => Ok(Arc::new(
            s3::S3Origin::new(bucket, prefix, &settings.s3_endpoint, &settings.region).await?,
        )),
        SourceUrl::Local { root } => Ok(Arc::new(local::LocalOrigin::new(root))),
    }
}

/// Checks that a fetched range has the expected length.
pub(crate) fn expect_len(path: &str, range: &Range<u64>, got: usize) -> Result<(), OriginError> {
    let want = range.end - range.start;
    if got as u64 != want {
        return Err(OriginError::ShortRead {
            path: path.to_string(),
            want,
            got: got as u64,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sources() {
        assert_eq!(
            SourceUrl::parse("s3://my-bucket/a/b/").unwrap(),
            SourceUrl::S3 {
                bucket: "my-bucket".into(),
                prefix: "a/b".into()
            }
        );
        assert_eq!(
            SourceUrl::parse("s3://bkt").unwrap(),
            SourceUrl::S3 {
                bucket: "bkt".into(),
                prefix: String::new()
            }
        );
        assert!(matches!(
            SourceUrl::parse("file:///srv/x").unwrap(),
            SourceUrl::Local { .. }
        ));
        for bad in ["http://x", "s3://A_B", "s3://", "file://rel/path", "/plain"] {
            assert!(SourceUrl::parse(bad).is_err(), "{bad} should be refused");
        }
    }
}
