#![allow(clippy::unwrap_used)] // test fixtures: a failed setup step should abort the test loudly
//! Artifacts fetched over Florete itself: the management node mgmt01 is
//! bootstrapped by hand from a compiled tree on disk, runs the config-server
//! behind its vertex as the services `config` and `config-publish`, and node
//! alpha enrolls and syncs through `config` as its own `node/alpha` identity.

mod agent_support;
mod common;

use agent_support::*;
use common::*;
use serde_json::Value;

#[test]
fn nodes_fetch_from_the_config_service_over_florete() {
    let pilot = Pilot::new("demo.flor");
    let mgmt_udp = udp();
    let alpha_udp = udp();
    let echo = start_echo();
    let socks = free_tcp();
    let id = |p: &str| pilot.rete.id(p);

    // mgmt01 publishes the config-server's two loopback listeners; every node may read.
    let mgmt_vx = || -> Value {
        vertex_payload(
            "demo.flor",
            "mgmt01",
            Some(mgmt_udp),
            vec![
                pilot.principal("service/config"),
                pilot.principal("service/config-publish"),
            ],
            vec![
                (id("service/config"), pilot.read),
                (id("service/config-publish"), pilot.publish),
            ],
            vec![(id("node/alpha"), vec![0]), (id("node/mgmt01"), vec![0])],
            vec![],
            vec![],
        )
    };
    let alpha_vx = |granted: bool| -> Value {
        vertex_payload(
            "demo.flor",
            "alpha",
            Some(alpha_udp),
            vec![
                pilot.principal("service/echo"),
                pilot.principal("user/alice"),
            ],
            vec![(id("service/echo"), echo)],
            if granted {
                vec![(id("user/alice"), vec![0])]
            } else {
                vec![]
            },
            vec![(id("service/echo"), alpha_udp)],
            vec![(id("user/alice"), socks)],
        )
    };
    let agent_of = |node: &str| -> Value {
        let mut a = pilot.agent_payload(node, 3600);
        a["config_server"]["addr"] = Value::String(mgmt_udp.to_string());
        a
    };
    let (mgmt_agent, alpha_agent) = (agent_of("mgmt01"), agent_of("alpha"));

    // The compiled tree on the operator's disk, v1.
    let tree = TempDir::new("tree");
    let mut files = vec![];
    for (node, agent, vx) in [
        ("mgmt01", &mgmt_agent, mgmt_vx()),
        ("alpha", &alpha_agent, alpha_vx(true)),
    ] {
        files.extend(pilot.write_tree(&tree.0, node, 1, agent, &vx));
    }

    // mgmt01's manual bootstrap: enroll from the tree on disk, start its agent, publish.
    let mgmt = Host {
        home: TempDir(pilot.mgmt.home.0.clone()),
    };
    let b = pilot.bundle_via(
        "mgmt01",
        &["service/config", "service/config-publish"],
        &mgmt.home.0,
        None,
        mgmt_udp,
    );
    mgmt.enroll_from(&b, &tree.0);
    let _mgmt_agent = mgmt.start_agent("demo.flor");
    mgmt.wait_healthy("demo.flor", 1);
    assert_eq!(pilot.publish_files(&files).0, 200);
    // mgmt01's own agent polls through its own vertex, as node/mgmt01.
    let st = mgmt.wait_status("demo.flor", 20, "mgmt01 polled over Florete", |s| {
        s["poll"]["last_ok_unix"].is_u64()
    });
    assert!(
        st["poll"]["source"].as_str().unwrap().contains("(Florete)"),
        "{st}"
    );

    // alpha: no mirror in its bundle, so enroll dials `config` as node/alpha.
    let alpha = Host::new("alpha");
    let b = pilot.bundle_via(
        "alpha",
        &["service/echo", "user/alice"],
        &alpha.home.0,
        None,
        mgmt_udp,
    );
    let o = alpha.flor(&["enroll", b.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let _alpha_agent = alpha.start_agent("demo.flor");
    alpha.wait_healthy("demo.flor", 1);
    echo_through(socks, "echo.demo.flor.rete").unwrap();

    // v2 for alpha removes alice's grant; sync fetches it over Florete.
    let t = pilot.tree("alpha", 2, &alpha_agent, &alpha_vx(false));
    let mut v2 = files.clone();
    v2[2].1 = t[0].clone();
    v2[3].1 = t[1].clone();
    assert_eq!(v2[2].0, "alpha/mgmt/agent.json");
    assert_eq!(pilot.publish_files(&v2).0, 200);
    let o = alpha.flor(&["agent", "sync", "--rete", "demo.flor", "--confirm"]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("fetching from spiffe://demo.flor/service/config at"),
        "{out}"
    );
    assert!(out.contains("committed"), "{out}");
    assert_eq!(
        echo_through(socks, "echo.demo.flor.rete"),
        Err(2),
        "v2 refuses alice"
    );

    // A node the ACL does not grant `config` cannot read the rete's state.
    let gamma = Host::new("gamma");
    let b = pilot.bundle_via("gamma", &[], &gamma.home.0, None, mgmt_udp);
    let o = gamma.flor(&["enroll", b.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(text(&o).contains("denied"), "{}", text(&o));
}
