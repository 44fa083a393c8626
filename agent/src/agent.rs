//! `flor agent run`: the thin I/O shell around [`crate::core::machine`].
//!
//! One thread, one smol executor. A loop wakes on a control request, a fetch
//! result, a line from the vertex, or a 100 ms tick; it turns what it saw
//! into an [`Input`] for the sans-IO [`Machine`] (with the clocks and fresh
//! randomness) and performs the [`Action`]s the machine queues: spawn, stop or
//! re-configure the vertex, fetch, stage, commit, roll back, answer a client.
//! No decision is made here; every one is unit-tested in the machine.
//!
//! ```text
//! agent.sock --request--> loop <--fetch result-- fetch task (config source)
//!                          |  \--spawn/stop--> flor vertex run --rete <scope> --name flor --agent-pipe
//!                          |   \--"apply"--> vertex stdin;  vertex stdout --"applied <v>"--> loop
//!                          \--store::{stage, commit, roll_back}--> <install>/mgmt -> gen/<v>
//! ```
//!
//! A dead config-server only makes polls fail (with backoff); the vertex keeps
//! running what it runs.
//!
//! When the live vertex artifact publishes the config-server's or the metrics
//! collector's services, the loop also runs `flor config-server` / `flor
//! metrics-server` on their upstreams ([`crate::core::roles`] decides which,
//! when to restart and when to stop; the store is `<install>/config-store`,
//! [`CONFIG_STORE`]). They are stopped with the agent.
//!
//! When agent.json names a `metrics` push service, the loop also asks the
//! vertex for its counters every interval (`counters` on the same pipe) and
//! pushes them with its own ([`crate::metrics_push`]).

use std::fmt;
use std::fs;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flor_vertex::artifact::{AgentConfig, Change, RestartField};
use flor_vertex::counters::AGENT;
use smol::channel::{Receiver, Sender};
use smol::io::{AsyncBufReadExt, AsyncWriteExt};
use smol::stream::StreamExt;

use crate::control::{self, ControlError, Request, FAILED, OK};
use crate::core::machine::{
    Action, ClientId, FetchOutcome, Input, Machine, Now, RescopeError, Scoped, StageError, Start,
};
use crate::core::roles::{self, Hosted, Role, RoleSpec};
use crate::fetch::Source;
use crate::metrics_push::{self, Gauges, PushError, Pusher};
use crate::process::{self, ProcessError};
use crate::scope::{Scope, ScopeError, ScopeInfo};
use crate::status::{
    CertStatus, Listener, PendingStatus, PollStatus, QuicListener, RoleStatus, SocksListener,
    Status, VertexHealth, SCHEMA,
};
use crate::store::{self, Recovered, StoreError, Verified};
use crate::sync::{self, Fetched, SyncError};
use crate::vertex_cmd::{VertexStatus, APPLIED, APPLY, COUNTERS, COUNTERS_ANSWER};
use flor_vertex::contract::AGENT_REL;

/// How often the loop looks at the child and the clocks when nothing else happens.
const TICK: Duration = Duration::from_millis(100);
/// The vertex the agent supervises in C0.
pub const VERTEX_NAME: &str = "flor";
/// Where the agent records its vertex's pid, to stop a vertex orphaned by a crashed agent.
const VERTEX_PID_FILE: &str = "vertex.pid";
/// How long a stopping vertex may take to close its QUIC connections (so its
/// peers learn at once and dial its successor) before it is killed.
const VERTEX_STOP_GRACE: Duration = Duration::from_millis(1_000);
/// The config-server's store in the scope's install root: the published tree
/// lives with the scope it is checked against, and goes when the scope is removed.
pub const CONFIG_STORE: &str = "config-store";
/// How long a stopping role may take before it is killed: neither holds
/// state that a kill could tear (the store swaps a symlink atomically).
const ROLE_STOP_GRACE: Duration = Duration::from_millis(1_000);
/// Whether this build carries the management roles.
const ROLES_CARRIED: bool = cfg!(feature = "mgmt");

enum Msg {
    Request(Request, Sender<String>),
    Fetched(Result<Fetched, SyncError>),
    /// A line the vertex with this pid wrote on its control pipe.
    Vertex(u32, String),
    /// A metrics push ended.
    Pushed(Result<(), PushError>),
}

/// Why the installed version cannot be run: what `flor agent run` and a
/// reload report.
#[derive(Debug)]
#[non_exhaustive]
pub enum InstalledError {
    /// The scope has no live version.
    NothingInstalled,
    /// The live mgmt/agent.json could not be read.
    Read(StoreError),
    /// The live mgmt/agent.json was refused against the scope's signers.
    Refused(StoreError),
}

impl fmt::Display for InstalledError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InstalledError::NothingInstalled => f.write_str("nothing is installed"),
            InstalledError::Read(e) => write!(f, "{e}"),
            InstalledError::Refused(e) => write!(f, "installed mgmt/agent.json refused: {e}"),
        }
    }
}

impl std::error::Error for InstalledError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            InstalledError::NothingInstalled => None,
            InstalledError::Read(e) | InstalledError::Refused(e) => Some(e),
        }
    }
}

/// The machine carries no I/O types: it gets the shell's words.
impl From<InstalledError> for RescopeError {
    fn from(e: InstalledError) -> Self {
        match e {
            InstalledError::NothingInstalled => RescopeError::NothingInstalled,
            InstalledError::Read(_) | InstalledError::Refused(_) => {
                RescopeError::AgentConfig(e.to_string())
            }
        }
    }
}

/// Why `flor agent run` could not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum AgentError {
    /// The scope could not be read.
    Scope(ScopeError),
    /// An interrupted sync could not be recovered.
    Recover(StoreError),
    /// The installed version cannot be run.
    Installed(InstalledError),
    /// The control endpoint could not be served.
    Control(ControlError),
    /// The stop signals cannot be watched.
    Process(ProcessError),
}

impl fmt::Display for AgentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AgentError::Scope(e) => write!(f, "{e}"),
            AgentError::Recover(e) => write!(f, "{e}"),
            AgentError::Installed(e) => write!(f, "{e}"),
            AgentError::Control(e) => write!(f, "{e}"),
            AgentError::Process(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for AgentError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AgentError::Scope(e) => Some(e),
            AgentError::Recover(e) => Some(e),
            AgentError::Installed(e) => Some(e),
            AgentError::Control(e) => Some(e),
            AgentError::Process(e) => Some(e),
        }
    }
}

impl From<InstalledError> for AgentError {
    fn from(e: InstalledError) -> Self {
        AgentError::Installed(e)
    }
}

impl From<ControlError> for AgentError {
    fn from(e: ControlError) -> Self {
        AgentError::Control(e)
    }
}

impl From<ProcessError> for AgentError {
    fn from(e: ProcessError) -> Self {
        AgentError::Process(e)
    }
}

/// The shell: everything with a clock, a socket, a process or a file.
struct Shell {
    scope: Scope,
    info: ScopeInfo,
    source: Option<Source>,
    machine: Machine,
    start: Instant,
    rng: ring::rand::SystemRandom,
    child: Option<Child>,
    /// The vertex's control pipe (its standard input).
    vertex_in: Option<ChildStdin>,
    /// A fetched, verified version, kept until the machine stages it.
    candidate: Option<Verified>,
    clients: Vec<(ClientId, Sender<String>)>,
    next_client: ClientId,
    tx: Sender<Msg>,
    ex: Rc<smol::LocalExecutor<'static>>,
    /// Pushes counters, when agent.json names a metrics service.
    metrics: Option<Pusher>,
    /// Whether a vertex was started before (the next start is a restart).
    spawned_before: bool,
    /// The management roles' processes.
    roles: Vec<(Role, Child)>,
}

fn unix(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The live mgmt/agent.json's configuration, verified against `info`'s signers.
fn installed_cfg(scope: &Scope, info: &ScopeInfo) -> Result<AgentConfig, InstalledError> {
    let bytes = store::read_live(scope, AGENT_REL).map_err(InstalledError::Read)?;
    store::verify_agent(info, bytes, None)
        .map(|(_, cfg, _)| cfg)
        .map_err(InstalledError::Refused)
}

fn start_of(r: Recovered) -> Start {
    match r {
        Recovered::Committed(v) => Start::Committed(v),
        Recovered::RolledBack { failed, live } => Start::RolledBack { failed, live },
        Recovered::Pending(r) => Start::Pending {
            pending: r.pending,
            previous: r.previous,
            deadline_unix: r.deadline_unix,
            auto: r.auto,
        },
    }
}

/// The scope as the machine needs it, read from disk.
fn scoped(scope: &Scope, info: &ScopeInfo) -> Result<(Scoped, Option<Source>), InstalledError> {
    let live = store::live_version(scope).ok_or(InstalledError::NothingInstalled)?;
    let cfg = installed_cfg(scope, info)?;
    let source = match sync::default_source(scope, info) {
        Ok(s) => Some(s),
        Err(e) => {
            log::warn!("no config source; polling is off: {e}");
            None
        }
    };
    Ok((
        Scoped {
            live,
            source: source.as_ref().map(|s| s.to_string()),
            poll_interval_s: cfg.poll_interval_s,
            commit_timeout_s: cfg.commit_timeout_s,
        },
        source,
    ))
}

/// The counters pusher agent.json asks for, if any.
fn pusher(scope: &Scope, info: &ScopeInfo) -> Option<Pusher> {
    let cfg = installed_cfg(scope, info).ok()?;
    let m = cfg.metrics.as_ref()?;
    match Pusher::new(scope, info, m) {
        Ok(p) => Some(p),
        Err(e) => {
            log::warn!("cannot push metrics to {}: {e}", m.service);
            None
        }
    }
}

/// Runs the agent for `scope` until SIGTERM/SIGINT.
pub fn run(scope: Scope) -> Result<(), AgentError> {
    let mut info = scope.info().map_err(AgentError::Scope)?;
    let recovered = store::recover(&scope, &mut info, now_unix()).map_err(AgentError::Recover)?;
    let (cfg, source) = scoped(&scope, &info)?;
    stop_orphan(
        &scope,
        VERTEX_PID_FILE,
        &[b"vertex".as_slice(), b"run".as_slice()],
    );
    for role in Role::ALL {
        stop_orphan(&scope, &role_pid_file(role), &[role.command().as_bytes()]);
    }
    #[cfg(windows)]
    crate::windows::kill_children_with_me();
    let listener = control::Listener::bind(&scope)?;
    // The accept task holds the executor, so the listener is never dropped: remove by hand.
    let endpoint = listener.path().to_path_buf();
    let (tx, rx) = smol::channel::unbounded();
    let ex = Rc::new(smol::LocalExecutor::new());
    let rng = ring::rand::SystemRandom::new();
    let start = Instant::now();
    let now = Now {
        ms: 0,
        unix: now_unix(),
        rand: random(&rng),
    };
    let machine = Machine::new(now, &scope.name, start_of(recovered), cfg);
    let metrics = pusher(&scope, &info);
    let mut shell = Shell {
        scope,
        info,
        source,
        machine,
        start,
        rng,
        child: None,
        vertex_in: None,
        candidate: None,
        clients: Vec::new(),
        next_client: 0,
        tx,
        ex: Rc::clone(&ex),
        metrics,
        spawned_before: false,
        roles: Vec::new(),
    };
    smol::block_on(async move {
        log::info!(
            "agent for rete {} node {} (scope {}) running v{}; control endpoint {}",
            shell.info.rete,
            shell.info.node,
            shell.scope.name,
            shell.machine.live(),
            listener.path().display()
        );
        shell.watch_certificates();
        shell.rehost();
        shell.perform_all();
        ex.spawn(accept(ex.clone(), listener, shell.tx.clone()))
            .detach();
        let signals = process::stop_signals()?;
        ex.run(shell.main(rx, signals)).await;
        shell.stop_vertex();
        for role in Role::ALL {
            shell.stop_role(role);
        }
        let _ = fs::remove_file(&endpoint);
        Ok(())
    })
}

fn random(rng: &ring::rand::SystemRandom) -> u32 {
    let mut b = [0u8; 4];
    let _ = ring::rand::SecureRandom::fill(rng, &mut b);
    u32::from_le_bytes(b)
}

/// Where the agent records a role's pid (as [`VERTEX_PID_FILE`] for the vertex).
fn role_pid_file(role: Role) -> String {
    format!("{}.pid", role.command())
}

/// Windows: the job object of [`crate::windows::kill_children_with_me`] ends
/// a killed agent's children with it, so only the stale pid file is left.
#[cfg(not(unix))]
fn stop_orphan(scope: &Scope, pid_file: &str, _command: &[&[u8]]) {
    let _ = fs::remove_file(scope.runtime.join(pid_file));
}

/// Kills a child left running by an agent that was killed (`kill -9`) — its
/// vertex or a role — if the pid recorded in `pid_file` still runs `flor
/// <command> ... --rete <scope>`: a role left behind would hold its port and
/// keep the new agent's from starting.
#[cfg(unix)]
fn stop_orphan(scope: &Scope, pid_file: &str, command: &[&[u8]]) {
    let pid_file = scope.runtime.join(pid_file);
    let Ok(pid) = fs::read_to_string(&pid_file) else {
        return;
    };
    let pid = match pid.trim().parse::<i32>() {
        Ok(p) if p > 0 => p,
        _ => {
            let _ = fs::remove_file(pid_file);
            return;
        }
    };
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
        let _ = fs::remove_file(pid_file);
        return;
    };
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    let ours = args.windows(command.len()).any(|w| w == command)
        && args
            .windows(2)
            .any(|w| w[0] == b"--rete" && w[1] == scope.name.as_bytes());
    if ours {
        log::warn!(
            "stopping {} pid {pid} left by a previous agent",
            String::from_utf8_lossy(command[0])
        );
        if let Some(p) = rustix::process::Pid::from_raw(pid) {
            let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
        }
        // Give the kernel a moment to release its sockets.
        for _ in 0..50 {
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let _ = fs::remove_file(pid_file);
}

async fn accept(ex: Rc<smol::LocalExecutor<'static>>, l: control::Listener, tx: Sender<Msg>) {
    loop {
        match l.accept().await {
            Ok(s) => {
                ex.spawn(client(s, l.cookie(), tx.clone())).detach();
            }
            Err(e) => {
                log::warn!("control socket accept: {e}");
                smol::Timer::after(TICK).await;
            }
        }
    }
}

/// Reads one request, hands it to the loop, writes the answer lines back.
///
/// Where the endpoint is a TCP port (Windows), the first line must be its cookie.
async fn client(s: control::Conn, cookie: Option<Rc<str>>, tx: Sender<Msg>) {
    let mut reader = smol::io::BufReader::new(s.clone());
    let mut line = String::new();
    let mut limited = smol::io::AsyncReadExt::take(&mut reader, control::MAX_REQUEST as u64);
    if let Some(cookie) = cookie {
        if limited.read_line(&mut line).await.is_err() || !control::cookie_matches(&cookie, &line) {
            return;
        }
        line.clear();
    }
    if limited.read_line(&mut line).await.is_err() {
        return;
    }
    let mut w = s;
    let Some(req) = Request::parse(line.trim()) else {
        let _ = w
            .write_all(b"unknown request; expected status, sync or reload\nFAILED\n")
            .await;
        return;
    };
    let (rtx, rrx) = smol::channel::unbounded::<String>();
    if tx.send(Msg::Request(req, rtx)).await.is_err() {
        return;
    }
    while let Ok(mut l) = rrx.recv().await {
        l.push('\n');
        if w.write_all(l.as_bytes()).await.is_err() {
            return;
        }
    }
}

impl Shell {
    fn now(&self) -> Now {
        Now {
            ms: self.start.elapsed().as_millis() as u64,
            unix: now_unix(),
            rand: random(&self.rng),
        }
    }

    fn input(&mut self, i: Input) {
        let now = self.now();
        self.machine.handle(now, i);
        self.perform_all();
    }

    fn status_file(&self) -> PathBuf {
        VertexStatus::path(&self.scope, VERTEX_NAME)
    }

    async fn main(&mut self, rx: Receiver<Msg>, mut signals: async_signal::Signals) {
        loop {
            let msg = smol::future::or(
                async { Some(rx.recv().await.ok()) },
                smol::future::or(
                    async {
                        smol::Timer::after(TICK).await;
                        Some(None)
                    },
                    async {
                        let _ = signals.next().await;
                        log::info!("stopping: signal received");
                        None
                    },
                ),
            )
            .await;
            match msg {
                None => return,
                Some(Some(m)) => self.message(m),
                Some(None) => {}
            }
            self.tick();
        }
    }

    fn message(&mut self, m: Msg) {
        match m {
            Msg::Request(req, reply) => {
                let from = self.next_client;
                self.next_client = self.next_client.wrapping_add(1);
                self.clients.push((from, reply));
                self.input(Input::Request { from, req });
            }
            Msg::Fetched(r) => {
                match &r {
                    Ok(_) => AGENT.syncs.inc(),
                    Err(_) => AGENT.poll_failures.inc(),
                }
                let outcome = self.outcome(r);
                self.input(Input::Fetched(outcome));
            }
            Msg::Pushed(r) => {
                let ok = r.is_ok();
                let changed = self.metrics.as_mut().is_some_and(|p| p.record(ok));
                match r {
                    Err(e) if changed => log::warn!("{e} (retrying every interval)"),
                    Err(e) => log::debug!("{e}"),
                    Ok(()) if changed => log::info!("metrics pushed again"),
                    Ok(()) => log::debug!("metrics pushed"),
                }
            }
            Msg::Vertex(pid, line) => {
                if self.child.as_ref().map(Child::id) != Some(pid) {
                    return;
                }
                if let Some(counters) = line.strip_prefix(COUNTERS_ANSWER) {
                    return self.push_metrics(Some(counters));
                }
                let applied = line
                    .strip_prefix(APPLIED)
                    .and_then(|v| v.trim().parse::<u32>().ok());
                match applied {
                    Some(version) => self.input(Input::Applied { version }),
                    None => self.input(Input::ApplyRefused { reason: line }),
                }
            }
        }
    }

    fn tick(&mut self) {
        let exited = match &mut self.child {
            Some(c) => match c.try_wait() {
                Ok(Some(status)) => Some(status),
                Ok(None) => None,
                Err(e) => {
                    log::warn!("waiting for the vertex: {e}");
                    None
                }
            },
            None => None,
        };
        if let Some(status) = exited {
            log::warn!("vertex exited ({status})");
            self.child = None;
            self.vertex_in = None;
            self.input(Input::Exited);
        }
        let mut i = 0;
        while i < self.roles.len() {
            match self.roles[i].1.try_wait() {
                Ok(Some(status)) => {
                    let (role, _) = self.roles.swap_remove(i);
                    log::warn!("{role} exited ({status})");
                    let _ = fs::remove_file(self.scope.runtime.join(role_pid_file(role)));
                    self.input(Input::RoleExited(role));
                }
                _ => i += 1,
            }
        }
        // Healthy when this very process reported its bindings (the vertex
        // writes the status file only after every listener is bound).
        let reported = self.vertex_report().is_some();
        self.input(Input::Tick { reported });
        self.metrics_tick();
    }

    /// Asks the vertex for its counters when a push is due; pushes without
    /// them when it cannot answer.
    fn metrics_tick(&mut self) {
        let Some(p) = self.metrics.as_mut() else {
            return;
        };
        let now = Instant::now();
        if p.due(now) {
            let asked = self.vertex_in.as_mut().is_some_and(|w| {
                w.write_all(COUNTERS.as_bytes())
                    .and_then(|()| w.flush())
                    .is_ok()
            });
            if !asked {
                self.push_metrics(None);
            }
        } else if p.gave_up_waiting(now) {
            self.push_metrics(None);
        }
    }

    /// Pushes one snapshot (in the background) with the vertex's counters if it answered.
    fn push_metrics(&mut self, vertex: Option<&str>) {
        let Some(p) = self.metrics.as_mut() else {
            return;
        };
        if !p.waiting() {
            return; // an answer after the wait was given up: the next push has it
        }
        let (client, interval_s) = p.take();
        let gauges = Gauges {
            version: self.machine.live(),
            interval_s,
            vertex_up: vertex.is_some(),
            roles: self
                .machine
                .view(self.now())
                .roles
                .iter()
                .map(|r| (r.spec.role.command(), r.pid.is_some()))
                .collect(),
            certs: metrics_push::cert_expiry(
                &crate::certs::held(&self.scope, &self.info, VERTEX_NAME),
                unix(now_unix()),
            ),
        };
        let body = metrics_push::body(vertex, &gauges);
        let node = self.info.node.clone();
        let tx = self.tx.clone();
        self.ex
            .spawn(async move {
                let r = metrics_push::push(&client, &node, &body).await;
                let _ = tx.send(Msg::Pushed(r)).await;
            })
            .detach();
    }

    /// Turns a fetch result into what the machine decides on; keeps a new version's bytes.
    fn outcome(&mut self, r: Result<Fetched, SyncError>) -> FetchOutcome {
        match r {
            Err(e) => FetchOutcome::Failed {
                refused: matches!(e, SyncError::Store(_)),
                error: e.to_string(),
            },
            Ok(Fetched::UpToDate(v)) => FetchOutcome::UpToDate(v),
            Ok(Fetched::New(v)) => {
                let (change, diff) = self.compare(&v);
                let version = v.version();
                self.candidate = Some(*v);
                FetchOutcome::New {
                    version,
                    change,
                    diff,
                }
            }
        }
    }

    /// How the live vertices move to `new`, and the differences a dry run prints.
    fn compare(&self, new: &Verified) -> (Change, Vec<String>) {
        let live: Vec<_> = new
            .vertices
            .iter()
            .filter_map(|nv| {
                let b = store::read_live(&self.scope, &flor_vertex::contract::vertex_rel(&nv.name))
                    .ok()?;
                store::verify_vertex(&self.info, &nv.name, b, None)
                    .ok()
                    .map(|x| x.config)
            })
            .collect();
        let mut change = Change::None;
        for nv in &new.vertices {
            let c = match live.iter().find(|o| o.name == nv.name) {
                Some(old) => old.change_to(&nv.config),
                None => Change::Restart(RestartField::Identity),
            };
            change = match (change, c) {
                (Change::Restart(f), _) | (_, Change::Restart(f)) => Change::Restart(f),
                (Change::Hot, _) | (_, Change::Hot) => Change::Hot,
                _ => Change::None,
            };
        }
        let live_h = store::live_header(&self.scope, AGENT_REL);
        let diff = store::diff(live_h.as_ref().map(|h| (h, &live[..])), new);
        (change, diff)
    }

    fn perform_all(&mut self) {
        while let Some(a) = self.machine.poll_action() {
            self.perform(a);
        }
    }

    fn reply(&mut self, to: ClientId, line: String) {
        if let Some((_, tx)) = self.clients.iter().find(|(id, _)| *id == to) {
            let _ = tx.try_send(line);
        }
    }

    fn perform(&mut self, a: Action) {
        match a {
            Action::SpawnVertex => self.spawn_vertex(),
            Action::StopVertex => self.stop_vertex(),
            Action::SpawnRole(spec) => self.spawn_role(spec),
            Action::StopRole(role) => self.stop_role(role),
            Action::Apply { version } => {
                let sent = self.vertex_in.as_mut().is_some_and(|w| {
                    w.write_all(APPLY.as_bytes())
                        .and_then(|()| w.flush())
                        .is_ok()
                });
                if sent {
                    log::info!("asking the vertex to apply v{version} in place");
                } else {
                    let now = self.now();
                    self.machine.handle(
                        now,
                        Input::ApplyRefused {
                            reason: "the vertex's control pipe is closed".into(),
                        },
                    );
                }
            }
            Action::Fetch => self.start_fetch(),
            Action::Stage {
                version,
                previous,
                deadline_unix,
                auto,
            } => {
                let result = match self.candidate.take() {
                    Some(v) if v.version() == version => {
                        store::stage(&self.scope, &v, previous, deadline_unix, auto)
                            .map_err(|e| StageError::Store(e.to_string()))
                    }
                    _ => Err(StageError::Gone),
                };
                let now = self.now();
                self.machine.handle(now, Input::Staged(result));
                self.rehost();
            }
            Action::Commit { version } => {
                AGENT.commits.inc();
                // The previous version is the one before this stage; keep it for rollback.
                let prev = self.prev_generation(version);
                if let Err(e) = store::commit(&self.scope, &mut self.info, version, prev) {
                    self.store_failed(format!("committing v{version} failed: {e}"));
                }
                self.reload_agent_cfg();
                self.rehost();
            }
            Action::RollBack { failed, previous } => {
                AGENT.rollbacks.inc();
                if let Err(e) = store::roll_back(&self.scope, failed, previous) {
                    self.store_failed(format!("rolling back v{failed} failed: {e}"));
                }
                self.reload_agent_cfg();
                self.rehost();
            }
            Action::Rescope { to } => {
                self.candidate = None;
                let result = self
                    .scope
                    .info()
                    .map_err(|e| RescopeError::Scope(e.to_string()))
                    .and_then(|info| {
                        let (s, source) = scoped(&self.scope, &info)?;
                        self.info = info;
                        self.source = source;
                        self.metrics = pusher(&self.scope, &self.info);
                        Ok(s)
                    });
                let now = self.now();
                self.machine.handle(now, Input::Rescoped { to, result });
                self.watch_certificates();
                self.rehost();
            }
            Action::Reply { to, line } => self.reply(to, line),
            Action::Status { to, json } => {
                let s = self.status(json);
                self.reply(to, s);
            }
            Action::WarnExpiry {
                who,
                seconds_left,
                not_after,
            } => {
                let v = flor_vertex::validity::Validity {
                    not_before: i64::MIN,
                    not_after,
                };
                let now = not_after.saturating_sub(seconds_left);
                log::warn!(
                    "certificate of {who}: {}; renew it (retectl issue-bundle --node {}, then flor enroll the new bundle)",
                    crate::certs::Left(&v, now),
                    self.info.node
                );
            }
            Action::Finish { to, ok } => {
                self.reply(to, if ok { OK } else { FAILED }.into());
                // Dropping the sender ends the client's answer.
                self.clients.retain(|(id, _)| *id != to);
            }
        }
    }

    fn store_failed(&mut self, msg: String) {
        let now = self.now();
        self.machine.handle(now, Input::StoreFailed(msg));
    }

    /// Tells the machine which certificates the scope holds now.
    fn watch_certificates(&mut self) {
        let held = crate::certs::held(&self.scope, &self.info, VERTEX_NAME);
        let now = self.now();
        self.machine
            .handle(now, Input::Certificates(crate::certs::watched(&held)));
    }

    fn reload_agent_cfg(&mut self) {
        self.watch_certificates();
        self.metrics = pusher(&self.scope, &self.info);
        if let Ok(cfg) = installed_cfg(&self.scope, &self.info) {
            let now = self.now();
            self.machine.handle(
                now,
                Input::Config {
                    poll_interval_s: cfg.poll_interval_s,
                    commit_timeout_s: cfg.commit_timeout_s,
                },
            );
        }
    }

    fn start_fetch(&mut self) {
        let Some(source) = self.source.clone() else {
            let now = self.now();
            self.machine.handle(
                now,
                Input::Fetched(FetchOutcome::Failed {
                    refused: false,
                    error: "no config source".into(),
                }),
            );
            return;
        };
        let scope = self.scope.clone();
        let info = self.info.clone();
        let tx = self.tx.clone();
        self.ex
            .spawn(async move {
                let r = sync::fetch_for(&scope, &info, &source).await;
                let _ = tx.send(Msg::Fetched(r)).await;
            })
            .detach();
    }

    fn stop_vertex(&mut self) {
        self.vertex_in = None;
        if let Some(mut c) = self.child.take() {
            if !process::terminate(&mut c, VERTEX_STOP_GRACE) {
                log::warn!("the vertex did not stop within {VERTEX_STOP_GRACE:?}; killed it");
            }
        }
        let _ = fs::remove_file(self.scope.runtime.join(VERTEX_PID_FILE));
    }

    fn spawn_vertex(&mut self) {
        if std::mem::replace(&mut self.spawned_before, true) {
            AGENT.vertex_restarts.inc();
        }
        let _ = fs::remove_file(self.status_file());
        let spawned = process::self_exe().and_then(|exe| {
            Command::new(exe)
                .args([
                    "vertex",
                    "run",
                    "--rete",
                    &self.scope.name,
                    "--name",
                    VERTEX_NAME,
                    "--agent-pipe",
                ])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
        });
        let input = match spawned {
            Ok(mut c) => {
                let pid = c.id();
                let _ = flor_vertex::file::write_atomic(
                    &self.scope.runtime.join(VERTEX_PID_FILE),
                    pid.to_string().as_bytes(),
                    0o644,
                );
                log::info!("vertex started, pid {pid}");
                self.vertex_in = c.stdin.take();
                if let Some(out) = c.stdout.take() {
                    // A plain thread per vertex: a pipe cannot join the reactor
                    // on every platform, and this costs no async machinery.
                    let tx = self.tx.clone();
                    let reader = std::thread::Builder::new()
                        .name("vertex-pipe".into())
                        .spawn(move || {
                            use std::io::BufRead as _;
                            for l in std::io::BufReader::new(out).lines() {
                                let Ok(l) = l else { return };
                                if let Some(log) = l.strip_prefix(crate::logging::PIPED_LOG) {
                                    // The vertex's info line under procd: ours to print.
                                    println!("{log}");
                                    continue;
                                }
                                if tx.send_blocking(Msg::Vertex(pid, l)).is_err() {
                                    return;
                                }
                            }
                        });
                    if let Err(e) = reader {
                        log::warn!("cannot read the vertex's answers: {e}");
                    }
                }
                self.child = Some(c);
                Input::Spawned { pid }
            }
            Err(e) => {
                log::error!("cannot start the vertex: {e}");
                Input::SpawnFailed
            }
        };
        let now = self.now();
        self.machine.handle(now, input);
    }

    /// The live vertex artifact, verified.
    fn live_vertex(&self) -> Option<flor_vertex::artifact::VertexConfig> {
        let name = flor_vertex::identity::Name::new(VERTEX_NAME).ok()?;
        let b = store::read_live(&self.scope, &flor_vertex::contract::vertex_rel(&name)).ok()?;
        store::verify_vertex(&self.info, &name, b, None)
            .ok()
            .map(|v| v.config)
    }

    /// Tells the machine which roles the live artifact asks this node to host.
    fn rehost(&mut self) {
        let hosted = self
            .live_vertex()
            .map_or_else(Hosted::default, |v| roles::hosted(&v));
        // No perform_all here: this runs inside `perform` too, whose loop
        // carries out the actions in order.
        let now = self.now();
        self.machine.handle(
            now,
            Input::Hosted {
                hosted,
                carried: ROLES_CARRIED,
            },
        );
    }

    /// Starts `flor <role>` for this scope on the spec's addresses; its log
    /// goes where the agent's goes.
    fn spawn_role(&mut self, spec: RoleSpec) {
        let role = spec.role;
        let [fa, fb] = role.flags();
        let (a, b) = (spec.listen[0].to_string(), spec.listen[1].to_string());
        let store = self.scope.install.join(CONFIG_STORE);
        let spawned = process::self_exe().and_then(|exe| {
            let mut c = Command::new(exe);
            c.args([role.command(), "--rete", &self.scope.name, fa, &a, fb, &b])
                .stdin(Stdio::null());
            if role == Role::ConfigServer {
                c.arg("--store").arg(&store);
            }
            c.spawn()
        });
        let input = match spawned {
            Ok(c) => {
                let pid = c.id();
                let _ = flor_vertex::file::write_atomic(
                    &self.scope.runtime.join(role_pid_file(role)),
                    pid.to_string().as_bytes(),
                    0o644,
                );
                log::info!("{role} started, pid {pid} ({fa} {a} {fb} {b})");
                self.roles.push((role, c));
                Input::RoleSpawned { role, pid }
            }
            Err(e) => {
                log::error!("cannot start {role}: {e}");
                Input::RoleSpawnFailed(role)
            }
        };
        let now = self.now();
        self.machine.handle(now, input);
    }

    fn stop_role(&mut self, role: Role) {
        if let Some(i) = self.roles.iter().position(|(r, _)| *r == role) {
            let (_, mut c) = self.roles.swap_remove(i);
            if !process::terminate(&mut c, ROLE_STOP_GRACE) {
                log::warn!("{role} did not stop within {ROLE_STOP_GRACE:?}; killed it");
            }
            log::info!("{role} stopped");
        }
        let _ = fs::remove_file(self.scope.runtime.join(role_pid_file(role)));
    }

    /// The newest generation other than `live` (the rollback target after a commit).
    fn prev_generation(&self, live: u32) -> Option<u32> {
        let dir = self.scope.install.join(store::GEN_DIR);
        fs::read_dir(dir)
            .ok()?
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|v| *v != live)
            .max()
    }

    /// The running vertex's own report of its bindings, if it wrote one.
    fn vertex_report(&self) -> Option<VertexStatus> {
        let pid = self.child.as_ref()?.id();
        VertexStatus::read(&self.status_file()).filter(|s| s.pid == pid)
    }

    /// The QUIC listen address the live artifact asks for.
    fn preferred_udp(&self) -> Option<String> {
        self.live_vertex()?.listen.map(|a| a.to_string())
    }

    fn status(&self, json: bool) -> String {
        let now = self.now();
        let v = self.machine.view(now);
        let listeners = self.vertex_report().map(|st| {
            let mut l = Vec::new();
            if let Some(udp) = st.udp {
                l.push(Listener::Quic(QuicListener {
                    kind: "quic",
                    preferred: self.preferred_udp(),
                    actual: udp.to_string(),
                }));
            }
            for s in st.socks.iter() {
                l.push(Listener::Socks(SocksListener {
                    kind: "socks5",
                    principal: s.principal.to_string(),
                    preferred: s.preferred,
                    actual: s.actual,
                }));
            }
            l
        });
        let install = self.scope.install.display().to_string();
        let status = Status {
            schema: SCHEMA,
            scope: &self.scope.name,
            install: &install,
            rete: self.info.rete.as_str(),
            node: self.info.node.as_str(),
            port_offset: self.info.port_offset,
            version: v.live,
            pending: v.pending.map(|p| PendingStatus {
                version: p.version,
                previous: p.previous,
                healthy: p.healthy,
                deadline_unix: v.pending_deadline_unix,
            }),
            vertex: VertexHealth {
                name: VERTEX_NAME,
                pid: v.vertex_pid,
                health: v.vertex_health,
                restarts: v.vertex_restarts,
                applied_in_place: v.applied_in_place,
            },
            poll: PollStatus {
                source: v.source,
                failures: v.poll_failures,
                next_in_ms: v.poll_next_in_ms,
                last_ok_unix: v.poll_last_ok_unix,
                last_error: v.last_error,
            },
            last_event: v.last_event,
            listeners,
            certificates: crate::certs::held(&self.scope, &self.info, VERTEX_NAME)
                .iter()
                .map(|h| CertStatus {
                    who: h.who.clone(),
                    not_after_unix: h.validity.as_ref().ok().map(|v| v.not_after),
                    days_left: h
                        .validity
                        .as_ref()
                        .ok()
                        .map(|v| v.days_left(unix(now.unix))),
                    note: h.left(unix(now.unix)),
                })
                .collect(),
            roles: v
                .roles
                .iter()
                .map(|r| RoleStatus {
                    role: r.spec.role.command(),
                    listen: r.spec.listen.iter().map(|a| a.to_string()).collect(),
                    pid: r.pid,
                    state: r.state,
                    restarts: r.restarts,
                })
                .collect(),
        };
        if json {
            status.to_json().unwrap_or_else(|e| e.to_string())
        } else {
            status.to_text(now.unix)
        }
    }
}
