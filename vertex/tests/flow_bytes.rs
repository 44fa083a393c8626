//! `flor_flow_bytes_total` counts bytes as they move: an operator watching
//! `rate()` sees a long flow while it runs, and a flow that ends in an error
//! keeps what it moved. A test binary of its own, because the counters are
//! process-wide statics: no other test's flow may add to them here.
#![cfg(feature = "net")]
#![allow(clippy::unwrap_used)] // test fixtures: a failed setup step should abort the test loudly

mod common;

use std::time::{Duration, Instant};

use common::{serving, Pki};
use flor_vertex::counters::SERVE;
use flor_vertex::net::{self, Dialer};
use smol::io::{AsyncReadExt, AsyncWriteExt};
use testkit::free_udp;

/// Waits (up to 5 s) until the serving side has counted `want` bytes each way:
/// the echo's bytes are counted right after the vertex's write returns, which
/// may be a moment after the caller has read them.
fn serve_bytes_reach(want: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (sent, received) = (SERVE.sent_count(), SERVE.received_count());
        if sent == want && received == want {
            return;
        }
        assert!(
            Instant::now() < deadline && sent <= want && received <= want,
            "serving side counted {sent} bytes sent and {received} received, want {want} each"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn bytes_are_counted_while_a_flow_runs_and_kept_when_it_times_out() {
    let pki = Pki::new();
    let udp = free_udp();
    // Idle timeout 1 s: the flow below ends in an error, not cleanly.
    let (setup, bob, echo) = serving(&pki, udp, false, 1);
    net::block_on(async {
        let _vertex = net::start(setup).unwrap();
        let dialer = Dialer::new(pki.ca_pem.as_bytes()).unwrap();
        let mut flow = dialer.connect(&bob, &echo, udp).await.unwrap();
        assert_eq!((SERVE.sent_count(), SERVE.received_count()), (0, 0));

        // 3,000 bytes out and back: counted while the flow is still open.
        let out: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        flow.write_all(&out).await.unwrap();
        let mut back = vec![0u8; out.len()];
        flow.read_exact(&mut back).await.unwrap();
        assert_eq!(back, out);
        serve_bytes_reach(3000);

        // Then silence: the server ends the flow with its idle timeout, an
        // error, and the bytes stay counted.
        let mut b = [0u8; 1];
        let r = flow.read(&mut b).await;
        assert!(!matches!(r, Ok(1)), "no byte was sent, none may arrive");
        assert_eq!(SERVE.opened_count(), 1);
        serve_bytes_reach(3000);
    });
}
