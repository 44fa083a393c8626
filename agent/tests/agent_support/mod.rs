//! Fixtures for the agent's process tests: a config-server with a store, a
//! publisher (curl), bundles, and `flor agent run` processes whose whole
//! process group (agent and vertex) dies with the test.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;

/// A running process group (the agent and its vertex), killed when dropped.
pub use testkit::Group;

fn flor_cmd(home: &Path) -> Command {
    let mut c = flor_command();
    c.env("FLOR_HOME", home)
        .env("FLOR_RUNTIME_DIR", home.join("run"))
        .env("RUST_LOG", "info");
    c
}

/// Runs `flor <args>` for the host whose `FLOR_HOME` is `home`.
pub fn flor(home: &Path, args: &[&str]) -> Output {
    flor_cmd(home).args(args).output().unwrap()
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A rete with a running config-server.
pub struct Pilot {
    pub rete: Rete,
    pub mgmt: Node,
    pub store: TempDir,
    pub read: u16,
    pub publish: u16,
    pub cs: Option<Group>,
}

impl Pilot {
    pub fn new(td: &str) -> Pilot {
        let rete = Rete::new(td);
        let mgmt = rete.node("mgmt01");
        let store = TempDir::new("store");
        let mut p = Pilot {
            rete,
            mgmt,
            store,
            read: free_tcp(),
            publish: free_tcp(),
            cs: None,
        };
        p.start_config_server();
        p
    }

    pub fn start_config_server(&mut self) {
        let log_path = self
            .store
            .0
            .join("../cs.log")
            .with_file_name(format!("cs-{}.log", self.read));
        let log = std::fs::File::create(&log_path).unwrap();
        let child = flor_cmd(&self.mgmt.home.0)
            .args([
                "config-server",
                "--rete",
                &self.rete.td,
                "--read-listen",
                &format!("127.0.0.1:{}", self.read),
                "--publish-listen",
                &format!("127.0.0.1:{}", self.publish),
                "--store",
                path_str(&self.store.0),
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap();
        let mut cs = Group(child);
        // A config-server that exits (its port taken, a bad flag) says why in
        // its log: show that instead of only "nothing listens".
        let deadline = Instant::now() + Duration::from_secs(20);
        for port in [self.read, self.publish] {
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                if let Ok(Some(status)) = cs.0.try_wait() {
                    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                    panic!(
                        "the config-server exited ({status}) before listening on {port}:\n{log}"
                    );
                }
                assert!(
                    Instant::now() < deadline,
                    "nothing listens on {port} after 20 s"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.cs = Some(cs);
    }

    pub fn stop_config_server(&mut self) {
        self.cs = None;
    }

    pub fn mirror(&self) -> String {
        format!("http://127.0.0.1:{}/", self.read)
    }

    /// `<node>/mgmt/agent.json` payload.
    pub fn agent_payload(&self, node: &str, poll_s: u32) -> Value {
        json!({
            "rete": self.rete.td, "node": node, "ca": "ca.crt",
            "identity": {"id": self.rete.id(&format!("node/{node}")),
                         "cert": format!("certs/node/{node}.crt"), "key": format!("keys/node/{node}.key")},
            "config_server": {"service": self.rete.id("service/config"), "addr": "127.0.0.1:9"},
            "poll_interval_s": poll_s, "commit_timeout_s": 300,
            "vertices": [{"name": "flor", "artifact": "mgmt/vertices/flor.json"}],
        })
    }

    /// The publish body for one node at `version`.
    pub fn tree(&self, node: &str, version: u32, agent: &Value, vertex: &Value) -> Vec<Vec<u8>> {
        vec![
            self.rete.seal("agent", node, version, agent),
            self.rete.seal("vertex", node, version, vertex),
        ]
    }

    /// POSTs a tree with curl; returns (HTTP status, body).
    pub fn publish_files(&self, files: &[(String, Vec<u8>)]) -> (u16, String) {
        let mut body = flor_vertex::http::tree::MAGIC.to_vec();
        for (path, bytes) in files {
            flor_vertex::http::tree::push_file(&mut body, path, bytes);
        }
        body.extend_from_slice(flor_vertex::http::tree::END);
        let f = self.store.0.with_extension(format!("body-{}", files.len()));
        std::fs::write(&f, &body).unwrap();
        let out = Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "20",
                "-w",
                "\n%{http_code}",
                "--data-binary",
                &format!("@{}", f.display()),
                &format!("http://127.0.0.1:{}/publish", self.publish),
            ])
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&f);
        let s = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = s.rsplit_once('\n').unwrap();
        (code.trim().parse().unwrap(), body.to_string())
    }

    pub fn publish(
        &self,
        node: &str,
        version: u32,
        agent: &Value,
        vertex: &Value,
    ) -> (u16, String) {
        let t = self.tree(node, version, agent, vertex);
        self.publish_files(&[
            (format!("{node}/mgmt/agent.json"), t[0].clone()),
            (format!("{node}/mgmt/vertices/flor.json"), t[1].clone()),
        ])
    }

    /// Writes `node`'s artifacts at `version` into a compiled-tree directory
    /// (`<dir>/<node>/mgmt/...`, what `flor enroll --from <dir>` reads) and
    /// returns them as publish files.
    pub fn write_tree(
        &self,
        dir: &Path,
        node: &str,
        version: u32,
        agent: &Value,
        vertex: &Value,
    ) -> Vec<(String, Vec<u8>)> {
        let t = self.tree(node, version, agent, vertex);
        let mut files = vec![];
        for (rel, bytes) in [
            ("mgmt/agent.json", &t[0]),
            ("mgmt/vertices/flor.json", &t[1]),
        ] {
            let path = dir.join(node).join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, bytes).unwrap();
            files.push((format!("{node}/{rel}"), bytes.clone()));
        }
        files
    }

    /// The stored copy of a node's artifact on the config-server.
    pub fn stored(&self, node: &str, rel: &str) -> PathBuf {
        self.store.0.join("tree").join(node).join(rel)
    }

    /// A Flow A bundle for `node` holding `principals` (paths like `service/echo`).
    pub fn bundle(&self, node: &str, principals: &[&str], dir: &Path) -> PathBuf {
        self.bundle_via(
            node,
            principals,
            dir,
            Some(self.mirror()),
            "127.0.0.1:9".parse().unwrap(),
        )
    }

    /// A Flow A bundle naming a mirror (or none) and the config service's vertex address.
    pub fn bundle_via(
        &self,
        node: &str,
        principals: &[&str],
        dir: &Path,
        mirror: Option<String>,
        config_addr: SocketAddr,
    ) -> PathBuf {
        let mut ps = vec![];
        for p in
            std::iter::once(format!("node/{node}")).chain(principals.iter().map(|s| s.to_string()))
        {
            let (cert, key) = self.rete.ca.issue(&self.rete.id(&p));
            ps.push(json!({"id": self.rete.id(&p), "cert_pem": cert, "key_pem": key}));
        }
        let b = json!({
            "format": "florete-bundle/1", "rete": self.rete.td, "node": node,
            "ca_pem": self.rete.ca.pem, "principals": ps,
            "mgmt_signers": [self.rete.signer()],
            "config_server": {"service": self.rete.id("service/config"), "addr": config_addr.to_string()},
            "mirror_url": mirror,
        });
        let f = dir.join(format!("{node}.{}.bundle.json", self.rete.td));
        std::fs::write(&f, serde_json::to_vec_pretty(&b).unwrap()).unwrap();
        f
    }

    /// Principal entry of a vertex payload for something `enroll` installed.
    pub fn principal(&self, path: &str) -> Value {
        json!({"id": self.rete.id(path), "cert": format!("certs/{path}.crt"), "key": format!("keys/{path}.key")})
    }
}

/// A host (`FLOR_HOME`) that may enroll in several retes.
pub struct Host {
    pub home: TempDir,
}

impl Host {
    pub fn new(tag: &str) -> Host {
        Host {
            home: TempDir::new(tag),
        }
    }

    pub fn flor(&self, args: &[&str]) -> Output {
        flor(&self.home.0, args)
    }

    pub fn scope(&self, scope: &str) -> PathBuf {
        self.home.0.join("retes").join(scope)
    }

    /// `flor enroll <bundle> --from <compiled tree>`, which must succeed.
    pub fn enroll_from(&self, bundle: &Path, tree: &Path) {
        let o = self.flor(&[
            "enroll",
            bundle.to_str().unwrap(),
            "--from",
            tree.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "enroll: {}", text(&o));
    }

    /// Starts `flor agent run --rete <scope>` in its own process group.
    pub fn start_agent(&self, scope: &str) -> Group {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(scope))
            .unwrap();
        let child = flor_cmd(&self.home.0)
            .args(["agent", "run", "--rete", scope])
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap();
        Group(child)
    }

    pub fn log_path(&self, scope: &str) -> PathBuf {
        self.home.0.join(format!("agent-{scope}.log"))
    }

    pub fn log(&self, scope: &str) -> String {
        std::fs::read_to_string(self.log_path(scope)).unwrap_or_default()
    }

    pub fn status(&self, scope: &str) -> Option<Value> {
        let o = self.flor(&["agent", "status", "--rete", scope, "--json"]);
        if !o.status.success() {
            return None;
        }
        serde_json::from_slice(&o.stdout).ok()
    }

    /// Waits until `pred(status)` holds, or fails the test after `secs`.
    pub fn wait_status(
        &self,
        scope: &str,
        secs: u64,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut last = None;
        loop {
            if let Some(s) = self.status(scope) {
                if pred(&s) {
                    return s;
                }
                last = Some(s);
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {secs} s; last status {last:?}\nagent log:\n{}",
                self.log(scope)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn wait_healthy(&self, scope: &str, version: u64) -> Value {
        self.wait_status(scope, 30, "vertex healthy", |s| {
            s["vertex"]["health"] == "healthy"
                && s["version"] == version
                && s["listeners"].is_array()
        })
    }

    /// Every file under the scope with its bytes (symlinks as their targets), sorted.
    pub fn snapshot(&self, scope: &str) -> Vec<(String, Vec<u8>)> {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                let p = e.path();
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().to_string();
                let meta = std::fs::symlink_metadata(&p).unwrap();
                if meta.file_type().is_symlink() {
                    out.push((
                        rel,
                        std::fs::read_link(&p)
                            .unwrap()
                            .to_string_lossy()
                            .into_owned()
                            .into_bytes(),
                    ));
                } else if meta.is_dir() {
                    walk(root, &p, out);
                } else if meta.file_type().is_file() {
                    out.push((rel, std::fs::read(&p).unwrap()));
                }
            }
        }
        let mut out = vec![];
        let root = self.scope(scope);
        walk(&root, &root, &mut out);
        out.sort();
        out
    }
}

/// Sends `payload` through SOCKS5 `port` to `host:dport` and expects it echoed.
pub fn echo_through(port: u16, host: &str) -> Result<(), u8> {
    let (code, s) = socks_connect(port, host, 7);
    let Some(mut s) = s else { return Err(code) };
    s.write_all(b"ping through florete\n").unwrap();
    let mut got = [0u8; 21];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping through florete\n");
    Ok(())
}

pub fn udp() -> SocketAddr {
    free_udp()
}

/// Node alpha: hosts `echo`, holds user `alice` whose SOCKS5 listener routes
/// to alpha's own vertex, so one node shows the whole path.
pub struct Alpha {
    pub poll_s: u32,
    pub pilot: Pilot,
    pub host: Host,
    pub udp: std::net::SocketAddr,
    pub echo: u16,
    pub socks: u16,
}

impl Alpha {
    pub fn vertex(&self, alice_granted: bool, extra_principal: bool) -> Value {
        let mut principals = vec![
            self.pilot.principal("service/echo"),
            self.pilot.principal("user/alice"),
        ];
        if extra_principal {
            // A principal whose certificate this node never received: the vertex cannot start.
            principals.push(self.pilot.principal("service/ghost"));
        }
        let acl = if alice_granted {
            vec![(self.pilot.rete.id("user/alice"), vec![0u8])]
        } else {
            vec![]
        };
        vertex_payload(
            &self.pilot.rete.td,
            "alpha",
            Some(self.udp),
            principals,
            vec![(self.pilot.rete.id("service/echo"), self.echo)],
            acl,
            vec![(self.pilot.rete.id("service/echo"), self.udp)],
            vec![(self.pilot.rete.id("user/alice"), self.socks)],
        )
    }

    pub fn publish(&self, version: u32, alice_granted: bool, broken: bool) {
        let agent = self.pilot.agent_payload("alpha", self.poll_s);
        let (code, body) = self.pilot.publish(
            "alpha",
            version,
            &agent,
            &self.vertex(alice_granted, broken),
        );
        assert_eq!(code, 200, "publish v{version}: {body}");
        assert!(body.contains(&format!("alpha v{version}")), "{body}");
    }

    pub fn sync(&self, args: &[&str]) -> (bool, String) {
        let mut a = vec!["agent", "sync", "--rete", &self.pilot.rete.td];
        a.extend_from_slice(args);
        let o = self.host.flor(&a);
        (o.status.success(), text(&o))
    }

    pub fn status(&self) -> Value {
        self.host.status(&self.pilot.rete.td).unwrap()
    }

    pub fn traffic(&self) -> Result<(), u8> {
        echo_through(self.socks, &format!("echo.{}.rete", self.pilot.rete.td))
    }

    /// A pilot with a config-server, v1 published, alpha enrolled from its mirror.
    pub fn enrolled(td: &str, poll_s: u32) -> Alpha {
        let pilot = Pilot::new(td);
        let host = Host::new("alpha");
        let a = Alpha {
            poll_s,
            pilot,
            host,
            udp: udp(),
            echo: start_echo(),
            socks: free_tcp(),
        };
        a.publish(1, true, false);
        let bundle = a
            .pilot
            .bundle("alpha", &["service/echo", "user/alice"], &a.host.home.0);
        let o = a.host.flor(&["enroll", bundle.to_str().unwrap()]);
        assert!(o.status.success(), "enroll: {}", text(&o));
        // No service runs for this test home: enroll says so and names what to start.
        assert!(
            text(&o).contains("no flor service runs") && text(&o).contains("flor service run"),
            "{}",
            text(&o)
        );
        a
    }
}

/// A one-node vertex on "laptop": `service/echo` to `echo`, user `me` allowed, SOCKS5 at `socks`.
pub fn one_node_vertex(p: &Pilot, udp: std::net::SocketAddr, echo: u16, socks: u16) -> Value {
    vertex_payload(
        &p.rete.td,
        "laptop",
        Some(udp),
        vec![p.principal("service/echo"), p.principal("user/me")],
        vec![(p.rete.id("service/echo"), echo)],
        vec![(p.rete.id("user/me"), vec![0u8])],
        vec![(p.rete.id("service/echo"), udp)],
        vec![(p.rete.id("user/me"), socks)],
    )
}

/// The actual port of the SOCKS5 listener for `principal` in an agent status (`--json`).
pub fn listener_port(status: &Value, principal: &str) -> u16 {
    status["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["kind"] == "socks5" && l["principal"] == principal)
        .unwrap_or_else(|| panic!("no SOCKS5 listener for {principal} in {status}"))["actual"]
        .as_u64()
        .unwrap() as u16
}

/// A one-node rete published at version 1 and the laptop's bundle for it.
pub struct EchoRete {
    /// Its CA, config-server and publisher.
    pub p: Pilot,
    /// The laptop vertex's QUIC address.
    pub udp: SocketAddr,
    /// The agent payload published.
    pub agent: Value,
    /// The laptop's bundle (service/echo, user/me).
    pub bundle: PathBuf,
}

/// Rete `td` whose laptop vertex serves `echo` to user `me` through SOCKS5 `socks`.
pub fn echo_rete(td: &str, echo: u16, socks: u16, host: &Host) -> EchoRete {
    let p = Pilot::new(td);
    let udp = udp();
    let agent = p.agent_payload("laptop", 3600);
    assert_eq!(
        p.publish("laptop", 1, &agent, &one_node_vertex(&p, udp, echo, socks))
            .0,
        200
    );
    let bundle = p.bundle("laptop", &["service/echo", "user/me"], &host.home.0);
    EchoRete {
        p,
        udp,
        agent,
        bundle,
    }
}
