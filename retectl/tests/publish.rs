#![allow(clippy::unwrap_used)] // test fixtures: a failed setup step should abort the test loudly
//! `retectl publish` end to end, over Florete: the example rete is compiled,
//! its management node mgmt01 is bootstrapped as docs/playbook.md does it
//! (`flor enroll --from` the compiled tree, `flor agent run`, which starts
//! the config-server and the metrics collector because mgmt01's artifact
//! publishes their services; the store is `<install>/config-store`), and the
//! operator olga publishes as `user/olga` through the `config-publish`
//! service. bob, who has no `config-write` role, is refused by the ACL.
//! Per-node reads: node alpha fetching beta's artifacts over Florete gets 403
//! (logged with alpha's SPIFFE ID), its own and the operator's reads succeed.
//!
//! The roles under the agent: a config-server killed with SIGKILL comes back
//! on its own with its store; a version that moves the metrics services to
//! another node stops mgmt01's collector; stopping the agent stops both.
//!
//! Uses the `flor` binary of this workspace (`target/debug/flor`), which
//! `cargo test --workspace` builds before any test runs.

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use testkit::{free_udp, Group};

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
    let udp = free_udp().port();
    d.edit(
        "nodes.yaml",
        "listen: 127.0.0.1:7443",
        &format!("listen: 127.0.0.1:{udp}"),
    );
    let [read, publish, push, metrics] = free_management_ports(&d);
    let tmp = d.tmp.path();
    let v1 = tmp.join("out-v1");
    d.compile_all(&v1);
    let mgmt_bundle = tmp.join("mgmt01.bundle.json");
    let laptop_bundle = tmp.join("laptop.bundle.json");
    d.issue_bundle("mgmt01", None, &mgmt_bundle);
    d.issue_bundle("laptop", None, &laptop_bundle);

    // mgmt01's bootstrap: enroll from the compiled tree, start the agent; nothing else.
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
    let store = config_store(&home);
    let log = std::fs::File::create(tmp.join("agent.log")).unwrap();
    let mut agent = Group(
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
    let cs_pid = role_pid(&home, "config-server", None);
    let ms_pid = role_pid(&home, "metrics-server", None);
    let s = status_json(&home).unwrap();
    assert_eq!(
        s["roles"][0]["listen"],
        serde_json::json!([format!("127.0.0.1:{read}"), format!("127.0.0.1:{publish}")]),
        "{s}"
    );
    assert_eq!(
        s["roles"][1]["listen"],
        serde_json::json!([format!("127.0.0.1:{push}"), format!("127.0.0.1:{metrics}")]),
        "{s}"
    );

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
    let log = std::fs::read_to_string(tmp.join("agent.log")).unwrap();
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

    // The config-server dies: the agent starts it again on the same store,
    // which still holds v1 (so the rollback check below still sees it).
    kill(cs_pid, "-KILL");
    let cs_pid = role_pid(&home, "config-server", Some(cs_pid));
    wait_accepts(read);
    let o = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .arg(format!(
            "http://127.0.0.1:{read}/artifact/alpha/mgmt/agent.json"
        ))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout), "200", "{}", out(&o));

    // v2, then an attempt to publish v1 again: the config-server refuses the rollback.
    d.edit("rete.yaml", "version: 1", "version: 2");
    let v2 = tmp.join("out-v2");
    d.compile_all(&v2);
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
    d.compile_all(&v3);
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

    // v4 moves the metrics services to alpha: once mgmt01 syncs it (from its
    // own config-server, over its own vertex), its collector is stopped and
    // the config-server keeps running.
    d.edit("rete.yaml", "version: 3", "version: 4");
    let services = d.read("services.yaml");
    let moved = services
        .replace(
            "  - name: metrics-push\n    node: mgmt01",
            "  - name: metrics-push\n    node: alpha",
        )
        .replace(
            "  - name: metrics\n    node: mgmt01",
            "  - name: metrics\n    node: alpha",
        );
    assert_eq!(moved.matches("node: alpha").count(), 3, "{moved}");
    std::fs::write(d.repo.join("services.yaml"), moved).unwrap();
    let v4 = tmp.join("out-v4");
    d.compile_all(&v4);
    let o = by_name(&v4, "olga", &sub);
    assert!(o.status.success(), "{}", out(&o));
    let o = flor(&home)
        .args(["agent", "sync", "--rete", "demo.flor", "--confirm"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", out(&o));
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", push)).is_ok() || alive(ms_pid) {
        assert!(Instant::now() < deadline, "the collector still runs");
        std::thread::sleep(Duration::from_millis(100));
    }
    let s = status_json(&home).unwrap();
    let roles = s["roles"].as_array().unwrap();
    assert_eq!(roles.len(), 1, "{s}");
    assert_eq!(roles[0]["role"], "config-server");
    assert_eq!(roles[0]["pid"].as_u64(), Some(cs_pid), "not restarted: {s}");

    // SIGTERM to the agent (what a service manager sends): the config-server goes with it.
    kill(agent.0.id().into(), "-TERM");
    let _ = agent.0.wait();
    assert!(!alive(cs_pid), "the config-server outlived its agent");
    assert!(std::net::TcpStream::connect(("127.0.0.1", read)).is_err());
    let log = std::fs::read_to_string(tmp.join("agent.log")).unwrap();
    assert!(log.contains("config-server stopped"), "{log}");
}

fn kill(pid: u64, signal: &str) {
    let st = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

/// Whether `pid` is a live process (a zombie counts as gone: its agent has not reaped it yet).
fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

fn wait_accepts(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing accepts on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
