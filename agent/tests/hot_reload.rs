#![allow(clippy::unwrap_used)] // test fixtures: a failed setup step should abort the test loudly
//! Traffic through change, as a user lives it: a client keeps making requests
//! while the operator publishes, and a long transfer runs across the publish.
//!
//! Node alpha hosts `echo` and holds users alice and bob, each with a SOCKS5
//! port that routes to alpha's own vertex, all run by a real `flor agent run`.
//! A version that only changes permission tables (ACL rows, routes) is applied
//! in place by the running vertex: no flow is dropped, the removed caller is
//! refused at once. A structural change restarts the vertex. And a flor binary
//! replaced on disk under a running agent does not stop it restarting its vertex.

mod agent_support;
mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_support::*;
use common::*;
use serde_json::Value;

const TD: &str = "hot.flor";

/// Alpha with two callers.
struct Node {
    pilot: Pilot,
    host: Host,
    udp: std::net::SocketAddr,
    echo: u16,
    alice: u16,
    bob: u16,
}

/// What a version of alpha's vertex artifact says.
#[derive(Clone, Copy)]
struct V {
    bob_granted: bool,
    route: bool,
    bob_listener: bool,
}

const V1: V = V {
    bob_granted: true,
    route: true,
    bob_listener: true,
};

impl Node {
    fn new() -> Node {
        let n = Node {
            pilot: Pilot::new(TD),
            host: Host::new("hot"),
            udp: udp(),
            echo: start_echo(),
            alice: free_tcp(),
            bob: free_tcp(),
        };
        n.publish(1, V1);
        let bundle = n.pilot.bundle(
            "alpha",
            &["service/echo", "user/alice", "user/bob"],
            &n.host.home.0,
        );
        let o = n.host.flor(&["enroll", bundle.to_str().unwrap()]);
        assert!(o.status.success(), "enroll: {}", text(&o));
        n
    }

    fn publish(&self, version: u32, v: V) {
        let id = |p: &str| self.pilot.rete.id(p);
        let mut acl = vec![(id("user/alice"), vec![0u8])];
        if v.bob_granted {
            acl.push((id("user/bob"), vec![0u8]));
        }
        let mut socks = vec![(id("user/alice"), self.alice)];
        if v.bob_listener {
            socks.push((id("user/bob"), self.bob));
        }
        let vertex = vertex_payload(
            TD,
            "alpha",
            Some(self.udp),
            vec![
                self.pilot.principal("service/echo"),
                self.pilot.principal("user/alice"),
                self.pilot.principal("user/bob"),
            ],
            vec![(id("service/echo"), self.echo)],
            acl,
            if v.route {
                vec![(id("service/echo"), self.udp)]
            } else {
                vec![]
            },
            socks,
        );
        let agent = self.pilot.agent_payload("alpha", 3600);
        let (code, body) = self.pilot.publish("alpha", version, &agent, &vertex);
        assert_eq!(code, 200, "publish v{version}: {body}");
    }

    fn sync(&self, args: &[&str]) -> (bool, String) {
        let mut a = vec!["agent", "sync", "--rete", TD];
        a.extend_from_slice(args);
        let o = self.host.flor(&a);
        (o.status.success(), text(&o))
    }

    fn status(&self) -> Value {
        self.host.status(TD).unwrap()
    }

    fn echo(&self, port: u16) -> Result<(), u8> {
        echo_through(port, &format!("echo.{TD}.rete"))
    }
}

/// One SOCKS5 request every 100 ms until stopped: (requests, failures with their time and reply).
struct Client {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<(u32, Vec<(Instant, u8)>)>,
}

impl Client {
    fn start(port: u16) -> Client {
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            let (mut n, mut failed) = (0, vec![]);
            while !s.load(Ordering::Relaxed) {
                n += 1;
                if let Err(code) = echo_through(port, &format!("echo.{TD}.rete")) {
                    failed.push((Instant::now(), code));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            (n, failed)
        });
        Client { stop, handle }
    }

    fn stop(self) -> (u32, Vec<(Instant, u8)>) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap()
    }
}

/// One flow that streams for `secs` through SOCKS5 `port` and checks every byte comes back.
fn long_transfer(port: u16, secs: u64) -> std::thread::JoinHandle<Result<u64, String>> {
    std::thread::spawn(move || {
        let (code, s) = socks_connect(port, &format!("echo.{TD}.rete"), 7);
        let mut s = s.ok_or(format!("SOCKS5 reply {code}"))?;
        let mut r = s.try_clone().unwrap();
        let reader = std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            let (mut total, mut expect) = (0u64, 0u8);
            loop {
                match r.read(&mut buf) {
                    Ok(0) => return Ok(total),
                    Ok(n) => {
                        for &b in &buf[..n] {
                            if b != expect {
                                return Err(format!("byte {total} is {b}, expected {expect}"));
                            }
                            expect = expect.wrapping_add(1);
                            total += 1;
                        }
                    }
                    Err(e) => return Err(format!("read after {total} bytes: {e}")),
                }
            }
        });
        let chunk: Vec<u8> = (0..64 * 1024).map(|i| (i % 256) as u8).collect();
        let end = Instant::now() + Duration::from_secs(secs);
        let mut sent = 0u64;
        while Instant::now() < end {
            s.write_all(&chunk).map_err(|e| format!("write: {e}"))?;
            sent += chunk.len() as u64;
            std::thread::sleep(Duration::from_millis(10));
        }
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let got = reader.join().unwrap()?;
        if got != sent {
            return Err(format!("sent {sent} bytes, {got} came back"));
        }
        Ok(got)
    })
}

#[test]
fn an_acl_only_publish_keeps_every_flow_and_refuses_the_removed_caller_at_once() {
    let n = Node::new();
    let _agent = n.host.start_agent(TD);
    let st = n.host.wait_healthy(TD, 1);
    let pid = st["vertex"]["pid"].clone();
    n.echo(n.alice).unwrap();
    n.echo(n.bob).unwrap();

    // v2 takes bob's grant away; nothing else changes.
    n.publish(
        2,
        V {
            bob_granted: false,
            ..V1
        },
    );
    let (ok, out) = n.sync(&["--dry-run"]);
    assert!(ok, "{out}");
    assert!(out.contains("- acl spiffe://hot.flor/user/bob"), "{out}");
    assert!(
        out.contains("the change applied in place: only ACL rows or routes change"),
        "{out}"
    );

    let client = Client::start(n.alice);
    let transfer = long_transfer(n.alice, 4);
    std::thread::sleep(Duration::from_millis(1_000));
    let t = Instant::now();
    let (ok, out) = n.sync(&["--confirm"]);
    let applied_in = t.elapsed();
    assert!(ok, "{out}");
    assert!(
        out.contains("staged v2 (was v1); applying it in place"),
        "{out}"
    );
    assert!(
        out.contains("v2 is running and healthy; committed"),
        "{out}"
    );
    // As soon as the sync returned, bob's new flows are refused (reply 2: not allowed).
    assert_eq!(
        n.echo(n.bob),
        Err(2),
        "the removed caller is refused at once"
    );
    std::thread::sleep(Duration::from_millis(1_000));
    let moved = transfer
        .join()
        .unwrap()
        .expect("the long transfer completes");
    let (requests, failed) = client.stop();
    eprintln!(
        "measured: in-place apply (sync --confirm) {applied_in:?}; {requests} requests by alice, {} failed; {moved} bytes moved by one flow across the apply",
        failed.len()
    );
    assert!(requests >= 20, "{requests}");
    assert!(failed.is_empty(), "alice's requests failed: {failed:?}");
    let st = n.status();
    assert_eq!(st["version"], 2);
    assert_eq!(st["vertex"]["pid"], pid, "the vertex was not restarted");
    assert_eq!(st["vertex"]["applied_in_place"], 1);
    let vs: Value = serde_json::from_slice(
        &std::fs::read(
            n.host
                .home
                .0
                .join("run")
                .join(TD)
                .join("vertices/flor.status.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(vs["version"], 2, "the vertex reports the version it runs");

    // Giving bob back is hot too; so is taking it away and rolling that back.
    n.publish(3, V1);
    let (ok, out) = n.sync(&["--confirm"]);
    assert!(ok && out.contains("applying it in place"), "{out}");
    n.echo(n.bob).unwrap();
    n.publish(
        4,
        V {
            bob_granted: false,
            ..V1
        },
    );
    let (ok, out) = n.sync(&["--commit-timeout", "2s"]);
    assert!(ok, "{out}");
    assert_eq!(n.echo(n.bob), Err(2));
    let st = n
        .host
        .wait_status(TD, 15, "unconfirmed v4 rolled back", |s| {
            s["version"] == 3 && s["pending"].is_null()
        });
    assert!(
        st["last_event"]
            .as_str()
            .unwrap()
            .contains("rolled back v4 to v3"),
        "{st}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while n.echo(n.bob).is_err() {
        assert!(
            Instant::now() < deadline,
            "bob is not allowed again after the rollback"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(n.status()["vertex"]["pid"], pid, "rolled back in place");
    assert_eq!(n.status()["vertex"]["applied_in_place"], 4);
}

#[test]
fn a_routes_only_change_is_applied_in_place_and_a_structural_one_restarts() {
    let n = Node::new();
    let _agent = n.host.start_agent(TD);
    let pid = n.host.wait_healthy(TD, 1)["vertex"]["pid"].clone();
    n.echo(n.alice).unwrap();

    // v2: no route to echo. Hot: new flows find no route (reply 4), same process.
    n.publish(2, V { route: false, ..V1 });
    let (ok, out) = n.sync(&["--confirm"]);
    assert!(ok && out.contains("applying it in place"), "{out}");
    assert_eq!(n.echo(n.alice), Err(4), "no route: host unreachable");
    n.publish(3, V1);
    let (ok, out) = n.sync(&["--confirm"]);
    assert!(ok && out.contains("applying it in place"), "{out}");
    n.echo(n.alice).unwrap();
    assert_eq!(n.status()["vertex"]["pid"], pid);

    // v4 drops bob's SOCKS5 listener: a structural change, the vertex restarts.
    n.publish(
        4,
        V {
            bob_listener: false,
            ..V1
        },
    );
    let (ok, out) = n.sync(&["--dry-run"]);
    assert!(
        ok && out.contains("the change restarts the vertex: the SOCKS5 listeners change"),
        "{out}"
    );
    let (ok, out) = n.sync(&["--confirm"]);
    assert!(ok && out.contains("restarting the vertex"), "{out}");
    let st = n.host.wait_healthy(TD, 4);
    assert_ne!(st["vertex"]["pid"], pid);
    assert_eq!(
        st["vertex"]["restarts"], 0,
        "a deliberate restart is not a crash"
    );
    n.echo(n.alice).unwrap();
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", n.bob)).is_err(),
        "bob's port is closed"
    );
}

fn kill9(pid: &Value) {
    let p = rustix::process::Pid::from_raw(pid.as_u64().unwrap() as i32).unwrap();
    rustix::process::kill_process(p, rustix::process::Signal::KILL).unwrap();
}

/// `install.sh` and package managers replace the binary by renaming a new
/// file over it; a manual upgrade may delete it first. Either way the
/// running agent must still be able to start its vertex.
#[test]
fn a_replaced_or_deleted_flor_binary_does_not_stop_the_agent_restarting_its_vertex() {
    if std::env::var_os("FLOR_TEST_RUNNER").is_some() {
        return; // the copy below runs natively; under qemu the runner wraps the binary
    }
    let n = Node::new();
    let bin = TempDir::new("bin");
    let installed = bin.0.join("flor");
    std::fs::copy(flor_bin(), &installed).unwrap();
    let mut cmd = std::process::Command::new(&installed);
    cmd.env("FLOR_HOME", &n.host.home.0)
        .env("FLOR_RUNTIME_DIR", n.host.home.0.join("run"))
        .env("RUST_LOG", "info")
        .args(["agent", "run", "--rete", TD])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(n.host.home.0.join("agent.log")).unwrap());
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    // ETXTBSY: a process another test thread forked while the copy was open
    // for writing holds that descriptor until it execs; it goes away at once.
    let mut tries = 0;
    let child = loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(26) && tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            other => break other.unwrap(),
        }
    };
    let _agent = Group(child);
    let mut pid = n.host.wait_healthy(TD, 1)["vertex"]["pid"].clone();

    let replace = |how: &str| match how {
        "rename a new binary over it" => {
            let tmp = bin.0.join(".flor.new");
            std::fs::copy(flor_bin(), &tmp).unwrap();
            std::fs::rename(&tmp, &installed).unwrap();
        }
        "delete it" => std::fs::remove_file(&installed).unwrap(),
        _ => unreachable!(),
    };
    for (n_restart, how) in [(1u64, "rename a new binary over it"), (2, "delete it")] {
        replace(how);
        kill9(&pid);
        let st = n
            .host
            .wait_status(TD, 20, "vertex restarted after the binary changed", |s| {
                s["vertex"]["health"] == "healthy"
                    && s["vertex"]["restarts"] == n_restart
                    && s["vertex"]["pid"] != pid
                    && s["listeners"].is_array()
            });
        pid = st["vertex"]["pid"].clone();
        n.echo(n.alice)
            .unwrap_or_else(|c| panic!("after '{how}': SOCKS5 reply {c}"));
        assert!(Path::new(&format!("/proc/{}", pid)).exists());
    }
    let log = std::fs::read_to_string(n.host.home.0.join("agent.log")).unwrap();
    assert!(!log.contains("cannot start the vertex"), "{log}");
}
