//! Every Prometheus metric the node exports, named in one place.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, &'static str)>;

/// Node metrics. Counters get Prometheus' `_total` suffix when encoded.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Chunk reads served from a tier, by `tier`.
    pub hits: Family<Labels, Counter>,
    /// Chunk reads that found the chunk in no tier.
    pub misses: Counter,
    /// Bytes received from origins.
    pub origin_bytes: Counter,
    /// Origin range requests, by `result` (ok, error, changed).
    pub origin_requests: Family<Labels, Counter>,
    /// Chunks moved out of a tier, by `tier` and `action` (demote, drop).
    pub evictions: Family<Labels, Counter>,
    /// Bytes resident per `tier`.
    pub tier_bytes: Family<Labels, Gauge>,
    /// Quota per `tier`.
    pub tier_capacity: Family<Labels, Gauge>,
    /// Chunks whose hash was already resident elsewhere (identical bytes).
    pub dedup_chunks: Counter,
    /// Chunks filled by copying identical bytes already resident on this node.
    pub dedup_fills: Counter,
    /// Reads served without caching because no tier had room.
    pub uncached_reads: Counter,
    /// Chunks recovered after an unclean stop and hashed again, by
    /// `result` (ok, corrupt).
    pub verified_chunks: Family<Labels, Counter>,
    /// Passes of the unused-manifest-version collector.
    pub version_gc_runs: Counter,
    /// Manifest versions dropped because nothing used them.
    pub versions_dropped: Counter,
    /// Reads answered with exactly their bytes from the origin (a seek or
    /// a stream's first bytes), leaving the chunks cold.
    pub direct_reads: Counter,
    /// Requests handled by the read/control API, by `op`.
    pub api_requests: Family<Labels, Counter>,
    /// Chunk bytes received from peers (verified).
    pub peer_bytes: Counter,
    /// Chunks from peers that failed blake3 verification.
    pub peer_corrupt: Counter,
    /// Peer chunk requests that failed (unreachable, timeout, error).
    pub peer_errors: Counter,
    /// Owners that answered a chunk request with a redirect to holders.
    pub peer_redirects: Counter,
    /// Verified chunk bytes received from holders other than the owner.
    pub peer_holder_bytes: Counter,
}

impl Metrics {
    /// Encodes everything in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut registry = Registry::default();
        let reg = registry.sub_registry_with_prefix("shoal");
        reg.register(
            "cache_hits",
            "Chunk reads served from a tier",
            self.hits.clone(),
        );
        reg.register(
            "cache_misses",
            "Chunk reads that missed every tier",
            self.misses.clone(),
        );
        reg.register(
            "origin_bytes",
            "Bytes received from origins",
            self.origin_bytes.clone(),
        );
        reg.register(
            "origin_requests",
            "Origin range requests by result",
            self.origin_requests.clone(),
        );
        reg.register(
            "evictions",
            "Chunks evicted by tier and action",
            self.evictions.clone(),
        );
        reg.register(
            "tier_bytes",
            "Bytes resident per tier",
            self.tier_bytes.clone(),
        );
        reg.register(
            "tier_capacity_bytes",
            "Quota per tier",
            self.tier_capacity.clone(),
        );
        reg.register(
            "dedup_chunks",
            "Fetched chunks whose hash was already resident",
            self.dedup_chunks.clone(),
        );
        reg.register(
            "dedup_fills",
            "Chunks filled from identical resident bytes instead of the origin",
            self.dedup_fills.clone(),
        );
        reg.register(
            "uncached_reads",
            "Reads served without caching because no tier had room",
            self.uncached_reads.clone(),
        );
        reg.register(
            "verified_chunks",
            "Recovered chunks hashed again after an unclean stop, by result",
            self.verified_chunks.clone(),
        );
        reg.register(
            "version_gc_runs",
            "Passes of the unused manifest version collector",
            self.version_gc_runs.clone(),
        );
        reg.register(
            "manifest_versions_dropped",
            "Manifest versions dropped because no mount or job used them",
            self.versions_dropped.clone(),
        );
        reg.register(
            "direct_reads",
            "Reads answered with exactly their bytes from the origin, chunks left cold",
            self.direct_reads.clone(),
        );
        reg.register(
            "api_requests",
            "API requests by op",
            self.api_requests.clone(),
        );
        reg.register(
            "peer_bytes",
            "Verified chunk bytes received from peers",
            self.peer_bytes.clone(),
        );
        reg.register(
            "peer_corrupt_chunks",
            "Chunks from peers that failed blake3 verification",
            self.peer_corrupt.clone(),
        );
        reg.register(
            "peer_errors",
            "Failed peer chunk requests",
            self.peer_errors.clone(),
        );
        reg.register(
            "peer_redirects",
            "Chunk requests an owner redirected to other holders",
            self.peer_redirects.clone(),
        );
        reg.register(
            "peer_holder_bytes",
            "Verified chunk bytes received from holders other than the owner",
            self.peer_holder_bytes.clone(),
        );
        let mut out = String::new();
        encode(&mut out, &registry).expect("writing to a String cannot fail");
        out
    }
}
