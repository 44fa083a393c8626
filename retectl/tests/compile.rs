#![allow(clippy::unwrap_used)] // test fixtures: a failed setup step should abort the test loudly
//! `retectl compile`: deterministic trees, envelopes that flor-vertex's
//! verifier opens, payloads the device parser reads back, need-to-know.

mod common;

use std::fs;
use std::path::Path;

use common::{copy_dir, text, walk, Demo};
use flor_vertex::artifact::{AgentConfig, MgmtSigner, PublicKeyHex, VertexConfig};
use flor_vertex::envelope::{self, ArtifactKind, Expect};
use flor_vertex::identity::{Name, SpiffeId, TrustDomain};

const NODES: [&str; 4] = ["alpha", "beta", "laptop", "mgmt01"];

fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    walk(dir)
        .into_iter()
        .map(|p| {
            (
                p.strip_prefix(dir).unwrap().display().to_string(),
                fs::read(&p).unwrap(),
            )
        })
        .collect()
}

/// The signer as a device knows it: the Ed25519 key inside the repo's signer certificate.
fn trusted(d: &Demo) -> Vec<MgmtSigner> {
    let pem = d.read("certs/management-planes/primary.crt");
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    let cert = p.parse_x509().unwrap();
    let key: [u8; 32] = cert
        .public_key()
        .subject_public_key
        .data
        .as_ref()
        .try_into()
        .unwrap();
    vec![MgmtSigner {
        id: SpiffeId::parse("spiffe://demo.flor/management-plane/primary").unwrap(),
        key: PublicKeyHex(key),
    }]
}

fn open_vertex(d: &Demo, out: &Path, node: &str) -> VertexConfig {
    let bytes = fs::read(out.join(node).join("mgmt/vertices/flor.json")).unwrap();
    let td = TrustDomain::new("demo.flor").unwrap();
    let n = Name::new(node).unwrap();
    let signers = trusted(d);
    let expect = Expect {
        kind: ArtifactKind::Vertex,
        rete: &td,
        node: &n,
        trusted: &signers,
        current_version: None,
    };
    let opened = envelope::open::<VertexConfig>(&bytes, &expect).unwrap();
    assert_eq!(opened.header.version, 1);
    assert_eq!(opened.header.authorized_mgmt_signers.0, signers);
    opened.payload.validate().unwrap();
    opened.payload
}

#[test]
fn compile_is_byte_identical_twice_and_from_a_fresh_copy() {
    let d = Demo::with_ca();
    let a = d.tmp.path().join("out-a");
    let b = d.tmp.path().join("out-b");
    d.compile_all(&a);
    d.compile_all(&b);
    let ta = tree(&a);
    assert_eq!(
        ta.len(),
        8,
        "{:?}",
        ta.iter().map(|t| &t.0).collect::<Vec<_>>()
    );
    assert_eq!(ta, tree(&b));
    // A fresh clone elsewhere (same commit: YAML + certs), same keys.
    let clone = tempfile::tempdir().unwrap();
    let repo2 = clone.path().join("elsewhere/repo");
    copy_dir(&d.repo, &repo2);
    let c = clone.path().join("out-c");
    let o = common::retectl(&[
        "compile",
        repo2.to_str().unwrap(),
        "--all",
        "--out",
        c.to_str().unwrap(),
        "--keys",
        d.keys.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert_eq!(ta, tree(&c));
    // And --node gives the same bytes as --all for that node.
    let single = d.tmp.path().join("out-single");
    d.ok(&[
        "compile",
        d.repo_s(),
        "--node",
        "beta",
        "--out",
        single.to_str().unwrap(),
    ]);
    assert_eq!(
        tree(&single),
        tree(&a)
            .into_iter()
            .filter(|(p, _)| p.starts_with("beta/"))
            .collect::<Vec<_>>()
    );
}

#[test]
fn envelopes_verify_and_payloads_round_trip_on_the_device_parser() {
    let d = Demo::with_ca();
    let out = d.tmp.path().join("out");
    d.compile_all(&out);
    let td = TrustDomain::new("demo.flor").unwrap();
    let signers = trusted(&d);
    for node in NODES {
        let n = Name::new(node).unwrap();
        let bytes = fs::read(out.join(node).join("mgmt/agent.json")).unwrap();
        let expect = Expect {
            kind: ArtifactKind::Agent,
            rete: &td,
            node: &n,
            trusted: &signers,
            current_version: None,
        };
        let agent = envelope::open::<AgentConfig>(&bytes, &expect)
            .unwrap()
            .payload;
        agent.validate().unwrap();
        assert_eq!(
            agent.identity.id.to_string(),
            format!("spiffe://demo.flor/node/{node}")
        );
        assert_eq!(
            agent.config_server.service.to_string(),
            "spiffe://demo.flor/service/config"
        );
        assert_eq!(agent.config_server.addr.to_string(), "127.0.0.1:7443");
        assert_eq!(agent.poll_interval_s, 30);
        // The payload alone parses with the device parser too.
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let payload = serde_json::to_vec(&v["payload"]).unwrap();
        assert_eq!(
            flor_vertex::artifact::parse_payload::<AgentConfig>(&payload).unwrap(),
            agent
        );

        let vertex = open_vertex(&d, &out, node);
        let bytes = fs::read(out.join(node).join("mgmt/vertices/flor.json")).unwrap();
        // A version the device already runs is refused (replay).
        let expect = Expect {
            kind: ArtifactKind::Vertex,
            rete: &td,
            node: &n,
            trusted: &signers,
            current_version: Some(1),
        };
        assert!(envelope::open::<VertexConfig>(&bytes, &expect).is_err());
        // A flipped byte breaks the signature.
        let mut bad = bytes.clone();
        let i = bad.windows(4).position(|w| w == b"flor").unwrap();
        bad[i] = b'F';
        let expect = Expect {
            kind: ArtifactKind::Vertex,
            rete: &td,
            node: &n,
            trusted: &signers,
            current_version: None,
        };
        assert!(envelope::open::<VertexConfig>(&bad, &expect).is_err());
        let _ = vertex;
    }
}

#[test]
fn artifacts_carry_only_what_the_node_needs() {
    let d = Demo::with_ca();
    let out = d.tmp.path().join("out");
    d.compile_all(&out);
    let text_of = |node: &str| {
        let mut s = fs::read_to_string(out.join(node).join("mgmt/vertices/flor.json")).unwrap();
        s.push_str(&fs::read_to_string(out.join(node).join("mgmt/agent.json")).unwrap());
        s
    };
    // alpha hosts wiki; its node principal reaches config and metrics-push (role node).
    let alpha = text_of("alpha");
    for absent in [
        "tcp-echo",
        "config-publish",
        "user/carol",
        "127.0.0.3",
        "laptop",
    ] {
        assert!(!alpha.contains(absent), "alpha mentions {absent}: {alpha}");
    }
    let v = open_vertex(&d, &out, "alpha");
    let ids = |it: Vec<String>| it;
    assert_eq!(
        ids(v.services.iter().map(|s| s.id.to_string()).collect()),
        ["spiffe://demo.flor/service/wiki"]
    );
    assert_eq!(
        ids(v.acl.iter().map(|r| r.caller.to_string()).collect()),
        [
            "spiffe://demo.flor/user/bob",
            "spiffe://demo.flor/user/olga"
        ],
        "carol may not reach the wiki"
    );
    assert_eq!(
        ids(v.routes.iter().map(|r| r.target.to_string()).collect()),
        [
            "spiffe://demo.flor/service/config",
            "spiffe://demo.flor/service/metrics-push"
        ]
    );
    assert_eq!(v.listen.unwrap().to_string(), "127.0.0.2:7443");

    // beta hosts the node-scoped echo; carol and bob may use it.
    let beta = text_of("beta");
    for absent in ["wiki", "config-publish", "user/olga", "127.0.0.2"] {
        assert!(!beta.contains(absent), "beta mentions {absent}");
    }
    let v = open_vertex(&d, &out, "beta");
    assert_eq!(
        v.services[0].id.to_string(),
        "spiffe://demo.flor/service/beta/tcp-echo"
    );
    assert_eq!(
        ids(v.acl.iter().map(|r| r.caller.to_string()).collect()),
        [
            "spiffe://demo.flor/user/bob",
            "spiffe://demo.flor/user/carol"
        ]
    );

    // The laptop holds three users and publishes nothing; one SOCKS5 port per user (as
    // declared in users.yaml), then the node on the node default (the top of the band).
    let v = open_vertex(&d, &out, "laptop");
    assert!(v.listen.is_none() && v.services.is_empty() && v.acl.is_empty());
    let socks: Vec<(String, u16)> = v
        .socks
        .iter()
        .map(|s| (s.principal.to_string(), s.port))
        .collect();
    assert_eq!(
        socks,
        [
            ("spiffe://demo.flor/user/bob".to_owned(), 1080),
            ("spiffe://demo.flor/user/carol".to_owned(), 1081),
            ("spiffe://demo.flor/user/olga".to_owned(), 1082),
            ("spiffe://demo.flor/node/laptop".to_owned(), 1179),
        ]
    );
    assert_eq!(
        v.routes.len(),
        6,
        "olga, bob and carol together reach every service; node/laptop reaches metrics-push"
    );

    // mgmt01: config is reachable by every node and the operator only.
    let v = open_vertex(&d, &out, "mgmt01");
    let config = v
        .services
        .iter()
        .position(|s| s.id.to_string().ends_with("/config"))
        .unwrap() as u8;
    let publish = v
        .services
        .iter()
        .position(|s| s.id.to_string().ends_with("/config-publish"))
        .unwrap() as u8;
    let with = |i: u8| -> Vec<String> {
        v.acl
            .iter()
            .filter(|r| r.services.contains(&i))
            .map(|r| r.caller.to_string())
            .collect()
    };
    assert_eq!(
        with(config),
        [
            "spiffe://demo.flor/user/olga",
            "spiffe://demo.flor/node/alpha",
            "spiffe://demo.flor/node/beta",
            "spiffe://demo.flor/node/laptop",
            "spiffe://demo.flor/node/mgmt01"
        ]
    );
    assert_eq!(with(publish), ["spiffe://demo.flor/user/olga"]);
}

#[test]
fn a_changed_rete_needs_a_new_version() {
    let d = Demo::with_ca();
    let out = d.tmp.path().join("out");
    d.compile_all(&out);
    let before = tree(&out);
    d.edit(
        "services.yaml",
        "upstream: 127.0.0.2:8080",
        "upstream: 127.0.0.2:8081",
    );
    let o = d.run(&[
        "compile",
        d.repo_s(),
        "--all",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o).1.contains("bump `version:` in rete.yaml"),
        "{:?}",
        text(&o)
    );
    assert_eq!(tree(&out), before, "a refused compile writes nothing");
    d.edit("rete.yaml", "version: 1", "version: 2");
    d.compile_all(&out);
    let v = fs::read(out.join("alpha/mgmt/vertices/flor.json")).unwrap();
    assert_eq!(envelope::peek_header(&v).unwrap().version, 2);
    // Going back to an older version is refused too.
    d.edit("rete.yaml", "version: 2", "version: 1");
    assert!(!d
        .run(&[
            "compile",
            d.repo_s(),
            "--all",
            "--out",
            out.to_str().unwrap()
        ])
        .status
        .success());
}

#[test]
fn a_node_removed_from_the_rete_loses_its_compiled_tree() {
    let d = Demo::with_ca();
    let out = d.tmp.path().join("out");
    d.edit(
        "nodes.yaml",
        "  - name: beta\n",
        "  - name: gamma\n    listen: 127.0.0.4:7443\n  - name: beta\n",
    );
    d.compile_all(&out);
    assert!(out.join("gamma/mgmt/agent.json").is_file());
    // Something of the operator's in the output directory, and a node-looking
    // directory of another rete: neither is compile's to delete.
    fs::create_dir_all(out.join("notes")).unwrap();
    fs::write(out.join("notes/todo.txt"), "rotate the CA").unwrap();
    copy_dir(&out.join("gamma"), &out.join("delta"));

    d.edit(
        "nodes.yaml",
        "  - name: gamma\n    listen: 127.0.0.4:7443\n",
        "",
    );
    d.edit("rete.yaml", "version: 1", "version: 2");
    // Compiling one node leaves the others' trees as they are.
    d.ok(&[
        "compile",
        d.repo_s(),
        "--node",
        "alpha",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(out.join("gamma").exists());
    let said = d.compile_all(&out);
    assert!(
        !out.join("gamma").exists(),
        "gamma's tree is still published"
    );
    assert!(
        said.contains("gamma: no longer in nodes.yaml; removed"),
        "{said}"
    );
    assert_eq!(
        fs::read_to_string(out.join("notes/todo.txt")).unwrap(),
        "rotate the CA"
    );
    assert!(
        out.join("delta/mgmt/agent.json").is_file(),
        "a directory whose agent.json names another node is not compile's"
    );
    for n in NODES {
        assert!(out.join(n).join("mgmt/agent.json").is_file(), "{n}");
    }
}

#[test]
fn an_unwritable_output_says_where_and_why_once() {
    let d = Demo::with_ca();
    let file = d.tmp.path().join("a-file");
    fs::write(&file, "not a directory").unwrap();
    let o = d.run(&[
        "compile",
        d.repo_s(),
        "--all",
        "--out",
        file.join("out").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = text(&o).1;
    assert!(err.contains(file.to_str().unwrap()), "{err}");
    assert_eq!(
        err.matches("Not a directory").count(),
        1,
        "the OS error is said once: {err}"
    );
}

#[test]
fn compile_needs_the_ca_and_the_signer_key() {
    let d = Demo::new();
    let out = d.tmp.path().join("out");
    let o = d.run(&[
        "compile",
        d.repo_s(),
        "--all",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(text(&o).1.contains("retectl ca init"), "{:?}", text(&o));
    let d = Demo::with_ca();
    fs::remove_file(d.keys.join("management-planes/primary.key")).unwrap();
    let o = d.run(&[
        "compile",
        d.repo_s(),
        "--all",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(text(&o).1.contains("primary.key"), "{:?}", text(&o));
    assert!(!out.exists());
}

#[test]
fn invalid_repo_is_not_compiled() {
    let d = Demo::with_ca();
    d.edit("users.yaml", "role: echo-user", "role: nobody");
    let out = d.tmp.path().join("out");
    let o = d.run(&[
        "compile",
        d.repo_s(),
        "--all",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(text(&o).1.contains("users.yaml:"), "{:?}", text(&o));
    assert!(!out.exists());
}

/// Snapshot: the example's compiled payloads (the signed header differs per
/// CA, the payload does not). A change here is a change to what devices get.
#[test]
fn example_payloads_match_the_snapshots() {
    let d = Demo::with_ca();
    let out = d.tmp.path().join("out");
    d.compile_all(&out);
    for node in ["alpha", "laptop"] {
        let env: serde_json::Value = serde_json::from_slice(
            &fs::read(out.join(node).join("mgmt/vertices/flor.json")).unwrap(),
        )
        .unwrap();
        let snap_path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("tests/data/example-{node}-vertex-payload.json"));
        let snap: serde_json::Value =
            serde_json::from_slice(&fs::read(&snap_path).unwrap()).unwrap();
        assert_eq!(
            env["payload"],
            snap,
            "{node}: compiled payload differs from {}",
            snap_path.display()
        );
    }
}

/// Every principal's preferred SOCKS5 port in a node's compiled vertex artifact.
fn socks_ports(d: &Demo, out: &Path, node: &str) -> std::collections::BTreeMap<String, u16> {
    open_vertex(d, out, node)
        .socks
        .iter()
        .map(|s| (s.principal.to_string(), s.port))
        .collect()
}

/// Bumps rete.yaml's version from 1 to 2 (so the output directory takes the new compile).
fn bump_version(d: &Demo) {
    d.edit("rete.yaml", "version: 1", "version: 2");
}

/// Issue 11: removing a user from a node used to shift every later user down a
/// port (carol 1081 -> 1080, olga 1082 -> 1081), so an application set up for
/// carol's port spoke as olga. Now nobody else's port moves.
#[test]
fn removing_a_user_leaves_every_other_port_where_it_was() {
    let d = Demo::with_ca();
    let before = d.tmp.path().join("before");
    d.compile_all(&before);
    let old: Vec<_> = NODES.iter().map(|n| socks_ports(&d, &before, n)).collect();
    assert_eq!(old[2]["spiffe://demo.flor/user/carol"], 1081);

    d.edit(
        "nodes.yaml",
        "users: [olga, bob, carol]",
        "users: [olga, carol]",
    );
    bump_version(&d);
    let after = d.tmp.path().join("after");
    d.compile_all(&after);
    for (i, node) in NODES.iter().enumerate() {
        let mut expect = old[i].clone();
        if *node == "laptop" {
            assert_eq!(expect.remove("spiffe://demo.flor/user/bob"), Some(1080));
        }
        let got = socks_ports_at(&after, node, 2);
        assert_eq!(got, expect, "{node}: ports moved");
    }
}

/// Adding a user with a declared port (and a calling service on a server)
/// leaves every other principal's port unchanged too.
#[test]
fn adding_a_user_with_a_declared_port_leaves_every_other_port_where_it_was() {
    let d = Demo::with_ca();
    let before = d.tmp.path().join("before");
    d.compile_all(&before);
    let old: Vec<_> = NODES.iter().map(|n| socks_ports(&d, &before, n)).collect();

    let mut users = d.read("users.yaml");
    // Sorted before everyone by name, which used to push all the others up a port.
    users.push_str("  - name: aaron\n    role: wiki-reader\n    socks_port: 1099\n");
    fs::write(d.repo.join("users.yaml"), users).unwrap();
    d.edit(
        "nodes.yaml",
        "users: [olga, bob, carol]",
        "users: [olga, bob, carol, aaron]",
    );
    // wiki on alpha starts calling the echo service: alpha gains a listener for it.
    d.edit(
        "services.yaml",
        "    groups: [web]\n",
        "    groups: [web]\n    roles: [echo-user]\n    socks_port: 1085\n",
    );
    bump_version(&d);
    let after = d.tmp.path().join("after");
    d.compile_all(&after);
    for (i, node) in NODES.iter().enumerate() {
        let mut expect = old[i].clone();
        match *node {
            "laptop" => {
                expect.insert("spiffe://demo.flor/user/aaron".into(), 1099);
            }
            "alpha" => {
                expect.insert("spiffe://demo.flor/service/wiki".into(), 1085);
            }
            _ => {}
        }
        assert_eq!(
            socks_ports_at(&after, node, 2),
            expect,
            "{node}: ports moved"
        );
    }
}

/// [`socks_ports`] for an artifact of `version`.
fn socks_ports_at(out: &Path, node: &str, version: u32) -> std::collections::BTreeMap<String, u16> {
    let bytes = fs::read(out.join(node).join("mgmt/vertices/flor.json")).unwrap();
    let h = envelope::peek_header(&bytes).unwrap();
    assert_eq!(h.version, version);
    let env: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    env["payload"]["socks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["principal"].as_str().unwrap().to_owned(),
                s["port"].as_u64().unwrap() as u16,
            )
        })
        .collect()
}
