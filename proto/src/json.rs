//! The JSON forms of jobs and locality answers, shared by `dataset-ctl
//! -o json` and the node's admin HTTP endpoint so both print the same
//! documented schema (`docs/API.md`).

use serde_json::{json, Value};

use crate::v1;

pub fn kind_name(kind: v1::JobKind) -> &'static str {
    match kind {
        v1::JobKind::Prewarm => "prewarm",
        v1::JobKind::Evict => "evict",
        v1::JobKind::Unpin => "unpin",
    }
}

pub fn tier_name(tier: v1::TierTarget) -> &'static str {
    match tier {
        v1::TierTarget::AnyTier => "any",
        v1::TierTarget::Memory => "memory",
        v1::TierTarget::Disk => "disk",
    }
}

/// A job as `-o json` prints it.
pub fn job(job: &v1::JobStatus) -> Value {
    let spec = job.spec.clone().unwrap_or_default();
    json!({
        "id": spec.id,
        "kind": kind_name(spec.kind()),
        "dataset": spec.dataset,
        "version": spec.version,
        "paths": spec.paths,
        "nodes": spec.nodes,
        "selector": spec.selector,
        "replicas": spec.replicas,
        "tier": tier_name(spec.tier()),
        "pin": spec.pin,
        "state": job.state,
        "total_bytes": job.total_bytes,
        "done_bytes": job.done_bytes,
        "rate_bps": job.rate_bps,
        "eta_secs": u64::try_from(job.eta_secs).ok(),
        "created_unix": spec.created_unix,
        "created_by": spec.created_by,
        "lost": job.lost,
        "replaced": spec.replaced,
        "cancelled": spec.cancelled,
        "parts": job.parts.iter().map(|p| json!({
            "node": p.node,
            "state": p.state,
            "total_bytes": p.total_bytes,
            "done_bytes": p.done_bytes,
            "memory_bytes": p.memory_bytes,
            "disk_bytes": p.disk_bytes,
            "rate_bps": p.rate_bps,
            "failed_chunks": p.failed_chunks,
            "origin_bytes": p.origin_bytes,
            "peer_bytes": p.peer_bytes,
            "updated_ms": p.updated_ms,
            "started_unix_ms": p.started_unix_ms,
            "finished_unix_ms": p.finished_unix_ms,
            "message": p.message,
        })).collect::<Vec<_>>(),
    })
}

/// A locality answer as `-o json` prints it.
pub fn locality(loc: &v1::Locality) -> Value {
    json!({
        "dataset": loc.dataset,
        "version": loc.version,
        "total_bytes": loc.total_bytes,
        "chunk_size": loc.chunk_size,
        "available_bytes": loc.available_bytes,
        "complete_nodes": loc.complete_nodes,
        "nodes": loc.nodes.iter().map(|n| {
            let bw = n.bandwidth.unwrap_or_default();
            json!({
                "id": n.id,
                "address": n.address,
                "labels": n.labels,
                "state": n.state,
                "available": n.available,
                "resident_bytes": n.resident_bytes,
                "memory_bytes": n.memory_bytes,
                "disk_bytes": n.disk_bytes,
                "measured_at": n.measured_at_ms,
                "bandwidth": {
                    "origin_bps": bw.origin_bps,
                    "peer_bps": bw.peer_bps,
                    "measured_at": bw.measured_at_ms,
                },
            })
        }).collect::<Vec<_>>(),
    })
}
