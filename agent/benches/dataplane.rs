//! The project's own data-plane client, driven by `ci/bench.sh` (not a test).
//!
//! The script starts the example rete, a stunnel4 mTLS pair and iperf3, and
//! runs this client against each path in turn, so every path sees the same
//! client code. A path is a target spec:
//!
//! - `tcp:HOST:PORT`: a plain TCP connect (direct, or a stunnel client port);
//! - `socks:PORT:NAME:DPORT`: SOCKS5 CONNECT through 127.0.0.1:PORT to NAME:DPORT.
//!
//! Commands (each prints one JSON line on stdout):
//!
//! - `echo LISTEN`: a TCP echo upstream (one thread per connection) until killed;
//! - `latency TARGET SAMPLES`: new flow = connect (+ SOCKS5) + 1-byte echo + close;
//!   prints the median and p99 in microseconds;
//! - `bulk TARGET BYTES`: one flow through the echo upstream, BYTES written while
//!   the echo is drained, so both directions carry BYTES at once; prints Gbit/s
//!   of one direction (a cross-check of iperf3 with the project's own client);
//! - `hold TARGET N FLAG`: opens N flows, echoes one byte on each, creates the file
//!   FLAG and holds the flows open until FLAG is removed.
#![allow(clippy::unwrap_used)] // a bench aborts loudly on a broken setup

// Only `socks_connect` is used: the rest of the fixtures (and their re-exports) idle here.
#[allow(unused_imports)]
#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

enum Target {
    Tcp(String),
    Socks { port: u16, name: String, dport: u16 },
}

impl Target {
    fn parse(spec: &str) -> Target {
        if let Some(addr) = spec.strip_prefix("tcp:") {
            return Target::Tcp(addr.to_string());
        }
        let rest = spec.strip_prefix("socks:").unwrap_or_else(|| {
            panic!("target {spec}: want tcp:HOST:PORT or socks:PORT:NAME:DPORT")
        });
        let parts: Vec<&str> = rest.split(':').collect();
        assert_eq!(parts.len(), 3, "target {spec}: want socks:PORT:NAME:DPORT");
        Target::Socks {
            port: parts[0].parse().unwrap(),
            name: parts[1].to_string(),
            dport: parts[2].parse().unwrap(),
        }
    }

    fn connect(&self) -> TcpStream {
        let s = match self {
            Target::Tcp(addr) => TcpStream::connect(addr.as_str()).unwrap(),
            Target::Socks { port, name, dport } => {
                let (code, s) = common::socks_connect(*port, name, *dport);
                assert_eq!(code, 0, "SOCKS5 CONNECT {name}:{dport} refused with {code}");
                s.unwrap()
            }
        };
        s.set_nodelay(true).unwrap();
        s
    }
}

fn echo(listen: &str) {
    let l = TcpListener::bind(listen).unwrap();
    println!("{{\"echo\":\"{}\"}}", l.local_addr().unwrap());
    for s in l.incoming() {
        let Ok(mut s) = s else { continue };
        // Small stacks: the hold test keeps 1,000 of these threads alive.
        thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || {
                let _ = s.set_nodelay(true);
                let mut r = s.try_clone().unwrap();
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = r.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = s.shutdown(Shutdown::Write);
            })
            .unwrap();
    }
}

fn latency(t: &Target, samples: usize) {
    let mut v = Vec::with_capacity(samples);
    let mut b = [0u8; 1];
    for _ in 0..samples {
        let start = Instant::now();
        let mut s = t.connect();
        s.write_all(b"x").unwrap();
        s.read_exact(&mut b).unwrap();
        drop(s);
        v.push(start.elapsed());
    }
    v.sort();
    let pick = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)].as_secs_f64() * 1e6;
    println!(
        "{{\"median_us\":{:.1},\"p99_us\":{:.1},\"samples\":{samples}}}",
        pick(0.5),
        pick(0.99)
    );
}

fn bulk(t: &Target, bytes: u64) {
    let s = t.connect();
    let mut w = s.try_clone().unwrap();
    let mut r = s;
    let block = 256 * 1024;
    let bytes = bytes.div_ceil(block) * block;
    let start = Instant::now();
    // The echo sends everything back: one thread writes, the other drains
    // until it has it all. No half-close: stunnel ends both directions on the
    // first EOF, which would cut the echo short.
    let drain = thread::spawn(move || {
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0u64;
        while got < bytes {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n as u64,
            }
        }
        got
    });
    let buf = vec![0x5au8; block as usize];
    let mut sent = 0u64;
    while sent < bytes {
        w.write_all(&buf).unwrap();
        sent += block;
    }
    let got = drain.join().unwrap();
    assert_eq!(got, sent, "the echo returned fewer bytes than were sent");
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{{\"gbit_s\":{:.3},\"bytes\":{sent}}}",
        sent as f64 * 8.0 / secs / 1e9
    );
}

fn hold(t: &Target, n: usize, flag: &Path) {
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = t.connect();
        s.write_all(b"y").unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b)
            .unwrap_or_else(|e| panic!("flow {i} of {n}: {e}"));
        held.push(s);
    }
    std::fs::write(flag, b"held\n").unwrap();
    println!("{{\"held\":{n}}}");
    while flag.exists() {
        thread::sleep(Duration::from_millis(50));
    }
    // Every held flow is still alive at the end.
    for (i, s) in held.iter_mut().enumerate() {
        s.write_all(b"z").unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b)
            .unwrap_or_else(|e| panic!("held flow {i} broke: {e}"));
    }
}

fn main() {
    // `cargo bench` passes `--bench`; skip flags.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let arg = |i: usize| -> &str {
        args.get(i)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("usage: see agent/benches/dataplane.rs"))
    };
    match arg(0) {
        "echo" => echo(arg(1)),
        "latency" => latency(&Target::parse(arg(1)), arg(2).parse().unwrap()),
        "bulk" => bulk(&Target::parse(arg(1)), arg(2).parse().unwrap()),
        "hold" => hold(
            &Target::parse(arg(1)),
            arg(2).parse().unwrap(),
            Path::new(arg(3)),
        ),
        other => panic!("unknown command {other}: see agent/benches/dataplane.rs"),
    }
}
