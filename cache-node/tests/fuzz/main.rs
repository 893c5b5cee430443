//! Fuzz targets for what other parties send a node: clients' requests,
//! peers' gossip, chunk requests and dataset exports, and S3 listings.
//!
//! Each target feeds hostile inputs (seeds from `fuzz/corpus/` mutated by
//! `fuzz/mutator.rs`, plus structurally generated values) to the code that
//! really handles them — a real node opened in a temporary directory, with
//! a local-directory origin — and checks that every input ends in an
//! answer or a clean error, in bounded time, and that what is accepted
//! keeps the invariants the rest of the node relies on. See
//! `fuzz/README.md` for running long campaigns.

#[path = "../../../fuzz/mutator.rs"]
mod mutator;

mod corpus;
mod peers;
mod requests;
mod s3;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};
use std::time::Duration;

use shoal_cache_node::config::{Config, Size, TierSection};
use shoal_cache_node::metrics::Metrics;
use shoal_cache_node::node::{Node, Session};
use shoal_proto::v1;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The node's name; seeds address jobs and gossip to it.
pub const NODE: &str = "fuzz-node";
/// Seeds name their local sources under this root; [`Fixture::contain`]
/// maps it into the fixture's temporary directory.
pub const SOURCE_ROOT: &str = "file:///shoal-fuzz/";
/// The dataset every fixture starts with (over `origin/`).
pub const DATASET: &str = "train";
/// Its source as seeds write it.
pub const DATASET_SOURCE: &str = "file:///shoal-fuzz/origin";
/// Chunk size of the fixture's dataset: small, so files span chunks.
pub const CHUNK: u64 = 64 << 10;
/// Time any one request may take (local files of a few hundred KiB).
pub const REQUEST_LIMIT: Duration = Duration::from_secs(10);

/// A node in a temporary directory with dataset [`DATASET`] over a small
/// tree of files (several chunks, an empty file, symlinks inside, outside
/// and in a loop), and a runtime to drive it from proptest's closures.
pub struct Fixture {
    _dir: tempfile::TempDir,
    /// What [`SOURCE_ROOT`] stands for.
    sources: PathBuf,
    /// A local S3 endpoint that denies every request at once: S3 sources
    /// from hostile input never leave the host, and fail without retries.
    denying: String,
    pub rt: tokio::runtime::Runtime,
    pub node: Arc<Node>,
}

/// The fixture's files: (path under `origin/`, size).
pub const FILES: &[(&str, usize)] = &[
    ("a.bin", 100_000),
    ("dir/b.bin", 300_000),
    ("dir/sub/c.txt", 12),
    ("empty.bin", 0),
];

/// Its symlinks: (path, target).
pub const LINKS: &[(&str, &str)] = &[
    ("link", "dir/b.bin"),
    ("dir/up", "../a.bin"),
    ("escape", "../../etc/passwd"),
    ("abs", "/etc/passwd"),
    ("loop", "loop"),
];

impl Fixture {
    pub fn open() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let sources = dir.path().join("sources");
        let origin = sources.join("origin");
        for (path, size) in FILES {
            let p = origin.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, content(path, *size)).unwrap();
        }
        for (path, target) in LINKS {
            std::os::unix::fs::symlink(target, origin.join(path)).unwrap();
        }
        let rt = s3_runtime();
        let denying = rt.block_on(serve(Arc::new(|_head: &str| {
            http(
                "403 Forbidden",
                "Content-Type: application/xml\r\n",
                b"<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code><Message>denied</Message></Error>",
            )
        })));
        let cfg = Config {
            data_dir: Some(dir.path().join("node")),
            name: Some(NODE.into()),
            memory: TierSection {
                dir: Some(dir.path().join("memory")),
                quota: Some(Size(4 << 20)),
                ..Default::default()
            },
            disk: TierSection {
                dir: Some(dir.path().join("disk")),
                quota: Some(Size(16 << 20)),
                ..Default::default()
            },
            ..Default::default()
        }
        .resolve()
        .expect("config");
        let node = rt.block_on(async {
            let node = Node::open(cfg.node, Arc::new(Metrics::default())).expect("node opens");
            node.start_jobs();
            node
        });
        let fx = Self {
            _dir: dir,
            sources,
            denying,
            rt,
            node,
        };
        fx.ensure_dataset();
        fx
    }

    /// (Re)creates [`DATASET`] if an input deleted it, so every case
    /// starts with something to read.
    pub fn ensure_dataset(&self) {
        let mut spec = v1::DatasetSpec {
            name: DATASET.into(),
            source: DATASET_SOURCE.into(),
            chunk_size: CHUNK,
            ..Default::default()
        };
        self.contain(&mut spec);
        let create = v1::Request::new(v1::request::Kind::Create(v1::CreateDataset {
            spec: Some(spec),
        }));
        match self.call(create).kind {
            Some(v1::response::Kind::Dataset(_)) => {}
            Some(v1::response::Kind::Error(e)) if e.code == v1::ErrorCode::AlreadyExists as i32 => {
            }
            other => panic!("creating the fixture's dataset: {other:?}"),
        }
    }

    /// One request in a session of its own.
    pub fn call(&self, req: v1::Request) -> v1::Response {
        self.handle(self.node.session(), req)
            .expect("request answered")
            .0
    }

    /// One request in `session` (handles opened by one request are closed
    /// by a later one), under [`Fixture::run`]'s limits.
    pub fn handle(
        &self,
        mut session: Session,
        req: v1::Request,
    ) -> Result<(v1::Response, Session), String> {
        self.run(|node| async move {
            let resp = node.handle(req, &mut session).await;
            (resp, session)
        })
    }

    /// Runs `f` on the node as a task of the runtime, within
    /// [`REQUEST_LIMIT`]. A panic or a timeout is an error naming it.
    pub fn run<F, Fut, T>(&self, f: F) -> Result<T, String>
    where
        F: FnOnce(Arc<Node>) -> Fut,
        Fut: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let fut = f(self.node.clone());
        self.rt.block_on(async {
            match tokio::time::timeout(REQUEST_LIMIT, tokio::spawn(fut)).await {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(format!("the node panicked: {e}")),
                Err(_) => Err(format!("no answer within {REQUEST_LIMIT:?}")),
            }
        })
    }

    /// Keeps a hostile dataset spec on this host: absolute local sources
    /// are mapped under the fixture's `sources/` (one climbing out with
    /// `..` names a directory that does not exist), and other sources get
    /// the fixture's denying S3 endpoint.
    pub fn contain(&self, spec: &mut v1::DatasetSpec) {
        if let Some(rest) = spec.source.strip_prefix("file://") {
            if !rest.starts_with('/') {
                return; // refused as it is: not an absolute path
            }
            let rest = rest.strip_prefix("/shoal-fuzz").unwrap_or(rest);
            let inside = if rest.contains("..") {
                self.sources.join("missing")
            } else {
                self.sources.join(rest.trim_start_matches('/'))
            };
            spec.source = format!("file://{}", inside.display());
        } else {
            spec.s3_endpoint = self.denying.clone();
        }
    }

    /// The fixture's source for [`DATASET_SOURCE`], as the node stores it.
    pub fn dataset_source(&self) -> String {
        format!("file://{}", self.sources.join("origin").display())
    }

    /// Where the files of the fixture's origin are.
    pub fn origin_dir(&self) -> PathBuf {
        self.sources.join("origin")
    }
}

/// Answers one HTTP request, given its head.
pub type Responder = Arc<dyn Fn(&str) -> Vec<u8> + Send + Sync>;

/// A local HTTP server answering every request through `respond`, one
/// request per connection.
pub async fn serve(respond: Responder) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let respond = respond.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 1 << 16 {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = respond(&String::from_utf8_lossy(&head));
                let _ = sock.write_all(&answer).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    format!("http://{addr}")
}

/// An HTTP/1.1 response closing its connection.
pub fn http(status: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{headers}\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// A runtime for S3 clients, with their credentials set.
pub fn s3_runtime() -> tokio::runtime::Runtime {
    credentials();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Credentials for the S3 clients of every test (set once: the variables
/// are process-wide).
fn credentials() {
    static SET: Once = Once::new();
    SET.call_once(|| {
        std::env::set_var("AWS_ACCESS_KEY_ID", "fuzz");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "fuzz-secret");
    });
}

/// The message bodies of a target's frame-stream seeds, one seed each:
/// the message targets mutate messages, not the framing around them (the
/// frame decoder has its own target in `shoal-proto`).
pub fn bodies(target: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for seed in mutator::seeds(target) {
        let mut rest = &seed[..];
        while rest.len() >= 4 {
            let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
            let body = rest.get(4..4 + len).expect("seeds hold whole frames");
            out.push(body.to_vec());
            rest = &rest[4 + len..];
        }
    }
    out
}

/// Deterministic content of a fixture file.
pub fn content(path: &str, size: usize) -> Vec<u8> {
    let salt = path.len();
    (0..size).map(|i| ((i * 31 + salt) % 251) as u8).collect()
}

/// The bytes a read of `[offset, offset+len)` of `path` (following the
/// file system's symlinks) must return, if `path` names a fixture file
/// inside `root`.
pub fn expected_read(root: &Path, path: &str, offset: u64, len: u64) -> Option<Vec<u8>> {
    let real = std::fs::canonicalize(root.join(path)).ok()?;
    if !real.starts_with(std::fs::canonicalize(root).ok()?) {
        return None;
    }
    let bytes = std::fs::read(real).ok()?;
    let start = offset.min(bytes.len() as u64) as usize;
    let end = offset.saturating_add(len).min(bytes.len() as u64) as usize;
    Some(bytes[start..end].to_vec())
}
