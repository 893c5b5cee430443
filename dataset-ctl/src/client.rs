//! A connection to a cache node's API (TCP or Unix socket).

use anyhow::{anyhow, bail, Context, Result};
use shoal_proto::v1::{self, request::Kind as Req, response::Kind as Resp};
use shoal_proto::{read_frame, write_frame};
use tokio::net::{TcpStream, UnixStream};

/// Where the node listens: `host:port`, or `unix:///path` / an absolute path.
#[derive(Debug, Clone)]
pub enum Endpoint {
    Tcp(String),
    Unix(std::path::PathBuf),
}

impl Endpoint {
    pub fn parse(s: &str) -> Result<Self> {
        if let Some(p) = s.strip_prefix("unix://") {
            return Ok(Self::Unix(p.into()));
        }
        if s.starts_with('/') {
            return Ok(Self::Unix(s.into()));
        }
        if !s.contains(':') {
            bail!("invalid endpoint {s:?}: expected host:port or unix:///path/to/socket");
        }
        Ok(Self::Tcp(s.to_string()))
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp(a) => f.write_str(a),
            Endpoint::Unix(p) => write!(f, "unix://{}", p.display()),
        }
    }
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// One connection; requests are answered in order.
pub struct Client {
    stream: Stream,
    endpoint: Endpoint,
}

impl Client {
    pub async fn connect(endpoint: &Endpoint) -> Result<Self> {
        let hint = "is cache-node running? set --endpoint or SHOAL_ENDPOINT";
        let stream = match endpoint {
            Endpoint::Tcp(a) => Stream::Tcp(
                TcpStream::connect(a)
                    .await
                    .with_context(|| format!("cannot reach cache-node at {endpoint} ({hint})"))?,
            ),
            Endpoint::Unix(p) => Stream::Unix(
                UnixStream::connect(p)
                    .await
                    .with_context(|| format!("cannot reach cache-node at {endpoint} ({hint})"))?,
            ),
        };
        Ok(Self {
            stream,
            endpoint: endpoint.clone(),
        })
    }

    /// Sends one request and returns its answer, turning error responses
    /// into errors that carry the node's message.
    pub async fn call(&mut self, kind: Req) -> Result<Resp> {
        let req = v1::Request::new(kind);
        let lost = || format!("lost connection to cache-node at {}", self.endpoint);
        let resp: Option<v1::Response> = match &mut self.stream {
            Stream::Tcp(s) => {
                write_frame(s, &req).await.with_context(lost)?;
                read_frame(s).await.with_context(lost)?
            }
            Stream::Unix(s) => {
                write_frame(s, &req).await.with_context(lost)?;
                read_frame(s).await.with_context(lost)?
            }
        };
        let resp = resp.ok_or_else(|| anyhow!("{}", lost()))?;
        match resp.kind {
            Some(Resp::Error(e)) => Err(anyhow!("{}", e.message)),
            Some(k) => Ok(k),
            None => bail!("empty response from cache-node"),
        }
    }
}
