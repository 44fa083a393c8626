//! Shared helpers of the in-process data-plane tests: a CA that issues SPIFFE
//! certificates, an echo (or never-reading) upstream, and a serving vertex for
//! `service/echo` that allows the caller bob.
#![allow(dead_code)] // each test binary uses a part
#![allow(clippy::unwrap_used)] // test fixtures: a failed setup step should abort the test loudly

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread;

use flor_vertex::artifact::{parse_payload, VertexConfig};
use flor_vertex::identity::{resolve, Dialable, SpiffeId, TrustDomain};
use flor_vertex::net::{self, Credentials, VertexSetup};
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyUsagePurpose,
    SanType,
};

pub struct Pki {
    pub ca_pem: String,
    issuer: Issuer<'static, rcgen::KeyPair>,
}

impl Pki {
    pub fn new() -> Pki {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        let cert = p.self_signed(&key).unwrap();
        Pki {
            ca_pem: cert.pem(),
            issuer: Issuer::new(p, key),
        }
    }

    pub fn creds(&self, id: &str) -> Arc<Credentials> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.subject_alt_names = vec![SanType::URI(id.try_into().unwrap())];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        let id = SpiffeId::parse(id).unwrap();
        Arc::new(
            Credentials::from_pem(id, cert.pem().as_bytes(), key.serialize_pem().as_bytes())
                .unwrap(),
        )
    }
}

/// An upstream that echoes, or (for `sink`) accepts and never reads.
pub fn upstream(sink: bool) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            if sink {
                held.push(s);
                continue;
            }
            thread::spawn(move || {
                let mut r = s.try_clone().unwrap();
                let _ = std::io::copy(&mut r, &mut s);
            });
        }
    });
    port
}

pub fn config(udp: SocketAddr, echo: u16, idle: u32, acl: &str) -> VertexConfig {
    let json = format!(
        r#"{{"rete":"demo.flor","node":"beta","name":"flor","ca":"ca.crt","listen":"{udp}","idle_timeout_s":{idle},
        "principals":[{{"id":"spiffe://demo.flor/service/echo","cert":"c","key":"k"}}],
        "services":[{{"id":"spiffe://demo.flor/service/echo","upstream":"127.0.0.1:{echo}"}}],
        "acl":[{acl}],"routes":[],"socks":[]}}"#
    );
    let cfg: VertexConfig = parse_payload(json.as_bytes()).unwrap();
    cfg.validate().unwrap();
    cfg
}

pub const BOB_ALLOWED: &str = r#"{"caller":"spiffe://demo.flor/user/bob","services":[0]}"#;

/// A serving vertex for service/echo (upstream: echo or sink) and the caller bob.
pub fn serving(
    pki: &Pki,
    udp: SocketAddr,
    sink: bool,
    idle: u32,
) -> (VertexSetup, Arc<Credentials>, Dialable) {
    let setup = VertexSetup {
        cfg: config(udp, upstream(sink), idle, BOB_ALLOWED),
        ca_pem: pki.ca_pem.clone().into_bytes(),
        credentials: vec![pki.creds("spiffe://demo.flor/service/echo")],
        port_offset: 0,
        socks_ip: net::SOCKS_IP,
        reset_secret: net::ResetSecret::random(),
        runtime: None,
    };
    let bob = pki.creds("spiffe://demo.flor/user/bob");
    let echo = resolve(
        "echo.demo.flor.rete",
        &TrustDomain::new("demo.flor").unwrap(),
    )
    .unwrap();
    (setup, bob, echo)
}
