//! The whole decision logic of `flor agent run`, without I/O.
//!
//! The shell (`crate::agent`) feeds [`Input`]s — a tick, a control request,
//! the outcome of a fetch, what happened to the vertex — together with the
//! time ([`Now`]), and carries out the [`Action`]s the machine queues: spawn,
//! stop or re-configure the vertex, fetch, stage, commit, roll back, answer a
//! client. Nothing here touches a clock, a socket, a process or a file, so
//! every path (sync, confirm, commit timeout, rollback, unhealthy start, poll
//! backoff, reload, in-place apply) is a unit test with a fake clock below —
//! the quinn-proto model beside quinn.
//!
//! ```text
//! Tick ──> supervisor (spawn / healthy) ──> commit timers ──> poll due? ──> Fetch
//! Fetched(New) ──> Stage ──> Staged ──> hot? Apply : Stop + Spawn ──> Applied / healthy
//!                                             ──> commit (auto) | await confirm | roll back
//! ```
//!
//! A version moves through one of two paths, chosen from the difference of
//! the live and the new vertex artifact (`VertexConfig::change_to`): a change
//! of permission tables only is applied in place by the running vertex and
//! keeps every established flow; anything else restarts the vertex. The
//! commit timeout and rollback are the same for both; rolling back a hot
//! change is a hot change back.

use core::fmt;
use std::collections::VecDeque;

use flor_vertex::artifact::Change;

use super::roles::{Hosted, Role, RoleAction, RoleSpec, RoleView, Roles};
use super::{
    Commit, CommitDecision, Millis, Pending, Poller, RollbackReason, Supervisor, SupervisorEvent,
    VertexState, HEALTH_WINDOW_MS,
};
use crate::control::Request;
use crate::status::HEALTHY;

/// A control client waiting for answer lines; the shell numbers them.
pub type ClientId = u32;

/// The time of an input: the shell's monotonic clock for timers, the wall
/// clock for deadlines that must survive an agent restart and for status,
/// and fresh randomness for jitter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// Milliseconds on the monotonic clock.
    pub ms: Millis,
    /// Unix seconds.
    pub unix: u64,
    /// A random number for backoff jitter.
    pub rand: u32,
}

/// How a fetch ended, as far as decisions need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchOutcome {
    /// Nothing usable came back.
    Failed {
        /// The source answered, but an artifact was refused (signature, version, payload).
        refused: bool,
        /// Why, for a person.
        error: String,
    },
    /// The source serves the live version.
    UpToDate(u32),
    /// A newer, verified version; the shell keeps its bytes until [`Action::Stage`].
    New {
        /// Its version.
        version: u32,
        /// How the running vertex would move to it.
        change: Change,
        /// What `--dry-run` prints: the differences to the live version.
        diff: Vec<String>,
    },
}

/// Why [`Action::Stage`] staged nothing. The machine only reports it; the
/// store's own error holds I/O types the core does not carry, so the shell
/// hands over its words.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StageError {
    /// The version to stage is no longer the one the shell fetched.
    Gone,
    /// The store could not write the new generation: what it said.
    Store(String),
}

impl fmt::Display for StageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StageError::Gone => f.write_str("the fetched version is gone"),
            StageError::Store(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for StageError {}

/// Why [`Action::Rescope`] could not re-read the scope; as with
/// [`StageError`], the shell's errors arrive as its words.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RescopeError {
    /// scope.json could not be read: what the shell said.
    Scope(String),
    /// The scope has no live version.
    NothingInstalled,
    /// The live mgmt/agent.json could not be read or was refused: what the shell said.
    AgentConfig(String),
}

impl fmt::Display for RescopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RescopeError::Scope(e) | RescopeError::AgentConfig(e) => f.write_str(e),
            RescopeError::NothingInstalled => f.write_str("nothing is installed"),
        }
    }
}

impl std::error::Error for RescopeError {}

/// What the shell learned when it re-read the scope (`reload` after `flor enroll`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scoped {
    /// The live version on disk.
    pub live: u32,
    /// Where polls go, as a person reads it; `None`: polling is off.
    pub source: Option<String>,
    /// agent.json's poll interval.
    pub poll_interval_s: u32,
    /// agent.json's commit timeout.
    pub commit_timeout_s: u32,
}

/// Something that happened, fed to [`Machine::handle`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// Time passed; `reported`: the running vertex wrote its status file (all listeners bound).
    Tick {
        /// Whether the running vertex has reported its bindings.
        reported: bool,
    },
    /// A control request from a client.
    Request {
        /// Who asks.
        from: ClientId,
        /// What.
        req: Request,
    },
    /// The fetch of [`Action::Fetch`] ended.
    Fetched(FetchOutcome),
    /// [`Action::Stage`] finished: `Err` says why nothing was staged.
    Staged(Result<(), StageError>),
    /// [`Action::SpawnVertex`] started this process.
    Spawned {
        /// Its pid.
        pid: u32,
    },
    /// [`Action::SpawnVertex`] could not start a process.
    SpawnFailed,
    /// The vertex process exited on its own.
    Exited,
    /// The vertex applied the live artifact of this version in place.
    Applied {
        /// The version it now runs.
        version: u32,
    },
    /// The vertex did not apply in place (it needs a restart, or could not load the artifact).
    ApplyRefused {
        /// What the vertex said.
        reason: String,
    },
    /// [`Action::Rescope`] finished.
    Rescoped {
        /// The client that asked for the reload.
        to: ClientId,
        /// The re-read scope, or why it could not be read.
        result: Result<Scoped, RescopeError>,
    },
    /// agent.json's values after a commit or a rollback changed the live version.
    Config {
        /// Seconds between polls.
        poll_interval_s: u32,
        /// Default commit timeout of `sync`.
        commit_timeout_s: u32,
    },
    /// A commit or rollback on disk failed; the machine records it for status.
    StoreFailed(String),
    /// The certificates the scope holds now (at start, after a reload, a commit or a rollback).
    Certificates(Vec<HeldCert>),
    /// The management roles the live vertex artifact asks this node to host
    /// (at start and whenever the live version changed).
    Hosted {
        /// From [`super::roles::hosted`].
        hosted: Hosted,
        /// Whether this build carries the roles (the `mgmt` cargo feature).
        carried: bool,
    },
    /// [`Action::SpawnRole`] started this process.
    RoleSpawned {
        /// Which role.
        role: Role,
        /// Its pid.
        pid: u32,
    },
    /// [`Action::SpawnRole`] could not start a process.
    RoleSpawnFailed(Role),
    /// A role's process exited on its own.
    RoleExited(Role),
}

/// A certificate the machine watches for expiry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldCert {
    /// Whose: a SPIFFE ID, or "the rete CA".
    pub who: String,
    /// Its `notAfter`, Unix seconds.
    pub not_after: i64,
}

/// Days before `notAfter` at which the agent warns, once each; and once more when expired.
pub const EXPIRY_WARN_DAYS: [i64; 3] = [30, 7, 1];

/// What the shell must do, in order ([`Machine::poll_action`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Start `flor vertex run` from the running binary; answer with Spawned / SpawnFailed.
    SpawnVertex,
    /// Stop the running vertex (it is started again by a later [`Action::SpawnVertex`]).
    StopVertex,
    /// Ask the running vertex to load the live artifact in place; it answers Applied / ApplyRefused.
    Apply {
        /// The version now live.
        version: u32,
    },
    /// Fetch from the config source; answer with Fetched.
    Fetch,
    /// Write the fetched version as a generation, record it pending, make it live; answer with Staged.
    Stage {
        /// The fetched version.
        version: u32,
        /// The version to return to.
        previous: u32,
        /// Wall-clock deadline of the confirmation (or of the health window).
        deadline_unix: u64,
        /// Commit as soon as healthy instead of waiting for a confirmation.
        auto: bool,
    },
    /// Make the live version permanent; then send Config.
    Commit {
        /// The version committed.
        version: u32,
    },
    /// Switch back to `previous` and forget `failed`; then send Config.
    RollBack {
        /// The version given up.
        failed: u32,
        /// The version live again.
        previous: u32,
    },
    /// Re-read scope.json and the live version; answer with Rescoped.
    Rescope {
        /// The client that asked.
        to: ClientId,
    },
    /// One line to a client.
    Reply {
        /// The client.
        to: ClientId,
        /// The line.
        line: String,
    },
    /// Render the status (the shell adds what only it knows) to a client.
    Status {
        /// The client.
        to: ClientId,
        /// As JSON rather than text.
        json: bool,
    },
    /// The last line to a client: OK or FAILED; the connection closes.
    Finish {
        /// The client.
        to: ClientId,
        /// Whether the request succeeded.
        ok: bool,
    },
    /// Start `flor <role>` from the running binary for this scope; answer with RoleSpawned / RoleSpawnFailed.
    SpawnRole(RoleSpec),
    /// Stop a role's process (no answer: it is gone when this returns).
    StopRole(Role),
    /// Log a warning: a held certificate crossed an [`EXPIRY_WARN_DAYS`] mark or expired.
    WarnExpiry {
        /// Whose certificate.
        who: String,
        /// Seconds until its `notAfter` (negative: expired).
        seconds_left: i64,
        /// Its `notAfter`, Unix seconds.
        not_after: i64,
    },
}

/// Why a fetch was started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    Poll,
    Sync {
        dry_run: bool,
        confirm: bool,
        timeout_s: u32,
        to: ClientId,
        /// A poll was in flight when the sync came: its result counts for the poller too.
        also_poll: bool,
    },
}

/// A stage asked of the shell and not yet answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Staging {
    version: u32,
    previous: u32,
    hot: bool,
    timeout_ms: Option<Millis>,
    deadline_unix: u64,
    to: Option<ClientId>,
}

/// How the agent was found at start ([`crate::store::recover`], decided here).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// A committed version is live.
    Committed(u32),
    /// A staged version is live; `auto`: commit once healthy, else wait for
    /// confirmation until `deadline_unix`.
    Pending {
        /// The staged version.
        pending: u32,
        /// The version to return to.
        previous: u32,
        /// Confirmation deadline.
        deadline_unix: u64,
        /// Commit on health.
        auto: bool,
    },
    /// A staged version's window passed while the agent was down: it was rolled back.
    RolledBack {
        /// The version given up.
        failed: u32,
        /// The version live now.
        live: u32,
    },
}

/// What status shows of the machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View<'a> {
    /// The live version.
    pub live: u32,
    /// The pending version, if any.
    pub pending: Option<Pending>,
    /// Wall-clock deadline of the pending version's confirmation.
    pub pending_deadline_unix: Option<u64>,
    /// Vertex pid, if one runs.
    pub vertex_pid: Option<u32>,
    /// "healthy", "starting" or "restarting".
    pub vertex_health: &'static str,
    /// Crashes since the agent started.
    pub vertex_restarts: u32,
    /// Where polls go.
    pub source: Option<&'a str>,
    /// Failed polls in a row.
    pub poll_failures: u32,
    /// Milliseconds until the next poll.
    pub poll_next_in_ms: Millis,
    /// When a poll last succeeded.
    pub poll_last_ok_unix: Option<u64>,
    /// The last poll or sync error.
    pub last_error: Option<&'a str>,
    /// The last thing the agent did or decided.
    pub last_event: Option<&'a str>,
    /// Versions applied in place since the agent started.
    pub applied_in_place: u32,
    /// The management roles this node hosts.
    pub roles: Vec<RoleView>,
}

/// The agent's decisions for one scope.
#[derive(Debug)]
pub struct Machine {
    scope: String,
    source: Option<String>,
    commit_timeout_s: u32,
    live: u32,
    /// The last version rolled back: polls do not stage it again.
    rejected: Option<u32>,
    sup: Supervisor,
    poller: Poller,
    commit: Commit,
    /// Wall-clock deadline of the pending version, for status and replies.
    pending_deadline_unix: Option<u64>,
    /// The pending version is applied in place (its rollback is too).
    pending_hot: bool,
    fetch: Option<Purpose>,
    staging: Option<Staging>,
    /// The client waiting for the pending version's outcome.
    waiter: Option<ClientId>,
    /// `sync --confirm` came while the pending version was starting: confirm on health.
    confirm_when_healthy: bool,
    /// An in-place apply asked of the vertex and not yet answered.
    applying: Option<u32>,
    applied_in_place: u32,
    last_poll_ok_unix: Option<u64>,
    last_error: Option<String>,
    last_event: Option<String>,
    actions: VecDeque<Action>,
    /// Held certificates, each with how many expiry marks were warned about.
    certs: Vec<(HeldCert, usize)>,
    /// The management roles this node hosts and their processes.
    roles: Roles,
}

impl Machine {
    /// A machine for `scope`, started at `now` in the state recovery found.
    pub fn new(now: Now, scope: &str, start: Start, cfg: Scoped) -> Machine {
        let mut m = Machine {
            scope: scope.into(),
            source: cfg.source,
            commit_timeout_s: cfg.commit_timeout_s,
            live: cfg.live,
            rejected: None,
            sup: Supervisor::new(),
            poller: Poller::new(now.ms, cfg.poll_interval_s),
            commit: Commit::default(),
            pending_deadline_unix: None,
            pending_hot: false,
            fetch: None,
            staging: None,
            waiter: None,
            confirm_when_healthy: false,
            applying: None,
            applied_in_place: 0,
            last_poll_ok_unix: None,
            last_error: None,
            last_event: None,
            actions: VecDeque::new(),
            certs: Vec::new(),
            roles: Roles::default(),
        };
        match start {
            Start::Committed(v) => m.live = v,
            Start::RolledBack { failed, live } => {
                m.live = live;
                m.rejected = Some(failed);
                m.event(format!(
                    "rolled back v{failed} to v{live}: its commit deadline passed while the agent was down"
                ));
            }
            Start::Pending {
                pending,
                previous,
                deadline_unix,
                auto,
            } => {
                m.live = pending;
                if auto {
                    m.commit.staged(now.ms, pending, previous, None);
                } else {
                    let remaining = deadline_unix.saturating_sub(now.unix) * 1000;
                    m.commit.resumed(now.ms, pending, previous, remaining);
                    m.pending_deadline_unix = Some(deadline_unix);
                }
                m.event(format!(
                    "resumed pending v{pending} (previous v{previous}) after an agent restart"
                ));
            }
        }
        m
    }

    /// The next thing the shell must do.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The live version.
    pub fn live(&self) -> u32 {
        self.live
    }

    /// What status shows.
    pub fn view(&self, now: Now) -> View<'_> {
        let (vertex_pid, vertex_health) = match self.sup.state() {
            VertexState::Running { pid, healthy, .. } => {
                (Some(pid), if healthy { HEALTHY } else { "starting" })
            }
            VertexState::Waiting { .. } => (None, "restarting"),
        };
        View {
            live: self.live,
            pending: self.commit.pending().copied(),
            pending_deadline_unix: self.pending_deadline_unix,
            vertex_pid,
            vertex_health,
            vertex_restarts: self.sup.restarts(),
            source: self.source.as_deref(),
            poll_failures: self.poller.failures(),
            poll_next_in_ms: self.poller.next_in(now.ms),
            poll_last_ok_unix: self.last_poll_ok_unix,
            last_error: self.last_error.as_deref(),
            last_event: self.last_event.as_deref(),
            applied_in_place: self.applied_in_place,
            roles: self.roles.view(),
        }
    }

    /// Feeds one input; the actions it causes are queued.
    pub fn handle(&mut self, now: Now, input: Input) {
        match input {
            Input::Tick { reported } => self.tick(now, reported),
            Input::Request { from, req } => self.request(now, from, req),
            Input::Fetched(outcome) => self.fetched(now, outcome),
            Input::Staged(result) => self.staged(now, result),
            Input::Spawned { pid } => self.sup.spawned(now.ms, pid),
            Input::SpawnFailed => self.sup.spawn_failed(now.ms, now.rand),
            Input::Exited => {
                let was_healthy = self.sup.exited(now.ms, now.rand);
                log::warn!(
                    "vertex exited{}; restart #{}",
                    if was_healthy {
                        ""
                    } else {
                        " before becoming healthy"
                    },
                    self.sup.restarts()
                );
                self.applying = None;
                self.step(now, Commit::vertex_exited);
            }
            Input::Applied { version } => self.applied(now, version),
            Input::ApplyRefused { reason } => {
                let Some(v) = self.applying.take() else {
                    return;
                };
                self.event(format!(
                    "the vertex did not apply v{v} in place ({reason}); restarting it"
                ));
                self.restart_vertex(now);
            }
            Input::Rescoped { to, result } => self.rescoped(now, to, result),
            Input::Config {
                poll_interval_s,
                commit_timeout_s,
            } => {
                self.poller.set_interval(poll_interval_s);
                self.commit_timeout_s = commit_timeout_s;
            }
            Input::StoreFailed(e) => {
                self.event(e);
            }
            Input::Certificates(held) => {
                // A certificate seen before keeps its warnings; a renewed one starts afresh.
                let old = std::mem::take(&mut self.certs);
                self.certs = held
                    .into_iter()
                    .map(|c| {
                        let warned = old.iter().find(|(o, _)| *o == c).map_or(0, |(_, w)| *w);
                        (c, warned)
                    })
                    .collect();
                self.check_expiry(now);
            }
            Input::Hosted { hosted, carried } => {
                let mut out = Vec::new();
                self.roles.set(now.ms, &hosted, carried, &mut out);
                self.role_actions(out);
            }
            Input::RoleSpawned { role, pid } => self.roles.spawned(role, now.ms, pid),
            Input::RoleSpawnFailed(role) => self.roles.spawn_failed(role, now.ms, now.rand),
            Input::RoleExited(role) => {
                if let Some(d) = self.roles.exited(role, now.ms, now.rand) {
                    log::warn!("{role} exited; restarting it in {d} ms");
                }
            }
        }
    }

    fn role_actions(&mut self, out: Vec<RoleAction>) {
        for a in out {
            self.push(match a {
                RoleAction::Spawn(spec) => Action::SpawnRole(spec),
                RoleAction::Stop(role) => Action::StopRole(role),
            });
        }
    }

    /// Queues one warning per certificate that crossed a mark since the last
    /// check: 30, 7 and 1 days before `notAfter`, and once expired. A
    /// certificate found already past several marks gets one warning.
    fn check_expiry(&mut self, now: Now) {
        let unix = i64::try_from(now.unix).unwrap_or(i64::MAX);
        for (c, warned) in &mut self.certs {
            let left = c.not_after.saturating_sub(unix);
            let marks = EXPIRY_WARN_DAYS
                .iter()
                .filter(|&&d| left <= d * flor_vertex::validity::DAY_S)
                .count()
                + usize::from(left < 0);
            if marks > *warned {
                *warned = marks;
                self.actions.push_back(Action::WarnExpiry {
                    who: c.who.clone(),
                    seconds_left: left,
                    not_after: c.not_after,
                });
            }
        }
    }

    fn push(&mut self, a: Action) {
        self.actions.push_back(a);
    }

    fn say(&mut self, to: ClientId, line: impl Into<String>) {
        self.push(Action::Reply {
            to,
            line: line.into(),
        });
    }

    fn finish(&mut self, to: ClientId, ok: bool) {
        self.push(Action::Finish { to, ok });
    }

    fn fail(&mut self, to: ClientId, line: impl Into<String>) {
        self.say(to, line);
        self.finish(to, false);
    }

    fn event(&mut self, e: String) {
        log::info!("{e}");
        self.last_event = Some(e);
    }

    fn vertex_healthy(&self) -> bool {
        matches!(self.sup.state(), VertexState::Running { healthy: true, .. })
    }

    fn restart_vertex(&mut self, now: Now) {
        self.applying = None;
        self.push(Action::StopVertex);
        self.sup.restart_now(now.ms);
    }

    fn tick(&mut self, now: Now, reported: bool) {
        self.check_expiry(now);
        let mut out = Vec::new();
        self.roles.tick(now.ms, &mut out);
        self.role_actions(out);
        // Deadlines first: a version rolled back now is not started once more.
        self.step(now, |c| c.tick(now.ms));
        match self.sup.tick(now.ms, reported) {
            SupervisorEvent::Spawn => self.push(Action::SpawnVertex),
            SupervisorEvent::BecameHealthy => {
                log::info!("vertex healthy");
                self.step(now, Commit::vertex_healthy);
            }
            SupervisorEvent::None => {}
        }
        if self.fetch.is_none()
            && self.staging.is_none()
            && self.commit.pending().is_none()
            && self.source.is_some()
            && self.poller.start_if_due(now.ms)
        {
            self.fetch = Some(Purpose::Poll);
            self.push(Action::Fetch);
        }
    }

    fn request(&mut self, now: Now, from: ClientId, req: Request) {
        match req {
            Request::Status { json } => {
                self.push(Action::Status { to: from, json });
                self.finish(from, true);
            }
            Request::Reload => self.push(Action::Rescope { to: from }),
            Request::Sync {
                dry_run,
                confirm,
                timeout_s,
            } => self.sync(now, from, dry_run, confirm, timeout_s),
        }
    }

    fn sync(
        &mut self,
        now: Now,
        from: ClientId,
        dry_run: bool,
        confirm: bool,
        timeout_s: Option<u32>,
    ) {
        if let Some(p) = self.commit.pending().copied() {
            if confirm && !dry_run {
                if self.waiter.is_some_and(|w| w != from) && !p.healthy {
                    return self.fail(from, "another sync is in progress; try again in a moment");
                }
                if !p.healthy {
                    // The operator's intent is clear: wait for health, then confirm.
                    self.say(
                        from,
                        format!(
                            "v{} is starting; confirming it once it is healthy",
                            p.version
                        ),
                    );
                    self.waiter = Some(from);
                    self.confirm_when_healthy = true;
                    return;
                }
                self.step(now, Commit::confirm);
                self.say(from, format!("confirmed v{}", p.version));
                return self.finish(from, true);
            }
            if !dry_run {
                return self.fail(
                    from,
                    format!(
                        "v{} is pending confirmation; confirm it with `flor agent sync --confirm` or let it roll back",
                        p.version
                    ),
                );
            }
        }
        if self.waiter.is_some() || self.staging.is_some() {
            return self.fail(from, "another sync is in progress; try again in a moment");
        }
        let Some(source) = self.source.clone() else {
            return self.fail(
                from,
                "this scope has no config source this build can reach (no mirror_url)",
            );
        };
        let timeout_s = timeout_s.unwrap_or(self.commit_timeout_s);
        match self.fetch {
            Some(Purpose::Sync { .. }) => {
                self.fail(from, "another sync is in progress; try again in a moment")
            }
            // A poll is on its way: its answer serves this sync (same source, same check).
            Some(Purpose::Poll) => {
                self.say(from, format!("fetching from {source}"));
                self.fetch = Some(Purpose::Sync {
                    dry_run,
                    confirm,
                    timeout_s,
                    to: from,
                    also_poll: true,
                });
            }
            None => {
                self.say(from, format!("fetching from {source}"));
                self.fetch = Some(Purpose::Sync {
                    dry_run,
                    confirm,
                    timeout_s,
                    to: from,
                    also_poll: false,
                });
                self.push(Action::Fetch);
            }
        }
    }

    /// Records a fetch's outcome for the poller.
    fn poll_done(&mut self, now: Now, outcome: &FetchOutcome) {
        match outcome {
            FetchOutcome::Failed { error, .. } => {
                let d = self.poller.failed(now.ms, now.rand);
                log::warn!(
                    "poll failed ({} in a row), retrying in {d} ms: {error}",
                    self.poller.failures()
                );
                self.last_error = Some(error.clone());
            }
            FetchOutcome::UpToDate(_) | FetchOutcome::New { .. } => {
                self.poller.succeeded(now.ms);
                self.last_poll_ok_unix = Some(now.unix);
                self.last_error = None;
            }
        }
    }

    fn fetched(&mut self, now: Now, outcome: FetchOutcome) {
        let Some(purpose) = self.fetch.take() else {
            return;
        };
        match purpose {
            Purpose::Poll => {
                self.poll_done(now, &outcome);
                if let FetchOutcome::New {
                    version, change, ..
                } = outcome
                {
                    if self.rejected == Some(version) || self.commit.pending().is_some() {
                        return;
                    }
                    self.stage(now, version, change, None, None);
                }
            }
            Purpose::Sync {
                dry_run,
                confirm,
                timeout_s,
                to,
                also_poll,
            } => {
                if also_poll {
                    self.poll_done(now, &outcome);
                }
                match outcome {
                    FetchOutcome::Failed { refused, error } => {
                        let what = if refused { "refused" } else { "cannot fetch" };
                        self.say(to, format!("{what}: {error}"));
                        self.last_error = Some(error);
                        let live = self.live;
                        self.fail(to, format!("still running v{live}"));
                    }
                    FetchOutcome::UpToDate(v) => {
                        self.say(to, format!("up to date: v{v} is running"));
                        self.finish(to, true);
                    }
                    FetchOutcome::New { change, diff, .. } if dry_run => {
                        for l in diff {
                            self.say(to, l);
                        }
                        self.say(to, format!("the change {change}"));
                        self.say(to, "dry run: nothing was changed");
                        self.finish(to, true);
                    }
                    FetchOutcome::New {
                        version, change, ..
                    } => {
                        if self.commit.pending().is_some() {
                            return self.fail(
                                to,
                                "a version was staged meanwhile; try again once it is committed or rolled back",
                            );
                        }
                        let timeout = (!confirm).then_some(timeout_s);
                        self.stage(now, version, change, timeout, Some(to));
                    }
                }
            }
        }
    }

    /// Asks the shell to stage `version`; `timeout_s` `None` commits once healthy.
    fn stage(
        &mut self,
        now: Now,
        version: u32,
        change: Change,
        timeout_s: Option<u32>,
        to: Option<ClientId>,
    ) {
        let previous = self.live;
        let window_s = timeout_s.unwrap_or((HEALTH_WINDOW_MS / 1000) as u32);
        let deadline_unix = now.unix + u64::from(window_s);
        self.staging = Some(Staging {
            version,
            previous,
            hot: change.is_hot(),
            timeout_ms: timeout_s.map(|t| u64::from(t) * 1000),
            deadline_unix,
            to,
        });
        self.push(Action::Stage {
            version,
            previous,
            deadline_unix,
            auto: timeout_s.is_none(),
        });
    }

    fn staged(&mut self, now: Now, result: Result<(), StageError>) {
        let Some(s) = self.staging.take() else {
            return;
        };
        if let Err(e) = result {
            let msg = format!("staging v{} failed: {e}", s.version);
            self.event(msg.clone());
            if let Some(to) = s.to {
                self.fail(to, msg);
            }
            return;
        }
        self.live = s.version;
        self.commit
            .staged(now.ms, s.version, s.previous, s.timeout_ms);
        self.pending_deadline_unix = s.timeout_ms.map(|_| s.deadline_unix);
        self.waiter = s.to;
        // In place only on a vertex that runs healthy now: one that is starting
        // may have read either version, so it is started again on the new one.
        let hot = s.hot && self.vertex_healthy() && self.applying.is_none();
        self.pending_hot = hot;
        self.event(format!("staged v{} (previous v{})", s.version, s.previous));
        if let Some(to) = s.to {
            let how = if hot {
                "applying it in place (only ACL rows or routes change)"
            } else {
                "restarting the vertex"
            };
            self.say(
                to,
                format!("staged v{} (was v{}); {how}", s.version, s.previous),
            );
        }
        if hot {
            self.applying = Some(s.version);
            self.push(Action::Apply { version: s.version });
        } else {
            self.restart_vertex(now);
        }
    }

    fn applied(&mut self, now: Now, version: u32) {
        if self.applying != Some(version) {
            return;
        }
        self.applying = None;
        self.applied_in_place = self.applied_in_place.saturating_add(1);
        log::info!("the vertex runs v{version}, applied in place");
        if self.commit.pending().is_some_and(|p| p.version == version) {
            self.step(now, Commit::vertex_healthy);
        }
    }

    fn rescoped(&mut self, now: Now, to: ClientId, result: Result<Scoped, RescopeError>) {
        let s = match result {
            Ok(s) => s,
            Err(e) => return self.fail(to, format!("the agent could not re-read the scope: {e}")),
        };
        self.source = s.source;
        self.poller.set_interval(s.poll_interval_s);
        self.commit_timeout_s = s.commit_timeout_s;
        self.live = s.live;
        self.rejected = None;
        // Enroll installed its version as committed: a commit in flight is void.
        self.commit = Commit::default();
        self.pending_deadline_unix = None;
        self.pending_hot = false;
        self.confirm_when_healthy = false;
        if let Some(w) = self.waiter.take() {
            self.fail(w, "a re-enrollment replaced the pending version");
        }
        self.event(format!(
            "re-enrolled: running v{} with the scope's new certificates",
            s.live
        ));
        self.restart_vertex(now);
        let line = format!(
            "the agent re-read scope {} (v{}) and restarts its vertex with the enrolled certificates",
            self.scope, s.live
        );
        self.say(to, line);
        self.finish(to, true);
    }

    /// Runs one step of the commit machine and carries out its decision.
    fn step(&mut self, now: Now, f: impl FnOnce(&mut Commit) -> CommitDecision) {
        let before = self.commit.pending().copied();
        let d = f(&mut self.commit);
        self.decide(now, d, before);
    }

    fn decide(&mut self, now: Now, d: CommitDecision, before: Option<Pending>) {
        match d {
            CommitDecision::Wait => {}
            CommitDecision::AwaitConfirm if self.confirm_when_healthy => {
                self.confirm_when_healthy = false;
                self.step(now, Commit::confirm);
            }
            CommitDecision::AwaitConfirm => {
                if let (Some(w), Some(p)) = (self.waiter.take(), self.commit.pending().copied()) {
                    let left = self
                        .pending_deadline_unix
                        .map_or(0, |d| d.saturating_sub(now.unix));
                    self.say(
                        w,
                        format!(
                            "v{} is running and healthy; it rolls back to v{} in {left} s unless confirmed with `flor agent sync --confirm`",
                            p.version, p.previous
                        ),
                    );
                    self.finish(w, true);
                }
            }
            CommitDecision::Commit => {
                let v = self.live;
                self.push(Action::Commit { version: v });
                self.pending_deadline_unix = None;
                self.pending_hot = false;
                self.event(format!("committed v{v}"));
                if let Some(w) = self.waiter.take() {
                    self.say(w, format!("v{v} is running and healthy; committed"));
                    self.finish(w, true);
                }
            }
            CommitDecision::RollBack(reason) => {
                let failed = self.live;
                let previous = before.map_or(failed, |p| p.previous);
                self.push(Action::RollBack { failed, previous });
                self.live = previous;
                self.rejected = Some(failed);
                self.pending_deadline_unix = None;
                self.confirm_when_healthy = false;
                let msg = format!("rolled back v{failed} to v{previous} because {reason}");
                self.event(msg.clone());
                // A hot change that ran but was not confirmed goes back the way it came.
                let hot_back = self.pending_hot
                    && reason == RollbackReason::NotConfirmed
                    && self.vertex_healthy()
                    && self.applying.is_none();
                self.pending_hot = false;
                if hot_back {
                    self.applying = Some(previous);
                    self.push(Action::Apply { version: previous });
                } else {
                    self.restart_vertex(now);
                }
                if let Some(w) = self.waiter.take() {
                    self.fail(w, msg);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{HEALTHY_AFTER_MS, POLL_BACKOFF_BASE_MS};
    use flor_vertex::artifact::RestartField;

    /// A machine on a fake clock, and the actions it asked for.
    struct T {
        m: Machine,
        now: Now,
    }

    const RESTART: Change = Change::Restart(RestartField::Services);

    fn at(ms: Millis) -> Now {
        Now {
            ms,
            unix: 1_000_000 + ms / 1000,
            rand: 0,
        }
    }

    fn scoped(live: u32) -> Scoped {
        Scoped {
            live,
            source: Some("http://127.0.0.1:9/".into()),
            poll_interval_s: 60,
            commit_timeout_s: 300,
        }
    }

    impl T {
        fn start(start: Start) -> T {
            let live = match start {
                Start::Committed(v) => v,
                Start::Pending { pending, .. } => pending,
                Start::RolledBack { live, .. } => live,
            };
            T {
                m: Machine::new(at(0), "demo.flor", start, scoped(live)),
                now: at(0),
            }
        }

        /// A machine whose vertex runs healthy on v1, first poll answered.
        fn running() -> T {
            let mut t = T::start(Start::Committed(1));
            assert_eq!(t.tick(false), [Action::SpawnVertex, Action::Fetch]);
            t.input(Input::Spawned { pid: 100 });
            assert_eq!(t.tick(true), []);
            t.input(Input::Fetched(FetchOutcome::UpToDate(1)));
            assert_eq!(t.m.view(t.now).vertex_health, "healthy");
            t
        }

        fn advance(&mut self, ms: Millis) {
            self.now = at(self.now.ms + ms);
        }

        fn input(&mut self, i: Input) -> Vec<Action> {
            self.m.handle(self.now, i);
            std::iter::from_fn(|| self.m.poll_action()).collect()
        }

        fn tick(&mut self, reported: bool) -> Vec<Action> {
            self.input(Input::Tick { reported })
        }

        fn req(&mut self, from: ClientId, req: Request) -> Vec<Action> {
            self.input(Input::Request { from, req })
        }

        fn sync(&mut self, from: ClientId, confirm: bool, timeout_s: Option<u32>) -> Vec<Action> {
            self.req(
                from,
                Request::Sync {
                    dry_run: false,
                    confirm,
                    timeout_s,
                },
            )
        }

        /// A sync (client 9) fetches `version` and the machine stages it; returns
        /// what the stage caused.
        fn stage_by_sync(
            &mut self,
            confirm: bool,
            timeout_s: Option<u32>,
            version: u32,
            change: Change,
        ) -> Vec<Action> {
            self.sync(9, confirm, timeout_s);
            self.new_version(version, change);
            self.input(Input::Staged(Ok(())))
        }

        /// The next poll finds `version` and the machine stages it; returns what the stage caused.
        fn stage_by_poll(&mut self, version: u32, change: Change) -> Vec<Action> {
            self.advance(60_000);
            assert_eq!(self.tick(true), [Action::Fetch]);
            self.new_version(version, change);
            self.input(Input::Staged(Ok(())))
        }

        /// The restarted vertex is spawned (pid 101); returns what its first tick caused.
        fn respawn(&mut self) -> Vec<Action> {
            assert_eq!(self.tick(false), [Action::SpawnVertex]);
            self.input(Input::Spawned { pid: 101 })
        }

        fn new_version(&mut self, version: u32, change: Change) -> Vec<Action> {
            self.input(Input::Fetched(FetchOutcome::New {
                version,
                change,
                diff: vec![format!("version: {} -> {version}", self.m.live())],
            }))
        }
    }

    #[test]
    fn expiry_warns_once_at_30_7_and_1_days_and_when_expired() {
        const DAY_MS: Millis = 86_400_000;
        let mut t = T::running();
        let not_after = i64::try_from(t.now.unix).unwrap() + 40 * 86_400;
        let cert = HeldCert {
            who: "spiffe://demo.flor/user/bob".into(),
            not_after,
        };
        let warn = |left_days: i64, extra_s: i64| Action::WarnExpiry {
            who: "spiffe://demo.flor/user/bob".into(),
            seconds_left: left_days * 86_400 + extra_s,
            not_after,
        };
        assert_eq!(t.input(Input::Certificates(vec![cert.clone()])), []);
        // 40 days left: quiet until the 30-day mark, then one warning, not one per tick.
        t.advance(9 * DAY_MS);
        assert!(!t
            .tick(true)
            .iter()
            .any(|a| matches!(a, Action::WarnExpiry { .. })));
        t.advance(DAY_MS);
        let expiry = |a: Vec<Action>| -> Vec<Action> {
            a.into_iter()
                .filter(|a| matches!(a, Action::WarnExpiry { .. }))
                .collect()
        };
        assert_eq!(expiry(t.tick(true)), [warn(30, 0)]);
        t.advance(1000);
        assert_eq!(expiry(t.tick(true)), []);
        // A reload with the same certificate does not repeat it.
        assert_eq!(t.input(Input::Certificates(vec![cert.clone()])), []);
        t.advance(23 * DAY_MS - 1000);
        assert_eq!(expiry(t.tick(true)), [warn(7, 0)]);
        t.advance(6 * DAY_MS);
        assert_eq!(expiry(t.tick(true)), [warn(1, 0)]);
        t.advance(DAY_MS + 1000);
        assert_eq!(expiry(t.tick(true)), [warn(0, -1)]);
        t.advance(DAY_MS);
        assert_eq!(expiry(t.tick(true)), []);
        // A renewed certificate (new notAfter) starts afresh; 5 days left: one warning.
        let renewed = HeldCert {
            who: cert.who.clone(),
            not_after: i64::try_from(t.now.unix).unwrap() + 5 * 86_400,
        };
        assert_eq!(
            t.input(Input::Certificates(vec![renewed.clone()])),
            [Action::WarnExpiry {
                who: renewed.who.clone(),
                seconds_left: 5 * 86_400,
                not_after: renewed.not_after,
            }]
        );
    }

    fn reply(to: ClientId, line: &str) -> Action {
        Action::Reply {
            to,
            line: line.into(),
        }
    }

    fn lines(actions: &[Action]) -> String {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Reply { line, .. } => Some(line.as_str()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn finished(actions: &[Action]) -> Option<bool> {
        actions.iter().find_map(|a| match a {
            Action::Finish { ok, .. } => Some(*ok),
            _ => None,
        })
    }

    fn stage(version: u32, previous: u32, deadline_unix: u64, auto: bool) -> Action {
        Action::Stage {
            version,
            previous,
            deadline_unix,
            auto,
        }
    }

    #[test]
    fn starts_the_vertex_and_polls_at_once() {
        let mut t = T::start(Start::Committed(4));
        assert_eq!(t.tick(false), [Action::SpawnVertex, Action::Fetch]);
        t.input(Input::Spawned { pid: 7 });
        assert_eq!(t.m.view(t.now).vertex_health, "starting");
        t.advance(100);
        assert_eq!(t.tick(true), [], "healthy once it reports its bindings");
        assert_eq!(t.m.view(t.now).vertex_health, "healthy");
        assert_eq!(t.m.view(t.now).vertex_pid, Some(7));
        assert_eq!(t.m.view(t.now).live, 4);
    }

    #[test]
    fn a_poll_that_finds_nothing_new_waits_one_interval() {
        let mut t = T::running();
        assert_eq!(t.m.view(t.now).poll_next_in_ms, 60_000);
        t.advance(59_999);
        assert_eq!(t.tick(true), []);
        t.advance(1);
        assert_eq!(t.tick(true), [Action::Fetch]);
        assert_eq!(t.tick(true), [], "one fetch at a time");
    }

    #[test]
    fn failed_polls_back_off_and_are_shown() {
        let mut t = T::running();
        t.advance(60_000);
        assert_eq!(t.tick(true), [Action::Fetch]);
        t.input(Input::Fetched(FetchOutcome::Failed {
            refused: false,
            error: "config source unreachable: timed out".into(),
        }));
        let v = t.m.view(t.now);
        assert_eq!(v.poll_failures, 1);
        assert_eq!(v.poll_next_in_ms, u64::from(POLL_BACKOFF_BASE_MS) / 2);
        assert_eq!(v.last_error, Some("config source unreachable: timed out"));
        t.advance(500);
        assert_eq!(t.tick(true), [Action::Fetch]);
        t.input(Input::Fetched(FetchOutcome::Failed {
            refused: false,
            error: "x".into(),
        }));
        assert_eq!(t.m.view(t.now).poll_next_in_ms, 1_000, "doubled");
        t.advance(1_000);
        t.tick(true);
        t.input(Input::Fetched(FetchOutcome::UpToDate(1)));
        let v = t.m.view(t.now);
        assert_eq!((v.poll_failures, v.last_error), (0, None));
        assert_eq!(v.poll_last_ok_unix, Some(t.now.unix));
    }

    #[test]
    fn a_polled_structural_change_restarts_and_commits_on_health() {
        let mut t = T::running();
        t.advance(60_000);
        t.tick(true);
        let a = t.new_version(2, RESTART);
        assert_eq!(a, [stage(2, 1, t.now.unix + 15, true)]);
        assert_eq!(
            t.input(Input::Staged(Ok(()))),
            [Action::StopVertex],
            "restart path"
        );
        assert_eq!(t.m.live(), 2);
        assert_eq!(t.tick(false), [Action::SpawnVertex]);
        t.input(Input::Spawned { pid: 101 });
        assert_eq!(t.tick(true), [Action::Commit { version: 2 }]);
        assert_eq!(t.m.view(t.now).pending, None);
        assert_eq!(t.m.view(t.now).last_event, Some("committed v2"));
        assert_eq!(t.m.view(t.now).vertex_restarts, 0, "not a crash");
    }

    #[test]
    fn a_polled_acl_change_is_applied_in_place_and_committed() {
        let mut t = T::running();
        assert_eq!(
            t.stage_by_poll(2, Change::Hot),
            [Action::Apply { version: 2 }],
            "no StopVertex: flows are kept"
        );
        assert_eq!(t.tick(true), [], "waits for the vertex's answer");
        assert_eq!(
            t.input(Input::Applied { version: 2 }),
            [Action::Commit { version: 2 }]
        );
        assert_eq!(t.m.view(t.now).vertex_pid, Some(100), "same process");
        assert_eq!(t.m.view(t.now).applied_in_place, 1);
    }

    #[test]
    fn an_unchanged_vertex_payload_is_applied_in_place_too() {
        let mut t = T::running();
        assert_eq!(
            t.stage_by_poll(2, Change::None),
            [Action::Apply { version: 2 }]
        );
    }

    #[test]
    fn a_vertex_that_refuses_the_in_place_apply_is_restarted() {
        let mut t = T::running();
        t.sync(9, true, None);
        t.new_version(2, Change::Hot);
        assert_eq!(
            t.input(Input::Staged(Ok(()))).last(),
            Some(&Action::Apply { version: 2 })
        );
        let a = t.input(Input::ApplyRefused {
            reason: "restart: the listen address change".into(),
        });
        assert_eq!(a, [Action::StopVertex]);
        assert!(t
            .m
            .view(t.now)
            .last_event
            .unwrap()
            .contains("did not apply v2"));
        assert_eq!(
            t.input(Input::Applied { version: 2 }),
            [],
            "a late answer is ignored"
        );
        assert_eq!(t.tick(false), [Action::SpawnVertex]);
        t.input(Input::Spawned { pid: 101 });
        let a = t.tick(true);
        assert_eq!(a[0], Action::Commit { version: 2 });
        assert_eq!(finished(&a), Some(true));
    }

    #[test]
    fn sync_with_a_timeout_waits_for_confirmation_and_confirm_commits() {
        let mut t = T::running();
        let a = t.sync(9, false, Some(120));
        assert_eq!(
            a,
            [reply(9, "fetching from http://127.0.0.1:9/"), Action::Fetch]
        );
        assert_eq!(
            t.new_version(2, RESTART),
            [stage(2, 1, t.now.unix + 120, false)]
        );
        let a = t.input(Input::Staged(Ok(())));
        assert_eq!(lines(&a), "staged v2 (was v1); restarting the vertex");
        t.respawn();
        t.advance(1_000);
        let a = t.tick(true);
        assert!(
            lines(&a).contains("rolls back to v1 in 119 s unless confirmed"),
            "{a:?}"
        );
        assert_eq!(finished(&a), Some(true), "the sync client is answered");
        assert_eq!(t.m.view(t.now).pending.map(|p| p.version), Some(2));
        assert_eq!(t.m.view(t.now).pending_deadline_unix, Some(1_000_000 + 120));
        let a = t.sync(10, true, None);
        assert_eq!(
            a,
            [
                Action::Commit { version: 2 },
                reply(10, "confirmed v2"),
                Action::Finish { to: 10, ok: true }
            ]
        );
        t.advance(200_000);
        assert_eq!(
            t.tick(true),
            [Action::Fetch],
            "committed: polls resume, nothing rolls back"
        );
    }

    #[test]
    fn an_unconfirmed_restart_change_rolls_back_at_its_deadline() {
        let mut t = T::running();
        t.stage_by_sync(false, Some(3), 2, RESTART);
        t.respawn();
        t.tick(true);
        t.advance(2_999);
        assert_eq!(t.tick(true), []);
        t.advance(1);
        let a = t.tick(true);
        assert_eq!(
            a,
            [
                Action::RollBack {
                    failed: 2,
                    previous: 1
                },
                Action::StopVertex,
                Action::SpawnVertex
            ]
        );
        assert_eq!(t.m.live(), 1);
        assert_eq!(
            t.m.view(t.now).last_event,
            Some("rolled back v2 to v1 because it was not confirmed within the commit timeout")
        );
    }

    #[test]
    fn an_unconfirmed_hot_change_rolls_back_in_place() {
        let mut t = T::running();
        t.stage_by_sync(false, Some(3), 2, Change::Hot);
        let a = t.input(Input::Applied { version: 2 });
        assert!(lines(&a).contains("unless confirmed"));
        t.advance(3_000);
        assert_eq!(
            t.tick(true),
            [
                Action::RollBack {
                    failed: 2,
                    previous: 1
                },
                Action::Apply { version: 1 }
            ],
            "a hot change back, no restart"
        );
        assert_eq!(t.input(Input::Applied { version: 1 }), []);
        assert_eq!(t.m.view(t.now).applied_in_place, 2);
        assert_eq!(t.m.view(t.now).vertex_pid, Some(100));
    }

    #[test]
    fn a_new_vertex_that_exits_before_it_is_healthy_is_rolled_back() {
        let mut t = T::running();
        t.stage_by_sync(false, None, 3, RESTART);
        t.respawn();
        t.advance(300);
        let a = t.input(Input::Exited);
        assert_eq!(
            a[..2],
            [
                Action::RollBack {
                    failed: 3,
                    previous: 1
                },
                Action::StopVertex
            ]
        );
        assert!(lines(&a).contains(
            "rolled back v3 to v1 because the new vertex exited before it became healthy"
        ));
        assert_eq!(finished(&a), Some(false));
        // The previous version starts again at once, not after a crash backoff.
        assert_eq!(t.tick(false), [Action::SpawnVertex]);
    }

    #[test]
    fn a_new_vertex_that_never_becomes_healthy_is_rolled_back() {
        let mut t = T::running();
        t.stage_by_poll(2, RESTART);
        t.tick(false);
        // Spawning keeps failing (say, the binary is gone): no health.
        t.input(Input::SpawnFailed);
        t.advance(HEALTH_WINDOW_MS);
        let a = t.tick(false);
        assert_eq!(
            a[..3],
            [
                Action::RollBack {
                    failed: 2,
                    previous: 1
                },
                Action::StopVertex,
                Action::SpawnVertex
            ],
            "back on v1 at once"
        );
        assert!(t
            .m
            .view(t.now)
            .last_event
            .unwrap()
            .contains("did not become healthy in time"));
    }

    #[test]
    fn a_rolled_back_version_is_not_staged_again_by_polls() {
        let mut t = T::running();
        t.stage_by_poll(2, RESTART);
        t.respawn();
        t.input(Input::Exited);
        t.tick(false);
        t.input(Input::Spawned { pid: 102 });
        t.tick(true);
        t.advance(60_000);
        assert_eq!(t.tick(true), [Action::Fetch]);
        assert_eq!(t.new_version(2, RESTART), [], "v2 was rejected");
        t.advance(60_000);
        t.tick(true);
        assert_eq!(
            t.new_version(3, RESTART),
            [stage(3, 1, t.now.unix + 15, true)]
        );
    }

    #[test]
    fn sync_confirm_of_a_new_version_commits_once_healthy() {
        let mut t = T::running();
        t.sync(9, true, None);
        assert_eq!(
            t.new_version(2, RESTART),
            [stage(2, 1, t.now.unix + 15, true)]
        );
        t.input(Input::Staged(Ok(())));
        t.respawn();
        t.advance(HEALTHY_AFTER_MS);
        let a = t.tick(false);
        assert_eq!(a[0], Action::Commit { version: 2 });
        assert_eq!(lines(&a), "v2 is running and healthy; committed");
        assert_eq!(finished(&a), Some(true));
    }

    #[test]
    fn confirm_while_the_pending_version_starts_waits_for_its_health() {
        let mut t = T::running();
        t.stage_by_sync(false, Some(300), 2, RESTART);
        t.respawn();
        // The first client is still waiting; another confirms meanwhile.
        let a = t.sync(10, true, None);
        assert_eq!(
            finished(&a),
            Some(false),
            "another client waits for the outcome"
        );
        let a = t.tick(true);
        assert!(lines(&a).contains("unless confirmed"));
        let mut t = T::running();
        t.stage_by_poll(2, RESTART);
        t.respawn();
        let a = t.sync(10, true, None);
        assert_eq!(
            lines(&a),
            "v2 is starting; confirming it once it is healthy"
        );
        assert_eq!(finished(&a), None, "answered later");
        let a = t.tick(true);
        assert_eq!(a[0], Action::Commit { version: 2 });
        assert_eq!(finished(&a), Some(true));
    }

    #[test]
    fn sync_while_a_version_is_pending_is_refused_but_dry_run_is_not() {
        let mut t = T::running();
        t.stage_by_sync(false, Some(300), 2, RESTART);
        t.respawn();
        t.tick(true);
        let a = t.sync(10, false, None);
        assert!(lines(&a).contains("v2 is pending confirmation"));
        assert_eq!(finished(&a), Some(false));
        let a = t.req(
            11,
            Request::Sync {
                dry_run: true,
                confirm: false,
                timeout_s: None,
            },
        );
        assert_eq!(a.last(), Some(&Action::Fetch));
    }

    #[test]
    fn dry_run_prints_the_diff_and_the_path_and_stages_nothing() {
        let mut t = T::running();
        t.req(
            9,
            Request::Sync {
                dry_run: true,
                confirm: false,
                timeout_s: None,
            },
        );
        let a = t.new_version(2, Change::Hot);
        assert!(!a.iter().any(|a| matches!(a, Action::Stage { .. })));
        assert_eq!(
            lines(&a),
            "version: 1 -> 2\nthe change applied in place: only ACL rows or routes change; established flows are kept\ndry run: nothing was changed"
        );
        assert_eq!(finished(&a), Some(true));
        t.req(
            9,
            Request::Sync {
                dry_run: true,
                confirm: false,
                timeout_s: None,
            },
        );
        let a = t.new_version(2, Change::Restart(RestartField::Listen));
        assert!(lines(&a).contains("the change restarts the vertex: the listen address change"));
        assert_eq!(t.m.live(), 1);
    }

    #[test]
    fn a_sync_takes_over_a_poll_in_flight() {
        let mut t = T::running();
        t.advance(60_000);
        assert_eq!(t.tick(true), [Action::Fetch]);
        let a = t.sync(9, true, None);
        assert_eq!(
            a,
            [reply(9, "fetching from http://127.0.0.1:9/")],
            "no second fetch"
        );
        assert_eq!(
            t.new_version(2, RESTART),
            [stage(2, 1, t.now.unix + 15, true)]
        );
        assert_eq!(
            t.m.view(t.now).poll_next_in_ms,
            60_000,
            "the poll counted too"
        );
        let a = t.input(Input::Staged(Ok(())));
        assert!(
            lines(&a).contains("staged v2"),
            "answered to the sync client"
        );
    }

    #[test]
    fn a_second_sync_is_refused_while_one_fetches() {
        let mut t = T::running();
        t.sync(9, true, None);
        let a = t.sync(10, true, None);
        assert_eq!(
            lines(&a),
            "another sync is in progress; try again in a moment"
        );
        assert_eq!(finished(&a), Some(false));
    }

    #[test]
    fn sync_without_a_source_is_refused() {
        let mut t = T {
            m: Machine::new(
                at(0),
                "demo.flor",
                Start::Committed(1),
                Scoped {
                    source: None,
                    ..scoped(1)
                },
            ),
            now: at(0),
        };
        assert_eq!(t.tick(false), [Action::SpawnVertex], "no polls either");
        let a = t.sync(9, false, None);
        assert!(lines(&a).contains("no config source"));
        assert_eq!(finished(&a), Some(false));
    }

    #[test]
    fn a_failed_sync_says_why_and_what_still_runs() {
        let mut t = T::running();
        t.sync(9, false, None);
        let a = t.input(Input::Fetched(FetchOutcome::Failed {
            refused: true,
            error: "mgmt/agent.json refused: signature does not verify".into(),
        }));
        assert_eq!(
            lines(&a),
            "refused: mgmt/agent.json refused: signature does not verify\nstill running v1"
        );
        assert_eq!(finished(&a), Some(false));
        assert_eq!(t.m.view(t.now).poll_failures, 0, "a sync is not a poll");
        t.sync(9, false, None);
        let a = t.input(Input::Fetched(FetchOutcome::UpToDate(1)));
        assert_eq!(lines(&a), "up to date: v1 is running");
    }

    #[test]
    fn a_failed_stage_is_reported_and_the_vertex_keeps_running() {
        let mut t = T::running();
        t.sync(9, false, None);
        t.new_version(2, RESTART);
        let a = t.input(Input::Staged(Err(StageError::Store(
            "writing a new generation: disk full".into(),
        ))));
        assert_eq!(
            lines(&a),
            "staging v2 failed: writing a new generation: disk full"
        );
        assert_eq!(finished(&a), Some(false));
        assert!(!a.contains(&Action::StopVertex));
        assert_eq!(t.m.live(), 1);
        assert_eq!(t.m.view(t.now).pending, None);
    }

    #[test]
    fn a_crashed_vertex_is_restarted_with_backoff() {
        let mut t = T::running();
        t.advance(1_000);
        assert_eq!(t.input(Input::Exited), []);
        assert_eq!(t.m.view(t.now).vertex_health, "restarting");
        assert_eq!(t.tick(false), [], "backoff");
        t.advance(250);
        assert_eq!(t.tick(false), [Action::SpawnVertex]);
        t.input(Input::Spawned { pid: 101 });
        t.input(Input::Exited);
        t.advance(499);
        assert_eq!(t.tick(false), []);
        t.advance(1);
        assert_eq!(t.tick(false), [Action::SpawnVertex], "doubled");
        assert_eq!(t.m.view(t.now).vertex_restarts, 2);
    }

    #[test]
    fn a_crash_during_an_in_place_apply_rolls_back() {
        let mut t = T::running();
        t.stage_by_sync(false, Some(60), 2, Change::Hot);
        let a = t.input(Input::Exited);
        assert_eq!(
            a[..2],
            [
                Action::RollBack {
                    failed: 2,
                    previous: 1
                },
                Action::StopVertex
            ]
        );
        assert_eq!(t.input(Input::Applied { version: 2 }), []);
    }

    #[test]
    fn a_hot_change_for_a_starting_vertex_restarts_it() {
        let mut t = T::start(Start::Committed(1));
        t.tick(false);
        t.input(Input::Spawned { pid: 100 });
        t.input(Input::Fetched(FetchOutcome::UpToDate(1)));
        t.sync(9, true, None);
        t.new_version(2, Change::Hot);
        let a = t.input(Input::Staged(Ok(())));
        assert!(a.contains(&Action::StopVertex), "{a:?}");
        assert!(lines(&a).contains("restarting the vertex"));
    }

    #[test]
    fn reload_voids_a_pending_version_and_restarts_the_vertex() {
        let mut t = T::running();
        t.stage_by_sync(false, Some(300), 2, RESTART);
        t.respawn();
        t.tick(true);
        assert_eq!(t.req(10, Request::Reload), [Action::Rescope { to: 10 }]);
        let a = t.input(Input::Rescoped {
            to: 10,
            result: Ok(scoped(2)),
        });
        assert!(a.contains(&Action::StopVertex));
        assert!(lines(&a).contains("the agent re-read scope demo.flor (v2)"));
        assert_eq!(finished(&a), Some(true));
        assert_eq!(t.m.view(t.now).pending, None);
        t.advance(300_000);
        assert!(
            !t.tick(false)
                .iter()
                .any(|a| matches!(a, Action::RollBack { .. })),
            "nothing left to roll back"
        );
        let a = t.input(Input::Rescoped {
            to: 11,
            result: Err(RescopeError::Scope("scope.json: No such file".into())),
        });
        assert!(lines(&a).contains("could not re-read the scope"));
        assert_eq!(finished(&a), Some(false));
    }

    #[test]
    fn a_pending_version_found_at_start_keeps_its_deadline() {
        let mut t = T::start(Start::Pending {
            pending: 5,
            previous: 4,
            deadline_unix: 1_000_000 + 30,
            auto: false,
        });
        assert!(t
            .m
            .view(t.now)
            .last_event
            .unwrap()
            .contains("resumed pending v5"));
        assert_eq!(
            t.tick(false),
            [Action::SpawnVertex],
            "no polls while pending"
        );
        t.input(Input::Spawned { pid: 100 });
        t.tick(true);
        t.advance(29_999);
        assert_eq!(t.tick(true), []);
        t.advance(1);
        assert_eq!(
            t.tick(true)[0],
            Action::RollBack {
                failed: 5,
                previous: 4
            }
        );
    }

    #[test]
    fn an_auto_pending_version_found_at_start_commits_on_health() {
        let mut t = T::start(Start::Pending {
            pending: 5,
            previous: 4,
            deadline_unix: 0,
            auto: true,
        });
        t.tick(false);
        t.input(Input::Spawned { pid: 100 });
        assert_eq!(
            t.tick(true),
            [Action::Commit { version: 5 }, Action::Fetch],
            "polls resume once nothing is pending"
        );
    }

    #[test]
    fn a_version_rolled_back_while_the_agent_was_down_is_not_polled_again() {
        let mut t = T::start(Start::RolledBack { failed: 6, live: 5 });
        assert!(t
            .m
            .view(t.now)
            .last_event
            .unwrap()
            .contains("rolled back v6 to v5"));
        assert_eq!(t.tick(false), [Action::SpawnVertex, Action::Fetch]);
        assert_eq!(t.new_version(6, RESTART), []);
    }

    #[test]
    fn status_is_answered_at_once_and_config_changes_the_interval() {
        let mut t = T::running();
        assert_eq!(
            t.req(3, Request::Status { json: true }),
            [
                Action::Status { to: 3, json: true },
                Action::Finish { to: 3, ok: true }
            ]
        );
        t.input(Input::Config {
            poll_interval_s: 5,
            commit_timeout_s: 60,
        });
        t.advance(60_000);
        t.tick(true);
        t.input(Input::Fetched(FetchOutcome::UpToDate(1)));
        assert_eq!(t.m.view(t.now).poll_next_in_ms, 5_000);
        t.sync(9, false, None);
        t.new_version(2, RESTART);
        assert_eq!(t.input(Input::Staged(Ok(()))).len(), 2, "reply + stop");
        assert_eq!(
            t.m.view(t.now).pending_deadline_unix,
            Some(t.now.unix + 60),
            "agent.json's commit timeout is the default"
        );
    }

    #[test]
    fn hosted_roles_are_started_beside_the_vertex_and_restarted_after_an_exit() {
        use crate::core::roles::{Hosted, Role, RoleSpec};
        let mut t = T::running();
        let spec = RoleSpec {
            role: Role::ConfigServer,
            listen: [
                "127.0.0.1:7080".parse().unwrap(),
                "127.0.0.1:7081".parse().unwrap(),
            ],
        };
        let hosted = Hosted {
            roles: vec![spec],
            incomplete: vec![],
        };
        assert_eq!(
            t.input(Input::Hosted {
                hosted: hosted.clone(),
                carried: true
            }),
            []
        );
        assert_eq!(t.tick(true), [Action::SpawnRole(spec)]);
        t.input(Input::RoleSpawned {
            role: Role::ConfigServer,
            pid: 200,
        });
        assert_eq!(t.m.view(t.now).roles[0].pid, Some(200));
        // It dies: the vertex is untouched, the role comes back after its backoff.
        assert_eq!(t.input(Input::RoleExited(Role::ConfigServer)), []);
        assert_eq!(t.tick(true), []);
        t.advance(250);
        assert_eq!(t.tick(true), [Action::SpawnRole(spec)]);
        t.input(Input::RoleSpawned {
            role: Role::ConfigServer,
            pid: 201,
        });
        // A version without the services stops it.
        assert_eq!(
            t.input(Input::Hosted {
                hosted: Hosted::default(),
                carried: true
            }),
            [Action::StopRole(Role::ConfigServer)]
        );
        assert!(t.m.view(t.now).roles.is_empty());
        // A router build: nothing to start, status says why.
        t.input(Input::Hosted {
            hosted,
            carried: false,
        });
        t.advance(60_000);
        assert!(!t
            .tick(true)
            .iter()
            .any(|a| matches!(a, Action::SpawnRole(_))));
        assert_eq!(t.m.view(t.now).roles[0].state, "not in this build");
    }
}
