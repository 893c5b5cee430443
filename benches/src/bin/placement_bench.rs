//! Placement throughput and per-decision latency on a simulated fleet:
//! 1,000 GPU hosts in 10 zones with locality data for 8 dataset versions,
//! 10,000 replicas of 100 deployments placed one after another (each
//! decision sees the spread of the ones before). Goal: p99 < 1 ms.
//!
//! `shoal-placement-bench [HOSTS] [REPLICAS]`

use std::collections::HashMap;
use std::time::Instant;

use shoal_scheduler::placement::{
    place, DatasetLocality, Host, Policy, Rates, Request, Residency, Spread, Start,
};

/// Deterministic pseudo-random numbers (xorshift), so runs compare.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n_hosts: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let n_replicas: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let models = ["h100", "a100", "l40s"];
    let mut hosts: Vec<Host> = (0..n_hosts)
        .map(|i| Host {
            name: format!("gpu-{i:04}"),
            gpu_model: models[i % 3].to_string(),
            gpus_free: 16,
            cpu_free: 96_000,
            memory_free: 1 << 40,
            labels: [("zone".to_string(), format!("z{}", i % 10))].into(),
            healthy: rng.below(50) != 0,
            blacklisted: rng.below(100) == 0,
            reusable: Vec::new(),
        })
        .collect();
    let mut locality: HashMap<String, DatasetLocality> = HashMap::new();
    for d in 0..8 {
        let total = (1 + rng.below(40)) << 30;
        let mut l = DatasetLocality {
            total_bytes: total,
            hosts: HashMap::new(),
        };
        for h in &hosts {
            // About one host in five holds some of each dataset.
            if rng.below(5) == 0 {
                let held = rng.below(total + 1);
                let memory = rng.below(held + 1);
                l.hosts.insert(
                    h.name.clone(),
                    Residency {
                        memory_bytes: memory,
                        disk_bytes: held - memory,
                        origin_bps: 80_000_000 + rng.below(40_000_000),
                        peer_bps: 500_000_000 + rng.below(1_000_000_000),
                        available: rng.below(20) != 0,
                    },
                );
            }
        }
        locality.insert(format!("ds{d}@1"), l);
    }
    let rates = Rates::default();
    let mut spreads: HashMap<String, Spread> = HashMap::new();
    let mut latencies = Vec::with_capacity(n_replicas);
    let (mut placed, mut prewarm, mut cold, mut none) = (0, 0, 0, 0);
    let t0 = Instant::now();
    for r in 0..n_replicas {
        let dep = format!("dep-{}", r % 100);
        let req = Request {
            deployment: dep.clone(),
            gpu_model: if r % 4 == 0 {
                String::new()
            } else {
                models[r % 3].to_string()
            },
            gpus: 1,
            cpu: 4000,
            memory: 32 << 30,
            datasets: vec![format!("ds{}@1", r % 8), format!("ds{}@1", (r / 8) % 8)],
            policy: if r % 2 == 0 {
                Policy::Required
            } else {
                Policy::Preferred
            },
            min_warm: 0.5,
            reuse: None,
        };
        let spread = spreads.entry(dep).or_default();
        let s = Instant::now();
        let d = place(&req, &hosts, &locality, spread, &rates);
        latencies.push(s.elapsed());
        match (&d.chosen, d.start) {
            (None, _) => none += 1,
            (Some(name), start) => {
                placed += 1;
                match start {
                    Start::AfterPrewarm => prewarm += 1,
                    Start::NowCold => cold += 1,
                    Start::Now => {}
                }
                let h = hosts
                    .iter_mut()
                    .find(|h| &h.name == name)
                    .expect("chosen host exists");
                h.gpus_free -= req.gpus;
                spread.add(h);
            }
        }
    }
    let wall = t0.elapsed();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    let p99 = pct(0.99);
    println!(
        "placement: {n_hosts} hosts, {n_replicas} replicas, 8 dataset versions, 2 per replica"
    );
    println!(
        "placed {placed} (start now {}, after prewarm {prewarm}, cold now {cold}), unplaceable {none}",
        placed - prewarm - cold
    );
    println!(
        "throughput {:.0} decisions/s; latency p50 {:?}, p99 {:?}, max {:?}",
        n_replicas as f64 / wall.as_secs_f64(),
        pct(0.5),
        p99,
        latencies[latencies.len() - 1]
    );
    println!(
        "p99 / goal (1 ms): {:.3} -> {}",
        p99.as_secs_f64() / 1e-3,
        if p99.as_secs_f64() < 1e-3 {
            "PASS"
        } else {
            "FAIL"
        }
    );
}
