//! Memory per open flow, with real `flor vertex run` processes on loopback:
//! 1,000 flows through SOCKS5 -> QUIC -> TCP, each used once and then left
//! open and quiet, may cost each vertex at most [`PER_FLOW_BOUND_KIB`] beyond
//! its idle memory. Bounds, not timings: the flows' state (tasks, quinn
//! streams, sockets' reactor entries) is what is measured, and it must not
//! include a per-direction copy buffer for a flow that is not moving bytes.
//! (The stuck-peer bound is `vertex/tests/net_inprocess.rs`.)
#![cfg(unix)]
#![allow(clippy::unwrap_used)] // test fixtures: a failed setup step should abort the test loudly

mod common;

use std::io::{Read, Write};
use std::thread;
use std::time::Duration;

use common::*;

/// Flows held open at once: near `MAX_FLOWS` (1,024), the most a vertex serves.
const FLOWS: usize = 1000;

/// The bound per idle open flow, per vertex (issue 12: "<= 8 KiB per idle
/// open flow beyond idle").
const PER_FLOW_BOUND_KIB: u64 = 8;

#[test]
fn a_thousand_idle_flows_cost_each_vertex_at_most_8_kib_per_flow() {
    // Each side holds one socket per flow, the test holds two (client and
    // echo): more than the default soft limit of 1,024 descriptors.
    testkit::raise_nofile_limit(4 * FLOWS as u64 + 256);
    let rete = Rete::new("mem.flor");
    let echo_port = start_echo();
    let alice = rete.id("user/alice");
    let mut beta = rete.node("beta");
    let udp = free_udp();
    let p = vec![beta.hold(&rete, "service/echo")];
    let payload = vertex_payload(
        &rete.td,
        "beta",
        Some(udp),
        p,
        vec![(rete.id("service/echo"), echo_port)],
        vec![(alice.clone(), vec![0])],
        vec![],
        vec![],
    );
    beta.install_vertex(&rete.seal("vertex", "beta", 1, &payload));
    let beta_status = beta.start_vertex();
    let (_laptop, laptop_status) = rete.alice_laptop("service/echo", udp);
    let socks = socks_port(&laptop_status, &alice);
    let pids = [
        ("server", beta_status["pid"].as_u64().unwrap() as u32),
        ("client", laptop_status["pid"].as_u64().unwrap() as u32),
    ];
    let echo_once = |s: &mut std::net::TcpStream, what: &str| {
        s.write_all(b"y").unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(&b, b"y");
    };

    // Idle = the QUIC connection is up and one flow has come and gone, so
    // what is measured next is the flows, not the first connection.
    let (code, s) = socks_connect(socks, "echo.mem.flor.rete", 1);
    assert_eq!(code, 0);
    echo_once(&mut s.unwrap(), "warm-up flow");
    thread::sleep(Duration::from_millis(300));
    let idle: Vec<u64> = pids.iter().map(|&(_, p)| testkit::rss_kib(p)).collect();

    let mut held = Vec::with_capacity(FLOWS);
    for i in 0..FLOWS {
        let (code, s) = socks_connect(socks, "echo.mem.flor.rete", 1);
        assert_eq!(code, 0, "flow {i} refused");
        let mut s = s.unwrap();
        echo_once(&mut s, &format!("flow {i}"));
        held.push(s);
    }
    thread::sleep(Duration::from_millis(300));
    let busy: Vec<u64> = pids.iter().map(|&(_, p)| testkit::rss_kib(p)).collect();
    // The flows are open, not merely counted: each still carries a byte.
    for (i, s) in held.iter_mut().enumerate() {
        echo_once(s, &format!("held flow {i}"));
    }

    let mut report = String::new();
    for (k, &(side, _)) in pids.iter().enumerate() {
        let grown = busy[k].saturating_sub(idle[k]);
        report += &format!(
            "{side}: idle {} KiB, with {FLOWS} flows {} KiB, {:.2} KiB per flow\n",
            idle[k],
            busy[k],
            grown as f64 / FLOWS as f64
        );
    }
    eprint!("{report}");
    for (k, &(side, _)) in pids.iter().enumerate() {
        let grown = busy[k].saturating_sub(idle[k]);
        assert!(
            grown <= PER_FLOW_BOUND_KIB * FLOWS as u64,
            "the {side} vertex grew by more than {PER_FLOW_BOUND_KIB} KiB per flow:\n{report}"
        );
    }
}
