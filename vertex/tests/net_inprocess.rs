//! The data plane in one process: a serving vertex and a dialer on loopback,
//! for what a process boundary hides: swapping the ACL under live flows, the
//! idle timeout, memory staying bounded when a peer stops reading, and the
//! preamble versions against peers of another release (made from quinn
//! directly, with a vertex's TLS but another ALPN list).
#![cfg(feature = "net")]
#![allow(clippy::unwrap_used)] // test fixtures: a failed setup step should abort the test loudly

mod common;

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{config, serving, Pki, BOB_ALLOWED};
use flor_vertex::acl::Acl;
use flor_vertex::identity::{resolve, sni_for, Dialable, TrustDomain};
use flor_vertex::net::{self, Credentials, DialError, Dialer};
use flor_vertex::wire::{close, Verdict, ALPN_V1, ALPN_V2, STREAM_HELLO, STREAM_HELLO_V2};
use smol::io::{AsyncReadExt, AsyncWriteExt};
use testkit::free_udp;

// --- Preamble versions: a vertex of this release against peers of another ---

/// What a hand-made server saw on one stream: the bytes that arrived before
/// it answered, and all bytes of the stream.
#[derive(Debug, Default, Clone)]
struct Seen {
    before_verdict: Vec<u8>,
    all: Vec<u8>,
}

/// How long a hand-made server listens on a new stream before it answers:
/// anything the caller sends behind the hello without waiting arrives by then.
const LISTEN_BEFORE_VERDICT: Duration = Duration::from_millis(300);

/// A server of another release for service/echo: a vertex's TLS offering only
/// `alpn`. It records what each stream carried, answers `Allowed` and echoes;
/// on the stream numbered `kill_on` (0-based, over all connections) it closes
/// the connection with SHUTDOWN after reading the hello, as a restarting
/// vertex does, and answers nothing.
fn foreign_server(
    pki: &Pki,
    alpn: &[u8],
    kill_on: Option<usize>,
) -> (SocketAddr, Dialable, Arc<Mutex<Vec<Seen>>>, smol::Task<()>) {
    let echo = resolve(
        "echo.demo.flor.rete",
        &TrustDomain::new("demo.flor").unwrap(),
    )
    .unwrap();
    let creds = pki.creds("spiffe://demo.flor/service/echo");
    let registry = net::tls::registry(&[(echo.clone(), creds)]);
    let roots = net::load_ca(pki.ca_pem.as_bytes()).unwrap();
    let mut tls = net::tls::server_config(roots, Arc::new(registry)).unwrap();
    tls.alpn_protocols = vec![alpn.to_vec()];
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
    let ep = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(quinn::ServerConfig::with_crypto(Arc::new(quic))),
        std::net::UdpSocket::bind("127.0.0.1:0").unwrap(),
        Arc::new(quinn::SmolRuntime),
    )
    .unwrap();
    let addr = ep.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let streams = Arc::new(AtomicUsize::new(0));
    let task = smol::spawn(async move {
        while let Some(incoming) = ep.accept().await {
            let Ok(conn) = incoming.await else { continue };
            let (log, streams) = (Arc::clone(&log), Arc::clone(&streams));
            smol::spawn(async move {
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    let n = streams.fetch_add(1, Ordering::SeqCst);
                    let mut seen = Seen::default();
                    let until = Instant::now() + LISTEN_BEFORE_VERDICT;
                    loop {
                        let chunk = async { recv.read_chunk(1024, true).await.ok().flatten() };
                        let timer = async {
                            smol::Timer::at(until).await;
                            None
                        };
                        match smol::future::or(chunk, timer).await {
                            Some(c) => seen.before_verdict.extend_from_slice(&c.bytes),
                            None => break,
                        }
                    }
                    seen.all = seen.before_verdict.clone();
                    let i = log.lock().unwrap().len();
                    log.lock().unwrap().push(seen);
                    if kill_on == Some(n) {
                        conn.close(quinn::VarInt::from_u32(close::SHUTDOWN), b"restarting");
                        return;
                    }
                    let log = Arc::clone(&log);
                    smol::spawn(async move {
                        send.write_all(&[Verdict::Allowed as u8]).await.unwrap();
                        // Echo what came before the verdict (minus the hello), then the rest.
                        let early = log.lock().unwrap()[i].all[1..].to_vec();
                        send.write_all(&early).await.unwrap();
                        while let Ok(Some(c)) = recv.read_chunk(1024, true).await {
                            log.lock().unwrap()[i].all.extend_from_slice(&c.bytes);
                            send.write_all(&c.bytes).await.unwrap();
                        }
                        let _ = send.finish();
                    })
                    .detach();
                }
            })
            .detach();
        }
    });
    (addr, echo, seen, task)
}

/// A caller of another release: a vertex's TLS offering `alpns`, no dialer.
async fn foreign_caller(
    pki: &Pki,
    bob: &Credentials,
    echo: &Dialable,
    udp: SocketAddr,
    alpns: &[&[u8]],
) -> quinn::Connection {
    let roots = net::load_ca(pki.ca_pem.as_bytes()).unwrap();
    let mut tls = net::tls::client_config(roots, bob, echo).unwrap();
    tls.alpn_protocols = alpns.iter().map(|a| a.to_vec()).collect();
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let ep = net::client_endpoint().unwrap();
    ep.connect_with(
        quinn::ClientConfig::new(Arc::new(quic)),
        udp,
        &sni_for(echo),
    )
    .unwrap()
    .await
    .unwrap()
}

fn negotiated(conn: &quinn::Connection) -> Vec<u8> {
    conn.handshake_data()
        .unwrap()
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .unwrap()
        .protocol
        .unwrap()
}

#[test]
fn a_caller_of_the_old_release_is_served_in_version_1_and_a_new_one_in_version_2() {
    let pki = Pki::new();
    let udp = free_udp();
    let (setup, bob, echo) = serving(&pki, udp, false, 30);
    net::block_on(async {
        let _vertex = net::start(setup).unwrap();

        // Today's caller: florete/1 only, a lone hello, bytes after the verdict.
        let old = foreign_caller(&pki, &bob, &echo, udp, &[ALPN_V1]).await;
        assert_eq!(negotiated(&old), ALPN_V1);
        let (mut send, mut recv) = old.open_bi().await.unwrap();
        send.write_all(&[STREAM_HELLO]).await.unwrap();
        let mut v = [0u8; 1];
        recv.read_exact(&mut v).await.unwrap();
        assert_eq!(v[0], Verdict::Allowed as u8);
        send.write_all(b"ping").await.unwrap();
        let mut b = [0u8; 4];
        recv.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"ping");
        // A version 2 hello on a version 1 connection is a broken preamble.
        let (mut send, mut recv) = old.open_bi().await.unwrap();
        send.write_all(&[STREAM_HELLO_V2]).await.unwrap();
        match recv.read_exact(&mut v).await {
            Err(quinn::ReadExactError::ReadError(quinn::ReadError::Reset(c))) => {
                assert_eq!(c.into_inner(), u64::from(close::BAD_PREAMBLE))
            }
            other => panic!("a v2 hello on florete/1 got {other:?}"),
        }

        // A caller offering both gets version 2: its first bytes ride behind the hello.
        let new = foreign_caller(&pki, &bob, &echo, udp, &[ALPN_V2, ALPN_V1]).await;
        assert_eq!(negotiated(&new), ALPN_V2);
        let (mut send, mut recv) = new.open_bi().await.unwrap();
        send.write_all(&[STREAM_HELLO_V2, b'h', b'i'])
            .await
            .unwrap();
        recv.read_exact(&mut v).await.unwrap();
        assert_eq!(v[0], Verdict::Allowed as u8);
        let mut b = [0u8; 2];
        recv.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"hi");

        // And this release's dialer, early bytes included, end to end.
        let dialer = Dialer::new(pki.ca_pem.as_bytes()).unwrap();
        let mut flow = dialer
            .connect_with(&bob, &echo, udp, b"early")
            .await
            .unwrap();
        let mut b = [0u8; 5];
        flow.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"early");
    });
}

#[test]
fn a_new_caller_holds_its_early_bytes_for_the_verdict_of_an_old_vertex() {
    let pki = Pki::new();
    let bob = pki.creds("spiffe://demo.flor/user/bob");
    let (addr, echo, seen, _server) = foreign_server(&pki, ALPN_V1, None);
    smol::block_on(async {
        let dialer = Dialer::new(pki.ca_pem.as_bytes()).unwrap();
        let mut flow = dialer
            .connect_with(&bob, &echo, addr, b"early")
            .await
            .unwrap();
        let mut b = [0u8; 5];
        flow.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"early");
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 1);
        assert_eq!(
            seen[0].before_verdict,
            [STREAM_HELLO],
            "a florete/1 server was promised a lone hello"
        );
    });
}

/// Sends `len` bytes through `flow` to an echo while reading them back, and
/// checks that every byte returns in order.
async fn echo_through(flow: net::Flow, len: usize) {
    let (mut send, mut recv) = flow.into_parts();
    let pattern = |i: usize| (i % 251) as u8;
    let writer = async move {
        let mut sent = 0;
        while sent < len {
            let n = (64 * 1024).min(len - sent);
            let chunk: Vec<u8> = (sent..sent + n).map(pattern).collect();
            send.write_all(&chunk).await.unwrap();
            sent += n;
        }
        let _ = send.finish();
    };
    let reader = async move {
        let mut got = 0;
        let mut buf = vec![0u8; 64 * 1024];
        while got < len {
            let n = recv
                .read(&mut buf)
                .await
                .unwrap()
                .expect("the echo ended early");
            for (k, b) in buf[..n].iter().enumerate() {
                assert_eq!(*b, pattern(got + k), "byte {} came back wrong", got + k);
            }
            got += n;
        }
    };
    smol::future::zip(writer, reader).await;
}

#[test]
fn the_path_mtu_grows_past_ethernet_on_loopback_but_not_past_an_old_peers_limit() {
    use flor_vertex::limits::MAX_UDP_PAYLOAD;
    let pki = Pki::new();
    let udp = free_udp();
    let (setup, bob, echo) = serving(&pki, udp, false, 30);
    // A peer of the previous release: quinn's default 1,472-byte datagram limit.
    let (old_addr, old_echo, _seen, _server) = foreign_server(&pki, ALPN_V2, None);
    net::block_on(async {
        let _vertex = net::start(setup).unwrap();
        let dialer = Dialer::new(pki.ca_pem.as_bytes()).unwrap();
        let flow = dialer.connect(&bob, &echo, udp).await.unwrap();
        echo_through(flow, 4 << 20).await;
        // Path MTU discovery probes beside the traffic; on loopback (MTU
        // 65,536) it climbs to the ceiling within a few round trips.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mtu = dialer.path_mtu(&bob, &echo, udp).await.unwrap();
            if mtu > MAX_UDP_PAYLOAD - 100 {
                assert!(mtu <= MAX_UDP_PAYLOAD, "path MTU {mtu} above the ceiling");
                break;
            }
            assert!(Instant::now() < deadline, "path MTU stuck at {mtu}");
            smol::Timer::after(Duration::from_millis(50)).await;
        }
        let flow = dialer.connect(&bob, &old_echo, old_addr).await.unwrap();
        echo_through(flow, 4 << 20).await;
        let mtu = dialer.path_mtu(&bob, &old_echo, old_addr).await.unwrap();
        assert!(
            mtu <= 1472,
            "sent {mtu}-byte datagrams to a peer that takes 1,472"
        );
    });
}

#[test]
fn early_bytes_ride_with_the_hello_only_where_no_retry_follows_and_arrive_once() {
    let pki = Pki::new();
    let bob = pki.creds("spiffe://demo.flor/user/bob");
    // The second stream finds its connection closed (SHUTDOWN) before any verdict.
    let (addr, echo, seen, _server) = foreign_server(&pki, ALPN_V2, Some(1));
    smol::block_on(async {
        let dialer = Dialer::new(pki.ca_pem.as_bytes()).unwrap();
        // A fresh connection: no retry can follow, the bytes go with the hello.
        let mut first = dialer
            .connect_with(&bob, &echo, addr, b"first")
            .await
            .unwrap();
        let mut b = [0u8; 5];
        first.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"first");
        // The pooled connection: the hello goes alone; the server "restarts",
        // the flow is retried on a fresh connection, where the bytes ride along.
        let mut second = dialer
            .connect_with(&bob, &echo, addr, b"second")
            .await
            .unwrap();
        let mut b = [0u8; 6];
        second.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"second");
        let seen = seen.lock().unwrap().clone();
        let before: Vec<&[u8]> = seen.iter().map(|s| s.before_verdict.as_slice()).collect();
        assert_eq!(
            before,
            [
                &b"\x02first"[..],
                &[STREAM_HELLO_V2][..],
                &b"\x02second"[..]
            ]
        );
        let all: Vec<u8> = seen.iter().flat_map(|s| s.all.clone()).collect();
        let times = all.windows(6).filter(|w| w == b"second").count();
        assert_eq!(times, 1, "the request reached the server {times} times");
    });
}

#[test]
fn a_denied_callers_early_bytes_reach_no_upstream() {
    let pki = Pki::new();
    let udp = free_udp();
    // An upstream that keeps every byte it is sent.
    let got = Arc::new(Mutex::new(Vec::new()));
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let kept = Arc::clone(&got);
    thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let kept = Arc::clone(&kept);
            thread::spawn(move || {
                let mut b = Vec::new();
                let _ = std::io::Read::read_to_end(&mut s, &mut b);
                kept.lock().unwrap().extend_from_slice(&b);
            });
        }
    });
    let (mut setup, bob, echo) = serving(&pki, udp, false, 30);
    setup.cfg = config(udp, port, 30, BOB_ALLOWED);
    net::block_on(async {
        let vertex = net::start(setup).unwrap();
        let conn = foreign_caller(&pki, &bob, &echo, udp, &[ALPN_V2]).await;
        // One allowed flow first: the server has admitted the connection.
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(&[STREAM_HELLO_V2, b'o', b'k'])
            .await
            .unwrap();
        send.finish().unwrap();
        let mut v = [0u8; 1];
        recv.read_exact(&mut v).await.unwrap();
        assert_eq!(v[0], Verdict::Allowed as u8);
        // The upstream closes once it has kept the bytes: the stream ends after that.
        assert!(recv.read_to_end(16).await.unwrap().is_empty());
        // Then bob's row goes: the per-flow check refuses the next stream,
        // whose request rides behind its hello.
        vertex
            .acl
            .swap(Acl::from_config(&config(udp, port, 30, "")));
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(b"\x02GET /secret HTTP/1.0\r\n\r\n")
            .await
            .unwrap();
        recv.read_exact(&mut v).await.unwrap();
        assert_eq!(v[0], Verdict::Denied as u8);
        smol::Timer::after(Duration::from_millis(300)).await;
    });
    assert_eq!(
        got.lock().unwrap().as_slice(),
        b"ok",
        "the upstream got only the allowed flow's bytes"
    );
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
