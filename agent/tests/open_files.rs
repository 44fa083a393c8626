#![allow(clippy::unwrap_used)] // test fixtures: a failed setup step should abort the test loudly
//! A vertex started under the default soft open-file limit (1,024, what
//! systemd and procd give a service) raises its own limit, so it can carry
//! MAX_FLOWS on both sides: read from /proc/<pid>/limits of a real
//! `flor vertex run`. Its own test binary, because it lowers the limit of the
//! test process, which the vertex inherits.

mod common;

use common::*;
use flor_vertex::limits::OPEN_FILES_WANTED;
use rustix::process::{getrlimit, setrlimit, Resource};

/// (soft, hard) from a /proc/<pid>/limits text; `None` stands for unlimited.
fn open_files(limits: &str) -> (Option<u64>, Option<u64>) {
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let f: Vec<&str> = line["Max open files".len()..].split_whitespace().collect();
    (f[0].parse().ok(), f[1].parse().ok())
}

#[test]
fn a_vertex_raises_its_open_file_limit_for_max_flows() {
    let mut l = getrlimit(Resource::Nofile);
    let hard = l.maximum;
    l.current = Some(1024);
    setrlimit(Resource::Nofile, l).unwrap();

    let rete = Rete::new("demo.flor");
    let mut beta = rete.node("beta");
    let principals = vec![beta.hold(&rete, "service/echo")];
    let payload = vertex_payload(
        &rete.td,
        "beta",
        Some(free_udp()),
        principals,
        vec![(rete.id("service/echo"), free_tcp())],
        vec![],
        vec![],
        vec![],
    );
    beta.install_vertex(&rete.seal("vertex", "beta", 1, &payload));
    beta.start_vertex();
    let pid = beta.children[0].0.id();
    let (soft, _) = open_files(&std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap());
    let want = hard.map_or(OPEN_FILES_WANTED, |h| h.min(OPEN_FILES_WANTED));
    assert!(
        soft.is_none_or(|s| s >= want),
        "vertex soft limit {soft:?}, wanted {want} (hard {hard:?}): {}",
        beta.log()
    );
    assert!(
        want > 1024,
        "the hard limit here ({hard:?}) cannot show the raise"
    );
}
