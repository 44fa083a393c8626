#![allow(clippy::unwrap_used)] // test fixtures: a failed setup step should abort the test loudly
//! The vertex as a user meets it: real `flor vertex run` processes on
//! loopback, a real HTTP server upstream, curl or a raw SOCKS5 client in front.
//!
//! Topology: node `beta` serves `wiki` (HTTP, rete-scoped), `tcp-echo`
//! (node-scoped) and `bulk` (a hashing sink/source); node `laptop` holds users
//! alice (granted everything) and bob (granted only tcp-echo), each with its
//! own SOCKS5 listener.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

use common::*;
use serde_json::Value;

const WIKI_BODY: &str = "hello from the wiki on beta\n";

struct Net {
    rete: Rete,
    beta: Node,
    laptop: Node,
    beta_udp: SocketAddr,
    alice_port: u16,
    bob_port: u16,
    bulk_hits: Arc<AtomicUsize>,
    _http: ChildGuard,
    _www: TempDir,
}

/// Serves deterministic bytes: `n` bytes of a xorshift stream from `seed`.
fn pattern(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn sha256(b: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, b)
        .as_ref()
        .to_vec()
}

/// `bulk`: reads to EOF, answers SHA-256 of what it got, then as many bytes of
/// a pattern as it received, then closes. Counts connections.
fn start_bulk(hits: Arc<AtomicUsize>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            hits.fetch_add(1, Ordering::SeqCst);
            thread::spawn(move || {
                let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
                let mut buf = vec![0u8; 64 * 1024];
                let mut n = 0usize;
                loop {
                    match s.read(&mut buf) {
                        Ok(0) => break,
                        Ok(k) => {
                            ctx.update(&buf[..k]);
                            n += k;
                        }
                        Err(_) => return,
                    }
                }
                let _ = s.write_all(ctx.finish().as_ref());
                let _ = s.write_all(&pattern(n as u64, n));
            });
        }
    });
    port
}

fn start_http() -> (ChildGuard, TempDir, u16) {
    let www = TempDir::new("www");
    std::fs::write(www.0.join("index.html"), WIKI_BODY).unwrap();
    let port = free_tcp();
    let child = Command::new("python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
            "--directory",
            path_str(&www.0),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 is installed by ci/setup.sh");
    let mut guard = ChildGuard(child);
    wait_tcp(port);
    // Accepting is not serving: wait for a real answer, and say so if the
    // server died (a flake once showed the wiki's port refusing a flow).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Ok(Some(status)) = guard.0.try_wait() {
            panic!("python3 -m http.server on {port} exited: {status}");
        }
        let answered = TcpStream::connect(("127.0.0.1", port))
            .and_then(|mut s| {
                s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")?;
                let mut head = [0u8; 12];
                s.read_exact(&mut head)?;
                Ok(head.ends_with(b"200"))
            })
            .unwrap_or(false);
        if answered {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the wiki on {port} never answered 200"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    (guard, www, port)
}

fn setup() -> Net {
    let rete = Rete::new("demo.flor");
    let (http, www, http_port) = start_http();
    let echo_port = start_echo();
    let bulk_hits = Arc::new(AtomicUsize::new(0));
    let bulk_port = start_bulk(Arc::clone(&bulk_hits));

    let wiki = rete.id("service/wiki");
    let echo = rete.id("service/beta/tcp-echo");
    let bulk = rete.id("service/bulk");
    let alice = rete.id("user/alice");
    let bob = rete.id("user/bob");

    let mut beta = rete.node("beta");
    let beta_udp = free_udp();
    let principals = vec![
        beta.hold(&rete, "service/wiki"),
        beta.hold(&rete, "service/beta/tcp-echo"),
        beta.hold(&rete, "service/bulk"),
    ];
    let payload = vertex_payload(
        &rete.td,
        "beta",
        Some(beta_udp),
        principals,
        vec![
            (wiki.clone(), http_port),
            (echo.clone(), echo_port),
            (bulk.clone(), bulk_port),
        ],
        vec![(alice.clone(), vec![0, 1, 2]), (bob.clone(), vec![1])],
        vec![],
        vec![],
    );
    beta.install_vertex(&rete.seal("vertex", "beta", 1, &payload));
    let status = beta.start_vertex();
    assert_eq!(status["udp"], beta_udp.to_string());

    let mut laptop = rete.node("laptop");
    let principals = vec![
        laptop.hold(&rete, "user/alice"),
        laptop.hold(&rete, "user/bob"),
    ];
    let (pa, pb) = (free_tcp(), free_tcp());
    let payload = vertex_payload(
        &rete.td,
        "laptop",
        None,
        principals,
        vec![],
        vec![],
        vec![(wiki, beta_udp), (echo, beta_udp), (bulk, beta_udp)],
        vec![(alice.clone(), pa), (bob.clone(), pb)],
    );
    laptop.install_vertex(&rete.seal("vertex", "laptop", 1, &payload));
    let status = laptop.start_vertex();
    let alice_port = socks_port(&status, &alice);
    let bob_port = socks_port(&status, &bob);
    Net {
        rete,
        beta,
        laptop,
        beta_udp,
        alice_port,
        bob_port,
        bulk_hits,
        _http: http,
        _www: www,
    }
}

fn curl(port: u16, url: &str) -> (bool, String, String) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "20",
            "--socks5-hostname",
            &format!("127.0.0.1:{port}"),
            url,
        ])
        .output()
        .expect("curl is installed by ci/setup.sh");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// Sends `n` bytes, half-closes, and checks both directions by hash.
fn bulk_round_trip(port: u16, n: usize) {
    let (code, s) = socks_connect(port, "bulk.demo.flor.rete", 9000);
    assert_eq!(code, 0, "bulk flow refused");
    let mut s = s.unwrap();
    let up = pattern(0x5eed ^ n as u64, n);
    let mut w = s.try_clone().unwrap();
    let up_hash = sha256(&up);
    let writer = thread::spawn(move || {
        w.write_all(&up).unwrap();
        w.shutdown(Shutdown::Write).unwrap();
    });
    let mut got = Vec::with_capacity(n + 32);
    s.read_to_end(&mut got).unwrap();
    writer.join().unwrap();
    assert_eq!(got.len(), 32 + n, "upstream's answer is hash + {n} bytes");
    assert_eq!(
        &got[..32],
        &up_hash[..],
        "caller -> service bytes arrived intact ({n} bytes)"
    );
    assert_eq!(
        sha256(&got[32..]),
        sha256(&pattern(n as u64, n)),
        "service -> caller bytes arrived intact ({n} bytes)"
    );
}

#[test]
fn allowed_user_fetches_a_page_with_curl() {
    let net = setup();
    let (ok, body, err) = curl(net.alice_port, "http://wiki.demo.flor.rete/index.html");
    assert!(
        ok,
        "curl failed: {err}\nbeta: {}\nlaptop: {}",
        net.beta.log(),
        net.laptop.log()
    );
    assert_eq!(body, WIKI_BODY);
    // A second flow rides the same warm connection.
    let (ok, body, _) = curl(net.alice_port, "http://wiki.demo.flor.rete/index.html");
    assert!(ok);
    assert_eq!(body, WIKI_BODY);
}

#[test]
fn one_and_a_hundred_mebibytes_both_ways_with_half_close() {
    let net = setup();
    bulk_round_trip(net.alice_port, 1 << 20);
    bulk_round_trip(net.alice_port, 100 << 20);
    assert_eq!(net.bulk_hits.load(Ordering::SeqCst), 2);
}

#[test]
fn user_without_the_role_is_not_allowed_and_nothing_reaches_upstream() {
    let net = setup();
    let (code, _) = socks_connect(net.bob_port, "bulk.demo.flor.rete", 80);
    assert_eq!(code, 0x02, "SOCKS5 'connection not allowed by ruleset'");
    assert_eq!(
        net.bulk_hits.load(Ordering::SeqCst),
        0,
        "the upstream saw no connection"
    );
    let (ok, _, _) = curl(net.bob_port, "http://wiki.demo.flor.rete/index.html");
    assert!(!ok, "bob must not read the wiki");
    // The refusal is logged with caller, target and reason on the serving side.
    let log = net.beta.log();
    assert!(
        log.contains(
            "refused spiffe://demo.flor/user/bob -> spiffe://demo.flor/service/bulk: denied by ACL"
        ),
        "beta log: {log}"
    );
}

/// A SOCKS5 client that does not wait: greeting, CONNECT and `data` in one
/// write, then half-close. Returns the SOCKS5 reply code and what came back.
fn pipelined(port: u16, host: &str, data: &[u8]) -> (u8, Vec<u8>) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut all = vec![5, 1, 0, 5, 1, 0, 3, host.len() as u8];
    all.extend_from_slice(host.as_bytes());
    all.extend_from_slice(&80u16.to_be_bytes());
    all.extend_from_slice(data);
    s.write_all(&all).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut replies = [0u8; 12];
    s.read_exact(&mut replies).unwrap();
    assert_eq!(replies[..2], [5, 0], "no-auth method accepted");
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    (replies[3], rest)
}

#[test]
fn bytes_sent_behind_the_connect_arrive_once_and_never_for_a_denied_caller() {
    let net = setup();
    // The first flow of a connection: preamble version 2 carries these bytes
    // behind its hello.
    let data = pattern(7, 64);
    let (code, back) = pipelined(net.alice_port, "bulk.demo.flor.rete", &data);
    assert_eq!(code, 0x00);
    // The upstream answers with the SHA-256 of all it received: once, intact.
    assert_eq!(
        back[..32],
        sha256(&data)[..],
        "the upstream got other bytes"
    );
    assert_eq!(net.bulk_hits.load(Ordering::SeqCst), 1);
    // A second flow on the now warm connection: the bytes wait for the verdict.
    let (code, back) = pipelined(net.alice_port, "bulk.demo.flor.rete", &data);
    assert_eq!(code, 0x00);
    assert_eq!(
        back[..32],
        sha256(&data)[..],
        "the upstream got other bytes"
    );
    assert_eq!(net.bulk_hits.load(Ordering::SeqCst), 2);
    // bob may not reach bulk: his request goes nowhere.
    let (code, _) = pipelined(net.bob_port, "bulk.demo.flor.rete", b"GET /secret");
    assert_eq!(code, 0x02);
    assert_eq!(
        net.bulk_hits.load(Ordering::SeqCst),
        2,
        "the upstream saw a denied caller"
    );
}

#[test]
fn two_listeners_are_two_identities() {
    let net = setup();
    // bob may reach tcp-echo (node-scoped name), alice too; only alice the bulk service.
    for port in [net.alice_port, net.bob_port] {
        let (code, s) = socks_connect(port, "tcp-echo.beta.demo.flor.rete", 7);
        assert_eq!(code, 0);
        let mut s = s.unwrap();
        s.write_all(b"ping").unwrap();
        let mut b = [0u8; 4];
        s.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"ping");
    }
    assert_eq!(socks_connect(net.alice_port, "bulk.demo.flor.rete", 1).0, 0);
    assert_eq!(
        socks_connect(net.bob_port, "bulk.demo.flor.rete", 1).0,
        0x02
    );
}

#[test]
fn names_resolve_or_say_host_unreachable() {
    let net = setup();
    // Rete-scoped and node-scoped names both work (above and here, mixed case).
    assert_eq!(
        socks_connect(net.alice_port, "Wiki.Demo.Flor.rete", 80).0,
        0
    );
    assert_eq!(
        socks_connect(net.alice_port, "tcp-echo.beta.demo.flor.rete", 80).0,
        0
    );
    // Unknown service, wrong node, foreign rete, not .rete at all.
    for host in [
        "nope.demo.flor.rete",
        "tcp-echo.alpha.demo.flor.rete",
        "wiki.other.rete",
        "example.com",
    ] {
        assert_eq!(socks_connect(net.alice_port, host, 80).0, 0x04, "{host}");
    }
}

#[test]
fn ip_literals_are_refused_as_address_type() {
    let net = setup();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", net.alice_port)).unwrap();
    s.write_all(&[5, 1, 0]).unwrap();
    let mut m = [0u8; 2];
    s.read_exact(&mut m).unwrap();
    s.write_all(&[5, 1, 0, 1, 127, 0, 0, 1, 0, 80]).unwrap();
    let mut r = [0u8; 10];
    s.read_exact(&mut r).unwrap();
    assert_eq!(r[1], 0x08);
}

#[test]
fn upstream_refusal_is_connection_refused() {
    let rete = Rete::new("demo.flor");
    let dead = free_tcp(); // nothing listens here
    let svc = rete.id("service/dead");
    let alice = rete.id("user/alice");
    let mut beta = rete.node("beta");
    let udp = free_udp();
    let p = vec![beta.hold(&rete, "service/dead")];
    let payload = vertex_payload(
        &rete.td,
        "beta",
        Some(udp),
        p,
        vec![(svc.clone(), dead)],
        vec![(alice.clone(), vec![0])],
        vec![],
        vec![],
    );
    beta.install_vertex(&rete.seal("vertex", "beta", 1, &payload));
    beta.start_vertex();
    let mut laptop = rete.node("laptop");
    let p = vec![laptop.hold(&rete, "user/alice")];
    let payload = vertex_payload(
        &rete.td,
        "laptop",
        None,
        p,
        vec![],
        vec![],
        vec![(svc, udp)],
        vec![(alice.clone(), free_tcp())],
    );
    laptop.install_vertex(&rete.seal("vertex", "laptop", 1, &payload));
    let status = laptop.start_vertex();
    assert_eq!(
        socks_connect(socks_port(&status, &alice), "dead.demo.flor.rete", 80).0,
        0x05
    );
}

#[test]
fn client_cert_from_another_ca_is_refused() {
    let net = setup();
    // mallory's laptop: a cert for user/alice (the right SAN) signed by a rogue CA,
    // trusting the real rete CA so the only thing wrong is the caller's chain.
    let rogue = Ca::new("rogue CA");
    let (cert, key) = rogue.issue(&net.rete.id("user/alice"));
    let mut mallory = net.rete.node("mallory");
    let principal = mallory.hold_pem("user/alice", &cert, &key);
    let alice = net.rete.id("user/alice");
    let payload = vertex_payload(
        &net.rete.td,
        "mallory",
        None,
        vec![principal],
        vec![],
        vec![],
        vec![(net.rete.id("service/bulk"), net.beta_udp)],
        vec![(alice.clone(), free_tcp())],
    );
    mallory.install_vertex(&net.rete.seal("vertex", "mallory", 1, &payload));
    let status = mallory.start_vertex();
    let (code, _) = socks_connect(socks_port(&status, &alice), "bulk.demo.flor.rete", 80);
    assert_eq!(
        code, 0x01,
        "a rogue-CA client gets no flow (handshake refused: general failure)"
    );
    assert_eq!(
        net.bulk_hits.load(Ordering::SeqCst),
        0,
        "the upstream saw no connection"
    );
}

#[test]
fn server_presenting_another_san_is_refused_by_the_client() {
    // An impostor vertex at the address the laptop routes `wiki` to: it holds a
    // valid rete certificate, but for service/evil, and presents it for wiki's SNI.
    let rete = Rete::new("demo.flor");
    let hits = Arc::new(AtomicUsize::new(0));
    let upstream = start_bulk(Arc::clone(&hits));
    let evil = rete.node("evil");
    let udp = free_udp();
    let alice = rete.id("user/alice");
    let (cert, key) = rete.ca.issue(&rete.id("service/evil"));
    // The impostor installs evil's certificate under wiki's file names; flor
    // itself refuses that at start, which is the first line of defence.
    let principal = evil.hold_pem("service/wiki", &cert, &key);
    let payload = vertex_payload(
        &rete.td,
        "evil",
        Some(udp),
        vec![principal],
        vec![(rete.id("service/wiki"), upstream)],
        vec![(alice.clone(), vec![0])],
        vec![],
        vec![],
    );
    evil.install_vertex(&rete.seal("vertex", "evil", 1, &payload));
    let out = evil
        .command()
        .args(["vertex", "run", "--rete", &rete.td])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("certificate does not name spiffe://demo.flor/service/wiki"),
        "{err}"
    );

    // So the impostor is built from the library directly, as an attacker would.
    let impostor = impostor_server(&rete, udp, &cert, &key, upstream);
    let (laptop, status) = rete.alice_laptop("service/wiki", udp);
    let (code, _) = socks_connect(socks_port(&status, &alice), "wiki.demo.flor.rete", 80);
    assert_eq!(
        code, 0x01,
        "general failure: the server's SAN is not the target"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0);
    assert!(laptop.log().contains("presented spiffe://demo.flor/service/evil where spiffe://demo.flor/service/wiki was dialed"), "{}", laptop.log());
    // The dialer's own line names the reason with the address.
    assert!(
        laptop.log().contains(&format!(
            "handshake with spiffe://demo.flor/service/wiki at {udp} failed: server certificate for another principal than the one dialed (wrong SAN)"
        )),
        "{}",
        laptop.log()
    );
    drop(impostor);
}

/// A vertex that answers wiki's SNI with another principal's certificate.
fn impostor_server(
    rete: &Rete,
    udp: SocketAddr,
    cert: &str,
    key: &str,
    upstream: u16,
) -> thread::JoinHandle<()> {
    use flor_vertex::identity::{Dialable, SpiffeId};
    use flor_vertex::net::{self, tls, Credentials};
    let evil = Arc::new(
        Credentials::from_pem(
            SpiffeId::parse(&rete.id("service/evil")).unwrap(),
            cert.as_bytes(),
            key.as_bytes(),
        )
        .unwrap(),
    );
    let wiki = Dialable::new(SpiffeId::parse(&rete.id("service/wiki")).unwrap()).unwrap();
    let roots = net::load_ca(rete.ca.pem.as_bytes()).unwrap();
    let registry = Arc::new(tls::registry(&[(wiki, evil)]));
    let tls = tls::server_config(roots, Arc::clone(&registry)).unwrap();
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
    let sc = quinn::ServerConfig::with_crypto(Arc::new(quic));
    let socket = std::net::UdpSocket::bind(udp).unwrap();
    let td = flor_vertex::identity::TrustDomain::new(&rete.td).unwrap();
    let _ = upstream;
    thread::spawn(move || {
        smol::block_on(async move {
            let ep = quinn::Endpoint::new(
                quinn::EndpointConfig::default(),
                Some(sc),
                socket,
                Arc::new(quinn::SmolRuntime),
            )
            .unwrap();
            // Accept and hold connections; a client that checks SANs never gets this far.
            while let Some(inc) = ep.accept().await {
                let _ = &td;
                if let Ok(conn) = inc.await {
                    let _ = conn.accept_bi().await;
                }
            }
        })
    })
}

#[test]
fn preferred_port_taken_binds_another_and_serves() {
    let net = setup();
    let alice = net.rete.id("user/alice");
    // Occupy a port, then start a second laptop whose artifact prefers it.
    let squatter = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = squatter.local_addr().unwrap().port();
    let mut laptop2 = net.rete.node("laptop2");
    let p = vec![laptop2.hold(&net.rete, "user/alice")];
    let payload = vertex_payload(
        &net.rete.td,
        "laptop2",
        None,
        p,
        vec![],
        vec![],
        vec![(net.rete.id("service/wiki"), net.beta_udp)],
        vec![(alice.clone(), taken)],
    );
    laptop2.install_vertex(&net.rete.seal("vertex", "laptop2", 1, &payload));
    let status = laptop2.start_vertex();
    let entry: &Value = status["socks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["principal"] == alice.as_str())
        .unwrap();
    assert_eq!(entry["preferred"], taken);
    let actual = entry["actual"].as_u64().unwrap() as u16;
    assert_ne!(actual, taken);
    assert!(
        laptop2
            .log()
            .contains(&format!("preferred port {taken} is taken")),
        "{}",
        laptop2.log()
    );
    let (ok, body, err) = curl(actual, "http://wiki.demo.flor.rete/index.html");
    assert!(ok, "{err}");
    assert_eq!(body, WIKI_BODY);
    drop(squatter);
}

#[test]
fn tampered_vertex_artifact_does_not_start() {
    let rete = Rete::new("demo.flor");
    let mut node = rete.node("beta");
    let p = vec![node.hold(&rete, "service/wiki")];
    let payload = vertex_payload(
        &rete.td,
        "beta",
        Some(free_udp()),
        p,
        vec![(rete.id("service/wiki"), 1)],
        vec![],
        vec![],
        vec![],
    );
    let sealed = String::from_utf8(rete.seal("vertex", "beta", 1, &payload)).unwrap();
    node.install_vertex(sealed.replace("127.0.0.1:1", "127.0.0.1:2").as_bytes());
    let out = node
        .command()
        .args(["vertex", "run", "--rete", &rete.td])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "signature does not verify with the key of spiffe://demo.flor/management-plane/primary"
        ),
        "{err}"
    );
    let _ = &mut node;
}
