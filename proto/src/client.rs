//! A client connection to a cache node's API (TCP or Unix socket), shared
//! by every Shoal client so they agree on endpoints, framing and errors.

use tokio::net::{TcpStream, UnixStream};

use crate::v1::{self, request::Kind as Req, response::Kind as Resp};
use crate::{read_frame, write_frame, FrameError};

/// Where a node listens: `host:port`, or `unix:///path` / an absolute path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Tcp(String),
    Unix(std::path::PathBuf),
}

impl Endpoint {
    pub fn parse(s: &str) -> Result<Self, ClientError> {
        if let Some(p) = s.strip_prefix("unix://") {
            return Ok(Self::Unix(p.into()));
        }
        if s.starts_with('/') {
            return Ok(Self::Unix(s.into()));
        }
        if !s.contains(':') {
            return Err(ClientError::BadEndpoint(s.to_string()));
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

/// Errors of a client call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid endpoint {0:?}: expected host:port or unix:///path/to/socket")]
    BadEndpoint(String),
    #[error("cannot reach cache-node at {endpoint} ({source}; is cache-node running? set --endpoint or SHOAL_ENDPOINT)")]
    Connect {
        endpoint: Endpoint,
        source: std::io::Error,
    },
    #[error("lost connection to cache-node at {endpoint}: {source}")]
    Lost {
        endpoint: Endpoint,
        source: FrameError,
    },
    #[error("cache-node at {0} closed the connection")]
    Closed(Endpoint),
    /// The node answered with an error.
    #[error("{message}")]
    Remote {
        code: v1::ErrorCode,
        message: String,
    },
    #[error("unexpected response from cache-node")]
    Unexpected,
}

impl ClientError {
    /// Whether the node could not be reached or went away (as opposed to
    /// answering with an error): worth retrying after a node restart.
    pub fn is_connection(&self) -> bool {
        matches!(
            self,
            ClientError::Connect { .. } | ClientError::Lost { .. } | ClientError::Closed(_)
        )
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
    token: String,
}

impl Client {
    pub async fn connect(endpoint: &Endpoint) -> Result<Self, ClientError> {
        let err = |source| ClientError::Connect {
            endpoint: endpoint.clone(),
            source,
        };
        let stream = match endpoint {
            Endpoint::Tcp(a) => {
                let s = TcpStream::connect(a).await.map_err(err)?;
                let _ = s.set_nodelay(true);
                Stream::Tcp(s)
            }
            Endpoint::Unix(p) => Stream::Unix(UnixStream::connect(p).await.map_err(err)?),
        };
        Ok(Self {
            stream,
            endpoint: endpoint.clone(),
            token: String::new(),
        })
    }

    /// Sends `token` with every request (nodes with an API token require it
    /// on TCP connections).
    pub fn with_token(mut self, token: Option<&str>) -> Self {
        self.token = token.unwrap_or_default().to_string();
        self
    }

    /// Sends one request and returns its answer; error responses become
    /// [`ClientError::Remote`].
    pub async fn call(&mut self, kind: Req) -> Result<Resp, ClientError> {
        let mut req = v1::Request::new(kind);
        req.auth_token.clone_from(&self.token);
        let lost = |source| ClientError::Lost {
            endpoint: self.endpoint.clone(),
            source,
        };
        let resp: Option<v1::Response> = match &mut self.stream {
            Stream::Tcp(s) => {
                write_frame(s, &req).await.map_err(lost)?;
                read_frame(s).await.map_err(lost)?
            }
            Stream::Unix(s) => {
                write_frame(s, &req).await.map_err(lost)?;
                read_frame(s).await.map_err(lost)?
            }
        };
        match resp.and_then(|r| r.kind) {
            Some(Resp::Error(e)) => Err(ClientError::Remote {
                code: e.code(),
                message: e.message,
            }),
            Some(k) => Ok(k),
            None => Err(ClientError::Closed(self.endpoint.clone())),
        }
    }
}
