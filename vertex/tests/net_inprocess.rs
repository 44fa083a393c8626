//! The data plane in one process: a serving vertex and a dialer on loopback,
//! for what a process boundary hides: swapping the ACL under live flows, the
//! idle timeout, and memory staying bounded when a peer stops reading.
#![cfg(feature = "net")]
#![allow(clippy::unwrap_used)] // test fixtures: a failed setup step should abort the test loudly

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use flor_vertex::acl::Acl;
use flor_vertex::artifact::{parse_payload, VertexConfig};
use flor_vertex::identity::{resolve, SpiffeId, TrustDomain};
use flor_vertex::net::{self, Credentials, DialError, Dialer, VertexSetup};
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyUsagePurpose,
    SanType,
};
use smol::io::{AsyncReadExt, AsyncWriteExt};
use testkit::free_udp;

struct Pki {
    ca_pem: String,
    issuer: Issuer<'static, rcgen::KeyPair>,
}

impl Pki {
    fn new() -> Pki {
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

    fn creds(&self, id: &str) -> Arc<Credentials> {
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
fn upstream(sink: bool) -> u16 {
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

fn config(udp: SocketAddr, echo: u16, idle: u32, acl: &str) -> VertexConfig {
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

const BOB_ALLOWED: &str = r#"{"caller":"spiffe://demo.flor/user/bob","services":[0]}"#;

/// A serving vertex for service/echo (upstream: echo or sink) and the caller bob.
fn serving(
    pki: &Pki,
    udp: SocketAddr,
    sink: bool,
    idle: u32,
) -> (
    VertexSetup,
    Arc<Credentials>,
    flor_vertex::identity::Dialable,
) {
    let setup = VertexSetup {
        cfg: config(udp, upstream(sink), idle, BOB_ALLOWED),
        ca_pem: pki.ca_pem.clone().into_bytes(),
        credentials: vec![pki.creds("spiffe://demo.flor/service/echo")],
        port_offset: 0,
        socks_ip: net::SOCKS_IP,
        reset_secret: net::ResetSecret::random(),
    };
    let bob = pki.creds("spiffe://demo.flor/user/bob");
    let echo = resolve(
        "echo.demo.flor.rete",
        &TrustDomain::new("demo.flor").unwrap(),
    )
    .unwrap();
    (setup, bob, echo)
}

#[test]
fn acl_swap_keeps_live_flows_and_refuses_new_ones() {
    let pki = Pki::new();
    let udp = free_udp();
    let (setup, bob, echo) = serving(&pki, udp, false, 30);
    net::block_on(async {
        let vertex = net::start(setup).unwrap();
        let dialer = Dialer::new(pki.ca_pem.as_bytes()).unwrap();
        let mut live = dialer.connect(&bob, &echo, udp).await.unwrap();
        live.write_all(b"before").await.unwrap();
        let mut b = [0u8; 6];
        live.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"before");

        // Remove bob's row: the table is replaced whole, in process.
        let old = vertex.acl.swap(Acl::from_config(&config(udp, 1, 30, "")));
        assert_eq!(old.callers(), 1);

        // The live flow keeps going...
        live.write_all(b"after!").await.unwrap();
        live.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"after!");
        // ...a new flow on the same warm connection is refused...
        assert!(matches!(
            dialer.connect(&bob, &echo, udp).await,
            Err(DialError::Denied)
        ));
        // ...and so is a new connection.
        let fresh = Dialer::new(pki.ca_pem.as_bytes()).unwrap();
        assert!(matches!(
            fresh.connect(&bob, &echo, udp).await,
            Err(DialError::Denied)
        ));
        drop(vertex);
    });
}

#[test]
fn a_quiet_flow_is_closed_after_the_idle_timeout() {
    let pki = Pki::new();
    let udp = free_udp();
    let (setup, bob, echo) = serving(&pki, udp, false, 1);
    net::block_on(async {
        let _vertex = net::start(setup).unwrap();
        let dialer = Dialer::new(pki.ca_pem.as_bytes()).unwrap();
        let mut flow = dialer.connect(&bob, &echo, udp).await.unwrap();
        let started = Instant::now();
        let mut b = [0u8; 1];
        // Nothing is sent; the server ends the flow after ~1 s of silence.
        let r = flow.read(&mut b).await;
        let waited = started.elapsed();
        assert!(!matches!(r, Ok(1)), "no byte was sent, none may arrive");
        assert!(
            waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
            "closed after {waited:?}"
        );
    });
}

/// This test process's resident memory.
fn rss_kib() -> u64 {
    testkit::rss_kib(std::process::id())
}

#[test]
fn a_peer_that_stops_reading_cannot_grow_memory() {
    let pki = Pki::new();
    let udp = free_udp();
    let (setup, bob, echo) = serving(&pki, udp, true, 30);
    net::block_on(async {
        let _vertex = net::start(setup).unwrap();
        let dialer = Dialer::new(pki.ca_pem.as_bytes()).unwrap();
        let mut flow = dialer.connect(&bob, &echo, udp).await.unwrap();
        let chunk = vec![7u8; 64 * 1024];
        let before = rss_kib();
        // The upstream never reads: once its socket buffer, the server's
        // fixed buffer and the QUIC windows are full, writes must stall.
        let mut sent = 0usize;
        let pushed = smol::future::or(
            async {
                while flow.write_all(&chunk).await.is_ok() {
                    sent += chunk.len();
                }
            },
            async {
                smol::Timer::after(Duration::from_secs(3)).await;
            },
        );
        pushed.await;
        let grown = rss_kib().saturating_sub(before);
        assert!(
            sent < 64 << 20,
            "{sent} bytes were accepted by a peer that reads nothing"
        );
        assert!(
            grown < 32 * 1024,
            "RSS grew by {grown} KiB while the peer was stuck"
        );
    });
}
