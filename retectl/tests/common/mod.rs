//! Shared helpers: run the real `retectl` binary on copies of the example.

#![allow(dead_code)]

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::Group;

/// The example repo in the source tree.
pub fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/my-rete")
}

/// Runs `retectl args…`.
pub fn retectl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_retectl"))
        .args(args)
        .env_remove("RETECTL_KEYS")
        .output()
        .expect("run retectl")
}

/// stdout and stderr as text.
pub fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Copies a directory tree.
pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            fs::copy(e.path(), dst).unwrap();
        }
    }
}

/// A temp dir holding `repo/` (a copy of the example) and `keys/` (outside the repo).
pub struct Demo {
    /// Keeps the directory alive.
    pub tmp: tempfile::TempDir,
    /// The repo copy.
    pub repo: PathBuf,
    /// The key dir.
    pub keys: PathBuf,
}

impl Demo {
    /// A copy of the example, YAML only.
    pub fn new() -> Demo {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        copy_dir(&example(), &repo);
        let keys = tmp.path().join("keys");
        Demo { tmp, repo, keys }
    }

    /// A copy of the example with the CA and the `primary` signer issued.
    pub fn with_ca() -> Demo {
        let d = Demo::new();
        d.ok(&["ca", "init", d.repo_s()]);
        d.ok(&[
            "ca",
            "sign",
            d.repo_s(),
            "--kind",
            "management-plane",
            "--name",
            "primary",
        ]);
        d
    }

    /// The repo path as text.
    pub fn repo_s(&self) -> &str {
        self.repo.to_str().unwrap()
    }

    /// Runs retectl with `--keys` appended; returns the output.
    pub fn run(&self, args: &[&str]) -> Output {
        let mut a: Vec<&str> = args.to_vec();
        if matches!(
            args.first(),
            Some(&"ca") | Some(&"compile") | Some(&"issue-bundle")
        ) {
            a.push("--keys");
            a.push(self.keys.to_str().unwrap());
        }
        retectl(&a)
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        let (out, err) = text(&o);
        assert!(
            o.status.success(),
            "retectl {args:?} failed:\nstdout:\n{out}\nstderr:\n{err}"
        );
        out
    }

    /// `retectl issue-bundle` for `node` (Flow B with `csr`), written to `out`; asserts success.
    /// `retectl compile <repo> --all --out <out>`; what it printed.
    pub fn compile_all(&self, out: &Path) -> String {
        self.ok(&[
            "compile",
            self.repo_s(),
            "--all",
            "--out",
            out.to_str().unwrap(),
        ])
    }

    /// Issues `node`'s bundle into `dir` and enrolls it with `flor enroll
    /// --from <out>` into `<dir>/<node>-home`, which it returns.
    pub fn enroll_from(&self, node: &str, dir: &Path, out: &Path) -> PathBuf {
        let bundle = dir.join(format!("{node}.bundle.json"));
        self.issue_bundle(node, None, &bundle);
        let home = dir.join(format!("{node}-home"));
        let o = flor(&home)
            .args([
                "enroll",
                bundle.to_str().unwrap(),
                "--from",
                out.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(o.status.success(), "{node}: {}", self::out(&o));
        home
    }

    pub fn issue_bundle(&self, node: &str, csr: Option<&Path>, out: &Path) -> String {
        let mut args = vec!["issue-bundle", self.repo_s(), "--node", node];
        if let Some(csr) = csr {
            args.extend(["--csr", csr.to_str().unwrap()]);
        }
        args.extend(["--out", out.to_str().unwrap()]);
        self.ok(&args)
    }

    /// Reads a repo file.
    pub fn read(&self, file: &str) -> String {
        fs::read_to_string(self.repo.join(file)).unwrap()
    }

    /// Replaces `from` with `to` in a repo file (which must contain it).
    pub fn edit(&self, file: &str, from: &str, to: &str) {
        let t = self.read(file);
        assert!(t.contains(from), "{file} does not contain {from:?}");
        fs::write(self.repo.join(file), t.replacen(from, to, 1)).unwrap();
    }

    /// The 1-based line of the first occurrence of `needle` in a repo file.
    pub fn line_of(&self, file: &str, needle: &str) -> usize {
        self.read(file)
            .lines()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle:?} not in {file}"))
            + 1
    }
}

/// Every file under `dir`, recursively.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// This workspace's `flor` with its own home and runtime directory, logging at info.
pub fn flor(home: &Path) -> Command {
    let mut c = Command::new(testkit::workspace_flor(env!("CARGO_MANIFEST_DIR")));
    c.env("FLOR_HOME", home)
        .env("FLOR_RUNTIME_DIR", home.join("run"))
        .env("RUST_LOG", "info");
    c
}

/// stdout then stderr, as one text.
pub fn out(o: &Output) -> String {
    let (a, b) = text(o);
    format!("{a}{b}")
}

/// Moves the example's four management services (examples/my-rete:
/// config 7080, config-publish 7081, metrics-push 9101, metrics 9100) to free
/// loopback ports, so the config-server and the metrics collector that
/// mgmt01's agent starts behind them never meet another test's. Returns them
/// in that order.
pub fn free_management_ports(d: &Demo) -> [u16; 4] {
    let ports = [
        testkit::free_tcp(),
        testkit::free_tcp(),
        testkit::free_tcp(),
        testkit::free_tcp(),
    ];
    for (from, to) in ["7080", "7081", "9101", "9100"].iter().zip(ports) {
        d.edit(
            "services.yaml",
            &format!("upstream: 127.0.0.1:{from}"),
            &format!("upstream: 127.0.0.1:{to}"),
        );
    }
    ports
}

/// Where mgmt01's agent keeps the config-server's store: `<install>/config-store`.
pub fn config_store(home: &Path) -> PathBuf {
    home.join("retes/demo.flor/config-store")
}

/// `flor agent status --json` of the scope `demo.flor` of `home`, if the agent answers.
pub fn status_json(home: &Path) -> Option<serde_json::Value> {
    let o = flor(home)
        .args(["agent", "status", "--rete", "demo.flor", "--json"])
        .output()
        .ok()?;
    if !o.status.success() {
        return None;
    }
    serde_json::from_slice(&o.stdout).ok()
}

/// Waits until the agent of `home` reports `role` running with a pid other
/// than `not`; returns the pid.
pub fn role_pid(home: &Path, role: &str, not: Option<u64>) -> u64 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let pid = status_json(home).and_then(|s| {
            s["roles"]
                .as_array()?
                .iter()
                .find(|r| r["role"] == role && r["state"] == "running")?["pid"]
                .as_u64()
        });
        match pid {
            Some(p) if Some(p) != not => return p,
            _ => {}
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{role} is not running under the agent of {}: {:?}",
            home.display(),
            status_json(home)
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Starts `flor args` in its own process group, its log in `<home>/<log>`.
pub fn spawn(home: &Path, args: &[&str], log: &str) -> Group {
    std::fs::create_dir_all(home).unwrap();
    let log = std::fs::File::create(home.join(log)).unwrap();
    Group(
        flor(home)
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap(),
    )
}

/// `flor agent status --json`, once the vertex is healthy.
pub fn healthy(home: &Path) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let o = flor(home)
            .args(["agent", "status", "--rete", "demo.flor", "--json"])
            .output()
            .unwrap();
        if o.status.success() {
            let s: Value = serde_json::from_slice(&o.stdout).unwrap();
            if s["vertex"]["health"] == "healthy" && s["listeners"].is_array() {
                return s;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} not healthy: {}",
            home.display(),
            std::fs::read_to_string(home.join("agent.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The bound SOCKS5 port of `principal` in a status.
pub fn socks_port(status: &Value, principal: &str) -> u16 {
    status["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["principal"] == principal)
        .unwrap_or_else(|| panic!("no SOCKS5 listener for {principal}: {status}"))["actual"]
        .as_u64()
        .unwrap() as u16
}

/// A SOCKS5 CONNECT to `host:80`: the reply code and, when it succeeded, the stream.
pub fn socks_connect(port: u16, host: &str) -> (u8, Option<TcpStream>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(&[5, 1, 0]).unwrap();
    let mut m = [0u8; 2];
    s.read_exact(&mut m).unwrap();
    let mut req = vec![5, 1, 0, 3, host.len() as u8];
    req.extend_from_slice(host.as_bytes());
    req.extend_from_slice(&80u16.to_be_bytes());
    s.write_all(&req).unwrap();
    let mut reply = [0u8; 10];
    s.read_exact(&mut reply).unwrap();
    (reply[1], (reply[1] == 0).then_some(s))
}

/// The PEM certificate and key of `id` (e.g. `node/alpha`) in a Flow A bundle.
pub fn bundle_credentials(bundle: &Path, id: &str) -> (String, String) {
    let b: Value = serde_json::from_slice(&fs::read(bundle).unwrap()).unwrap();
    let p = b["principals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == format!("spiffe://demo.flor/{id}"))
        .unwrap_or_else(|| panic!("no {id} in {}", bundle.display()));
    (
        p["cert_pem"].as_str().unwrap().to_string(),
        p["key_pem"].as_str().unwrap().to_string(),
    )
}

/// One HTTP request over Florete, as `id` from `bundle`, to `service` at the
/// vertex on `addr` (what an agent or `retectl publish` does): (status, body).
pub fn http_as(
    ca: &Path,
    bundle: &Path,
    id: &str,
    service: &str,
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
) -> (u16, Vec<u8>) {
    use flor_vertex::identity::{Dialable, SpiffeId};
    use flor_vertex::net::{read_response, Credentials, Dialer};
    use smol::io::AsyncWriteExt;
    let (cert, key) = bundle_credentials(bundle, id);
    let me = SpiffeId::parse(&format!("spiffe://demo.flor/{id}")).unwrap();
    let creds =
        std::sync::Arc::new(Credentials::from_pem(me, cert.as_bytes(), key.as_bytes()).unwrap());
    let target =
        Dialable::new(SpiffeId::parse(&format!("spiffe://demo.flor/service/{service}")).unwrap())
            .unwrap();
    flor_vertex::net::block_on(async {
        let dialer = Dialer::new(&fs::read(ca).unwrap()).unwrap();
        let mut flow = dialer.connect(&creds, &target, addr).await.unwrap();
        let mut head = [0u8; 512];
        let n =
            flor_vertex::http::write_request(method, service, path, Some(0), &mut head).unwrap();
        flow.write_all(&head[..n]).await.unwrap();
        flow.flush().await.unwrap();
        read_response(&mut flow, 1024 * 1024).await.unwrap()
    })
}
