#![allow(clippy::unwrap_used)] // test fixtures: a failed setup step should abort the test loudly
//! The agent under failure: a config-server that goes away, and an agent
//! killed with SIGKILL in the middle of a sync.

mod agent_support;
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use agent_support::*;

#[test]
fn dead_config_server_means_backoff_and_the_running_state_keeps_serving() {
    let mut a = Alpha::enrolled("demo.flor", 1);
    let _agent = a.host.start_agent("demo.flor");
    let st = a.host.wait_healthy("demo.flor", 1);
    let pid = st["vertex"]["pid"].clone();
    a.traffic().unwrap();

    a.pilot.stop_config_server();
    let st = a
        .host
        .wait_status("demo.flor", 20, "four failed polls", |s| {
            s["poll"]["failures"].as_u64().unwrap() >= 4
        });
    assert!(
        st["poll"]["last_error"]
            .as_str()
            .unwrap()
            .contains("unreachable"),
        "{st}"
    );
    // The delays the agent chose grow (capped exponential with jitter in [d/2, d]).
    let log = a.host.log("demo.flor");
    let delays: Vec<u64> = log
        .lines()
        .filter_map(|l| {
            l.split("retrying in ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert!(delays.len() >= 4, "{log}");
    assert!((500..=1000).contains(&delays[0]), "{delays:?}");
    assert!((1000..=2000).contains(&delays[1]), "{delays:?}");
    assert!((2000..=4000).contains(&delays[2]), "{delays:?}");
    assert!(delays[3] >= 4000, "{delays:?}");
    // Meanwhile the vertex was never touched and traffic still flows.
    assert_eq!(st["vertex"]["pid"], pid);
    assert_eq!(st["vertex"]["health"], "healthy");
    assert_eq!(st["version"], 1);
    a.traffic().unwrap();

    // The server comes back: the next poll (at most one capped delay later) succeeds.
    a.pilot.start_config_server();
    a.host.wait_status("demo.flor", 30, "poll recovers", |s| {
        s["poll"]["failures"] == 0 && s["poll"]["last_error"].is_null()
    });
}

/// The install root is consistent: `mgmt` names one generation whose two
/// artifacts carry the same version, and a commit record, if any, is for it.
fn consistent_version(scope: &Path) -> u32 {
    let target = std::fs::read_link(scope.join("mgmt")).unwrap();
    let v: u32 = target
        .strip_prefix("gen")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    for rel in ["mgmt/agent.json", "mgmt/vertices/flor.json"] {
        let h =
            flor_vertex::envelope::peek_header(&std::fs::read(scope.join(rel)).unwrap()).unwrap();
        assert_eq!(h.version, v, "{rel} belongs to generation {v}");
    }
    if let Ok(c) = std::fs::read(scope.join("commit.json")) {
        let c: serde_json::Value = serde_json::from_slice(&c).unwrap();
        assert!(
            c["pending"] == v || c["previous"] == v,
            "commit.json {c} vs live {v}"
        );
    }
    v
}

fn alive(pid: u64) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

#[test]
fn kill_9_of_the_agent_during_sync_leaves_old_or_new() {
    let a = Alpha::enrolled("demo.flor", 3600);
    let scope = a.host.scope("demo.flor");
    let mut agent = a.host.start_agent("demo.flor");
    let mut live = a.host.wait_healthy("demo.flor", 1)["version"]
        .as_u64()
        .unwrap();
    let mut outcomes = vec![];
    for (i, delay_ms) in [0u64, 30, 80, 150, 400].into_iter().enumerate() {
        let v = 2 + i as u32;
        a.publish(v, i % 2 == 0, false);
        let old_vertex = a.status()["vertex"]["pid"].as_u64().unwrap();
        let mut sync = common::flor_command()
            .env("FLOR_HOME", &a.host.home.0)
            .env("FLOR_RUNTIME_DIR", a.host.home.0.join("run"))
            .args(["agent", "sync", "--rete", "demo.flor", "--confirm"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        // SIGKILL the agent alone: its vertex is orphaned, as after a real crash.
        agent.kill9_leader();
        let _ = sync.wait();

        let on_disk = consistent_version(&scope);
        assert!(
            u64::from(on_disk) == live || on_disk == v,
            "after kill at {delay_ms} ms: v{on_disk} is neither old v{live} nor new v{v}"
        );
        // Restart: the orphaned vertex is stopped, the state converges.
        let next = a.host.start_agent("demo.flor");
        drop(std::mem::replace(&mut agent, next));
        let st = a
            .host
            .wait_status("demo.flor", 30, "healthy after restart", |s| {
                s["vertex"]["health"] == "healthy"
                    && s["pending"].is_null()
                    && s["listeners"].is_array()
            });
        let now = st["version"].as_u64().unwrap();
        assert!(now == live || now == u64::from(v), "v{now}");
        assert_eq!(consistent_version(&scope) as u64, now);
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(old_vertex) && st["vertex"]["pid"] != old_vertex {
            assert!(
                Instant::now() < deadline,
                "orphaned vertex {old_vertex} still runs"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        outcomes.push((delay_ms, on_disk, now));
        live = now;
    }
    // On disk right after the kill: old or new; after the restart the agent's
    // first poll brings any version it did not finish.
    eprintln!(
        "kill -9 at (ms after sync start, version on disk, version after restart): {outcomes:?}"
    );
}

#[test]
fn a_crashed_vertex_is_restarted_and_sigterm_stops_both() {
    let a = Alpha::enrolled("demo.flor", 3600);
    let mut agent = a.host.start_agent("demo.flor");
    let mut pid = a.host.wait_healthy("demo.flor", 1)["vertex"]["pid"]
        .as_u64()
        .unwrap();
    for n in 1..=2u64 {
        let p = rustix::process::Pid::from_raw(pid as i32).unwrap();
        rustix::process::kill_process(p, rustix::process::Signal::KILL).unwrap();
        let st = a
            .host
            .wait_status("demo.flor", 20, "vertex restarted", |s| {
                s["vertex"]["health"] == "healthy"
                    && s["vertex"]["restarts"] == n
                    && s["vertex"]["pid"] != pid
                    && s["listeners"].is_array()
            });
        pid = st["vertex"]["pid"].as_u64().unwrap();
        a.traffic().unwrap();
    }
    // SIGTERM: the agent stops its vertex and removes its socket.
    let ap = rustix::process::Pid::from_child(&agent.0);
    rustix::process::kill_process(ap, rustix::process::Signal::TERM).unwrap();
    let status = agent.0.wait().unwrap();
    assert!(status.success(), "agent exits cleanly on SIGTERM: {status}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) {
        assert!(Instant::now() < deadline, "vertex {pid} outlived its agent");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!a.host.scope("demo.flor").join("agent.sock").exists());
}
