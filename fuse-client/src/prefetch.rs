//! Sequential-read detection for prefetch, without I/O.
//!
//! Each open file keeps a window that doubles while reads stay sequential;
//! a seek stops prefetch until the reader proves sequential again. What it asks for is *warmed in
//! the cache node's tiers* (which have byte quotas), not buffered in this
//! process, so many files read at once cost this process nothing; the
//! number of prefetch bytes in flight per mount is bounded separately by
//! the caller's budget.

use std::collections::HashMap;
use std::ops::Range;

/// Files warmed ahead of a process walking a directory's files in order.
pub const SIBLINGS_AHEAD: usize = 32;

/// Directory-walk detection: a process opening a directory's files one
/// after another in listing order (a data loader over small files). From
/// the second consecutive open on, the next `AHEAD` files are warmed in the
/// node's tiers so their origin round trips overlap instead of queueing;
/// an open out of order stops it until the walk is seen again. The same
/// over a directory's subdirectories (a tree walk: `find`, `du`) fetches
/// the next subdirectories' listings while the walker reads this one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Siblings<const AHEAD: usize = SIBLINGS_AHEAD> {
    last: Option<usize>,
    warmed_to: usize,
}

impl<const AHEAD: usize> Siblings<AHEAD> {
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
        let to = (idx + 1 + AHEAD).min(count);
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

/// What to do for one read of an open file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Range to warm in the node's tiers, in the background.
    pub warm: Option<Range<u64>>,
    /// Ask the node for exactly these bytes (not whole chunks) when they
    /// are not resident: a seek, or the first read of a stream.
    pub direct: bool,
}

/// Per-file prefetch state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sequential {
    next: u64,
    window: u64,
    prefetched_to: u64,
    /// Bytes read directly per [`MIN_WINDOW`]-aligned region.
    heat: HashMap<u64, u64>,
}

/// Bytes read directly from a region past which it is worth warming whole:
/// a random reader that keeps coming back to a region gets it cached.
pub const HOT_BYTES: u64 = 1 << 20;
/// Regions whose direct bytes are tracked per open file.
const MAX_HEAT: usize = 1024;

impl Sequential {
    /// Records a read of `[offset, end)` of a file of `size` bytes.
    ///
    /// - Sequential reads grow the window and warm ahead of the reader.
    /// - The first read of a file at offset 0 that does not cover the
    ///   whole file is direct (its bytes come back after one origin round
    ///   trip instead of a whole chunk), and the first window is warmed
    ///   meanwhile for the reads that follow. A first read covering the
    ///   whole file (a small file) fetches its chunk normally, so the file
    ///   is cached.
    /// - A seek is direct and warms nothing, so random readers do not pull
    ///   whole chunks, until the reader proves sequential again or keeps
    ///   reading one region ([`HOT_BYTES`]), which is then warmed whole.
    pub fn on_read(&mut self, offset: u64, end: u64, size: u64) -> Plan {
        let first = self.window == 0;
        if !first && offset == self.next {
            self.window = (self.window * 2).clamp(MIN_WINDOW, MAX_WINDOW);
            self.next = end;
            let target = end.saturating_add(self.window).min(size);
            let from = self.prefetched_to.max(end);
            if target > from {
                self.prefetched_to = target;
                return Plan {
                    warm: Some(from..target),
                    direct: false,
                };
            }
            return Plan::default();
        }
        self.window = MIN_WINDOW / 2;
        self.next = end;
        self.prefetched_to = end;
        if first && offset == 0 {
            if end >= size {
                return Plan::default();
            }
            let to = MIN_WINDOW.min(size);
            self.prefetched_to = to;
            return Plan {
                warm: Some(0..to),
                direct: true,
            };
        }
        Plan {
            warm: self.heat(offset, end, size),
            direct: true,
        }
    }

    /// Counts a direct read against its region; the region's range once
    /// it is hot.
    fn heat(&mut self, offset: u64, end: u64, size: u64) -> Option<Range<u64>> {
        let region = offset / MIN_WINDOW;
        if self.heat.len() >= MAX_HEAT && !self.heat.contains_key(&region) {
            self.heat.clear();
        }
        let bytes = self.heat.entry(region).or_default();
        if *bytes > HOT_BYTES {
            return None;
        }
        *bytes += end - offset;
        (*bytes > HOT_BYTES).then_some(region * MIN_WINDOW..((region + 1) * MIN_WINDOW).min(size))
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
        let mut s: Siblings = Siblings::default();
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
        let mut t: Siblings = Siblings::default();
        t.on_open(7, 10);
        assert_eq!(t.on_open(8, 10), Some(9..10));
        assert_eq!(t.on_open(9, 10), None);
        // Another distance ahead.
        let mut d = Siblings::<2>::default();
        assert_eq!(d.on_open(0, 10), None);
        assert_eq!(d.on_open(1, 10), Some(2..4));
        assert_eq!(d.on_open(2, 10), Some(4..5));
    }

    #[test]
    fn window_grows_while_sequential_and_resets_on_seek() {
        let size = 1 << 30;
        let mut s = Sequential::default();
        assert_eq!(
            s.on_read(0, 1 << 20, size),
            Plan {
                warm: Some(0..MIN_WINDOW),
                direct: true
            },
            "a stream's first read is direct and warms the first window"
        );
        let r = s.on_read(1 << 20, 2 << 20, size).warm.unwrap();
        assert_eq!(r, MIN_WINDOW..((2 << 20) + MIN_WINDOW));
        let mut last = s.window();
        for i in 2..10u64 {
            s.on_read(i << 20, (i + 1) << 20, size);
            assert!(s.window() >= last);
            last = s.window();
        }
        assert_eq!(s.window(), MAX_WINDOW);
        // Seek far away: direct, nothing warmed until the reader continues
        // sequentially.
        let p = s.on_read(500 << 20, 501 << 20, size);
        assert_eq!((p.warm, p.direct), (None, true));
        let p = s.on_read(501 << 20, 502 << 20, size);
        assert!(!p.direct);
        let r = p.warm.unwrap();
        assert_eq!(s.window(), MIN_WINDOW);
        assert_eq!(r.start, 502 << 20);
    }

    #[test]
    fn never_past_the_end_and_never_twice() {
        let mut s = Sequential::default();
        let size = 7 << 20;
        assert_eq!(s.on_read(0, 1 << 20, size).warm, Some(0..MIN_WINDOW));
        let r = s.on_read(1 << 20, 2 << 20, size).warm.unwrap();
        assert_eq!(r.end, 6 << 20);
        let r = s.on_read(2 << 20, 3 << 20, size).warm.unwrap();
        assert_eq!(r, (6 << 20)..size);
        assert_eq!(s.on_read(3 << 20, 4 << 20, size), Plan::default());
    }

    #[test]
    fn a_small_file_read_whole_is_fetched_normally_so_it_is_cached() {
        let mut s = Sequential::default();
        assert_eq!(s.on_read(0, 40_000, 40_000), Plan::default());
    }

    #[test]
    fn random_reads_are_direct_until_a_region_is_hot() {
        let size = 1 << 30;
        let mut s = Sequential::default();
        // The first read is not at 0: a seek (a footer read, a random reader).
        let p = s.on_read(100 << 20, (100 << 20) + 4096, size);
        assert_eq!((p.warm, p.direct), (None, true));
        // Reads hopping around one 4 MiB region: warmed once it is hot.
        let region = (100 << 20) / MIN_WINDOW * MIN_WINDOW;
        let mut warmed = Vec::new();
        for i in 1..400u64 {
            let off = region + (i * 7919 * 4096) % MIN_WINDOW;
            let p = s.on_read(off, off + 4096, size);
            assert!(p.direct);
            warmed.extend(p.warm);
        }
        assert_eq!(
            warmed,
            vec![region..region + MIN_WINDOW],
            "warmed exactly once"
        );
        // Scattered reads over many regions stay direct and warm nothing.
        let mut t = Sequential::default();
        for i in 0..200u64 {
            let p = t.on_read(
                i * 5 * MIN_WINDOW + 12_288,
                i * 5 * MIN_WINDOW + 16_384,
                size,
            );
            assert_eq!((p.warm, p.direct), (None, true));
        }
    }
}
