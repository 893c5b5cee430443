//! Target: clients' requests, decoded from mutated message bytes and
//! handled by `Node::handle` (framing has its own target in `shoal-proto`).
//!
//! A case is up to six requests, each a mutated seed message, handled in
//! order in one session (so an `Open` and a later `Close` meet). Every
//! request must be answered within the time limit, with this build's
//! protocol version and either a result or an error code and one line;
//! reads never return more than asked or than `MAX_READ`, and a read of
//! the fixture's dataset returns exactly the file's bytes.

use proptest::prelude::*;
use prost::Message;
use shoal_cache_node::catalog::manifest::key_path;
use shoal_cache_node::node::MAX_READ;
use shoal_proto::v1::{self, request::Kind as Req, response::Kind as Resp};

use super::{bodies, expected_read, mutator, Fixture, DATASET};

fn check(fx: &Fixture, req: &v1::Request, resp: &v1::Response) -> Result<(), TestCaseError> {
    prop_assert_eq!(resp.protocol_version, shoal_proto::PROTOCOL_VERSION);
    let Some(kind) = &resp.kind else {
        return Err(TestCaseError::fail("a response without a kind"));
    };
    if req.protocol_version != shoal_proto::PROTOCOL_VERSION {
        prop_assert!(
            matches!(kind, Resp::Error(e) if e.code == v1::ErrorCode::UnsupportedVersion as i32)
        );
    }
    match (req.kind.as_ref(), kind) {
        (_, Resp::Error(e)) => {
            prop_assert!(e.code != v1::ErrorCode::Unspecified as i32, "{:?}", e);
            prop_assert!(
                !e.message.is_empty() && !e.message.contains('\n'),
                "{:?}",
                e
            );
        }
        (Some(Req::Read(r)), Resp::Data(d)) => {
            prop_assert!(d.data.len() as u64 <= r.length.min(MAX_READ));
            let p = r.file.as_ref().expect("a read that succeeded names a file");
            if let Some(want) = fixture_bytes(fx, p, r.offset, r.length.min(MAX_READ)) {
                prop_assert!(d.data[..] == want[..], "wrong bytes for {:?}", r);
            }
        }
        (Some(Req::Stat(_)), Resp::Entry(e)) => {
            prop_assert!(
                e.path.is_empty() || key_path(&e.path).is_ok(),
                "{:?}",
                e.path
            );
        }
        (Some(Req::ListDir(_)), Resp::Dir(d)) => {
            let mut paths: Vec<&str> = d.entries.iter().map(|e| e.path.as_str()).collect();
            for p in &paths {
                prop_assert!(key_path(p).is_ok(), "{:?}", p);
            }
            let parents: std::collections::BTreeSet<&str> = paths
                .iter()
                .map(|p| p.rsplit_once('/').map_or("", |(d, _)| d))
                .collect();
            prop_assert!(
                parents.len() <= 1,
                "children of several directories: {:?}",
                parents
            );
            paths.dedup();
            prop_assert_eq!(paths.len(), d.entries.len());
        }
        (Some(Req::Backing(r)), Resp::Backing(b)) => {
            prop_assert!(b.length <= r.length, "{:?} for {:?}", b, r);
        }
        (Some(Req::Open(_)), Resp::Opened(o)) => {
            prop_assert!(o.handle > 0 && o.entry.is_some());
        }
        (_, Resp::Dataset(d)) => {
            prop_assert!(d.skipped_examples.len() <= 5);
            prop_assert!(d.cached_bytes <= d.total_bytes);
        }
        _ => {}
    }
    Ok(())
}

/// The bytes a read must return when it is of the fixture's dataset over
/// the fixture's files (an input may have re-created it elsewhere).
fn fixture_bytes(fx: &Fixture, p: &v1::PathRef, offset: u64, len: u64) -> Option<Vec<u8>> {
    if p.dataset != DATASET {
        return None;
    }
    let get = v1::Request::new(Req::Get(v1::DatasetRef {
        name: DATASET.into(),
    }));
    match fx.call(get).kind {
        Some(Resp::Dataset(d)) if d.spec.as_ref()?.source == fx.dataset_source() => {}
        _ => return None,
    }
    expected_read(&fx.origin_dir(), p.path.trim_matches('/'), offset, len)
}

/// Keeps what a request names on this host (see [`Fixture::contain`]),
/// and undoes mutations of the protocol version other than the seeds' own
/// unsupported version 2: a request of another version stops at the first
/// check, and the seeds cover that.
fn contain(fx: &Fixture, req: &mut v1::Request) {
    if req.protocol_version != 2 {
        req.protocol_version = shoal_proto::PROTOCOL_VERSION;
    }
    if let Some(Req::Create(v1::CreateDataset { spec: Some(spec) })) = &mut req.kind {
        fx.contain(spec);
    }
}

#[test]
fn hostile_requests_are_answered() {
    let fx = Fixture::open();
    let requests = prop::collection::vec(mutator::hostile(bodies("requests"), &[]), 1..=6);
    proptest!(mutator::config(2000), |(bodies in requests)| {
        fx.ensure_dataset();
        let mut session = fx.node.session();
        for body in bodies {
            let Ok(mut req) = v1::Request::decode(body.as_slice()) else { continue };
            contain(&fx, &mut req);
            let (resp, s) = fx.handle(session, req.clone()).map_err(TestCaseError::fail)?;
            session = s;
            check(&fx, &req, &resp)?;
        }
    });
}

/// Lengths and offsets at the edges of `u64` are clamped, not allocated
/// or overflowed, whatever the request.
#[test]
fn extreme_ranges_are_clamped() {
    let fx = Fixture::open();
    const EDGES: &[u64] = &[
        0,
        1,
        65_535,
        65_536,
        299_999,
        300_000,
        u64::MAX / 2,
        u64::MAX - 1,
        u64::MAX,
    ];
    let edge = proptest::sample::select(EDGES);
    let kinds = proptest::sample::select(&[0u8, 1, 2, 3][..]);
    let paths = proptest::sample::select(&["dir/b.bin", "a.bin", "empty.bin", "link"][..]);
    proptest!(mutator::config(200), |(offset in edge.clone(), length in edge, kind in kinds, path in paths)| {
        let range = v1::ReadRange {
            file: Some(v1::PathRef { dataset: DATASET.into(), version: 0, path: path.into() }),
            offset,
            length,
            direct: kind == 1,
        };
        let req = v1::Request::new(match kind {
            0 | 1 => Req::Read(range),
            2 => Req::Warm(range),
            _ => Req::Backing(range),
        });
        let (resp, _) = fx.handle(fx.node.session(), req.clone()).map_err(TestCaseError::fail)?;
        prop_assert!(!matches!(resp.kind, Some(Resp::Error(_))), "{:?}", resp);
        check(&fx, &req, &resp)?;
    });
}

/// Regression (store): an evict job purges a file's chunks while readers
/// fetch them again. `ChunkStore::purge` used to remove the backing file
/// while a chunk write into it was in flight (its record then pointed into
/// a removed file: EOF, or zeros once the next write recreated the file
/// sparse), and an eviction's or a move's hole punch could land on a file
/// recreated meanwhile (zeros in a chunk written since). A file with a
/// write or a punch in flight is no longer removed.
#[test]
fn evicting_while_reading_never_serves_zeros() {
    let fx = Fixture::open();
    let read = |path: &str, size: u64, direct: bool| {
        let req = v1::Request::new(Req::Read(v1::ReadRange {
            file: Some(v1::PathRef {
                dataset: DATASET.into(),
                version: 0,
                path: path.into(),
            }),
            offset: 0,
            length: size,
            direct,
        }));
        match fx.call(req).kind {
            Some(Resp::Data(d)) => d.data,
            other => panic!("{other:?}"),
        }
    };
    for round in 0..100 {
        let evict = v1::Request::new(Req::CreateJob(v1::CreateJob {
            spec: Some(v1::JobSpec {
                kind: v1::JobKind::Evict as i32,
                dataset: DATASET.into(),
                ..Default::default()
            }),
            all_nodes: true,
        }));
        assert!(matches!(fx.call(evict).kind, Some(Resp::Job(_))));
        for _ in 0..20 {
            for (path, size) in super::FILES {
                for direct in [false, true] {
                    let got = read(path, *size as u64, direct);
                    let want = expected_read(&fx.origin_dir(), path, 0, *size as u64).unwrap();
                    assert!(
                        got[..] == want[..],
                        "round {round}: wrong bytes of {path} (direct: {direct})"
                    );
                }
            }
        }
    }
}
