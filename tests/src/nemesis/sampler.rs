//! Continuous checks that are not reads: every second, each tier's real
//! data on its filesystem and the node's own figures against the quota;
//! every few seconds, each node's member list (nobody outside the cluster
//! in it). Counters that show which read paths ran are accumulated across
//! node restarts.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::check::Violations;
use super::cluster::NodeProbe;
use crate::data_bytes;
use crate::parse_metric as metric;

/// Counters summed over nodes (and restarts) that show the read paths.
pub const PATH_COUNTERS: [(&str, &str); 12] = [
    ("origin bytes", "shoal_origin_bytes_total"),
    (
        "origin errors",
        "shoal_origin_requests_total{result=\"error\"}",
    ),
    (
        "origin changed",
        "shoal_origin_requests_total{result=\"changed\"}",
    ),
    ("peer bytes", "shoal_peer_bytes_total"),
    ("peer errors", "shoal_peer_errors_total"),
    ("memory hits", "shoal_cache_hits_total{tier=\"memory\"}"),
    ("disk hits", "shoal_cache_hits_total{tier=\"disk\"}"),
    ("misses", "shoal_cache_misses_total"),
    ("direct reads", "shoal_direct_reads_total"),
    ("uncached reads", "shoal_uncached_reads_total"),
    (
        "demotions",
        "shoal_evictions_total{tier=\"memory\",action=\"demote\"}",
    ),
    (
        "disk drops",
        "shoal_evictions_total{tier=\"disk\",action=\"drop\"}",
    ),
];

/// What the sampler saw.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    pub quota_samples: u64,
    pub membership_samples: u64,
    /// Highest tier usage seen, as a share of its quota: "node tier (fs)"
    /// measured on the filesystem, "node tier (node)" as the node counts.
    pub max_tier_fill: BTreeMap<String, f64>,
    pub counters: BTreeMap<&'static str, f64>,
}

struct Counter {
    last: f64,
    total: f64,
}

pub struct Sampler {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    samples: Arc<Mutex<Samples>>,
}

impl Sampler {
    pub fn start(nodes: Vec<NodeProbe>, violations: Arc<Violations>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Samples::default()));
        let (st, out) = (stop.clone(), samples.clone());
        let handle = std::thread::spawn(move || {
            let mut counters: BTreeMap<(usize, &'static str), Counter> = BTreeMap::new();
            let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
            // Member lists every third second: each costs a dataset-ctl run per node.
            for tick in (0..3).cycle() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                for (i, node) in nodes.iter().enumerate() {
                    check_quota(node, &violations, &out, &mut counters, i);
                    if tick == 0 {
                        check_members(node, &names, &violations, &out);
                    }
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        });
        Self {
            stop,
            handle: Some(handle),
            samples,
        }
    }

    pub fn stop(mut self) -> Samples {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.samples.lock().unwrap().clone()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Files in `dir` (each may round its last block up).
fn files_in(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| d.flatten().filter(|e| e.path().is_file()).count() as u64)
        .unwrap_or(0)
}

fn check_quota(
    node: &NodeProbe,
    violations: &Violations,
    out: &Mutex<Samples>,
    counters: &mut BTreeMap<(usize, &'static str), Counter>,
    index: usize,
) {
    let tiers = [
        ("memory", &node.memory_dir, node.memory_quota),
        ("disk", &node.disk_dir, node.disk_quota),
    ];
    let metrics = node.metrics();
    let mut o = out.lock().unwrap();
    o.quota_samples += 1;
    for (tier, dir, quota) in tiers {
        // What the filesystem holds, allowing one partial block per file.
        let held = data_bytes(dir);
        let slack = 4096 * files_in(dir);
        if held > quota + slack {
            violations.add(
                "quota",
                format!(
                    "{} {tier} tier holds {held} bytes on its filesystem, quota {quota}",
                    node.name
                ),
            );
        }
        let fill = o
            .max_tier_fill
            .entry(format!("{} {tier} (fs)", node.name))
            .or_default();
        *fill = fill.max(held as f64 / quota.max(1) as f64);
        if let Some(m) = &metrics {
            let used = metric(m, &format!("shoal_tier_bytes{{tier=\"{tier}\"}}"));
            let cap = metric(m, &format!("shoal_tier_capacity_bytes{{tier=\"{tier}\"}}"));
            if let (Some(used), Some(cap)) = (used, cap) {
                let fill = o
                    .max_tier_fill
                    .entry(format!("{} {tier} (node)", node.name))
                    .or_default();
                *fill = fill.max(used / quota.max(1) as f64);
                if used > cap || cap > quota as f64 {
                    violations.add(
                        "quota",
                        format!(
                            "{} reports {used} bytes in its {tier} tier, capacity {cap}, quota {quota}",
                            node.name
                        ),
                    );
                }
            }
        }
    }
    if let Some(m) = &metrics {
        for (label, series) in PATH_COUNTERS {
            let Some(v) = metric(m, series) else { continue };
            let c = counters.entry((index, series)).or_insert(Counter {
                last: 0.0,
                total: 0.0,
            });
            // A restarted node starts its counters again from zero.
            c.total += if v >= c.last { v - c.last } else { v };
            c.last = v;
            let sum: f64 = counters
                .iter()
                .filter(|((_, s), _)| *s == series)
                .map(|(_, c)| c.total)
                .sum();
            o.counters.insert(label, sum);
        }
    }
}

fn check_members(
    node: &NodeProbe,
    names: &[String],
    violations: &Violations,
    out: &Mutex<Samples>,
) {
    let Some(members) = node.members() else {
        return;
    };
    out.lock().unwrap().membership_samples += 1;
    for (name, state) in members {
        if !names.contains(&name) {
            violations.add(
                "intruder-admitted",
                format!("{} lists member {name:?} ({state})", node.name),
            );
        }
    }
}
