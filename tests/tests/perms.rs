//! Owners and permission bits through a mount: a local origin's are kept
//! (so `cp -a` out of the mount equals a copy of the origin, and a 0600
//! file stays private with `--allow-other`); S3 objects get the mount's,
//! or what `--uid/--gid/--file-mode/--dir-mode` say.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use shoal_tests::{pattern, Fixture, Mount, NodeOpts};

/// (relative path, mode, uid, gid, size, mtime) of every entry under `root`.
fn tree_meta(root: &Path) -> Vec<(String, u32, u32, u32, u64, i64)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let size = if m.is_dir() { 0 } else { m.len() };
            out.push((rel, m.mode(), m.uid(), m.gid(), size, m.mtime()));
            if m.is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

fn chown(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(gid)).unwrap();
}

/// Runs `cat path` as user/group 65534 (nobody): its exit status.
fn cat_as_nobody(path: &Path) -> bool {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "cat"])
        .arg(path)
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn a_local_origin_keeps_its_owners_and_modes_and_cp_a_equals_a_copy_of_it() {
    let fx = Fixture::new("MD5", &[], NodeOpts::default());
    // Everyone may reach the mount point (a tempdir is 0700).
    std::fs::set_permissions(fx.tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let origin = fx.tmp.path().join("origin");
    std::fs::create_dir_all(origin.join("team/private")).unwrap();
    std::fs::write(origin.join("public.txt"), b"for everyone\n").unwrap();
    std::fs::write(origin.join("team/secret.bin"), pattern(41, 70_000)).unwrap();
    std::fs::write(origin.join("team/private/key"), b"k3y\n").unwrap();
    std::fs::write(origin.join("run.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    let modes = [
        ("public.txt", 0o644),
        // Open to all: a private file below must be refused by its own mode.
        ("team", 0o755),
        ("team/secret.bin", 0o600),
        ("team/private", 0o700),
        ("team/private/key", 0o400),
        ("run.sh", 0o755),
    ];
    for (p, m) in modes {
        let path = origin.join(p);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(m)).unwrap();
        chown(&path, 1234, 4321);
    }
    chown(&origin.join("public.txt"), 0, 0);
    fx.node.ctl_ok(&[
        "create",
        "local",
        "--source",
        &format!("file://{}", origin.display()),
    ]);
    let mnt = fx.tmp.path().join("mnt");
    let _m = Mount::start(&fx.node, "local", &mnt, &["--allow-other"]).unwrap();

    assert_eq!(
        tree_meta(&mnt),
        tree_meta(&origin),
        "stat through the mount"
    );
    let copy_mnt = fx.tmp.path().join("copy-of-mount");
    let copy_origin = fx.tmp.path().join("copy-of-origin");
    for (from, to) in [(&mnt, &copy_mnt), (&origin, &copy_origin)] {
        let st = Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", from.display()))
            .arg(to)
            .status()
            .unwrap();
        assert!(st.success());
    }
    assert_eq!(tree_meta(&copy_mnt), tree_meta(&copy_origin), "cp -a");
    assert_eq!(
        std::fs::read(copy_mnt.join("team/secret.bin")).unwrap(),
        pattern(41, 70_000)
    );

    // --allow-other opens the mount to other users, not the origin's
    // private files: the kernel checks the modes (default_permissions).
    assert!(cat_as_nobody(&mnt.join("public.txt")));
    assert!(!cat_as_nobody(&mnt.join("team/secret.bin")));
    assert!(!cat_as_nobody(&mnt.join("team/private/key")));
}

#[test]
fn s3_objects_take_the_mounts_owner_and_modes_or_the_flags() {
    let files = vec![("d/f.bin".to_string(), pattern(42, 1000))];
    let fx = Fixture::new("MD5", &files, NodeOpts::default());
    fx.node.create_ok("ds", "s3://bucket", &fx.s3.endpoint);
    let plain = fx.tmp.path().join("plain");
    let m = Mount::start(&fx.node, "ds", &plain, &[]).unwrap();
    let f = std::fs::metadata(plain.join("d/f.bin")).unwrap();
    let d = std::fs::metadata(plain.join("d")).unwrap();
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    assert_eq!((f.mode() & 0o7777, f.uid(), f.gid()), (0o444, uid, gid));
    assert_eq!(d.mode() & 0o7777, 0o555);
    drop(m);

    let forced = fx.tmp.path().join("forced");
    let _m = Mount::start(
        &fx.node,
        "ds",
        &forced,
        &[
            "--uid",
            "1000",
            "--gid",
            "2000",
            "--file-mode",
            "0640",
            "--dir-mode",
            "0750",
        ],
    )
    .unwrap();
    let f = std::fs::metadata(forced.join("d/f.bin")).unwrap();
    let d = std::fs::metadata(forced.join("d")).unwrap();
    assert_eq!((f.mode() & 0o7777, f.uid(), f.gid()), (0o640, 1000, 2000));
    assert_eq!((d.mode() & 0o7777, d.uid(), d.gid()), (0o750, 1000, 2000));
    assert_eq!(
        std::fs::read(forced.join("d/f.bin")).unwrap(),
        pattern(42, 1000)
    );
}
