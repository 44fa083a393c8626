#![allow(clippy::unwrap_used)] // test fixtures: a failed setup step should abort the test loudly
//! A refused handshake is named on both sides, in the logs of real `flor
//! vertex run` processes: a client certificate that expired, one not yet
//! valid, one from another CA, none at all, and a server certificate that
//! expired.
//!
//! Topology: node `beta` serves `echo` (good certificate) and `stale`
//! (expired certificate); node `laptop` holds alice (good), and three users
//! whose certificates the server must refuse, each on its own SOCKS5 port.
//! beta logs under systemd's conventions (JOURNAL_STREAM), so its warnings
//! carry the `<4>` priority prefix `journalctl -p warning` filters on.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn::rustls;

use common::*;

/// Waits until `log()` contains every one of `needles`; panics with the log if not.
fn wait_log(what: &str, log: impl Fn() -> String, needles: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let l = log();
        if needles.iter().all(|n| l.contains(n)) {
            return l;
        }
        assert!(
            Instant::now() < deadline,
            "{what} log lacks one of {needles:?}:\n{l}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn both_sides_name_why_a_certificate_was_refused() {
    let rete = Rete::new("demo.flor");
    let rogue = Ca::new("demo.flor CA"); // same name, another key: "another CA"
    let echo_port = start_echo();
    let echo = rete.id("service/echo");
    let stale = rete.id("service/stale");
    let users = ["alice", "expired", "early", "rogue"];

    let mut beta = rete.node("beta");
    let beta_udp = free_udp();
    let (stale_cert, stale_key) = rete.ca.issue_between(&stale, (2020, 1, 1), (2021, 1, 1));
    let principals = vec![
        beta.hold(&rete, "service/echo"),
        beta.hold_pem("service/stale", &stale_cert, &stale_key),
    ];
    let acl = users
        .iter()
        .map(|u| (rete.id(&format!("user/{u}")), vec![0u8, 1]))
        .collect();
    let payload = vertex_payload(
        &rete.td,
        "beta",
        Some(beta_udp),
        principals,
        vec![(echo.clone(), echo_port), (stale.clone(), echo_port)],
        acl,
        vec![],
        vec![],
    );
    beta.install_vertex(&rete.seal("vertex", "beta", 1, &payload));
    // beta's stderr (its log file) plays the journal stream systemd names in
    // JOURNAL_STREAM=<dev>:<inode>: priority prefixes, no timestamps.
    {
        use std::os::unix::fs::MetadataExt;
        let log = beta.home.0.join("vertex.log");
        let m = std::fs::File::create(&log).unwrap().metadata().unwrap();
        let stream = format!("{}:{}", m.dev(), m.ino());
        beta.env.push(("JOURNAL_STREAM".into(), stream));
    }
    beta.start_vertex();

    let mut laptop = rete.node("laptop");
    // Inherited from somewhere, naming another stream than laptop's stderr
    // (a terminal a user service started): ignored, lines keep timestamps.
    laptop.env.push(("JOURNAL_STREAM".into(), "1:1".into()));
    let (expired_cert, expired_key) =
        rete.ca
            .issue_between(&rete.id("user/expired"), (2020, 1, 1), (2021, 1, 1));
    let (early_cert, early_key) =
        rete.ca
            .issue_between(&rete.id("user/early"), (2090, 1, 1), (2091, 1, 1));
    let (rogue_cert, rogue_key) = rogue.issue(&rete.id("user/rogue"));
    let principals = vec![
        laptop.hold(&rete, "user/alice"),
        laptop.hold_pem("user/expired", &expired_cert, &expired_key),
        laptop.hold_pem("user/early", &early_cert, &early_key),
        laptop.hold_pem("user/rogue", &rogue_cert, &rogue_key),
    ];
    let socks = users
        .iter()
        .map(|u| (rete.id(&format!("user/{u}")), free_tcp()))
        .collect();
    let payload = vertex_payload(
        &rete.td,
        "laptop",
        None,
        principals,
        vec![],
        vec![],
        vec![(echo.clone(), beta_udp), (stale.clone(), beta_udp)],
        socks,
    );
    laptop.install_vertex(&rete.seal("vertex", "laptop", 1, &payload));
    let status = laptop.start_vertex();
    let port = |u: &str| socks_port(&status, &rete.id(&format!("user/{u}")));

    // The good pair works, so every refusal below is the certificate's doing.
    let (code, s) = socks_connect(port("alice"), "echo.demo.flor.rete", 7);
    assert_eq!(code, 0, "alice reaches echo");
    drop(s);

    let cases = [
        (
            "expired",
            "client certificate expired",
            "certificate expired",
        ),
        (
            "early",
            "client certificate not yet valid",
            "certificate not yet valid",
        ),
        (
            "rogue",
            "client certificate from another CA than this rete's",
            "certificate from another CA than this rete's",
        ),
    ];
    for (user, server_says, client_says) in cases {
        let (code, _) = socks_connect(port(user), "echo.demo.flor.rete", 7);
        assert_ne!(code, 0, "{user}'s certificate must be refused");
        let server_line = "refused connection from 127.0.0.1:";
        let l = wait_log("beta", || beta.log(), &[server_line, server_says]);
        // The journal reads the priority from the prefix: a warning is <4>.
        let line = l.lines().find(|x| x.contains(server_says)).unwrap();
        assert!(line.starts_with("<4>"), "no priority prefix: {line}");
        // Every scope's processes share the journal: the line names beta's.
        assert!(
            line.starts_with(&format!("<4>{} flor_vertex::", rete.td)),
            "the journal line does not name the scope: {line}"
        );
        let client_line = format!(
            "spiffe://demo.flor/user/{user} -> {echo}: mTLS handshake failed: the server refused our certificate: {client_says}"
        );
        wait_log("laptop", || laptop.log(), &[&client_line]);
    }

    // The other way round: the server presents an expired certificate.
    let (code, _) = socks_connect(port("alice"), "stale.demo.flor.rete", 7);
    assert_ne!(code, 0, "an expired server certificate must be refused");
    let l = wait_log(
        "laptop",
        || laptop.log(),
        &[&format!(
            "handshake with {stale} at {beta_udp} failed: server certificate expired"
        )],
    );
    // Outside systemd a log line starts with its UTC timestamp.
    let line = l
        .lines()
        .find(|x| x.contains("server certificate expired"))
        .unwrap();
    assert!(
        line.starts_with("20") && line.as_bytes().get(19) == Some(&b'Z'),
        "no timestamp: {line}"
    );
    wait_log(
        "beta",
        || beta.log(),
        &["the client refused our certificate: certificate expired"],
    );

    // A client that presents no certificate at all (not a flor: flor always does).
    no_certificate_client(beta_udp, &echo);
    wait_log(
        "beta",
        || beta.log(),
        &["client certificate missing (none presented)"],
    );
}

/// Accepts whatever the server presents, so the handshake reaches the
/// point where the server asks for the client's certificate.
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Dials `target` at `addr` over QUIC without a client certificate.
fn no_certificate_client(addr: std::net::SocketAddr, target: &str) {
    use flor_vertex::identity::{sni_for, Dialable, SpiffeId};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
        .with_no_client_auth();
    tls.alpn_protocols = vec![flor_vertex::wire::ALPN_V1.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let cfg = quinn::ClientConfig::new(Arc::new(quic));
    let target = Dialable::new(SpiffeId::parse(target).unwrap()).unwrap();
    let sni = sni_for(&target);
    smol::block_on(async {
        let ep = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            None,
            std::net::UdpSocket::bind("127.0.0.1:0").unwrap(),
            Arc::new(quinn::SmolRuntime),
        )
        .unwrap();
        // The handshake may look complete from here before the server refuses:
        // wait for the server's verdict either way.
        if let Ok(conn) = ep.connect_with(cfg, addr, &sni).unwrap().await {
            let _ = conn.open_bi().await;
            let _ = smol::future::or(
                async {
                    conn.closed().await;
                },
                async {
                    smol::Timer::after(Duration::from_secs(5)).await;
                },
            )
            .await;
        }
    });
}

/// Under procd (FLOR_LOG=procd) a vertex started by the agent writes its info
/// lines on the apply pipe behind `log: ` (the agent prints them on its
/// stdout, which procd files as info) and its warnings on stderr (filed as
/// err); the apply protocol on the same pipe keeps working.
#[test]
fn under_procd_info_goes_to_stdout_and_warnings_to_stderr() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;

    let rete = Rete::new("demo.flor");
    let beta = rete.node("beta");
    let alice = rete.id("user/alice");
    let principals = vec![beta.hold(&rete, "user/alice")];
    let socks = free_tcp();
    let payload = vertex_payload(
        &rete.td,
        "beta",
        None,
        principals,
        vec![],
        vec![],
        vec![],
        vec![(alice, socks)],
    );
    beta.install_vertex(&rete.seal("vertex", "beta", 1, &payload));
    let mut child = ChildGuard(
        beta.command()
            .args(["vertex", "run", "--rete", &rete.td, "--agent-pipe"])
            .env("FLOR_LOG", "procd")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stdout = BufReader::new(child.0.stdout.take().unwrap());
    let err = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let mut stderr = child.0.stderr.take().unwrap();
    let sink = std::sync::Arc::clone(&err);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = std::io::Read::read(&mut stderr, &mut buf) {
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let mut line = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !line.contains("vertex ready") {
        line.clear();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "stdout closed");
        assert!(line.starts_with("log: "), "not a piped log line: {line}");
        assert!(Instant::now() < deadline);
    }
    // A SOCKS5 client that speaks nonsense: the vertex warns, on stderr.
    wait_tcp(socks);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", socks)).unwrap();
    s.write_all(&[4, 1, 0, 80]).unwrap();
    drop(s);
    // The apply protocol still answers on the same pipe, between log lines.
    let mut stdin = child.0.stdin.take().unwrap();
    stdin.write_all(b"apply\n").unwrap();
    loop {
        line.clear();
        assert!(stdout.read_line(&mut line).unwrap() > 0, "stdout closed");
        if !line.starts_with("log: ") {
            assert!(line.starts_with("applied 1"), "apply answer: {line}");
            break;
        }
    }
    drop(stdin);
    let err = wait_log("stderr", || err.lock().unwrap().clone(), &["SOCKS5"]);
    let warn = err
        .lines()
        .find(|l| l.contains("SOCKS5"))
        .unwrap_or_else(|| panic!("no SOCKS5 warning on stderr:\n{err}"));
    assert!(warn.starts_with("WARN "), "{warn}");
    assert!(!err.contains("vertex ready"), "info on stderr:\n{err}");
}
