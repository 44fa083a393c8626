#![allow(clippy::unwrap_used)] // test fixtures: a failed setup step should abort the test loudly
//! `flor doctor` and `flor ping` on the example rete (examples/my-rete), all
//! four nodes running on loopback as real `flor agent run` processes, the
//! config-server on mgmt01 filled by `retectl publish` as olga:
//!
//! - doctor on the laptop passes; it fails, naming the check, with the
//!   management node mgmt01 stopped (its agent, and with it the config-server
//!   the agent runs), with beta (a route's node) stopped, and with
//!   certificates re-issued for 5 days (`retectl issue-bundle --days 5`);
//! - ping as bob / carol: allowed, denied, unknown, upstream down;
//! - `flor agent status` shows the days left and the agent logs the warning;
//! - `retectl certs --expiring 30d` and `retectl validate` see the short
//!   certificates in enrollment.log.
//!
//! Uses the `flor` binary of this workspace (`target/debug/flor`).

mod common;

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use testkit::{free_tcp, free_udp, Group};

/// One node of the example rete: its home and its running agent.
struct Host {
    name: &'static str,
    home: PathBuf,
    agent: Option<Group>,
}

impl Host {
    fn run(&self, args: &[&str]) -> Output {
        flor(&self.home).args(args).output().unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.home.join("agent.log")).unwrap_or_default()
    }

    fn enroll(&self, bundle: &Path, tree: &Path) {
        let o = self.run(&[
            "enroll",
            bundle.to_str().unwrap(),
            "--from",
            tree.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{} enroll: {}", self.name, out(&o));
    }

    fn start(&mut self) {
        let log = std::fs::File::create(self.home.join("agent.log")).unwrap();
        self.agent = Some(Group(
            flor(&self.home)
                .args(["agent", "run", "--rete", "demo.flor"])
                .stdout(Stdio::null())
                .stderr(log)
                .process_group(0)
                .spawn()
                .unwrap(),
        ));
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let o = self.run(&["agent", "status", "--json"]);
            if o.status.success() {
                let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
                if s["vertex"]["health"] == "healthy" {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{} not healthy: {}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `flor doctor`: (passed, output).
    fn doctor(&self) -> (bool, String) {
        let o = self.run(&["doctor"]);
        (o.status.success(), out(&o))
    }

    fn ping(&self, host: &str, as_: &str) -> (bool, String) {
        let o = self.run(&["ping", host, "--as", as_]);
        (o.status.success(), out(&o))
    }
}

/// The first line of `text` holding every one of `needles`.
fn line_with<'a>(text: &'a str, needles: &[&str]) -> &'a str {
    text.lines()
        .find(|l| needles.iter().all(|n| l.contains(n)))
        .unwrap_or_else(|| panic!("no line with {needles:?} in:\n{text}"))
}

#[test]
fn doctor_and_ping_on_the_example_rete() {
    let d = Demo::with_ca();
    let (mgmt_udp, alpha_udp, beta_udp) = (free_udp().port(), free_udp().port(), free_udp().port());
    let [read, _, _, _] = free_management_ports(&d);
    let (wiki, echo) = (free_tcp(), free_tcp());
    for (from, to) in [
        ("127.0.0.1:7443", mgmt_udp),
        ("127.0.0.2:7443", alpha_udp),
        ("127.0.0.3:7443", beta_udp),
    ] {
        d.edit(
            "nodes.yaml",
            &format!("listen: {from}"),
            &format!("listen: 127.0.0.1:{to}"),
        );
    }
    for (from, to) in [("127.0.0.2:8080", wiki), ("127.0.0.3:9000", echo)] {
        d.edit(
            "services.yaml",
            &format!("upstream: {from}"),
            &format!("upstream: 127.0.0.1:{to}"),
        );
    }
    // The wiki's upstream accepts; tcp-echo's (port `echo`) stays closed: "upstream down".
    let wiki_server = TcpListener::bind(("127.0.0.1", wiki)).unwrap();
    std::thread::spawn(move || for _ in wiki_server.incoming() {});

    let tmp = d.tmp.path();
    let tree = tmp.join("out");
    d.compile_all(&tree);
    let bundle = |n: &str| tmp.join(format!("{n}.bundle.json"));
    let mut hosts: Vec<Host> = ["mgmt01", "alpha", "beta", "laptop"]
        .into_iter()
        .map(|name| {
            d.issue_bundle(name, None, &bundle(name));
            Host {
                name,
                home: tmp.join(format!("{name}-home")),
                agent: None,
            }
        })
        .collect();

    // mgmt01's bootstrap (its agent runs the config-server), version 1 published as olga.
    hosts[0].enroll(&bundle("mgmt01"), &tree);
    hosts[0].start();
    role_pid(&hosts[0].home, "config-server", None);
    let laptop_b: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle("laptop")).unwrap()).unwrap();
    let olga = laptop_b["principals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "spiffe://demo.flor/user/olga")
        .unwrap();
    std::fs::write(tmp.join("olga.crt"), olga["cert_pem"].as_str().unwrap()).unwrap();
    std::fs::write(tmp.join("olga.key"), olga["key_pem"].as_str().unwrap()).unwrap();
    let ca = d.repo.join("certs/ca.crt");
    let o = retectl(&[
        "publish",
        tree.to_str().unwrap(),
        "--as",
        tmp.join("olga.crt").to_str().unwrap(),
        "--ca",
        ca.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", out(&o));

    for h in &mut hosts[1..] {
        h.enroll(&bundle(h.name), &tree);
        h.start();
    }
    let laptop = &hosts[3];

    // Healthy: every check passes, with round-trip times.
    let (ok, text) = laptop.doctor();
    assert!(ok, "doctor on a healthy laptop:\n{text}");
    assert!(!text.contains("FAIL"), "{text}");
    line_with(
        &text,
        &[
            "ok",
            "config",
            "spiffe://demo.flor/service/config",
            "answered over Florete in",
        ],
    );
    line_with(
        &text,
        &[
            "ok",
            "route",
            "spiffe://demo.flor/service/beta/tcp-echo",
            "handshake in",
        ],
    );
    line_with(&text, &["ok", "home", "retes/demo.flor"]);
    line_with(&text, &["ok", "artifact", "v1"]);
    line_with(&text, &["ok", "clock"]);
    // Issued for 365 days: 365 full days left within the same second, 364 after.
    let bob = line_with(&text, &["ok", "cert", "spiffe://demo.flor/user/bob"]);
    assert!(
        bob.contains("expires in 364 days") || bob.contains("expires in 365 days"),
        "{bob}"
    );
    let json = laptop.run(&["doctor", "--json"]);
    assert!(json.status.success(), "{}", out(&json));
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert!(v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["check"] == "route" && c["rtt_us"].as_u64().is_some()));

    // ping: the verdicts the rete's roles give bob and carol.
    let (ok, p) = laptop.ping("wiki.demo.flor.rete", "bob");
    assert!(ok, "{p}");
    assert!(
        p.contains("as spiffe://demo.flor/user/bob: allowed; handshake"),
        "{p}"
    );
    assert!(p.contains("flow verdict"), "{p}");
    let (ok, p) = laptop.ping("wiki.demo.flor.rete", "carol");
    assert!(!ok);
    assert!(
        p.contains("as spiffe://demo.flor/user/carol: denied"),
        "{p}"
    );
    let (ok, p) = laptop.ping("nosuch.demo.flor.rete", "bob");
    assert!(!ok);
    assert!(p.contains(": unknown (this node has no route to it"), "{p}");
    let (ok, p) = laptop.ping("tcp-echo.beta.demo.flor.rete", "user/carol");
    assert!(!ok);
    assert!(p.contains("upstream down"), "{p}");
    let (ok, p) = laptop.ping("wiki.demo.flor.rete", "mallory");
    assert!(!ok);
    assert!(
        p.contains("--as mallory: this node holds no such principal"),
        "{p}"
    );

    // On mgmt01, doctor sees the roles its agent runs.
    let (ok, text) = hosts[0].doctor();
    assert!(ok, "doctor on mgmt01:\n{text}");
    line_with(
        &text,
        &[
            "ok",
            "role",
            "config-server accepts on",
            &format!("127.0.0.1:{read}"),
        ],
    );
    line_with(&text, &["ok", "role", "metrics-server accepts on"]);

    // mgmt01 stopped (agent, vertex and config-server): the config check
    // fails and says where to look; restarted, it serves the same store again.
    hosts[0].agent.as_mut().unwrap().kill9();
    let laptop = &hosts[3];
    let (ok, text) = laptop.doctor();
    assert!(!ok, "{text}");
    line_with(
        &text,
        &["FAIL", "config", "spiffe://demo.flor/service/config"],
    );
    assert!(text.contains("fix: on the management node"), "{text}");
    hosts[0].start();
    let laptop = &hosts[3];
    let deadline = Instant::now() + Duration::from_secs(20);
    while !laptop.doctor().0 {
        assert!(Instant::now() < deadline, "{}", laptop.doctor().1);
        std::thread::sleep(Duration::from_millis(200));
    }

    // beta stopped: the route to its tcp-echo fails; the rest still passes.
    hosts[2].agent.as_mut().unwrap().kill9();
    let laptop = &hosts[3];
    let (ok, text) = laptop.doctor();
    assert!(!ok, "{text}");
    line_with(
        &text,
        &[
            "FAIL",
            "route",
            "spiffe://demo.flor/service/beta/tcp-echo",
            &beta_udp.to_string(),
        ],
    );
    line_with(&text, &["ok", "config"]);

    // Certificates for 5 days, enrolled under the running agent.
    let short = tmp.join("laptop-short.bundle.json");
    d.ok(&[
        "issue-bundle",
        d.repo_s(),
        "--node",
        "laptop",
        "--days",
        "5",
        "--out",
        short.to_str().unwrap(),
    ]);
    laptop.enroll(&short, &tree);
    let (ok, text) = laptop.doctor();
    assert!(!ok, "{text}");
    // Issued a moment ago for 5 days: 5 whole days left, or 4 once a second passed.
    let five =
        |l: &str, unit: &str| l.contains(&format!("4 {unit}")) || l.contains(&format!("5 {unit}"));
    let l = line_with(
        &text,
        &["FAIL", "cert", "spiffe://demo.flor/user/bob", "expires in"],
    );
    assert!(five(l, "days ("), "{l}");
    assert!(
        text.contains("retectl issue-bundle --node laptop"),
        "{text}"
    );
    let status = out(&laptop.run(&["agent", "status"]));
    let l = line_with(
        &status,
        &["spiffe://demo.flor/user/bob", "days left", "RENEW SOON"],
    );
    assert!(five(l, "days left"), "{l}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !laptop
        .log()
        .lines()
        .any(|l| l.contains("certificate of spiffe://demo.flor/user/bob: ") && five(l, "days left"))
    {
        assert!(
            Instant::now() < deadline,
            "no expiry warning:\n{}",
            laptop.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // The operator's side: enrollment.log holds the 5-day certificates.
    let o = retectl(&["certs", d.repo_s(), "--expiring", "30d"]);
    assert!(!o.status.success(), "{}", out(&o));
    let o = out(&o);
    let l = line_with(
        &o,
        &[
            "spiffe://demo.flor/user/bob",
            "expires in",
            "within the window",
        ],
    );
    assert!(five(l, "days ("), "{l}");
    let o = retectl(&["validate", d.repo_s()]);
    assert!(o.status.success(), "{}", out(&o));
    let o = out(&o);
    line_with(
        &o,
        &[
            "warning: enrollment.log: spiffe://demo.flor/user/bob",
            "expires within 30 days",
        ],
    );
}
