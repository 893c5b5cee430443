//! What is resident where: the store's in-memory state, without any I/O.
//!
//! This is the policy half of the chunk store, kept free of files and
//! sockets so it can be checked against a reference model. It tracks every
//! resident chunk's tier, size, hash, last access and pin, keeps one LRU
//! order per tier, accounts bytes per tier (including space reserved for
//! writes in flight), and chooses eviction victims.
//!
//! It also keeps the *locality counters*: for every registered group (one
//! per dataset version) the bytes of its file versions resident in each
//! tier, updated on every chunk arrival, move and removal, so `list`,
//! `locality` and gossip read them in O(1) per dataset version instead of
//! scanning manifests. And it keeps *prewarm pins*: file versions pinned by
//! a job are never evicted, and their bytes are counted per tier so a
//! prewarm's quota check can subtract what can never be freed.
//!
//! Policy: plain LRU per tier, with demotion memory → disk before a chunk is
//! dropped. LRU was chosen over S3-FIFO for now because Shoal's dominant
//! pattern is whole-file sequential scans driven by prewarm jobs, where the
//! two behave the same, and because pins (not frequency) protect what a
//! deployment must keep; `docs/DESIGN.md` discusses it.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::index::{ChunkKey, FileVersionId, ResidentRecord};

/// The two tiers, in promotion order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TierKind {
    Memory = 0,
    Disk = 1,
}

impl TierKind {
    pub const ALL: [TierKind; 2] = [TierKind::Memory, TierKind::Disk];

    pub fn name(self) -> &'static str {
        match self {
            TierKind::Memory => "memory",
            TierKind::Disk => "disk",
        }
    }

    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(TierKind::Memory),
            1 => Some(TierKind::Disk),
            _ => None,
        }
    }
}

/// One resident chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub tier: TierKind,
    pub len: u32,
    pub hash: [u8; 32],
    pub tick: u64,
    pub pinned: bool,
    pub memory_only: bool,
    /// Readers currently copying bytes out of the backing file.
    pub readers: u32,
    /// Chosen for eviction: no new reader may start on it.
    pub leaving: bool,
    /// Reads since it arrived in its tier (not persisted): what makes a
    /// disk chunk hot enough to promote.
    pub hits: u8,
    /// Byte offset in the backing file.
    pub offset: u64,
}

impl Entry {
    pub fn record(&self) -> ResidentRecord {
        ResidentRecord {
            tier: self.tier as u8,
            len: self.len,
            hash: self.hash,
            last_access: self.tick,
            pinned: self.pinned,
            memory_only: self.memory_only,
            offset: self.offset,
        }
    }
}

/// Per file version: bytes and chunk count in each tier.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FvUsage {
    pub bytes: [u64; 2],
    pub chunks: [u32; 2],
    /// Bytes of chunks stored pinned (their dataset's spec pins them).
    pub pinned: [u64; 2],
}

/// A locality group: one dataset version.
pub type GroupKey = (String, u64);

/// Byte budget of one tier.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    pub quota: u64,
    /// Eviction starts when a write would take usage above `high * quota`.
    pub high: f64,
    /// Eviction frees down to `low * quota`.
    pub low: f64,
}

impl Budget {
    pub fn high_bytes(&self) -> u64 {
        (self.quota as f64 * self.high) as u64
    }

    pub fn low_bytes(&self) -> u64 {
        (self.quota as f64 * self.low) as u64
    }
}

/// Outcome of asking for room in a tier.
#[derive(Debug, PartialEq, Eq)]
pub enum Room {
    /// Space is reserved; write, then `commit` or `unreserve`.
    Reserved,
    /// Evict these (already marked leaving), then ask again.
    Evict(Vec<ChunkKey>),
    /// Nothing evictable frees enough.
    Full,
}

/// The in-memory residency state.
#[derive(Debug)]
pub struct Residency {
    budgets: [Option<Budget>; 2],
    chunks: HashMap<ChunkKey, Entry>,
    lru: [BTreeMap<u64, ChunkKey>; 2],
    used: [u64; 2],
    reserved: [u64; 2],
    per_fv: HashMap<FileVersionId, FvUsage>,
    tick: u64,
    dirty: HashSet<ChunkKey>,
    /// Open handles per file version: their chunks are never evicted.
    held: HashMap<FileVersionId, u32>,
    /// Locality groups: resident bytes per tier of each group.
    groups: HashMap<GroupKey, [u64; 2]>,
    /// The groups each file version belongs to.
    fv_groups: HashMap<FileVersionId, Vec<GroupKey>>,
    /// Prewarm pins per file version (how many datasets pin it).
    pins: HashMap<FileVersionId, u32>,
    /// Bytes per tier that can never be evicted (spec pins and prewarm pins).
    pinned_bytes: [u64; 2],
}

impl Residency {
    pub fn new(memory: Option<Budget>, disk: Option<Budget>) -> Self {
        Self {
            budgets: [memory, disk],
            chunks: HashMap::new(),
            lru: [BTreeMap::new(), BTreeMap::new()],
            used: [0; 2],
            reserved: [0; 2],
            per_fv: HashMap::new(),
            tick: 0,
            dirty: HashSet::new(),
            held: HashMap::new(),
            groups: HashMap::new(),
            fv_groups: HashMap::new(),
            pins: HashMap::new(),
            pinned_bytes: [0; 2],
        }
    }

    /// Registers a locality group over `fvs` (its counters start from what
    /// is resident now). Registering an existing group is a no-op.
    pub fn add_group(&mut self, group: GroupKey, fvs: impl IntoIterator<Item = FileVersionId>) {
        if self.groups.contains_key(&group) {
            return;
        }
        let mut bytes = [0u64; 2];
        for fv in fvs {
            let list = self.fv_groups.entry(fv).or_default();
            if list.contains(&group) {
                continue;
            }
            list.push(group.clone());
            let u = self.fv_usage(&fv);
            bytes[0] += u.bytes[0];
            bytes[1] += u.bytes[1];
        }
        self.groups.insert(group, bytes);
    }

    /// Forgets a locality group.
    pub fn remove_group(&mut self, group: &GroupKey) {
        if self.groups.remove(group).is_none() {
            return;
        }
        self.fv_groups.retain(|_, list| {
            list.retain(|g| g != group);
            !list.is_empty()
        });
    }

    /// Resident bytes per tier of a group, if registered.
    pub fn group_bytes(&self, group: &GroupKey) -> Option<[u64; 2]> {
        self.groups.get(group).copied()
    }

    /// Every registered group with its resident bytes per tier.
    pub fn groups(&self) -> Vec<(GroupKey, [u64; 2])> {
        let mut v: Vec<_> = self.groups.iter().map(|(k, b)| (k.clone(), *b)).collect();
        v.sort();
        v
    }

    fn count(&mut self, fv: &FileVersionId, tier: usize, len: u64, add: bool) {
        if let Some(list) = self.fv_groups.get(fv) {
            for g in list {
                let b = self
                    .groups
                    .get_mut(g)
                    .expect("grouped file versions have groups");
                if add {
                    b[tier] += len;
                } else {
                    b[tier] -= len;
                }
            }
        }
    }

    /// Pins a file version against eviction (a prewarm `--pin`); counted.
    pub fn pin(&mut self, fv: FileVersionId) {
        let n = self.pins.entry(fv).or_default();
        *n += 1;
        if *n == 1 {
            let u = self.fv_usage(&fv);
            for t in 0..2 {
                self.pinned_bytes[t] += u.bytes[t] - u.pinned[t];
            }
        }
    }

    /// Drops one [`Residency::pin`] of a file version.
    pub fn unpin(&mut self, fv: &FileVersionId) {
        let Some(n) = self.pins.get_mut(fv) else {
            return;
        };
        *n -= 1;
        if *n == 0 {
            self.pins.remove(fv);
            let u = self.fv_usage(fv);
            for t in 0..2 {
                self.pinned_bytes[t] -= u.bytes[t] - u.pinned[t];
            }
        }
    }

    /// Bytes in `tier` that eviction can never free.
    pub fn pinned(&self, tier: TierKind) -> u64 {
        self.pinned_bytes[tier as usize]
    }

    /// Pins every chunk of `fv` (present or future) until `unhold`.
    pub fn hold(&mut self, fv: FileVersionId) {
        *self.held.entry(fv).or_default() += 1;
    }

    pub fn unhold(&mut self, fv: &FileVersionId) {
        if let Some(n) = self.held.get_mut(fv) {
            *n -= 1;
            if *n == 0 {
                self.held.remove(fv);
            }
        }
    }

    /// Nobody reads it, nothing else claimed it, and no open file holds
    /// it: it may leave its tier (to move; to go, it must not be pinned).
    fn movable(&self, key: &ChunkKey, e: &Entry) -> bool {
        e.readers == 0 && !e.leaving && !self.held.contains_key(&key.fv)
    }

    fn evictable(&self, key: &ChunkKey, e: &Entry) -> bool {
        self.movable(key, e) && !self.pins.contains_key(&key.fv)
    }

    pub fn budget(&self, tier: TierKind) -> Option<Budget> {
        self.budgets[tier as usize]
    }

    /// Bytes resident in `tier` (reservations excluded).
    pub fn used(&self, tier: TierKind) -> u64 {
        self.used[tier as usize]
    }

    pub fn get(&self, key: &ChunkKey) -> Option<&Entry> {
        self.chunks.get(key)
    }

    pub fn fv_usage(&self, fv: &FileVersionId) -> FvUsage {
        self.per_fv.get(fv).copied().unwrap_or_default()
    }

    /// Keys of every resident chunk of `fv`.
    pub fn chunks_of(&self, fv: &FileVersionId) -> Vec<ChunkKey> {
        let mut v: Vec<_> = self
            .chunks
            .keys()
            .filter(|k| k.fv == *fv)
            .copied()
            .collect();
        v.sort();
        v
    }

    /// Every file version with resident chunks.
    pub fn file_versions(&self) -> Vec<FileVersionId> {
        self.per_fv.keys().copied().collect()
    }

    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    /// Adds a chunk recovered from the index (keeps its persisted tick).
    pub fn restore(&mut self, key: ChunkKey, rec: &ResidentRecord) {
        let Some(tier) = TierKind::from_u8(rec.tier) else {
            return;
        };
        self.tick = self.tick.max(rec.last_access);
        self.insert_entry(
            key,
            Entry {
                tier,
                len: rec.len,
                hash: rec.hash,
                tick: rec.last_access,
                pinned: rec.pinned,
                memory_only: rec.memory_only,
                readers: 0,
                leaving: false,
                hits: 0,
                offset: rec.offset,
            },
        );
    }

    /// Whether `len` more bytes fit in `tier` below its high watermark
    /// without evicting anything.
    pub fn fits(&self, tier: TierKind, len: u64) -> bool {
        self.budget(tier).is_some_and(|b| {
            let t = tier as usize;
            self.used[t] + self.reserved[t] + len <= b.high_bytes()
        })
    }

    fn insert_entry(&mut self, key: ChunkKey, e: Entry) {
        if let Some(old) = self.chunks.remove(&key) {
            self.unlink(key, &old);
        }
        let t = e.tier as usize;
        let len = u64::from(e.len);
        self.used[t] += len;
        let u = self.per_fv.entry(key.fv).or_default();
        u.bytes[t] += len;
        u.chunks[t] += 1;
        if e.pinned {
            u.pinned[t] += len;
        }
        if e.pinned || self.pins.contains_key(&key.fv) {
            self.pinned_bytes[t] += len;
        }
        self.count(&key.fv, t, len, true);
        if !e.pinned {
            self.lru[t].insert(e.tick, key);
        }
        self.chunks.insert(key, e);
    }

    fn unlink(&mut self, key: ChunkKey, e: &Entry) {
        let t = e.tier as usize;
        let len = u64::from(e.len);
        self.used[t] -= len;
        self.lru[t].remove(&e.tick);
        if let Some(u) = self.per_fv.get_mut(&key.fv) {
            u.bytes[t] -= len;
            u.chunks[t] -= 1;
            if e.pinned {
                u.pinned[t] -= len;
            }
            if u.chunks == [0, 0] {
                self.per_fv.remove(&key.fv);
            }
        }
        if e.pinned || self.pins.contains_key(&key.fv) {
            self.pinned_bytes[t] -= len;
        }
        self.count(&key.fv, t, len, false);
        self.dirty.remove(&key);
    }

    /// Asks for `len` bytes in `tier`. Evictions bring usage down to the low
    /// watermark; pinned, read and leaving chunks are never chosen.
    pub fn reserve(&mut self, tier: TierKind, len: u64) -> Room {
        let Some(b) = self.budget(tier) else {
            return Room::Full;
        };
        let t = tier as usize;
        let after = self.used[t] + self.reserved[t] + len;
        if after <= b.high_bytes().max(len.min(b.quota)) && after <= b.quota {
            self.reserved[t] += len;
            return Room::Reserved;
        }
        let target = b.low_bytes().min(b.quota.saturating_sub(len));
        let mut excess = after.saturating_sub(len).saturating_sub(target);
        let mut victims = Vec::new();
        for (_, key) in self.lru[t].iter() {
            if excess == 0 {
                break;
            }
            if self.evictable(key, &self.chunks[key]) {
                let e = &self.chunks[key];
                excess = excess.saturating_sub(u64::from(e.len));
                victims.push(*key);
            }
        }
        if victims.is_empty() {
            if after <= b.quota {
                self.reserved[t] += len;
                return Room::Reserved;
            }
            return Room::Full;
        }
        for k in &victims {
            self.chunks.get_mut(k).expect("victim is resident").leaving = true;
        }
        Room::Evict(victims)
    }

    /// Releases a reservation that was not used.
    pub fn unreserve(&mut self, tier: TierKind, len: u64) {
        self.reserved[tier as usize] -= len;
    }

    /// Turns a reservation into a resident chunk.
    pub fn commit(&mut self, tier: TierKind, key: ChunkKey, mut e: Entry) -> Entry {
        self.reserved[tier as usize] -= u64::from(e.len);
        e.tier = tier;
        e.tick = self.next_tick();
        e.readers = 0;
        e.leaving = false;
        e.hits = 0;
        self.insert_entry(key, e);
        self.dirty.insert(key);
        e
    }

    /// Starts a read: the chunk cannot be evicted until `release`.
    pub fn acquire(&mut self, key: &ChunkKey) -> Option<Entry> {
        let tick = self.next_tick();
        let e = self.chunks.get_mut(key)?;
        if e.leaving {
            return None;
        }
        e.readers += 1;
        e.hits = e.hits.saturating_add(1);
        let t = e.tier as usize;
        if !e.pinned {
            self.lru[t].remove(&e.tick);
            self.lru[t].insert(tick, *key);
        }
        e.tick = tick;
        self.dirty.insert(*key);
        Some(*e)
    }

    /// Starts a read that is not an access (verification): like
    /// [`Residency::acquire`] without touching recency or hotness.
    pub fn acquire_quiet(&mut self, key: &ChunkKey) -> Option<Entry> {
        let e = self.chunks.get_mut(key)?;
        if e.leaving {
            return None;
        }
        e.readers += 1;
        Some(*e)
    }

    /// Marks a chunk leaving whatever pins and holds it has (its bytes are
    /// known bad): no new reader starts on it. `None` if it is gone, else
    /// whether no reader is copying it any more (then it can be dropped).
    pub fn condemn(&mut self, key: &ChunkKey) -> Option<bool> {
        let e = self.chunks.get_mut(key)?;
        e.leaving = true;
        Some(e.readers == 0)
    }

    /// Ends a read; true when that leaves a chunk marked leaving without
    /// readers (what dropping a condemned chunk waits for).
    pub fn release(&mut self, key: &ChunkKey) -> bool {
        self.chunks.get_mut(key).is_some_and(|e| {
            e.readers -= 1;
            e.leaving && e.readers == 0
        })
    }

    /// Cancels an eviction that did not happen.
    pub fn stay(&mut self, key: &ChunkKey) {
        if let Some(e) = self.chunks.get_mut(key) {
            e.leaving = false;
        }
    }

    /// Removes a chunk (dropped from its tier).
    pub fn remove(&mut self, key: &ChunkKey) -> Option<Entry> {
        let e = self.chunks.remove(key)?;
        self.unlink(*key, &e);
        Some(e)
    }

    /// Marks a chunk leaving outright (for purges); false if it is being read.
    pub fn claim(&mut self, key: &ChunkKey) -> bool {
        let ok = self.chunks.get(key).is_some_and(|e| self.evictable(key, e));
        self.mark_leaving(key, ok)
    }

    fn mark_leaving(&mut self, key: &ChunkKey, ok: bool) -> bool {
        if ok {
            self.chunks.get_mut(key).expect("checked").leaving = true;
        }
        ok
    }

    /// Marks a chunk leaving to move it to another tier; unlike
    /// [`Residency::claim`] a pin does not prevent a move (pinned bytes
    /// stay resident), but readers and open handles do (they may be reading
    /// the old tier's file directly).
    pub fn claim_move(&mut self, key: &ChunkKey) -> bool {
        let ok = self.chunks.get(key).is_some_and(|e| self.movable(key, e));
        self.mark_leaving(key, ok)
    }

    /// Chunks whose access clock changed since the last call.
    pub fn take_dirty(&mut self) -> Vec<(ChunkKey, Entry)> {
        let keys: Vec<_> = self.dirty.drain().collect();
        keys.into_iter()
            .filter_map(|k| self.chunks.get(&k).map(|e| (k, *e)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn key(i: u32) -> ChunkKey {
        ChunkKey {
            fv: FileVersionId([(i % 3) as u8; 16]),
            idx: i,
        }
    }

    fn entry(len: u32, pinned: bool) -> Entry {
        Entry {
            tier: TierKind::Memory,
            len,
            hash: [0; 32],
            tick: 0,
            pinned,
            memory_only: false,
            readers: 0,
            leaving: false,
            hits: 0,
            offset: 0,
        }
    }

    const BUDGET: Budget = Budget {
        quota: 1000,
        high: 0.9,
        low: 0.5,
    };

    /// Inserts like the store does: reserve, evicting (dropping) victims as asked.
    fn put(r: &mut Residency, k: ChunkKey, len: u32, pinned: bool) -> (Vec<ChunkKey>, bool) {
        let mut evicted = Vec::new();
        loop {
            match r.reserve(TierKind::Memory, u64::from(len)) {
                Room::Reserved => {
                    r.commit(TierKind::Memory, k, entry(len, pinned));
                    return (evicted, true);
                }
                Room::Evict(v) => {
                    for victim in v {
                        r.remove(&victim);
                        evicted.push(victim);
                    }
                }
                Room::Full => return (evicted, false),
            }
        }
    }

    #[test]
    fn evicts_least_recently_used_down_to_low_watermark() {
        let mut r = Residency::new(Some(BUDGET), None);
        for i in 0..9 {
            assert!(put(&mut r, key(i), 100, false).1);
        }
        assert_eq!(r.used(TierKind::Memory), 900);
        // Touch chunk 0 so chunk 1 becomes the oldest.
        let _ = r.acquire(&key(0));
        r.release(&key(0));
        let (evicted, ok) = put(&mut r, key(9), 100, false);
        assert!(ok);
        // 900 + 100 > 900 (high) → free down to 500 before writing.
        assert_eq!(evicted, vec![key(1), key(2), key(3), key(4)]);
        assert_eq!(r.used(TierKind::Memory), 600);
        assert!(r.get(&key(0)).is_some());
    }

    #[test]
    fn pinned_and_read_chunks_are_never_victims() {
        let mut r = Residency::new(Some(BUDGET), None);
        assert!(put(&mut r, key(0), 400, true).1);
        assert!(put(&mut r, key(1), 400, false).1);
        let _ = r.acquire(&key(1)).unwrap();
        // 800 + 100 > 900 is false: fits under the high watermark.
        assert_eq!(put(&mut r, key(2), 100, false), (vec![], true));
        // 900 + 250 > quota and the only other unpinned chunk is being read.
        assert_eq!(put(&mut r, key(3), 250, false), (vec![key(2)], false));
        r.release(&key(1));
        // An open handle on key(1)'s file version protects it too.
        r.hold(key(1).fv);
        assert_eq!(put(&mut r, key(3), 250, false), (vec![], false));
        r.unhold(&key(1).fv);
        let (evicted, ok) = put(&mut r, key(3), 250, false);
        assert!(ok);
        assert_eq!(evicted, vec![key(1)]);
    }

    #[test]
    fn groups_start_from_what_is_resident_and_pins_release() {
        let mut r = Residency::new(Some(BUDGET), Some(BUDGET));
        assert!(put(&mut r, key(0), 100, false).1); // fv 0
        assert!(put(&mut r, key(1), 50, true).1); // fv 1, spec-pinned
        let g: GroupKey = ("ds".into(), 3);
        r.add_group(g.clone(), [key(0).fv, key(1).fv, key(2).fv]);
        assert_eq!(r.group_bytes(&g), Some([150, 0]));
        // A move memory → disk shows in the tiers of the group.
        let e = r.remove(&key(0)).unwrap();
        assert_eq!(r.reserve(TierKind::Disk, 100), Room::Reserved);
        r.commit(TierKind::Disk, key(0), e);
        assert_eq!(r.group_bytes(&g), Some([50, 100]));
        // Prewarm pins count once per file version and come off again.
        assert_eq!(r.pinned(TierKind::Memory), 50);
        r.pin(key(1).fv);
        r.pin(key(0).fv);
        r.pin(key(0).fv);
        assert_eq!(
            (r.pinned(TierKind::Memory), r.pinned(TierKind::Disk)),
            (50, 100)
        );
        r.unpin(&key(0).fv);
        assert_eq!(r.pinned(TierKind::Disk), 100);
        r.unpin(&key(0).fv);
        r.unpin(&key(1).fv);
        assert_eq!(
            (r.pinned(TierKind::Memory), r.pinned(TierKind::Disk)),
            (50, 0)
        );
        r.remove_group(&g);
        assert_eq!(r.group_bytes(&g), None);
        assert!(r.remove(&key(1)).is_some());
        assert_eq!(r.pinned(TierKind::Memory), 0);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Put(u32, u32, bool),
        Read(u32),
        Remove(u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u32..24, 1u32..300, proptest::bool::weighted(0.1))
                .prop_map(|(k, l, p)| Op::Put(k, l, p)),
            (0u32..24).prop_map(Op::Read),
            (0u32..24).prop_map(Op::Remove),
        ]
    }

    proptest! {
        /// Against a model (BTreeMap of key → (len, pinned, last use)): usage
        /// never exceeds the quota, accounting matches, pinned chunks stay,
        /// and every eviction picks the oldest evictable chunk.
        #[test]
        fn matches_reference_model(ops in proptest::collection::vec(op(), 1..200)) {
            let mut r = Residency::new(Some(BUDGET), None);
            let fv = |f: u8| FileVersionId([f; 16]);
            // Two overlapping groups, registered before any chunk arrives;
            // file version 2 is pinned by a prewarm (never evicted).
            r.add_group(("a".into(), 1), [fv(0), fv(1)]);
            r.add_group(("b".into(), 1), [fv(1), fv(2)]);
            r.pin(fv(2));
            let mut model: BTreeMap<ChunkKey, (u32, bool, u64)> = BTreeMap::new();
            let mut clock = 0u64;
            for op in ops {
                clock += 1;
                match op {
                    Op::Put(k, len, pinned) => {
                        let k = key(k);
                        if model.contains_key(&k) { continue; }
                        let before: Vec<_> = model.iter()
                            .filter(|(k, v)| !v.1 && k.fv.0[0] != 2)
                            .map(|(k, v)| (v.2, *k))
                            .collect();
                        let (evicted, ok) = put(&mut r, k, len, pinned);
                        let mut oldest = before;
                        oldest.sort();
                        let expect: Vec<_> = oldest.iter().take(evicted.len()).map(|(_, k)| *k).collect();
                        prop_assert_eq!(&evicted, &expect);
                        for e in &evicted { model.remove(e); }
                        if ok {
                            model.insert(k, (len, pinned, clock));
                        } else {
                            let total: u64 = model.values().map(|v| u64::from(v.0)).sum();
                            prop_assert!(total + u64::from(len) > BUDGET.quota);
                        }
                    }
                    Op::Read(k) => {
                        let k = key(k);
                        let got = r.acquire(&k);
                        prop_assert_eq!(got.is_some(), model.contains_key(&k));
                        if got.is_some() {
                            r.release(&k);
                            model.get_mut(&k).unwrap().2 = clock;
                        }
                    }
                    Op::Remove(k) => {
                        let k = key(k);
                        prop_assert_eq!(r.remove(&k).is_some(), model.remove(&k).is_some());
                    }
                }
                let used: u64 = model.values().map(|v| u64::from(v.0)).sum();
                prop_assert_eq!(r.used(TierKind::Memory), used);
                prop_assert!(used <= BUDGET.quota);
                for (k, v) in &model {
                    if v.1 || k.fv.0[0] == 2 { prop_assert!(r.get(k).is_some(), "pinned chunk evicted"); }
                }
                let per_fv: u64 = (0..3u8).map(|f| r.fv_usage(&FileVersionId([f; 16])).bytes[0]).sum();
                prop_assert_eq!(per_fv, used);
                // Locality counters equal a scan of the model.
                let of = |fvs: &[u8]| -> u64 {
                    model.iter().filter(|(k, _)| fvs.contains(&k.fv.0[0])).map(|(_, v)| u64::from(v.0)).sum()
                };
                prop_assert_eq!(r.group_bytes(&("a".into(), 1)), Some([of(&[0, 1]), 0]));
                prop_assert_eq!(r.group_bytes(&("b".into(), 1)), Some([of(&[1, 2]), 0]));
                let pinned: u64 = model.iter().filter(|(k, v)| v.1 || k.fv.0[0] == 2).map(|(_, v)| u64::from(v.0)).sum();
                prop_assert_eq!(r.pinned(TierKind::Memory), pinned);
            }
        }
    }
}
