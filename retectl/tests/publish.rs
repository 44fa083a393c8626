#![allow(clippy::unwrap_used)] // test fixtures: a failed setup step should abort the test loudly
//! `retectl publish` end to end, over Florete: the example rete is compiled,
//! its management node mgmt01 is bootstrapped by hand (`flor enroll --from`
//! the compiled tree, `flor config-server`, `flor agent run`), and the
//! operator olga publishes as `user/olga` through the `config-publish`
//! service. bob, who has no `config-write` role, is refused by the ACL.
//! Per-node reads: node alpha fetching beta's artifacts over Florete gets 403
//! (logged with alpha's SPIFFE ID), its own and the operator's reads succeed.
//!
//! Uses the `flor` binary of this workspace (`target/debug/flor`), which
//! `cargo test --workspace` builds before any test runs.

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use testkit::{free_tcp, free_udp, Group};

/// Writes one user's certificate and key out of a Flow A bundle.
fn user_credentials(bundle: &Path, user: &str, dir: &Path) -> PathBuf {
    let b: serde_json::Value = serde_json::from_slice(&std::fs::read(bundle).unwrap()).unwrap();
    let p = b["principals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == format!("spiffe://demo.flor/user/{user}"))
        .unwrap();
    let cert = dir.join(format!("{user}.crt"));
    std::fs::write(&cert, p["cert_pem"].as_str().unwrap()).unwrap();
    std::fs::write(
        dir.join(format!("{user}.key")),
        p["key_pem"].as_str().unwrap(),
    )
    .unwrap();
    cert
}

#[test]
fn operator_publishes_over_florete_and_others_are_refused() {
    let d = Demo::with_ca();
    let (udp, read, publish) = (free_udp().port(), free_tcp(), free_tcp());
    d.edit(
        "nodes.yaml",
        "listen: 127.0.0.1:7443",
        &format!("listen: 127.0.0.1:{udp}"),
    );
    d.edit(
        "services.yaml",
        "upstream: 127.0.0.1:7080",
        &format!("upstream: 127.0.0.1:{read}"),
    );
    d.edit(
        "services.yaml",
        "upstream: 127.0.0.1:7081",
        &format!("upstream: 127.0.0.1:{publish}"),
    );
    let tmp = d.tmp.path();
    let v1 = tmp.join("out-v1");
    d.ok(&[
        "compile",
        d.repo_s(),
        "--all",
        "--out",
        v1.to_str().unwrap(),
    ]);
    let mgmt_bundle = tmp.join("mgmt01.bundle.json");
    let laptop_bundle = tmp.join("laptop.bundle.json");
    d.issue_bundle("mgmt01", None, &mgmt_bundle);
    d.issue_bundle("laptop", None, &laptop_bundle);

    // mgmt01's manual bootstrap.
    let home = tmp.join("mgmt01-home");
    let o = flor(&home)
        .args([
            "enroll",
            mgmt_bundle.to_str().unwrap(),
            "--from",
            v1.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", out(&o));
    let store = tmp.join("store");
    let _cs = config_server(&home, read, publish, &store);
    let log = std::fs::File::create(tmp.join("agent.log")).unwrap();
    let _agent = Group(
        flor(&home)
            .args(["agent", "run", "--rete", "demo.flor"])
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let o = flor(&home)
            .args(["agent", "status", "--rete", "demo.flor", "--json"])
            .output()
            .unwrap();
        if o.status.success() {
            let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            if s["vertex"]["health"] == "healthy" {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "mgmt01 not healthy: {}",
            std::fs::read_to_string(tmp.join("agent.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // olga (role operator -> group config-write) publishes as user/olga.
    let olga = user_credentials(&laptop_bundle, "olga", tmp);
    let ca = d.repo.join("certs/ca.crt");
    let publish_as = |tree: &Path, cert: &Path| {
        retectl(&[
            "publish",
            tree.to_str().unwrap(),
            "--as",
            cert.to_str().unwrap(),
            "--ca",
            ca.to_str().unwrap(),
        ])
    };
    let o = publish_as(&v1, &olga);
    assert!(o.status.success(), "{}", out(&o));
    let s = out(&o);
    assert!(
        s.contains("as spiffe://demo.flor/user/olga to spiffe://demo.flor/service/config-publish"),
        "{s}"
    );
    assert!(
        s.contains("published alpha v1 beta v1 laptop v1 mgmt01 v1"),
        "{s}"
    );
    let stored = store.join("tree/alpha/mgmt/agent.json");
    assert_eq!(
        std::fs::read(&stored).unwrap(),
        std::fs::read(v1.join("alpha/mgmt/agent.json")).unwrap()
    );

    // Per-node reads (docs/config-server.md): the config-server asks mgmt01's
    // vertex who is calling. alpha reads its own artifacts, not beta's; the
    // operator reads every node's; a process on mgmt01 itself reads directly.
    let alpha_bundle = tmp.join("alpha.bundle.json");
    d.issue_bundle("alpha", None, &alpha_bundle);
    let mgmt01: std::net::SocketAddr = format!("127.0.0.1:{udp}").parse().unwrap();
    let get = |bundle: &Path, id: &str, node: &str| {
        let path = format!("/artifact/{node}/mgmt/agent.json");
        http_as(&ca, bundle, id, "config", mgmt01, "GET", &path)
    };
    let (status, body) = get(&alpha_bundle, "node/alpha", "alpha");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        body,
        std::fs::read(v1.join("alpha/mgmt/agent.json")).unwrap()
    );
    let (status, body) = get(&alpha_bundle, "node/alpha", "beta");
    let refusal = "spiffe://demo.flor/node/alpha may not read the artifacts of node beta";
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains(refusal));
    let log = std::fs::read_to_string(home.join("config-server.log")).unwrap();
    assert!(log.contains(&format!("refused (403): {refusal}")), "{log}");
    let (status, body) = get(&laptop_bundle, "user/olga", "beta");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        body,
        std::fs::read(v1.join("beta/mgmt/agent.json")).unwrap()
    );
    let local = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
        ])
        .arg(format!(
            "http://127.0.0.1:{read}/artifact/beta/mgmt/agent.json"
        ))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&local.stdout), "200", "{local:?}");

    // bob holds no role that reaches config-publish: the vertex refuses before the server sees a byte.
    let bob = user_credentials(&laptop_bundle, "bob", tmp);
    let o = publish_as(&v1, &bob);
    assert!(!o.status.success());
    assert!(out(&o).contains("denied"), "{}", out(&o));

    // v2, then an attempt to publish v1 again: the config-server refuses the rollback.
    d.edit("rete.yaml", "version: 1", "version: 2");
    let v2 = tmp.join("out-v2");
    d.ok(&[
        "compile",
        d.repo_s(),
        "--all",
        "--out",
        v2.to_str().unwrap(),
    ]);
    let o = publish_as(&v2, &olga);
    assert!(o.status.success(), "{}", out(&o));
    let o = publish_as(&v1, &olga);
    assert!(!o.status.success());
    assert!(out(&o).contains("HTTP 409"), "{}", out(&o));
    assert!(
        out(&o).contains("would replace stored version 2"),
        "{}",
        out(&o)
    );
    assert_eq!(
        std::fs::read(&stored).unwrap(),
        std::fs::read(v2.join("alpha/mgmt/agent.json")).unwrap()
    );

    // `--as olga`: the name is found in the laptop's flor scope of the tree's
    // rete (under FLOR_HOME, laid out as `flor enroll` lays it out), the CA in
    // the repo around the current directory, from a subdirectory of it.
    d.edit("rete.yaml", "version: 2", "version: 3");
    let v3 = tmp.join("out-v3");
    d.ok(&[
        "compile",
        d.repo_s(),
        "--all",
        "--out",
        v3.to_str().unwrap(),
    ]);
    let laptop_home = tmp.join("laptop-home");
    let scope = laptop_home.join("retes/demo.flor");
    std::fs::create_dir_all(scope.join("certs/user")).unwrap();
    std::fs::create_dir_all(scope.join("keys/user")).unwrap();
    std::fs::copy(&olga, scope.join("certs/user/olga.crt")).unwrap();
    std::fs::copy(olga.with_extension("key"), scope.join("keys/user/olga.key")).unwrap();
    // bob's certificate filed under olga's name must not pass for olga.
    let other = laptop_home.join("retes/aaa-other");
    std::fs::create_dir_all(other.join("certs/user")).unwrap();
    std::fs::create_dir_all(other.join("keys/user")).unwrap();
    std::fs::copy(&bob, other.join("certs/user/olga.crt")).unwrap();
    std::fs::copy(bob.with_extension("key"), other.join("keys/user/olga.key")).unwrap();
    let sub = d.repo.join("notes");
    std::fs::create_dir_all(&sub).unwrap();
    let by_name = |tree: &Path, who: &str, cwd: &Path| {
        Command::new(env!("CARGO_BIN_EXE_retectl"))
            .args(["publish", tree.to_str().unwrap(), "--as", who, "--json"])
            .current_dir(cwd)
            .env("FLOR_HOME", &laptop_home)
            .output()
            .unwrap()
    };
    let o = by_name(&v3, "olga", &sub);
    assert!(o.status.success(), "{}", out(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["as"], "spiffe://demo.flor/user/olga", "{j}");
    assert_eq!(j["service"], "spiffe://demo.flor/service/config-publish");
    assert_eq!(j["published"], 8, "{j}");
    assert_eq!(
        std::fs::read(&stored).unwrap(),
        std::fs::read(v3.join("alpha/mgmt/agent.json")).unwrap()
    );
    // Outside the repo, with no CA in the scope: the refusal says what to pass.
    let o = by_name(&v3, "olga", tmp);
    assert!(!o.status.success());
    assert!(out(&o).contains("pass --ca"), "{}", out(&o));
    // With the scope's ca.crt (flor enroll puts it there), outside the repo too.
    std::fs::copy(&ca, scope.join("ca.crt")).unwrap();
    // (The same bytes again: the config-server accepts an identical version.)
    let o = by_name(&v3, "olga", tmp);
    assert!(o.status.success(), "{}", out(&o));
    // An unknown name: where it looked, and what to do.
    let o = by_name(&v3, "nobody", &sub);
    assert!(!o.status.success());
    let e = out(&o);
    assert!(
        e.contains("no certificate for spiffe://demo.flor/user/nobody") && e.contains("--key-dir"),
        "{e}"
    );
}
