#![allow(clippy::unwrap_used)] // test fixtures: a failed setup step should abort the test loudly
//! One host, two retes; ports that are taken; and Flow B enrollment, where
//! the keys are made on the device and never leave it.

mod agent_support;
mod common;

use std::net::TcpListener;

use agent_support::*;
use common::*;
use serde_json::{json, Value};

#[test]
fn two_retes_side_by_side_with_separate_sockets_and_ports() {
    let host = Host::new("laptop");
    let echo = start_echo();
    // Both operators chose the same preferred SOCKS5 port.
    let preferred = free_tcp();
    let mut retes = vec![];
    for td in ["home.flor", "work.example"] {
        let r = echo_rete(td, echo, preferred, &host);
        let o = host.flor(&["enroll", r.bundle.to_str().unwrap()]);
        assert!(o.status.success(), "{}", text(&o));
        retes.push(r);
    }
    let info = |td: &str| -> Value {
        serde_json::from_slice(&std::fs::read(host.scope(td).join("scope.json")).unwrap()).unwrap()
    };
    assert_eq!(
        info("home.flor")["port_offset"],
        0,
        "the first scope keeps the default ports"
    );
    let off = info("work.example")["port_offset"].as_u64().unwrap();
    assert!(
        off > 0 && off % 100 == 0 && off <= 900,
        "offset {off} from the CA fingerprint"
    );
    // Without --rete, a command cannot guess which scope is meant.
    let o = host.flor(&["agent", "status"]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("several retes are enrolled"),
        "{}",
        text(&o)
    );

    // The first rete's preferred port is taken by someone else.
    let squatter = TcpListener::bind(("127.0.0.1", preferred)).unwrap();
    let _a = host.start_agent("home.flor");
    let _b = host.start_agent("work.example");
    let home = host.wait_healthy("home.flor", 1);
    let work = host.wait_healthy("work.example", 1);
    assert_eq!(home["rete"], "home.flor");
    assert_eq!(work["rete"], "work.example");
    assert_ne!(home["vertex"]["pid"], work["vertex"]["pid"]);
    assert!(host.scope("home.flor").join("agent.sock").exists());
    assert!(host.scope("work.example").join("agent.sock").exists());

    let socks = |st: &Value| -> (u64, u64) {
        let l = st["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["kind"] == "socks5")
            .unwrap()
            .clone();
        (
            l["preferred"].as_u64().unwrap(),
            l["actual"].as_u64().unwrap(),
        )
    };
    let (hp, ha) = socks(&home);
    assert_eq!(hp, u64::from(preferred));
    assert_ne!(
        ha, hp,
        "the preferred port was taken: status shows the actual one"
    );
    let (wp, wa) = socks(&work);
    assert_eq!(wp, u64::from(preferred) + off);
    assert_ne!(wa, ha);
    let text_status = text(&host.flor(&["agent", "status", "--rete", "home.flor"]));
    assert!(
        text_status.contains(&format!(
            "preferred 127.0.0.1:{hp} actual 127.0.0.1:{ha} (preferred port was taken)"
        )),
        "{text_status}"
    );
    let quic = home["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["kind"] == "quic")
        .unwrap()
        .clone();
    assert_eq!(quic["preferred"], quic["actual"]);

    // Traffic flows in each rete through its own port.
    echo_through(ha as u16, "echo.home.flor.rete").unwrap();
    echo_through(wa as u16, "echo.work.example.rete").unwrap();
    // A rete's name does not resolve through the other rete's port.
    assert!(echo_through(ha as u16, "echo.work.example.rete").is_err());
    drop(squatter);
}

#[test]
fn enrolling_again_under_a_running_agent_adds_a_principal_without_a_restart() {
    let host = Host::new("reenroll");
    let echo = start_echo();
    let EchoRete {
        p,
        udp,
        agent,
        bundle: b,
    } = echo_rete("demo.flor", echo, free_tcp(), &host);
    let o = host.flor(&["enroll", b.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let _agent = host.start_agent("demo.flor");
    let before = host.wait_healthy("demo.flor", 1);

    // While a version is being tried, enrolling would void it unseen: refused.
    let v1 = one_node_vertex(&p, udp, echo, free_tcp());
    assert_eq!(p.publish("laptop", 2, &agent, &v1).0, 200);
    let (ok, out) = sync(&host, &["--commit-timeout", "5m"]);
    assert!(ok, "{out}");
    host.wait_status("demo.flor", 30, "v2 pending", |s| {
        s["pending"]["version"] == 2
    });
    let files = host.snapshot("demo.flor");
    let o = host.flor(&["enroll", b.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("has a version pending") && text(&o).contains("Nothing was changed"),
        "{}",
        text(&o)
    );
    assert_eq!(host.snapshot("demo.flor"), files, "the scope was touched");
    let (ok, out) = sync(&host, &["--confirm"]);
    assert!(ok, "{out}");
    let v2 = host.wait_status("demo.flor", 30, "v2 committed", |s| {
        s["pending"].is_null() && s["version"] == 2 && s["vertex"]["health"] == "healthy"
    });

    // Version 3 gives the laptop a second user, who needs a certificate: a
    // new bundle, enrolled under the running agent. Certificates, v3 and a
    // restarted vertex, with no agent restart.
    let v3 = vertex_payload(
        &p.rete.td,
        "laptop",
        Some(udp),
        vec![
            p.principal("service/echo"),
            p.principal("user/me"),
            p.principal("user/you"),
        ],
        vec![(p.rete.id("service/echo"), echo)],
        vec![
            (p.rete.id("user/me"), vec![0u8]),
            (p.rete.id("user/you"), vec![0u8]),
        ],
        vec![(p.rete.id("service/echo"), udp)],
        vec![
            (p.rete.id("user/me"), free_tcp()),
            (p.rete.id("user/you"), free_tcp()),
        ],
    );
    assert_eq!(p.publish("laptop", 3, &agent, &v3).0, 200);
    let b3 = p.bundle(
        "laptop",
        &["service/echo", "user/me", "user/you"],
        &host.home.0,
    );
    let o = host.flor(&["enroll", b3.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("the agent re-read scope demo.flor (v3)"),
        "{}",
        text(&o)
    );
    let after = host.wait_healthy("demo.flor", 3);
    assert_ne!(after["vertex"]["pid"], v2["vertex"]["pid"]);
    assert_ne!(after["vertex"]["pid"], before["vertex"]["pid"]);
    let you = listener_port(&after, "spiffe://demo.flor/user/you");
    echo_through(you, "echo.demo.flor.rete").unwrap();
    echo_through(
        listener_port(&after, "spiffe://demo.flor/user/me"),
        "echo.demo.flor.rete",
    )
    .unwrap();
}

fn sync(host: &Host, args: &[&str]) -> (bool, String) {
    let mut a = vec!["agent", "sync", "--rete", "demo.flor"];
    a.extend_from_slice(args);
    let o = host.flor(&a);
    (o.status.success(), text(&o))
}

#[test]
fn flow_b_keys_stay_on_the_device() {
    let p = Pilot::new("demo.flor");
    let host = Host::new("router");
    let csr_file = host.home.0.join("router.csr.json");
    let o = host.flor(&[
        "id",
        "create",
        "--rete",
        "demo.flor",
        "--node",
        "router",
        "--principal",
        "service/echo",
        "--out",
        csr_file.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let req: Value = serde_json::from_slice(&std::fs::read(&csr_file).unwrap()).unwrap();
    assert_eq!(req["format"], "florete-csr/1");
    let csrs = req["csrs"].as_array().unwrap();
    assert_eq!(csrs.len(), 2);
    // The operator's side: openssl verifies each CSR and sees the SPIFFE URI SAN.
    for c in csrs {
        let f = host.home.0.join("one.csr.pem");
        std::fs::write(&f, c["csr_pem"].as_str().unwrap()).unwrap();
        let o = std::process::Command::new("openssl")
            .args([
                "req",
                "-in",
                f.to_str().unwrap(),
                "-noout",
                "-verify",
                "-text",
            ])
            .output()
            .unwrap();
        let t = text(&o);
        assert!(o.status.success(), "{t}");
        assert!(
            t.contains(&format!("URI:{}", c["id"].as_str().unwrap())),
            "{t}"
        );
    }
    // Issue certificates for the device's public keys (what retectl issue-bundle --csr does).
    let pending = host.scope("demo.flor").join("pending");
    let mut principals = vec![];
    for path in ["node/router", "service/echo"] {
        let key_file = pending.join(format!("keys/{path}.key"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(&key_file).unwrap()).unwrap();
        let cert = p.rete.ca.issue_for(&p.rete.id(path), &key);
        principals.push(json!({"id": p.rete.id(path), "cert_pem": cert, "key_pem": null}));
    }
    // v1 comes from a compiled tree on disk (the management node's manual bootstrap path).
    let tree = TempDir::new("tree");
    let udp = udp();
    let vx = vertex_payload(
        "demo.flor",
        "router",
        Some(udp),
        vec![p.principal("service/echo")],
        vec![(p.rete.id("service/echo"), start_echo())],
        vec![],
        vec![],
        vec![],
    );
    let t = p.tree("router", 1, &p.agent_payload("router", 3600), &vx);
    std::fs::create_dir_all(tree.0.join("router/mgmt/vertices")).unwrap();
    std::fs::write(tree.0.join("router/mgmt/agent.json"), &t[0]).unwrap();
    std::fs::write(tree.0.join("router/mgmt/vertices/flor.json"), &t[1]).unwrap();
    let bundle = json!({
        "format": "florete-bundle/1", "rete": "demo.flor", "node": "router",
        "ca_pem": p.rete.ca.pem, "principals": principals,
        "mgmt_signers": [p.rete.signer()],
        "config_server": {"service": p.rete.id("service/config"), "addr": "127.0.0.1:9"},
        "mirror_url": null,
    });
    let bf = host.home.0.join("router.bundle.json");
    std::fs::write(&bf, serde_json::to_vec(&bundle).unwrap()).unwrap();
    let o = host.flor(&[
        "enroll",
        bf.to_str().unwrap(),
        "--from",
        tree.0.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let scope = host.scope("demo.flor");
    let key = std::fs::read(scope.join("keys/service/echo.key")).unwrap();
    assert!(String::from_utf8_lossy(&key).contains("PRIVATE KEY"));
    assert!(
        !pending.join("keys/service/echo.key").exists(),
        "pending key moved into place"
    );

    // A bundle whose certificate is for another key is refused, naming the principal.
    let other = rcgen::KeyPair::generate().unwrap();
    let mut wrong = bundle.clone();
    wrong["principals"][1]["cert_pem"] =
        json!(p.rete.ca.issue_for(&p.rete.id("service/echo"), &other));
    // Put the pending keys back so only the mismatch can fail.
    for path in ["node/router", "service/echo"] {
        let k = pending.join(format!("keys/{path}.key"));
        std::fs::create_dir_all(k.parent().unwrap()).unwrap();
        std::fs::copy(scope.join(format!("keys/{path}.key")), k).unwrap();
    }
    std::fs::write(&bf, serde_json::to_vec(&wrong).unwrap()).unwrap();
    let o = host.flor(&[
        "enroll",
        bf.to_str().unwrap(),
        "--from",
        tree.0.to_str().unwrap(),
        "--as",
        "second",
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains(
            "the certificate for spiffe://demo.flor/service/echo does not match its private key"
        ),
        "{}",
        text(&o)
    );

    // The enrolled node runs.
    let _agent = host.start_agent("demo.flor");
    host.wait_healthy("demo.flor", 1);
}
