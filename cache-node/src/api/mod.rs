//! The node's listeners: the read/control API on a Unix socket (local
//! readers: fuse-client, `dataset-ctl cat`) and on TCP (operators on other
//! hosts), both speaking framed `shoal.v1` messages; and the HTTP admin
//! endpoint (`/healthz`, `/readyz`, `/metrics`).
//!
//! Every connection is a task in the server's `JoinSet`, and every server
//! stops on the node's cancellation token, so shutdown waits for in-flight
//! requests instead of abandoning them.

pub mod admin;

use std::path::Path;
use std::sync::Arc;

use shoal_proto::{read_frame_limited, v1, write_frame};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::node::Node;

/// Largest frame accepted on a token-protected connection before a request
/// has carried the token (every request of the API fits in it).
const UNAUTHENTICATED_FRAME_BYTES: u32 = 64 << 10;

/// Constant-time comparison, so a token cannot be guessed byte by byte.
fn token_matches(given: &str, want: &str) -> bool {
    given.len() == want.len()
        && given
            .bytes()
            .zip(want.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

async fn serve_conn<S>(
    node: Arc<Node>,
    mut stream: S,
    token: Option<Arc<str>>,
    cancel: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut session = node.session();
    // Until a request carries the token, frames are small: an
    // unauthenticated client cannot make the node buffer large messages.
    let mut limit = if token.is_some() {
        UNAUTHENTICATED_FRAME_BYTES
    } else {
        shoal_proto::MAX_FRAME_BYTES
    };
    loop {
        let req = tokio::select! {
            _ = cancel.cancelled() => return,
            r = read_frame_limited::<v1::Request, _>(&mut stream, limit) => r,
        };
        let req = match req {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(error = %e, "dropping connection");
                let resp = v1::Response::error(v1::ErrorCode::InvalidArgument, e.to_string());
                let _ = write_frame(&mut stream, &resp).await;
                return;
            }
        };
        let resp = match &token {
            Some(t) if !token_matches(&req.auth_token, t) => v1::Response::error(
                v1::ErrorCode::Unauthenticated,
                "this node requires an API token on TCP connections (dataset-ctl --token-file or SHOAL_TOKEN_FILE)",
            ),
            _ => {
                limit = shoal_proto::MAX_FRAME_BYTES;
                node.handle(req, &mut session).await
            }
        };
        if let Err(e) = write_frame(&mut stream, &resp).await {
            tracing::debug!(error = %e, "client went away");
            return;
        }
    }
}

/// Accepts connections until cancelled, each served as a task of this
/// server; on cancellation waits for every connection to finish.
async fn serve_accepted<S, F, Fut>(
    node: Arc<Node>,
    mut accept: F,
    token: Option<Arc<str>>,
    cancel: CancellationToken,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::io::Result<S>>,
{
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = accept() => {
                conns.spawn(serve_conn(node.clone(), accepted?, token.clone(), cancel.clone()));
            }
        }
    }
    while conns.join_next().await.is_some() {}
    Ok(())
}

/// Serves the API on a Unix socket until cancelled.
pub async fn serve_unix(
    node: Arc<Node>,
    path: &Path,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    if path.exists() {
        std::fs::remove_file(path)?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let listener = UnixListener::bind(path)?;
    // Local readers are trusted by the socket's file permissions.
    let result = serve_accepted(
        node,
        || async { Ok(listener.accept().await?.0) },
        None,
        cancel,
    )
    .await;
    let _ = std::fs::remove_file(path);
    result
}

/// Serves the API on TCP until cancelled; with `token`, every request must
/// carry it.
pub async fn serve_tcp(
    node: Arc<Node>,
    listener: TcpListener,
    token: Option<Arc<str>>,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let accept = || async {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    };
    serve_accepted(node, accept, token, cancel).await
}
