#![allow(clippy::unwrap_used)] // test fixtures: a failed setup step should abort the test loudly
//! Pinned certificates and Flow B renewal on real processes: alpha (the wiki,
//! enrolled with Flow B) and the laptop (bob) of the example rete run as
//! `flor agent run` on loopback; bob reaches the wiki with curl through his
//! SOCKS5 port. Artifacts reach the nodes by `flor enroll --from <compiled
//! tree>` under their running agents (no config-server needed).
//!
//! - a certificate for `user/bob` signed by the rete's CA outside retectl
//!   (not in enrollment.log) is refused by alpha, naming its fingerprint; bob's
//!   real one is allowed;
//! - the laptop renews with `flor id renew` + `retectl issue-bundle --csr`:
//!   after the republish both its old and its new certificate are allowed;
//!   after `flor enroll` the key files are byte-equal and alpha logs the new
//!   certificate's fingerprint;
//! - alpha renews the same way while bob's curl loops: every failure window
//!   is under 2 s;
//! - `pin_overlap_days: 0` ends the old certificate's pin: refused.
//!
//! Uses the `flor` binary of this workspace (`target/debug/flor`).

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use testkit::{free_udp, Group};

const TD: &str = "demo.flor";
const BOB: &str = "spiffe://demo.flor/user/bob";
const WIKI: &str = "wiki.demo.flor.rete";

fn run(home: &Path, args: &[&str]) -> Output {
    flor(home).args(args).output().unwrap()
}

fn ok(home: &Path, args: &[&str]) -> String {
    let o = run(home, args);
    assert!(o.status.success(), "flor {args:?}: {}", out(&o));
    out(&o)
}

fn log(home: &Path) -> String {
    std::fs::read_to_string(home.join("agent.log")).unwrap_or_default()
}

fn start(home: &Path) -> Group {
    let log = std::fs::File::create(home.join("agent.log")).unwrap();
    Group(
        flor(home)
            .args(["agent", "run", "--rete", TD])
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap(),
    )
}

/// Waits for the agent to run `version` healthy; returns its status.
fn healthy(home: &Path, version: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let o = run(home, &["agent", "status", "--rete", TD, "--json"]);
        if o.status.success() {
            let s: Value = serde_json::from_slice(&o.stdout).unwrap();
            if s["version"] == version && s["vertex"]["health"] == "healthy" {
                return s;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} not healthy at v{version}:\n{}",
            home.display(),
            log(home)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn socks_port(status: &Value, principal: &str) -> u16 {
    status["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["principal"] == principal)
        .unwrap()["actual"]
        .as_u64()
        .unwrap() as u16
}

/// curl through a SOCKS5 port: whether the wiki answered.
fn curl(port: u16) -> bool {
    Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "2",
            "--socks5-hostname",
            &format!("127.0.0.1:{port}"),
            &format!("http://{WIKI}/"),
        ])
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout.starts_with(b"wiki of demo.flor"))
}

/// A wiki upstream answering every connection with one HTTP response.
fn start_wiki() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                let _ = s
                    .write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 18\r\n\r\nwiki of demo.flor\n");
            });
        }
    });
    port
}

/// Copies a flor home: files and symlinks (the running agent's socket stays).
fn copy_home(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = e.file_type().unwrap();
        let dst = to.join(e.file_name());
        if t.is_dir() {
            copy_home(&e.path(), &dst);
        } else if t.is_file() {
            std::fs::copy(e.path(), dst).unwrap();
        } else if t.is_symlink() {
            // The live artifact generation is a relative symlink.
            std::os::unix::fs::symlink(std::fs::read_link(e.path()).unwrap(), dst).unwrap();
        }
    }
}

/// The SHA-256 fingerprints enrollment.log records for `principal`, oldest first.
fn logged(d: &Demo, principal: &str) -> Vec<String> {
    d.read("enrollment.log")
        .lines()
        .filter(|l| l.split('\t').nth(2) == Some(principal))
        .map(|l| l.split('\t').nth(4).unwrap().to_owned())
        .collect()
}

fn sha256_hex(der: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn pinned_certificates_and_flow_b_renewal_on_running_nodes() {
    let d = Demo::with_ca();
    let tmp = d.tmp.path().to_path_buf();
    for from in ["127.0.0.1:7443", "127.0.0.2:7443", "127.0.0.3:7443"] {
        let to = free_udp().port();
        d.edit(
            "nodes.yaml",
            &format!("listen: {from}"),
            &format!("listen: 127.0.0.1:{to}"),
        );
    }
    let wiki = start_wiki();
    d.edit(
        "services.yaml",
        "upstream: 127.0.0.2:8080",
        &format!("upstream: 127.0.0.1:{wiki}"),
    );
    let (alpha, laptop) = (tmp.join("alpha-home"), tmp.join("laptop-home"));
    let compile = |version: u32| -> PathBuf {
        if version > 1 {
            let t = d.read("rete.yaml");
            let prev = format!("version: {}", version - 1);
            assert!(t.contains(&prev));
            std::fs::write(
                d.repo.join("rete.yaml"),
                t.replace(&prev, &format!("version: {version}")),
            )
            .unwrap();
        }
        let out = tmp.join(format!("out-v{version}"));
        d.compile_all(&out);
        out
    };
    let enroll = |home: &Path, bundle: &Path, tree: &Path, extra: &[&str]| -> String {
        let mut a = vec![
            "enroll",
            bundle.to_str().unwrap(),
            "--from",
            tree.to_str().unwrap(),
        ];
        a.extend_from_slice(extra);
        ok(home, &a)
    };

    // Bundles first (alpha by Flow B), then compile: v1 pins what was issued.
    let csr = tmp.join("alpha.csr.json");
    ok(
        &alpha,
        &[
            "id",
            "create",
            "--rete",
            TD,
            "--node",
            "alpha",
            "--principal",
            "service/wiki",
            "--out",
            csr.to_str().unwrap(),
        ],
    );
    let alpha_bundle = tmp.join("alpha.bundle.json");
    d.issue_bundle("alpha", Some(&csr), &alpha_bundle);
    let laptop_bundle = tmp.join("laptop.bundle.json");
    d.issue_bundle("laptop", None, &laptop_bundle);
    let v1 = compile(1);
    let pinned = std::fs::read_to_string(v1.join("alpha/mgmt/vertices/flor.json")).unwrap();
    let bob_v1 = logged(&d, BOB);
    assert_eq!(bob_v1.len(), 1);
    assert!(
        pinned.contains(&bob_v1[0]),
        "alpha's artifact pins bob's certificate"
    );
    // Deterministic with pins too: the same repo compiles to the same bytes.
    let again = tmp.join("out-v1-again");
    d.compile_all(&again);
    for f in walk(&v1) {
        let rel = f.strip_prefix(&v1).unwrap();
        let other = std::fs::read(again.join(rel)).unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), other, "{}", rel.display());
    }

    enroll(&alpha, &alpha_bundle, &v1, &[]);
    enroll(&laptop, &laptop_bundle, &v1, &["--port-offset", "5000"]);
    let _alpha_agent = start(&alpha);
    let _laptop_agent = start(&laptop);
    healthy(&alpha, 1);
    let st = healthy(&laptop, 1);
    let bob = socks_port(&st, BOB);
    assert!(
        curl(bob),
        "bob's real certificate reaches the wiki:\n{}",
        log(&alpha)
    );

    // A certificate for user/bob from the rete's CA, but not through retectl.
    let ca_pem = d.read("certs/ca.crt");
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(d.keys.join("ca.key")).unwrap()).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
    let rogue_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![rcgen::SanType::URI(BOB.try_into().unwrap())];
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let rogue = params.signed_by(&rogue_key, &issuer).unwrap();
    let rogue_fp = sha256_hex(rogue.der());
    let rogue_home = tmp.join("rogue-home");
    copy_home(&laptop, &rogue_home);
    let scope = |home: &Path| home.join("retes").join(TD);
    std::fs::write(scope(&rogue_home).join("certs/user/bob.crt"), rogue.pem()).unwrap();
    std::fs::write(
        scope(&rogue_home).join("keys/user/bob.key"),
        rogue_key.serialize_pem(),
    )
    .unwrap();
    let o = run(&rogue_home, &["ping", WIKI, "--as", "bob"]);
    assert!(!o.status.success(), "{}", out(&o));
    assert!(
        out(&o).contains("does not pin this certificate"),
        "{}",
        out(&o)
    );
    let refused = format!("certificate sha256 {rogue_fp} is not pinned");
    assert!(log(&alpha).contains(&refused), "{}", log(&alpha));
    let o = run(&laptop, &["ping", WIKI, "--as", "bob"]);
    assert!(o.status.success(), "{}", out(&o));

    // The laptop renews with Flow B: CSRs for the keys it holds.
    let old_home = tmp.join("old-home");
    copy_home(&laptop, &old_home);
    let keys = |home: &Path| -> Vec<(String, Vec<u8>)> {
        let dir = scope(home).join("keys");
        walk(&dir)
            .into_iter()
            .map(|p| {
                let name = p.strip_prefix(&dir).unwrap().display().to_string();
                (name, std::fs::read(&p).unwrap())
            })
            .collect()
    };
    let laptop_keys = keys(&laptop);
    assert_eq!(laptop_keys.len(), 4, "node, olga, bob, carol");
    let renew_csr = tmp.join("laptop-renew.csr.json");
    ok(
        &laptop,
        &["id", "renew", "--out", renew_csr.to_str().unwrap()],
    );
    let renewed = tmp.join("laptop-renewed.bundle.json");
    d.issue_bundle("laptop", Some(&renew_csr), &renewed);
    let b: Value = serde_json::from_slice(&std::fs::read(&renewed).unwrap()).unwrap();
    assert_eq!(b["principals"].as_array().unwrap().len(), 4);
    assert!(b["principals"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["key_pem"].is_null()));
    let bob_fps = logged(&d, BOB);
    assert_eq!(bob_fps.len(), 2);
    // Republished: alpha pins bob's old and new certificate.
    let v2 = compile(2);
    enroll(&alpha, &alpha_bundle, &v2, &[]);
    healthy(&alpha, 2);
    assert!(
        curl(bob),
        "the laptop's old certificate, before it enrolls the renewal"
    );
    let before = healthy(&laptop, 1);
    let o = enroll(&laptop, &renewed, &v2, &[]);
    assert!(o.contains("the agent re-read scope demo.flor"), "{o}");
    let after = healthy(&laptop, 2);
    assert_ne!(after["vertex"]["pid"], before["vertex"]["pid"]);
    assert_eq!(keys(&laptop), laptop_keys, "a key file changed");
    let bob_cert = std::fs::read(scope(&laptop).join("certs/user/bob.crt")).unwrap();
    assert_ne!(
        bob_cert,
        std::fs::read(scope(&old_home).join("certs/user/bob.crt")).unwrap()
    );
    let bob = socks_port(&after, BOB);
    assert!(curl(bob), "bob's renewed certificate:\n{}", log(&alpha));
    // The serving side saw the new certificate.
    let seen = format!("connection {BOB} (certificate sha256 {})", bob_fps[1]);
    assert!(log(&alpha).contains(&seen), "{seen}:\n{}", log(&alpha));
    // The old one still holds within the overlap.
    let o = run(&old_home, &["ping", WIKI, "--as", "bob"]);
    assert!(o.status.success(), "{}", out(&o));

    // alpha renews while bob's requests loop: no failure window of 2 s or more.
    let alpha_keys = keys(&alpha);
    let stop = Arc::new(AtomicBool::new(false));
    let looper = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut tries = vec![];
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                tries.push((t, curl(bob)));
                std::thread::sleep(Duration::from_millis(20));
            }
            tries
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let alpha_csr = tmp.join("alpha-renew.csr.json");
    ok(
        &alpha,
        &["id", "renew", "--out", alpha_csr.to_str().unwrap()],
    );
    let alpha_renewed = tmp.join("alpha-renewed.bundle.json");
    d.issue_bundle("alpha", Some(&alpha_csr), &alpha_renewed);
    let v3 = compile(3);
    let alpha_before = healthy(&alpha, 2);
    let renewal_started = Instant::now();
    enroll(&alpha, &alpha_renewed, &v3, &[]);
    let alpha_after = healthy(&alpha, 3);
    assert_ne!(alpha_after["vertex"]["pid"], alpha_before["vertex"]["pid"]);
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    let tries = looper.join().unwrap();
    assert_eq!(keys(&alpha), alpha_keys, "a key file of alpha changed");
    let failed = tries.iter().filter(|(_, ok)| !ok).count();
    let mut worst = Duration::ZERO;
    let mut down_since: Option<Instant> = None;
    for (t, ok) in &tries {
        match (ok, down_since) {
            (false, None) => down_since = Some(*t),
            (true, Some(s)) => {
                worst = worst.max(t.duration_since(s));
                down_since = None;
            }
            _ => {}
        }
    }
    eprintln!(
        "alpha's renewal under load: {} requests, {failed} failed, longest failure window {worst:?}, enroll + restart took {:?}",
        tries.len(),
        renewal_started.elapsed().saturating_sub(Duration::from_secs(3))
    );
    assert!(down_since.is_none(), "requests still failing at the end");
    assert!(worst < Duration::from_secs(2), "failure window {worst:?}");
    assert!(tries.len() > 20, "the loop ran {} requests", tries.len());

    // No overlap: the laptop's old certificate falls out; the new one stays.
    let t = d.read("rete.yaml");
    std::fs::write(
        d.repo.join("rete.yaml"),
        format!("{t}pin_overlap_days: 0\n"),
    )
    .unwrap();
    let v4 = compile(4);
    enroll(&alpha, &alpha_renewed, &v4, &[]);
    healthy(&alpha, 4);
    let o = run(&old_home, &["ping", WIKI, "--as", "bob"]);
    assert!(!o.status.success(), "{}", out(&o));
    assert!(
        out(&o).contains("does not pin this certificate"),
        "{}",
        out(&o)
    );
    let refused = format!("certificate sha256 {} is not pinned", bob_fps[0]);
    assert!(log(&alpha).contains(&refused), "{}", log(&alpha));
    assert!(curl(bob), "bob's renewed certificate after the overlap");
}
