//! The fault schedule: every fault, its target, when it starts and how long
//! it holds, all drawn from one seeded generator before the run starts.
//!
//! The whole plan is a pure function of the seed and the run's length, so a
//! failing seed replays the same faults in the same order at the same
//! offsets (process timing still varies, which is why a seed is a strong
//! hint rather than a deterministic replay).

use std::time::Duration;

/// SplitMix64: tiny, seedable, and good enough to pick faults and offsets.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `percent` / 100.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.between(lo, hi))
    }
}

/// What the origin proxy does to a ranged GET while a fault is active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OriginFault {
    /// 500 InternalError.
    ServerError,
    /// 503 SlowDown (throttling).
    SlowDown,
    /// Headers and part of the body, then a TCP reset.
    ResetMidBody,
    /// The answer waits for a few seconds (before the headers or mid-body).
    Stall,
    /// Correct bytes under a Content-Range naming another range.
    WrongContentRange,
    /// Another range's bytes, under a Content-Range that says so.
    ShiftedRange,
    /// Part of the body, then the connection closes (Content-Length unmet).
    TruncatedBody,
    /// Content-Length and body cut short together (the framing is valid).
    ShortBody,
    /// The object was overwritten: a new ETag with new bytes, or 412 to
    /// the listed ETag's If-Match.
    EtagChanged,
}

/// A kind of fault the nemesis injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `kill -9` of a cache node, restarted after the hold.
    KillNode,
    /// `kill -9` of a fuse-client, restarted after the hold.
    KillFuse,
    /// SIGSTOP of a cache node, SIGCONT after the hold.
    StopNode,
    /// A node cut off from its peers (nftables), the origin still reachable.
    IsolateNode,
    /// Two nodes cut off from each other only.
    SplitPair,
    /// A node cut off from the origin only.
    CutOrigin,
    /// A node's link down (`ip link set eth0 down`).
    LinkDown,
    /// The origin's link down.
    OriginLinkDown,
    /// A node's disk-tier filesystem filled to the last block.
    DiskFull,
    /// Something the origin proxy does to ranged GETs.
    Origin(OriginFault),
    /// Requests without the API token, and a node with a certificate from
    /// another CA asking to join the mesh.
    Intruder,
}

impl Kind {
    pub const ALL: [Kind; 19] = [
        Kind::KillNode,
        Kind::KillFuse,
        Kind::StopNode,
        Kind::IsolateNode,
        Kind::SplitPair,
        Kind::CutOrigin,
        Kind::LinkDown,
        Kind::OriginLinkDown,
        Kind::DiskFull,
        Kind::Origin(OriginFault::ServerError),
        Kind::Origin(OriginFault::SlowDown),
        Kind::Origin(OriginFault::ResetMidBody),
        Kind::Origin(OriginFault::Stall),
        Kind::Origin(OriginFault::WrongContentRange),
        Kind::Origin(OriginFault::ShiftedRange),
        Kind::Origin(OriginFault::TruncatedBody),
        Kind::Origin(OriginFault::ShortBody),
        Kind::Origin(OriginFault::EtagChanged),
        Kind::Intruder,
    ];

    /// A stable name for logs and reports.
    pub fn name(self) -> &'static str {
        match self {
            Kind::KillNode => "kill-node",
            Kind::KillFuse => "kill-fuse",
            Kind::StopNode => "stop-node",
            Kind::IsolateNode => "isolate-node",
            Kind::SplitPair => "split-pair",
            Kind::CutOrigin => "cut-origin",
            Kind::LinkDown => "link-down",
            Kind::OriginLinkDown => "origin-link-down",
            Kind::DiskFull => "disk-full",
            Kind::Origin(f) => match f {
                OriginFault::ServerError => "origin-500",
                OriginFault::SlowDown => "origin-503-slowdown",
                OriginFault::ResetMidBody => "origin-reset-mid-body",
                OriginFault::Stall => "origin-stall",
                OriginFault::WrongContentRange => "origin-wrong-content-range",
                OriginFault::ShiftedRange => "origin-shifted-range",
                OriginFault::TruncatedBody => "origin-truncated-body",
                OriginFault::ShortBody => "origin-short-body",
                OriginFault::EtagChanged => "origin-etag-changed",
            },
            Kind::Intruder => "intruder",
        }
    }

    /// The kind named `name` (as [`Kind::name`] spells it).
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// How long the fault holds, in milliseconds.
    fn hold_ms(self) -> (u64, u64) {
        match self {
            Kind::KillNode => (200, 6_000),
            Kind::KillFuse => (200, 3_000),
            Kind::StopNode => (1_000, 8_000),
            Kind::IsolateNode | Kind::SplitPair | Kind::CutOrigin => (2_000, 10_000),
            Kind::LinkDown => (1_000, 8_000),
            Kind::OriginLinkDown => (1_000, 6_000),
            Kind::DiskFull => (3_000, 12_000),
            Kind::Origin(_) => (2_000, 10_000),
            Kind::Intruder => (3_000, 8_000),
        }
    }
}

/// What a fault acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Node(usize),
    Pair(usize, usize),
    /// Every node (origin faults); `Some(file)` narrows to one object.
    Origin(Option<usize>),
}

/// One planned fault.
#[derive(Debug, Clone)]
pub struct Fault {
    pub id: usize,
    pub kind: Kind,
    pub target: Target,
    /// Offset from the start of the nemesis.
    pub at: Duration,
    pub hold: Duration,
    /// Share of matching origin requests the proxy spoils (origin faults).
    pub percent: u64,
    /// Free parameter drawn with the fault (the proxy uses it for stall
    /// lengths and ETag-change behaviour).
    pub param: u64,
}

impl Fault {
    pub fn describe(&self) -> String {
        let target = match self.target {
            Target::Node(i) => format!("node-{i}"),
            Target::Pair(i, j) => format!("node-{i}<->node-{j}"),
            Target::Origin(None) => "origin".to_string(),
            Target::Origin(Some(f)) => format!("origin file #{f}"),
        };
        let extra = match self.kind {
            Kind::Origin(OriginFault::EtagChanged) => " (every GET sees the new object)".into(),
            Kind::Origin(_) => format!(" ({}% of ranged GETs)", self.percent),
            _ => String::new(),
        };
        format!(
            "#{} {} on {target} for {:.1}s{extra}",
            self.id,
            self.kind.name(),
            self.hold.as_secs_f64()
        )
    }

    /// The exclusive resources the fault occupies while it holds: two faults
    /// never act on the same process, link or disk at once.
    fn resources(&self) -> Vec<Resource> {
        match (self.kind, self.target) {
            (Kind::KillNode | Kind::StopNode, Target::Node(i)) => vec![Resource::Process(i)],
            // A fuse-client mounts only through a live node: its node is
            // neither killed nor stopped while it is down.
            (Kind::KillFuse, Target::Node(i)) => vec![Resource::Fuse(i), Resource::Process(i)],
            (Kind::IsolateNode | Kind::CutOrigin | Kind::LinkDown, Target::Node(i)) => {
                vec![Resource::Net(i)]
            }
            (Kind::SplitPair, Target::Pair(i, j)) => vec![Resource::Net(i), Resource::Net(j)],
            (Kind::DiskFull, Target::Node(i)) => vec![Resource::Disk(i)],
            (Kind::OriginLinkDown, _) => vec![Resource::OriginLink],
            (Kind::Origin(f), _) => vec![Resource::Proxy(f)],
            (Kind::Intruder, _) => vec![Resource::Intruder],
            _ => Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resource {
    Process(usize),
    Fuse(usize),
    Net(usize),
    Disk(usize),
    OriginLink,
    Proxy(OriginFault),
    Intruder,
}

/// The schedule of one run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub faults: Vec<Fault>,
}

/// Shape of the schedule.
#[derive(Debug, Clone)]
pub struct PlanOpts {
    pub nodes: usize,
    pub files: usize,
    pub secs: u64,
    /// Faults holding at once, at most.
    pub concurrent: usize,
    /// The kinds drawn (a subset of [`Kind::ALL`], to narrow a replay).
    pub kinds: Vec<Kind>,
}

impl Plan {
    /// Draws the schedule: a fault starts every 1-4 s while fewer than
    /// `concurrent` hold; kinds come from a shuffled bag of the kinds, so
    /// every kind occurs once before any occurs twice. No fault starts in
    /// the last two seconds; every fault ends by `secs`.
    pub fn new(seed: u64, opts: &PlanOpts) -> Self {
        assert!(opts.nodes >= 2, "the nemesis needs at least two nodes");
        assert!(!opts.kinds.is_empty(), "no fault kinds to draw");
        let mut rng = Rng::new(seed);
        let end = Duration::from_secs(opts.secs);
        let mut bag: Vec<Kind> = Vec::new();
        let mut faults: Vec<Fault> = Vec::new();
        let mut t = Duration::from_millis(rng.between(1_000, 3_000));
        while t + Duration::from_secs(2) < end {
            let holding: Vec<&Fault> = faults.iter().filter(|f| f.at + f.hold > t).collect();
            if holding.len() < opts.concurrent {
                let busy: Vec<Resource> = holding.iter().flat_map(|f| f.resources()).collect();
                if bag.is_empty() {
                    bag = opts.kinds.clone();
                    for i in (1..bag.len()).rev() {
                        bag.swap(i, rng.below(i as u64 + 1) as usize);
                    }
                }
                // The first kind in the bag that has a free target.
                for pos in 0..bag.len() {
                    let kind = bag[pos];
                    let Some(target) = pick_target(&mut rng, kind, opts, &busy) else {
                        continue;
                    };
                    bag.remove(pos);
                    let (lo, hi) = kind.hold_ms();
                    let hold = rng.millis(lo, hi).min(end.saturating_sub(t));
                    faults.push(Fault {
                        id: faults.len() + 1,
                        kind,
                        target,
                        at: t,
                        hold,
                        percent: rng.between(30, 100),
                        param: rng.next_u64(),
                    });
                    break;
                }
            }
            t += rng.millis(1_000, 4_000);
        }
        Self { faults }
    }
}

fn pick_target(rng: &mut Rng, kind: Kind, opts: &PlanOpts, busy: &[Resource]) -> Option<Target> {
    let n = opts.nodes;
    let candidates: Vec<Target> = match kind {
        Kind::SplitPair => (0..n)
            .flat_map(|i| (i + 1..n).map(move |j| Target::Pair(i, j)))
            .collect(),
        Kind::OriginLinkDown | Kind::Intruder => vec![Target::Origin(None)],
        Kind::Origin(OriginFault::EtagChanged) => {
            vec![Target::Origin(Some(rng.below(opts.files as u64) as usize))]
        }
        Kind::Origin(_) => vec![Target::Origin(None)],
        _ => (0..n).map(Target::Node).collect(),
    };
    let free: Vec<Target> = candidates
        .into_iter()
        .filter(|&target| {
            let probe = Fault {
                id: 0,
                kind,
                target,
                at: Duration::ZERO,
                hold: Duration::ZERO,
                percent: 0,
                param: 0,
            };
            probe.resources().iter().all(|r| !busy.contains(r))
        })
        .collect();
    if free.is_empty() {
        return None;
    }
    Some(free[rng.below(free.len() as u64) as usize])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(secs: u64) -> PlanOpts {
        PlanOpts {
            nodes: 3,
            files: 50,
            secs,
            concurrent: 2,
            kinds: Kind::ALL.to_vec(),
        }
    }

    #[test]
    fn a_seed_always_draws_the_same_plan() {
        let a = Plan::new(7, &opts(120));
        let b = Plan::new(7, &opts(120));
        let c = Plan::new(8, &opts(120));
        let show = |p: &Plan| p.faults.iter().map(Fault::describe).collect::<Vec<_>>();
        assert_eq!(show(&a), show(&b));
        assert_ne!(show(&a), show(&c));
    }

    #[test]
    fn faults_never_share_a_resource_and_end_in_time() {
        for seed in 0..50 {
            let p = Plan::new(seed, &opts(120));
            for f in &p.faults {
                assert!(f.at + f.hold <= Duration::from_secs(120));
                // Holding when f starts, f included.
                let holding = p
                    .faults
                    .iter()
                    .filter(|g| g.at <= f.at && f.at < g.at + g.hold)
                    .count();
                assert!(holding <= 2, "seed {seed}: {} overlaps", f.describe());
                for g in p.faults.iter().filter(|g| g.id != f.id) {
                    let overlap = g.at < f.at + f.hold && f.at < g.at + g.hold;
                    let shared = f.resources().iter().any(|r| g.resources().contains(r));
                    assert!(!(overlap && shared), "seed {seed}: {f:?} and {g:?}");
                }
            }
        }
    }

    #[test]
    fn a_narrowed_plan_draws_only_its_kinds() {
        let kinds = vec![Kind::KillNode, Kind::Origin(OriginFault::ShiftedRange)];
        let p = Plan::new(
            3,
            &PlanOpts {
                kinds: kinds.clone(),
                ..opts(60)
            },
        );
        assert!(p.faults.len() > 5);
        assert!(p.faults.iter().all(|f| kinds.contains(&f.kind)));
        for k in Kind::ALL {
            assert_eq!(Kind::from_name(k.name()), Some(k));
        }
    }

    #[test]
    fn a_two_minute_run_draws_every_kind() {
        for seed in 0..20 {
            let p = Plan::new(seed, &opts(120));
            for kind in Kind::ALL {
                assert!(
                    p.faults.iter().any(|f| f.kind == kind),
                    "seed {seed} never draws {}",
                    kind.name()
                );
            }
        }
    }
}
