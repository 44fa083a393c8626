#![allow(clippy::unwrap_used)] // test fixtures: a failed setup step should abort the test loudly
//! The metrics service end to end on the example rete: mgmt01, alpha and the
//! laptop run real `flor` agents and vertices on loopback (their addresses
//! moved to free ports), mgmt01's agent runs `flor metrics-server` behind its
//! vertex because mgmt01 publishes `metrics-push` (for role node) and
//! `metrics` (for role operator), and a real
//! `prometheus` (Debian's package, ci/setup.sh) scrapes its read address.
//!
//! The test causes one allowed flow (bob -> wiki) and one refused by alpha's
//! ACL (carol -> wiki), then reads them back from Prometheus's query API for
//! every running node, and through olga's SOCKS5 port with curl as
//! `metrics.demo.flor.rete`; bob, who is no operator, is refused. Pushes
//! carry the node the vertex proves: alpha pushing as beta is refused.
//!
//! Here rather than in agent/tests because it compiles the example rete with
//! this crate's `retectl`; `flor` is the workspace's (`workspace_flor`).

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use testkit::{free_tcp, free_udp, Group};

/// A wiki upstream: answers every connection with one HTTP response.
fn start_wiki() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = c.read(&mut buf);
            let _ = c.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 4\r\n\r\nwiki");
        }
    });
    port
}

/// A GET to a loopback HTTP server: the body (empty while nothing listens yet).
fn http_get(port: u16, path: &str) -> String {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// Prometheus's instant query: (labels, value) of every result.
fn query(prom: u16, q: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    let enc: String = q
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let body = http_get(prom, &format!("/api/v1/query?query={enc}"));
    let v: Value = match serde_json::from_str(&body) {
        Ok(v) => v,
        Err(_) => return vec![],
    };
    v["data"]["result"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .map(|r| {
                    let labels = r["metric"]
                        .as_object()
                        .unwrap()
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect();
                    let value = r["value"][1].as_str().unwrap().parse().unwrap();
                    (labels, value)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until Prometheus has every `(query, node, value)` of `expect`;
/// fails after `within` with what it has and `logs()`.
fn wait_for_values(
    prom: u16,
    expect: &[(String, &str, f64)],
    within: Duration,
    logs: impl Fn() -> String,
) {
    let deadline = Instant::now() + within;
    loop {
        let seen: Vec<Option<f64>> = expect
            .iter()
            .map(|(q, n, _)| value_of(prom, q, n))
            .collect();
        if expect
            .iter()
            .zip(&seen)
            .all(|((_, _, want), got)| *got == Some(*want))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus has {seen:?} for {expect:?}\n{}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The value Prometheus has for `q` on `node` (with `side` when given).
fn value_of(prom: u16, q: &str, node: &str) -> Option<f64> {
    query(prom, q)
        .into_iter()
        .find(|(l, _)| l.get("node").map(String::as_str) == Some(node))
        .map(|(_, v)| v)
}

#[test]
fn prometheus_and_the_operator_read_every_nodes_counters() {
    let d = Demo::with_ca();
    let tmp = d.tmp.path();
    let (mgmt_udp, alpha_udp) = (free_udp().port(), free_udp().port());
    let [_, _, _, metrics] = free_management_ports(&d);
    let wiki = start_wiki();
    for (file, from, to) in [
        (
            "nodes.yaml",
            "listen: 127.0.0.1:7443",
            format!("listen: 127.0.0.1:{mgmt_udp}"),
        ),
        (
            "nodes.yaml",
            "listen: 127.0.0.2:7443",
            format!("listen: 127.0.0.1:{alpha_udp}"),
        ),
        (
            "services.yaml",
            "upstream: 127.0.0.2:8080",
            format!("upstream: 127.0.0.1:{wiki}"),
        ),
        (
            "rete.yaml",
            "metrics_interval_s: 30",
            "metrics_interval_s: 1".to_string(),
        ),
    ] {
        d.edit(file, from, &to);
    }
    let out = tmp.join("out");
    d.compile_all(&out);
    let agent_json = std::fs::read_to_string(out.join("alpha/mgmt/agent.json")).unwrap();
    assert!(agent_json.contains("service/metrics-push"), "{agent_json}");

    // Every node enrolls from the compiled tree (mgmt01's bootstrap; the
    // others could fetch it from the config-server, which is not the point here).
    let mut groups = Vec::new();
    let mut homes = BTreeMap::new();
    for node in ["mgmt01", "alpha", "laptop"] {
        homes.insert(node, d.enroll_from(node, tmp, &out));
    }
    let mgmt = &homes["mgmt01"];
    for home in homes.values() {
        groups.push(spawn(
            home,
            &["agent", "run", "--rete", "demo.flor"],
            "agent.log",
        ));
    }
    for home in homes.values() {
        healthy(home);
    }
    let laptop = healthy(&homes["laptop"]);
    let port_of = |user: &str| socks_port(&laptop, &format!("spiffe://demo.flor/user/{user}"));

    // A real Prometheus on "mgmt01" scrapes the collector's read address directly.
    let prom = free_tcp();
    let prom_dir = tmp.join("prometheus");
    std::fs::create_dir_all(&prom_dir).unwrap();
    let cfg = prom_dir.join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n  - job_name: florete\n    static_configs:\n      - targets: [\"127.0.0.1:{metrics}\"]\n"
        ),
    )
    .unwrap();
    let prom_log = std::fs::File::create(prom_dir.join("log")).unwrap();
    let _prometheus = Group(
        Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                prom_dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom}"))
            .stdout(Stdio::null())
            .stderr(prom_log)
            .process_group(0)
            .spawn()
            .expect("prometheus (apt-get install prometheus; ci/setup.sh does)"),
    );

    // The traffic: one allowed flow, one refused by alpha's ACL.
    let (code, stream) = socks_connect(port_of("bob"), "wiki.demo.flor.rete");
    assert_eq!(code, 0, "bob may reach the wiki");
    let mut s = stream.unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut page = String::new();
    s.read_to_string(&mut page).unwrap();
    assert!(page.ends_with("wiki"), "{page}");
    drop(s);
    let (code, _) = socks_connect(port_of("carol"), "wiki.demo.flor.rete");
    assert_eq!(
        code, 2,
        "carol is refused by the ACL (SOCKS5 'not allowed')"
    );

    // Prometheus's query API: every running node, and the counts caused above.
    let opened = "flor_flows_opened_total";
    let acl = "flor_flows_refused_total{reason=\"acl\",side=\"serve\"}";
    let expect = [
        (format!("{opened}{{side=\"serve\"}}"), "alpha", 1.0),
        (format!("{opened}{{side=\"dial\"}}"), "laptop", 1.0),
        (acl.to_string(), "alpha", 1.0),
        (acl.replace("serve", "dial"), "laptop", 1.0),
        ("flor_artifact_version".to_string(), "mgmt01", 1.0),
        ("flor_artifact_version".to_string(), "alpha", 1.0),
        ("flor_artifact_version".to_string(), "laptop", 1.0),
        ("flor_vertex_up".to_string(), "mgmt01", 1.0),
        // The collector runs under mgmt01's agent, which reports it.
        (
            "flor_role_up{role=\"metrics-server\"}".to_string(),
            "mgmt01",
            1.0,
        ),
    ];
    let logs = || {
        format!(
            "prometheus log:\n{}\nmgmt01 agent log (with its metrics-server):\n{}\nlaptop agent log:\n{}",
            std::fs::read_to_string(prom_dir.join("log")).unwrap_or_default(),
            std::fs::read_to_string(mgmt.join("agent.log")).unwrap_or_default(),
            std::fs::read_to_string(homes["laptop"].join("agent.log")).unwrap_or_default(),
        )
    };
    wait_for_values(prom, &expect, Duration::from_secs(90), logs);
    // The wiki page's bytes, both ways, on both ends of bob's flow: the
    // 18-byte request goes into Florete at the laptop and out at alpha, the
    // 42-byte answer the other way.
    let bytes = |direction: &str, side: &str| {
        format!("flor_flow_bytes_total{{direction=\"{direction}\",side=\"{side}\"}}")
    };
    let expect = [
        (bytes("sent", "dial"), "laptop", 18.0),
        (bytes("received", "serve"), "alpha", 18.0),
        (bytes("sent", "serve"), "alpha", 42.0),
        (bytes("received", "dial"), "laptop", 42.0),
    ];
    wait_for_values(prom, &expect, Duration::from_secs(30), logs);
    let days = value_of(
        prom,
        "flor_certificate_expiry_seconds{cert=\"ca\"}",
        "alpha",
    )
    .unwrap()
        / 86_400.0;
    assert!(days > 300.0 && days < 3700.0, "CA expires in {days} days");

    // olga (operator) reads the same text through her SOCKS5 port with curl.
    let o = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--socks5-hostname"])
        .arg(format!("127.0.0.1:{}", port_of("olga")))
        .arg("http://metrics.demo.flor.rete/metrics")
        .output()
        .unwrap();
    let text_read = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{:?}",
        String::from_utf8_lossy(&o.stderr)
    );
    for line in [
        "flor_flows_opened_total{node=\"alpha\",side=\"serve\"} 1\n",
        "flor_flows_refused_total{node=\"alpha\",side=\"serve\",reason=\"acl\"} 1\n",
        "flor_artifact_version{node=\"laptop\"} 1\n",
        "# TYPE flor_flows_refused_total counter\n",
    ] {
        assert!(text_read.contains(line), "{line:?} not in:\n{text_read}");
    }

    // bob holds no operator role: mgmt01's vertex refuses him before the collector.
    let (code, _) = socks_connect(port_of("bob"), "metrics.demo.flor.rete");
    assert_eq!(code, 2, "bob may not read metrics");

    // Pushes are labelled by the node the vertex proves (the side-channel),
    // not by the path: alpha pushing under beta's name is refused.
    let mgmt01: std::net::SocketAddr = format!("127.0.0.1:{mgmt_udp}").parse().unwrap();
    let (status, body) = http_as(
        &d.repo.join("certs/ca.crt"),
        &tmp.join("alpha.bundle.json"),
        "node/alpha",
        "metrics-push",
        mgmt01,
        "POST",
        "/push/beta",
    );
    let refusal = "spiffe://demo.flor/node/alpha may push only as node alpha, not as beta";
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains(refusal));
    let log = std::fs::read_to_string(mgmt.join("agent.log")).unwrap();
    assert!(
        log.contains(&format!("refused push (403): {refusal}")),
        "{log}"
    );
    drop(groups);
}
