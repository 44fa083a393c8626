//! testkit: the helpers every test crate of the workspace shares.
//!
//! flor-vertex's in-process tests, flor's process tests and benches, and
//! retectl's end-to-end tests all need loopback ports nobody holds, the
//! resident memory of a process, a guard that kills a process group when a
//! test ends however it ends, and a way to find the `flor` binary under test.
//! They live here once, as a `publish = false` dev-dependency; nothing here is
//! linked into a binary that ships.
//!
//! Every function panics on a broken setup (no loopback, no `/proc`, cargo
//! failing): a test should stop loudly there, not go on with a wrong fixture.

#![warn(missing_docs)]

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Where [`free_tcp`] and [`free_udp`] hand out ports: below Linux's
/// ephemeral range (`ip_local_port_range`, 32768–60999 by default). A port
/// taken from the ephemeral range by binding port 0 and released can be
/// reused by the kernel for any outgoing connection before the test's server
/// binds it — seen in CI as "nothing listens on 37373" when a config-server
/// lost its port. Below that range only an explicit bind takes a port.
const TEST_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// The next candidate port: a per-process start (so parallel test binaries
/// begin in different places) and then one step per call (so tests in one
/// binary never get the same port twice).
fn next_candidate() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: OnceLock<AtomicU32> = OnceLock::new();
    let span = u32::from(TEST_PORTS.end - TEST_PORTS.start);
    let next = NEXT.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        AtomicU32::new(std::process::id().wrapping_mul(7919).wrapping_add(nanos) % span)
    });
    let step = next.fetch_add(1, Ordering::Relaxed) % span;
    TEST_PORTS.start + u16::try_from(step).expect("step < span fits u16")
}

/// A loopback port nobody holds for TCP or UDP right now (checked by binding
/// both and releasing them), outside the ephemeral range.
fn free_port() -> u16 {
    for _ in 0..u32::from(TEST_PORTS.end - TEST_PORTS.start) {
        let port = next_candidate();
        let tcp = TcpListener::bind(("127.0.0.1", port));
        let udp = UdpSocket::bind(("127.0.0.1", port));
        if tcp.is_ok() && udp.is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {TEST_PORTS:?}")
}

/// A free loopback UDP address (checked and released; never handed out twice
/// in one test process).
pub fn free_udp() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// A free loopback TCP port (checked and released; never handed out twice in
/// one test process).
pub fn free_tcp() -> u16 {
    free_port()
}

/// Resident memory of process `pid` in KiB (`VmRSS` of `/proc/<pid>/status`; Linux).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// A process group (an agent and its vertex, or a config-server), killed when dropped.
///
/// Start the leader with `CommandExt::process_group(0)` so its children join its group.
#[cfg(unix)]
pub struct Group(pub std::process::Child);

#[cfg(unix)]
impl Group {
    /// SIGKILL to the whole group, then reaps the leader.
    pub fn kill9(&mut self) {
        // kill(2) on the group directly: procps kill(1) misreads short negative pids.
        let pgid = rustix::process::Pid::from_child(&self.0);
        let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
        let _ = self.0.wait();
    }

    /// SIGKILL to the leader alone (the agent), leaving the rest of the group (its vertex) orphaned.
    pub fn kill9_leader(&mut self) {
        let pid = rustix::process::Pid::from_child(&self.0);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        let _ = self.0.wait();
    }
}

#[cfg(unix)]
impl Drop for Group {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A command that runs `flor`: `built` (the test's own `CARGO_BIN_EXE_flor`),
/// unless `FLOR_TEST_EXE` names another one. ci/cross.sh sets `FLOR_TEST_EXE`
/// to a cross-built flor and `FLOR_TEST_RUNNER` to its qemu-user command
/// line, so the same fixtures drive emulated MIPS and ARM vertices.
pub fn flor_command(built: &Path) -> Command {
    let exe = std::env::var_os("FLOR_TEST_EXE").map_or_else(|| built.to_path_buf(), PathBuf::from);
    let runner = std::env::var("FLOR_TEST_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    match words.next() {
        Some(prog) => {
            let mut c = Command::new(prog);
            c.args(words).arg(exe);
            c
        }
        None => Command::new(exe),
    }
}

/// The workspace's `target/debug/flor`, built once per test process, for
/// test crates other than flor's own (which have `CARGO_BIN_EXE_flor`).
///
/// `manifest_dir` is the calling crate's `CARGO_MANIFEST_DIR`; the workspace
/// root is its parent.
pub fn workspace_flor(manifest_dir: &str) -> &'static Path {
    static FLOR: OnceLock<PathBuf> = OnceLock::new();
    FLOR.get_or_init(|| {
        let root = Path::new(manifest_dir).join("..");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "flor", "--bin", "flor"])
            .current_dir(&root);
        // The test runs with cargo's per-crate environment; build scripts that
        // watch those variables would rebuild flor from scratch every run.
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().into_owned();
            if k.starts_with("CARGO_") && k != "CARGO_HOME" && k != "CARGO_TARGET_DIR" {
                cmd.env_remove(k);
            }
        }
        let st = cmd.status().expect("run cargo build -p flor");
        assert!(st.success(), "building flor failed");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        target.join("debug/flor")
    })
}

/// Raises this process's soft limit of open descriptors to at least `want`
/// (capped by the hard limit), so a test holding many sockets, and the `flor`
/// processes it starts (they inherit it), do not stop at a default of 1,024.
#[cfg(unix)]
pub fn raise_nofile_limit(want: u64) {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut l = getrlimit(Resource::Nofile);
    if l.current.is_some_and(|c| c < want) {
        l.current = Some(l.maximum.map_or(want, |m| m.min(want)));
        setrlimit(Resource::Nofile, l).expect("raise RLIMIT_NOFILE");
    }
}
