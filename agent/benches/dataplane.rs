//! Data-plane measurements against direct TCP, measured in the same run.
//! Not a test: run it with `ci/bench.sh` (release build, real processes on loopback).
//!
//! - bulk: 256 MiB one way through SOCKS5 -> QUIC -> TCP vs straight TCP to the same sink;
//! - new flow over a warm connection: SOCKS5 CONNECT + 1-byte echo vs TCP connect + 1-byte echo;
//! - RSS of both vertex processes idle and while 1,000 flows are open.
#![allow(clippy::unwrap_used)] // a bench aborts loudly on a broken setup

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use testkit::rss_kib;

const BULK: usize = 256 << 20;
const FLOWS: usize = 1000;
const LATENCY_SAMPLES: usize = 300;

fn sink() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            thread::spawn(move || {
                let mut buf = vec![0u8; 256 * 1024];
                let mut n = 0u64;
                while let Ok(k) = s.read(&mut buf) {
                    if k == 0 {
                        break;
                    }
                    n += k as u64;
                }
                let _ = s.write_all(&n.to_be_bytes());
            });
        }
    });
    port
}

fn push(mut s: TcpStream) -> f64 {
    let buf = vec![0x5au8; 256 * 1024];
    let start = Instant::now();
    let mut sent = 0;
    while sent < BULK {
        s.write_all(&buf).unwrap();
        sent += buf.len();
    }
    s.shutdown(Shutdown::Write).unwrap();
    let mut n = [0u8; 8];
    s.read_exact(&mut n).unwrap();
    assert_eq!(u64::from_be_bytes(n) as usize, BULK);
    (BULK as f64 * 8.0) / start.elapsed().as_secs_f64() / 1e9
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let rete = Rete::new("bench.flor");
    let sink_port = sink();
    let echo_port = start_echo();
    let alice = rete.id("user/alice");
    let mut beta = rete.node("beta");
    let udp = free_udp();
    let p = vec![
        beta.hold(&rete, "service/sink"),
        beta.hold(&rete, "service/echo"),
    ];
    let payload = vertex_payload(
        &rete.td,
        "beta",
        Some(udp),
        p,
        vec![
            (rete.id("service/sink"), sink_port),
            (rete.id("service/echo"), echo_port),
        ],
        vec![(alice.clone(), vec![0, 1])],
        vec![],
        vec![],
    );
    beta.install_vertex(&rete.seal("vertex", "beta", 1, &payload));
    let beta_status = beta.start_vertex();
    let mut laptop = rete.node("laptop");
    let p = vec![laptop.hold(&rete, "user/alice")];
    let payload = vertex_payload(
        &rete.td,
        "laptop",
        None,
        p,
        vec![],
        vec![],
        vec![
            (rete.id("service/sink"), udp),
            (rete.id("service/echo"), udp),
        ],
        vec![(alice.clone(), free_tcp())],
    );
    laptop.install_vertex(&rete.seal("vertex", "laptop", 1, &payload));
    let laptop_status = laptop.start_vertex();
    let socks = socks_port(&laptop_status, &alice);
    let pids = [
        beta_status["pid"].as_u64().unwrap() as u32,
        laptop_status["pid"].as_u64().unwrap() as u32,
    ];

    // Warm the connections.
    let (code, _) = socks_connect(socks, "sink.bench.flor.rete", 1);
    assert_eq!(code, 0);
    let idle_rss: Vec<u64> = pids.iter().map(|&p| rss_kib(p)).collect();

    let direct = push(TcpStream::connect(("127.0.0.1", sink_port)).unwrap());
    let (code, s) = socks_connect(socks, "sink.bench.flor.rete", 1);
    assert_eq!(code, 0);
    let florete = push(s.unwrap());

    let mut direct_lat = Vec::new();
    let mut flor_lat = Vec::new();
    for _ in 0..LATENCY_SAMPLES {
        let t = Instant::now();
        let mut s = TcpStream::connect(("127.0.0.1", echo_port)).unwrap();
        s.set_nodelay(true).unwrap();
        s.write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).unwrap();
        direct_lat.push(t.elapsed());

        let t = Instant::now();
        let (code, s) = socks_connect(socks, "echo.bench.flor.rete", 1);
        assert_eq!(code, 0);
        let mut s = s.unwrap();
        s.set_nodelay(true).unwrap();
        s.write_all(b"x").unwrap();
        s.read_exact(&mut b).unwrap();
        flor_lat.push(t.elapsed());
    }
    let (dl, fl) = (median(direct_lat), median(flor_lat));

    let mut held = Vec::with_capacity(FLOWS);
    let tail = |l: String| l.lines().rev().take(6).collect::<Vec<_>>().join("\n");
    for i in 0..FLOWS {
        let (code, s) = socks_connect(socks, "echo.bench.flor.rete", 1);
        assert_eq!(code, 0, "flow {i}: laptop {}", tail(laptop.log()));
        held.push(s.unwrap());
    }
    for (i, s) in held.iter_mut().enumerate() {
        s.write_all(b"y").unwrap();
        let mut b = [0u8; 1];
        if let Err(e) = s.read_exact(&mut b) {
            panic!(
                "flow {i} of {FLOWS} broke: {e}\nbeta: {}\nlaptop: {}",
                tail(beta.log()),
                tail(laptop.log())
            );
        }
    }
    let busy_rss: Vec<u64> = pids.iter().map(|&p| rss_kib(p)).collect();
    drop(held);

    println!("| measurement | direct TCP | Florete | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| bulk 256 MiB, Gbit/s | {direct:.2} | {florete:.2} | {:.3} |",
        florete / direct
    );
    println!(
        "| new flow (connect + 1-byte echo), median of {LATENCY_SAMPLES} | {:.1} us | {:.1} us | {:.2} |",
        dl.as_secs_f64() * 1e6,
        fl.as_secs_f64() * 1e6,
        fl.as_secs_f64() / dl.as_secs_f64()
    );
    println!(
        "| RSS idle, server / client vertex | | {} KiB / {} KiB | |",
        idle_rss[0], idle_rss[1]
    );
    println!(
        "| RSS with {FLOWS} open flows, server / client vertex | | {} KiB / {} KiB | {:.2} / {:.2} of idle |",
        busy_rss[0],
        busy_rss[1],
        busy_rss[0] as f64 / idle_rss[0] as f64,
        busy_rss[1] as f64 / idle_rss[1] as f64
    );
}
