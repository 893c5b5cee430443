//! Measured bandwidth of a transfer path (the origin, or peers), for
//! locality hints: the scheduler divides the bytes a host still needs by
//! these figures to estimate its startup time.
//!
//! The figure is bytes moved divided by the time at least one transfer was
//! in flight ("busy time"), over a recent window. Dividing by busy time
//! rather than wall time keeps an idle node's figure meaningful (it says
//! how fast the path ran when it was used), and counting overlapping
//! transfers once gives the path's aggregate rate, not a per-request one.
//! Time is an argument everywhere, so the arithmetic is tested without
//! clocks.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How far back a figure looks.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Less busy time than this in the window keeps the previous figure.
const MIN_BUSY: Duration = Duration::from_millis(50);

#[derive(Debug, Default)]
struct State {
    in_flight: u32,
    busy_since: Option<Instant>,
    busy: Duration,
    bytes: u64,
    /// (when, cumulative bytes, cumulative busy) samples, oldest first.
    samples: VecDeque<(Instant, u64, Duration)>,
    last_bps: u64,
    /// Wall-clock ms of the last completed transfer.
    measured_at_ms: i64,
}

impl State {
    fn busy_at(&self, now: Instant) -> Duration {
        self.busy
            + self
                .busy_since
                .map_or(Duration::ZERO, |s| now.saturating_duration_since(s))
    }
}

/// One path's meter. Cheap to share; every call takes a short lock.
#[derive(Debug, Default)]
pub struct Meter {
    state: Mutex<State>,
}

impl Meter {
    /// A transfer starts.
    pub fn begin(&self, now: Instant) {
        let mut s = self.state.lock().expect("meter lock");
        if s.samples.is_empty() {
            // The baseline of the first window.
            let (bytes, busy) = (s.bytes, s.busy);
            s.samples.push_back((now, bytes, busy));
        }
        if s.in_flight == 0 {
            s.busy_since = Some(now);
        }
        s.in_flight += 1;
    }

    /// A transfer started with [`Meter::begin`] ends, having moved `bytes`.
    pub fn end(&self, now: Instant, bytes: u64, wall_ms: i64) {
        let mut s = self.state.lock().expect("meter lock");
        s.in_flight = s.in_flight.saturating_sub(1);
        if s.in_flight == 0 {
            if let Some(since) = s.busy_since.take() {
                s.busy += now.saturating_duration_since(since);
            }
        }
        s.bytes += bytes;
        if bytes > 0 {
            s.measured_at_ms = wall_ms;
        }
    }

    /// (bytes/s over the recent window, wall-clock ms of the last transfer).
    pub fn sample(&self, now: Instant) -> (u64, i64) {
        let mut s = self.state.lock().expect("meter lock");
        let busy = s.busy_at(now);
        let bytes = s.bytes;
        s.samples.push_back((now, bytes, busy));
        // Keep one sample at or before the window's start as its baseline.
        while s
            .samples
            .get(1)
            .is_some_and(|(t, _, _)| now.saturating_duration_since(*t) >= WINDOW)
        {
            s.samples.pop_front();
        }
        let (_, b0, busy0) = *s.samples.front().expect("just pushed");
        let (db, dt) = (bytes - b0, busy - busy0);
        if dt >= MIN_BUSY && db > 0 {
            s.last_bps = (db as f64 / dt.as_secs_f64()) as u64;
        }
        (s.last_bps, s.measured_at_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_transfers_count_busy_time_once() {
        let m = Meter::default();
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        // Two 100 MB transfers overlapping over [0, 1 s]: 200 MB/s.
        m.begin(at(0));
        m.begin(at(0));
        m.end(at(1000), 100_000_000, 7);
        m.end(at(1000), 100_000_000, 8);
        // Idle for 10 s: the figure stays what the path did while busy.
        assert_eq!(m.sample(at(11_000)), (200_000_000, 8));
        // A slower transfer later moves the windowed figure down.
        m.begin(at(12_000));
        m.end(at(14_000), 100_000_000, 9);
        let (bps, at_ms) = m.sample(at(14_000));
        assert_eq!(at_ms, 9);
        assert_eq!(bps, 100_000_000); // 300 MB over 3 s busy
                                      // Past the window only the recent transfer counts.
        m.begin(at(80_000));
        m.end(at(81_000), 10_000_000, 10);
        m.sample(at(81_000));
        let (bps, _) = m.sample(at(150_000));
        assert_eq!(bps, 10_000_000);
    }
}
