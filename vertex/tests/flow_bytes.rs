//! `flor_flow_bytes_total` counts bytes as they are handed on: an operator
//! watching `rate()` sees a long flow while it runs, and a flow that ends in
//! an error keeps what it moved. A test binary of its own, because the
//! counters are process-wide statics: no other test's flow may add to them here.
#![cfg(feature = "net")]
#![allow(clippy::unwrap_used)] // test fixtures: a failed setup step should abort the test loudly

mod common;

use std::time::{Duration, Instant};

use common::{serving, Pki};
use flor_vertex::counters::SERVE;
use flor_vertex::net::{self, Dialer};
use smol::io::{AsyncReadExt, AsyncWriteExt};
use testkit::free_udp;

/// Waits (up to 5 s, letting the vertex run) until the serving side has
/// counted `sent` bytes into Florete (from its upstream) and `received` out
/// of it (to its upstream); fails at once if either count overshoots.
async fn serve_bytes_reach(sent: u64, received: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = (SERVE.sent_count(), SERVE.received_count());
        if got == (sent, received) {
            return;
        }
        assert!(
            Instant::now() < deadline && got.0 <= sent && got.1 <= received,
            "serving side counted (sent, received) = {got:?}, want ({sent}, {received})"
        );
        smol::Timer::after(Duration::from_millis(20)).await;
    }
}

#[test]
fn bytes_are_counted_while_a_flow_runs_and_kept_when_it_times_out() {
    let pki = Pki::new();
    let (echo_udp, sink_udp) = (free_udp(), free_udp());
    // Idle timeout 3 s: the flows below end in an error, not cleanly.
    let (echo_setup, bob, echo) = serving(&pki, echo_udp, false, 3);
    let (sink_setup, _, _) = serving(&pki, sink_udp, true, 3);
    net::block_on(async {
        let _echo_vertex = net::start(echo_setup).unwrap();
        let _sink_vertex = net::start(sink_setup).unwrap();
        let dialer = Dialer::new(pki.ca_pem.as_bytes()).unwrap();
        let mut flow = dialer.connect(&bob, &echo, echo_udp).await.unwrap();
        assert_eq!((SERVE.sent_count(), SERVE.received_count()), (0, 0));

        // 3,000 bytes out and back: counted while the flow is still open.
        let out: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        flow.write_all(&out).await.unwrap();
        let mut back = vec![0u8; out.len()];
        flow.read_exact(&mut back).await.unwrap();
        assert_eq!(back, out);
        serve_bytes_reach(3000, 3000).await;

        // One way only: 1,000 bytes to an upstream that never answers are
        // received from Florete (written to it), none sent.
        let mut one_way = dialer.connect(&bob, &echo, sink_udp).await.unwrap();
        one_way.write_all(&out[..1000]).await.unwrap();
        serve_bytes_reach(3000, 4000).await;

        // Then silence: the server ends the echo flow with its idle timeout,
        // an error (the stream is reset), and its bytes stay counted.
        let mut b = [0u8; 1];
        let r = flow.read(&mut b).await;
        assert!(r.is_err(), "the idle timeout resets the flow, got {r:?}");
        assert_eq!(SERVE.opened_count(), 2);
        serve_bytes_reach(3000, 4000).await;
    });
}
