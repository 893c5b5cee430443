//! S3 and S3-compatible origins (AWS, MinIO, rclone, OSS...).
//!
//! Compatibility notes, each handled here because users run these servers:
//! - Some servers answer a ranged GET with status 200 (rclone 1.75) or even
//!   with the whole object; the body length is checked and a whole-object
//!   answer is sliced.
//! - Some ignore `If-Match` (rclone); every response's ETag is compared too,
//!   unquoted, because listings and GETs quote differently.
//! - Some send no ETag at all; the version is then pinned by size (from
//!   `Content-Range`) and `Last-Modified`.
//! - The SDK's response checksum validation trips on ranged GETs from some
//!   servers, so it runs only when an operation requires it.

use std::ops::Range;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::environment::EnvironmentVariableCredentialsProvider;
use aws_config::meta::credentials::CredentialsProviderChain;
use aws_config::profile::ProfileFileCredentialsProvider;
use aws_sdk_s3::config::{
    BehaviorVersion, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::types::EncodingType;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use bytes::{Bytes, BytesMut};

use super::{expect_len, ObjectKind, ObjectMeta, Origin, OriginError};

/// An S3 bucket and prefix.
pub struct S3Origin {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    endpoint: String,
    max_objects: usize,
}

/// Most objects one listing may hold: past it the dataset is refused with
/// a clear error rather than the node's memory spent on a listing that may
/// never end (a broken or hostile endpoint can send pages for ever). About
/// 2 GiB of listing at this size; split larger buckets by prefix.
pub const MAX_LISTED_OBJECTS: usize = 10_000_000;

/// Most pages in a row without a key a listing may get: a server that
/// keeps saying "more" without sending any is not making progress.
const MAX_EMPTY_PAGES: u32 = 1000;

impl std::fmt::Debug for S3Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// A key from a listing with `encoding-type=url`: percent-decoded, '+'
/// meaning a space (AWS encodes form-style; a literal '+' comes as %2B).
/// S3 keys are UTF-8; anything else is decoded lossily (and then fails
/// its reads rather than reading another object).
pub fn decode_key(encoded: &str) -> String {
    let plus = encoded.replace('+', " ");
    percent_encoding::percent_decode_str(&plus)
        .decode_utf8_lossy()
        .into_owned()
}

/// Characters of an SDK error's context kept in an error message.
const MAX_CONTEXT: usize = 300;

/// A `Content-Range: bytes FIRST-LAST/TOTAL` header's range and total,
/// each `None` when absent or not numbers (`*`).
fn parse_content_range(cr: &str) -> (Option<(u64, u64)>, Option<u64>) {
    let (range, total) = cr.rsplit_once('/').unwrap_or((cr, ""));
    let got = range
        .strip_prefix("bytes ")
        .and_then(|r| r.split_once('-'))
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)));
    (got, total.parse().ok())
}

/// ETags are quoted on GET/HEAD and sometimes unquoted in listings.
pub fn unquote_etag(etag: &str) -> &str {
    let e = etag.strip_prefix("W/").unwrap_or(etag);
    e.trim_matches('"')
}

impl S3Origin {
    /// Builds a client. Credentials come from the standard AWS environment
    /// variables or the shared credentials/config files (never from instance
    /// metadata, which would hang on hosts without it).
    pub async fn new(
        bucket: String,
        prefix: String,
        endpoint: &str,
        region: &str,
    ) -> Result<Self, OriginError> {
        let region = if region.is_empty() {
            std::env::var("AWS_REGION")
                .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
                .unwrap_or_else(|_| "us-east-1".to_string())
        } else {
            region.to_string()
        };
        // The region goes into every request's signature header: a byte a
        // header cannot carry (a control character from a hostile spec)
        // would make the SDK panic while signing, so it is refused here.
        let valid_region = !region.is_empty()
            && region
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !valid_region {
            return Err(OriginError::InvalidSource(format!(
                "region {region:?}: use letters, digits, '-', '_' and '.'"
            )));
        }
        let credentials = CredentialsProviderChain::first_try(
            "Environment",
            EnvironmentVariableCredentialsProvider::new(),
        )
        .or_else("Profile", ProfileFileCredentialsProvider::builder().build());
        let mut config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region))
            .credentials_provider(credentials)
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(4)
                    .with_initial_backoff(Duration::from_millis(100)),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .operation_attempt_timeout(Duration::from_secs(60))
                    .build(),
            )
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired);
        if !endpoint.is_empty() {
            config = config.endpoint_url(endpoint).force_path_style(true);
        }
        Ok(Self {
            client: aws_sdk_s3::Client::from_conf(config.build()),
            bucket,
            prefix,
            endpoint: endpoint.to_string(),
            max_objects: MAX_LISTED_OBJECTS,
        })
    }

    /// Lowers the most objects a listing may hold (see [`MAX_LISTED_OBJECTS`]).
    pub fn with_max_objects(mut self, n: usize) -> Self {
        self.max_objects = n;
        self
    }

    fn key(&self, path: &str) -> String {
        if self.prefix.is_empty() {
            path.to_string()
        } else {
            format!("{}/{}", self.prefix, path)
        }
    }

    fn classify<E>(&self, err: SdkError<E>, path: &str) -> OriginError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let status = err.raw_response().map(|r| r.status().as_u16());
        let code = err.code().unwrap_or_default().to_string();
        // One line: the SDK's context can span several, and quote a whole
        // response body; an operator needs the start of it.
        let mut context = DisplayErrorContext(&err)
            .to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        if context.len() > MAX_CONTEXT {
            let cut = (0..=MAX_CONTEXT)
                .rev()
                .find(|&i| context.is_char_boundary(i))
                .unwrap_or(0);
            context.truncate(cut);
            context.push_str(" …");
        }
        let what = format!("s3://{}/{}", self.bucket, self.key(path));
        match (code.as_str(), status) {
            ("NoSuchBucket", _) => OriginError::NotFound(format!(
                "bucket {} does not exist at {}",
                self.bucket,
                self.endpoint_name()
            )),
            ("AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch" | "Forbidden", _)
            | (_, Some(401 | 403)) => OriginError::Denied(format!("{what}: {code}")),
            ("PreconditionFailed", _) | (_, Some(412)) => OriginError::Changed {
                path: path.to_string(),
                detail: "If-Match failed".into(),
            },
            ("NoSuchKey", _) | (_, Some(404)) => OriginError::Changed {
                path: path.to_string(),
                detail: "object no longer exists".into(),
            },
            _ if matches!(err, SdkError::ConstructionFailure(_))
                || context.contains("no credentials") =>
            {
                OriginError::Denied(format!(
                    "{what}: no credentials found on the node (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or a shared credentials file)"
                ))
            }
            _ => OriginError::Unavailable(format!(
                "{what} at {}: {context}",
                self.endpoint_name()
            )),
        }
    }

    fn endpoint_name(&self) -> &str {
        if self.endpoint.is_empty() {
            "AWS S3"
        } else {
            &self.endpoint
        }
    }
}

fn to_nanos(t: &aws_smithy_types::DateTime) -> i64 {
    t.secs()
        .saturating_mul(1_000_000_000)
        .saturating_add(i64::from(t.subsec_nanos()))
}

#[async_trait]
impl Origin for S3Origin {
    async fn list(&self) -> Result<Vec<ObjectMeta>, OriginError> {
        let list_prefix = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&list_prefix)
            // Keys may hold characters XML 1.0 cannot carry (\x01): ask
            // for them URL-encoded, as AWS SDK users do.
            .encoding_type(EncodingType::Url)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        let mut empty_pages = 0u32;
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.classify(e, ""))?;
            empty_pages = if page.contents().is_empty() {
                empty_pages + 1
            } else {
                0
            };
            if empty_pages > MAX_EMPTY_PAGES {
                return Err(OriginError::Unavailable(format!(
                    "{}: the listing sent {MAX_EMPTY_PAGES} pages in a row without a key, each saying more follow; giving up (a broken S3 endpoint?)",
                    self.describe()
                )));
            }
            if out.len().saturating_add(page.contents().len()) > self.max_objects {
                return Err(OriginError::InvalidSource(format!(
                    "{} lists more than {} objects, the most one dataset may hold; split it into datasets by prefix",
                    self.describe(),
                    self.max_objects
                )));
            }
            // Servers that ignore `encoding-type` say so by not echoing it.
            let encoded = page.encoding_type() == Some(&EncodingType::Url);
            for obj in page.contents() {
                let Some(raw) = obj.key() else { continue };
                let key = if encoded {
                    decode_key(raw)
                } else {
                    raw.to_string()
                };
                let Some(rel) = key.strip_prefix(&list_prefix) else {
                    continue;
                };
                if rel.is_empty() {
                    continue;
                }
                // A marker `a/` is directory `a`; a key `<prefix>//` is no
                // directory marker (it would name the root): it stays a key
                // no path can show, reported by the manifest, not dropped.
                let (path, kind) = match rel.strip_suffix('/') {
                    Some(dir) if !dir.is_empty() => (dir.to_string(), ObjectKind::Directory),
                    _ => (rel.to_string(), ObjectKind::File),
                };
                out.push(ObjectMeta {
                    path,
                    kind,
                    size: obj.size().unwrap_or(0).max(0) as u64,
                    mtime_nanos: obj.last_modified().map(to_nanos).unwrap_or(0),
                    mode: if kind == ObjectKind::Directory {
                        0o40555
                    } else {
                        0o100444
                    },
                    owner: None,
                    etag: obj.e_tag().map(unquote_etag).unwrap_or("").to_string(),
                    version_id: String::new(),
                    symlink_target: String::new(),
                });
            }
        }
        Ok(out)
    }

    async fn read_range(
        &self,
        object: &ObjectMeta,
        range: Range<u64>,
    ) -> Result<Bytes, OriginError> {
        let mut req = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.key(&object.path))
            .range(format!("bytes={}-{}", range.start, range.end - 1));
        if !object.etag.is_empty() {
            req = req.if_match(format!("\"{}\"", object.etag));
        }
        if !object.version_id.is_empty() {
            req = req.version_id(&object.version_id);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| self.classify(e, &object.path))?;
        let changed = |detail: String| OriginError::Changed {
            path: object.path.clone(),
            detail,
        };
        let got_etag = resp.e_tag().map(unquote_etag).unwrap_or("");
        let content_range = resp.content_range();
        let (got, total) = content_range.map_or((None, None), parse_content_range);
        check_version(
            object,
            got_etag,
            total,
            resp.last_modified().map(|lm| lm.secs()),
        )
        .map_err(changed)?;
        let want = range.end - range.start;
        // A 206 must be the range asked for: bytes of another range (a
        // broken proxy or server) would be hashed and kept as the truth.
        if let Some(cr) = content_range {
            if got != Some((range.start, range.end - 1)) {
                return Err(OriginError::Unavailable(format!(
                    "{}: asked for bytes {}-{}, the origin answered Content-Range {cr:?}",
                    object.path,
                    range.start,
                    range.end - 1
                )));
            }
        }
        // Some servers answer a ranged GET with 200 and the whole object
        // (Content-Length = object size; rclone sends 200 with only the
        // range): stream it and keep only the range, never the object.
        let whole_object = content_range.is_none()
            && want != object.size
            && resp.content_length().and_then(|l| u64::try_from(l).ok()) == Some(object.size);
        let body_err = |e: &dyn std::fmt::Display| {
            OriginError::Unavailable(format!("reading body of {}: {e}", object.path))
        };
        let body = if whole_object {
            let mut stream = resp.body;
            let mut out = BytesMut::with_capacity(want as usize);
            let mut pos = 0u64;
            while (out.len() as u64) < want {
                let Some(piece) = stream.try_next().await.map_err(|e| body_err(&e))? else {
                    break;
                };
                let (start, end) = (pos, pos + piece.len() as u64);
                pos = end;
                if end <= range.start {
                    continue;
                }
                let from = range.start.saturating_sub(start) as usize;
                let take = (piece.len() - from).min((want - out.len() as u64) as usize);
                out.extend_from_slice(&piece[from..from + take]);
            }
            // The rest of the object is never read: the connection is dropped.
            out.freeze()
        } else {
            resp.body
                .collect()
                .await
                .map_err(|e| body_err(&e))?
                .into_bytes()
        };
        expect_len(&object.path, &range, body.len())?;
        Ok(body)
    }

    fn describe(&self) -> String {
        format!(
            "s3://{}/{} ({})",
            self.bucket,
            self.prefix,
            self.endpoint_name()
        )
    }
}

/// Whether a GET answered for the version the listing saw: by ETag when
/// both sides have one; otherwise (some servers list ETags but send none,
/// or the reverse) by total size and Last-Modified, as when neither has one.
fn check_version(
    listed: &ObjectMeta,
    got_etag: &str,
    got_total: Option<u64>,
    got_modified_secs: Option<i64>,
) -> Result<(), String> {
    if !listed.etag.is_empty() && !got_etag.is_empty() {
        if got_etag != listed.etag {
            return Err(format!(
                "ETag {got_etag:?} differs from listed {:?}",
                listed.etag
            ));
        }
        return Ok(());
    }
    if let Some(total) = got_total {
        if total != listed.size {
            return Err(format!("size {total} differs from listed {}", listed.size));
        }
    }
    if let Some(lm) = got_modified_secs {
        if lm != listed.mtime_nanos.div_euclid(1_000_000_000) {
            return Err("Last-Modified differs from listing".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{check_version, decode_key, unquote_etag, S3Origin};
    use crate::origin::Origin;
    use crate::origin::{ObjectKind, ObjectMeta};

    #[test]
    fn one_sided_etags_fall_back_to_size_and_mtime() {
        let listed = |etag: &str| ObjectMeta {
            path: "f".into(),
            kind: ObjectKind::File,
            size: 100,
            mtime_nanos: 5_000_000_000,
            mode: 0o644,
            owner: None,
            etag: etag.into(),
            version_id: String::new(),
            symlink_target: String::new(),
        };
        // Both sides: compared.
        assert!(check_version(&listed("a"), "a", Some(100), Some(5)).is_ok());
        assert!(check_version(&listed("a"), "b", Some(100), Some(5)).is_err());
        // Only one side has one: size and Last-Modified decide.
        assert!(check_version(&listed(""), "x", Some(100), Some(5)).is_ok());
        assert!(check_version(&listed("x"), "", Some(100), Some(5)).is_ok());
        assert!(check_version(&listed("x"), "", Some(101), Some(5)).is_err());
        assert!(check_version(&listed(""), "x", Some(100), Some(6)).is_err());
        // Neither: the same, and absent facts are not held against it.
        assert!(check_version(&listed(""), "", None, None).is_ok());
    }

    #[test]
    fn etags_compare_unquoted() {
        assert_eq!(unquote_etag("\"abc\""), "abc");
        assert_eq!(unquote_etag("abc"), "abc");
        assert_eq!(unquote_etag("W/\"abc\""), "abc");
        assert_eq!(unquote_etag(""), "");
    }

    #[test]
    fn url_encoded_listing_keys_decode_form_style() {
        assert_eq!(decode_key("a%20b%2Bc"), "a b+c");
        assert_eq!(decode_key("a+b"), "a b", "AWS encodes a space as '+'");
        assert_eq!(decode_key("x%01y/t%09ab"), "x\u{1}y/t\tab");
        assert_eq!(decode_key("p%2541q"), "p%41q");
        assert_eq!(decode_key("%C3%BC"), "\u{fc}");
        assert_eq!(decode_key("plain/key.bin"), "plain/key.bin");
    }

    /// An S3 endpoint on loopback that answers every request with
    /// `answer` (status line, headers and body, as raw bytes) and then holds
    /// the connection open; and an origin pointed at it.
    async fn canned_origin(answer: Vec<u8>) -> (S3Origin, tokio::task::JoinHandle<()>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let answer = std::sync::Arc::new(answer);
        let server = tokio::spawn(async move {
            loop {
                let (mut sock, _) = listener.accept().await.unwrap();
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut req = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = sock.write_all(&answer).await;
                    std::future::pending::<()>().await;
                });
            }
        });
        std::env::set_var("AWS_ACCESS_KEY_ID", "test");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "test-secret");
        let origin = S3Origin::new("b".into(), String::new(), &format!("http://{addr}"), "")
            .await
            .unwrap();
        (origin, server)
    }

    fn object(size: u64) -> ObjectMeta {
        ObjectMeta {
            path: "o.bin".into(),
            kind: ObjectKind::File,
            size,
            mtime_nanos: 0,
            mode: 0o100444,
            owner: None,
            etag: "e1".into(),
            version_id: String::new(),
            symlink_target: String::new(),
        }
    }

    /// A server that answers a ranged GET with 200 and the whole object,
    /// but sends only the first 3 MiB and then stalls: a reader that
    /// buffers the object waits forever; one that streams returns the range.
    #[tokio::test]
    async fn a_200_to_a_ranged_get_is_sliced_while_streaming_not_buffered() {
        let size = 8 << 20;
        let bytes: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let mut answer =
            format!("HTTP/1.1 200 OK\r\nContent-Length: {size}\r\nETag: \"e1\"\r\n\r\n")
                .into_bytes();
        answer.extend_from_slice(&bytes[..3 << 20]);
        let (origin, server) = canned_origin(answer).await;
        let range = (1 << 20) + 5..(2 << 20) + 5;
        let got = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            origin.read_range(&object(size as u64), range.clone()),
        )
        .await
        .expect("the read waited for the whole object")
        .unwrap();
        assert!(got[..] == bytes[range.start as usize..range.end as usize]);
        server.abort();
    }

    #[tokio::test]
    async fn a_206_for_another_range_is_refused_not_kept() {
        // Asked 100-199, answers with 200-299's worth.
        let mut answer = b"HTTP/1.1 206 Partial Content\r\nContent-Length: 100\r\n\
                           Content-Range: bytes 200-299/1000\r\nETag: \"e1\"\r\n\r\n"
            .to_vec();
        answer.extend_from_slice(&[7u8; 100]);
        let (origin, server) = canned_origin(answer).await;
        let err = origin
            .read_range(&object(1000), 100..200)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("Content-Range"), "{err}");
        server.abort();
    }
}
