//! Placement: where a replica starts fastest, without I/O.
//!
//! The model follows ServerlessLLM's startup-time-optimized scheduling: a
//! replica's startup time on a host is the time to bring every byte of its
//! dataset versions next to the GPU — from that host's memory tier, its
//! disk tier, peers in its zone, peers elsewhere, or only the origin, each
//! path at the bandwidth the cache nodes measured — plus the container
//! start (shorter when a stopped container can be reused).
//!
//! A decision is: filter (capacity, GPU model, health, blacklist), estimate
//! each remaining host, add a spread penalty (replicas of the same
//! deployment already on the host and in its zone), pick the lowest score.
//! The locality policy then decides *when* the replica starts, and says so:
//! a host holding at least `min_warm` of the bytes starts at once; with
//! `required`, a colder host is warmed first (a prewarm job) and the replica
//! starts once its data is resident; with `preferred`, the replica starts
//! at once on the colder host when no warm host has capacity. Nothing is
//! ever left pending because it is cold (a complaint against Fluid), and
//! nothing silently ignores locality.
//!
//! Everything here is plain data in, plain data out, so it is tested on
//! simulated fleets and benchmarked at 1,000 hosts.

use std::collections::HashMap;

/// A GPU host as the scheduler sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Host {
    pub name: String,
    pub gpu_model: String,
    pub gpus_free: u32,
    /// Millicores.
    pub cpu_free: u64,
    pub memory_free: u64,
    pub labels: HashMap<String, String>,
    /// Heartbeating and its agent reports healthy.
    pub healthy: bool,
    pub blacklisted: bool,
    /// Stopped containers kept for reuse: (image, parameters key).
    pub reusable: Vec<(String, String)>,
}

impl Host {
    pub fn zone(&self) -> Option<&str> {
        self.labels.get("zone").map(String::as_str)
    }
}

/// One host's cache-node figures for one dataset version (from locality).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Residency {
    pub memory_bytes: u64,
    pub disk_bytes: u64,
    /// Measured bytes/s from the origin and from peers (0 = not measured).
    pub origin_bps: u64,
    pub peer_bps: u64,
    /// The host's cache node is up (its bytes can serve peers).
    pub available: bool,
}

/// Locality of one dataset version: every host's residency.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DatasetLocality {
    pub total_bytes: u64,
    pub hosts: HashMap<String, Residency>,
}

/// How locality constrains the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Never start on a host below `min_warm`: warm it first.
    Required,
    /// Prefer warm hosts; start cold at once when none has capacity.
    Preferred,
}

/// What one replica needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub deployment: String,
    /// Required GPU model; empty accepts any.
    pub gpu_model: String,
    pub gpus: u32,
    pub cpu: u64,
    pub memory: u64,
    /// Keys of the needed dataset versions in the locality table
    /// ("name@version").
    pub datasets: Vec<String>,
    pub policy: Policy,
    /// Fraction of the bytes that must be on the host to start at once.
    pub min_warm: f64,
    /// (image, parameters key) for reuse matching; None disables reuse.
    pub reuse: Option<(String, String)>,
}

/// Rates the estimate uses besides the measured ones.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    pub memory_bps: f64,
    pub disk_bps: f64,
    /// Used when a host has not measured its origin or peer path yet.
    pub default_origin_bps: f64,
    pub default_peer_bps: f64,
    pub container_start_s: f64,
    pub reuse_start_s: f64,
    /// Seconds added per replica of the same deployment on the host, and
    /// in the host's zone.
    pub spread_host_s: f64,
    pub spread_zone_s: f64,
}

impl Default for Rates {
    fn default() -> Self {
        Self {
            memory_bps: 4e9,
            disk_bps: 1.5e9,
            default_origin_bps: 100e6,
            default_peer_bps: 300e6,
            // A process with its FUSE mounts, measured ~0.4 s on this
            // machine (benches/mesh/run.sh, scenario 7).
            container_start_s: 0.5,
            reuse_start_s: 0.2,
            spread_host_s: 5.0,
            spread_zone_s: 0.5,
        }
    }
}

/// Why a host was filtered out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filtered {
    Blacklisted,
    Unhealthy,
    GpuModel { want: String, have: String },
    Capacity(&'static str),
}

impl std::fmt::Display for Filtered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Filtered::Blacklisted => f.write_str("blacklisted"),
            Filtered::Unhealthy => f.write_str("not healthy"),
            Filtered::GpuModel { want, have } => write!(f, "GPU model {have}, wants {want}"),
            Filtered::Capacity(what) => write!(f, "not enough free {what}"),
        }
    }
}

/// Bytes and seconds per path of one estimate.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Estimate {
    pub memory_bytes: u64,
    pub disk_bytes: u64,
    pub zone_peer_bytes: u64,
    pub cluster_peer_bytes: u64,
    pub origin_bytes: u64,
    pub memory_s: f64,
    pub disk_s: f64,
    pub zone_peer_s: f64,
    pub cluster_peer_s: f64,
    pub origin_s: f64,
    pub container_s: f64,
    pub reused: bool,
}

impl Estimate {
    /// Estimated seconds from start to data-ready.
    pub fn total_s(&self) -> f64 {
        self.memory_s
            + self.disk_s
            + self.zone_peer_s
            + self.cluster_peer_s
            + self.origin_s
            + self.container_s
    }

    /// Bytes already on the host (memory + disk).
    pub fn local_bytes(&self) -> u64 {
        self.memory_bytes + self.disk_bytes
    }

    /// Every byte the replica needs.
    pub fn total_bytes(&self) -> u64 {
        self.local_bytes() + self.zone_peer_bytes + self.cluster_peer_bytes + self.origin_bytes
    }
}

/// One host in a decision, for `explain`.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub host: String,
    pub filtered: Option<Filtered>,
    pub estimate: Estimate,
    /// Local bytes / needed bytes (1 when nothing is needed).
    pub warm_fraction: f64,
    pub spread_s: f64,
    /// Estimate + spread; lower is better.
    pub score: f64,
}

/// When the chosen replica starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Warm enough: start now.
    Now,
    /// `required` and below `min_warm`: prewarm the host, then start.
    AfterPrewarm,
    /// `preferred`, below `min_warm`, and no warm host has capacity.
    NowCold,
}

/// A placement decision with every candidate's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub chosen: Option<String>,
    pub start: Start,
    pub reason: String,
    /// Every host, feasible ones sorted best first, then filtered ones.
    pub candidates: Vec<Candidate>,
}

/// Replicas of the deployment already placed: per host and per zone.
#[derive(Debug, Clone, Default)]
pub struct Spread {
    pub per_host: HashMap<String, u32>,
    pub per_zone: HashMap<String, u32>,
}

impl Spread {
    /// Counts one more replica on `host`.
    pub fn add(&mut self, host: &Host) {
        *self.per_host.entry(host.name.clone()).or_default() += 1;
        if let Some(z) = host.zone() {
            *self.per_zone.entry(z.to_string()).or_default() += 1;
        }
    }
}

fn filter(req: &Request, h: &Host) -> Option<Filtered> {
    if h.blacklisted {
        return Some(Filtered::Blacklisted);
    }
    if !h.healthy {
        return Some(Filtered::Unhealthy);
    }
    if !req.gpu_model.is_empty() && req.gpu_model != h.gpu_model {
        return Some(Filtered::GpuModel {
            want: req.gpu_model.clone(),
            have: h.gpu_model.clone(),
        });
    }
    if h.gpus_free < req.gpus {
        return Some(Filtered::Capacity("GPUs"));
    }
    if h.cpu_free < req.cpu {
        return Some(Filtered::Capacity("CPU"));
    }
    if h.memory_free < req.memory {
        return Some(Filtered::Capacity("memory"));
    }
    None
}

fn secs(bytes: u64, bps: f64) -> f64 {
    if bytes == 0 {
        0.0
    } else {
        bytes as f64 / bps.max(1.0)
    }
}

/// The two largest (bytes held, host index) seen, so "the best other than
/// host h" is answered in O(1).
#[derive(Debug, Clone, Copy, Default)]
struct Top2([(u64, usize); 2]);

impl Top2 {
    fn offer(&mut self, held: u64, idx: usize) {
        if held > self.0[0].0 {
            self.0[1] = self.0[0];
            self.0[0] = (held, idx);
        } else if held > self.0[1].0 {
            self.0[1] = (held, idx);
        }
    }

    fn best_except(&self, idx: usize) -> u64 {
        if self.0[0].0 > 0 && self.0[0].1 == idx {
            self.0[1].0
        } else {
            self.0[0].0
        }
    }
}

/// Per dataset version: what the best available peer holds, per zone and
/// anywhere, computed once per decision (O(hosts)) instead of once per
/// candidate (which would make a decision O(hosts²)).
struct PeerIndex<'a> {
    per_dataset: Vec<(&'a DatasetLocality, HashMap<&'a str, Top2>, Top2)>,
}

impl<'a> PeerIndex<'a> {
    fn new(
        req: &Request,
        hosts: &'a [Host],
        locality: &'a HashMap<String, DatasetLocality>,
    ) -> Self {
        let per_dataset = req
            .datasets
            .iter()
            .filter_map(|ds| locality.get(ds))
            .map(|loc| {
                let mut zones: HashMap<&str, Top2> = HashMap::new();
                let mut any = Top2::default();
                for (i, h) in hosts.iter().enumerate() {
                    let Some(r) = loc.hosts.get(&h.name).filter(|r| r.available) else {
                        continue;
                    };
                    let held = (r.memory_bytes + r.disk_bytes).min(loc.total_bytes);
                    any.offer(held, i);
                    if let Some(z) = h.zone() {
                        zones.entry(z).or_default().offer(held, i);
                    }
                }
                (loc, zones, any)
            })
            .collect();
        Self { per_dataset }
    }
}

/// The startup estimate of `req` on host `h` (a one-off; [`place`] shares
/// the peer index across candidates).
pub fn estimate(
    req: &Request,
    h: &Host,
    hosts: &[Host],
    locality: &HashMap<String, DatasetLocality>,
    rates: &Rates,
) -> Estimate {
    let idx = hosts
        .iter()
        .position(|o| o.name == h.name)
        .unwrap_or(usize::MAX);
    estimate_with(req, h, idx, &PeerIndex::new(req, hosts, locality), rates)
}

fn estimate_with(
    req: &Request,
    h: &Host,
    idx: usize,
    peers: &PeerIndex<'_>,
    rates: &Rates,
) -> Estimate {
    let mut e = Estimate::default();
    for (loc, zones, any) in &peers.per_dataset {
        let mine = loc.hosts.get(&h.name).copied().unwrap_or_default();
        let memory = mine.memory_bytes.min(loc.total_bytes);
        let disk = mine.disk_bytes.min(loc.total_bytes - memory);
        let missing = loc.total_bytes - memory - disk;
        let zone_best = h
            .zone()
            .and_then(|z| zones.get(z))
            .map_or(0, |t| t.best_except(idx));
        let any_best = any.best_except(idx);
        let zone = missing.min(zone_best);
        let cluster = (missing - zone).min(any_best.saturating_sub(zone));
        let origin = missing - zone - cluster;
        let peer_bps = if mine.peer_bps > 0 {
            mine.peer_bps as f64
        } else {
            rates.default_peer_bps
        };
        let origin_bps = if mine.origin_bps > 0 {
            mine.origin_bps as f64
        } else {
            rates.default_origin_bps
        };
        e.memory_bytes += memory;
        e.disk_bytes += disk;
        e.zone_peer_bytes += zone;
        e.cluster_peer_bytes += cluster;
        e.origin_bytes += origin;
        e.memory_s += secs(memory, rates.memory_bps);
        e.disk_s += secs(disk, rates.disk_bps);
        e.zone_peer_s += secs(zone, peer_bps);
        e.cluster_peer_s += secs(cluster, peer_bps);
        e.origin_s += secs(origin, origin_bps);
    }
    e.reused = req
        .reuse
        .as_ref()
        .is_some_and(|r| h.reusable.iter().any(|c| c == r));
    e.container_s = if e.reused {
        rates.reuse_start_s
    } else {
        rates.container_start_s
    };
    e
}

/// Places one replica.
pub fn place(
    req: &Request,
    hosts: &[Host],
    locality: &HashMap<String, DatasetLocality>,
    spread: &Spread,
    rates: &Rates,
) -> Decision {
    let peers = PeerIndex::new(req, hosts, locality);
    let mut feasible = Vec::new();
    let mut rejected = Vec::new();
    for (idx, h) in hosts.iter().enumerate() {
        if let Some(f) = filter(req, h) {
            rejected.push(Candidate {
                host: h.name.clone(),
                filtered: Some(f),
                estimate: Estimate::default(),
                warm_fraction: 0.0,
                spread_s: 0.0,
                score: f64::INFINITY,
            });
            continue;
        }
        let e = estimate_with(req, h, idx, &peers, rates);
        let need = e.total_bytes();
        let warm_fraction = if need == 0 {
            1.0
        } else {
            e.local_bytes() as f64 / need as f64
        };
        let spread_s = f64::from(spread.per_host.get(&h.name).copied().unwrap_or(0))
            * rates.spread_host_s
            + f64::from(
                h.zone()
                    .and_then(|z| spread.per_zone.get(z))
                    .copied()
                    .unwrap_or(0),
            ) * rates.spread_zone_s;
        feasible.push(Candidate {
            host: h.name.clone(),
            filtered: None,
            score: e.total_s() + spread_s,
            estimate: e,
            warm_fraction,
            spread_s,
        });
    }
    feasible.sort_by(|a, b| a.score.total_cmp(&b.score).then(a.host.cmp(&b.host)));
    let warm = |c: &Candidate| c.warm_fraction + 1e-9 >= req.min_warm;
    let (chosen, start, reason) = match (feasible.first(), feasible.iter().find(|c| warm(c))) {
        (None, _) => (
            None,
            Start::Now,
            format!(
                "no host can run it ({} filtered out)",
                rejected.len()
            ),
        ),
        (Some(best), Some(w)) => {
            let why = if w.host == best.host {
                "lowest estimated startup time".to_string()
            } else {
                format!(
                    "warmest choice at or above the {:.0}% warm minimum ({} would be {:.1} s faster but is colder)",
                    req.min_warm * 100.0,
                    best.host,
                    w.score - best.score
                )
            };
            (Some(w.host.clone()), Start::Now, why)
        }
        (Some(best), None) => match req.policy {
            Policy::Required => (
                Some(best.host.clone()),
                Start::AfterPrewarm,
                format!(
                    "no host holds {:.0}% of the data: prewarm {} first (locality required), then start",
                    req.min_warm * 100.0,
                    best.host
                ),
            ),
            Policy::Preferred => (
                Some(best.host.clone()),
                Start::NowCold,
                format!(
                    "no warm host has capacity: starting cold on {} now (locality preferred)",
                    best.host
                ),
            ),
        },
    };
    feasible.extend(rejected);
    Decision {
        chosen,
        start,
        reason,
        candidates: feasible,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GB: u64 = 1_000_000_000;

    fn host(name: &str, zone: &str) -> Host {
        Host {
            name: name.into(),
            gpu_model: "h100".into(),
            gpus_free: 8,
            cpu_free: 64_000,
            memory_free: 512 * GB,
            labels: [("zone".to_string(), zone.to_string())].into(),
            healthy: true,
            blacklisted: false,
            reusable: Vec::new(),
        }
    }

    fn req(policy: Policy, min_warm: f64) -> Request {
        Request {
            deployment: "llm".into(),
            gpu_model: "h100".into(),
            gpus: 1,
            cpu: 1000,
            memory: GB,
            datasets: vec!["model@1".into()],
            policy,
            min_warm,
            reuse: None,
        }
    }

    fn res(memory: u64, disk: u64) -> Residency {
        Residency {
            memory_bytes: memory,
            disk_bytes: disk,
            origin_bps: 100_000_000,
            peer_bps: 1_000_000_000,
            available: true,
        }
    }

    fn locality(total: u64, hosts: &[(&str, Residency)]) -> HashMap<String, DatasetLocality> {
        [(
            "model@1".to_string(),
            DatasetLocality {
                total_bytes: total,
                hosts: hosts.iter().map(|(n, r)| (n.to_string(), *r)).collect(),
            },
        )]
        .into()
    }

    #[test]
    fn estimate_is_bytes_over_each_path_plus_container_start() {
        let hosts = vec![host("a", "z1"), host("b", "z1"), host("c", "z2")];
        // a: 1 GB memory + 1 GB disk of 10 GB; b (same zone) 6 GB; c 9 GB.
        let loc = locality(
            10 * GB,
            &[
                ("a", res(GB, GB)),
                ("b", res(6 * GB, 0)),
                ("c", res(9 * GB, 0)),
            ],
        );
        let rates = Rates::default();
        let e = estimate(
            &req(Policy::Preferred, 0.0),
            &hosts[0],
            &hosts,
            &loc,
            &rates,
        );
        assert_eq!(
            (
                e.memory_bytes,
                e.disk_bytes,
                e.zone_peer_bytes,
                e.cluster_peer_bytes,
                e.origin_bytes
            ),
            (GB, GB, 6 * GB, 2 * GB, 0)
        );
        let want = 1.0 / 4.0 + 1.0 / 1.5 + 6.0 + 2.0 + rates.container_start_s;
        assert!(
            (e.total_s() - want).abs() < 1e-9,
            "{} vs {want}",
            e.total_s()
        );
        // A dead cache node's bytes do not count: c's 9 GB fall to the origin.
        let mut dead = loc.clone();
        dead.get_mut("model@1")
            .unwrap()
            .hosts
            .get_mut("c")
            .unwrap()
            .available = false;
        let e = estimate(
            &req(Policy::Preferred, 0.0),
            &hosts[0],
            &hosts,
            &dead,
            &rates,
        );
        assert_eq!((e.cluster_peer_bytes, e.origin_bytes), (0, 2 * GB));
        // A matching stopped container starts faster.
        let mut reuse = req(Policy::Preferred, 0.0);
        reuse.reuse = Some(("img:1".into(), "k".into()));
        let mut h = hosts[0].clone();
        h.reusable.push(("img:1".into(), "k".into()));
        let e = estimate(&reuse, &h, &hosts, &loc, &rates);
        assert!(e.reused && e.container_s == rates.reuse_start_s);
        let e = estimate(&reuse, &hosts[0], &hosts, &loc, &rates);
        assert!(!e.reused && e.container_s == rates.container_start_s);
    }

    #[test]
    fn locality_wins_and_filters_are_explained() {
        let mut hosts = vec![host("cold", "z1"), host("warm", "z2"), host("busy", "z1")];
        hosts[2].gpus_free = 0;
        let loc = locality(10 * GB, &[("warm", res(10 * GB, 0))]);
        let d = place(
            &req(Policy::Required, 0.9),
            &hosts,
            &loc,
            &Spread::default(),
            &Rates::default(),
        );
        assert_eq!(d.chosen.as_deref(), Some("warm"));
        assert_eq!(d.start, Start::Now);
        let busy = d.candidates.iter().find(|c| c.host == "busy").unwrap();
        assert_eq!(busy.filtered, Some(Filtered::Capacity("GPUs")));
        hosts[1].blacklisted = true;
        let d = place(
            &req(Policy::Required, 0.9),
            &hosts,
            &loc,
            &Spread::default(),
            &Rates::default(),
        );
        assert_eq!(d.chosen.as_deref(), Some("cold"));
        assert_eq!(d.start, Start::AfterPrewarm, "{}", d.reason);
        let d = place(
            &req(Policy::Preferred, 0.9),
            &hosts,
            &loc,
            &Spread::default(),
            &Rates::default(),
        );
        assert_eq!(
            (d.chosen.as_deref(), d.start),
            (Some("cold"), Start::NowCold)
        );
        assert!(d.reason.contains("starting cold"), "{}", d.reason);
        hosts[0].gpu_model = "a100".into();
        let d = place(
            &req(Policy::Preferred, 0.9),
            &hosts,
            &loc,
            &Spread::default(),
            &Rates::default(),
        );
        assert_eq!(d.chosen, None);
        assert!(d.reason.contains("3 filtered out"), "{}", d.reason);
    }

    fn fleet() -> impl Strategy<Value = (Vec<Host>, HashMap<String, DatasetLocality>)> {
        proptest::collection::vec(
            (
                0u8..3,
                any::<bool>(),
                any::<bool>(),
                0u32..4,
                0u64..=10,
                0u64..=10,
                any::<bool>(),
            ),
            1..12,
        )
        .prop_map(|spec| {
            let mut hosts = Vec::new();
            let mut loc = DatasetLocality {
                total_bytes: 10 * GB,
                hosts: HashMap::new(),
            };
            for (i, (zone, healthy, black, gpus, mem, disk, avail)) in spec.into_iter().enumerate()
            {
                let mut h = host(&format!("h{i:02}"), &format!("z{zone}"));
                h.healthy = healthy || i == 0;
                h.blacklisted = black && i != 0;
                h.gpus_free = gpus;
                hosts.push(h);
                let mem = mem.min(10);
                let disk = disk.min(10 - mem);
                let mut r = res(mem * GB, disk * GB);
                r.available = avail;
                loc.hosts.insert(format!("h{i:02}"), r);
            }
            (hosts, [("model@1".to_string(), loc)].into())
        })
    }

    proptest! {
        /// On any fleet: the chosen host passes every filter, its score is
        /// the lowest among warm-enough hosts (or among all when none is),
        /// every estimate accounts for exactly the needed bytes, and more
        /// local bytes never make an estimate slower.
        #[test]
        fn decisions_are_feasible_minimal_and_consistent(
            (hosts, loc) in fleet(),
            min_warm in 0.0f64..1.0,
            required in any::<bool>(),
        ) {
            let policy = if required { Policy::Required } else { Policy::Preferred };
            let r = req(policy, min_warm);
            let rates = Rates::default();
            let d = place(&r, &hosts, &loc, &Spread::default(), &rates);
            for c in &d.candidates {
                if c.filtered.is_none() {
                    prop_assert_eq!(c.estimate.total_bytes(), 10 * GB);
                }
            }
            match &d.chosen {
                None => prop_assert!(d.candidates.iter().all(|c| c.filtered.is_some())),
                Some(name) => {
                    let h = hosts.iter().find(|h| &h.name == name).unwrap();
                    prop_assert!(h.healthy && !h.blacklisted && h.gpus_free >= 1);
                    let chosen = d.candidates.iter().find(|c| &c.host == name).unwrap();
                    let warm: Vec<_> = d.candidates.iter()
                        .filter(|c| c.filtered.is_none() && c.warm_fraction + 1e-9 >= min_warm)
                        .collect();
                    let pool: Vec<_> = if warm.is_empty() {
                        d.candidates.iter().filter(|c| c.filtered.is_none()).collect()
                    } else {
                        warm
                    };
                    for c in pool {
                        prop_assert!(chosen.score <= c.score);
                    }
                    let expect = if chosen.warm_fraction + 1e-9 >= min_warm {
                        Start::Now
                    } else if required {
                        Start::AfterPrewarm
                    } else {
                        Start::NowCold
                    };
                    prop_assert_eq!(d.start, expect);
                }
            }
            // Monotonic: moving 1 GB of origin bytes into a host's memory
            // never makes that host slower.
            let h = &hosts[0];
            let before = estimate(&r, h, &hosts, &loc, &rates).total_s();
            let mut more = loc.clone();
            let e = more.get_mut("model@1").unwrap().hosts.get_mut(&h.name).unwrap();
            if e.memory_bytes + e.disk_bytes < 10 * GB {
                e.memory_bytes += GB;
                let after = estimate(&r, h, &hosts, &more, &rates).total_s();
                prop_assert!(after <= before + 1e-9, "{} > {}", after, before);
            }
        }

        /// Identical hosts in one zone: replicas spread evenly across hosts.
        #[test]
        fn replicas_spread_over_identical_hosts(n_hosts in 1usize..8, replicas in 1usize..30) {
            let hosts: Vec<Host> = (0..n_hosts).map(|i| host(&format!("h{i}"), "z")).collect();
            let loc = locality(GB, &[]);
            let mut spread = Spread::default();
            for _ in 0..replicas {
                let d = place(&req(Policy::Preferred, 0.0), &hosts, &loc, &spread, &Rates::default());
                let h = hosts.iter().find(|h| Some(&h.name) == d.chosen.as_ref()).unwrap();
                spread.add(h);
            }
            let counts: Vec<u32> = hosts.iter().map(|h| spread.per_host.get(&h.name).copied().unwrap_or(0)).collect();
            let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
            prop_assert!(max - min <= 1, "{:?}", counts);
        }
    }
}
