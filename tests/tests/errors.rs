//! Every bad input gets one clear line, a non-zero exit, and leaves nothing behind.

use shoal_tests::{assert_fails, free_port, Fixture, Node, NodeOpts, ACCESS_KEY};

fn datasets(node: &Node) -> usize {
    let v: serde_json::Value =
        serde_json::from_slice(&node.ctl_ok(&["list", "-o", "json"])).unwrap();
    v.as_array().unwrap().len()
}

#[test]
fn bad_inputs_fail_cleanly_and_leave_nothing() {
    let fx = Fixture::new(
        "MD5",
        &[("x/f".into(), b"data".to_vec())],
        NodeOpts::default(),
    );
    let (tmp, s3, node) = (&fx.tmp, &fx.s3, &fx.node);
    let ep = s3.endpoint.as_str();

    assert_fails(
        &node.ctl(&["create", "Bad_Name", "--source", "s3://bucket"]),
        "invalid dataset name",
    );
    assert_fails(
        &node.ctl(&["create", "with.dots", "--source", "s3://bucket"]),
        "invalid dataset name",
    );
    assert_fails(
        &node.ctl(&["create", "ok", "--source", "ftp://x"]),
        "expected s3://",
    );
    assert_fails(
        &node.ctl(&[
            "create",
            "ok",
            "--source",
            "s3://bucket",
            "--chunk-size",
            "1KiB",
            "--s3-endpoint",
            ep,
        ]),
        "chunk size",
    );
    assert_fails(
        &node.create("ok", "s3://nobucket", Some(ep), &[]),
        "does not exist",
    );
    assert_fails(
        &node.create("ok", "s3://bucket/missing-prefix", Some(ep), &[]),
        "lists no files",
    );
    let dead = format!("http://127.0.0.1:{}", free_port());
    assert_fails(
        &node.create("ok", "s3://bucket", Some(&dead), &[]),
        "unreachable",
    );
    assert_fails(
        &node.ctl(&["create", "ok", "--source", "file:///does/not/exist"]),
        "does not exist",
    );
    assert_fails(&node.ctl(&["get", "nope"]), "not found");
    assert_fails(&node.ctl(&["cat", "nope", "x"]), "not found");
    assert_fails(&node.ctl(&["delete", "nope"]), "not found");
    assert_fails(&node.ctl(&["refresh", "nope"]), "not found");
    assert_eq!(datasets(node), 0, "failed creates leave nothing behind");

    assert!(node
        .create("ok", "s3://bucket", Some(ep), &[])
        .status
        .success());
    assert_fails(
        &node.create("ok", "s3://bucket", Some(ep), &[]),
        "already exists",
    );
    assert_fails(&node.ctl(&["cat", "ok", "x"]), "is a directory");
    assert_fails(&node.ctl(&["cat", "ok", "x/nope"]), "no such file");
    assert_fails(&node.ctl(&["cat", "ok", "../etc/passwd"]), "no such file");
    assert_fails(
        &node.ctl(&["cat", "ok", "x/f", "--version", "7"]),
        "no manifest version 7",
    );

    // Malformed and invalid YAML.
    let bad = tmp.path().join("bad.yaml");
    std::fs::write(&bad, "apiVersion: [unclosed").unwrap();
    assert_fails(
        &node.ctl(&["apply", "-f", bad.to_str().unwrap()]),
        "malformed yaml",
    );
    std::fs::write(&bad, "apiVersion: shoal.io/v1alpha1\nkind: Dataset\nmetadata: {name: y}\nspec: {source: s3://bucket, chunkSise: 1MiB}\n").unwrap();
    assert_fails(
        &node.ctl(&["apply", "-f", bad.to_str().unwrap()]),
        "chunkSise",
    );
    assert_fails(
        &node.ctl(&["apply", "-f", "/no/such/file.yaml"]),
        "cannot read",
    );
    assert_eq!(datasets(node), 1);

    // apply creates, then reports unchanged, and refuses to mutate a spec.
    let good = tmp.path().join("good.yaml");
    let doc = format!("apiVersion: shoal.io/v1alpha1\nkind: Dataset\nmetadata: {{name: y}}\nspec:\n  source: s3://bucket/x\n  s3Endpoint: {ep}\n  chunkSize: 1MiB\n");
    std::fs::write(&good, &doc).unwrap();
    assert!(
        String::from_utf8(node.ctl_ok(&["apply", "-f", good.to_str().unwrap()]))
            .unwrap()
            .contains("created")
    );
    assert!(
        String::from_utf8(node.ctl_ok(&["apply", "-f", good.to_str().unwrap()]))
            .unwrap()
            .contains("unchanged")
    );
    std::fs::write(&good, doc.replace("1MiB", "2MiB")).unwrap();
    assert_fails(
        &node.ctl(&["apply", "-f", good.to_str().unwrap()]),
        "immutable",
    );
    assert_eq!(datasets(node), 2);

    // An unreachable node.
    let out = std::process::Command::new(shoal_tests::bin("dataset-ctl"))
        .args(["--endpoint", &format!("127.0.0.1:{}", free_port()), "list"])
        .output()
        .unwrap();
    assert_fails(&out, "cannot reach cache-node");
}

#[test]
fn bad_credentials_are_denied() {
    let fx = Fixture::new(
        "MD5",
        &[("f".into(), b"data".to_vec())],
        NodeOpts::default(),
    );
    let (tmp, s3) = (&fx.tmp, &fx.s3);
    let opts = NodeOpts {
        env: vec![
            ("AWS_ACCESS_KEY_ID".into(), ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "wrong-secret".into()),
        ],
        ..NodeOpts::default()
    };
    let node = Node::start(&tmp.path().join("bad-key"), opts).unwrap();
    assert_fails(
        &node.create("ds", "s3://bucket", Some(&s3.endpoint), &[]),
        "denied",
    );
    let none = Node::start(
        &tmp.path().join("no-credentials"),
        NodeOpts {
            env: vec![],
            ..NodeOpts::default()
        },
    )
    .unwrap();
    assert_fails(
        &none.create("ds", "s3://bucket", Some(&s3.endpoint), &[]),
        "credentials",
    );
    assert!(!node.logs().contains("wrong-secret"));
}

#[test]
fn bad_node_config_exits_non_zero_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("node.toml");
    std::fs::write(&cfg, "[memory]\nquota = \"lots\"\n").unwrap();
    let out = std::process::Command::new(shoal_tests::bin("cache-node"))
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid config"));
}

/// A node whose TCP API requires the token in the returned file (0600).
fn node_with_token(dir: &std::path::Path) -> (Node, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let token = dir.join("token");
    std::fs::write(&token, "s3cr3t-t0ken-0123456789\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut opts = NodeOpts::default();
    opts.env.push((
        "SHOAL_API_TOKEN_FILE".into(),
        token.to_string_lossy().into_owned(),
    ));
    (Node::start(&dir.join("node"), opts).unwrap(), token)
}

/// A client without the token cannot make the node buffer a large frame:
/// it announces 80 MiB and sends nothing more, and is answered at once.
/// And a node serving the API on all interfaces without a token says so.
#[test]
fn unauthenticated_clients_cannot_make_the_node_buffer_and_open_listens_are_refused() {
    use std::io::{Read, Write};
    let tmp = tempfile::tempdir().unwrap();
    let (node, token) = node_with_token(tmp.path());
    let mut s = std::net::TcpStream::connect(&node.listen).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    s.write_all(&(80u32 << 20).to_be_bytes()).unwrap();
    let mut answer = Vec::new();
    // The node answers with an error frame and closes; it does not wait
    // for 80 MiB (a timeout here would be the failure).
    s.read_to_end(&mut answer).unwrap();
    assert!(String::from_utf8_lossy(&answer).contains("exceeds the limit"));
    // Authenticated clients still work.
    assert!(node
        .ctl(&["--token-file", token.to_str().unwrap(), "list"])
        .status
        .success());

    // Serving the API on all interfaces without a token is refused with
    // one line, unless acknowledged with --insecure-listen.
    let open = |extra: &[&str]| {
        let mut cmd = std::process::Command::new(shoal_tests::bin("cache-node"));
        cmd.arg("--data-dir")
            .arg(tmp.path().join("open"))
            .arg("--memory-dir")
            .arg(tmp.path().join("open-mem"))
            .args(["--listen", &format!("0.0.0.0:{}", free_port())])
            .args(["--admin", &format!("127.0.0.1:{}", free_port())])
            .args(extra);
        cmd
    };
    let refused = open(&[]).output().unwrap();
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("cache-node: refusing to serve the control API on 0.0.0.0"),
        "{err}"
    );
    let acknowledged = shoal_tests::Proc::spawn(
        &mut open(&["--insecure-listen"]),
        tmp.path().join("open.log"),
    )
    .unwrap();
    shoal_tests::wait_for(
        "the node to start",
        std::time::Duration::from_secs(20),
        || acknowledged.log_text().contains("cache-node ready"),
    )
    .unwrap_or_else(|e| panic!("{e}: {}", acknowledged.log_text()));
}

#[test]
fn the_tcp_api_requires_the_token_when_one_is_configured() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let (node, token) = node_with_token(tmp.path());
    assert_fails(&node.ctl(&["list"]), "requires an API token");
    let with = node.ctl(&["--token-file", token.to_str().unwrap(), "list"]);
    assert!(
        with.status.success(),
        "{}",
        String::from_utf8_lossy(&with.stderr)
    );
    let wrong = tmp.path().join("wrong");
    std::fs::write(&wrong, "not-the-token-at-all-0000").unwrap();
    assert_fails(
        &node.ctl(&["--token-file", wrong.to_str().unwrap(), "list"]),
        "requires an API token",
    );
    // Local readers on the Unix socket are trusted by its file permissions.
    let local = std::process::Command::new(shoal_tests::bin("dataset-ctl"))
        .arg("--endpoint")
        .arg(format!("unix://{}", node.socket().display()))
        .arg("list")
        .output()
        .unwrap();
    assert!(local.status.success());
    // A token file others can read is refused at start.
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = std::process::Command::new(shoal_tests::bin("cache-node"))
        .arg("--api-token-file")
        .arg(&token)
        .arg("--data-dir")
        .arg(tmp.path().join("other"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));
}
