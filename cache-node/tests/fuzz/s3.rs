//! Target: S3 listings, from the XML an endpoint sends to the manifest.
//!
//! The SDK parses `ListObjectsV2` XML; Shoal then decodes URL-encoded keys
//! (`origin::s3::decode_key`) and turns keys into paths
//! (`catalog::manifest::key_path` and `build`). Mutated listings from
//! `fuzz/corpus/s3-list/` are served by a local HTTP server to a real
//! `S3Origin`, and generated key sets go straight to `build`: whatever the
//! keys, every path is one a file system can show, no two entries share a
//! path, and every key is either shown at its own path or reported as
//! skipped — never lost, never rewritten.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use proptest::sample::select;
use shoal_cache_node::catalog::manifest::{self, key_path, SkippedKey, MAX_CHUNKS};
use shoal_cache_node::catalog::Spec;
use shoal_cache_node::origin::s3::{decode_key, S3Origin};
use shoal_cache_node::origin::{ObjectKind, ObjectMeta, Origin};
use shoal_proto::v1;

use super::{http, mutator, s3_runtime, serve, Fixture, CHUNK};

fn spec(chunk_size: u64) -> Spec {
    Spec {
        name: "s3set".into(),
        source: "s3://bucket/data".into(),
        s3_endpoint: String::new(),
        region: String::new(),
        chunk_size,
        tier_policy: String::new(),
        pin: false,
    }
}

/// What `build` promises for any listing (see the module docs).
fn check_build(
    spec: &Spec,
    objects: &[ObjectMeta],
    entries: &[v1::FileEntry],
    skipped: &[SkippedKey],
) -> Result<(), TestCaseError> {
    prop_assert!(entries
        .first()
        .is_some_and(|e| e.path.is_empty() && e.kind() == v1::FileKind::Directory));
    let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    prop_assert!(
        paths.windows(2).all(|w| w[0] < w[1]),
        "paths not unique and sorted: {:?}",
        paths
    );
    let dirs: BTreeSet<&str> = entries
        .iter()
        .filter(|e| e.kind() == v1::FileKind::Directory)
        .map(|e| e.path.as_str())
        .collect();
    for e in &entries[1..] {
        prop_assert!(key_path(&e.path).is_ok(), "{:?}", e.path);
        let parent = e.path.rsplit_once('/').map_or("", |(p, _)| p);
        prop_assert!(
            dirs.contains(parent),
            "{:?} has no parent directory",
            e.path
        );
        if e.kind() == v1::FileKind::File {
            prop_assert_eq!(e.chunk_size, spec.chunk_size);
            prop_assert_eq!(e.file_version.len(), 16);
            prop_assert!(e.size.div_ceil(e.chunk_size) <= MAX_CHUNKS);
        }
    }
    let keys: BTreeSet<&str> = objects.iter().map(|o| o.path.as_str()).collect();
    for s in skipped {
        prop_assert!(
            keys.contains(s.key.as_str()),
            "skipped a key never listed: {:?}",
            s.key
        );
        prop_assert!(!s.reason.is_empty());
    }
    let reported: BTreeSet<&str> = skipped.iter().map(|s| s.key.as_str()).collect();
    for o in objects.iter().filter(|o| !o.path.is_empty()) {
        if reported.contains(o.path.as_str()) {
            continue;
        }
        let shown = entries.iter().find(|e| e.path == o.path);
        let is_dir = o.kind == ObjectKind::Directory;
        prop_assert!(
            shown.is_some_and(|e| (e.kind() == v1::FileKind::Directory) == is_dir),
            "key {:?} ({:?}) is neither shown nor reported",
            o.path,
            o.kind
        );
    }
    Ok(())
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(&["a", "b", "dir", "x.bin", "", ".", "..", "a\0b", "é", "sp ace", "\u{1}", "%2F", "+", "a/"][..])
            .prop_map(String::from),
        2 => "[a-c]{1,2}",
        1 => select(&[255usize, 256][..]).prop_map(|n| "n".repeat(n)),
        1 => any::<String>(),
    ]
}

fn object() -> impl Strategy<Value = ObjectMeta> {
    let key = (prop::collection::vec(segment(), 1..4), 0u8..4).prop_map(|(segs, edge)| {
        let k = segs.join("/");
        match edge {
            0 => format!("/{k}"),
            1 => format!("{k}/"),
            _ => k,
        }
    });
    let sizes = select(
        &[
            0u64,
            1,
            CHUNK,
            MAX_CHUNKS * CHUNK,
            MAX_CHUNKS * CHUNK + 1,
            u64::MAX,
        ][..],
    );
    (key, 0u8..3, sizes).prop_map(|(path, kind, size)| ObjectMeta {
        path,
        kind: [ObjectKind::File, ObjectKind::Directory, ObjectKind::Symlink][kind as usize],
        size,
        mtime_nanos: 0,
        mode: 0o100444,
        owner: None,
        etag: "e".into(),
        version_id: String::new(),
        symlink_target: "t".into(),
    })
}

#[test]
fn any_key_set_builds_a_valid_tree() {
    let chunk = select(&[64u64 << 10, 4 << 20, 64 << 20][..]);
    proptest!(mutator::config(3000), |(objects in prop::collection::vec(object(), 0..12), chunk in chunk)| {
        let spec = spec(chunk);
        let (entries, skipped) = manifest::build(&spec, objects.clone());
        check_build(&spec, &objects, &entries, &skipped)?;
    });
}

/// A form-style URL encoding of a key, as AWS writes `encoding-type=url`
/// listings.
fn form_encode(key: &str) -> String {
    key.bytes()
        .map(|b| match b {
            b' ' => "+".to_string(),
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn keys_decode_without_panics_and_round_trip() {
    proptest!(mutator::config(3000), |(key in any::<String>(), noise in "[%+a-fA-F0-9]{0,12}")| {
        prop_assert_eq!(decode_key(&form_encode(&key)), key.clone());
        // Anything else decodes to something, lossily if it must.
        let _ = decode_key(&format!("{noise}{key}{noise}"));
        if !key.contains(['%', '+']) {
            prop_assert_eq!(decode_key(&key), key);
        }
    });
}

const XML_DICT: &[&[u8]] = &[
    b"<Contents><Key>data/k</Key><Size>1</Size></Contents>",
    b"<Contents>",
    b"</Contents>",
    b"<Key>",
    b"</Key>",
    b"<Size>9223372036854775807</Size>",
    b"<Size>-1</Size>",
    b"<EncodingType>url</EncodingType>",
    b"<IsTruncated>true</IsTruncated>",
    b"<NextContinuationToken>t2</NextContinuationToken>",
    b"<LastModified>9999-99-99T99:99:99Z</LastModified>",
    b"&amp;",
    b"&#0;",
    b"&#x1;",
    b"&lt;",
    b"<![CDATA[a/b]]>",
    b"<!-- c -->",
    b"<!DOCTYPE a [<!ENTITY e \"xx\">]>",
    b"&e;",
    b"%",
    b"%2F",
    b"%FF",
    b"+",
    b"../",
    b"//",
];

/// An `S3Origin` for `s3://bucket/data` over a local server that answers
/// every request with the listing XML last put in the returned body.
fn listing_origin(rt: &tokio::runtime::Runtime) -> (Arc<Mutex<Vec<u8>>>, S3Origin) {
    let body = Arc::new(Mutex::new(Vec::new()));
    let page = body.clone();
    let endpoint = rt.block_on(serve(Arc::new(move |_head: &str| {
        http(
            "200 OK",
            "Content-Type: application/xml\r\n",
            &page.lock().unwrap(),
        )
    })));
    let origin = rt
        .block_on(S3Origin::new("bucket".into(), "data".into(), &endpoint, ""))
        .unwrap();
    (body, origin)
}

#[test]
fn hostile_listings_list_or_fail() {
    let rt = s3_runtime();
    let (body, origin) = listing_origin(&rt);
    let listings = mutator::hostile(mutator::seeds("s3-list"), XML_DICT);
    proptest!(mutator::config(500), |(xml in listings)| {
        *body.lock().unwrap() = xml;
        let listed = rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(10), origin.list()).await })
            .map_err(|_| TestCaseError::fail("listing did not end within 10 s"))?;
        if let Ok(objects) = listed {
            for o in &objects {
                prop_assert!(!o.path.is_empty());
            }
            let spec = spec(CHUNK);
            let (entries, skipped) = manifest::build(&spec, objects.clone());
            check_build(&spec, &objects, &entries, &skipped)?;
        }
    });
}

/// Whatever a dataset spec (or a peer's record) says for the region, the
/// endpoint and the prefix, building the client and listing ends in a
/// listing or an error: never a panic in the SDK. (A region with a control
/// character made the SDK panic while signing; it is refused now.)
/// Endpoints stay on this host: a local server answering an empty
/// listing, spelled in odd ways, or strings that are no URL at all.
#[test]
fn any_region_endpoint_and_prefix_fail_cleanly() {
    let rt = s3_runtime();
    let empty = std::fs::read(mutator::corpus_dir("s3-list").join("empty.xml")).unwrap();
    let server = rt.block_on(serve(Arc::new(move |_head: &str| {
        http("200 OK", "Content-Type: application/xml\r\n", &empty)
    })));
    let host = server.trim_start_matches("http://").to_string();
    let endpoints: Vec<String> = [
        "http://{}",
        "http://{}/path?q=1#f",
        "http://{}\n",
        "http://{}/\u{e9}",
        "http://user@{}",
        "{}",
        "ftp://{}",
        "http://",
        "://",
        "http://[::1",
    ]
    .iter()
    .map(|e| e.replace("{}", &host))
    .collect();
    let odd = prop_oneof![
        Just(String::new()),
        "[a-z0-9-]{1,12}",
        "[a-z0-9\\-.\\x00-\\x1f\\x7f \\u{e9}]{1,12}",
        any::<String>()
    ];
    proptest!(mutator::config(300), |(endpoint in select(endpoints.clone()), region in odd.clone(), prefix in odd)| {
        let listed = rt.block_on(async {
            let origin = S3Origin::new("bucket".into(), prefix, &endpoint, &region).await?;
            tokio::time::timeout(Duration::from_secs(10), origin.list())
                .await
                .map_err(|_| shoal_cache_node::origin::OriginError::Unavailable("timed out".into()))?
        });
        match listed {
            Ok(objects) => prop_assert!(objects.is_empty()),
            Err(e) => prop_assert!(!e.to_string().contains("timed out"), "{}", e),
        }
    });
}

/// The seeds list as S3 means them: decoded when the server says it
/// encoded keys, markers as directories, keys outside the prefix dropped.
#[test]
fn seed_listings_list_as_expected() {
    let rt = s3_runtime();
    let (body, origin) = listing_origin(&rt);
    let dir = mutator::corpus_dir("s3-list");
    for (file, want) in [
        ("plain.xml", vec!["a.bin", "dir/b.bin", "dir/sub/c.txt"]),
        (
            "url-encoded.xml",
            vec![
                "sp ace+plus%41.bin",
                "ctl\u{1}x/t\tab",
                "\u{fc}\u{20ac}.bin",
                "bad\u{fffd}\u{fffd}utf8",
                "nul\0byte",
                "trailing%",
            ],
        ),
        // A server that repeats its continuation token repeats its page;
        // the SDK stops after it, and `build` keeps one entry per path.
        ("truncated-page.xml", vec!["page.bin", "page.bin"]),
        ("empty.xml", vec![]),
    ] {
        *body.lock().unwrap() = std::fs::read(dir.join(file)).unwrap();
        let objects = rt.block_on(origin.list()).unwrap();
        let paths: Vec<&str> = objects.iter().map(|o| o.path.as_str()).collect();
        assert_eq!(paths, want, "{file}");
    }
    *body.lock().unwrap() = std::fs::read(dir.join("hostile-keys.xml")).unwrap();
    let objects = rt.block_on(origin.list()).unwrap();
    let (entries, skipped) = manifest::build(&spec(CHUNK), objects);
    let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, vec!["", "a", "a/b", "neg", "no-size"]);
    let keys: Vec<&str> = skipped.iter().map(|s| s.key.as_str()).collect();
    let long = "n".repeat(256);
    assert_eq!(
        keys,
        vec!["a", "a//c", "../escape", "/lead", "/", "huge", &long]
    );
    *body.lock().unwrap() = std::fs::read(dir.join("error.xml")).unwrap();
    assert!(rt.block_on(origin.list()).is_err());
}

/// Regression: an object with more chunks than a `u32` chunk index can
/// name (2^50 bytes at 64 KiB chunks) was listed as a file, and a read
/// past 2^48 computed a truncated chunk index and sliced the chunk out of
/// bounds — a panic in the node. It is now reported as a skipped key.
#[test]
fn an_object_too_large_to_chunk_is_skipped_not_read() {
    let fx = Fixture::open();
    let huge: u64 = 1 << 50;
    let endpoint = fx.rt.block_on(serve(Arc::new(move |head: &str| {
        if head.contains("list-type=2") {
            let xml = format!(
                "<?xml version=\"1.0\"?><ListBucketResult><Name>bucket</Name><IsTruncated>false</IsTruncated>\
                 <Contents><Key>data/huge.bin</Key><ETag>\"h\"</ETag><Size>{huge}</Size></Contents>\
                 <Contents><Key>data/small.bin</Key><ETag>\"s\"</ETag><Size>10</Size></Contents></ListBucketResult>"
            );
            return http("200 OK", "Content-Type: application/xml\r\n", xml.as_bytes());
        }
        // A ranged GET: that many zero bytes, as any S3 server answers.
        let range = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("range: bytes=").map(String::from))
            .and_then(|r| {
                let (a, b) = r.trim().split_once('-')?;
                Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?))
            });
        let Some((a, b)) = range else {
            return http("400 Bad Request", "", b"");
        };
        let (size, etag) = if head.contains("huge.bin") { (huge, "h") } else { (10, "s") };
        let len = (b.min(size - 1) + 1 - a).min(64 << 20) as usize;
        http(
            "206 Partial Content",
            &format!("ETag: \"{etag}\"\r\nContent-Range: bytes {a}-{}/{size}\r\n", a + len as u64 - 1),
            &vec![0u8; len],
        )
    })));
    let create = v1::Request::new(v1::request::Kind::Create(v1::CreateDataset {
        spec: Some(v1::DatasetSpec {
            name: "huge".into(),
            source: "s3://bucket/data".into(),
            s3_endpoint: endpoint,
            chunk_size: CHUNK,
            ..Default::default()
        }),
    }));
    let status = match fx.call(create).kind {
        Some(v1::response::Kind::Dataset(d)) => d,
        other => panic!("{other:?}"),
    };
    assert_eq!(status.files, 1);
    assert_eq!(status.skipped_keys, 1);
    assert_eq!(status.skipped_examples[0].key, "huge.bin");
    let read = |path: &str, offset: u64| {
        fx.call(v1::Request::new(v1::request::Kind::Read(v1::ReadRange {
            file: Some(v1::PathRef {
                dataset: "huge".into(),
                version: 0,
                path: path.into(),
            }),
            offset,
            length: 100,
            direct: false,
        })))
    };
    let past = read("huge.bin", (1 << 48) + 5);
    assert!(
        matches!(&past.kind, Some(v1::response::Kind::Error(e)) if e.code == v1::ErrorCode::NotFound as i32),
        "{past:?}"
    );
    match read("small.bin", 0).kind {
        Some(v1::response::Kind::Data(d)) => assert_eq!(d.data.to_vec(), vec![0u8; 10]),
        other => panic!("{other:?}"),
    }
}

/// An endpoint that never stops saying "more follow" — with new keys on
/// every page, or with none — ends the listing with a clear error: the
/// node neither loops for ever nor spends its memory on the listing.
#[test]
fn endless_listings_end_with_an_error() {
    let rt = s3_runtime();
    for keys_per_page in [2usize, 0] {
        let pages = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let served = pages.clone();
        let endpoint = rt.block_on(serve(Arc::new(move |_head: &str| {
            let n = served.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let contents: String = (0..keys_per_page)
                .map(|k| format!("<Contents><Key>data/p{n}-{k}</Key><Size>1</Size></Contents>"))
                .collect();
            let xml = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListBucketResult><Name>bucket</Name><Prefix>data/</Prefix><KeyCount>{keys_per_page}</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>true</IsTruncated>{contents}<NextContinuationToken>t{n}</NextContinuationToken></ListBucketResult>"
            );
            http("200 OK", "Content-Type: application/xml\r\n", xml.as_bytes())
        })));
        let origin = rt
            .block_on(S3Origin::new("bucket".into(), "data".into(), &endpoint, ""))
            .unwrap()
            .with_max_objects(100);
        let listed = rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(60), origin.list()).await })
            .expect("an endless listing did not end");
        let err = listed
            .expect_err("an endless listing succeeded")
            .to_string();
        let want = if keys_per_page > 0 {
            "more than 100 objects"
        } else {
            "pages in a row without a key"
        };
        assert!(err.contains(want), "{keys_per_page} keys a page: {err}");
        let asked = pages.load(std::sync::atomic::Ordering::SeqCst);
        assert!(asked <= 1002, "{asked} pages asked for");
    }
}
