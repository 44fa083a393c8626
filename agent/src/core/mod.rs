//! The agent's decisions, without I/O: when to poll, when to restart the
//! vertex, when a staged version is committed or rolled back. The timers and
//! state machines below are the parts; [`machine::Machine`] puts them
//! together into the whole of `flor agent run`.
//!
//! Time comes in as milliseconds on a monotonic clock the shell owns, and
//! randomness (for jitter) as a `u32` argument, so every decision is a pure
//! function of its inputs and the tests below drive it with a fake clock
//! (the quinn-proto model). The shell in `agent.rs` reads the clock, spawns
//! processes, talks to sockets and feeds the results back in.
//!
//! ```text
//! Poller:     due? -> fetch -> ok: next = now + interval | err: next = now + backoff (capped, jittered)
//! Supervisor: spawn -> exited early -> wait backoff -> spawn ...; healthy for long enough -> backoff resets
//! Commit:     staged -> vertex healthy? -> (confirm on health | wait for --confirm until deadline)
//!                    -> vertex failed / deadline passed -> roll back
//! Roles:      live vertex artifact -> which management roles run here -> spawn / restart / stop
//! ```

pub mod machine;
pub mod roles;
pub mod settle;

/// Milliseconds on the shell's monotonic clock.
pub type Millis = u64;

/// Capped exponential backoff with "equal jitter": the n-th delay is drawn
/// from `[d/2, d]` with `d = min(cap, base * 2^n)`, so a fleet whose
/// config-server comes back does not return in lockstep, yet no retry waits
/// less than half the nominal delay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    base_ms: u32,
    cap_ms: u32,
    failures: u32,
}

impl Backoff {
    /// A backoff starting at `base_ms` and never exceeding `cap_ms`.
    pub const fn new(base_ms: u32, cap_ms: u32) -> Backoff {
        Backoff {
            base_ms,
            cap_ms,
            failures: 0,
        }
    }

    /// Records one more failure and returns how long to wait before the next try.
    pub fn next_delay(&mut self, rand: u32) -> Millis {
        let shift = self.failures.min(20);
        self.failures = self.failures.saturating_add(1);
        let nominal = (u64::from(self.base_ms) << shift).min(u64::from(self.cap_ms));
        let half = nominal / 2;
        half + u64::from(rand) % (nominal - half + 1)
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// A success: the next failure starts from `base_ms` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// First retry after a failed poll; doubles up to [`POLL_BACKOFF_CAP_MS`].
pub const POLL_BACKOFF_BASE_MS: u32 = 1_000;
/// Longest wait between polls of a dead config-server: short enough that a
/// node catches up within minutes of the server's return.
pub const POLL_BACKOFF_CAP_MS: u32 = 5 * 60 * 1_000;

/// When to poll the config-server next.
#[derive(Clone, Debug)]
pub struct Poller {
    interval_ms: Millis,
    next_at: Millis,
    in_flight: bool,
    backoff: Backoff,
}

impl Poller {
    /// A poller that polls at once, then every `interval_s` seconds while the server answers.
    pub fn new(now: Millis, interval_s: u32) -> Poller {
        Poller {
            interval_ms: u64::from(interval_s.max(1)) * 1_000,
            next_at: now,
            in_flight: false,
            backoff: Backoff::new(POLL_BACKOFF_BASE_MS, POLL_BACKOFF_CAP_MS),
        }
    }

    /// Whether a poll should start now; marks it in flight if so.
    pub fn start_if_due(&mut self, now: Millis) -> bool {
        if self.in_flight || now < self.next_at {
            return false;
        }
        self.in_flight = true;
        true
    }

    /// The server answered (whether or not there was anything new).
    pub fn succeeded(&mut self, now: Millis) {
        self.in_flight = false;
        self.backoff.reset();
        self.next_at = now + self.interval_ms;
    }

    /// The server could not be reached or answered nonsense; returns the delay chosen.
    pub fn failed(&mut self, now: Millis, rand: u32) -> Millis {
        self.in_flight = false;
        let d = self.backoff.next_delay(rand);
        self.next_at = now + d;
        d
    }

    /// Consecutive failed polls.
    pub fn failures(&self) -> u32 {
        self.backoff.failures()
    }

    /// Milliseconds until the next poll (0 if due or in flight).
    pub fn next_in(&self, now: Millis) -> Millis {
        self.next_at.saturating_sub(now)
    }

    /// Changes the interval (a new agent.json was installed).
    pub fn set_interval(&mut self, interval_s: u32) {
        self.interval_ms = u64::from(interval_s.max(1)) * 1_000;
    }
}

/// A vertex that stays up this long is healthy, even before it reports its listeners.
pub const HEALTHY_AFTER_MS: Millis = 2_000;
/// A vertex that stays up this long after a restart has recovered: its restart backoff resets.
pub const STABLE_AFTER_MS: Millis = 30_000;
/// First restart delay of a crashed vertex; doubles up to [`RESTART_BACKOFF_CAP_MS`].
pub const RESTART_BACKOFF_BASE_MS: u32 = 500;
/// Longest wait before restarting a crashing vertex.
pub const RESTART_BACKOFF_CAP_MS: u32 = 30_000;

/// The supervised vertex process, as the agent sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VertexState {
    /// Running since `since`; `healthy` once it reported or stayed up long enough.
    Running {
        /// Process id.
        pid: u32,
        /// When it was spawned.
        since: Millis,
        /// Whether it has been judged healthy.
        healthy: bool,
    },
    /// Exited; will be restarted at `at`.
    Waiting {
        /// When to spawn again.
        at: Millis,
    },
}

/// Restart policy for the one vertex child.
#[derive(Clone, Debug)]
pub struct Supervisor {
    state: VertexState,
    restarts: u32,
    backoff: Backoff,
}

/// What the shell learns from [`Supervisor::tick`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SupervisorEvent {
    /// Nothing changed.
    None,
    /// Spawn the vertex now.
    Spawn,
    /// The vertex just became healthy.
    BecameHealthy,
}

impl Default for Supervisor {
    fn default() -> Self {
        Supervisor::new()
    }
}

impl Supervisor {
    /// A supervisor that wants the vertex started at once.
    pub fn new() -> Supervisor {
        Supervisor {
            state: VertexState::Waiting { at: 0 },
            restarts: 0,
            backoff: Backoff::new(RESTART_BACKOFF_BASE_MS, RESTART_BACKOFF_CAP_MS),
        }
    }

    /// The current state.
    pub fn state(&self) -> VertexState {
        self.state
    }

    /// Restarts after a crash since the agent started.
    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// Advances time: says when to spawn and when the vertex became healthy.
    /// `reported` is whether the running vertex has written its status file.
    pub fn tick(&mut self, now: Millis, reported: bool) -> SupervisorEvent {
        match &mut self.state {
            VertexState::Waiting { at } if now >= *at => SupervisorEvent::Spawn,
            VertexState::Running {
                since, healthy: h, ..
            } => {
                if now.saturating_sub(*since) >= STABLE_AFTER_MS {
                    self.backoff.reset();
                }
                if !*h && (reported || now.saturating_sub(*since) >= HEALTHY_AFTER_MS) {
                    *h = true;
                    return SupervisorEvent::BecameHealthy;
                }
                SupervisorEvent::None
            }
            _ => SupervisorEvent::None,
        }
    }

    /// The shell spawned the vertex.
    pub fn spawned(&mut self, now: Millis, pid: u32) {
        self.state = VertexState::Running {
            pid,
            since: now,
            healthy: false,
        };
    }

    /// Spawning failed (the binary could not be executed): retry after backoff.
    pub fn spawn_failed(&mut self, now: Millis, rand: u32) {
        let d = self.backoff.next_delay(rand);
        self.state = VertexState::Waiting { at: now + d };
    }

    /// The vertex exited on its own; returns whether it had been healthy.
    pub fn exited(&mut self, now: Millis, rand: u32) -> bool {
        let was_healthy = matches!(self.state, VertexState::Running { healthy: true, .. });
        self.restarts = self.restarts.saturating_add(1);
        let d = self.backoff.next_delay(rand);
        self.state = VertexState::Waiting { at: now + d };
        was_healthy
    }

    /// The agent stopped the vertex on purpose to restart it with new
    /// artifacts: spawn again at once, without counting a crash.
    pub fn restart_now(&mut self, now: Millis) {
        self.backoff.reset();
        self.state = VertexState::Waiting { at: now };
    }
}

/// How long a freshly staged vertex has to become healthy before it is rolled back.
pub const HEALTH_WINDOW_MS: Millis = 15_000;

/// A staged version waiting to be committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pending {
    /// The staged version.
    pub version: u32,
    /// The version to return to on rollback.
    pub previous: u32,
    /// When the vertex must be healthy by.
    pub health_deadline: Millis,
    /// When an unconfirmed version is rolled back; `None`: commit as soon as healthy.
    pub confirm_deadline: Option<Millis>,
    /// Whether the new vertex has come up healthy.
    pub healthy: bool,
}

/// Why a staged version was rolled back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RollbackReason {
    /// The new vertex exited before it became healthy.
    VertexFailed,
    /// The new vertex did not become healthy within [`HEALTH_WINDOW_MS`].
    NotHealthyInTime,
    /// Nobody confirmed within the commit timeout.
    NotConfirmed,
}

impl core::fmt::Display for RollbackReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            RollbackReason::VertexFailed => "the new vertex exited before it became healthy",
            RollbackReason::NotHealthyInTime => "the new vertex did not become healthy in time",
            RollbackReason::NotConfirmed => "it was not confirmed within the commit timeout",
        })
    }
}

/// What the commit machine decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitDecision {
    /// Keep waiting.
    Wait,
    /// The vertex is healthy; an operator must still confirm before the deadline.
    AwaitConfirm,
    /// Make the staged version permanent.
    Commit,
    /// Return to the previous version.
    RollBack(RollbackReason),
}

/// The staged-version state machine: at most one version is pending.
#[derive(Clone, Debug, Default)]
pub struct Commit {
    pending: Option<Pending>,
}

impl Commit {
    /// The pending version, if any.
    pub fn pending(&self) -> Option<&Pending> {
        self.pending.as_ref()
    }

    /// A version was staged and the vertex restarted on it. `confirm_timeout`
    /// `None` commits once healthy (the poller, or `sync --confirm`).
    pub fn staged(
        &mut self,
        now: Millis,
        version: u32,
        previous: u32,
        confirm_timeout: Option<Millis>,
    ) {
        self.pending = Some(Pending {
            version,
            previous,
            health_deadline: now + HEALTH_WINDOW_MS,
            confirm_deadline: confirm_timeout.map(|t| now + t),
            healthy: false,
        });
    }

    /// Resumes a pending version found on disk after an agent restart.
    pub fn resumed(&mut self, now: Millis, version: u32, previous: u32, remaining: Millis) {
        self.pending = Some(Pending {
            version,
            previous,
            health_deadline: now + HEALTH_WINDOW_MS,
            confirm_deadline: Some(now + remaining),
            healthy: false,
        });
    }

    /// The vertex running the staged version became healthy.
    pub fn vertex_healthy(&mut self) -> CommitDecision {
        let Some(p) = &mut self.pending else {
            return CommitDecision::Wait;
        };
        p.healthy = true;
        if p.confirm_deadline.is_none() {
            self.pending = None;
            return CommitDecision::Commit;
        }
        CommitDecision::AwaitConfirm
    }

    /// The vertex running the staged version exited.
    pub fn vertex_exited(&mut self) -> CommitDecision {
        match self.pending {
            Some(p) if !p.healthy => {
                self.pending = None;
                CommitDecision::RollBack(RollbackReason::VertexFailed)
            }
            _ => CommitDecision::Wait,
        }
    }

    /// An operator confirmed (`flor agent sync --confirm`).
    pub fn confirm(&mut self) -> CommitDecision {
        match self.pending.take() {
            Some(_) => CommitDecision::Commit,
            None => CommitDecision::Wait,
        }
    }

    /// Advances time.
    pub fn tick(&mut self, now: Millis) -> CommitDecision {
        let Some(p) = self.pending else {
            return CommitDecision::Wait;
        };
        if !p.healthy && now >= p.health_deadline {
            self.pending = None;
            return CommitDecision::RollBack(RollbackReason::NotHealthyInTime);
        }
        if p.confirm_deadline.is_some_and(|d| now >= d) {
            self.pending = None;
            return CommitDecision::RollBack(RollbackReason::NotConfirmed);
        }
        CommitDecision::Wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_jitters_within_half() {
        let mut b = Backoff::new(1_000, 8_000);
        // rand = 0 gives the low end (d/2), rand = MAX a value in [d/2, d].
        let lows: Vec<Millis> = (0..6).map(|_| b.next_delay(0)).collect();
        assert_eq!(lows, [500, 1_000, 2_000, 4_000, 4_000, 4_000]);
        let mut b = Backoff::new(1_000, 8_000);
        for n in 0..10u32 {
            let nominal = (1_000u64 << n.min(20)).min(8_000);
            let d = b.next_delay(u32::MAX - n);
            assert!(d >= nominal / 2 && d <= nominal, "{n}: {d}");
        }
        assert_eq!(b.failures(), 10);
        b.reset();
        assert_eq!(b.next_delay(0), 500);
        // Huge failure counts neither overflow nor exceed the cap.
        let mut b = Backoff::new(1_000, 300_000);
        for _ in 0..200 {
            assert!(b.next_delay(u32::MAX) <= 300_000);
        }
    }

    #[test]
    fn poller_backs_off_while_the_server_is_down_and_recovers() {
        let mut p = Poller::new(0, 60);
        assert!(p.start_if_due(0));
        assert!(!p.start_if_due(0), "one poll in flight at a time");
        let mut now = 0;
        let mut delays = vec![];
        for _ in 0..12 {
            delays.push(p.failed(now, 0));
            now += p.next_in(now);
            assert!(p.start_if_due(now));
        }
        assert_eq!(&delays[..4], &[500, 1_000, 2_000, 4_000]);
        assert_eq!(*delays.last().unwrap(), u64::from(POLL_BACKOFF_CAP_MS) / 2);
        assert_eq!(p.failures(), 12);
        p.succeeded(now);
        assert_eq!(p.failures(), 0);
        assert_eq!(p.next_in(now), 60_000);
        assert!(!p.start_if_due(now + 59_999));
        assert!(p.start_if_due(now + 60_000));
    }

    #[test]
    fn supervisor_restarts_with_backoff_and_resets_when_stable() {
        let mut s = Supervisor::new();
        assert_eq!(s.tick(0, false), SupervisorEvent::Spawn);
        s.spawned(0, 10);
        assert!(!s.exited(100, 0), "died before it was healthy");
        assert_eq!(s.state(), VertexState::Waiting { at: 350 });
        assert_eq!(s.tick(349, false), SupervisorEvent::None);
        assert_eq!(s.tick(350, false), SupervisorEvent::Spawn);
        s.spawned(350, 11);
        s.exited(400, 0);
        assert_eq!(s.state(), VertexState::Waiting { at: 900 }, "doubled");
        s.spawned(900, 12);
        assert_eq!(
            s.tick(900 + 100, true),
            SupervisorEvent::BecameHealthy,
            "status file"
        );
        assert_eq!(s.tick(900 + 200, true), SupervisorEvent::None);
        assert_eq!(s.tick(900 + STABLE_AFTER_MS, true), SupervisorEvent::None);
        assert!(s.exited(900 + STABLE_AFTER_MS + 1, 0));
        assert_eq!(
            s.state(),
            VertexState::Waiting {
                at: 900 + STABLE_AFTER_MS + 1 + 250
            },
            "reset after a stable run"
        );
        assert_eq!(s.restarts(), 3);
        // Healthy by staying up, without a status file.
        s.spawned(50_000, 13);
        assert_eq!(
            s.tick(50_000 + HEALTHY_AFTER_MS - 1, false),
            SupervisorEvent::None
        );
        assert_eq!(
            s.tick(50_000 + HEALTHY_AFTER_MS, false),
            SupervisorEvent::BecameHealthy
        );
        s.restart_now(60_000);
        assert_eq!(s.tick(60_000, false), SupervisorEvent::Spawn);
        assert_eq!(s.restarts(), 3, "a deliberate restart is not a crash");
    }

    #[test]
    fn commit_timer_rolls_back_unless_confirmed() {
        let mut c = Commit::default();
        c.staged(0, 3, 2, Some(60_000));
        assert_eq!(c.tick(1_000), CommitDecision::Wait);
        assert_eq!(c.vertex_healthy(), CommitDecision::AwaitConfirm);
        assert_eq!(c.tick(59_999), CommitDecision::Wait);
        assert_eq!(
            c.tick(60_000),
            CommitDecision::RollBack(RollbackReason::NotConfirmed)
        );
        assert!(c.pending().is_none());

        c.staged(0, 3, 2, Some(60_000));
        c.vertex_healthy();
        assert_eq!(c.confirm(), CommitDecision::Commit);
        assert_eq!(
            c.tick(120_000),
            CommitDecision::Wait,
            "nothing left to roll back"
        );
        assert_eq!(
            c.confirm(),
            CommitDecision::Wait,
            "confirm with nothing pending"
        );
    }

    #[test]
    fn commit_rolls_back_a_vertex_that_cannot_start() {
        let mut c = Commit::default();
        c.staged(0, 3, 2, Some(300_000));
        assert_eq!(
            c.vertex_exited(),
            CommitDecision::RollBack(RollbackReason::VertexFailed)
        );
        c.staged(0, 3, 2, None);
        assert_eq!(
            c.tick(HEALTH_WINDOW_MS),
            CommitDecision::RollBack(RollbackReason::NotHealthyInTime)
        );
        // Health-gated staging commits on health; a later crash is the supervisor's business.
        c.staged(0, 4, 3, None);
        assert_eq!(c.vertex_healthy(), CommitDecision::Commit);
        assert_eq!(c.vertex_exited(), CommitDecision::Wait);
        // A confirmed-on-timer version that crashes after being healthy is not rolled back early.
        c.staged(0, 5, 4, Some(300_000));
        c.vertex_healthy();
        assert_eq!(c.vertex_exited(), CommitDecision::Wait);
        assert_eq!(c.pending().map(|p| p.version), Some(5));
    }

    #[test]
    fn resumed_pending_keeps_its_remaining_time() {
        let mut c = Commit::default();
        c.resumed(1_000, 7, 6, 5_000);
        c.vertex_healthy();
        assert_eq!(c.tick(5_999), CommitDecision::Wait);
        assert_eq!(
            c.tick(6_000),
            CommitDecision::RollBack(RollbackReason::NotConfirmed)
        );
    }
}
