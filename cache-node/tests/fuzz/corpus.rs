//! The seeds of the binary targets, built from the real message types.
//!
//! Protobuf seeds are not written by hand: they are encoded here, and
//! `corpus_holds_the_canonical_seeds` checks that `fuzz/corpus/` holds
//! exactly these bytes (run it with `SHOAL_FUZZ_WRITE_CORPUS=1` to write
//! them after changing a seed or the protocol). Regression seeds added
//! after a failure sit next to them under other names and are not touched.

use shoal_cache_node::catalog::manifest::SkippedKey;
use shoal_cache_node::catalog::{DatasetRecord, Spec, VersionInfo};
use shoal_proto::v1::request::Kind as Req;
use shoal_proto::v1::{self, peer_request::Kind as PReq, peer_response::Kind as PResp};

use super::{mutator, CHUNK, DATASET, DATASET_SOURCE, NODE};

/// A frame stream of `msgs`.
fn stream<M: prost::Message>(msgs: &[M]) -> Vec<u8> {
    msgs.iter()
        .flat_map(|m| shoal_proto::encode_frame(m).expect("seed encodes").to_vec())
        .collect()
}

fn path(dataset: &str, version: u64, path: &str) -> v1::PathRef {
    v1::PathRef {
        dataset: dataset.into(),
        version,
        path: path.into(),
    }
}

fn range(p: v1::PathRef, offset: u64, length: u64, direct: bool) -> v1::ReadRange {
    v1::ReadRange {
        file: Some(p),
        offset,
        length,
        direct,
    }
}

fn job(kind: v1::JobKind, paths: &[&str], tier: v1::TierTarget) -> v1::JobSpec {
    v1::JobSpec {
        kind: kind as i32,
        dataset: DATASET.into(),
        paths: paths.iter().map(|p| p.to_string()).collect(),
        tier: tier as i32,
        pin: true,
        ..Default::default()
    }
}

fn requests() -> Vec<(&'static str, Vec<u8>)> {
    let r = v1::Request::new;
    let create = |name: &str, source: &str, chunk_size: u64, policy: v1::TierPolicy| {
        Req::Create(v1::CreateDataset {
            spec: Some(v1::DatasetSpec {
                name: name.into(),
                source: source.into(),
                chunk_size,
                tier_policy: policy as i32,
                pin: policy == v1::TierPolicy::DiskOnly,
                ..Default::default()
            }),
        })
    };
    let named = |name: &str| v1::DatasetRef { name: name.into() };
    vec![
        (
            "create-get-delete.bin",
            stream(&[
                r(create(
                    "fresh",
                    "file:///shoal-fuzz/origin/dir",
                    1 << 20,
                    v1::TierPolicy::DiskOnly,
                )),
                r(Req::Get(named("fresh"))),
                r(Req::Refresh(named("fresh"))),
                r(Req::Delete(named("fresh"))),
            ]),
        ),
        (
            "create-s3.bin",
            stream(&[r(Req::Create(v1::CreateDataset {
                spec: Some(v1::DatasetSpec {
                    name: "s3set".into(),
                    source: "s3://bucket-1/some/prefix".into(),
                    s3_endpoint: "http://127.0.0.1:9".into(),
                    region: "eu-west-1".into(),
                    chunk_size: 4 << 20,
                    tier_policy: v1::TierPolicy::MemoryOnly as i32,
                    pin: false,
                }),
            }))]),
        ),
        (
            "create-again.bin",
            stream(&[r(create(
                DATASET,
                DATASET_SOURCE,
                CHUNK,
                v1::TierPolicy::MemoryThenDisk,
            ))]),
        ),
        (
            "list-nodes-locality.bin",
            stream(&[
                r(Req::List(v1::ListDatasets {})),
                r(Req::Nodes(v1::ListNodes {})),
                r(Req::Locality(v1::LocalityRequest {
                    dataset: DATASET.into(),
                    version: 0,
                })),
                r(Req::Get(named(DATASET))),
            ]),
        ),
        ("refresh.bin", stream(&[r(Req::Refresh(named(DATASET)))])),
        (
            "stat-list-dir.bin",
            stream(&[
                r(Req::Stat(path(DATASET, 0, "dir/b.bin"))),
                r(Req::ListDir(path(DATASET, 1, "dir"))),
                r(Req::ListDir(path(DATASET, 0, "/"))),
                r(Req::Stat(path(DATASET, 0, "link"))),
            ]),
        ),
        (
            "read.bin",
            stream(&[
                r(Req::Read(range(
                    path(DATASET, 0, "a.bin"),
                    1000,
                    70_000,
                    false,
                ))),
                r(Req::Read(range(
                    path(DATASET, 1, "dir/b.bin"),
                    65_000,
                    140_000,
                    true,
                ))),
                r(Req::Read(range(
                    path(DATASET, 0, "link"),
                    0,
                    u64::MAX,
                    false,
                ))),
            ]),
        ),
        (
            "read-symlinks.bin",
            stream(&[
                r(Req::Read(range(path(DATASET, 0, "dir/up"), 10, 10, false))),
                r(Req::Read(range(path(DATASET, 0, "escape"), 0, 10, false))),
                r(Req::Read(range(path(DATASET, 0, "abs"), 0, 10, false))),
                r(Req::Read(range(path(DATASET, 0, "loop"), 0, 10, false))),
                r(Req::Read(range(path(DATASET, 0, "dir"), 0, 10, false))),
            ]),
        ),
        (
            "backing-warm.bin",
            stream(&[
                r(Req::Warm(range(
                    path(DATASET, 0, "dir/b.bin"),
                    0,
                    u64::MAX,
                    false,
                ))),
                r(Req::Backing(range(
                    path(DATASET, 0, "dir/b.bin"),
                    70_000,
                    u64::MAX,
                    false,
                ))),
                r(Req::Warm(range(
                    path(DATASET, 0, "empty.bin"),
                    u64::MAX,
                    1,
                    false,
                ))),
            ]),
        ),
        (
            "open-close.bin",
            stream(&[
                r(Req::Open(path(DATASET, 0, "link"))),
                r(Req::Close(v1::Handle { id: 1 })),
                r(Req::Close(v1::Handle { id: 1 })),
                r(Req::Open(path(DATASET, 0, "dir/sub/c.txt"))),
            ]),
        ),
        (
            "jobs.bin",
            stream(&[
                r(Req::CreateJob(v1::CreateJob {
                    spec: Some(job(v1::JobKind::Prewarm, &["dir"], v1::TierTarget::Memory)),
                    all_nodes: false,
                })),
                r(Req::Jobs(v1::ListJobs {})),
                r(Req::Job(v1::JobRef {
                    id: "prewarm-train-000001".into(),
                })),
                r(Req::CancelJob(v1::JobRef {
                    id: "prewarm-train-000001".into(),
                })),
            ]),
        ),
        (
            "jobs-targets.bin",
            stream(&[
                r(Req::CreateJob(v1::CreateJob {
                    spec: Some(job(v1::JobKind::Evict, &[], v1::TierTarget::AnyTier)),
                    all_nodes: true,
                })),
                r(Req::CreateJob(v1::CreateJob {
                    spec: Some(v1::JobSpec {
                        replicas: 1,
                        selector: [("zone".to_string(), "a".to_string())].into(),
                        ..job(
                            v1::JobKind::Unpin,
                            &["a.bin", "/dir/"],
                            v1::TierTarget::Disk,
                        )
                    }),
                    all_nodes: false,
                })),
                r(Req::CreateJob(v1::CreateJob {
                    spec: Some(v1::JobSpec {
                        nodes: vec![NODE.into(), "elsewhere".into()],
                        ..job(v1::JobKind::Prewarm, &[], v1::TierTarget::AnyTier)
                    }),
                    all_nodes: false,
                })),
            ]),
        ),
        (
            // Found by this target: a region with a control character made
            // the S3 SDK panic while signing the listing request.
            "regress-s3-region-nul.bin",
            stream(&[r(Req::Create(v1::CreateDataset {
                spec: Some(v1::DatasetSpec {
                    name: "s3set".into(),
                    source: "s3://bucket-1/some/prefix".into(),
                    region: "eu-\0west-1".into(),
                    ..Default::default()
                }),
            }))]),
        ),
        (
            "versions-and-tokens.bin",
            stream(&[
                v1::Request {
                    protocol_version: 2,
                    ..r(Req::List(v1::ListDatasets {}))
                },
                v1::Request {
                    auth_token: "secret".into(),
                    ..r(Req::Get(named(DATASET)))
                },
                v1::Request {
                    protocol_version: shoal_proto::PROTOCOL_VERSION,
                    auth_token: String::new(),
                    kind: None,
                },
            ]),
        ),
    ]
}

fn member(name: &str, heartbeat: u64) -> v1::Member {
    v1::Member {
        name: name.into(),
        peer_addr: "127.0.0.1:7071".into(),
        api_addr: "127.0.0.1:7070".into(),
        heartbeat,
        labels: [("zone".to_string(), "a".to_string())].into(),
        tiers: vec![
            v1::TierUsage {
                name: "memory".into(),
                dir: "/dev/shm/shoal".into(),
                used_bytes: 1 << 20,
                quota_bytes: 8 << 20,
                pinned_bytes: 4096,
                high_bytes: 7 << 20,
            },
            v1::TierUsage {
                name: "disk".into(),
                dir: "/var/lib/shoal/chunks".into(),
                used_bytes: 0,
                quota_bytes: 1 << 30,
                pinned_bytes: 0,
                high_bytes: 9 << 27,
            },
        ],
        residency: vec![v1::DatasetResidency {
            dataset: DATASET.into(),
            version: 1,
            memory_bytes: 4096,
            disk_bytes: 1,
        }],
        bandwidth: Some(v1::Bandwidth {
            origin_bps: 1 << 27,
            peer_bps: 1 << 30,
            measured_at_ms: 1_700_000_000_000,
        }),
        updated_ms: 1_700_000_000_000,
        started_ms: 1_699_999_000_000,
    }
}

/// Gossip as a peer sends it: members, dataset digests (one a delete), a
/// job targeting this node and another, and both parts.
pub fn gossip() -> v1::Gossip {
    let spec = v1::JobSpec {
        id: "prewarm-train-00beef".into(),
        version: 1,
        nodes: vec![NODE.into(), "peer-1".into()],
        replicas: 2,
        revision: 3,
        created_unix: 1_700_000_000,
        created_by: "peer-1".into(),
        total_bytes: 400_000,
        replaced: vec!["gone".into()],
        ..job(v1::JobKind::Prewarm, &["dir"], v1::TierTarget::AnyTier)
    };
    let part = |node: &str, state: &str| v1::JobPart {
        job: spec.id.clone(),
        node: node.into(),
        state: state.into(),
        total_bytes: 400_000,
        done_bytes: 100_000,
        memory_bytes: 50_000,
        disk_bytes: 50_000,
        rate_bps: 1 << 20,
        failed_chunks: 1,
        updated_ms: 1_700_000_000_500,
        message: String::new(),
        origin_bytes: 100_000,
        peer_bytes: 0,
        started_unix_ms: 1_700_000_000_000,
        finished_unix_ms: 0,
    };
    v1::Gossip {
        from: "peer-1".into(),
        members: vec![member("peer-1", 42), member("peer-2", 7), member(NODE, 1)],
        datasets: vec![
            v1::DatasetDigest {
                name: DATASET.into(),
                version: 2,
                deleted: false,
            },
            v1::DatasetDigest {
                name: DATASET.into(),
                version: 1,
                deleted: true,
            },
            v1::DatasetDigest {
                name: "gone".into(),
                version: 3,
                deleted: true,
            },
        ],
        jobs: vec![spec.clone()],
        parts: vec![part("peer-1", "Running"), part("peer-2", "Complete")],
    }
}

fn fetch(path: &str, index: u32, resident_only: bool) -> v1::FetchChunk {
    v1::FetchChunk {
        dataset: DATASET.into(),
        version: 1,
        path: path.into(),
        index,
        from: "peer-1".into(),
        resident_only,
        may_redirect: !resident_only,
    }
}

fn peer_requests() -> Vec<(&'static str, Vec<u8>)> {
    let r = v1::PeerRequest::new;
    vec![
        ("gossip.bin", stream(&[r(PReq::Gossip(gossip()))])),
        (
            "fetch.bin",
            stream(&[
                r(PReq::Fetch(fetch("dir/b.bin", 1, false))),
                r(PReq::Fetch(fetch("a.bin", 0, true))),
                r(PReq::Fetch(fetch("link", 4, false))),
            ]),
        ),
        (
            "export.bin",
            stream(&[r(PReq::Export(v1::DatasetRef {
                name: DATASET.into(),
            }))]),
        ),
    ]
}

/// A dataset record as `export_dataset` sends it (JSON): two versions,
/// one with skipped keys.
pub fn record(name: &str) -> DatasetRecord {
    let version = |v: u64, skipped: Vec<SkippedKey>| VersionInfo {
        version: v,
        created_unix: 1_700_000_000 + v as i64,
        files: 3,
        directories: 2,
        total_bytes: 400_012,
        skipped: skipped.len() as u64,
        skipped_examples: skipped,
    };
    DatasetRecord {
        spec: Spec {
            name: name.into(),
            source: DATASET_SOURCE.into(),
            s3_endpoint: String::new(),
            region: String::new(),
            chunk_size: CHUNK,
            tier_policy: "MEMORY_THEN_DISK".into(),
            pin: false,
        },
        created_unix: 1_700_000_000,
        versions: vec![
            version(1, Vec::new()),
            version(
                2,
                vec![SkippedKey {
                    key: "a//b".into(),
                    reason: "has an empty path segment".into(),
                }],
            ),
        ],
    }
}

/// Manifest entries as peers export them: the root, directories, files
/// (with the fixture's sizes) and a symlink.
pub fn entries() -> Vec<v1::FileEntry> {
    let dir = |p: &str| v1::FileEntry {
        path: p.into(),
        kind: v1::FileKind::Directory as i32,
        mode: 0o40555,
        ..Default::default()
    };
    let file = |p: &str, size: u64, id: u8| v1::FileEntry {
        path: p.into(),
        kind: v1::FileKind::File as i32,
        size,
        mtime_nanos: 1_700_000_000_000_000_000,
        mode: 0o100444,
        file_version: vec![id; 16].into(),
        chunk_size: CHUNK,
        ..Default::default()
    };
    vec![
        dir(""),
        dir("dir"),
        file("a.bin", 100_000, 1),
        file("dir/b.bin", 300_000, 2),
        file("empty.bin", 0, 3),
        v1::FileEntry {
            path: "link".into(),
            kind: v1::FileKind::Symlink as i32,
            size: 9,
            symlink_target: "dir/b.bin".into(),
            ..Default::default()
        },
    ]
}

/// A dataset export as a peer answers `Export`.
pub fn export(name: &str) -> v1::DatasetExport {
    v1::DatasetExport {
        record_json: serde_json::to_vec(&record(name)).unwrap().into(),
        versions: vec![
            v1::ManifestVersion {
                version: 1,
                entries: entries(),
            },
            v1::ManifestVersion {
                version: 2,
                entries: entries()[..4].to_vec(),
            },
        ],
    }
}

fn peer_responses() -> Vec<(&'static str, Vec<u8>)> {
    let r = v1::PeerResponse::new;
    let data = super::content("dir/b.bin", CHUNK as usize);
    vec![
        ("gossip.bin", stream(&[r(PResp::Gossip(gossip()))])),
        (
            "chunk.bin",
            stream(&[r(PResp::Chunk(v1::ChunkData {
                hash: blake3::hash(&data).as_bytes().to_vec().into(),
                data: data.into(),
            }))]),
        ),
        (
            "redirect.bin",
            stream(&[r(PResp::Redirect(v1::Redirect {
                hash: vec![9u8; 32].into(),
                holders: vec!["peer-2".into(), NODE.into()],
            }))]),
        ),
        (
            "export.bin",
            stream(&[r(PResp::Dataset(export("imported")))]),
        ),
        (
            "error.bin",
            stream(&[r(PResp::Error(v1::Error {
                code: v1::ErrorCode::NotFound as i32,
                message: "dataset \"x\" not found".into(),
            }))]),
        ),
    ]
}

fn records() -> Vec<(&'static str, Vec<u8>)> {
    let mut pinned = record("pinned-set");
    pinned.spec.tier_policy = "DISK_ONLY".into();
    pinned.spec.pin = true;
    pinned.spec.chunk_size = 64 << 20;
    vec![
        (
            "record.json",
            serde_json::to_vec_pretty(&record("imported")).unwrap(),
        ),
        ("pinned.json", serde_json::to_vec(&pinned).unwrap()),
    ]
}

/// Every canonical seed: (target, file name, bytes).
fn canonical() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let mut out = Vec::new();
    for (target, seeds) in [
        ("requests", requests()),
        ("peer-requests", peer_requests()),
        ("peer-responses", peer_responses()),
        ("dataset-record", records()),
    ] {
        out.extend(seeds.into_iter().map(|(name, bytes)| (target, name, bytes)));
    }
    out
}

#[test]
fn corpus_holds_the_canonical_seeds() {
    let write = std::env::var_os("SHOAL_FUZZ_WRITE_CORPUS").is_some();
    for (target, name, bytes) in canonical() {
        let file = mutator::corpus_dir(target).join(name);
        if write {
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(&file, &bytes).unwrap();
        }
        let on_disk = std::fs::read(&file).unwrap_or_default();
        assert!(
            on_disk == bytes,
            "{} differs from its seed: run this test with SHOAL_FUZZ_WRITE_CORPUS=1",
            file.display()
        );
    }
}
