//! The job model without I/O: which nodes a job targets, whether a
//! selection fits them, which replicated record wins, and what state a job
//! is in given its parts and the membership. Time is an argument, so all of
//! it is tested without clocks or processes.

use std::collections::HashMap;

use shoal_proto::units::{format_size, sum_bytes as sum};
use shoal_proto::v1;

/// A job part's or a job's state name.
pub const PENDING: &str = "Pending";
pub const RUNNING: &str = "Running";
pub const COMPLETE: &str = "Complete";
pub const FAILED: &str = "Failed";
pub const CANCELLED: &str = "Cancelled";

/// A target that stays unreachable this long fails a job without
/// `replicas` (a restart within it just resumes).
pub const LOST_GRACE_MS: i64 = 60_000;

/// Whether a state is final.
pub fn is_terminal(state: &str) -> bool {
    matches!(state, COMPLETE | FAILED | CANCELLED)
}

/// What the job model needs to know about one member.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub name: String,
    pub alive: bool,
    pub labels: HashMap<String, String>,
    /// (memory, disk) tiers; None when the node has no such tier.
    pub tiers: [Option<TierRoom>; 2],
    /// Bytes of the job's dataset version already resident (any tier).
    pub resident: u64,
    /// Wall clock (ms) of the member's last own report.
    pub updated_ms: i64,
}

/// Room in one tier of a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TierRoom {
    pub quota: u64,
    /// Eviction starts above this.
    pub high: u64,
    /// Bytes eviction can never free.
    pub pinned: u64,
}

impl TierRoom {
    /// Bytes a job can count on keeping in this tier.
    pub fn usable(&self) -> u64 {
        self.high.saturating_sub(self.pinned)
    }
}

/// How the operator chose targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Targets {
    /// The node that received the request.
    Local(String),
    Named(Vec<String>),
    All,
    Selector(HashMap<String, String>),
    Replicas(u32),
}

/// Resolves the target nodes of a new job, or says in one line why not.
pub fn select(targets: &Targets, members: &[Candidate]) -> Result<Vec<String>, String> {
    let alive: Vec<&Candidate> = members.iter().filter(|m| m.alive).collect();
    let names = |v: &[&Candidate]| v.iter().map(|m| m.name.clone()).collect::<Vec<_>>();
    let picked = match targets {
        Targets::Local(me) => vec![me.clone()],
        Targets::Named(list) => {
            let mut out = Vec::new();
            for n in list {
                match members.iter().find(|m| &m.name == n) {
                    None => {
                        let mut known: Vec<_> = members.iter().map(|m| m.name.as_str()).collect();
                        known.sort();
                        return Err(format!("unknown node {n:?} (nodes: {})", known.join(", ")));
                    }
                    Some(m) if !m.alive => return Err(format!("node {n:?} is NotReady")),
                    Some(_) if out.contains(n) => {}
                    Some(_) => out.push(n.clone()),
                }
            }
            out
        }
        Targets::All => names(&alive),
        Targets::Selector(sel) => {
            let v: Vec<&Candidate> = alive
                .iter()
                .copied()
                .filter(|m| sel.iter().all(|(k, v)| m.labels.get(k) == Some(v)))
                .collect();
            if v.is_empty() {
                let mut s: Vec<_> = sel.iter().map(|(k, v)| format!("{k}={v}")).collect();
                s.sort();
                return Err(format!("no ready node matches selector {}", s.join(",")));
            }
            names(&v)
        }
        Targets::Replicas(k) => {
            let k = *k as usize;
            if k == 0 {
                return Err("--replicas must be at least 1".into());
            }
            if k > alive.len() {
                return Err(format!(
                    "--replicas {k} but only {} node(s) are ready",
                    alive.len()
                ));
            }
            // Warmest first (least left to fetch), then most room.
            let mut v = alive.clone();
            v.sort_by(|a, b| {
                b.resident
                    .cmp(&a.resident)
                    .then(room(b).cmp(&room(a)))
                    .then(a.name.cmp(&b.name))
            });
            names(&v[..k])
        }
    };
    if picked.is_empty() {
        return Err("no ready node to target".into());
    }
    Ok(picked)
}

fn room(c: &Candidate) -> u64 {
    sum(c.tiers.iter().flatten().map(TierRoom::usable))
}

/// Checks that `need` more bytes fit each target's tier(s) as `tier` asks
/// (`tiers_of_policy` are the tiers the dataset may use when `tier` is any).
pub fn check_fit(
    targets: &[String],
    members: &[Candidate],
    tier: v1::TierTarget,
    tiers_of_policy: &[usize],
    total: u64,
    whole_version: bool,
) -> Result<(), String> {
    for t in targets {
        let Some(m) = members.iter().find(|m| &m.name == t) else {
            continue;
        };
        let idx: Vec<usize> = match tier {
            v1::TierTarget::Memory => vec![0],
            v1::TierTarget::Disk => vec![1],
            v1::TierTarget::AnyTier => tiers_of_policy.to_vec(),
        };
        let rooms: Vec<TierRoom> = idx.iter().filter_map(|&i| m.tiers[i]).collect();
        let usable = sum(rooms.iter().map(TierRoom::usable));
        // Bytes already resident need no room when the whole version is
        // selected and any tier counts; otherwise assume none are.
        let have = if whole_version && tier == v1::TierTarget::AnyTier {
            m.resident.min(total)
        } else {
            0
        };
        let need = total - have;
        if need > usable {
            let which = match tier {
                v1::TierTarget::Memory => "memory tier",
                v1::TierTarget::Disk => "disk tier",
                v1::TierTarget::AnyTier => "tiers",
            };
            let quota = sum(rooms.iter().map(|r| r.quota));
            let pinned = sum(rooms.iter().map(|r| r.pinned));
            return Err(format!(
                "selection does not fit node {t}: needs {} but its {which} can keep {} (quota {}, {} pinned, eviction above the high watermark)",
                format_size(need),
                format_size(usable),
                format_size(quota),
                format_size(pinned),
            ));
        }
    }
    Ok(())
}

/// Whether an incoming replicated job record replaces the stored one.
pub fn newer_spec(stored: Option<&v1::JobSpec>, incoming: &v1::JobSpec) -> bool {
    stored.is_none_or(|s| incoming.revision > s.revision)
}

/// Whether an incoming part record replaces the stored one.
pub fn newer_part(stored: Option<&v1::JobPart>, incoming: &v1::JobPart) -> bool {
    stored.is_none_or(|s| incoming.updated_ms > s.updated_ms)
}

/// Targets still responsible for a part (replaced ones excluded), in
/// time linear in the record (a peer's record may list many).
pub fn active_targets(spec: &v1::JobSpec) -> Vec<String> {
    let replaced: std::collections::HashSet<&str> =
        spec.replaced.iter().map(String::as_str).collect();
    spec.nodes
        .iter()
        .filter(|n| !replaced.contains(n.as_str()))
        .cloned()
        .collect()
}

/// A member's liveness as the job model sees it.
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    pub alive: bool,
    pub updated_ms: i64,
}

/// The job's status from its spec, its parts and the membership.
pub fn aggregate(
    spec: &v1::JobSpec,
    parts: &HashMap<String, v1::JobPart>,
    live: &dyn Fn(&str) -> Option<Liveness>,
    now_ms: i64,
) -> v1::JobStatus {
    let mut out_parts = Vec::new();
    let mut lost = Vec::new();
    let (mut total, mut done, mut rate) = (0u64, 0u64, 0u64);
    let (mut all_complete, mut any_failed, mut long_lost) = (true, false, false);
    for n in active_targets(spec) {
        let part = parts.get(&n).cloned().unwrap_or_else(|| v1::JobPart {
            job: spec.id.clone(),
            node: n.clone(),
            state: PENDING.into(),
            total_bytes: spec.total_bytes,
            ..Default::default()
        });
        let l = live(&n);
        let is_lost = !l.is_some_and(|l| l.alive);
        if is_lost && !is_terminal(&part.state) {
            lost.push(n.clone());
            let since = l.map_or(i64::MIN / 2, |l| l.updated_ms);
            if now_ms.saturating_sub(since) > LOST_GRACE_MS {
                long_lost = true;
            }
        }
        // Parts' figures come from peers: sums saturate rather than wrap.
        total = total.saturating_add(part.total_bytes);
        done = done.saturating_add(part.done_bytes);
        if part.state == RUNNING && !is_lost {
            rate = rate.saturating_add(part.rate_bps);
        }
        all_complete &= part.state == COMPLETE;
        any_failed |= part.state == FAILED;
        out_parts.push(part);
    }
    let state = if spec.cancelled {
        CANCELLED
    } else if all_complete {
        COMPLETE
    } else if any_failed || (long_lost && spec.replicas == 0) {
        FAILED
    } else if out_parts.iter().any(|p| p.state != PENDING) {
        RUNNING
    } else {
        PENDING
    };
    let eta_secs = if state == COMPLETE {
        0
    } else if rate > 0 {
        i64::try_from(total.saturating_sub(done).div_ceil(rate)).unwrap_or(i64::MAX)
    } else {
        -1
    };
    v1::JobStatus {
        spec: Some(spec.clone()),
        state: state.into(),
        parts: out_parts,
        total_bytes: total,
        done_bytes: done,
        rate_bps: rate,
        eta_secs,
        lost,
    }
}

/// How long a finished job is kept (listed, gossiped among the recent
/// ones) after it ended.
pub const KEEP_FINISHED_MS: i64 = 24 * 3600 * 1000;
/// Most finished jobs kept; the oldest go first. (More than nodes gossip,
/// so a node never drops a job its peers still send as recent.)
pub const KEEP_FINISHED: usize = 1000;

/// When a finished job ended: its last part's end, or its creation when
/// no part ran (cancelled before it started).
pub fn ended_ms(status: &v1::JobStatus) -> i64 {
    let created = status
        .spec
        .as_ref()
        .map_or(0, |s| s.created_unix.saturating_mul(1000));
    status
        .parts
        .iter()
        .map(|p| p.finished_unix_ms)
        .max()
        .unwrap_or(0)
        .max(created)
}

/// Finished jobs to forget at `now_ms`: those ended more than
/// [`KEEP_FINISHED_MS`] ago, and the oldest beyond [`KEEP_FINISHED`].
/// Unfinished jobs are never forgotten, however old.
pub fn expired(statuses: &[v1::JobStatus], now_ms: i64) -> Vec<String> {
    let mut finished: Vec<(i64, &str)> = statuses
        .iter()
        .filter(|s| is_terminal(&s.state))
        .filter_map(|s| Some((ended_ms(s), s.spec.as_ref()?.id.as_str())))
        .collect();
    finished.sort_unstable_by(|a, b| b.cmp(a));
    finished
        .iter()
        .enumerate()
        .filter(|(i, (ended, _))| {
            *i >= KEEP_FINISHED || now_ms.saturating_sub(*ended) > KEEP_FINISHED_MS
        })
        .map(|(_, (_, id))| (*id).to_string())
        .collect()
}

/// A replacement for each dead target of a `replicas` job: alive members
/// not yet used, warmest first. Returns (dead, replacement) pairs.
pub fn replacements(
    spec: &v1::JobSpec,
    parts: &HashMap<String, v1::JobPart>,
    members: &[Candidate],
) -> Vec<(String, String)> {
    if spec.replicas == 0 || spec.cancelled {
        return Vec::new();
    }
    let mut spare: Vec<&Candidate> = members
        .iter()
        .filter(|m| m.alive && !spec.nodes.contains(&m.name))
        .collect();
    spare.sort_by(|a, b| b.resident.cmp(&a.resident).then(a.name.cmp(&b.name)));
    let mut spare = spare.into_iter();
    let mut out = Vec::new();
    for n in active_targets(spec) {
        let done = parts.get(&n).is_some_and(|p| p.state == COMPLETE);
        let dead = members.iter().any(|m| m.name == n && !m.alive);
        if dead && !done {
            match spare.next() {
                Some(r) => out.push((n, r.name.clone())),
                None => break,
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(name: &str, alive: bool, zone: &str, resident: u64, mem: u64) -> Candidate {
        Candidate {
            name: name.into(),
            alive,
            labels: [("zone".to_string(), zone.to_string())].into(),
            tiers: [
                Some(TierRoom {
                    quota: mem,
                    high: mem * 9 / 10,
                    pinned: 0,
                }),
                Some(TierRoom {
                    quota: 1000,
                    high: 900,
                    pinned: 100,
                }),
            ],
            resident,
            updated_ms: 0,
        }
    }

    fn fleet() -> Vec<Candidate> {
        vec![
            cand("a", true, "z1", 0, 1000),
            cand("b", true, "z2", 500, 1000),
            cand("c", false, "z1", 900, 1000),
            cand("d", true, "z1", 10, 2000),
        ]
    }

    #[test]
    fn targets_resolve_and_bad_choices_are_refused() {
        let f = fleet();
        assert_eq!(select(&Targets::All, &f).unwrap(), vec!["a", "b", "d"]);
        assert_eq!(
            select(
                &Targets::Named(vec!["d".into(), "a".into(), "d".into()]),
                &f
            )
            .unwrap(),
            vec!["d", "a"]
        );
        assert!(select(&Targets::Named(vec!["zz".into()]), &f)
            .unwrap_err()
            .contains("unknown node \"zz\" (nodes: a, b, c, d)"));
        assert!(select(&Targets::Named(vec!["c".into()]), &f)
            .unwrap_err()
            .contains("NotReady"));
        let z1 = Targets::Selector([("zone".to_string(), "z1".to_string())].into());
        assert_eq!(select(&z1, &f).unwrap(), vec!["a", "d"]);
        let none = Targets::Selector([("zone".to_string(), "z9".to_string())].into());
        assert!(select(&none, &f).unwrap_err().contains("zone=z9"));
        // Replicas: warmest ready nodes first (c is warmer but dead).
        assert_eq!(select(&Targets::Replicas(2), &f).unwrap(), vec!["b", "d"]);
        assert!(select(&Targets::Replicas(4), &f).is_err());
        assert!(select(&Targets::Replicas(0), &f).is_err());
    }

    #[test]
    fn fit_counts_pins_watermarks_and_what_is_already_there() {
        let f = fleet();
        let t = vec!["b".to_string()];
        // Memory: high 900 of 1000.
        assert!(check_fit(&t, &f, v1::TierTarget::Memory, &[0, 1], 900, false).is_ok());
        let err = check_fit(&t, &f, v1::TierTarget::Memory, &[0, 1], 901, false).unwrap_err();
        assert!(
            err.contains("node b") && err.contains("memory tier"),
            "{err}"
        );
        // Disk: 900 high − 100 pinned.
        assert!(check_fit(&t, &f, v1::TierTarget::Disk, &[0, 1], 801, false).is_err());
        // Any tier: both tiers, and b's 500 resident bytes need no room.
        assert!(check_fit(&t, &f, v1::TierTarget::AnyTier, &[0, 1], 2200, true).is_ok());
        assert!(check_fit(&t, &f, v1::TierTarget::AnyTier, &[0, 1], 2200, false).is_err());
        assert!(check_fit(&t, &f, v1::TierTarget::AnyTier, &[1], 900, false).is_err());
    }

    fn spec(nodes: &[&str], replicas: u32) -> v1::JobSpec {
        v1::JobSpec {
            id: "j".into(),
            nodes: nodes.iter().map(|s| s.to_string()).collect(),
            replicas,
            total_bytes: 100,
            revision: 1,
            ..Default::default()
        }
    }

    fn part(node: &str, state: &str, done: u64, rate: u64) -> (String, v1::JobPart) {
        (
            node.into(),
            v1::JobPart {
                node: node.into(),
                state: state.into(),
                total_bytes: 100,
                done_bytes: done,
                rate_bps: rate,
                ..Default::default()
            },
        )
    }

    #[test]
    fn job_state_follows_parts_and_membership() {
        let alive = |_: &str| {
            Some(Liveness {
                alive: true,
                updated_ms: 0,
            })
        };
        let s = spec(&["a", "b"], 0);
        let st = aggregate(&s, &HashMap::new(), &alive, 0);
        assert_eq!(
            (st.state.as_str(), st.total_bytes, st.eta_secs),
            (PENDING, 200, -1)
        );
        let parts: HashMap<_, _> = [part("a", RUNNING, 40, 10), part("b", COMPLETE, 100, 0)].into();
        let st = aggregate(&s, &parts, &alive, 0);
        assert_eq!(st.state, RUNNING);
        assert_eq!((st.done_bytes, st.rate_bps, st.eta_secs), (140, 10, 6));
        let parts: HashMap<_, _> =
            [part("a", COMPLETE, 100, 0), part("b", COMPLETE, 100, 0)].into();
        assert_eq!(aggregate(&s, &parts, &alive, 0).state, COMPLETE);
        let parts: HashMap<_, _> = [part("a", FAILED, 10, 0), part("b", COMPLETE, 100, 0)].into();
        assert_eq!(aggregate(&s, &parts, &alive, 0).state, FAILED);
        // A dead target is reported at once, fails the job only after the grace.
        let b_dead = |n: &str| {
            Some(Liveness {
                alive: n != "b",
                updated_ms: 1_000,
            })
        };
        let parts: HashMap<_, _> = [part("a", COMPLETE, 100, 0), part("b", RUNNING, 50, 9)].into();
        let st = aggregate(&s, &parts, &b_dead, 2_000);
        assert_eq!(
            (st.state.as_str(), st.lost.clone()),
            (RUNNING, vec!["b".to_string()])
        );
        assert_eq!(st.rate_bps, 0, "a lost node's rate is not counted");
        assert_eq!(
            aggregate(&s, &parts, &b_dead, 1_000 + LOST_GRACE_MS + 1).state,
            FAILED
        );
        // Replaced targets no longer count; cancelled wins.
        let mut r = spec(&["a", "b", "c"], 2);
        r.replaced = vec!["b".into()];
        let parts: HashMap<_, _> =
            [part("a", COMPLETE, 100, 0), part("c", COMPLETE, 100, 0)].into();
        assert_eq!(aggregate(&r, &parts, &b_dead, 0).state, COMPLETE);
        r.cancelled = true;
        assert_eq!(aggregate(&r, &parts, &alive, 0).state, CANCELLED);
    }

    #[test]
    fn dead_targets_of_replica_jobs_get_warm_replacements() {
        let f = fleet(); // c is dead
        let s = spec(&["a", "c"], 2);
        let parts: HashMap<_, _> = [part("a", RUNNING, 1, 1)].into();
        // b (500 resident) is warmer than d (10).
        assert_eq!(
            replacements(&s, &parts, &f),
            vec![("c".to_string(), "b".to_string())]
        );
        // A completed part on a dead node keeps its place; no replicas, no replacement.
        let done: HashMap<_, _> = [part("c", COMPLETE, 100, 0)].into();
        assert!(replacements(&s, &done, &f).is_empty());
        assert!(replacements(&spec(&["a", "c"], 0), &parts, &f).is_empty());
    }

    #[test]
    fn newer_records_win() {
        let mut a = spec(&["a"], 0);
        let mut b = a.clone();
        b.revision = 2;
        assert!(newer_spec(None, &a) && newer_spec(Some(&a), &b) && !newer_spec(Some(&b), &a));
        a.revision = 2;
        assert!(
            !newer_spec(Some(&b), &a),
            "equal revisions keep the stored record"
        );
        let (_, p1) = part("a", RUNNING, 1, 0);
        let mut p2 = p1.clone();
        p2.updated_ms = 5;
        assert!(newer_part(Some(&p1), &p2) && !newer_part(Some(&p2), &p1));
    }

    #[test]
    fn finished_jobs_expire_by_age_and_count_unfinished_never() {
        let status = |id: &str, state: &str, created_s: i64, ended_ms: i64| v1::JobStatus {
            spec: Some(v1::JobSpec {
                id: id.into(),
                created_unix: created_s,
                ..Default::default()
            }),
            state: state.into(),
            parts: vec![v1::JobPart {
                finished_unix_ms: ended_ms,
                ..Default::default()
            }],
            ..Default::default()
        };
        let day = KEEP_FINISHED_MS;
        let now = 10 * day;
        let jobs = vec![
            status("old-done", COMPLETE, 0, now - day - 1),
            status("recent-done", COMPLETE, 0, now - day + 1),
            status(
                "old-cancelled-before-start",
                CANCELLED,
                (now - 2 * day) / 1000,
                0,
            ),
            status("old-running", RUNNING, 0, 0),
            status("old-failed", FAILED, 0, now - 3 * day),
        ];
        let mut gone = expired(&jobs, now);
        gone.sort();
        assert_eq!(
            gone,
            ["old-cancelled-before-start", "old-done", "old-failed"]
        );
        // Past the count, the oldest finished go first.
        let many: Vec<v1::JobStatus> = (0..KEEP_FINISHED + 3)
            .map(|i| status(&format!("j{i}"), COMPLETE, 0, now - i as i64))
            .chain([status("running", RUNNING, 0, 0)])
            .collect();
        let mut gone = expired(&many, now);
        gone.sort();
        let want: Vec<String> = (KEEP_FINISHED..KEEP_FINISHED + 3)
            .map(|i| format!("j{i}"))
            .collect();
        assert_eq!(gone, want);
    }
}
