//! Object keys that are not file names, against two real S3 servers:
//! moto (any key, real ETags, If-Match enforced) and `rclone serve s3`
//! (keys are files on a disk). What a process sees for each kind of key is
//! documented in docs/SEMANTICS.md, "Object keys that are not paths".

use std::collections::BTreeMap;
use std::path::Path;

use shoal_tests::{Fixture, MotoServer, Mount, NodeOpts};

/// Body of the object at `key`: unique per key, so a read of the wrong
/// object shows.
fn body(key: &str) -> Vec<u8> {
    format!("object {key:?}\n").into_bytes()
}

/// Every file under `root` (relative path → bytes), by walking the mount.
fn walk(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

#[test]
fn hostile_keys_on_moto_are_skipped_with_reasons_and_the_rest_read_their_own_bytes() {
    let long = "n".repeat(300);
    let skipped = [
        "/lead.bin",
        "../x",
        "d/./e",
        "a//b",
        long.as_str(),
        "shadow",
    ];
    let shown = [
        "ok.bin",
        "ctl\u{1}.bin",
        "tab\there.bin",
        "sp ace+plus%41.bin",
        "\u{fc}.bin",
        "shadow/inner.bin",
    ];
    let objects: Vec<(String, Vec<u8>)> = skipped
        .iter()
        .chain(&shown)
        .map(|k| (k.to_string(), body(k)))
        .collect();
    let fx = Fixture::new("MD5", &[], NodeOpts::default());
    let moto = MotoServer::start(fx.tmp.path()).unwrap();
    moto.put("hostile", &objects).unwrap();
    // One key with a control character used to fail the whole listing.
    fx.node.create_ok("ds", "s3://hostile", &moto.endpoint);

    let d = fx.node.dataset("ds");
    assert_eq!(d["files"], shown.len() as u64);
    assert_eq!(d["skipped_keys"], skipped.len() as u64);
    let examples = d["skipped_examples"].as_array().unwrap();
    assert_eq!(examples.len(), 5, "a few examples: {d}");
    for e in examples {
        assert!(skipped.contains(&e["key"].as_str().unwrap()), "{e}");
        assert!(!e["reason"].as_str().unwrap().is_empty());
    }
    let table = String::from_utf8(fx.node.ctl_ok(&["get", "ds"])).unwrap();
    assert!(table.contains("Skipped:      6 origin keys"), "{table}");
    assert!(table.contains("\"/lead.bin\": starts with '/'"), "{table}");

    let mnt = fx.tmp.path().join("mnt");
    let _m = Mount::start(&fx.node, "ds", &mnt, &[]).unwrap();
    let seen = walk(&mnt);
    let want: BTreeMap<String, Vec<u8>> = shown.iter().map(|k| (k.to_string(), body(k))).collect();
    assert_eq!(
        seen, want,
        "exactly the showable keys, each with its own bytes"
    );
    // Nothing escapes the mount or aliases another key.
    assert_eq!(
        std::fs::read_dir(&mnt).unwrap().count(),
        6,
        "root: ok.bin ctl tab sp ü shadow/"
    );
    let err = std::fs::metadata(mnt.join(&long)).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENAMETOOLONG));
    assert!(std::fs::metadata(mnt.join("lead.bin")).is_err());
    assert!(mnt.join("shadow").is_dir());
}

#[test]
fn every_file_rclone_serves_reads_back_under_the_name_it_lists() {
    let names = [
        "ok.bin",
        "ctl\u{1}.bin",
        "tab\there.bin",
        "sp ace+plus%41.bin",
        "\u{fc}.bin",
        "d/inner.bin",
    ];
    let files: Vec<(String, Vec<u8>)> = names.iter().map(|k| (k.to_string(), body(k))).collect();
    let fx = Fixture::new("MD5", &files, NodeOpts::default());
    fx.node.create_ok("ds", "s3://bucket", &fx.s3.endpoint);
    let d = fx.node.dataset("ds");
    assert_eq!(d["skipped_keys"], 0, "{d}");
    let mnt = fx.tmp.path().join("mnt");
    let _m = Mount::start(&fx.node, "ds", &mnt, &[]).unwrap();
    // rclone may encode control characters in the names it lists; each
    // file must still read back whole, under whatever name it was listed.
    let mut got: Vec<Vec<u8>> = walk(&mnt).into_values().collect();
    let mut want: Vec<Vec<u8>> = files.into_iter().map(|(_, b)| b).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
}
