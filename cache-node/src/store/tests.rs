//! Store tests on real files and a real RocksDB, with a local-directory
//! origin wrapped in the fault-injecting double.

use std::sync::Arc;

use proptest::prelude::*;

use super::*;
use crate::origin::failure::FailureOrigin;
use crate::origin::local::LocalOrigin;
use crate::origin::{ObjectKind, Origin};

const CHUNK: u64 = 64 << 10;

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    data: Vec<Vec<u8>>,
    origin: Arc<FailureOrigin>,
    objects: Vec<ObjectMeta>,
}

impl Fixture {
    async fn new(sizes: &[usize]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("origin");
        std::fs::create_dir_all(&root).unwrap();
        let mut data = Vec::new();
        for (i, &size) in sizes.iter().enumerate() {
            let bytes: Vec<u8> = (0..size).map(|j| ((j * 31 + i * 7) % 251) as u8).collect();
            std::fs::write(root.join(format!("f{i}")), &bytes).unwrap();
            data.push(bytes);
        }
        let origin = Arc::new(FailureOrigin::new(Arc::new(LocalOrigin::new(root.clone()))));
        let mut objects = origin.list().await.unwrap();
        objects.retain(|o| o.kind == ObjectKind::File);
        objects.sort_by_key(|o| o.path[1..].parse::<usize>().unwrap());
        Self {
            _dir: dir,
            root,
            data,
            origin,
            objects,
        }
    }

    fn file(&self, i: usize, placement: Placement) -> FileRef {
        let mut fv = [0u8; 16];
        fv[0] = i as u8;
        FileRef {
            fv: FileVersionId(fv),
            size: self.data[i].len() as u64,
            chunk_size: CHUNK,
            object: self.objects[i].clone(),
            origin: self.origin.clone(),
            placement,
            locator: None,
        }
    }

    fn tier(&self, name: &str, quota: u64) -> Option<TierConfig> {
        Some(TierConfig {
            dir: self.root.parent().unwrap().join(name),
            quota,
            high: 0.9,
            low: 0.5,
        })
    }

    fn open(&self, memory: u64, disk: u64) -> (ChunkStore, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::default());
        let index = Arc::new(Index::open(&self.root.parent().unwrap().join("index")).unwrap());
        let cfg = StoreConfig {
            memory: self.tier("mem", memory),
            disk: self.tier("disk", disk),
            origin_concurrency: 4,
            read_concurrency: 4,
            verify_recovered: false,
        };
        (
            ChunkStore::open(index, &cfg, metrics.clone()).unwrap(),
            metrics,
        )
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn concurrent_misses_share_one_origin_fetch() {
    rt().block_on(async {
        let fx = Fixture::new(&[CHUNK as usize * 2]).await;
        let (store, _) = fx.open(1 << 20, 1 << 20);
        fx.origin.set_delay(std::time::Duration::from_millis(50));
        let file = fx.file(0, Placement::default());
        let reads = (0..16).map(|_| store.read(&file, 10, 100));
        let got = futures::future::join_all(reads).await;
        for g in got {
            assert_eq!(&g.unwrap()[..], &fx.data[0][10..110]);
        }
        assert_eq!(
            fx.origin.reads(),
            1,
            "one origin request for 16 concurrent misses"
        );
    });
}

#[test]
fn memory_evicts_by_demoting_to_disk_and_disk_drops() {
    rt().block_on(async {
        let fx = Fixture::new(&[CHUNK as usize * 10]).await;
        // Memory holds 4 chunks, disk 6.
        let (store, metrics) = fx.open(4 * CHUNK, 6 * CHUNK);
        let file = fx.file(0, Placement::default());
        let all = store.read(&file, 0, file.size).await.unwrap();
        assert_eq!(&all[..], &fx.data[0][..]);
        let usage = store.usage();
        for u in &usage {
            assert!(u.used <= u.quota, "{:?} over quota", u.tier);
        }
        let text = metrics.encode();
        assert!(
            text.contains("shoal_evictions_total{tier=\"memory\",action=\"demote\"}"),
            "{text}"
        );
        // Everything still reads back correctly, from whichever tier.
        let again = store.read(&file, 0, file.size).await.unwrap();
        assert_eq!(&again[..], &fx.data[0][..]);
    });
}

#[test]
fn demoted_chunks_read_again_come_back_to_memory() {
    rt().block_on(async {
        let fx = Fixture::new(&[CHUNK as usize * 4, CHUNK as usize * 4]).await;
        // Memory: 8 chunks, eviction above 7.2 down to 4; disk plenty.
        let (store, metrics) = fx.open(8 * CHUNK, 16 * CHUNK);
        let a = fx.file(0, Placement::default());
        let b = fx.file(1, Placement::default());
        // a chunk by chunk, so chunk 0 is the least recently used (one
        // read of the whole file fetches its chunks in any order).
        for i in 0..4 {
            store.read(&a, i * CHUNK, CHUNK).await.unwrap();
        }
        store.read(&b, 0, b.size).await.unwrap();
        // b's last chunk pushed a's three oldest chunks down to disk.
        assert_eq!(
            store.resident_of(std::slice::from_ref(&a)),
            [CHUNK, 3 * CHUNK]
        );
        // One read of a demoted chunk is not enough; the second promotes it
        // (memory has room below its high watermark).
        store.read(&a, 0, 10).await.unwrap();
        assert_eq!(
            store.resident_of(std::slice::from_ref(&a)),
            [CHUNK, 3 * CHUNK]
        );
        let got = store.read(&a, 0, 10).await.unwrap();
        assert_eq!(&got[..], &fx.data[0][..10]);
        // The move is the chunk's flight; the reader did not wait for it.
        store.quiesce().await;
        assert_eq!(
            store.resident_of(std::slice::from_ref(&a)),
            [2 * CHUNK, 2 * CHUNK]
        );
        assert!(metrics
            .encode()
            .contains("shoal_evictions_total{tier=\"disk\",action=\"promote\"} 1"));
        // And it reads back from memory correctly.
        let all = store.read(&a, 0, a.size).await.unwrap();
        assert_eq!(&all[..], &fx.data[0][..]);
    });
}

#[test]
fn pinned_chunks_stay_and_overflow_is_served_uncached() {
    rt().block_on(async {
        let fx = Fixture::new(&[CHUNK as usize * 3, CHUNK as usize * 3]).await;
        let (store, metrics) = fx.open(0, 3 * CHUNK);
        let pinned = fx.file(
            0,
            Placement {
                policy: TierPolicy::DiskOnly,
                pin: true,
                only: None,
            },
        );
        store.read(&pinned, 0, pinned.size).await.unwrap();
        let other = fx.file(
            1,
            Placement {
                policy: TierPolicy::DiskOnly,
                pin: false,
                only: None,
            },
        );
        let got = store.read(&other, 0, other.size).await.unwrap();
        assert_eq!(&got[..], &fx.data[1][..]);
        assert_eq!(store.resident_bytes(&pinned.fv), pinned.size);
        assert_eq!(store.resident_bytes(&other.fv), 0);
        assert_eq!(metrics.uncached_reads.get(), 3);
    });
}

#[test]
fn changed_origin_is_reported_never_mixed() {
    rt().block_on(async {
        let fx = Fixture::new(&[CHUNK as usize * 2]).await;
        let (store, _) = fx.open(1 << 20, 0);
        let file = fx.file(0, Placement::default());
        store.read(&file, 0, 10).await.unwrap();
        std::fs::write(fx.root.join("f0"), vec![1u8; CHUNK as usize * 2]).unwrap();
        let err = store.read(&file, CHUNK, 10).await.unwrap_err();
        assert!(
            matches!(err.root(), StoreError::Origin(OriginError::Changed { .. })),
            "{err}"
        );
        // The chunk cached before the change is still the old bytes.
        assert_eq!(
            &store.read(&file, 0, 10).await.unwrap()[..],
            &fx.data[0][..10]
        );
    });
}

#[test]
fn corrupt_refetch_is_refused_against_the_recorded_hash() {
    rt().block_on(async {
        let fx = Fixture::new(&[CHUNK as usize]).await;
        let file = fx.file(
            0,
            Placement {
                policy: TierPolicy::MemoryOnly,
                pin: false,
                only: None,
            },
        );
        {
            let (store, _) = fx.open(CHUNK, 0);
            store.read(&file, 0, 1).await.unwrap();
            store.purge(file.fv).await;
        }
        let (store, _) = fx.open(CHUNK, 0);
        fx.origin.corrupt_next_reads(1);
        let err = store.read(&file, 0, 1).await.unwrap_err();
        assert!(
            matches!(err.root(), StoreError::Origin(OriginError::Changed { .. })),
            "{err}"
        );
        assert_eq!(store.read(&file, 0, 4).await.unwrap()[..], fx.data[0][..4]);
    });
}

#[test]
fn recovery_punches_unfinished_writes_and_drops_missing_files() {
    rt().block_on(async {
        let fx = Fixture::new(&[CHUNK as usize * 2]).await;
        let file = fx.file(0, Placement::default());
        let key = file.key(1);
        {
            let (store, _) = fx.open(1 << 20, 1 << 20);
            store.read(&file, 0, file.size).await.unwrap();
            store.flush_access().unwrap();
            // Simulate a crash mid-write of chunk 1: a pending marker and garbage bytes.
            let index = store.inner.index.clone();
            let rec = store.state().get(&key).unwrap().record();
            let mut batch = WriteBatch::default();
            batch.delete(keys::resident(&key));
            batch.put(keys::pending(&key), rec.encode());
            index.write(batch).unwrap();
        }
        let (store, _) = fx.open(1 << 20, 1 << 20);
        assert!(
            store.state().get(&key).is_none(),
            "unfinished chunk must not be resident"
        );
        assert!(
            store.state().get(&file.key(0)).is_some(),
            "finished chunk survives"
        );
        assert!(store.inner.index.scan(keys::PENDING).unwrap().is_empty());
        let before = fx.origin.reads();
        let all = store.read(&file, 0, file.size).await.unwrap();
        assert_eq!(&all[..], &fx.data[0][..]);
        assert_eq!(
            fx.origin.reads(),
            before + 1,
            "only the unfinished chunk is fetched again"
        );
        drop(store);
        // Files that are not ours in a tier directory are never touched.
        let mem = fx.root.parent().unwrap().join("mem");
        std::fs::write(mem.join("not-a-backing-file"), b"keep me").unwrap();
        std::fs::create_dir_all(mem.join("some-dir")).unwrap();
        let (store, _) = fx.open(1 << 20, 1 << 20);
        drop(store);
        assert_eq!(
            std::fs::read(mem.join("not-a-backing-file")).unwrap(),
            b"keep me"
        );
        assert!(mem.join("some-dir").is_dir());
        // A memory tier wiped by a reboot: records whose files are gone are dropped.
        std::fs::remove_dir_all(fx.root.parent().unwrap().join("mem")).unwrap();
        let (store, _) = fx.open(1 << 20, 1 << 20);
        assert_eq!(store.resident_bytes(&file.fv), 0);
    });
}

#[derive(Debug, Clone)]
enum Op {
    Read { file: usize, offset: u64, len: u64 },
    Reopen,
    Purge(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0usize..3, 0u64..(CHUNK * 5), 1u64..(CHUNK * 3)).prop_map(|(file, offset, len)| Op::Read { file, offset, len }),
        1 => Just(Op::Reopen),
        1 => (0usize..3).prop_map(Op::Purge),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random reads, restarts and purges on both tiers (and each alone)
    /// against the reference model — the origin's bytes: every read returns
    /// exactly the model's bytes and no tier ever exceeds its quota.
    #[test]
    fn reads_match_the_origin_model(
        ops in proptest::collection::vec(op(), 1..40),
        tiers in prop_oneof![Just((4u64, 5u64)), Just((0, 6)), Just((7, 0))],
    ) {
        rt().block_on(async {
            let fx = Fixture::new(&[(CHUNK * 4 + 123) as usize, CHUNK as usize, (CHUNK * 2 - 1) as usize]).await;
            let (mut store, _) = fx.open(tiers.0 * CHUNK, tiers.1 * CHUNK);
            for op in ops {
                match op {
                    Op::Read { file, offset, len } => {
                        let f = fx.file(file, Placement::default());
                        let got = store.read(&f, offset, len).await.unwrap();
                        let model = &fx.data[file];
                        let s = (offset as usize).min(model.len());
                        let e = ((offset + len) as usize).min(model.len());
                        prop_assert_eq!(&got[..], &model[s..e]);
                    }
                    Op::Reopen => {
                        // As a clean stop does: flights (a promotion the
                        // last read started) end before the index closes.
                        store.quiesce().await;
                        store.flush_access().unwrap();
                        drop(store);
                        store = fx.open(tiers.0 * CHUNK, tiers.1 * CHUNK).0;
                    }
                    Op::Purge(file) => {
                        store.purge(fx.file(file, Placement::default()).fv).await;
                        prop_assert_eq!(store.resident_bytes(&fx.file(file, Placement::default()).fv), 0);
                    }
                }
                for u in store.usage() {
                    prop_assert!(u.used <= u.quota);
                }
            }
            Ok(())
        })?;
    }
}

/// A peer source that never has the bytes but may say a peer holds the file.
struct NoBytesPeer {
    holds: bool,
}

#[async_trait::async_trait]
impl PeerSource for NoBytesPeer {
    async fn fetch(&self, _file: &FileRef, _idx: u32) -> Option<(Bytes, [u8; 32])> {
        None
    }

    fn may_hold(&self, _file: &FileRef) -> bool {
        self.holds
    }
}

#[test]
fn direct_reads_fetch_exactly_their_bytes_and_leave_chunks_cold() {
    rt().block_on(async {
        let fx = Fixture::new(&[CHUNK as usize * 4]).await;
        let (store, metrics) = fx.open(1 << 20, 1 << 20);
        let file = fx.file(0, Placement::default());
        let want = |a: u64, b: u64| &fx.data[0][a as usize..b as usize];

        let got = store.read_direct(&file, CHUNK + 100, 4096).await.unwrap();
        assert_eq!(&got[..], want(CHUNK + 100, CHUNK + 4196));
        assert_eq!(fx.origin.reads(), 1);
        assert_eq!(store.resident_bytes(&file.fv), 0, "the chunk stays cold");
        // Across a chunk boundary, still exactly the bytes asked for.
        let got = store.read_direct(&file, 2 * CHUNK - 10, 20).await.unwrap();
        assert_eq!(&got[..], want(2 * CHUNK - 10, 2 * CHUNK + 10));
        assert_eq!(fx.origin.reads(), 2);
        assert_eq!(store.resident_bytes(&file.fv), 0);

        // A resident chunk serves direct reads from its tier.
        store.read(&file, CHUNK, CHUNK).await.unwrap();
        assert_eq!(store.resident_bytes(&file.fv), CHUNK);
        let reads = fx.origin.reads();
        let got = store.read_direct(&file, CHUNK + 7, 1000).await.unwrap();
        assert_eq!(&got[..], want(CHUNK + 7, CHUNK + 1007));
        assert_eq!(fx.origin.reads(), reads, "served from the tier");
        // Clamped to the file's end, and empty past it.
        let got = store.read_direct(&file, file.size - 5, 100).await.unwrap();
        assert_eq!(&got[..], want(file.size - 5, file.size));
        assert!(store
            .read_direct(&file, file.size, 10)
            .await
            .unwrap()
            .is_empty());
        assert!(metrics.encode().contains("shoal_direct_reads_total 3"));
    });
}

#[test]
fn direct_reads_fill_chunks_as_usual_when_a_peer_may_hold_the_file() {
    rt().block_on(async {
        let fx = Fixture::new(&[CHUNK as usize * 2]).await;
        let (store, _) = fx.open(1 << 20, 1 << 20);
        let file = fx.file(0, Placement::default());
        store.set_peers(Arc::new(NoBytesPeer { holds: false }));
        store.read_direct(&file, 0, 10).await.unwrap();
        assert_eq!(store.resident_bytes(&file.fv), 0);
        drop(store);
        let (store, _) = fx.open(1 << 20, 1 << 20);
        store.set_peers(Arc::new(NoBytesPeer { holds: true }));
        let got = store.read_direct(&file, 0, 10).await.unwrap();
        assert_eq!(&got[..], &fx.data[0][..10]);
        assert_eq!(
            store.resident_bytes(&file.fv),
            CHUNK,
            "fetched whole (peer first), so the cluster's copy is used"
        );
    });
}

/// Resident chunks of `files` per tier, checked against the store's own
/// accounting: nothing left half-moved (leaving) and no reservation leaked.
fn assert_accounting(store: &ChunkStore, files: &[FileRef]) {
    let st = store.state();
    let mut sum = [0u64; 2];
    for f in files {
        for key in st.chunks_of(&f.fv) {
            let e = st.get(&key).expect("listed chunk is resident");
            assert!(!e.leaving, "chunk {key:?} left marked leaving");
            assert_eq!(e.readers, 0, "chunk {key:?} left with readers");
            sum[e.tier as usize] += u64::from(e.len);
        }
    }
    for t in TierKind::ALL {
        assert_eq!(
            st.used(t),
            sum[t as usize],
            "{} tier accounts for bytes no chunk holds (a reservation leaked)",
            t.name()
        );
    }
}

/// Readers dropped at any point (a cancelled prewarm job, a multi-chunk
/// read abandoned when one chunk fails) never leave a chunk stuck: every
/// chunk reads back right afterwards, the tiers account exactly for what
/// they hold, and a fetch whose only reader went away still completes
/// (the next reader gets its bytes without asking the origin again).
#[test]
fn readers_dropped_mid_flight_leave_nothing_stuck_or_leaked() {
    use rand::{Rng, SeedableRng};
    rt().block_on(async {
        let fx = Fixture::new(&[CHUNK as usize * 8; 3]).await;
        // 24 chunks over 5 in memory and 8 on disk: eviction, demotion
        // and promotion on almost every fetch.
        let (store, _) = fx.open(5 * CHUNK, 8 * CHUNK);
        let files: Vec<FileRef> = (0..3).map(|i| fx.file(i, Placement::default())).collect();
        fx.origin.set_delay(Duration::from_millis(1));
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for round in 0..60 {
            if round % 4 == 0 {
                fx.origin.fail_next_reads(1);
            }
            let reads = (0..12).map(|_| {
                let f = files[rng.gen_range(0..3)].clone();
                let offset = rng.gen_range(0..f.size);
                let len = rng.gen_range(1..3 * CHUNK);
                let after = Duration::from_micros(rng.gen_range(0..4000));
                let store = store.clone();
                async move {
                    let _ = tokio::time::timeout(after, store.read(&f, offset, len)).await;
                }
            });
            futures::future::join_all(reads).await;
        }
        fx.origin.set_delay(Duration::ZERO);
        for (i, f) in files.iter().enumerate() {
            let got = tokio::time::timeout(Duration::from_secs(20), store.read(f, 0, f.size))
                .await
                .expect("a read after the storm hung (a chunk left stuck)")
                .unwrap();
            assert!(got[..] == fx.data[i][..], "file {i} read back wrong");
        }
        store.quiesce().await;
        assert_accounting(&store, &files);

        // A fetch whose reader is dropped still completes and is kept.
        let f = fx.file(0, Placement::default());
        store.purge(f.fv).await;
        let before = fx.origin.reads();
        fx.origin.set_delay(Duration::from_millis(300));
        let dropped = tokio::time::timeout(Duration::from_millis(50), store.read(&f, 0, 1)).await;
        assert!(dropped.is_err(), "the slow origin answered early");
        fx.origin.set_delay(Duration::ZERO);
        let got = store.read(&f, 0, 1).await.unwrap();
        assert_eq!(got[0], fx.data[0][0]);
        assert_eq!(
            fx.origin.reads() - before,
            1,
            "the dropped reader's fetch was abandoned and asked again"
        );
    });
}
