#![allow(clippy::unwrap_used)] // test fixtures: a failed setup step should abort the test loudly
//! `retectl ca` and `retectl issue-bundle`: X.509-SVIDs with exactly one
//! SPIFFE URI SAN that chain to certs/ca.crt; keys never in the repo or on
//! stdout; Flow B certifies the device's own key.

mod common;

use std::fs;
use std::path::Path;

use common::{text, walk, Demo};
use flor_vertex::bundle::{Bundle, CsrEntry, CsrRequest, CSR_FORMAT};
use flor_vertex::identity::{Name, SpiffeId, TrustDomain};
use x509_parser::prelude::*;

fn der(pem: &str) -> Vec<u8> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    assert_eq!(p.label, "CERTIFICATE");
    p.contents
}

/// Asserts the certificate is an X.509-SVID for `id` issued by `ca_pem`; returns its public key.
fn check_svid(pem: &str, id: &str, ca_pem: &str) -> Vec<u8> {
    let leaf_der = der(pem);
    let ca_der = der(ca_pem);
    let (_, leaf) = X509Certificate::from_der(&leaf_der).unwrap();
    let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
    let san = leaf.subject_alternative_name().unwrap().unwrap();
    let names = &san.value.general_names;
    assert_eq!(names.len(), 1, "{id}: exactly one SAN, got {names:?}");
    match &names[0] {
        GeneralName::URI(u) => assert_eq!(*u, id),
        other => panic!("{id}: SAN is not a URI: {other:?}"),
    }
    assert!(id.starts_with("spiffe://"));
    assert!(!leaf.is_ca());
    leaf.verify_signature(Some(ca.public_key()))
        .expect("chains to ca.crt");
    assert_eq!(leaf.issuer(), ca.subject());
    assert!(leaf.validity().is_valid());
    leaf.public_key().subject_public_key.data.to_vec()
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// No private key anywhere under `dir`.
fn no_keys_in(dir: &Path) {
    for f in walk(dir) {
        let t = fs::read_to_string(&f).unwrap_or_default();
        assert!(
            !t.contains("PRIVATE KEY"),
            "{} holds a private key",
            f.display()
        );
    }
}

#[test]
fn ca_init_and_sign_keep_keys_out_of_the_repo() {
    let d = Demo::new();
    let o1 = d.run(&["ca", "init", d.repo_s()]);
    let o2 = d.run(&[
        "ca",
        "sign",
        d.repo_s(),
        "--kind",
        "management-plane",
        "--name",
        "primary",
    ]);
    for o in [&o1, &o2] {
        assert!(o.status.success(), "{:?}", text(o));
        let (out, err) = text(o);
        assert!(!out.contains("PRIVATE KEY") && !err.contains("PRIVATE KEY"));
    }
    let ca_pem = d.read("certs/ca.crt");
    let ca_der = der(&ca_pem);
    let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
    assert!(ca.is_ca());
    let signer = d.read("certs/management-planes/primary.crt");
    let key = check_svid(
        &signer,
        "spiffe://demo.flor/management-plane/primary",
        &ca_pem,
    );
    assert_eq!(key.len(), 32, "the signer is Ed25519");
    assert!(text(&o2)
        .0
        .contains(&key.iter().map(|b| format!("{b:02x}")).collect::<String>()));
    no_keys_in(&d.repo);
    assert_eq!(mode(&d.keys.join("ca.key")), 0o600);
    assert_eq!(mode(&d.keys.join("management-planes/primary.key")), 0o600);
    let log = d.read("enrollment.log");
    assert!(log.contains("\tca-init\tspiffe://demo.flor\t"), "{log}");
    assert!(
        log.contains("\tca-sign\tspiffe://demo.flor/management-plane/primary\t"),
        "{log}"
    );
    // Running init again does not replace the CA.
    let o = d.run(&["ca", "init", d.repo_s()]);
    assert!(!o.status.success());
    assert_eq!(d.read("certs/ca.crt"), ca_pem);
    // Principals are not issued by `ca sign`.
    let o = d.run(&["ca", "sign", d.repo_s(), "--kind", "user", "--name", "olga"]);
    assert!(!o.status.success() && text(&o).1.contains("issue-bundle"));
}

#[test]
fn key_dir_inside_the_repo_is_refused() {
    let d = Demo::new();
    let inside = d.repo.join("keys");
    let o = common::retectl(&["ca", "init", d.repo_s(), "--keys", inside.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(text(&o).1.contains("inside the repo"), "{:?}", text(&o));
    assert!(!d.repo.join("certs/ca.crt").exists());
}

#[test]
fn flow_a_bundle_holds_svids_and_keys_for_every_held_principal() {
    let d = Demo::with_ca();
    let bundle_path = d.tmp.path().join("laptop.bundle.json");
    let out = d.issue_bundle("laptop", None, &bundle_path);
    assert!(!out.contains("PRIVATE KEY"));
    assert_eq!(mode(&bundle_path), 0o600);
    let bytes = fs::read(&bundle_path).unwrap();
    let b = Bundle::parse(&bytes).expect("the device parser reads it");
    let ca_pem = d.read("certs/ca.crt");
    assert_eq!(b.ca_pem, ca_pem);
    let ids: Vec<String> = b.principals.iter().map(|p| p.id.to_string()).collect();
    assert_eq!(
        ids,
        [
            "spiffe://demo.flor/node/laptop",
            "spiffe://demo.flor/user/bob",
            "spiffe://demo.flor/user/carol",
            "spiffe://demo.flor/user/olga"
        ]
    );
    for p in &b.principals {
        let pk = check_svid(&p.cert_pem, &p.id.to_string(), &ca_pem);
        let key = rcgen::KeyPair::from_pem(p.key_pem.as_deref().unwrap()).unwrap();
        assert_eq!(
            key.public_key_raw(),
            pk.as_slice(),
            "{}: key matches cert",
            p.id
        );
    }
    assert_eq!(b.mgmt_signers.len(), 1);
    assert_eq!(
        b.mgmt_signers[0].id.to_string(),
        "spiffe://demo.flor/management-plane/primary"
    );
    assert_eq!(b.config_server.addr.to_string(), "127.0.0.1:7443");
    no_keys_in(&d.repo);
    let log = d.read("enrollment.log");
    assert_eq!(
        log.lines().filter(|l| l.contains("\tA\t")).count(),
        4,
        "{log}"
    );
    // Keys may not be written into the repo.
    let o = d.run(&[
        "issue-bundle",
        d.repo_s(),
        "--node",
        "laptop",
        "--out",
        d.repo.join("laptop.bundle.json").to_str().unwrap(),
    ]);
    assert!(
        !o.status.success() && text(&o).1.contains("inside the repo"),
        "{:?}",
        text(&o)
    );
    no_keys_in(&d.repo);

    // A server node: its node identity and the services it hosts.
    let beta = d.tmp.path().join("beta.bundle.json");
    d.issue_bundle("beta", None, &beta);
    let b = Bundle::parse(&fs::read(&beta).unwrap()).unwrap();
    let ids: Vec<String> = b.principals.iter().map(|p| p.id.to_string()).collect();
    assert_eq!(
        ids,
        [
            "spiffe://demo.flor/node/beta",
            "spiffe://demo.flor/service/beta/tcp-echo"
        ]
    );
}

/// A CSR request made the way `flor id create` makes one.
fn csr_request(node: &str, ids: &[&str]) -> (CsrRequest, Vec<rcgen::KeyPair>) {
    let mut keys = Vec::new();
    let mut csrs = Vec::new();
    for id in ids {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = vec![rcgen::SanType::URI((*id).try_into().unwrap())];
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, *id);
        let csr_pem = params.serialize_request(&key).unwrap().pem().unwrap();
        csrs.push(CsrEntry {
            id: SpiffeId::parse(id).unwrap(),
            csr_pem,
        });
        keys.push(key);
    }
    let req = CsrRequest {
        format: CSR_FORMAT.into(),
        rete: TrustDomain::new("demo.flor").unwrap(),
        node: Name::new(node).unwrap(),
        csrs,
    };
    (req, keys)
}

#[test]
fn flow_b_certifies_the_devices_own_keys() {
    let d = Demo::with_ca();
    let ids = [
        "spiffe://demo.flor/node/alpha",
        "spiffe://demo.flor/service/wiki",
    ];
    let (req, keys) = csr_request("alpha", &ids);
    let csr_path = d.tmp.path().join("alpha.csr.json");
    fs::write(&csr_path, serde_json::to_vec(&req).unwrap()).unwrap();
    let out_path = d.tmp.path().join("alpha.bundle.json");
    d.issue_bundle("alpha", Some(&csr_path), &out_path);
    let b = Bundle::parse(&fs::read(&out_path).unwrap()).unwrap();
    let ca_pem = d.read("certs/ca.crt");
    assert_eq!(b.principals.len(), 2);
    for (p, key) in b.principals.iter().zip(&keys) {
        assert!(p.key_pem.is_none(), "Flow B carries no key");
        let pk = check_svid(&p.cert_pem, &p.id.to_string(), &ca_pem);
        assert_eq!(
            pk.as_slice(),
            key.public_key_raw(),
            "{}: the certificate is for the device's key",
            p.id
        );
    }
    assert_eq!(
        d.read("enrollment.log")
            .lines()
            .filter(|l| l.contains("\tB\t"))
            .count(),
        2
    );
}

#[test]
fn flow_b_refuses_identities_the_node_may_not_hold() {
    let d = Demo::with_ca();
    // alpha asks for beta's service and for a user; and a CSR whose SAN differs from its entry.
    let (mut req, _) = csr_request(
        "alpha",
        &[
            "spiffe://demo.flor/node/alpha",
            "spiffe://demo.flor/service/beta/tcp-echo",
            "spiffe://demo.flor/user/olga",
        ],
    );
    let (other, _) = csr_request("alpha", &["spiffe://demo.flor/service/metrics"]);
    req.csrs[0].csr_pem = other.csrs[0].csr_pem.clone();
    let csr_path = d.tmp.path().join("alpha.csr.json");
    fs::write(&csr_path, serde_json::to_vec(&req).unwrap()).unwrap();
    let out_path = d.tmp.path().join("alpha.bundle.json");
    let o = d.run(&[
        "issue-bundle",
        d.repo_s(),
        "--node",
        "alpha",
        "--csr",
        csr_path.to_str().unwrap(),
        "--out",
        out_path.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = text(&o).1;
    assert!(
        err.contains("spiffe://demo.flor/node/alpha: the CSR must carry exactly one SAN"),
        "{err}"
    );
    assert!(
        err.contains("spiffe://demo.flor/service/beta/tcp-echo: node alpha may not hold"),
        "{err}"
    );
    assert!(
        err.contains("spiffe://demo.flor/user/olga: node alpha may not hold"),
        "{err}"
    );
    assert!(!out_path.exists());
    assert!(!d.read("enrollment.log").contains("\tB\t"));

    // A request made by another node is refused.
    let (req, _) = csr_request("beta", &["spiffe://demo.flor/node/beta"]);
    fs::write(&csr_path, serde_json::to_vec(&req).unwrap()).unwrap();
    let o = d.run(&[
        "issue-bundle",
        d.repo_s(),
        "--node",
        "alpha",
        "--csr",
        csr_path.to_str().unwrap(),
        "--out",
        out_path.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(text(&o).1.contains("made by node beta"), "{:?}", text(&o));
}
