//! `dataset-ctl locality`: where a dataset version's bytes are resident.
//!
//! Schedulers place work next to its data; operators need the same view to
//! check that a prewarm landed, which nodes could serve a job without the
//! origin, and whether the figures are fresh (each node reports its own, so
//! every row says how old it is).

use anyhow::{bail, Result};
use shoal_proto::client::Endpoint;
use shoal_proto::units::format_size;
use shoal_proto::v1::{self, request::Kind as Req, response::Kind as Resp};

use crate::{
    ago_ms, connect, format_labels, format_rate, percent_of, print_json, print_table, Output,
};

pub async fn show(
    endpoint: &Endpoint,
    dataset: String,
    version: u64,
    output: Output,
) -> Result<()> {
    let mut client = connect(endpoint).await?;
    let Resp::Locality(loc) = client
        .call(Req::Locality(v1::LocalityRequest { dataset, version }))
        .await?
    else {
        bail!("unexpected response");
    };
    match output {
        Output::Json => print_json(&shoal_proto::json::locality(&loc)),
        Output::Table => print_locality(&loc),
    }
    Ok(())
}

fn print_locality(loc: &v1::Locality) {
    println!(
        "Dataset: {}  Version: {}  Total: {}",
        loc.dataset,
        loc.version,
        format_size(loc.total_bytes)
    );
    // A node reports 0 for a path it has not measured yet.
    let bandwidth = |bps: u64| {
        if bps == 0 {
            "-".to_string()
        } else {
            format_rate(bps)
        }
    };
    print_table(
        &[
            "NODE",
            "STATE",
            "RESIDENT",
            "%",
            "MEMORY",
            "DISK",
            "ORIGIN BW",
            "PEER BW",
            "MEASURED",
            "LABELS",
        ],
        loc.nodes.iter().map(|n| {
            let bw = n.bandwidth.unwrap_or_default();
            vec![
                n.id.clone(),
                n.state.clone(),
                format_size(n.resident_bytes),
                format!("{:.1}%", percent_of(n.resident_bytes, loc.total_bytes)),
                format_size(n.memory_bytes),
                format_size(n.disk_bytes),
                bandwidth(bw.origin_bps),
                bandwidth(bw.peer_bps),
                ago_ms(n.measured_at_ms),
                format_labels(&n.labels),
            ]
        }),
    );
    println!(
        "cluster: {} available on {} ready nodes, {} nodes hold every byte",
        format_size(loc.available_bytes),
        loc.nodes.iter().filter(|n| n.available).count(),
        loc.complete_nodes
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn sorted_keys(v: &Value) -> Vec<&str> {
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort();
        keys
    }

    #[test]
    fn locality_json_has_the_documented_shape() {
        let loc = v1::Locality {
            dataset: "imagenet".into(),
            version: 2,
            total_bytes: 1000,
            chunk_size: 4 << 20,
            available_bytes: 1500,
            complete_nodes: 1,
            nodes: vec![
                v1::NodeLocality {
                    id: "node-1".into(),
                    labels: [("zone".to_string(), "a".to_string())].into(),
                    state: "Ready".into(),
                    available: true,
                    resident_bytes: 1000,
                    memory_bytes: 600,
                    disk_bytes: 400,
                    measured_at_ms: 1_700_000_000_123,
                    bandwidth: Some(v1::Bandwidth {
                        origin_bps: 5,
                        peer_bps: 6,
                        measured_at_ms: 1_700_000_000_000,
                    }),
                    address: "10.0.0.1:7070".into(),
                },
                v1::NodeLocality {
                    id: "node-2".into(),
                    state: "NotReady".into(),
                    ..Default::default()
                },
            ],
        };
        let v = shoal_proto::json::locality(&loc);
        assert_eq!(
            sorted_keys(&v),
            [
                "available_bytes",
                "chunk_size",
                "complete_nodes",
                "dataset",
                "nodes",
                "total_bytes",
                "version"
            ]
        );
        assert_eq!(v["chunk_size"], 4 << 20);
        assert_eq!(v["complete_nodes"], 1);
        let n = &v["nodes"][0];
        assert_eq!(
            sorted_keys(n),
            [
                "address",
                "available",
                "bandwidth",
                "disk_bytes",
                "id",
                "labels",
                "measured_at",
                "memory_bytes",
                "resident_bytes",
                "state"
            ]
        );
        assert_eq!(n["labels"], json!({"zone": "a"}));
        assert_eq!(n["measured_at"], 1_700_000_000_123i64);
        assert_eq!(
            n["bandwidth"],
            json!({"origin_bps": 5, "peer_bps": 6, "measured_at": 1_700_000_000_000i64})
        );
        // A node that has not reported bandwidth keeps the same shape.
        assert_eq!(
            v["nodes"][1]["bandwidth"],
            json!({"origin_bps": 0, "peer_bps": 0, "measured_at": 0})
        );
        assert_eq!(v["nodes"][1]["available"], false);
    }
}
