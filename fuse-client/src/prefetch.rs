//! Sequential-read detection for prefetch, without I/O.
//!
//! Each open file keeps a window that doubles while reads stay sequential;
//! a seek stops prefetch until the reader proves sequential again. What it asks for is *warmed in
//! the cache node's tiers* (which have byte quotas), not buffered in this
//! process, so many files read at once cost this process nothing; the
//! number of prefetch bytes in flight per mount is bounded separately by
//! the caller's budget.

use std::ops::Range;

/// Files warmed ahead of a process walking a directory's files in order.
pub const SIBLINGS_AHEAD: usize = 32;

/// Directory-walk detection: a process opening a directory's files one
/// after another in listing order (a data loader over small files). From
/// the second consecutive open on, the next files are warmed in the
/// node's tiers so their origin round trips overlap instead of queueing;
/// an open out of order stops it until the walk is seen again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Siblings {
    last: Option<usize>,
    warmed_to: usize,
}

impl Siblings {
    /// Records an open of child `idx` of a directory with `count` children;
    /// returns the children to warm, if any.
    pub fn on_open(&mut self, idx: usize, count: usize) -> Option<Range<usize>> {
        let in_order = self.last.is_some_and(|l| idx == l + 1);
        self.last = Some(idx);
        if !in_order {
            self.warmed_to = idx + 1;
            return None;
        }
        let from = self.warmed_to.max(idx + 1);
        let to = (idx + 1 + SIBLINGS_AHEAD).min(count);
        if to > from {
            self.warmed_to = to;
            Some(from..to)
        } else {
            None
        }
    }
}

/// Smallest prefetch window (one default chunk).
pub const MIN_WINDOW: u64 = 4 << 20;
/// Largest prefetch window.
pub const MAX_WINDOW: u64 = 64 << 20;

/// Per-file prefetch state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sequential {
    next: u64,
    window: u64,
    prefetched_to: u64,
}

impl Sequential {
    /// Records a read of `[offset, end)` of a file of `size` bytes and returns
    /// the range to warm next, if any.
    pub fn on_read(&mut self, offset: u64, end: u64, size: u64) -> Option<Range<u64>> {
        if self.window > 0 && offset == self.next {
            self.window = (self.window * 2).clamp(MIN_WINDOW, MAX_WINDOW);
        } else {
            // A seek (or the first read): no prefetch until reads prove to
            // be sequential, so random readers do not pull whole chunks.
            self.window = MIN_WINDOW / 2;
            self.prefetched_to = end;
            self.next = end;
            return None;
        }
        self.next = end;
        let target = end.saturating_add(self.window).min(size);
        let from = self.prefetched_to.max(end);
        if target > from {
            self.prefetched_to = target;
            Some(from..target)
        } else {
            None
        }
    }

    /// The current window.
    #[cfg(test)]
    pub fn window(&self) -> u64 {
        self.window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sibling_walks_warm_ahead_once_and_stop_out_of_order() {
        let mut s = Siblings::default();
        assert_eq!(s.on_open(0, 100), None, "one open is no walk");
        assert_eq!(s.on_open(1, 100), Some(2..2 + SIBLINGS_AHEAD));
        // Each next open extends the window by one file, never twice.
        assert_eq!(
            s.on_open(2, 100),
            Some(2 + SIBLINGS_AHEAD..3 + SIBLINGS_AHEAD)
        );
        // Out of order: nothing until the walk resumes from there.
        assert_eq!(s.on_open(50, 100), None);
        assert_eq!(s.on_open(51, 100), Some(52..84));
        // The end of the directory bounds it.
        let mut t = Siblings::default();
        t.on_open(7, 10);
        assert_eq!(t.on_open(8, 10), Some(9..10));
        assert_eq!(t.on_open(9, 10), None);
    }

    #[test]
    fn window_grows_while_sequential_and_resets_on_seek() {
        let size = 1 << 30;
        let mut s = Sequential::default();
        assert_eq!(
            s.on_read(0, 1 << 20, size),
            None,
            "no prefetch before a second sequential read"
        );
        let r = s.on_read(1 << 20, 2 << 20, size).unwrap();
        assert_eq!(r, (2 << 20)..((2 << 20) + MIN_WINDOW));
        let mut last = s.window();
        for i in 2..10u64 {
            s.on_read(i << 20, (i + 1) << 20, size);
            assert!(s.window() >= last);
            last = s.window();
        }
        assert_eq!(s.window(), MAX_WINDOW);
        // Seek far away: nothing until the reader continues sequentially.
        assert_eq!(s.on_read(500 << 20, 501 << 20, size), None);
        let r = s.on_read(501 << 20, 502 << 20, size).unwrap();
        assert_eq!(s.window(), MIN_WINDOW);
        assert_eq!(r.start, 502 << 20);
    }

    #[test]
    fn never_past_the_end_and_never_twice() {
        let mut s = Sequential::default();
        let size = 7 << 20;
        assert_eq!(s.on_read(0, 1 << 20, size), None);
        let r = s.on_read(1 << 20, 2 << 20, size).unwrap();
        assert_eq!(r.end, 6 << 20);
        let r = s.on_read(2 << 20, 3 << 20, size).unwrap();
        assert_eq!(r, (6 << 20)..size);
        assert_eq!(s.on_read(3 << 20, 4 << 20, size), None);
    }
}
