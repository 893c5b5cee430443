//! The cold read path through a real mount, measured at the origin: what a
//! reader's access pattern costs in origin bytes (a counting proxy in
//! front of `rclone serve s3`), and that every byte is still right.

use std::os::unix::fs::FileExt;

use shoal_tests::{pattern, CountingProxy, Fixture, Mount, NodeOpts};

const MIB: usize = 1 << 20;

#[test]
fn a_seek_fetches_its_bytes_not_whole_chunks_and_a_stream_still_fills_the_cache() {
    let size = 64 * MIB + 3;
    let big = pattern(71, size);
    let fx = Fixture::new(
        "MD5",
        &[("big.bin".into(), big.clone())],
        NodeOpts::default(),
    );
    let proxy = CountingProxy::start(&fx.s3.endpoint).unwrap();
    fx.node.create_ok("ds", "s3://bucket", &proxy.endpoint);
    let mnt = fx.tmp.path().join("mnt");
    let _m = Mount::start(&fx.node, "ds", &mnt, &[]).unwrap();

    // 16 reads of 4 KiB, each in a different 4 MiB chunk, none at offset 0.
    let f = std::fs::File::open(mnt.join("big.bin")).unwrap();
    let before = proxy.bytes();
    let mut buf = vec![0u8; 4096];
    for i in 0..16 {
        let off = i * 4 * MIB + 1_000_000 + i * 4096;
        f.read_exact_at(&mut buf, off as u64).unwrap();
        assert_eq!(buf, big[off..off + 4096], "bytes at {off}");
    }
    let random = (proxy.bytes() - before) as usize;
    // Kernel readahead may widen each read, but whole chunks would be 64 MiB.
    assert!(
        random < 16 * MIB,
        "16 random 4 KiB reads pulled {random} origin bytes"
    );
    assert!(fx.node.metric("shoal_direct_reads_total") >= 16.0);
    assert_eq!(fx.node.dataset("ds")["cached_bytes"], 0, "chunks stay cold");
    drop(f);

    // A stream from offset 0 gets its first bytes directly, then fills
    // the cache chunk by chunk: the file ends up cached, fetched ~once.
    let before = proxy.bytes();
    let all = std::fs::read(mnt.join("big.bin")).unwrap();
    assert!(all == big, "streamed bytes differ from the origin");
    let streamed = (proxy.bytes() - before) as usize;
    assert!(
        streamed < size + 2 * MIB,
        "a sequential read of {size} bytes pulled {streamed} origin bytes"
    );
    assert_eq!(
        fx.node.dataset("ds")["cached_bytes"].as_u64().unwrap(),
        size as u64,
        "a stream fills the cache"
    );
}

#[test]
fn an_open_file_larger_than_the_cache_does_not_pin_the_cache() {
    let big = pattern(72, 32 * MIB);
    let small = pattern(73, MIB);
    let opts = NodeOpts {
        memory_quota: "12MiB".into(),
        disk_quota: "0".into(),
        ..NodeOpts::default()
    };
    let fx = Fixture::new(
        "MD5",
        &[
            ("big.bin".into(), big.clone()),
            ("small.bin".into(), small.clone()),
        ],
        opts,
    );
    fx.node.create_ok("ds", "s3://bucket", &fx.s3.endpoint);
    let mnt = fx.tmp.path().join("mnt");
    let _m = Mount::start(&fx.node, "ds", &mnt, &[]).unwrap();

    // Stream the big file through the 12 MiB cache and keep it open.
    let f = std::fs::File::open(mnt.join("big.bin")).unwrap();
    let mut all = vec![0u8; big.len()];
    let mut at = 0;
    while at < all.len() {
        let n = f.read_at(&mut all[at..], at as u64).unwrap();
        assert!(n > 0);
        at += n;
    }
    assert!(all == big);
    // Its chunks were evictable as it went: nothing was served uncached,
    // and another file still gets cached while it stays open.
    assert_eq!(
        fx.node.metric_opt("shoal_uncached_reads_total"),
        Some(0.0),
        "no uncached reads (and the series is exported)"
    );
    assert!(std::fs::read(mnt.join("small.bin")).unwrap() == small);
    let origin = fx.node.metric("shoal_origin_bytes_total");
    let cat = fx.node.ctl_ok(&["cat", "ds", "small.bin"]);
    assert!(cat == small);
    assert_eq!(
        fx.node.metric("shoal_origin_bytes_total"),
        origin,
        "small.bin was cached although big.bin is open"
    );
    let memory = fx
        .node
        .metric_opt("shoal_tier_bytes{tier=\"memory\"}")
        .expect("memory tier series exported");
    assert!(memory > 0.0 && memory <= (12 * MIB) as f64, "{memory}");
    drop(f);
}

#[test]
fn opening_files_by_path_in_order_warms_the_next_ones_without_a_listing() {
    // A data loader reading from an index: open by path, never readdir.
    let files: Vec<(String, Vec<u8>)> = (0..40)
        .map(|i| (format!("d/f{i:03}.bin"), pattern(80 + i, 50_000)))
        .collect();
    let fx = Fixture::new("MD5", &files, NodeOpts::default());
    fx.node.create_ok("ds", "s3://bucket", &fx.s3.endpoint);
    let mnt = fx.tmp.path().join("mnt");
    let _m = Mount::start(&fx.node, "ds", &mnt, &[]).unwrap();
    let cached = || fx.node.dataset("ds")["cached_bytes"].as_u64().unwrap();
    let mut read = 0u64;
    for (p, b) in &files[..6] {
        assert!(std::fs::read(mnt.join(p)).unwrap() == *b);
        read += b.len() as u64;
    }
    // The files after the sixth are fetched ahead of the reader.
    shoal_tests::wait_for(
        "the next files to be warmed",
        std::time::Duration::from_secs(15),
        || cached() >= read + 10 * 50_000,
    )
    .unwrap();
    for (p, b) in &files[6..] {
        assert!(std::fs::read(mnt.join(p)).unwrap() == *b);
    }
}
