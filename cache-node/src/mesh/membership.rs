//! Gossip membership state, without I/O or clocks of its own.
//!
//! Every node increments its own heartbeat each round and gossips the
//! members it believes alive to a few others; a member whose heartbeat has
//! not increased for `dead_after` is dead, and one dead for `forget_after`
//! is forgotten (hosts come and go; a view must not grow with every host
//! that ever joined). Forgetting is safe: nodes gossip only members they
//! saw beat within `dead_after`, so a forgotten member comes back only by
//! beating again. (A heartbeat-gossip protocol:
//! SWIM's indirect probes are not needed at Shoal's cluster sizes, and dead
//! detection stays within a few rounds.) Time is an argument, so tests
//! drive it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use shoal_proto::v1;

#[derive(Debug, Clone)]
struct Entry {
    member: v1::Member,
    seen: Instant,
}

/// The membership view of one node.
#[derive(Debug)]
pub struct Membership {
    me: v1::Member,
    others: HashMap<String, Entry>,
    dead_after: Duration,
    forget_after: Duration,
}

/// Liveness of a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Alive,
    Dead,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Alive => "Ready",
            State::Dead => "NotReady",
        }
    }
}

impl Membership {
    /// `forget_after` is at least `dead_after` (the configuration sees to it).
    pub fn new(me: v1::Member, dead_after: Duration, forget_after: Duration) -> Self {
        Self {
            me,
            others: HashMap::new(),
            dead_after,
            forget_after,
        }
    }

    pub fn me(&self) -> &v1::Member {
        &self.me
    }

    /// Starts a round: bumps our heartbeat, refreshes our own facts and
    /// forgets members dead for `forget_after`.
    pub fn tick(&mut self, now: Instant, refresh: impl FnOnce(&mut v1::Member)) {
        self.me.heartbeat += 1;
        refresh(&mut self.me);
        let forget_after = self.forget_after;
        self.others
            .retain(|_, e| now.saturating_duration_since(e.seen) < forget_after);
    }

    /// Merges a peer's view: newer heartbeats win and refresh liveness.
    /// Returns the members this view shows restarted (a new incarnation).
    pub fn merge(&mut self, members: Vec<v1::Member>, now: Instant) -> Vec<v1::Member> {
        let mut restarted = Vec::new();
        for m in members {
            if m.name == self.me.name {
                continue;
            }
            match self.others.get_mut(&m.name) {
                Some(e) if m.heartbeat > e.member.heartbeat => {
                    let (old, new) = (e.member.started_ms, m.started_ms);
                    if old != 0 && new != 0 && old != new {
                        restarted.push(e.member.clone());
                    }
                    e.member = m;
                    e.seen = now;
                }
                Some(_) => {}
                None => {
                    self.others.insert(
                        m.name.clone(),
                        Entry {
                            member: m,
                            seen: now,
                        },
                    );
                }
            }
        }
        restarted
    }

    /// The incarnation (`started_ms`) of a member alive now, if any.
    pub fn alive_incarnation(&self, name: &str, now: Instant) -> Option<i64> {
        if name == self.me.name {
            return Some(self.me.started_ms);
        }
        self.others
            .get(name)
            .filter(|e| self.state_of(e, now) == State::Alive)
            .map(|e| e.member.started_ms)
    }

    fn state_of(&self, e: &Entry, now: Instant) -> State {
        if now.saturating_duration_since(e.seen) < self.dead_after {
            State::Alive
        } else {
            State::Dead
        }
    }

    /// Whether a live member other than ourselves reports resident bytes
    /// of `dataset` at `version`.
    pub fn peer_holds(&self, dataset: &str, version: u64, now: Instant) -> bool {
        self.others.values().any(|e| {
            self.state_of(e, now) == State::Alive
                && e.member.residency.iter().any(|r| {
                    // Either figure (a peer's own) may be anything: no sum.
                    r.dataset == dataset
                        && r.version == version
                        && (r.memory_bytes > 0 || r.disk_bytes > 0)
                })
        })
    }

    /// Live members, ourselves included.
    pub fn alive(&self, now: Instant) -> Vec<v1::Member> {
        let mut v: Vec<_> = self
            .others
            .values()
            .filter(|e| self.state_of(e, now) == State::Alive)
            .map(|e| e.member.clone())
            .collect();
        v.push(self.me.clone());
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Every known member with its state, ourselves included.
    pub fn all(&self, now: Instant) -> Vec<(v1::Member, State)> {
        let mut v: Vec<_> = self
            .others
            .values()
            .map(|e| (e.member.clone(), self.state_of(e, now)))
            .collect();
        v.push((self.me.clone(), State::Alive));
        v.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Node a's view: dead after 3 s, forgotten after 60 s.
    fn view() -> Membership {
        Membership::new(
            member("a", 0),
            Duration::from_secs(3),
            Duration::from_secs(60),
        )
    }

    fn member(name: &str, hb: u64) -> v1::Member {
        v1::Member {
            name: name.into(),
            heartbeat: hb,
            ..Default::default()
        }
    }

    #[test]
    fn dead_when_heartbeat_stalls_alive_when_it_moves() {
        let t0 = Instant::now();
        let mut m = view();
        m.merge(vec![member("b", 1), member("c", 1)], t0);
        assert_eq!(m.alive(t0).len(), 3);
        // b keeps beating, c stalls.
        m.merge(
            vec![member("b", 2), member("c", 1)],
            t0 + Duration::from_secs(2),
        );
        let later = t0 + Duration::from_secs(4);
        let names: Vec<_> = m.alive(later).into_iter().map(|x| x.name).collect();
        assert_eq!(names, vec!["a", "b"]);
        let alive = |name| m.alive_incarnation(name, later).is_some();
        assert!(alive("a") && alive("b"));
        assert!(!alive("c") && !alive("nobody"));
        let all = m.all(later);
        assert_eq!(
            all.iter().find(|(x, _)| x.name == "c").unwrap().1,
            State::Dead
        );
        // A stale view from another node cannot resurrect c.
        m.merge(vec![member("c", 1)], later);
        assert_eq!(m.alive(later).len(), 2);
        // c comes back (restart): a higher heartbeat makes it alive again.
        m.merge(vec![member("c", 5)], later);
        assert_eq!(m.alive(later).len(), 3);
        // Our own entry is never taken from gossip.
        m.merge(vec![member("a", 99)], later);
        assert_eq!(m.me().heartbeat, 0);
    }

    #[test]
    fn a_new_incarnation_is_reported_as_a_restart() {
        let t0 = Instant::now();
        let mut m = view();
        let b = |hb: u64, started_ms: i64| v1::Member {
            started_ms,
            ..member("b", hb)
        };
        assert!(m.merge(vec![b(10, 1000)], t0).is_empty());
        assert!(m.merge(vec![b(11, 1000)], t0).is_empty());
        assert_eq!(m.alive_incarnation("b", t0), Some(1000));
        // b restarted: a new incarnation with a higher heartbeat.
        let restarted = m.merge(vec![b(5000, 5000)], t0);
        assert_eq!(restarted.len(), 1);
        assert_eq!(restarted[0].started_ms, 1000);
        assert_eq!(m.alive_incarnation("b", t0), Some(5000));
        // A stale view of the old incarnation changes nothing.
        assert!(m.merge(vec![b(12, 1000)], t0).is_empty());
        assert_eq!(m.alive_incarnation("b", t0), Some(5000));
        // A dead member has no incarnation.
        assert_eq!(m.alive_incarnation("b", t0 + Duration::from_secs(4)), None);
    }

    #[test]
    fn members_dead_for_forget_after_are_forgotten_until_they_beat_again() {
        let t0 = Instant::now();
        let mut m = view();
        m.merge(vec![member("b", 1), member("c", 1)], t0);
        let names = |m: &Membership, now| -> Vec<String> {
            m.all(now).into_iter().map(|(x, _)| x.name).collect()
        };
        // b keeps beating; c went away for good.
        m.merge(vec![member("b", 2)], t0 + Duration::from_secs(50));
        m.tick(t0 + Duration::from_secs(59), |_| {});
        assert_eq!(names(&m, t0 + Duration::from_secs(59)), ["a", "b", "c"]);
        let t1 = t0 + Duration::from_secs(61);
        m.tick(t1, |_| {});
        assert_eq!(names(&m, t1), ["a", "b"], "c dead for 60 s is forgotten");
        assert_eq!(m.me().heartbeat, 2);
        // c starts again: it beats, and is a member again.
        m.merge(vec![member("c", 7)], t1);
        assert!(m.alive_incarnation("c", t1).is_some());
    }
}
