#![allow(clippy::unwrap_used)] // test fixtures: a failed setup step should abort the test loudly
//! The identity side-channel end to end (docs/wire.md): the example rete's
//! beta and laptop run real `flor` agents and vertices on loopback; beta's
//! `tcp-echo` upstream is a Python service, running as `nobody`, that asks
//! beta's vertex who is on each connection with the client in
//! docs/callers-example.py, and answers with what it heard.
//!
//! bob's flow is named bob, carol's carol; a connection the vertex did not
//! make is `unknown`; a process of another account cannot open the socket,
//! while one of the group `caller_socket` names can; an ended flow is
//! forgotten.
//!
//! Switching accounts (setpriv) needs root, as ci/test.sh runs.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use testkit::{free_tcp, free_udp, Group};

/// The account the tcp-echo service runs as (Debian's `nobody`), and the group
/// its `caller_socket` names: numbers, so no account has to be created.
const SERVICE_UID: &str = "65534";
const ASKER_GROUP: &str = "12346";

/// The upstream: per connection, read the caller's line, ask the side-channel
/// (docs/callers-example.py), answer `<who> <peer> <local>`.
const SERVICE: &str = r#"
import socket, sys
ns = {}
exec(open(sys.argv[1]).read(), ns)
sock_path, port = sys.argv[2], int(sys.argv[3])
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", port))
l.listen()
while True:
    c, _ = l.accept()
    c.makefile().readline()
    try:
        who = ns["florete_caller"](c, sock_path)
    except OSError as e:
        who = "refused:" + str(e.strerror)
    p, q = c.getpeername(), c.getsockname()
    c.sendall(f"{who} {p[0]}:{p[1]} {q[0]}:{q[1]}\n".encode())
    c.close()
"#;

/// An asker of its own: one question, the answer or why it could not ask.
const ASKER: &str = r#"
import socket, sys
try:
    s = socket.socket(socket.AF_UNIX)
    s.connect(sys.argv[1])
    s.sendall((sys.argv[2] + "\n").encode())
    print(s.makefile().readline().strip())
except OSError as e:
    print("refused:" + str(e.strerror))
"#;

/// Runs the asker as `uid:gid` (no supplementary groups).
fn ask_as(uid: &str, gid: &str, sock: &Path, question: &str) -> String {
    let o = Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={gid}"),
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            ASKER,
        ])
        .arg(sock)
        .arg(question)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// One line through `s`: sends `hi`, returns the service's answer words.
fn exchange(s: &mut TcpStream) -> Vec<String> {
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"hi\n").unwrap();
    let mut line = String::new();
    BufReader::new(s.try_clone().unwrap())
        .read_line(&mut line)
        .unwrap();
    line.split_whitespace().map(str::to_string).collect()
}

#[test]
fn an_upstream_learns_who_calls_and_only_its_account_may_ask() {
    let d = Demo::with_ca();
    let tmp = d.tmp.path();
    // The service's account must reach the socket under the test's private temp dir.
    std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (udp, echo) = (free_udp().port(), free_tcp());
    d.edit(
        "nodes.yaml",
        "listen: 127.0.0.3:7443",
        &format!("listen: 127.0.0.1:{udp}"),
    );
    d.edit(
        "services.yaml",
        "upstream: 127.0.0.3:9000",
        &format!(
            "upstream: 127.0.0.1:{echo}\n    caller_socket: {{user: nobody, group: \"{ASKER_GROUP}\"}}"
        ),
    );
    let out = tmp.join("out");
    d.compile_all(&out);
    let artifact = std::fs::read_to_string(out.join("beta/mgmt/vertices/flor.json")).unwrap();
    assert!(
        artifact.contains(r#""caller_socket":{"user":"nobody","group":"12346"}"#),
        "{artifact}"
    );
    let mut homes = Vec::new();
    let mut groups = Vec::new();
    for node in ["beta", "laptop"] {
        let home = d.enroll_from(node, tmp, &out);
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
        groups.push(spawn(
            &home,
            &["agent", "run", "--rete", "demo.flor"],
            "agent.log",
        ));
        homes.push(home);
    }
    healthy(&homes[0]);
    let laptop = healthy(&homes[1]);
    let sock = homes[0].join("run/demo.flor/callers/flor/tcp-echo.beta.sock");
    let meta = std::fs::metadata(&sock).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o660, "{}", sock.display());
    assert_eq!(meta.uid().to_string(), SERVICE_UID);
    assert_eq!(meta.gid().to_string(), ASKER_GROUP);

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/callers-example.py");
    let _service = Group(
        Command::new("setpriv")
            .args([
                &format!("--reuid={SERVICE_UID}"),
                &format!("--regid={SERVICE_UID}"),
                "--clear-groups",
                "/usr/bin/python3",
                "-c",
                SERVICE,
            ])
            .arg(&script)
            .arg(&sock)
            .arg(echo.to_string())
            .stdout(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", echo)).is_err() {
        assert!(Instant::now() < deadline, "the service did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }

    let port_of = |user: &str| socks_port(&laptop, &format!("spiffe://demo.flor/user/{user}"));
    let (code, bob) = socks_connect(port_of("bob"), "tcp-echo.beta.demo.flor.rete");
    assert_eq!(code, 0, "bob may reach tcp-echo");
    let mut bob = bob.unwrap();
    let heard = exchange(&mut bob);
    assert_eq!(heard[0], "spiffe://demo.flor/user/bob", "{heard:?}");
    let (code, carol) = socks_connect(port_of("carol"), "tcp-echo.beta.demo.flor.rete");
    assert_eq!(code, 0, "carol may reach tcp-echo");
    let heard_carol = exchange(&mut carol.unwrap());
    assert_eq!(
        heard_carol[0], "spiffe://demo.flor/user/carol",
        "{heard_carol:?}"
    );

    // A connection the vertex did not make: the service hears nobody.
    let mut direct = TcpStream::connect(("127.0.0.1", echo)).unwrap();
    assert_eq!(exchange(&mut direct)[0], "None");

    // bob's flow, asked about by other processes while it runs.
    let question = format!("{} {}", heard[1], heard[2]);
    assert_eq!(
        ask_as("12345", "12345", &sock, &question),
        "refused:Permission denied",
        "an account with no right to the socket is refused"
    );
    let member = ask_as("12347", ASKER_GROUP, &sock, &question);
    assert!(
        member.starts_with("spiffe://demo.flor/user/bob spiffe://demo.flor/service/beta/tcp-echo "),
        "a member of caller_socket's group may ask: {member}"
    );
    // bob's flow ends: the vertex forgets it.
    drop(bob);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let a = ask_as(SERVICE_UID, SERVICE_UID, &sock, &question);
        if a == "unknown" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "bob's ended flow is still known: {a}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(groups);
}
