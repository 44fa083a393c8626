//! `flor agent run`: the thin I/O shell around [`crate::core`].
//!
//! One thread, one smol executor. A loop wakes on a control request, a fetch
//! result, or a 100 ms tick; it feeds the clock and what it observed (child
//! exited, status file written) to the sans-IO supervisor, poller and commit
//! machine, and carries out what they decide: spawn or kill the vertex, start
//! a fetch, stage, commit or roll back a version.
//!
//! ```text
//! agent.sock --request--> loop <--fetch result-- fetch task (config source)
//!                          |  \--spawn/kill--> flor vertex run --rete <scope> --name flor
//!                          \--store::{stage, commit, roll_back}--> <install>/mgmt -> gen/<v>
//! ```
//!
//! A dead config-server only makes polls fail (with backoff); the vertex keeps
//! running what it runs.

use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flor_vertex::artifact::AgentConfig;
use smol::channel::{Receiver, Sender};
use smol::io::{AsyncBufReadExt, AsyncWriteExt};
use smol::stream::StreamExt;

use crate::control::{self, Request, FAILED, OK};
use crate::core::{
    CommitDecision, Millis, Poller, Supervisor, SupervisorEvent, VertexState, HEALTH_WINDOW_MS,
};
use crate::fetch::Source;
use crate::scope::{Scope, ScopeInfo};
use crate::store::{self, Recovered, AGENT_REL};
use crate::sync::{self, Fetched, SyncError};
use crate::vertex_cmd::VertexStatus;

/// How often the loop looks at the child and the clocks when nothing else happens.
const TICK: Duration = Duration::from_millis(100);
/// The vertex the agent supervises in C0.
pub const VERTEX_NAME: &str = "flor";
/// Where the agent records its vertex's pid, to stop a vertex orphaned by a crashed agent.
const VERTEX_PID_FILE: &str = "vertex.pid";

/// Why a fetch was started.
enum Purpose {
    Poll,
    Sync {
        dry_run: bool,
        confirm: bool,
        timeout_s: u32,
        reply: Sender<String>,
    },
}

enum Msg {
    Request(Request, Sender<String>),
    Fetched(Purpose, Result<Fetched, SyncError>),
}

struct Agent {
    scope: Scope,
    info: ScopeInfo,
    cfg: AgentConfig,
    source: Option<Source>,
    start: Instant,
    rng: ring::rand::SystemRandom,
    sup: Supervisor,
    child: Option<Child>,
    poller: Poller,
    commit: crate::core::Commit,
    /// Wall-clock deadline of the pending version, for status.
    pending_deadline_unix: Option<u64>,
    live: u32,
    /// The last version rolled back: polls do not stage it again.
    rejected: Option<u32>,
    fetching: bool,
    waiter: Option<Sender<String>>,
    /// `sync --confirm` came while the pending version was still starting:
    /// confirm it (and answer the waiter) the moment it is healthy.
    confirm_when_healthy: bool,
    last_poll_ok_unix: Option<u64>,
    last_error: Option<String>,
    last_event: Option<String>,
    tx: Sender<Msg>,
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The live mgmt/agent.json's configuration, verified against `info`'s signers.
fn installed_cfg(scope: &Scope, info: &ScopeInfo) -> Result<AgentConfig, String> {
    let bytes = store::read_live(scope, AGENT_REL).map_err(|e| e.to_string())?;
    store::verify_agent(info, bytes, None)
        .map(|(_, cfg, _)| cfg)
        .map_err(|e| format!("installed mgmt/agent.json refused: {e}"))
}

/// Runs the agent for `scope` until SIGTERM/SIGINT.
pub fn run(scope: Scope) -> Result<(), String> {
    let mut info = scope.info().map_err(|e| e.to_string())?;
    let recovered = store::recover(&scope, &mut info, now_unix()).map_err(|e| e.to_string())?;
    let cfg = installed_cfg(&scope, &info)?;
    let start = Instant::now();
    let (tx, rx) = smol::channel::unbounded();
    let source = match sync::default_source(&scope, &info) {
        Ok(s) => Some(s),
        Err(e) => {
            log::warn!("no config source; polling is off: {e}");
            None
        }
    };
    let mut agent = Agent {
        source,
        poller: Poller::new(0, cfg.poll_interval_s),
        scope,
        info,
        cfg,
        start,
        rng: ring::rand::SystemRandom::new(),
        sup: Supervisor::new(),
        child: None,
        commit: crate::core::Commit::default(),
        pending_deadline_unix: None,
        live: 0,
        rejected: None,
        fetching: false,
        waiter: None,
        confirm_when_healthy: false,
        last_poll_ok_unix: None,
        last_error: None,
        last_event: None,
        tx,
    };
    match recovered {
        Recovered::Committed(v) => agent.live = v,
        Recovered::RolledBack { failed, live } => {
            agent.live = live;
            agent.rejected = Some(failed);
            agent.event(format!(
                "rolled back v{failed} to v{live}: its commit deadline passed while the agent was down"
            ));
        }
        Recovered::Pending(r) => {
            agent.live = r.pending;
            if r.auto {
                // Health-gated: commit once the vertex comes up on it.
                agent.commit.staged(0, r.pending, r.previous, None);
            } else {
                let remaining = r.deadline_unix.saturating_sub(now_unix()) * 1000;
                agent.commit.resumed(0, r.pending, r.previous, remaining);
                agent.pending_deadline_unix = Some(r.deadline_unix);
            }
            agent.event(format!(
                "resumed pending v{} (previous v{}) after an agent restart",
                r.pending, r.previous
            ));
        }
    }
    stop_orphaned_vertex(&agent.scope);
    #[cfg(windows)]
    crate::windows::kill_children_with_me();
    let listener = control::Listener::bind(&agent.scope)?;
    // The accept task holds the executor, so the listener is never dropped: remove by hand.
    let endpoint = listener.path().to_path_buf();
    smol::block_on(async move {
        log::info!(
            "agent for rete {} node {} (scope {}) running v{}; control endpoint {}",
            agent.info.rete,
            agent.info.node,
            agent.scope.name,
            agent.live,
            listener.path().display()
        );
        let ex = Rc::new(smol::LocalExecutor::new());
        ex.spawn(accept(ex.clone(), listener, agent.tx.clone()))
            .detach();
        let signals = stop_signals()?;
        ex.run(agent.main(rx, signals, ex.clone())).await;
        agent.stop_vertex();
        let _ = fs::remove_file(&endpoint);
        Ok(())
    })
}

/// The signals that ask a flor process to stop cleanly: SIGTERM (service
/// managers) and SIGINT (Ctrl-C); Windows delivers only the latter.
pub fn stop_signals() -> Result<async_signal::Signals, String> {
    #[cfg(unix)]
    let wanted = [async_signal::Signal::Term, async_signal::Signal::Int];
    #[cfg(not(unix))]
    let wanted = [async_signal::Signal::Int];
    async_signal::Signals::new(wanted).map_err(|e| format!("installing signal handlers: {e}"))
}

/// Windows: the job object of [`crate::windows::kill_children_with_me`] ends
/// a killed agent's vertex with it, so only the stale pid file is left.
#[cfg(not(unix))]
fn stop_orphaned_vertex(scope: &Scope) {
    let _ = fs::remove_file(scope.runtime.join(VERTEX_PID_FILE));
}

/// Kills a vertex left running by an agent that was killed (`kill -9`), if
/// the pid recorded for this scope still runs `flor vertex run` for it.
#[cfg(unix)]
fn stop_orphaned_vertex(scope: &Scope) {
    let pid_file = scope.runtime.join(VERTEX_PID_FILE);
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
    let ours = args.windows(2).any(|w| w[0] == b"vertex" && w[1] == b"run")
        && args
            .windows(2)
            .any(|w| w[0] == b"--rete" && w[1] == scope.name.as_bytes());
    if ours {
        log::warn!("stopping vertex pid {pid} left by a previous agent");
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

fn say(reply: &Sender<String>, line: impl Into<String>) {
    let _ = reply.try_send(line.into());
}

impl Agent {
    fn now(&self) -> Millis {
        self.start.elapsed().as_millis() as Millis
    }

    fn rand(&self) -> u32 {
        let mut b = [0u8; 4];
        let _ = ring::rand::SecureRandom::fill(&self.rng, &mut b);
        u32::from_le_bytes(b)
    }

    fn event(&mut self, e: String) {
        log::info!("{e}");
        self.last_event = Some(e);
    }

    fn status_file(&self) -> PathBuf {
        VertexStatus::path(&self.scope, VERTEX_NAME)
    }

    async fn main(
        &mut self,
        rx: Receiver<Msg>,
        mut signals: async_signal::Signals,
        ex: Rc<smol::LocalExecutor<'static>>,
    ) {
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
                Some(Some(m)) => self.handle(m, &ex),
                Some(None) => {}
            }
            self.tick(&ex);
        }
    }

    fn handle(&mut self, m: Msg, ex: &Rc<smol::LocalExecutor<'static>>) {
        match m {
            Msg::Request(Request::Status { json }, reply) => {
                say(
                    &reply,
                    if json {
                        self.status_json()
                    } else {
                        self.status_text()
                    },
                );
                say(&reply, OK);
            }
            Msg::Request(
                Request::Sync {
                    dry_run,
                    confirm,
                    timeout_s,
                },
                reply,
            ) => self.sync_request(dry_run, confirm, timeout_s, reply, ex),
            Msg::Request(Request::Reload, reply) => match self.reload_scope() {
                Ok(()) => {
                    say(
                        &reply,
                        format!(
                            "the agent re-read scope {} (v{}) and restarts its vertex with the enrolled certificates",
                            self.scope.name, self.live
                        ),
                    );
                    say(&reply, OK);
                }
                Err(e) => {
                    say(
                        &reply,
                        format!("the agent could not re-read the scope: {e}"),
                    );
                    say(&reply, FAILED);
                }
            },
            Msg::Fetched(purpose, result) => {
                self.fetching = false;
                self.fetched(purpose, result);
            }
        }
    }

    /// Adopts what `flor enroll` wrote under the running agent: scope.json,
    /// the live version (installed committed) and the certificates, which
    /// only a new vertex loads. A commit in flight is void: enroll installed
    /// its version as committed.
    fn reload_scope(&mut self) -> Result<(), String> {
        let info = self.scope.info().map_err(|e| e.to_string())?;
        let live = store::live_version(&self.scope).ok_or("nothing is installed")?;
        let cfg = installed_cfg(&self.scope, &info)?;
        self.source = sync::default_source(&self.scope, &info).ok();
        self.poller.set_interval(cfg.poll_interval_s);
        self.info = info;
        self.cfg = cfg;
        self.live = live;
        self.rejected = None;
        self.commit = crate::core::Commit::default();
        self.pending_deadline_unix = None;
        self.confirm_when_healthy = false;
        if let Some(w) = self.waiter.take() {
            say(&w, "a re-enrollment replaced the pending version");
            say(&w, FAILED);
        }
        self.event(format!(
            "re-enrolled: running v{live} with the scope's new certificates"
        ));
        self.restart_vertex();
        Ok(())
    }

    fn sync_request(
        &mut self,
        dry_run: bool,
        confirm: bool,
        timeout_s: Option<u32>,
        reply: Sender<String>,
        ex: &Rc<smol::LocalExecutor<'static>>,
    ) {
        if let Some(p) = self.commit.pending().copied() {
            if confirm && !dry_run {
                if !p.healthy {
                    if self.waiter.is_some() {
                        say(&reply, "another sync is in progress; try again in a moment");
                        say(&reply, FAILED);
                        return;
                    }
                    // The operator's intent is clear: wait for health, then confirm.
                    say(
                        &reply,
                        format!(
                            "v{} is starting; confirming it once it is healthy",
                            p.version
                        ),
                    );
                    self.waiter = Some(reply);
                    self.confirm_when_healthy = true;
                    return;
                }
                let d = self.commit.confirm();
                self.decide(d);
                say(&reply, format!("confirmed v{}", p.version));
                say(&reply, OK);
                return;
            }
            if !dry_run {
                say(
                    &reply,
                    format!(
                        "v{} is pending confirmation; confirm it with `flor agent sync --confirm` or let it roll back",
                        p.version
                    ),
                );
                say(&reply, FAILED);
                return;
            }
        }
        if self.fetching || self.waiter.is_some() {
            say(&reply, "another sync is in progress; try again in a moment");
            say(&reply, FAILED);
            return;
        }
        let Some(source) = self.source.clone() else {
            say(
                &reply,
                "this scope has no config source this build can reach (no mirror_url)",
            );
            say(&reply, FAILED);
            return;
        };
        say(&reply, format!("fetching from {source}"));
        let purpose = Purpose::Sync {
            dry_run,
            confirm,
            timeout_s: timeout_s.unwrap_or(self.cfg.commit_timeout_s),
            reply,
        };
        self.start_fetch(purpose, source, ex);
    }

    fn start_fetch(
        &mut self,
        purpose: Purpose,
        source: Source,
        ex: &Rc<smol::LocalExecutor<'static>>,
    ) {
        self.fetching = true;
        let scope = self.scope.clone();
        let info = self.info.clone();
        let tx = self.tx.clone();
        ex.spawn(async move {
            let r = sync::fetch_for(&scope, &info, &source).await;
            let _ = tx.send(Msg::Fetched(purpose, r)).await;
        })
        .detach();
    }

    fn fetched(&mut self, purpose: Purpose, result: Result<Fetched, SyncError>) {
        let now = self.now();
        match purpose {
            Purpose::Poll => match result {
                Err(e) => {
                    let d = self.poller.failed(now, self.rand());
                    log::warn!(
                        "poll failed ({} in a row), retrying in {} ms: {e}",
                        self.poller.failures(),
                        d
                    );
                    self.last_error = Some(e.to_string());
                }
                Ok(Fetched::UpToDate(_)) => {
                    self.poller.succeeded(now);
                    self.last_poll_ok_unix = Some(now_unix());
                    self.last_error = None;
                }
                Ok(Fetched::New(v)) => {
                    self.poller.succeeded(now);
                    self.last_poll_ok_unix = Some(now_unix());
                    self.last_error = None;
                    if self.rejected == Some(v.version()) || self.commit.pending().is_some() {
                        return;
                    }
                    self.stage(&v, None, None);
                }
            },
            Purpose::Sync {
                dry_run,
                confirm,
                timeout_s,
                reply,
            } => match result {
                Err(e) => {
                    let what = match e {
                        SyncError::Fetch(_) => "cannot fetch",
                        SyncError::Store(_) => "refused",
                    };
                    self.last_error = Some(e.to_string());
                    say(&reply, format!("{what}: {e}"));
                    say(&reply, format!("still running v{}", self.live));
                    say(&reply, FAILED);
                }
                Ok(Fetched::UpToDate(v)) => {
                    say(&reply, format!("up to date: v{v} is running"));
                    say(&reply, OK);
                }
                Ok(Fetched::New(v)) if dry_run => {
                    let live_h = store::live_header(&self.scope, AGENT_REL);
                    let live_vx: Vec<_> = v
                        .vertices
                        .iter()
                        .filter_map(|nv| {
                            let b =
                                store::read_live(&self.scope, &store::vertex_rel(&nv.name)).ok()?;
                            store::verify_vertex(&self.info, &nv.name, b, None)
                                .ok()
                                .map(|x| x.config)
                        })
                        .collect();
                    for l in store::diff(live_h.as_ref().map(|h| (h, &live_vx[..])), &v) {
                        say(&reply, l);
                    }
                    say(&reply, "dry run: nothing was changed");
                    say(&reply, OK);
                }
                Ok(Fetched::New(v)) => {
                    let timeout = if confirm { None } else { Some(timeout_s) };
                    if self.stage(&v, timeout, Some(reply.clone())) {
                        say(
                            &reply,
                            format!(
                                "staged v{} (was v{}); restarting the vertex",
                                v.version(),
                                self.commit.pending().map_or(0, |p| p.previous)
                            ),
                        );
                    } else {
                        say(&reply, FAILED);
                    }
                }
            },
        }
    }

    /// Stages a verified version and restarts the vertex on it.
    /// `timeout_s` `None` commits once healthy. Returns whether it was staged.
    fn stage(
        &mut self,
        v: &store::Verified,
        timeout_s: Option<u32>,
        reply: Option<Sender<String>>,
    ) -> bool {
        let now = self.now();
        let previous = self.live;
        let window_s = timeout_s.unwrap_or((HEALTH_WINDOW_MS / 1000) as u32);
        let deadline = now_unix() + u64::from(window_s);
        if let Err(e) = store::stage(&self.scope, v, previous, deadline, timeout_s.is_none()) {
            let msg = format!("staging v{} failed: {e}", v.version());
            if let Some(r) = &reply {
                say(r, msg.clone());
            }
            self.event(msg);
            return false;
        }
        self.live = v.version();
        self.commit.staged(
            now,
            v.version(),
            previous,
            timeout_s.map(|t| u64::from(t) * 1000),
        );
        self.pending_deadline_unix = timeout_s.map(|_| deadline);
        self.waiter = reply;
        self.event(format!("staged v{} (previous v{previous})", v.version()));
        self.restart_vertex();
        true
    }

    fn restart_vertex(&mut self) {
        self.stop_vertex();
        self.sup.restart_now(self.now());
    }

    fn stop_vertex(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = fs::remove_file(self.scope.runtime.join(VERTEX_PID_FILE));
    }

    fn spawn_vertex(&mut self) {
        let now = self.now();
        let _ = fs::remove_file(self.status_file());
        let exe = match std::env::current_exe() {
            Ok(e) => e,
            Err(e) => {
                log::error!("cannot find the flor binary: {e}");
                self.sup.spawn_failed(now, self.rand());
                return;
            }
        };
        let spawned = Command::new(exe)
            .args([
                "vertex",
                "run",
                "--rete",
                &self.scope.name,
                "--name",
                VERTEX_NAME,
            ])
            .stdin(Stdio::null())
            .spawn();
        match spawned {
            Ok(c) => {
                let pid = c.id();
                let _ = crate::fsutil::write_atomic(
                    &self.scope.runtime.join(VERTEX_PID_FILE),
                    pid.to_string().as_bytes(),
                    0o644,
                );
                log::info!("vertex started, pid {pid}");
                self.child = Some(c);
                self.sup.spawned(now, pid);
            }
            Err(e) => {
                log::error!("cannot start the vertex: {e}");
                self.sup.spawn_failed(now, self.rand());
            }
        }
    }

    fn tick(&mut self, ex: &Rc<smol::LocalExecutor<'static>>) {
        let now = self.now();
        // The child.
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
            self.child = None;
            let was_healthy = self.sup.exited(now, self.rand());
            log::warn!(
                "vertex exited ({status}){}; restart #{}",
                if was_healthy {
                    ""
                } else {
                    " before becoming healthy"
                },
                self.sup.restarts()
            );
            let d = self.commit.vertex_exited();
            self.decide(d);
        }
        // Healthy when this very process reported its bindings (the vertex
        // writes the status file only after every listener is bound).
        let reported = self.child.as_ref().is_some_and(|c| {
            VertexStatus::read(&self.status_file()).is_some_and(|st| st.pid == c.id())
        });
        match self.sup.tick(now, reported) {
            SupervisorEvent::Spawn => self.spawn_vertex(),
            SupervisorEvent::BecameHealthy => {
                log::info!("vertex healthy");
                let d = self.commit.vertex_healthy();
                self.decide(d);
            }
            SupervisorEvent::None => {}
        }
        let d = self.commit.tick(now);
        self.decide(d);
        if !self.fetching && self.commit.pending().is_none() {
            if let Some(src) = self.source.clone() {
                if self.poller.start_if_due(now) {
                    self.start_fetch(Purpose::Poll, src, ex);
                }
            }
        }
    }

    fn reload_agent_cfg(&mut self) {
        if let Ok(cfg) = installed_cfg(&self.scope, &self.info) {
            self.poller.set_interval(cfg.poll_interval_s);
            self.cfg = cfg;
        }
    }

    fn decide(&mut self, d: CommitDecision) {
        match d {
            CommitDecision::Wait => {}
            CommitDecision::AwaitConfirm if self.confirm_when_healthy => {
                self.confirm_when_healthy = false;
                let d = self.commit.confirm();
                self.decide(d);
            }
            CommitDecision::AwaitConfirm => {
                if let (Some(r), Some(p)) = (self.waiter.take(), self.commit.pending()) {
                    let left = self
                        .pending_deadline_unix
                        .map_or(0, |d| d.saturating_sub(now_unix()));
                    say(
                        &r,
                        format!(
                            "v{} is running and healthy; it rolls back to v{} in {left} s unless confirmed with `flor agent sync --confirm`",
                            p.version, p.previous
                        ),
                    );
                    say(&r, OK);
                }
            }
            CommitDecision::Commit => {
                let v = self.live;
                // The previous version is the one before this stage; keep it for rollback.
                let prev = self.prev_generation();
                match store::commit(&self.scope, &mut self.info, v, prev) {
                    Ok(()) => self.event(format!("committed v{v}")),
                    Err(e) => self.event(format!("committing v{v} failed: {e}")),
                }
                self.pending_deadline_unix = None;
                self.reload_agent_cfg();
                if let Some(r) = self.waiter.take() {
                    say(&r, format!("v{v} is running and healthy; committed"));
                    say(&r, OK);
                }
            }
            CommitDecision::RollBack(reason) => {
                let failed = self.live;
                let Some(rec) = store::read_commit(&self.scope) else {
                    self.event(format!(
                        "cannot roll back v{failed}: commit.json is missing"
                    ));
                    return;
                };
                let msg = match store::roll_back(&self.scope, rec.pending, rec.previous) {
                    Ok(()) => {
                        self.live = rec.previous;
                        format!(
                            "rolled back v{failed} to v{} because {reason}",
                            rec.previous
                        )
                    }
                    Err(e) => format!("rolling back v{failed} failed: {e}"),
                };
                self.rejected = Some(failed);
                self.pending_deadline_unix = None;
                self.confirm_when_healthy = false;
                self.event(msg.clone());
                self.reload_agent_cfg();
                self.restart_vertex();
                if let Some(r) = self.waiter.take() {
                    say(&r, msg);
                    say(&r, FAILED);
                }
            }
        }
    }

    /// The newest generation other than the live one (the rollback target after a commit).
    fn prev_generation(&self) -> Option<u32> {
        let dir = self.scope.install.join(store::GEN_DIR);
        fs::read_dir(dir)
            .ok()?
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|v| *v != self.live)
            .max()
    }

    fn vertex_fields(&self) -> (Option<u32>, &'static str) {
        match self.sup.state() {
            VertexState::Running { pid, healthy, .. } => {
                (Some(pid), if healthy { "healthy" } else { "starting" })
            }
            VertexState::Waiting { .. } => (None, "restarting"),
        }
    }

    /// The running vertex's own report of its bindings, if it wrote one.
    fn vertex_report(&self) -> Option<VertexStatus> {
        let pid = self.child.as_ref()?.id();
        VertexStatus::read(&self.status_file()).filter(|s| s.pid == pid)
    }

    /// The QUIC listen address the live artifact asks for.
    fn preferred_udp(&self) -> Option<String> {
        let name = flor_vertex::identity::Name::new(VERTEX_NAME).ok()?;
        let b = store::read_live(&self.scope, &store::vertex_rel(&name)).ok()?;
        let v = store::verify_vertex(&self.info, &name, b, None).ok()?;
        v.config.listen.map(|a| a.to_string())
    }

    /// Every listener with its preferred and actual address, as JSON (or "unknown").
    fn listeners_json(&self) -> String {
        let Some(st) = self.vertex_report() else {
            return "\"unknown\"".into();
        };
        let mut o = String::from("[");
        if let Some(udp) = st.udp {
            let _ = write!(
                o,
                "{{\"kind\":\"quic\",\"preferred\":{},\"actual\":\"{udp}\"}}",
                self.preferred_udp()
                    .map_or_else(|| "null".to_string(), |p| json_str(&p))
            );
        }
        for s in st.socks.iter() {
            if o.len() > 1 {
                o.push(',');
            }
            let _ = write!(
                o,
                "{{\"kind\":\"socks5\",\"principal\":{},\"preferred\":{},\"actual\":{}}}",
                json_str(&s.principal.to_string()),
                s.preferred,
                s.actual
            );
        }
        o.push(']');
        o
    }

    fn listeners_text(&self) -> String {
        let Some(st) = self.vertex_report() else {
            return "  unknown (the vertex has not reported its bindings)\n".into();
        };
        let mut o = String::new();
        if let Some(udp) = st.udp {
            let _ = writeln!(
                o,
                "  quic    preferred {} actual {udp}",
                self.preferred_udp().unwrap_or_else(|| "-".into())
            );
        }
        for s in st.socks.iter() {
            let _ = writeln!(
                o,
                "  socks5  preferred 127.0.0.1:{} actual 127.0.0.1:{}{}  {}",
                s.preferred,
                s.actual,
                if s.preferred == s.actual {
                    ""
                } else {
                    " (preferred port was taken)"
                },
                s.principal
            );
        }
        o
    }

    fn status_json(&self) -> String {
        let now = self.now();
        let mut o = String::from("{");
        let _ = write!(o, "\"scope\":{}", json_str(&self.scope.name));
        let _ = write!(o, ",\"rete\":{}", json_str(self.info.rete.as_str()));
        let _ = write!(o, ",\"node\":{}", json_str(self.info.node.as_str()));
        let _ = write!(o, ",\"port_offset\":{}", self.info.port_offset);
        let _ = write!(o, ",\"version\":{}", self.live);
        match self.commit.pending() {
            Some(p) => {
                let _ = write!(
                    o,
                    ",\"pending\":{{\"version\":{},\"previous\":{},\"healthy\":{},\"deadline_unix\":{}}}",
                    p.version,
                    p.previous,
                    p.healthy,
                    self.pending_deadline_unix
                        .map_or_else(|| "null".to_string(), |d| d.to_string())
                );
            }
            None => o.push_str(",\"pending\":null"),
        }
        let (pid, health) = self.vertex_fields();
        let _ = write!(
            o,
            ",\"vertex\":{{\"name\":\"{VERTEX_NAME}\",\"pid\":{},\"health\":\"{health}\",\"restarts\":{}}}",
            pid.map_or_else(|| "null".to_string(), |p| p.to_string()),
            self.sup.restarts()
        );
        let _ = write!(
            o,
            ",\"poll\":{{\"source\":{},\"failures\":{},\"next_in_ms\":{},\"last_ok_unix\":{},\"last_error\":{}}}",
            self.source
                .as_ref()
                .map_or_else(|| "null".to_string(), |s| json_str(&s.to_string())),
            self.poller.failures(),
            self.poller.next_in(now),
            self.last_poll_ok_unix
                .map_or_else(|| "null".to_string(), |t| t.to_string()),
            self.last_error
                .as_deref()
                .map_or_else(|| "null".to_string(), json_str)
        );
        let _ = write!(
            o,
            ",\"last_event\":{}",
            self.last_event
                .as_deref()
                .map_or_else(|| "null".to_string(), json_str)
        );
        let _ = write!(o, ",\"listeners\":{}", self.listeners_json());
        o.push('}');
        o
    }

    fn status_text(&self) -> String {
        let now = self.now();
        let mut o = String::new();
        let _ = writeln!(
            o,
            "scope:    {} (rete {}, node {})",
            self.scope.name, self.info.rete, self.info.node
        );
        let _ = writeln!(o, "version:  v{}", self.live);
        match self.commit.pending() {
            Some(p) => {
                let left = self
                    .pending_deadline_unix
                    .map(|d| d.saturating_sub(now_unix()));
                let _ = writeln!(
                    o,
                    "pending:  v{} ({}), rolls back to v{}{}",
                    p.version,
                    if p.healthy { "healthy" } else { "starting" },
                    p.previous,
                    left.map_or_else(
                        || " if it fails to come up".to_string(),
                        |l| format!(" in {l} s unless confirmed")
                    )
                );
            }
            None => o.push_str("pending:  none\n"),
        }
        let (pid, health) = self.vertex_fields();
        let _ = writeln!(
            o,
            "vertex:   {VERTEX_NAME} pid {} {health}, {} restarts",
            pid.map_or_else(|| "-".to_string(), |p| p.to_string()),
            self.sup.restarts()
        );
        let _ = writeln!(
            o,
            "poll:     {} failures in a row, next in {} s{}",
            self.poller.failures(),
            self.poller.next_in(now) / 1000,
            self.last_error
                .as_deref()
                .map_or_else(String::new, |e| format!("; last error: {e}"))
        );
        if let Some(e) = &self.last_event {
            let _ = writeln!(o, "event:    {e}");
        }
        let _ = write!(
            o,
            "listeners (port offset {}):\n{}",
            self.info.port_offset,
            self.listeners_text()
        );
        o.truncate(o.trim_end().len());
        o
    }
}

/// A JSON string literal.
fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}
