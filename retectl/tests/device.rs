#![allow(clippy::unwrap_used)] // test fixtures: a failed setup step should abort the test loudly
//! retectl's output as the device sees it: the real `flor` binary makes the
//! Flow B CSRs (`flor id create`), and `flor enroll` installs retectl's
//! bundles and verifies retectl's compiled, signed artifacts with its own code.

mod common;

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{text, Demo};
use testkit::Group;

/// `target/debug/flor`, built once if this test run has not built it yet.
fn flor() -> &'static Path {
    testkit::workspace_flor(env!("CARGO_MANIFEST_DIR"))
}

fn run_flor(home: &Path, args: &[&str]) -> (bool, String, String) {
    let o = Command::new(flor())
        .args(args)
        .env("FLOR_HOME", home)
        .env("FLOR_RUNTIME_DIR", home.join("run"))
        .output()
        .unwrap();
    let (out, err) = text(&o);
    (o.status.success(), out, err)
}

/// `flor enroll <bundle> --from <compiled tree>` for the host at `home`.
fn enroll_from(home: &Path, bundle: &Path, tree: &Path) -> (bool, String, String) {
    run_flor(
        home,
        &[
            "enroll",
            bundle.to_str().unwrap(),
            "--from",
            tree.to_str().unwrap(),
        ],
    )
}

#[test]
fn flor_enrolls_with_flow_a_bundle_and_verifies_compiled_artifacts() {
    let d = Demo::with_ca();
    let out = d.tmp.path().join("out");
    d.compile_all(&out);
    let bundle = d.tmp.path().join("laptop.bundle.json");
    d.issue_bundle("laptop", None, &bundle);
    let home = d.tmp.path().join("flor-home");
    let (ok, o, e) = enroll_from(&home, &bundle, &out);
    assert!(ok, "flor enroll refused retectl's output:\n{o}\n{e}");
    let scope = home.join("retes/demo.flor");
    for f in [
        "ca.crt",
        "mgmt/agent.json",
        "mgmt/vertices/flor.json",
        "certs/user/bob.crt",
        "keys/user/bob.key",
    ] {
        assert!(scope.join(f).exists(), "{f} not installed");
    }
    assert_eq!(
        std::fs::read(scope.join("mgmt/vertices/flor.json")).unwrap(),
        std::fs::read(out.join("laptop/mgmt/vertices/flor.json")).unwrap()
    );
}

#[test]
fn flow_b_with_real_flor_id_create() {
    let d = Demo::with_ca();
    let out = d.tmp.path().join("out");
    d.compile_all(&out);
    let home = d.tmp.path().join("flor-home");
    let csr = d.tmp.path().join("alpha.csr.json");
    let (ok, o, e) = run_flor(
        &home,
        &[
            "id",
            "create",
            "--rete",
            "demo.flor",
            "--node",
            "alpha",
            "--principal",
            "service/wiki",
            "--out",
            csr.to_str().unwrap(),
        ],
    );
    assert!(ok, "flor id create:\n{o}\n{e}");
    let bundle = d.tmp.path().join("alpha.bundle.json");
    d.issue_bundle("alpha", Some(&csr), &bundle);
    let b = flor_vertex::bundle::Bundle::parse(&std::fs::read(&bundle).unwrap()).unwrap();
    assert!(b.principals.iter().all(|p| p.key_pem.is_none()));
    let (ok, o, e) = enroll_from(&home, &bundle, &out);
    assert!(ok, "flor enroll (Flow B) refused:\n{o}\n{e}");
    assert!(home.join("retes/demo.flor/keys/service/wiki.key").exists());

    // The device refuses an artifact signed by a signer its bundle does not trust.
    let other = Demo::with_ca();
    let out2 = other.tmp.path().join("out");
    other.compile_all(&out2);
    let home2 = d.tmp.path().join("flor-home-2");
    let (ok, _, _) = run_flor(
        &home2,
        &[
            "id",
            "create",
            "--rete",
            "demo.flor",
            "--node",
            "alpha",
            "--principal",
            "service/wiki",
            "--out",
            csr.to_str().unwrap(),
        ],
    );
    assert!(ok);
    d.issue_bundle("alpha", Some(&csr), &bundle);
    let (ok, o, e) = run_flor(
        &home2,
        &[
            "enroll",
            bundle.to_str().unwrap(),
            "--from",
            out2.to_str().unwrap(),
        ],
    );
    assert!(
        !ok,
        "enroll accepted artifacts from another rete's signer:\n{o}\n{e}"
    );
}

/// The running vertex's SOCKS5 listeners from `flor agent status --json`:
/// principal -> preferred port, once the vertex reports them and `done` likes them.
fn socks_listeners(
    home: &Path,
    log: &Path,
    done: impl Fn(&BTreeMap<String, u64>) -> bool,
) -> BTreeMap<String, u64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    while Instant::now() < deadline {
        let (ok, out, err) = run_flor(home, &["agent", "status", "--rete", "demo.flor", "--json"]);
        last = format!("{out}{err}");
        if ok {
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            if let Some(list) = v["listeners"].as_array() {
                let socks: BTreeMap<String, u64> = list
                    .iter()
                    .filter(|l| l["kind"] == "socks5")
                    .map(|l| {
                        (
                            l["principal"].as_str().unwrap().to_owned(),
                            l["preferred"].as_u64().unwrap(),
                        )
                    })
                    .collect();
                if v["vertex"]["health"] == "healthy" && done(&socks) {
                    return socks;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "no matching SOCKS5 listeners in 60 s; last status:\n{last}\nagent log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

/// Issue 11, on a running device: the laptop's vertex (real `flor agent run`)
/// serves olga, bob, carol and node/laptop; bob is removed from the laptop in
/// nodes.yaml, retectl recompiles, and the laptop re-enrolls under its running
/// agent, which restarts the vertex on the new artifact. Every principal left
/// keeps its preferred port (before, carol 1081 moved to 1080, bob's).
#[test]
fn a_running_vertex_keeps_every_port_when_a_user_is_removed() {
    // Far from the ports other vertices on this machine may hold; a multiple of
    // the band's width, as flor enroll requires.
    const OFFSET: u64 = 4000;
    let d = Demo::with_ca();
    let tmp = d.tmp.path();
    let compile = |out: &Path| {
        d.compile_all(out);
    };
    let v1 = tmp.join("out-v1");
    compile(&v1);
    let bundle = tmp.join("laptop-v1.bundle.json");
    d.issue_bundle("laptop", None, &bundle);
    let home = tmp.join("flor-home");
    let (ok, o, e) = run_flor(
        &home,
        &[
            "enroll",
            bundle.to_str().unwrap(),
            "--from",
            v1.to_str().unwrap(),
            "--port-offset",
            &OFFSET.to_string(),
        ],
    );
    assert!(ok, "flor enroll:\n{o}\n{e}");
    let log = tmp.join("agent.log");
    let _agent = Group(
        Command::new(flor())
            .args(["agent", "run", "--rete", "demo.flor"])
            .env("FLOR_HOME", &home)
            .env("FLOR_RUNTIME_DIR", home.join("run"))
            .env("RUST_LOG", "info")
            .stdout(std::fs::File::create(tmp.join("agent.out")).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .process_group(0)
            .spawn()
            .unwrap(),
    );
    let user = |n: &str| format!("spiffe://demo.flor/user/{n}");
    let before = socks_listeners(&home, &log, |s| s.len() == 4);
    let expect: BTreeMap<String, u64> = [
        (user("bob"), 1080),
        (user("carol"), 1081),
        (user("olga"), 1082),
        ("spiffe://demo.flor/node/laptop".to_owned(), 1179),
    ]
    .into_iter()
    .map(|(p, port)| (p, port + OFFSET))
    .collect();
    assert_eq!(before, expect);

    // bob leaves the laptop: version 2, recompiled, re-enrolled under the running agent.
    d.edit(
        "nodes.yaml",
        "users: [olga, bob, carol]",
        "users: [olga, carol]",
    );
    d.edit("rete.yaml", "version: 1", "version: 2");
    let v2 = tmp.join("out-v2");
    compile(&v2);
    let bundle = tmp.join("laptop-v2.bundle.json");
    d.issue_bundle("laptop", None, &bundle);
    let (ok, o, e) = enroll_from(&home, &bundle, &v2);
    assert!(ok, "flor enroll under the running agent:\n{o}\n{e}");
    let after = socks_listeners(&home, &log, |s| !s.contains_key(&user("bob")));
    let mut kept = before;
    kept.remove(&user("bob"));
    assert_eq!(after, kept, "a principal's port moved when bob was removed");
}
