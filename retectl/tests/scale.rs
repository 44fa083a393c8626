#![allow(clippy::unwrap_used)] // test fixtures: a failed setup step should abort the test loudly
//! A generated rete of 10,000 users, 1,000 services and 50 nodes validates
//! and compiles, each node's artifact within the device limits. The times
//! are printed (run with `--nocapture` to see them).
//!
//! Shape: mgmt01 hosts config, config-publish, metrics; 49 server nodes
//! s01..s49 host ~20 services each and hold 8 users each whose role
//! grants that node's services (a shared workstation). Role rNN grants node sNN's group; user i has role r(i mod 49),
//! so ~204 users may call each server node (under MAX_ACL_ROWS = 512); 5 users
//! are operators. Users declare SOCKS5 ports from the 100-port band, many
//! users sharing a port, but never two held by one node.

mod common;

use std::fmt::Write as _;
use std::fs;
use std::time::Instant;

use common::{text, walk, Demo};

const USERS: usize = 10_000;
const SERVICES: usize = 1_000;
const NODES: usize = 50;
const SERVERS: usize = NODES - 1;
const HELD_USERS: usize = 8;

fn node(i: usize) -> String {
    format!("s{i:02}")
}

fn generate(d: &Demo) {
    let w = |f: &str, s: String| fs::write(d.repo.join(f), s).unwrap();
    let mut nodes = String::from("nodes:\n  - name: mgmt01\n    listen: 127.0.0.1:7443\n");
    for n in 1..=SERVERS {
        // Users whose role is rNN, so they reach their own node's services (routes stay small).
        let held: Vec<String> = (0..HELD_USERS)
            .map(|k| format!("u{:05}", (n - 1) + SERVERS * k))
            .collect();
        writeln!(
            nodes,
            "  - name: {}\n    listen: 127.0.1.{n}:7443\n    users: [{}]",
            node(n),
            held.join(", ")
        )
        .unwrap();
    }
    w("nodes.yaml", nodes);

    let mut services = String::from(
        "services:\n  - {name: config, node: mgmt01, upstream: 127.0.0.1:7080}\n  - {name: config-publish, node: mgmt01, upstream: 127.0.0.1:7081}\n  - {name: metrics, node: mgmt01, upstream: 127.0.0.1:9100}\n",
    );
    for i in 0..SERVICES - 3 {
        let n = i % SERVERS + 1;
        writeln!(
            services,
            "  - {{name: svc{i:04}, node: {}, upstream: 127.0.1.{n}:{}, groups: [g{n:02}]}}",
            node(n),
            10_000 + i
        )
        .unwrap();
    }
    w("services.yaml", services);

    let mut groups = String::from("groups:\n  - {name: config-read, services: [config]}\n  - {name: config-write, services: [config-publish]}\n");
    let mut roles = String::from(
        "roles:\n  - {name: node, groups: [config-read], services: [metrics]}\n  - {name: operator, groups: [config-read, config-write], services: [metrics]}\n",
    );
    for n in 1..=SERVERS {
        writeln!(groups, "  - name: g{n:02}").unwrap();
        writeln!(roles, "  - {{name: r{n:02}, groups: [g{n:02}]}}").unwrap();
    }
    w("groups.yaml", groups);
    w("roles.yaml", roles);

    let mut users = String::from("users:\n");
    for i in 0..USERS {
        let role = format!("r{:02}", i % SERVERS + 1);
        // The k-th user held on a node gets 1080 + k: unique per node, and
        // shared by ~100 users across the rete (no node holds two of them).
        let port = 1080 + (i / SERVERS) % 100;
        if i < 5 {
            writeln!(
                users,
                "  - {{name: u{i:05}, roles: [operator, {role}], socks_port: {port}}}"
            )
            .unwrap();
        } else {
            writeln!(
                users,
                "  - {{name: u{i:05}, role: {role}, socks_port: {port}}}"
            )
            .unwrap();
        }
    }
    w("users.yaml", users);
}

#[test]
fn ten_thousand_users_validate_and_compile_within_device_limits() {
    let d = Demo::with_ca();
    generate(&d);

    let t = Instant::now();
    let o = d.run(&["validate", d.repo_s()]);
    let validate_time = t.elapsed();
    let (out, err) = text(&o);
    assert!(
        o.status.success(),
        "{out}\n{}",
        err.lines().take(20).collect::<Vec<_>>().join("\n")
    );
    assert!(
        out.contains(&format!(
            "{NODES} nodes, {USERS} users, {SERVICES} services"
        )),
        "{out}"
    );

    let out_dir = d.tmp.path().join("out");
    let t = Instant::now();
    let o = d.run(&[
        "compile",
        d.repo_s(),
        "--all",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    let compile_time = t.elapsed();
    assert!(o.status.success(), "{:?}", text(&o));
    let files = walk(&out_dir);
    assert_eq!(files.len(), 2 * NODES);
    let biggest = files
        .iter()
        .map(|f| fs::metadata(f).unwrap().len())
        .max()
        .unwrap();
    assert!(biggest as usize <= flor_vertex::limits::MAX_ARTIFACT_BYTES);
    let s01 = fs::read(out_dir.join("s01/mgmt/vertices/flor.json")).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&s01).unwrap();
    let acl = v["payload"]["acl"].as_array().unwrap().len();
    assert!(
        acl > 200 && acl <= flor_vertex::limits::MAX_ACL_ROWS,
        "{acl}"
    );
    eprintln!(
        "scale: {USERS} users, {SERVICES} services, {NODES} nodes: validate {:.2?}, compile --all {:.2?} (validate included), largest artifact {biggest} bytes, s01 ACL rows {acl}",
        validate_time, compile_time
    );
}
