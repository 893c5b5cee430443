//! Records the scheduler keeps (RocksDB, JSON values) and exchanges with
//! agents and clients over HTTP.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::spec::Deployment;

/// A deployment as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentRecord {
    pub deployment: Deployment,
    pub created_ms: i64,
    /// Bumped by every apply or scale.
    pub generation: u64,
    /// Job only: Running, Succeeded, Failed.
    pub phase: String,
}

/// Life of a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaState {
    /// Waiting for a host with capacity.
    Pending,
    /// Its host is being prewarmed (locality required); starts after.
    Warming,
    /// Assigned to an agent, not reported running yet.
    Starting,
    Running,
    /// Running and its health check passed (or it has none).
    Ready,
    /// Exited 0 (a Job's replica is done).
    Succeeded,
    /// Exited non-zero or could not start.
    Failed,
    /// Its host stopped heartbeating or its agent lost it.
    Lost,
    /// Stopped by an operator or a scale-down.
    Stopped,
}

impl ReplicaState {
    /// Still holds (or will hold) resources on a host.
    pub fn active(self) -> bool {
        matches!(
            self,
            Self::Pending | Self::Warming | Self::Starting | Self::Running | Self::Ready
        )
    }

    /// Should be running on its agent.
    pub fn assigned(self) -> bool {
        matches!(self, Self::Starting | Self::Running | Self::Ready)
    }
}

/// One replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Replica {
    pub id: String,
    pub deployment: String,
    pub generation: u64,
    pub state: ReplicaState,
    pub host: Option<String>,
    /// New for every start, even of a reused container.
    pub container_uuid: String,
    /// Dataset versions pinned at placement: (name, version, mount path).
    pub mounts: Vec<(String, u64, String)>,
    pub exit_code: Option<i32>,
    pub message: String,
    pub created_ms: i64,
    pub scheduled_ms: Option<i64>,
    pub started_ms: Option<i64>,
    pub ready_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    /// Estimated seconds from scheduling to ready, and the decision.
    pub estimate_s: Option<f64>,
    pub explain: Option<Explain>,
    pub prewarm_job: Option<String>,
    pub stop_requested: bool,
    /// (image, parameters key) of its container.
    pub reuse_key: (String, String),
    /// Stopped replica kept in the reuse pool until then (ms).
    pub reusable_until_ms: Option<i64>,
    /// The pooled replica whose container this one reuses.
    pub reused_from: Option<String>,
    pub endpoint: String,
}

/// One candidate line of `explain`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExplainCandidate {
    pub host: String,
    /// Empty when the host passed every filter.
    pub filtered: String,
    pub warm_fraction: f64,
    pub memory_s: f64,
    pub disk_s: f64,
    pub zone_peer_s: f64,
    pub cluster_peer_s: f64,
    pub origin_s: f64,
    pub container_s: f64,
    pub reused: bool,
    pub estimate_s: f64,
    pub spread_s: f64,
    pub score: f64,
}

/// Why a replica went where it went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Explain {
    pub chosen: Option<String>,
    /// Now, AfterPrewarm, NowCold.
    pub start: String,
    pub reason: String,
    pub candidates: Vec<ExplainCandidate>,
}

/// A GPU host as its agent registers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub name: String,
    /// The agent's HTTP address (logs).
    pub agent_addr: String,
    pub gpu_model: String,
    pub gpus: u32,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub labels: BTreeMap<String, String>,
    /// The cache node on this host: its mesh name, control API, admin HTTP.
    pub cache_node: String,
    pub cache_api: String,
    pub cache_admin: String,
}

/// A node as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub info: NodeInfo,
    pub last_heartbeat_ms: i64,
    pub lost: bool,
}

/// What an agent reports about one replica it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicaReport {
    pub id: String,
    /// Running, Ready, Exited.
    pub state: String,
    pub exit_code: Option<i32>,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub node: NodeInfo,
    pub replicas: Vec<ReplicaReport>,
}

/// A replica an agent must run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    pub id: String,
    pub deployment: String,
    pub container_uuid: String,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub mounts: Vec<(String, u64, String)>,
    pub health: Option<crate::spec::HealthCheck>,
    /// Reuse this pooled replica's working directory.
    pub reused_from: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeartbeatReply {
    pub run: Vec<Assignment>,
}

/// An event clients can keep their own registry from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    pub time_ms: i64,
    /// scheduled, warming, started, ready, exited, lost, stopped.
    pub kind: String,
    pub deployment: String,
    pub replica: String,
    pub host: String,
    pub endpoint: String,
    pub message: String,
}

/// Wall-clock milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
