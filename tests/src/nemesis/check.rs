//! What the invariants are checked against: the windows during which a
//! fault may explain an error, the violations found so far, and latency
//! statistics.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::plan::Kind;

/// A span during which one fault may explain some readers' errors.
#[derive(Debug, Clone)]
pub struct Window {
    pub fault: usize,
    pub kind: Kind,
    pub start: Instant,
    pub end: Option<Instant>,
    /// Mounts whose readers it may affect (`None`: every mount).
    pub mount: Option<usize>,
    /// The one file it may affect (`None`: every file).
    pub file: Option<usize>,
    /// The errors it explains.
    pub errnos: &'static [i32],
}

/// Fault windows, opened before a fault is applied and closed once it is
/// undone, so they always cover the fault.
#[derive(Default)]
pub struct Windows(Mutex<Vec<Window>>);

impl Windows {
    pub fn open(&self, w: Window) {
        self.0.lock().unwrap().push(w);
    }

    pub fn close(&self, fault: usize) {
        let now = Instant::now();
        for w in self.0.lock().unwrap().iter_mut() {
            if w.fault == fault && w.end.is_none() {
                w.end = Some(now);
            }
        }
    }

    /// The fault that explains `errno` on `mount` for `file` in an
    /// operation that ran from `start` to `end`: active during it, or ended
    /// less than `grace` before it started.
    pub fn explain(
        &self,
        mount: usize,
        file: usize,
        errno: i32,
        (start, end): (Instant, Instant),
        grace: Duration,
    ) -> Option<(usize, Kind)> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .find(|w| {
                w.errnos.contains(&errno)
                    && w.mount.is_none_or(|m| m == mount)
                    && w.file.is_none_or(|f| f == file)
                    && w.start <= end
                    && w.end.is_none_or(|e| e + grace >= start)
            })
            .map(|w| (w.fault, w.kind))
    }
}

/// Invariant violations: counts per class and the first messages.
#[derive(Default)]
pub struct Violations(Mutex<(BTreeMap<&'static str, u64>, Vec<String>)>);

/// Messages kept; the counts stay exact.
const KEPT: usize = 200;

impl Violations {
    pub fn add(&self, class: &'static str, msg: String) {
        eprintln!("nemesis: VIOLATION {class}: {msg}");
        let mut g = self.0.lock().unwrap();
        *g.0.entry(class).or_default() += 1;
        if g.1.len() < KEPT {
            g.1.push(format!("{class}: {msg}"));
        }
    }

    pub fn counts(&self) -> BTreeMap<&'static str, u64> {
        self.0.lock().unwrap().0.clone()
    }

    pub fn messages(&self) -> Vec<String> {
        self.0.lock().unwrap().1.clone()
    }

    pub fn is_empty(&self) -> bool {
        self.0.lock().unwrap().0.is_empty()
    }
}

/// Latencies in buckets of 2^(1/8) (about 9 %) from 1 µs up.
#[derive(Debug, Clone)]
pub struct Histogram {
    buckets: Vec<u64>,
    count: u64,
    max: Duration,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: vec![0; 8 * 40],
            count: 0,
            max: Duration::ZERO,
        }
    }
}

impl Histogram {
    fn bucket(d: Duration) -> usize {
        let us = d.as_micros().max(1) as f64;
        ((us.log2() * 8.0) as usize).min(8 * 40 - 1)
    }

    pub fn record(&mut self, d: Duration) {
        self.buckets[Self::bucket(d)] += 1;
        self.count += 1;
        self.max = self.max.max(d);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.count += other.count;
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn max(&self) -> Duration {
        self.max
    }

    /// The upper bound of the bucket holding quantile `q`.
    pub fn quantile(&self, q: f64) -> Duration {
        let want = (self.count as f64 * q).ceil() as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= want.max(1) {
                let us = 2f64.powf((i + 1) as f64 / 8.0);
                return Duration::from_micros(us as u64).min(self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_a_bucket() {
        let mut h = Histogram::default();
        for ms in 1..=100u64 {
            h.record(Duration::from_millis(ms));
        }
        let p99 = h.quantile(0.99);
        assert!(p99 >= Duration::from_millis(99) && p99 <= Duration::from_millis(100));
        let p50 = h.quantile(0.5).as_secs_f64();
        assert!((0.046..0.055).contains(&p50), "{p50}");
        assert_eq!(h.max(), Duration::from_millis(100));
    }

    #[test]
    fn a_window_explains_only_its_errors_mounts_and_time() {
        let w = Windows::default();
        let t0 = Instant::now();
        w.open(Window {
            fault: 1,
            kind: Kind::KillFuse,
            start: t0,
            end: None,
            mount: Some(0),
            file: None,
            errnos: &[libc::ENOTCONN],
        });
        let grace = Duration::from_secs(1);
        let during = (t0, t0 + Duration::from_millis(5));
        assert!(w.explain(0, 3, libc::ENOTCONN, during, grace).is_some());
        assert!(w.explain(1, 3, libc::ENOTCONN, during, grace).is_none());
        assert!(w.explain(0, 3, libc::EIO, during, grace).is_none());
        w.close(1);
        let later = Instant::now() + Duration::from_secs(2);
        assert!(w
            .explain(0, 3, libc::ENOTCONN, (later, later), grace)
            .is_none());
    }
}
