#![allow(clippy::unwrap_used)] // test fixtures: a failed setup step should abort the test loudly
//! retectl's output as the device sees it: the real `flor` binary makes the
//! Flow B CSRs (`flor id create`), and `flor enroll` installs retectl's
//! bundles and verifies retectl's compiled, signed artifacts with its own code.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::{text, Demo};

/// `target/debug/flor`, built once if this test run has not built it yet.
fn flor() -> &'static Path {
    static FLOR: OnceLock<PathBuf> = OnceLock::new();
    FLOR.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "flor", "--bin", "flor"])
            .current_dir(&root);
        // The test runs with cargo's per-crate environment; build scripts that
        // watch those variables would rebuild flor from scratch every run.
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().into_owned();
            if k.starts_with("CARGO_") && k != "CARGO_HOME" && k != "CARGO_TARGET_DIR" {
                cmd.env_remove(k);
            }
        }
        let st = cmd.status().unwrap();
        assert!(st.success(), "building flor failed");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        target.join("debug/flor")
    })
}

fn run_flor(home: &Path, args: &[&str]) -> (bool, String, String) {
    let o = Command::new(flor())
        .args(args)
        .env("FLOR_HOME", home)
        .output()
        .unwrap();
    let (out, err) = text(&o);
    (o.status.success(), out, err)
}

#[test]
fn flor_enrolls_with_flow_a_bundle_and_verifies_compiled_artifacts() {
    let d = Demo::with_ca();
    let out = d.tmp.path().join("out");
    d.ok(&[
        "compile",
        d.repo_s(),
        "--all",
        "--out",
        out.to_str().unwrap(),
    ]);
    let bundle = d.tmp.path().join("laptop.bundle.json");
    d.issue_bundle("laptop", None, &bundle);
    let home = d.tmp.path().join("flor-home");
    let (ok, o, e) = run_flor(
        &home,
        &[
            "enroll",
            bundle.to_str().unwrap(),
            "--from",
            out.to_str().unwrap(),
        ],
    );
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
    d.ok(&[
        "compile",
        d.repo_s(),
        "--all",
        "--out",
        out.to_str().unwrap(),
    ]);
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
    let (ok, o, e) = run_flor(
        &home,
        &[
            "enroll",
            bundle.to_str().unwrap(),
            "--from",
            out.to_str().unwrap(),
        ],
    );
    assert!(ok, "flor enroll (Flow B) refused:\n{o}\n{e}");
    assert!(home.join("retes/demo.flor/keys/service/wiki.key").exists());

    // The device refuses an artifact signed by a signer its bundle does not trust.
    let other = Demo::with_ca();
    let out2 = other.tmp.path().join("out");
    other.ok(&[
        "compile",
        other.repo_s(),
        "--all",
        "--out",
        out2.to_str().unwrap(),
    ]);
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
