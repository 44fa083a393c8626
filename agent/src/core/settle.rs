//! What `flor enroll` waits for once the scope is written: the host's
//! service (`flor service run`, under systemd, procd or the Windows service
//! manager) notices the new scope within [`crate::service::SCAN`], starts its
//! agent, and the agent starts the vertex. Enroll probes until the agent
//! reports its vertex healthy, and then says that traffic flows; with no
//! service and no agent it says at once what to start.
//!
//! ```text
//! probe every PROBE_EVERY: service lock held? agent answers `status json`? vertex healthy?
//!   vertex healthy                    -> Running
//!   no service, no agent              -> NoService (nothing will start it: say what to start)
//!   SETTLE_WITHIN passed, no agent    -> NoAgent (a service runs but did not start it)
//!   SETTLE_WITHIN passed, agent       -> NotHealthy (its vertex did not come up)
//!   else                              -> wait
//! ```
//!
//! Pure: the shell (`enroll::settle`) owns the clock, the lock and the socket.

use super::Millis;

/// How long enroll waits for the service to run the new scope: one service
/// scan (2 s), the agent's start, the vertex's start and its first report,
/// with room for a slow router (under qemu a MIPS vertex takes a few seconds
/// to come up).
pub const SETTLE_WITHIN: Millis = 20_000;
/// Pause between two probes.
pub const PROBE_EVERY: Millis = 250;

/// What one probe saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    /// A `flor service run` holds this home's service lock.
    pub service: bool,
    /// The scope's agent answered; `Some(true)`: its vertex is healthy.
    pub agent: Option<bool>,
}

/// How the wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settled {
    /// The agent runs a healthy vertex: traffic flows.
    Running,
    /// No service runs for this home and no agent for the scope.
    NoService,
    /// A service runs, but no agent answered within [`SETTLE_WITHIN`].
    NoAgent,
    /// The agent answers, but its vertex was not healthy within [`SETTLE_WITHIN`].
    NotHealthy,
}

/// Decides after a probe taken `elapsed` ms after the scope was written;
/// `None`: probe again after [`PROBE_EVERY`].
pub fn decide(elapsed: Millis, probe: Probe) -> Option<Settled> {
    match (probe.agent, probe.service) {
        (Some(true), _) => Some(Settled::Running),
        (None, false) => Some(Settled::NoService),
        _ if elapsed < SETTLE_WITHIN => None,
        (None, true) => Some(Settled::NoAgent),
        (Some(false), _) => Some(Settled::NotHealthy),
    }
}

/// Which service manager runs `flor service run` here, for the hint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Init {
    /// systemd is PID 1 (`/run/systemd/system` exists): the `flor` unit.
    Systemd,
    /// OpenWrt's procd (`/etc/rc.common` exists): `/etc/init.d/flor`.
    Procd,
    /// The Windows service manager: the MSI's `Florete` service.
    Windows,
    /// None known: run it by hand.
    Other,
}

/// The command that starts the host's service, for a home that is the
/// packages' system home (`system`) or a user's own.
pub fn start_hint(init: Init, system: bool) -> &'static str {
    match (init, system) {
        (Init::Systemd, true) => "systemctl enable --now flor",
        (Init::Systemd, false) => {
            "systemctl --user enable --now flor (after install.sh --user), or flor service run"
        }
        (Init::Procd, _) => "/etc/init.d/flor enable && /etc/init.d/flor start",
        (Init::Windows, _) => "net start Florete",
        (Init::Other, _) => "flor service run",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn p(service: bool, agent: Option<bool>) -> Probe {
        Probe { service, agent }
    }

    #[test]
    fn a_healthy_vertex_ends_the_wait_at_once() {
        assert_eq!(decide(0, p(true, Some(true))), Some(Settled::Running));
        // A hand-started agent counts as well as the service's.
        assert_eq!(decide(0, p(false, Some(true))), Some(Settled::Running));
    }

    #[test]
    fn with_nothing_to_start_the_agent_enroll_says_so_without_waiting() {
        assert_eq!(decide(0, p(false, None)), Some(Settled::NoService));
    }

    #[test]
    fn a_running_service_gets_until_the_bound_to_start_agent_and_vertex() {
        // The service scans every 2 s; the agent then starts its vertex.
        let mut t = 0;
        while t < SETTLE_WITHIN {
            assert_eq!(decide(t, p(true, None)), None, "at {t} ms");
            assert_eq!(decide(t, p(true, Some(false))), None, "at {t} ms");
            t += PROBE_EVERY;
        }
        assert_eq!(decide(SETTLE_WITHIN, p(true, None)), Some(Settled::NoAgent));
        assert_eq!(
            decide(SETTLE_WITHIN, p(true, Some(false))),
            Some(Settled::NotHealthy)
        );
        // An agent that answers keeps the wait going even if the service went away.
        assert_eq!(decide(1_000, p(false, Some(false))), None);
        assert_eq!(
            decide(SETTLE_WITHIN, p(false, Some(false))),
            Some(Settled::NotHealthy)
        );
    }

    #[test]
    fn the_hint_names_the_service_manager_of_the_host() {
        assert_eq!(
            start_hint(Init::Systemd, true),
            "systemctl enable --now flor"
        );
        assert!(start_hint(Init::Systemd, false).starts_with("systemctl --user"));
        assert_eq!(
            start_hint(Init::Procd, true),
            "/etc/init.d/flor enable && /etc/init.d/flor start"
        );
        assert_eq!(start_hint(Init::Windows, true), "net start Florete");
        assert_eq!(start_hint(Init::Other, false), "flor service run");
    }
}
