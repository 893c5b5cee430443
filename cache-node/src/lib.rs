//! Shoal cache node: the library behind the `cache-node` binary.
//!
//! Layers, bottom up: [`origin`] (S3 and local directories behind one
//! trait), [`index`] (RocksDB schema), [`store`] (tiered content-addressed
//! chunk store), [`catalog`] (datasets and immutable manifests), [`node`]
//! (request handling and error mapping), [`jobs`] (prewarm/evict/unpin
//! jobs), [`mesh`] (peers), [`api`] (listeners). See
//! `docs/ARCHITECTURE.md`.

pub mod api;
pub mod bandwidth;
pub mod catalog;
pub mod config;
pub mod durability;
pub mod index;
pub mod jobs;
pub mod mesh;
pub mod metrics;
pub mod node;
pub mod origin;
pub mod store;
pub mod tasks;
