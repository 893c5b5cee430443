//! HTTP admin endpoint: liveness, readiness, Prometheus metrics, and the
//! locality and job views as JSON (the same documents `dataset-ctl -o json`
//! prints; schema in `docs/API.md`), for schedulers and dashboards that do
//! not speak the framed protocol.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::node::{Node, NodeError};

#[derive(Clone)]
struct AdminState {
    node: Arc<Node>,
    ready: Arc<AtomicBool>,
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<AdminState>) -> impl IntoResponse {
    if s.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}

async fn metrics(State(s): State<AdminState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.node.metrics().encode(),
    )
}

fn json_response(r: Result<serde_json::Value, NodeError>) -> axum::response::Response {
    match r {
        Ok(v) => (
            [(header::CONTENT_TYPE, "application/json")],
            format!("{v:#}\n"),
        )
            .into_response(),
        Err(e) => {
            let status = match e.code() {
                shoal_proto::v1::ErrorCode::NotFound => StatusCode::NOT_FOUND,
                shoal_proto::v1::ErrorCode::InvalidArgument => StatusCode::BAD_REQUEST,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            let body = serde_json::json!({ "error": e.to_string() });
            (
                status,
                [(header::CONTENT_TYPE, "application/json")],
                format!("{body}\n"),
            )
                .into_response()
        }
    }
}

#[derive(serde::Deserialize)]
struct VersionQuery {
    #[serde(default)]
    version: u64,
}

async fn locality(
    State(s): State<AdminState>,
    Path(name): Path<String>,
    Query(q): Query<VersionQuery>,
) -> impl IntoResponse {
    json_response(
        s.node
            .locality(&name, q.version)
            .map(|l| shoal_proto::json::locality(&l)),
    )
}

async fn jobs(State(s): State<AdminState>) -> impl IntoResponse {
    json_response(Ok(serde_json::Value::Array(
        s.node
            .job_list()
            .iter()
            .map(shoal_proto::json::job)
            .collect(),
    )))
}

async fn job(State(s): State<AdminState>, Path(id): Path<String>) -> impl IntoResponse {
    json_response(s.node.job(&id).map(|j| shoal_proto::json::job(&j)))
}

/// Serves `/healthz`, `/readyz` (200 once `ready` is set), `/metrics`,
/// `/v1/locality/{dataset}[?version=N]`, `/v1/jobs` and `/v1/jobs/{id}`.
pub async fn serve(
    node: Arc<Node>,
    listener: TcpListener,
    ready: Arc<AtomicBool>,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/locality/{dataset}", get(locality))
        .route("/v1/jobs", get(jobs))
        .route("/v1/jobs/{id}", get(job))
        .with_state(AdminState { node, ready });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await
}
