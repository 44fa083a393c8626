#![allow(clippy::unwrap_used)] // test fixtures: a failed setup step should abort the test loudly
//! `flor service run`: one process (the Windows service, or one unit for
//! every rete) that runs an agent for each enrolled scope, picks up a new
//! enrollment by itself, restarts a dead agent, stops the agent of a removed
//! scope, and takes every agent and vertex down with it on SIGTERM.

mod agent_support;
mod common;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use agent_support::*;
use common::*;
use serde_json::Value;

/// Pids of the processes whose parent is `parent` and whose command line holds `needle`.
fn children_running(parent: u32, needle: &str) -> Vec<u32> {
    let mut out = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        // pid (comm) state ppid ...: comm may hold spaces, so split after its ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|s| s.parse::<u32>().ok());
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if ppid == Some(parent) && cmdline.contains(needle) {
            out.push(pid);
        }
    }
    out
}

fn alive(pid: u64) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn wait_until(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn vertex_pid(status: &Value) -> u64 {
    status["vertex"]["pid"].as_u64().unwrap()
}

/// The SOCKS5 port of user `me` (the one user of [`echo_rete`]'s vertex).
fn socks_port(status: &Value) -> u16 {
    let td = status["rete"].as_str().unwrap();
    listener_port(status, &format!("spiffe://{td}/user/me"))
}

#[test]
fn the_service_runs_an_agent_per_enrolled_scope_and_stops_them_all() {
    let host = Host::new("service");
    let echo = start_echo();
    let home_rete = echo_rete("home.flor", echo, free_tcp(), &host);
    let work_rete = echo_rete("work.example", echo, free_tcp(), &host);
    let (home_bundle, work_bundle) = (&home_rete.bundle, &work_rete.bundle);
    let o = host.flor(&["enroll", home_bundle.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));

    let service_log = host.home.0.join("service.log");
    let mut service = Group(
        flor_command()
            .env("FLOR_HOME", &host.home.0)
            .env("FLOR_RUNTIME_DIR", host.home.0.join("run"))
            .args(["service", "run", "--log", service_log.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap(),
    );
    let service_pid = service.0.id();

    // The scope enrolled before the service started gets its agent and vertex.
    let home = host.wait_healthy("home.flor", 1);
    echo_through(socks_port(&home), "echo.home.flor.rete").unwrap();
    let agent_log = std::fs::read_to_string(host.scope("home.flor").join("agent.log")).unwrap();
    assert!(
        agent_log.contains("running v1"),
        "the agent's output goes to <install>/agent.log:\n{agent_log}"
    );

    // A rete enrolled while the service runs starts without another command.
    let o = host.flor(&["enroll", work_bundle.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let work = host.wait_healthy("work.example", 1);
    echo_through(socks_port(&work), "echo.work.example.rete").unwrap();

    // An agent that dies is started again, and its new vertex serves.
    let agents = children_running(service_pid, "--rete home.flor");
    assert_eq!(agents.len(), 1, "one agent for home.flor: {agents:?}");
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(agents[0] as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    wait_until(20, "a new agent for home.flor", || {
        let now = children_running(service_pid, "--rete home.flor");
        now.len() == 1 && now[0] != agents[0]
    });
    let home = host.wait_healthy("home.flor", 1);
    echo_through(socks_port(&home), "echo.home.flor.rete").unwrap();
    let log = std::fs::read_to_string(&service_log).unwrap();
    assert!(
        log.contains("agent for home.flor exited") && log.contains("restarting in 1 s"),
        "the service says what happened:\n{log}"
    );

    // A scope that is removed loses its agent and vertex.
    let work_vertex = vertex_pid(&work);
    std::fs::remove_dir_all(host.scope("work.example")).unwrap();
    wait_until(20, "work.example's agent and vertex gone", || {
        children_running(service_pid, "--rete work.example").is_empty() && !alive(work_vertex)
    });

    // SIGTERM: every agent stops its vertex, then the service exits.
    let home_vertex = vertex_pid(&home);
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&service.0),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    wait_until(20, "the service exits", || {
        matches!(service.0.try_wait(), Ok(Some(_)))
    });
    assert!(
        !alive(home_vertex),
        "home.flor's vertex outlived the service"
    );
    assert!(children_running(service_pid, "agent run").is_empty());
    assert!(host.status("home.flor").is_none());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", socks_port(&home))).is_err(),
        "home.flor's SOCKS5 port still accepts"
    );
    let log = std::fs::read_to_string(&service_log).unwrap();
    assert!(
        log.contains("stopped the agent for home.flor"),
        "the service stops its agents before it exits:\n{log}"
    );
}
