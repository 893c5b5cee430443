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
    /// End of the furthest read so far.
    next: u64,
    /// Size of the range warmed last (0 before the first read).
    window: u64,
    /// End of what has been warmed.
    prefetched_to: u64,
    /// When the reader passes this offset, the next (twice as large)
    /// range is warmed: the start of the range warmed last, as the
    /// kernel's async readahead marker.
    marker: u64,
    /// Bytes read directly per [`MIN_WINDOW`]-aligned region.
    heat: HashMap<u64, u64>,
}

/// Bytes read directly from a region past which it is worth warming whole:
/// a random reader that keeps coming back to a region gets it cached.
pub const HOT_BYTES: u64 = 1 << 20;
/// Regions whose direct bytes are tracked per open file.
const MAX_HEAT: usize = 1024;
/// How far from the end of the last read a read still counts as
/// sequential: the kernel sends a burst of readahead requests at once and
/// they arrive in any order.
const SLACK: u64 = 1 << 20;

impl Sequential {
    /// Records a read of `[offset, end)` of a file of `size` bytes.
    ///
    /// - Sequential reads warm ahead of the reader. Each time the reader
    ///   enters the range warmed last, a range twice as large (up to
    ///   [`MAX_WINDOW`]) is warmed after it: what is warmed grows with what
    ///   is read, so a process that reads a file's first bytes and stops
    ///   (and the kernel's readahead burst after them) warms one window,
    ///   not dozens.
    /// - The first read of a file at offset 0 that does not cover the
    ///   whole file is direct (its bytes come back after one origin round
    ///   trip instead of a whole chunk), and the first window is warmed
    ///   after it for the reads that follow. A first read covering the
    ///   whole file (a small file) fetches its chunk normally, so the file
    ///   is cached.
    /// - A seek is direct and warms nothing, so random readers do not pull
    ///   whole chunks, until the reader proves sequential again or keeps
    ///   reading one region ([`HOT_BYTES`]), which is then warmed whole.
    pub fn on_read(&mut self, offset: u64, end: u64, size: u64) -> Plan {
        let first = self.window == 0;
        if !first && offset.abs_diff(self.next) <= SLACK {
            self.next = self.next.max(end);
            if self.next < self.marker || self.prefetched_to >= size {
                return Plan::default();
            }
            self.window = (self.window * 2).clamp(MIN_WINDOW, MAX_WINDOW);
            let from = self.prefetched_to.max(self.next);
            let to = from.saturating_add(self.window).min(size);
            self.marker = from;
            self.prefetched_to = to;
            return Plan {
                warm: (to > from).then_some(from..to),
                direct: false,
            };
        }
        self.window = MIN_WINDOW / 2;
        self.next = end;
        self.prefetched_to = end;
        self.marker = end;
        if first && offset == 0 {
            if end >= size {
                return Plan::default();
            }
            let to = MIN_WINDOW.min(size);
            self.window = MIN_WINDOW;
            self.prefetched_to = to;
            self.marker = to / 2;
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

    /// Reads `[from, to)` in `step` pieces; every range warmed meanwhile.
    fn stream(s: &mut Sequential, from: u64, to: u64, step: u64, size: u64) -> Vec<Range<u64>> {
        let mut warmed = Vec::new();
        let mut at = from;
        while at < to {
            let end = (at + step).min(to);
            warmed.extend(s.on_read(at, end, size).warm);
            at = end;
        }
        warmed
    }

    #[test]
    fn what_is_warmed_grows_with_what_is_read_and_stays_ahead() {
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
        let warmed = stream(&mut s, 1 << 20, 300 << 20, 1 << 20, size);
        // Contiguous, never twice, growing up to the largest window.
        let mut end = MIN_WINDOW;
        for r in &warmed {
            assert_eq!(r.start, end);
            assert!(r.end - r.start <= MAX_WINDOW);
            end = r.end;
        }
        let last = warmed.last().unwrap();
        assert_eq!(last.end - last.start, MAX_WINDOW);
        // Always ahead of the reader, never absurdly far.
        assert!(end >= 300 << 20);
        assert!(end <= (300 << 20) + 2 * MAX_WINDOW);
    }

    #[test]
    fn a_readahead_burst_after_the_first_bytes_warms_one_window() {
        let size = 256 << 20;
        let mut s = Sequential::default();
        let first = s.on_read(0, 128 << 10, size);
        assert_eq!(first.warm, Some(0..MIN_WINDOW));
        // The kernel's readahead after a 4 KiB read: 1 MiB in 128 KiB
        // requests, arriving out of order.
        let mut more = Vec::new();
        for i in [2u64, 1, 3, 5, 4, 7, 6] {
            let p = s.on_read(i << 17, (i + 1) << 17, size);
            assert!(!p.direct, "part of the stream, not a seek");
            more.extend(p.warm);
        }
        assert!(more.is_empty(), "warmed beyond the first window: {more:?}");
    }

    #[test]
    fn a_seek_is_direct_and_a_stream_resumes_after_it() {
        let size = 1 << 30;
        let mut s = Sequential::default();
        s.on_read(0, 1 << 20, size);
        stream(&mut s, 1 << 20, 64 << 20, 1 << 20, size);
        let p = s.on_read(500 << 20, 501 << 20, size);
        assert_eq!((p.warm, p.direct), (None, true));
        let p = s.on_read(501 << 20, 502 << 20, size);
        assert!(!p.direct);
        assert_eq!(p.warm, Some((502 << 20)..(502 << 20) + MIN_WINDOW));
    }

    #[test]
    fn never_past_the_end_and_never_twice() {
        let size = (7 << 20) + 5;
        let mut s = Sequential::default();
        let mut warmed = vec![s.on_read(0, 1 << 20, size).warm.unwrap()];
        warmed.extend(stream(&mut s, 1 << 20, size, 1 << 20, size));
        let mut end = 0;
        for r in &warmed {
            assert_eq!(r.start, end, "{warmed:?}");
            end = r.end;
        }
        assert_eq!(end, size);
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
