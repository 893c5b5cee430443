//! Target: what peers send — gossip (membership and jobs), dataset
//! exports (catalog imports), chunk requests.
//!
//! The mesh hands these to pure merges and to the node through
//! `MeshHost`; the QUIC transport in between is not needed to reach them,
//! so the targets call the same functions with mutated peer messages
//! (seeds: `fuzz/corpus/peer-{requests,responses}/`) and with
//! structurally generated values at the edges of every number. A peer is
//! authenticated, but a buggy or compromised one must not crash a node,
//! plant records that break it later, or make its sums wrap.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::sample::select;
use prost::Message;
use shoal_cache_node::catalog::manifest::{key_path, MAX_CHUNKS};
use shoal_cache_node::catalog::{DatasetRecord, CHUNK_SIZE_RANGE, SKIPPED_EXAMPLES};
use shoal_cache_node::jobs::model::{self, Candidate, Liveness, TierRoom};
use shoal_cache_node::mesh::membership::Membership;
use shoal_cache_node::mesh::MeshHost;
use shoal_proto::v1::{self, peer_request::Kind as PReq, peer_response::Kind as PResp};

use super::{bodies, corpus, mutator, Fixture, CHUNK, NODE};

/// Numbers a peer may send that sums and casts trip over.
const EDGES: &[u64] = &[
    0,
    1,
    4096,
    1 << 32,
    i64::MAX as u64,
    (i64::MAX as u64) + 1,
    u64::MAX - 1,
    u64::MAX,
];

/// Peer messages decoded from mutated bodies (requests and responses alike).
#[derive(Debug, Default)]
struct Decoded {
    gossip: Vec<v1::Gossip>,
    fetches: Vec<v1::FetchChunk>,
    exports: Vec<v1::DatasetExport>,
    names: Vec<String>,
}

fn decode(bodies: &[Vec<u8>]) -> Decoded {
    let mut out = Decoded::default();
    for body in bodies {
        // A body may be either; try both.
        if let Ok(r) = v1::PeerRequest::decode(body.as_slice()) {
            match r.kind {
                Some(PReq::Gossip(g)) => out.gossip.push(g),
                Some(PReq::Fetch(f)) => out.fetches.push(f),
                Some(PReq::Export(d)) => out.names.push(d.name),
                None => {}
            }
        }
        if let Ok(r) = v1::PeerResponse::decode(body.as_slice()) {
            match r.kind {
                Some(PResp::Gossip(g)) => out.gossip.push(g),
                Some(PResp::Dataset(d)) => out.exports.push(d),
                _ => {}
            }
        }
    }
    out
}

/// Up to four peer messages, each a mutated seed message.
fn peer_messages() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let mut seeds = bodies("peer-requests");
    seeds.extend(bodies("peer-responses"));
    prop::collection::vec(mutator::hostile(seeds, &[]), 1..=4)
}

/// Membership after merging `rounds` of gossip: our own entry is never
/// taken from a peer, each member is the one with the highest heartbeat
/// seen, and `peer_holds` answers for exactly the members holding bytes.
fn check_membership(rounds: &[Vec<v1::Member>]) -> Result<(), TestCaseError> {
    let me = v1::Member {
        name: NODE.into(),
        heartbeat: 5,
        ..Default::default()
    };
    let now = Instant::now();
    let mut m = Membership::new(me.clone(), Duration::from_secs(3), Duration::from_secs(60));
    let mut want: HashMap<String, v1::Member> = HashMap::new();
    for members in rounds {
        m.merge(members.clone(), now);
        for x in members {
            if x.name == NODE {
                continue;
            }
            if want.get(&x.name).is_none_or(|w| x.heartbeat > w.heartbeat) {
                want.insert(x.name.clone(), x.clone());
            }
        }
    }
    prop_assert!(m.me() == &me);
    let all = m.all(now);
    prop_assert_eq!(all.len(), want.len() + 1);
    for (x, _) in &all {
        if x.name != NODE {
            prop_assert!(
                want.get(&x.name) == Some(x),
                "member {:?} is not the newest seen",
                x.name
            );
        }
    }
    for w in want.values() {
        for r in &w.residency {
            let holds = want.values().any(|o| {
                o.residency.iter().any(|q| {
                    q.dataset == r.dataset
                        && q.version == r.version
                        && (q.memory_bytes > 0 || q.disk_bytes > 0)
                })
            });
            prop_assert_eq!(m.peer_holds(&r.dataset, r.version, now), holds, "{:?}", r);
        }
    }
    // Whatever was merged, members silent past forget_after are gone.
    let later = now + Duration::from_secs(61);
    m.tick(later, |_| {});
    prop_assert_eq!(m.all(later).len(), 1);
    Ok(())
}

/// A job status keeps sums that never wrap: the whole is at least each
/// part, and the ETA is a count of seconds or -1.
fn check_status(s: &v1::JobStatus) -> Result<(), TestCaseError> {
    for p in &s.parts {
        prop_assert!(
            s.total_bytes >= p.total_bytes,
            "total {} < part {}",
            s.total_bytes,
            p.total_bytes
        );
        prop_assert!(
            s.done_bytes >= p.done_bytes,
            "done {} < part {}",
            s.done_bytes,
            p.done_bytes
        );
    }
    prop_assert!(s.eta_secs >= -1, "eta {}", s.eta_secs);
    prop_assert!(
        ["Pending", "Running", "Complete", "Failed", "Cancelled"].contains(&s.state.as_str()),
        "{}",
        s.state
    );
    Ok(())
}

/// Keeps an exported record's source on this host.
fn contain_export(fx: &Fixture, export: &mut v1::DatasetExport) {
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(&export.record_json) else {
        return;
    };
    let Some(spec) = value.get_mut("spec").and_then(|s| s.as_object_mut()) else {
        return;
    };
    let mut wire = v1::DatasetSpec {
        source: spec
            .get("source")
            .and_then(|s| s.as_str())
            .unwrap_or_default()
            .into(),
        ..Default::default()
    };
    fx.contain(&mut wire);
    spec.insert("source".into(), wire.source.into());
    spec.insert("s3_endpoint".into(), wire.s3_endpoint.into());
    export.record_json = serde_json::to_vec(&value).unwrap().into();
}

/// Imports an export and checks what the catalog holds afterwards: a
/// refused import stores nothing new, and whatever is stored passes the
/// checks every reader of the catalog relies on; reads of it are answered.
fn import_and_check(fx: &Fixture, mut export: v1::DatasetExport) -> Result<(), TestCaseError> {
    contain_export(fx, &mut export);
    let name = serde_json::from_slice::<DatasetRecord>(&export.record_json)
        .ok()
        .map(|r| r.spec.name);
    let before = name.as_ref().and_then(|n| fx.node.export_dataset(n).ok());
    let result = fx
        .run(|node| async move { node.import_dataset(export).map_err(|e| e.to_string()) })
        .map_err(TestCaseError::fail)?;
    let Some(name) = name else {
        prop_assert!(result.is_err(), "a record that does not parse was imported");
        return Ok(());
    };
    let after = fx.node.export_dataset(&name).ok();
    if result.is_err() {
        prop_assert!(before == after, "a refused import changed {:?}", name);
    }
    let Some(stored) = after else { return Ok(()) };
    let record: DatasetRecord = serde_json::from_slice(&stored.record_json).unwrap();
    prop_assert!(!record.versions.is_empty());
    prop_assert!(CHUNK_SIZE_RANGE.contains(&record.spec.chunk_size));
    for v in &record.versions {
        prop_assert!(v.skipped_examples.len() <= SKIPPED_EXAMPLES);
    }
    let mut reads = Vec::new();
    for v in &stored.versions {
        for e in &v.entries {
            prop_assert!(
                e.path.is_empty() || key_path(&e.path).is_ok(),
                "{:?}",
                e.path
            );
            if e.kind() == v1::FileKind::File {
                prop_assert!(CHUNK_SIZE_RANGE.contains(&e.chunk_size), "{:?}", e);
                prop_assert!(e.size.div_ceil(e.chunk_size) <= MAX_CHUNKS, "{:?}", e);
                prop_assert_eq!(e.file_version.len(), 16);
                for offset in [0, e.size / 2, e.size.saturating_sub(1)] {
                    reads.push(v1::Request::new(v1::request::Kind::Read(v1::ReadRange {
                        file: Some(v1::PathRef {
                            dataset: name.clone(),
                            version: v.version,
                            path: e.path.clone(),
                        }),
                        offset,
                        length: 4096,
                        direct: offset > 0,
                    })));
                }
            }
        }
    }
    let mut session = fx.node.session();
    for req in reads.into_iter().take(12) {
        let (resp, s) = fx.handle(session, req).map_err(TestCaseError::fail)?;
        session = s;
        prop_assert!(resp.kind.is_some());
    }
    Ok(())
}

/// A peer's delete at version v removes the dataset if it has no newer
/// version, and is otherwise a no-op; either way an answer, not a panic.
fn check_tombstone(fx: &Fixture, digest: v1::DatasetDigest) -> Result<(), TestCaseError> {
    let (name, version) = (digest.name, digest.version);
    let before = fx.node.export_dataset(&name).ok();
    let n = name.clone();
    let applied = fx
        .run(move |node| async move {
            node.apply_tombstone(&n, version)
                .await
                .map_err(|e| e.to_string())
        })
        .map_err(TestCaseError::fail)?;
    let after = fx.node.export_dataset(&name).ok();
    let latest = |e: &v1::DatasetExport| {
        serde_json::from_slice::<DatasetRecord>(&e.record_json)
            .unwrap()
            .latest()
            .version
    };
    if let (Ok(()), Some(b)) = (&applied, &before) {
        prop_assert_eq!(
            after.is_none(),
            latest(b) <= version,
            "{:?} at {}",
            name,
            version
        );
    }
    Ok(())
}

#[test]
fn hostile_gossip_merges_into_membership_and_jobs() {
    let fx = Fixture::open();
    proptest!(mutator::config(1000), |(data in peer_messages())| {
        fx.ensure_dataset();
        let d = decode(&data);
        let rounds: Vec<Vec<v1::Member>> = d.gossip.iter().map(|g| g.members.clone()).collect();
        check_membership(&rounds)?;
        for g in d.gossip {
            fx.run(|node| async move { node.absorb_jobs(g.jobs, g.parts) })
                .map_err(TestCaseError::fail)?;
            for digest in g.datasets.into_iter().filter(|d| d.deleted) {
                check_tombstone(&fx, digest)?;
            }
        }
        for status in fx.node.job_list() {
            check_status(&status)?;
        }
        let resp = fx.call(v1::Request::new(v1::request::Kind::Jobs(v1::ListJobs {})));
        prop_assert!(matches!(resp.kind, Some(v1::response::Kind::Jobs(_))));
    });
}

#[test]
fn hostile_exports_and_chunk_requests_are_checked() {
    let fx = Fixture::open();
    proptest!(mutator::config(1000), |(data in peer_messages())| {
        let d = decode(&data);
        for export in d.exports {
            import_and_check(&fx, export)?;
        }
        for name in d.names {
            let _ = fx.node.export_dataset(&name);
        }
        for f in d.fetches {
            let node = fx.node.clone();
            let g = f.clone();
            let _ = MeshHost::recorded_hash(node.as_ref(), &f);
            let served = fx
                .run(|node| async move { node.serve_chunk(&g).await.map_err(|e| e.to_string()) })
                .map_err(TestCaseError::fail)?;
            if let Ok((data, hash)) = served {
                prop_assert!(*blake3::hash(&data).as_bytes() == hash, "hash does not match the bytes");
                prop_assert!(data.len() as u64 <= CHUNK, "{} bytes for one chunk", data.len());
            }
        }
    });
}

/// Dataset records as JSON, mutated, exported with valid manifests.
#[test]
fn hostile_record_json_is_imported_or_refused() {
    let fx = Fixture::open();
    let dict: &'static [&'static [u8]] = &[
        b"\"chunk_size\":0,",
        b"18446744073709551615",
        b"-1",
        b"null",
        b"[]",
        b"{}",
        b"\"versions\":[],",
        b"\"skipped_examples\":[{\"key\":\"k\",\"reason\":\"r\"}],",
        b"1e999",
        b"\"\\u0000\"",
        b"\"../x\"",
    ];
    let records = mutator::hostile(mutator::seeds("dataset-record"), dict);
    proptest!(mutator::config(1000), |(json in records)| {
        let mut export = corpus::export("ignored");
        export.record_json = json.into();
        import_and_check(&fx, export)?;
    });
}

fn entry() -> impl Strategy<Value = v1::FileEntry> {
    let paths = select(
        &[
            "",
            "a",
            "dir",
            "dir/x.bin",
            "dir//x",
            "../x",
            "/abs",
            "a\0b",
            "./a",
            "dir/..",
            "é/ü",
        ][..],
    );
    (
        paths,
        0i32..5,
        select(EDGES),
        select(&[0u64, 1, 65_535, CHUNK, 64 << 20, (64 << 20) + 1, u64::MAX][..]),
        0usize..=17,
    )
        .prop_map(|(path, kind, size, chunk_size, id)| v1::FileEntry {
            path: path.into(),
            kind,
            size,
            chunk_size,
            file_version: vec![3u8; id].into(),
            ..Default::default()
        })
}

/// Records built field by field at the edges of what `validate_import`
/// checks.
#[test]
fn generated_records_import_only_when_valid() {
    let fx = Fixture::open();
    let names = select(&["imported", "other-set", "Bad_Name", ""][..]);
    let chunk_sizes = select(
        &[
            0u64,
            1,
            (64 << 10) - 1,
            CHUNK,
            64 << 20,
            (64 << 20) + 1,
            u64::MAX,
        ][..],
    );
    let versions = prop::collection::vec((1u64..6, 0usize..8), 0..4);
    let manifests = prop::collection::vec((0u64..7, prop::collection::vec(entry(), 0..6)), 0..4);
    proptest!(mutator::config(1000), |(name in names, chunk_size in chunk_sizes, versions in versions, manifests in manifests)| {
        let mut record = corpus::record(name);
        record.spec.chunk_size = chunk_size;
        record.versions = versions
            .into_iter()
            .map(|(v, skipped)| {
                let mut info = record.versions[0].clone();
                info.version = v;
                info.skipped_examples = vec![shoal_cache_node::catalog::manifest::SkippedKey {
                    key: "k".into(),
                    reason: "r".into(),
                }; skipped];
                info
            })
            .collect();
        let export = v1::DatasetExport {
            record_json: serde_json::to_vec(&record).unwrap().into(),
            versions: manifests
                .into_iter()
                .map(|(version, entries)| v1::ManifestVersion { version, entries })
                .collect(),
        };
        import_and_check(&fx, export)?;
    });
}

fn member() -> impl Strategy<Value = v1::Member> {
    let residency = (
        select(&["train", "other"][..]),
        0u64..3,
        select(EDGES),
        select(EDGES),
    )
        .prop_map(
            |(dataset, version, memory_bytes, disk_bytes)| v1::DatasetResidency {
                dataset: dataset.into(),
                version,
                memory_bytes,
                disk_bytes,
            },
        );
    (
        select(&["a", "b", NODE][..]),
        select(EDGES),
        prop::collection::vec(residency, 0..3),
    )
        .prop_map(|(name, heartbeat, residency)| v1::Member {
            name: name.into(),
            heartbeat,
            residency,
            ..Default::default()
        })
}

/// Membership on numbers peers report, at the edges of `u64`.
#[test]
fn membership_holds_on_peer_numbers() {
    let rounds = prop::collection::vec(prop::collection::vec(member(), 0..4), 1..4);
    proptest!(mutator::config(2000), |(rounds in rounds)| {
        check_membership(&rounds)?;
    });
}

fn tier() -> impl Strategy<Value = Option<TierRoom>> {
    proptest::option::of((select(EDGES), select(EDGES), select(EDGES)).prop_map(
        |(quota, high, pinned)| TierRoom {
            quota,
            high,
            pinned,
        },
    ))
}

fn candidate() -> impl Strategy<Value = Candidate> {
    (
        select(&["a", "b", "c", NODE][..]),
        any::<bool>(),
        tier(),
        tier(),
        select(EDGES),
    )
        .prop_map(|(name, alive, memory, disk, resident)| Candidate {
            name: name.into(),
            alive,
            labels: HashMap::new(),
            tiers: [memory, disk],
            resident,
            updated_ms: 0,
        })
}

fn part() -> impl Strategy<Value = v1::JobPart> {
    (
        select(&["a", "b", "c", NODE][..]),
        select(&["Pending", "Running", "Complete", "Failed", "Cancelled", "?"][..]),
        select(EDGES),
        select(EDGES),
        select(EDGES),
    )
        .prop_map(|(node, state, total, done, rate)| v1::JobPart {
            job: "j".into(),
            node: node.into(),
            state: state.into(),
            total_bytes: total,
            done_bytes: done,
            rate_bps: rate,
            ..Default::default()
        })
}

/// The job model on numbers peers report: sums saturate instead of
/// wrapping, and quota checks compare against what the tiers really have.
#[test]
fn job_model_arithmetic_holds_on_peer_numbers() {
    let inputs = (
        prop::collection::vec(candidate(), 0..5),
        prop::collection::vec(part(), 0..6),
        select(EDGES),
        0u32..3,
        any::<bool>(),
    );
    proptest!(mutator::config(2000), |((mut members, parts, total, replicas, whole) in inputs)| {
        // Members have distinct names (membership is keyed by name).
        let mut seen = std::collections::HashSet::new();
        members.retain(|m| seen.insert(m.name.clone()));
        let spec = v1::JobSpec {
            id: "j".into(),
            nodes: vec!["a".into(), "b".into(), "c".into(), NODE.into()],
            replicas,
            total_bytes: total,
            ..Default::default()
        };
        let parts: HashMap<String, v1::JobPart> = parts.into_iter().map(|p| (p.node.clone(), p)).collect();
        let live = |n: &str| members.iter().find(|m| m.name == n).map(|m| Liveness { alive: m.alive, updated_ms: 0 });
        check_status(&model::aggregate(&spec, &parts, &live, 1_700_000_000_000))?;
        let _ = model::replacements(&spec, &parts, &members);
        for k in 1..4u32 {
            if let Ok(picked) = model::select(&model::Targets::Replicas(k), &members) {
                let mut unique = picked.clone();
                unique.sort();
                unique.dedup();
                prop_assert_eq!(unique.len(), k as usize);
            }
        }
        for tier in [v1::TierTarget::Memory, v1::TierTarget::Disk, v1::TierTarget::AnyTier] {
            let targets: Vec<String> = members.iter().map(|m| m.name.clone()).collect();
            let fits = model::check_fit(&targets, &members, tier, &[0, 1], total, whole).is_ok();
            let idx: &[usize] = match tier {
                v1::TierTarget::Memory => &[0],
                v1::TierTarget::Disk => &[1],
                v1::TierTarget::AnyTier => &[0, 1],
            };
            // Each target as check_fit finds it (the first of its name).
            let want = targets.iter().all(|t| {
                let m = members.iter().find(|m| &m.name == t).unwrap();
                let usable = idx
                    .iter()
                    .filter_map(|&i| m.tiers[i])
                    .fold(0u64, |a, r| a.saturating_add(r.usable()));
                let have = if whole && tier == v1::TierTarget::AnyTier { m.resident.min(total) } else { 0 };
                total - have <= usable
            });
            prop_assert_eq!(fits, want, "{:?} {:?}", tier, members);
        }
    });
}

/// A peer's job record with long target lists costs time linear in its
/// size, not quadratic: merging and showing it stays fast.
#[test]
fn long_job_records_merge_in_linear_time() {
    let fx = Fixture::open();
    let n = 40_000;
    let spec = v1::JobSpec {
        id: "prewarm-train-long".into(),
        dataset: "train".into(),
        nodes: (0..n).map(|i| format!("n{i}")).collect(),
        replaced: (0..n).map(|i| format!("r{i}")).collect(),
        revision: 1,
        ..Default::default()
    };
    let started = Instant::now();
    fx.run(|node| async move { node.absorb_jobs(vec![spec], Vec::new()) })
        .unwrap();
    let status = fx.node.job("prewarm-train-long").unwrap();
    assert_eq!(status.parts.len(), n);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "merging a {n}-target job took {took:?}"
    );
}
