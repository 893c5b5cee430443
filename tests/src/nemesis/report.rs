//! The outcome of a run: counts, latencies, faults, and the violations
//! found, as a table for people and as JSON for tools.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use super::readers::{errno_name, ReadStats};
use super::sampler::Samples;

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub seed: u64,
    pub secs: u64,
    pub nodes: usize,
    /// The command that replays this run.
    pub replay: String,
    pub reads: ReadStats,
    /// Faults injected by the nemesis, per kind.
    pub faults: BTreeMap<&'static str, u64>,
    /// Ranged GETs the origin proxy spoiled, per fault.
    pub origin_injections: BTreeMap<&'static str, u64>,
    pub origin_ranged_gets: u64,
    pub samples: Samples,
    /// Mounts (of all fuse-client runs) that opened a file with passthrough.
    pub passthrough_mounts: usize,
    /// From the end of the nemesis to a converged cluster.
    pub convergence: Option<Duration>,
    /// Files read back by the final pass, over every mount.
    pub final_files: u64,
    /// Each node's CPU (share of a core) over a second after the final
    /// pass, when nothing reads: high means the node spins.
    pub idle_cpu: BTreeMap<String, f64>,
    pub violations: BTreeMap<&'static str, u64>,
    pub violation_messages: Vec<String>,
    /// Every fault applied and undone, with its time.
    pub fault_log: Vec<String>,
    pub work_dir: Option<String>,
    pub elapsed: Duration,
}

fn mib(b: f64) -> String {
    format!("{:.1} MiB", b / (1u64 << 20) as f64)
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

impl Report {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    fn eio(&self) -> u64 {
        self.reads.errors.get(&libc::EIO).copied().unwrap_or(0)
    }

    pub fn text(&self) -> String {
        let mut t = String::new();
        let r = &self.reads;
        let verdict = if self.passed() { "PASS" } else { "FAIL" };
        let _ = writeln!(
            t,
            "nemesis {verdict}: seed {} ({} s, {} nodes)",
            self.seed, self.secs, self.nodes
        );
        let _ = writeln!(t, "replay: {}", self.replay);
        let row = |t: &mut String, k: &str, v: String| {
            let _ = writeln!(t, "  {k:<44} {v}");
        };
        row(&mut t, "read operations", r.ops.to_string());
        row(
            &mut t,
            "read system calls (open, pread)",
            r.syscalls.to_string(),
        );
        row(
            &mut t,
            "bytes checked",
            format!("{} ({})", r.bytes_checked, mib(r.bytes_checked as f64)),
        );
        row(
            &mut t,
            "operations with wrong bytes",
            r.wrong_ops.to_string(),
        );
        row(&mut t, "EIO", self.eio().to_string());
        for (errno, n) in r.errors.iter().filter(|(e, _)| **e != libc::EIO) {
            row(
                &mut t,
                &format!("{} (other error)", errno_name(*errno)),
                n.to_string(),
            );
        }
        row(
            &mut t,
            "max / p99 / p50 system call latency",
            format!(
                "{} / {} / {}",
                secs(r.syscall_latency.max()),
                secs(r.syscall_latency.quantile(0.99)),
                secs(r.syscall_latency.quantile(0.5))
            ),
        );
        if let Some((_, what)) = &r.slowest {
            row(&mut t, "slowest system call", what.clone());
        }
        row(
            &mut t,
            "max / p99 operation latency",
            format!(
                "{} / {}",
                secs(r.op_latency.max()),
                secs(r.op_latency.quantile(0.99))
            ),
        );
        row(
            &mut t,
            "convergence after the nemesis",
            self.convergence.map_or("never".into(), secs),
        );
        row(
            &mut t,
            "final pass: files read over every mount",
            self.final_files.to_string(),
        );
        let idle: Vec<String> = self
            .idle_cpu
            .iter()
            .map(|(n, c)| format!("{n} {:.0}%", c * 100.0))
            .collect();
        row(&mut t, "node CPU when idle, after the run", idle.join(", "));
        row(
            &mut t,
            "tier samples / membership samples",
            format!(
                "{} / {}",
                self.samples.quota_samples, self.samples.membership_samples
            ),
        );
        for how in ["(fs)", "(node)"] {
            let fullest = self
                .samples
                .max_tier_fill
                .iter()
                .filter(|(k, _)| k.ends_with(how))
                .fold(("-".to_string(), 0.0f64), |a, (k, v)| {
                    if *v > a.1 {
                        (k.clone(), *v)
                    } else {
                        a
                    }
                });
            row(
                &mut t,
                &format!("fullest tier {how}, of its quota"),
                format!("{} {:.1}%", fullest.0, fullest.1 * 100.0),
            );
        }
        let _ = writeln!(t, "faults injected (nemesis events):");
        for (k, n) in &self.faults {
            let explained = r.explained.get(k).copied().unwrap_or(0);
            row(&mut t, k, format!("{n} (errors it explains: {explained})"));
        }
        let _ = writeln!(
            t,
            "origin answers spoiled by the proxy (of {} ranged GETs):",
            self.origin_ranged_gets
        );
        for (k, n) in &self.origin_injections {
            row(&mut t, k, n.to_string());
        }
        let _ = writeln!(
            t,
            "read paths (node counters, summed over nodes and restarts):"
        );
        for (k, v) in &self.samples.counters {
            let v = if k.contains("bytes") {
                mib(*v)
            } else {
                format!("{v:.0}")
            };
            row(&mut t, k, v);
        }
        row(
            &mut t,
            "mount runs that used passthrough",
            self.passthrough_mounts.to_string(),
        );
        if self.passed() {
            let _ = writeln!(t, "invariants: all held");
        } else {
            let _ = writeln!(t, "VIOLATIONS:");
            for (k, n) in &self.violations {
                row(&mut t, k, n.to_string());
            }
            for m in &self.violation_messages {
                let _ = writeln!(t, "  - {m}");
            }
        }
        if let Some(d) = &self.work_dir {
            let _ = writeln!(t, "logs kept in {d}");
        }
        let _ = writeln!(t, "total time {}", secs(self.elapsed));
        t
    }

    pub fn json(&self) -> serde_json::Value {
        let r = &self.reads;
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        serde_json::json!({
            "passed": self.passed(),
            "seed": self.seed,
            "secs": self.secs,
            "nodes": self.nodes,
            "replay": self.replay,
            "reads": {
                "operations": r.ops,
                "syscalls": r.syscalls,
                "bytes_checked": r.bytes_checked,
                "wrong_operations": r.wrong_ops,
                "eio": self.eio(),
                "errors": r.errors.iter().map(|(e, n)| (errno_name(*e), *n)).collect::<BTreeMap<_, _>>(),
                "explained_by_fault": r.explained,
                "slowest_syscall": r.slowest.as_ref().map(|s| s.1.clone()),
                "syscall_latency_ms": {
                    "max": ms(r.syscall_latency.max()),
                    "p99": ms(r.syscall_latency.quantile(0.99)),
                    "p50": ms(r.syscall_latency.quantile(0.5)),
                },
                "operation_latency_ms": {
                    "max": ms(r.op_latency.max()),
                    "p99": ms(r.op_latency.quantile(0.99)),
                },
            },
            "faults": self.faults,
            "origin_injections": self.origin_injections,
            "origin_ranged_gets": self.origin_ranged_gets,
            "read_path_counters": self.samples.counters,
            "passthrough_mounts": self.passthrough_mounts,
            "tier_fill_max": self.samples.max_tier_fill,
            "quota_samples": self.samples.quota_samples,
            "membership_samples": self.samples.membership_samples,
            "convergence_s": self.convergence.map(|d| d.as_secs_f64()),
            "final_pass_files": self.final_files,
            "idle_cpu": self.idle_cpu,
            "violations": self.violations,
            "violation_messages": self.violation_messages,
            "fault_log": self.fault_log,
            "work_dir": self.work_dir,
            "elapsed_s": self.elapsed.as_secs_f64(),
        })
    }
}
