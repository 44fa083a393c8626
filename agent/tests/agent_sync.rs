#![allow(clippy::unwrap_used)] // test fixtures: a failed setup step should abort the test loudly
//! Publish → sync → run, as an operator and a node see it: a real
//! `flor config-server`, curl as the publisher, `flor enroll`, `flor agent run`
//! supervising a real `flor vertex run`, and traffic through its SOCKS5 port.
//!
//! Node alpha hosts `echo` and holds user `alice`, whose SOCKS5 listener
//! routes to alpha's own vertex, so one node shows the whole path.

mod agent_support;
mod common;

use std::time::{Duration, Instant};

use agent_support::*;
use common::*;
use serde_json::Value;

#[test]
fn publish_sync_confirm_rollback_and_refusals() {
    let a = Alpha::enrolled("demo.flor", 3600);
    let scope = a.host.scope("demo.flor");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(scope.join("keys/user/alice.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "private keys are 0600");
    assert_eq!(
        std::fs::read_link(scope.join("mgmt")).unwrap(),
        std::path::Path::new("gen/1")
    );

    let t0 = Instant::now();
    let agent = a.host.start_agent("demo.flor");
    let st = a.host.wait_healthy("demo.flor", 1);
    let to_healthy = t0.elapsed();
    assert_eq!(st["rete"], "demo.flor");
    assert_eq!(st["node"], "alpha");
    assert_eq!(st["pending"], Value::Null);
    let pid1 = st["vertex"]["pid"].clone();
    a.traffic().expect("v1 grants alice: traffic flows");
    let rss = |pid: u64| testkit::rss_kib(u32::try_from(pid).unwrap());
    eprintln!(
        "measured: agent start to healthy vertex {:?}; idle RSS agent {} kB, vertex {} kB ({})",
        to_healthy,
        rss(u64::from(agent.0.id())),
        rss(pid1.as_u64().unwrap()),
        std::env::var("FLOR_TEST_EXE").unwrap_or_else(|_| "debug build".into())
    );

    // v2 removes alice's grant. --dry-run shows it and changes nothing.
    a.publish(2, false, false);
    let before = a.host.snapshot("demo.flor");
    let (ok, out) = a.sync(&["--dry-run"]);
    assert!(ok, "{out}");
    assert!(out.contains("version: 1 -> 2"), "{out}");
    assert!(out.contains("- acl spiffe://demo.flor/user/alice"), "{out}");
    assert!(out.contains("nothing was changed"), "{out}");
    assert_eq!(
        a.host.snapshot("demo.flor"),
        before,
        "dry run left the scope byte-identical"
    );
    assert_eq!(a.status()["vertex"]["pid"], pid1);

    // Sync with a commit timeout, then confirm: v2 stays after the timeout.
    let t = Instant::now();
    let (ok, out) = a.sync(&["--commit-timeout", "3s"]);
    assert!(ok, "{out}");
    eprintln!(
        "measured: sync v1 -> v2 until the new vertex is healthy {:?}",
        t.elapsed()
    );
    assert!(out.contains("staged v2 (was v1)"), "{out}");
    assert!(out.contains("unless confirmed"), "{out}");
    let st = a.status();
    assert_eq!(st["pending"]["version"], 2);
    assert!(st["pending"]["deadline_unix"].as_u64().unwrap() > 0);
    assert_eq!(
        a.traffic(),
        Err(2),
        "v2 refuses alice (SOCKS5 reply 2: not allowed)"
    );
    let t = Instant::now();
    let (ok, out) = a.sync(&["--confirm"]);
    assert!(ok, "{out}");
    assert!(out.contains("confirmed v2"), "{out}");
    eprintln!(
        "measured: sync --confirm of a pending version {:?}",
        t.elapsed()
    );
    std::thread::sleep(Duration::from_secs(4));
    let st = a.status();
    assert_eq!(st["version"], 2, "a confirmed version outlives its timeout");
    assert_eq!(st["pending"], Value::Null);
    assert_eq!(a.traffic(), Err(2));

    // v3's vertex cannot start: rolled back to v2 automatically, and said so.
    a.publish(3, true, true);
    let t = Instant::now();
    let (ok, out) = a.sync(&[]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("rolled back v3 to v2 because the new vertex exited before it became healthy"),
        "{out}"
    );
    assert!(t.elapsed() < Duration::from_secs(20));
    eprintln!(
        "measured: sync of v3 to its automatic rollback {:?}",
        t.elapsed()
    );
    let st = a.host.wait_healthy("demo.flor", 2);
    assert_eq!(
        std::fs::read_link(scope.join("mgmt")).unwrap(),
        std::path::Path::new("gen/2")
    );
    assert!(!scope.join("gen/3").exists());
    assert!(!scope.join("commit.json").exists());
    assert!(st["last_event"]
        .as_str()
        .unwrap()
        .contains("rolled back v3 to v2"));

    // v4 is good but nobody confirms: rolled back when the timeout passes.
    a.publish(4, true, false);
    let (ok, out) = a.sync(&["--commit-timeout", "2s"]);
    assert!(ok, "{out}");
    a.traffic().expect("v4 grants alice while it runs");
    let st = a
        .host
        .wait_status("demo.flor", 15, "unconfirmed v4 rolled back", |s| {
            s["version"] == 2 && s["pending"].is_null()
        });
    assert!(
        st["last_event"]
            .as_str()
            .unwrap()
            .contains("not confirmed within the commit timeout"),
        "{st}"
    );
    a.host.wait_healthy("demo.flor", 2);
    assert_eq!(a.traffic(), Err(2), "back on v2");

    // A tampered artifact on the config-server: refused with its reason; v2 keeps serving.
    let pid = a.status()["vertex"]["pid"].clone();
    let stored = a.pilot.stored("alpha", "mgmt/agent.json");
    let mut bytes = std::fs::read(&stored).unwrap();
    let at = bytes
        .windows(20)
        .position(|w| w == b"\"poll_interval_s\":36")
        .unwrap();
    bytes[at + 19] = b'1'; // 3600 -> 1600, signature unchanged
    std::fs::write(&stored, &bytes).unwrap();
    let (ok, out) = a.sync(&[]);
    assert!(!ok, "{out}");
    assert!(out.contains("signature does not verify"), "{out}");
    assert!(out.contains("still running v2"), "{out}");

    // A replayed older version: refused as not newer.
    let v1 = a.pilot.tree(
        "alpha",
        1,
        &a.pilot.agent_payload("alpha", a.poll_s),
        &a.vertex(true, false),
    );
    std::fs::write(&stored, &v1[0]).unwrap();
    let (ok, out) = a.sync(&[]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("version 1 is not newer than the running version 2"),
        "{out}"
    );
    let st = a.status();
    assert_eq!(st["version"], 2);
    assert_eq!(
        st["vertex"]["pid"], pid,
        "the running vertex was never touched"
    );
    assert_eq!(st["vertex"]["health"], "healthy");
}

#[test]
fn config_server_refuses_rollback_foreign_signer_and_bad_paths() {
    let pilot = Pilot::new("demo.flor");
    let agent = pilot.agent_payload("alpha", 60);
    let vx = vertex_payload(
        "demo.flor",
        "alpha",
        None,
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
    );
    assert_eq!(pilot.publish("alpha", 5, &agent, &vx).0, 200);
    // Idempotent: the same tree again is fine.
    assert_eq!(pilot.publish("alpha", 5, &agent, &vx).0, 200);
    let (code, body) = pilot.publish("alpha", 4, &agent, &vx);
    assert_eq!(code, 409, "{body}");
    assert!(
        body.contains("version 4 would replace stored version 5"),
        "{body}"
    );

    // Signed by a key the rete does not authorise.
    let rogue = Rete::new("demo.flor");
    let t = vec![(
        "alpha/mgmt/agent.json".to_string(),
        rogue.seal("agent", "alpha", 9, &agent),
    )];
    let (code, body) = pilot.publish_files(&t);
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("signature does not verify"), "{body}");

    // An artifact filed under another node.
    let t = vec![(
        "beta/mgmt/agent.json".to_string(),
        pilot.rete.seal("agent", "alpha", 9, &agent),
    )];
    let (code, body) = pilot.publish_files(&t);
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("for node alpha"), "{body}");

    let t = vec![("../escape.json".to_string(), b"x".to_vec())];
    assert_eq!(pilot.publish_files(&t).0, 400);

    // Nothing refused reached the store: v5 is still served, to curl as to nodes.
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            &format!("{}artifact/alpha/mgmt/agent.json", pilot.mirror()),
        ])
        .output()
        .unwrap();
    let served = out.stdout;
    assert_eq!(
        flor_vertex::envelope::peek_header(&served).unwrap().version,
        5
    );
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
            &format!("{}artifact/zeta/mgmt/agent.json", pilot.mirror()),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "404");
}
