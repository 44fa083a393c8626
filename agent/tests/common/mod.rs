//! Test fixtures shared by the process-level tests: a throwaway rete (CA,
//! management signer), node homes laid out exactly as `flor enroll` lays out a
//! scope, signed artifacts, and real `flor` processes that die with the test.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ed25519_compact::{KeyPair, Seed};
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyUsagePurpose,
    SanType,
};
use serde_json::{json, Value};

/// The `flor` binary under test.
pub fn flor_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_flor"))
}

/// A command that runs the `flor` under test (or `FLOR_TEST_EXE` under
/// `FLOR_TEST_RUNNER`, as ci/cross.sh sets them: [`testkit::flor_command`]).
pub fn flor_command() -> Command {
    testkit::flor_command(&flor_bin())
}

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "flor-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub use testkit::{free_tcp, free_udp};

/// A certificate authority for tests: the rete CA, or a rogue one.
pub struct Ca {
    pub pem: String,
    issuer: Issuer<'static, rcgen::KeyPair>,
}

impl Ca {
    pub fn new(cn: &str) -> Ca {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// An X.509-SVID for `id` (one URI SAN), as (cert PEM, PKCS#8 key PEM).
    pub fn issue(&self, id: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        (self.issue_for(id, &key), key.serialize_pem())
    }

    /// An X.509-SVID for `id` over an existing public key (Flow B: the key stays on the device).
    pub fn issue_for(&self, id: &str, key: &impl rcgen::PublicKeyData) -> String {
        svid_params(id).signed_by(key, &self.issuer).unwrap().pem()
    }

    /// An X.509-SVID for `id` valid only from `from` to `to` (year, month,
    /// day): an expired or a not-yet-valid certificate from this very CA.
    pub fn issue_between(
        &self,
        id: &str,
        from: (i32, u8, u8),
        to: (i32, u8, u8),
    ) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = svid_params(id);
        params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
        params.not_after = rcgen::date_time_ymd(to.0, to.1, to.2);
        let pem = params.signed_by(&key, &self.issuer).unwrap().pem();
        (pem, key.serialize_pem())
    }
}

fn svid_params(id: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![SanType::URI(id.try_into().unwrap())];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params
}

impl Ca {}

/// A throwaway rete: trust domain, CA, management signer.
pub struct Rete {
    pub td: String,
    pub ca: Ca,
    pub mgmt: KeyPair,
    pub dir: TempDir,
}

impl Rete {
    /// Node `laptop` holding `user/alice`, with her SOCKS5 listener and one
    /// route (`service` at `udp`), its vertex started; the node (which owns the
    /// process) and its status.
    pub fn alice_laptop(&self, service: &str, udp: SocketAddr) -> (Node, Value) {
        let mut laptop = self.node("laptop");
        let p = vec![laptop.hold(self, "user/alice")];
        let payload = vertex_payload(
            &self.td,
            "laptop",
            None,
            p,
            vec![],
            vec![],
            vec![(self.id(service), udp)],
            vec![(self.id("user/alice"), free_tcp())],
        );
        laptop.install_vertex(&self.seal("vertex", "laptop", 1, &payload));
        let status = laptop.start_vertex();
        (laptop, status)
    }

    pub fn new(td: &str) -> Rete {
        Rete {
            td: td.into(),
            ca: Ca::new(&format!("{td} CA")),
            mgmt: KeyPair::from_seed(Seed::generate()),
            dir: TempDir::new("rete"),
        }
    }

    pub fn id(&self, path: &str) -> String {
        format!("spiffe://{}/{path}", self.td)
    }

    pub fn signer(&self) -> Value {
        let hex: String = self.mgmt.pk.iter().map(|b| format!("{b:02x}")).collect();
        json!({"id": self.id("management-plane/primary"), "key": hex})
    }

    /// Seals a payload for `node` with the rete's management key.
    pub fn seal(&self, kind: &str, node: &str, version: u32, payload: &Value) -> Vec<u8> {
        let header = json!({
            "kind": kind, "schema": "1.0", "plane": "mgmt", "version": version,
            "rete": self.td, "node": node, "signer": self.id("management-plane/primary"),
            "authorized_mgmt_signers": [self.signer()],
        });
        flor_vertex::envelope::seal(
            &serde_json::to_vec(&header).unwrap(),
            &serde_json::to_vec(payload).unwrap(),
            &self.mgmt.sk,
        )
    }

    /// A node home (its own `FLOR_HOME`) with the scope laid out as `flor enroll` does.
    pub fn node(&self, name: &str) -> Node {
        let home = TempDir::new(&format!("node-{name}"));
        let scope = home.0.join("retes").join(&self.td);
        std::fs::create_dir_all(&scope).unwrap();
        std::fs::write(scope.join("ca.crt"), &self.ca.pem).unwrap();
        let node = Node {
            name: name.into(),
            td: self.td.clone(),
            scope,
            home,
            children: Vec::new(),
            env: Vec::new(),
        };
        node.write_scope(0, &self.signer());
        node
    }
}

/// A running child process, killed when dropped.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One node's home.
pub struct Node {
    pub name: String,
    pub td: String,
    pub scope: PathBuf,
    pub home: TempDir,
    pub children: Vec<ChildGuard>,
    /// Extra environment for this node's processes (e.g. `JOURNAL_STREAM`).
    pub env: Vec<(String, String)>,
}

impl Node {
    pub fn runtime(&self) -> PathBuf {
        self.home.0.join("run")
    }

    pub fn write_scope(&self, port_offset: u16, signer: &Value) {
        let info = json!({
            "rete": self.td, "node": self.name, "port_offset": port_offset,
            "mgmt_signers": [signer],
            "config_server": {"service": format!("spiffe://{}/service/config", self.td), "addr": "127.0.0.1:9"},
            "mirror_url": null,
        });
        std::fs::write(
            self.scope.join("scope.json"),
            serde_json::to_vec(&info).unwrap(),
        )
        .unwrap();
    }

    /// Installs a principal's cert and key where the artifact will point.
    pub fn hold(&self, rete: &Rete, path: &str) -> Value {
        let (cert, key) = rete.ca.issue(&rete.id(path));
        self.hold_pem(path, &cert, &key)
    }

    pub fn hold_pem(&self, path: &str, cert: &str, key: &str) -> Value {
        let c = format!("certs/{path}.crt");
        let k = format!("keys/{path}.key");
        for (rel, body) in [(&c, cert), (&k, key)] {
            let p = self.scope.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, body).unwrap();
        }
        json!({"id": format!("spiffe://{}/{path}", self.td), "cert": c, "key": k})
    }

    pub fn install_vertex(&self, bytes: &[u8]) {
        let p = self.scope.join("mgmt/vertices/flor.json");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }

    pub fn command(&self) -> Command {
        let mut c = flor_command();
        c.env("FLOR_HOME", &self.home.0)
            .env("FLOR_RUNTIME_DIR", self.runtime())
            .env("RUST_LOG", "info");
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    pub fn status_path(&self) -> PathBuf {
        self.runtime()
            .join(&self.td)
            .join("vertices/flor.status.json")
    }

    /// Starts `flor vertex run` and waits for its status file (ready).
    pub fn start_vertex(&mut self) -> Value {
        let _ = std::fs::remove_file(self.status_path());
        let log = std::fs::File::create(self.home.0.join("vertex.log")).unwrap();
        let child = self
            .command()
            .args(["vertex", "run", "--rete", &self.td])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children.push(ChildGuard(child));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(bytes) = std::fs::read(self.status_path()) {
                if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
                    return v;
                }
            }
            if let Some(status) = self.children.last_mut().unwrap().0.try_wait().unwrap() {
                panic!("vertex exited with {status}: {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "vertex not ready in 20 s: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.home.0.join("vertex.log")).unwrap_or_default()
    }
}

/// The actual SOCKS5 port the vertex bound for `principal` (from its status file).
pub fn socks_port(status: &Value, principal: &str) -> u16 {
    status["socks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["principal"] == principal)
        .unwrap_or_else(|| panic!("no SOCKS5 listener for {principal} in {status}"))["actual"]
        .as_u64()
        .unwrap() as u16
}

/// A raw SOCKS5 CONNECT; returns the reply code and, if it succeeded, the stream.
pub fn socks_connect(port: u16, host: &str, dport: u16) -> (u8, Option<TcpStream>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(&[5, 1, 0]).unwrap();
    let mut m = [0u8; 2];
    s.read_exact(&mut m).unwrap();
    assert_eq!(m, [5, 0], "no-auth method accepted");
    let mut req = vec![5, 1, 0, 3, host.len() as u8];
    req.extend_from_slice(host.as_bytes());
    req.extend_from_slice(&dport.to_be_bytes());
    s.write_all(&req).unwrap();
    let mut r = [0u8; 10];
    s.read_exact(&mut r).unwrap();
    assert_eq!(r[0], 5);
    if r[1] == 0 {
        (0, Some(s))
    } else {
        (r[1], None)
    }
}

/// Writes the artifact payload of a vertex.
#[allow(clippy::too_many_arguments)]
pub fn vertex_payload(
    td: &str,
    node: &str,
    listen: Option<SocketAddr>,
    principals: Vec<Value>,
    services: Vec<(String, u16)>,
    acl: Vec<(String, Vec<u8>)>,
    routes: Vec<(String, SocketAddr)>,
    socks: Vec<(String, u16)>,
) -> Value {
    let mut acl = acl;
    acl.sort();
    json!({
        "rete": td, "node": node, "name": "flor", "ca": "ca.crt",
        "listen": listen.map(|a| a.to_string()),
        "idle_timeout_s": 30,
        "principals": principals,
        "services": services.iter().map(|(id, port)| json!({"id": id, "upstream": format!("127.0.0.1:{port}")})).collect::<Vec<_>>(),
        "acl": acl.iter().map(|(c, s)| json!({"caller": c, "services": s})).collect::<Vec<_>>(),
        "routes": routes.iter().map(|(t, a)| json!({"target": t, "addr": a.to_string()})).collect::<Vec<_>>(),
        "socks": socks.iter().map(|(p, port)| json!({"principal": p, "port": port})).collect::<Vec<_>>(),
    })
}

/// A real TCP echo upstream on loopback; returns its port.
pub fn start_echo() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let mut r = s.try_clone().unwrap();
                let _ = std::io::copy(&mut r, &mut s);
            });
        }
    });
    port
}

/// Waits until something accepts TCP on `port`.
pub fn wait_tcp(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}
