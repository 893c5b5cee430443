//! The Shoal deployment scheduler: places each replica of a Job or
//! ReplicaSet on the GPU host where it starts fastest, using the cache
//! nodes' locality hints.
//!
//! Built so far: [`placement`], the decision logic without I/O (filters,
//! the startup-time estimate per transfer path, spread, and the
//! `required`/`preferred` locality policies). The server, the node agent
//! and the CLI come next (issue 11).

pub mod placement;
