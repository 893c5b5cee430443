//! The Shoal deployment scheduler: places each replica of a Job or
//! ReplicaSet on the GPU host where it starts fastest, using the cache
//! nodes' locality hints.
//!
//! - [`placement`]: the decision logic without I/O (filters, the
//!   startup-time estimate per transfer path, spread, and the
//!   `required`/`preferred` locality policies).
//! - [`spec`]: deployment specs and their validation.
//! - [`model`]: the records kept and exchanged.
//! - [`server`]: `scheduler serve` — state in RocksDB, HTTP API, reconcile.
//! - [`agent`]: `scheduler agent` — runs replicas as processes, each in its
//!   own mount namespace with its datasets mounted by fuse-client.

pub mod agent;
pub mod model;
pub mod placement;
pub mod server;
pub mod spec;
