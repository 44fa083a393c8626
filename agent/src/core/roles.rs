//! The management roles a node hosts, and their processes' restart policy,
//! without I/O.
//!
//! Which roles run where is already in the rete's YAML: the node that
//! publishes the rete-scoped services `config` and `config-publish` hosts the
//! config-server, the node that publishes `metrics-push` and `metrics` hosts
//! the metrics collector. So the agent reads them from its own verified,
//! live vertex artifact ([`hosted`]) and runs `flor config-server` /
//! `flor metrics-server` on those services' upstream addresses — no second
//! configuration, no second unit to write, and a version that moves a
//! service to another node moves its process with it.
//!
//! ```text
//! live vertex artifact --hosted()--> Hosted --Roles::set--> Spawn / Stop
//! Roles::tick: waiting and due -> Spawn;  exited -> wait backoff -> Spawn ...
//! ```
//!
//! The restart policy is the vertex's ([`super::Supervisor`]): capped
//! exponential backoff with jitter, reset after a stable run. A build without
//! the `mgmt` cargo feature (router boards) carries no role: the machine then
//! logs once per role that this node is asked to host one, and status and
//! `flor doctor` show it.

use core::fmt;
use std::net::SocketAddr;

use flor_vertex::artifact::VertexConfig;
use flor_vertex::contract::{
    SERVICE_CONFIG, SERVICE_CONFIG_PUBLISH, SERVICE_METRICS, SERVICE_METRICS_PUSH,
};
use flor_vertex::identity::Kind;

use super::{Backoff, Millis, RESTART_BACKOFF_BASE_MS, RESTART_BACKOFF_CAP_MS, STABLE_AFTER_MS};

/// A management role: one `flor` subcommand behind two published services.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// `flor config-server` behind `config` and `config-publish`.
    ConfigServer,
    /// `flor metrics-server` behind `metrics-push` and `metrics`.
    MetricsServer,
}

impl Role {
    /// Every role, in the order status lists them.
    pub const ALL: [Role; 2] = [Role::ConfigServer, Role::MetricsServer];

    /// The `flor` subcommand that runs it.
    pub fn command(self) -> &'static str {
        match self {
            Role::ConfigServer => "config-server",
            Role::MetricsServer => "metrics-server",
        }
    }

    /// The services it serves, in the order of [`RoleSpec::listen`].
    pub fn services(self) -> [&'static str; 2] {
        match self {
            Role::ConfigServer => [SERVICE_CONFIG, SERVICE_CONFIG_PUBLISH],
            Role::MetricsServer => [SERVICE_METRICS_PUSH, SERVICE_METRICS],
        }
    }

    /// The subcommand's listen flags, in the order of [`RoleSpec::listen`].
    pub fn flags(self) -> [&'static str; 2] {
        match self {
            Role::ConfigServer => ["--read-listen", "--publish-listen"],
            Role::MetricsServer => ["--push-listen", "--read-listen"],
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.command())
    }
}

/// A role to run and where it listens: its services' upstreams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoleSpec {
    /// The role.
    pub role: Role,
    /// The upstream of each of [`Role::services`], in that order.
    pub listen: [SocketAddr; 2],
}

/// What a vertex artifact asks of this node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hosted {
    /// Roles whose two services this node publishes.
    pub roles: Vec<RoleSpec>,
    /// Roles of which this node publishes only one service, with the one missing:
    /// nothing is started for them (the process needs both listeners).
    pub incomplete: Vec<(Role, &'static str)>,
}

/// The roles `cfg` (this node's live vertex artifact) makes this node host.
///
/// Only rete-scoped services of the artifact's own rete count: a node-scoped
/// `service/<node>/config` is an ordinary service of that name.
pub fn hosted(cfg: &VertexConfig) -> Hosted {
    let upstream = |name: &str| {
        cfg.services
            .iter()
            .find(|s| {
                s.id.kind() == Kind::Service
                    && s.id.node().is_none()
                    && s.id.name().as_str() == name
                    && s.id.trust_domain() == &cfg.rete
            })
            .map(|s| s.upstream.0)
    };
    let mut h = Hosted::default();
    for role in Role::ALL {
        let [a, b] = role.services();
        match (upstream(a), upstream(b)) {
            (Some(x), Some(y)) => h.roles.push(RoleSpec {
                role,
                listen: [x, y],
            }),
            (Some(_), None) => h.incomplete.push((role, b)),
            (None, Some(_)) => h.incomplete.push((role, a)),
            (None, None) => {}
        }
    }
    h
}

/// What the shell must do for a role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleAction {
    /// Start `flor <role> --rete <scope> <flags> <listen>...`; answer with spawned / spawn failed.
    Spawn(RoleSpec),
    /// Stop the role's process (it is no longer hosted, or listens elsewhere now).
    Stop(Role),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Start at `at`.
    Waiting { at: Millis },
    /// Asked the shell to start it; no answer yet.
    Starting,
    /// Runs as `pid` since `since`.
    Running { pid: u32, since: Millis },
    /// Hosted, but this build does not carry the role.
    NotCarried,
}

#[derive(Clone, Debug)]
struct Slot {
    spec: RoleSpec,
    state: State,
    backoff: Backoff,
    restarts: u32,
}

/// One hosted role, as status shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoleView {
    /// The role and its listen addresses.
    pub spec: RoleSpec,
    /// Its pid, if it runs.
    pub pid: Option<u32>,
    /// "running", "restarting" or "not in this build".
    pub state: &'static str,
    /// Restarts after an exit since the agent started.
    pub restarts: u32,
}

/// The roles this node hosts and their processes.
#[derive(Clone, Debug, Default)]
pub struct Roles {
    slots: Vec<Slot>,
    /// Roles already reported as missing from this build (logged once each).
    warned: Vec<Role>,
    /// The last incomplete pairs reported (logged when they change).
    incomplete: Vec<(Role, &'static str)>,
}

impl Roles {
    /// Takes what the live artifact asks for now: stops what is no longer
    /// hosted or moved, queues a start for what is new. `carried`: whether
    /// this build has the `mgmt` feature.
    pub fn set(&mut self, now: Millis, hosted: &Hosted, carried: bool, out: &mut Vec<RoleAction>) {
        let mut kept = Vec::new();
        for mut slot in std::mem::take(&mut self.slots) {
            let new = hosted.roles.iter().find(|s| s.role == slot.spec.role);
            if new == Some(&slot.spec) {
                kept.push(slot);
                continue;
            }
            if matches!(slot.state, State::Running { .. } | State::Starting) {
                out.push(RoleAction::Stop(slot.spec.role));
            }
            if let Some(spec) = new {
                log::info!(
                    "{}: its services moved to {} and {}; restarting it",
                    spec.role,
                    spec.listen[0],
                    spec.listen[1]
                );
                slot.spec = *spec;
                slot.backoff.reset();
                slot.state = State::Waiting { at: now };
                kept.push(slot);
            } else {
                log::info!(
                    "{}: this node no longer publishes its services; stopped it",
                    slot.spec.role
                );
            }
        }
        for spec in &hosted.roles {
            if kept.iter().any(|s| s.spec.role == spec.role) {
                continue;
            }
            let state = if carried {
                State::Waiting { at: now }
            } else {
                if !self.warned.contains(&spec.role) {
                    self.warned.push(spec.role);
                    let [a, b] = spec.role.services();
                    log::warn!(
                        "this node publishes `{a}` and `{b}`, so it should run flor {}, but this \
                         build of flor leaves that role out (the `mgmt` cargo feature, off on \
                         router boards): run the x86_64, Debian or Raspberry Pi build here, or \
                         move the services to another node in services.yaml",
                        spec.role
                    );
                }
                State::NotCarried
            };
            kept.push(Slot {
                spec: *spec,
                state,
                backoff: Backoff::new(RESTART_BACKOFF_BASE_MS, RESTART_BACKOFF_CAP_MS),
                restarts: 0,
            });
        }
        kept.sort_by_key(|s| s.spec.role);
        self.slots = kept;
        if hosted.incomplete != self.incomplete {
            for (role, missing) in &hosted.incomplete {
                log::warn!(
                    "this node publishes only part of flor {role}'s services (no rete-scoped \
                     `{missing}`), so it is not started; publish both or neither"
                );
            }
            self.incomplete.clone_from(&hosted.incomplete);
        }
    }

    /// Advances time: queues the starts that are due.
    pub fn tick(&mut self, now: Millis, out: &mut Vec<RoleAction>) {
        for s in &mut self.slots {
            match s.state {
                State::Waiting { at } if now >= at => {
                    s.state = State::Starting;
                    out.push(RoleAction::Spawn(s.spec));
                }
                State::Running { since, .. } if now.saturating_sub(since) >= STABLE_AFTER_MS => {
                    s.backoff.reset();
                }
                _ => {}
            }
        }
    }

    fn slot(&mut self, role: Role) -> Option<&mut Slot> {
        self.slots.iter_mut().find(|s| s.spec.role == role)
    }

    /// The shell started `role` as `pid`.
    pub fn spawned(&mut self, role: Role, now: Millis, pid: u32) {
        if let Some(s) = self.slot(role) {
            s.state = State::Running { pid, since: now };
        }
    }

    /// The shell could not start `role`: retry after backoff.
    pub fn spawn_failed(&mut self, role: Role, now: Millis, rand: u32) {
        if let Some(s) = self.slot(role) {
            let d = s.backoff.next_delay(rand);
            s.state = State::Waiting { at: now + d };
        }
    }

    /// `role`'s process exited on its own; returns the delay before its restart.
    pub fn exited(&mut self, role: Role, now: Millis, rand: u32) -> Option<Millis> {
        let s = self.slot(role)?;
        if !matches!(s.state, State::Running { .. }) {
            return None;
        }
        s.restarts = s.restarts.saturating_add(1);
        let d = s.backoff.next_delay(rand);
        s.state = State::Waiting { at: now + d };
        Some(d)
    }

    /// Every hosted role, for status.
    pub fn view(&self) -> Vec<RoleView> {
        self.slots
            .iter()
            .map(|s| RoleView {
                spec: s.spec,
                pid: match s.state {
                    State::Running { pid, .. } => Some(pid),
                    _ => None,
                },
                state: match s.state {
                    State::Running { .. } => "running",
                    State::Waiting { .. } | State::Starting => "restarting",
                    State::NotCarried => "not in this build",
                },
                restarts: s.restarts,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flor_vertex::artifact::{Addr, PublishedService, ScopePath};
    use flor_vertex::identity::{Name, SpiffeId, TrustDomain};

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// mgmt01 of examples/my-rete: the four management services, and a node-scoped decoy.
    fn mgmt01(services: &[(&str, &str)]) -> VertexConfig {
        let mut v = VertexConfig {
            rete: TrustDomain::new("demo.flor").unwrap(),
            node: Name::new("mgmt01").unwrap(),
            name: Name::new("flor").unwrap(),
            ca: ScopePath::new("ca.crt").unwrap(),
            listen: None,
            idle_timeout_s: 60,
            principals: Default::default(),
            services: Default::default(),
            acl: Default::default(),
            routes: Default::default(),
            socks: Default::default(),
        };
        for (id, up) in services {
            v.services
                .push(PublishedService {
                    id: SpiffeId::parse(id).unwrap(),
                    upstream: Addr(addr(up)),
                    caller_socket: None,
                })
                .unwrap();
        }
        v
    }

    const ALL_FOUR: [(&str, &str); 4] = [
        ("spiffe://demo.flor/service/config", "127.0.0.1:7080"),
        (
            "spiffe://demo.flor/service/config-publish",
            "127.0.0.1:7081",
        ),
        ("spiffe://demo.flor/service/metrics-push", "127.0.0.1:9101"),
        ("spiffe://demo.flor/service/metrics", "127.0.0.1:9100"),
    ];

    fn config_spec() -> RoleSpec {
        RoleSpec {
            role: Role::ConfigServer,
            listen: [addr("127.0.0.1:7080"), addr("127.0.0.1:7081")],
        }
    }

    fn metrics_spec() -> RoleSpec {
        RoleSpec {
            role: Role::MetricsServer,
            listen: [addr("127.0.0.1:9101"), addr("127.0.0.1:9100")],
        }
    }

    #[test]
    fn the_published_services_name_the_roles_and_their_listeners() {
        let h = hosted(&mgmt01(&ALL_FOUR));
        assert_eq!(h.roles, [config_spec(), metrics_spec()]);
        assert!(h.incomplete.is_empty());

        // alpha's artifact: an ordinary service, a node-scoped `config`, another rete's `metrics`.
        let h = hosted(&mgmt01(&[
            ("spiffe://demo.flor/service/wiki", "127.0.0.2:8080"),
            ("spiffe://demo.flor/service/alpha/config", "127.0.0.2:7080"),
            (
                "spiffe://demo.flor/service/config-publish",
                "127.0.0.2:7081",
            ),
            ("spiffe://other.flor/service/metrics", "127.0.0.2:9100"),
        ]));
        assert!(h.roles.is_empty());
        assert_eq!(h.incomplete, [(Role::ConfigServer, "config")]);

        let h = hosted(&mgmt01(&ALL_FOUR[2..3]));
        assert_eq!(h.incomplete, [(Role::MetricsServer, "metrics")]);
    }

    #[test]
    fn hosted_roles_start_restart_with_backoff_and_reset_when_stable() {
        let mut r = Roles::default();
        let mut out = vec![];
        let h = hosted(&mgmt01(&ALL_FOUR));
        r.set(0, &h, true, &mut out);
        assert!(out.is_empty(), "starts come from tick");
        r.tick(0, &mut out);
        assert_eq!(
            out,
            [
                RoleAction::Spawn(config_spec()),
                RoleAction::Spawn(metrics_spec())
            ]
        );
        out.clear();
        r.tick(10, &mut out);
        assert!(out.is_empty(), "no second start while one is on its way");
        r.spawned(Role::ConfigServer, 10, 100);
        r.spawn_failed(Role::MetricsServer, 10, 0);
        r.tick(10 + 249, &mut out);
        assert!(out.is_empty());
        r.tick(10 + 250, &mut out);
        assert_eq!(out, [RoleAction::Spawn(metrics_spec())]);
        out.clear();
        r.spawned(Role::MetricsServer, 260, 101);

        // The config-server dies twice: 250 then 500 ms (rand 0: the low end).
        assert_eq!(r.exited(Role::ConfigServer, 1_000, 0), Some(250));
        assert_eq!(r.view()[0].state, "restarting");
        r.tick(1_250, &mut out);
        assert_eq!(out, [RoleAction::Spawn(config_spec())]);
        out.clear();
        r.spawned(Role::ConfigServer, 1_250, 102);
        assert_eq!(r.exited(Role::ConfigServer, 1_300, 0), Some(500));
        r.tick(1_800, &mut out);
        out.clear();
        r.spawned(Role::ConfigServer, 1_800, 103);
        // Up for STABLE_AFTER_MS: the next exit starts from the base delay again.
        r.tick(1_800 + STABLE_AFTER_MS, &mut out);
        assert_eq!(r.exited(Role::ConfigServer, 40_000, 0), Some(250));
        let v = r.view();
        assert_eq!((v[0].restarts, v[0].pid), (3, None));
        assert_eq!((v[1].state, v[1].pid), ("running", Some(101)));
        assert_eq!(r.exited(Role::ConfigServer, 40_001, 0), None, "not running");
    }

    #[test]
    fn a_new_version_stops_removed_roles_and_moves_changed_ones() {
        let mut r = Roles::default();
        let mut out = vec![];
        r.set(0, &hosted(&mgmt01(&ALL_FOUR)), true, &mut out);
        r.tick(0, &mut out);
        r.spawned(Role::ConfigServer, 0, 100);
        r.spawned(Role::MetricsServer, 0, 101);
        out.clear();

        // The same artifact again (a commit, a reload): nothing happens.
        r.set(5, &hosted(&mgmt01(&ALL_FOUR)), true, &mut out);
        r.tick(5, &mut out);
        assert!(out.is_empty());

        // v2: metrics moved off this node, the config-server's publish port changed.
        let v2 = [
            ALL_FOUR[0],
            (
                "spiffe://demo.flor/service/config-publish",
                "127.0.0.1:7082",
            ),
        ];
        r.set(10, &hosted(&mgmt01(&v2)), true, &mut out);
        assert_eq!(
            out,
            [
                RoleAction::Stop(Role::ConfigServer),
                RoleAction::Stop(Role::MetricsServer)
            ]
        );
        out.clear();
        r.tick(10, &mut out);
        let moved = RoleSpec {
            role: Role::ConfigServer,
            listen: [addr("127.0.0.1:7080"), addr("127.0.0.1:7082")],
        };
        assert_eq!(out, [RoleAction::Spawn(moved)]);
        assert_eq!(r.view().len(), 1);
        // A late exit of the stopped collector changes nothing.
        assert_eq!(r.exited(Role::MetricsServer, 20, 0), None);

        // Nothing hosted any more: the config-server stops too.
        r.spawned(Role::ConfigServer, 10, 102);
        out.clear();
        r.set(30, &Hosted::default(), true, &mut out);
        assert_eq!(out, [RoleAction::Stop(Role::ConfigServer)]);
        assert!(r.view().is_empty());
    }

    #[test]
    fn a_build_without_the_roles_starts_nothing_and_says_so() {
        let mut r = Roles::default();
        let mut out = vec![];
        r.set(0, &hosted(&mgmt01(&ALL_FOUR)), false, &mut out);
        r.tick(0, &mut out);
        r.tick(60_000, &mut out);
        assert!(out.is_empty());
        let v = r.view();
        assert_eq!(v.len(), 2);
        assert!(v
            .iter()
            .all(|v| v.state == "not in this build" && v.pid.is_none()));
        // A second look at the same artifact logs nothing new (warned once per role).
        r.set(1, &hosted(&mgmt01(&ALL_FOUR)), false, &mut out);
        assert_eq!(r.warned, [Role::ConfigServer, Role::MetricsServer]);
    }
}
