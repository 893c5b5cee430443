//! Reads that just timed out, so the kernel's retries of them fail at once.
//!
//! When a read request fails, the kernel does not give up: the reader
//! that wanted the page reads it again synchronously, and every other
//! reader waiting on the same page (it sleeps on the page lock while the
//! first one reads) then reads it once more itself. Each of those requests
//! waited the whole `--retry-secs` bound, so one `read(2)` took the bound
//! once for the readahead request, once for its own retry, and once more
//! for each reader ahead of it on the page: 15 s with `--retry-secs 5` and
//! two readers (the nemesis found it). A request that overlaps a range
//! whose request timed out within [`RETRY_WINDOW`] is such a retry; it
//! fails at once with the same error, so a `read(2)` waits about one bound.
//! A read of the same bytes after the window is new work and waits again.
//!
//! No I/O and no clock of its own: time is an argument.

use std::collections::HashMap;
use std::ops::Range;
use std::time::{Duration, Instant};

/// How long after a timeout overlapping requests are taken as its retries.
/// The kernel retries within microseconds of the failure (the timeout is
/// recorded before the failure is answered, so the window opens first);
/// 100 ms is generous for a loaded host, and short enough that new work
/// rarely falls in it (a reader of those bytes 200 ms after a timeout got
/// EIO with a one-second window, although the node had recovered).
pub const RETRY_WINDOW: Duration = Duration::from_millis(100);

/// Timed-out ranges remembered (the oldest are dropped past it).
const MAX_REMEMBERED: usize = 256;

/// Recently timed-out read ranges, by path.
#[derive(Debug, Default)]
pub struct Stalls {
    ranges: HashMap<Box<str>, Vec<(Range<u64>, Instant)>>,
}

impl Stalls {
    /// A read of `range` of `path` timed out at `now`.
    pub fn timed_out(&mut self, path: &str, range: Range<u64>, now: Instant) {
        if self.forget_before(now) >= MAX_REMEMBERED {
            self.ranges.clear();
        }
        self.ranges
            .entry(path.into())
            .or_default()
            .push((range, now));
    }

    /// Whether a read of `range` of `path` at `now` retries a timeout.
    pub fn is_retry(&self, path: &str, range: &Range<u64>, now: Instant) -> bool {
        self.ranges.get(path).is_some_and(|v| {
            v.iter().any(|(r, at)| {
                r.start < range.end
                    && range.start < r.end
                    && now.saturating_duration_since(*at) < RETRY_WINDOW
            })
        })
    }

    /// Drops timeouts past the window; how many are left.
    fn forget_before(&mut self, now: Instant) -> usize {
        let mut left = 0;
        self.ranges.retain(|_, v| {
            v.retain(|(_, at)| now.saturating_duration_since(*at) < RETRY_WINDOW);
            left += v.len();
            !v.is_empty()
        });
        left
    }

    #[cfg(test)]
    fn count(&self) -> usize {
        self.ranges.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_reads_right_after_a_timeout_are_retries() {
        let t0 = Instant::now();
        let mut s = Stalls::default();
        // The readahead request for the first 128 KiB timed out.
        s.timed_out("models/a.bin", 0..131_072, t0);
        let soon = t0 + Duration::from_millis(1);
        // The reader's synchronous retry of its page, and a second reader's.
        assert!(s.is_retry("models/a.bin", &(0..4096), soon));
        assert!(s.is_retry("models/a.bin", &(126_976..131_072), soon));
        // Other bytes, another file: new work.
        assert!(!s.is_retry("models/a.bin", &(131_072..135_168), soon));
        assert!(!s.is_retry("models/b.bin", &(0..4096), soon));
        // The same bytes once the window has passed: new work too.
        assert!(!s.is_retry("models/a.bin", &(0..4096), t0 + RETRY_WINDOW));
    }

    #[test]
    fn memory_stays_bounded() {
        let t0 = Instant::now();
        let mut s = Stalls::default();
        for i in 0..10 * MAX_REMEMBERED as u64 {
            s.timed_out(&format!("f{i}"), 0..1, t0);
        }
        assert!(s.count() <= MAX_REMEMBERED);
        assert!(s.ranges.values().map(Vec::len).sum::<usize>() <= MAX_REMEMBERED);
        // Old entries go as new ones come.
        s.timed_out("late", 0..1, t0 + RETRY_WINDOW);
        assert_eq!(s.count(), 1);
    }
}
