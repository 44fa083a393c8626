//! The checked model: what [`crate::validate`] produces and everything
//! after it consumes ([`crate::artifacts`], [`crate::ports`], compile,
//! issue-bundle, the landing page).
//!
//! A [`Rete`] holds names that are valid, unique and resolved; [`Access`]
//! is derived from it ([`Rete::access`]): principals -> roles -> services
//! and groups -> services, walked directly. Nothing here checks or reads a
//! file: the rules live in `validate`, which is the only module that builds
//! these types from YAML, so the arrows point one way
//! (`validate -> checked <- artifacts, ports, compile`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use flor_vertex::identity::{Name, SpiffeId, TrustDomain};

/// Reserved role every node principal gets automatically.
pub const ROLE_NODE: &str = "node";
/// Reserved role of operators (`role: operator` in users.yaml).
pub const ROLE_OPERATOR: &str = "operator";
/// Reserved group that grants reading artifacts from the config-server.
pub const GROUP_CONFIG_READ: &str = "config-read";
/// Reserved group that grants publishing to the config-server.
pub const GROUP_CONFIG_WRITE: &str = "config-write";
/// The config-server's read and write services and the metrics collector's
/// push service (agents push as their node; optional): one definition in the
/// contract, which flor's agent reads to know which roles a node hosts.
pub use flor_vertex::contract::{SERVICE_CONFIG, SERVICE_CONFIG_PUBLISH, SERVICE_METRICS_PUSH};

/// A node, checked.
#[derive(Clone, Debug)]
pub struct Node {
    /// The node name.
    pub name: Name,
    /// `spiffe://<td>/node/<name>`.
    pub id: SpiffeId,
    /// UDP listen address (server nodes).
    pub listen: Option<SocketAddr>,
    /// Users held, in file order, deduplicated.
    pub users: Vec<String>,
    /// Roles of the node principal: `node` first, then extra ones.
    pub roles: Vec<String>,
    /// The node principal's declared SOCKS5 port.
    pub socks_port: Option<DeclaredPort>,
    /// Line in nodes.yaml.
    pub line: u64,
}

/// A `socks_port:` as written: the port (inside the band) and its line in
/// the principal's file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeclaredPort {
    /// The preferred port, before the device's scope offset.
    pub port: u16,
    /// Line of `socks_port:`.
    pub line: u64,
}

/// A user, checked.
#[derive(Clone, Debug)]
pub struct User {
    /// `spiffe://<td>/user/<name>`.
    pub id: SpiffeId,
    /// Roles.
    pub roles: Vec<String>,
    /// Declared SOCKS5 port (the same on every node holding the user).
    pub socks_port: Option<DeclaredPort>,
    /// Line in users.yaml.
    pub line: u64,
}

/// A service, checked. Keyed by `name` (rete-scoped) or `node/name` (node-scoped).
#[derive(Clone, Debug)]
pub struct Service {
    /// The service identity.
    pub id: SpiffeId,
    /// The hosting node.
    pub node: String,
    /// Upstream TCP address on the hosting node.
    pub upstream: SocketAddr,
    /// Roles of the service principal.
    pub roles: Vec<String>,
    /// Declared SOCKS5 port (used when the service calls others).
    pub socks_port: Option<DeclaredPort>,
    /// Owner and group of its identity side-channel socket, as compiled.
    pub caller_socket: Option<flor_vertex::artifact::CallerSocket>,
    /// Line in services.yaml.
    pub line: u64,
}

/// A role: what it grants.
#[derive(Clone, Debug, Default)]
pub struct Role {
    /// Service keys granted directly.
    pub services: Vec<String>,
    /// Groups granted.
    pub groups: Vec<String>,
}

/// A management-plane signer named in rete.yaml.
#[derive(Clone, Debug)]
pub struct SignerName {
    /// `primary`.
    pub name: Name,
    /// Line in rete.yaml.
    pub line: u64,
}

/// The checked rete: what compile and issue-bundle work from.
#[derive(Clone, Debug)]
pub struct Rete {
    /// The trust domain.
    pub td: TrustDomain,
    /// The artifact version.
    pub version: u32,
    /// Authorised management-plane signers, in file order.
    pub signers: Vec<SignerName>,
    /// Node hosting the config-server.
    pub config_node: String,
    /// Optional HTTP mirror for bundles.
    pub mirror_url: Option<String>,
    /// Agent poll interval.
    pub poll_interval_s: u32,
    /// Commit timeout.
    pub commit_timeout_s: u32,
    /// Vertex idle timeout.
    pub idle_timeout_s: u32,
    /// Seconds between agents' metrics pushes.
    pub metrics_interval_s: u32,
    /// Days a replaced certificate stays pinned after its successor was issued.
    pub pin_overlap_days: u32,
    /// Nodes by name.
    pub nodes: BTreeMap<String, Node>,
    /// Users by name.
    pub users: BTreeMap<String, User>,
    /// Services by key.
    pub services: BTreeMap<String, Service>,
    /// Roles by name.
    pub roles: BTreeMap<String, Role>,
    /// Groups by name: member service keys (listed in groups.yaml or joined from services.yaml).
    pub groups: BTreeMap<String, BTreeSet<String>>,
}

/// Who may reach what, derived from roles and groups.
#[derive(Debug, Default)]
pub struct Access {
    /// Principal → service keys it may reach.
    pub reach: BTreeMap<SpiffeId, BTreeSet<String>>,
    /// Service key → principals that may reach it.
    pub callers: BTreeMap<String, BTreeSet<SpiffeId>>,
}

impl Rete {
    /// The SPIFFE ID of the config-server read service.
    pub fn config_service(&self) -> Option<&Service> {
        self.services.get(SERVICE_CONFIG)
    }

    /// The metrics collector's rete-scoped push service, if the rete has one.
    pub fn metrics_push_service(&self) -> Option<&Service> {
        self.services.get(SERVICE_METRICS_PUSH)
    }

    /// Service keys each role grants, with groups expanded.
    pub fn role_grants(&self) -> BTreeMap<&str, BTreeSet<&str>> {
        self.roles
            .iter()
            .map(|(name, role)| {
                let mut set: BTreeSet<&str> = role.services.iter().map(String::as_str).collect();
                for g in &role.groups {
                    if let Some(members) = self.groups.get(g) {
                        set.extend(members.iter().map(String::as_str));
                    }
                }
                (name.as_str(), set)
            })
            .collect()
    }

    /// Every principal of the rete with its roles: users, services, nodes.
    pub fn principals(&self) -> Vec<(&SpiffeId, &[String])> {
        let mut out: Vec<(&SpiffeId, &[String])> = Vec::new();
        out.extend(self.users.values().map(|u| (&u.id, u.roles.as_slice())));
        out.extend(self.services.values().map(|s| (&s.id, s.roles.as_slice())));
        out.extend(self.nodes.values().map(|n| (&n.id, n.roles.as_slice())));
        out
    }

    /// Walks principals → roles → (services ∪ groups → services).
    pub fn access(&self) -> Access {
        let grants = self.role_grants();
        let mut access = Access::default();
        for (id, roles) in self.principals() {
            let mut set = BTreeSet::new();
            for r in roles {
                if let Some(g) = grants.get(r.as_str()) {
                    set.extend(g.iter().map(|s| (*s).to_owned()));
                }
            }
            for key in &set {
                access
                    .callers
                    .entry(key.clone())
                    .or_default()
                    .insert(id.clone());
            }
            if !set.is_empty() {
                access.reach.insert(id.clone(), set);
            }
        }
        access
    }
}

/// A repo that passed every rule.
#[derive(Debug)]
pub struct Checked {
    /// The rete.
    pub rete: Rete,
    /// Derived access.
    pub access: Access,
    /// The repo's certificates.
    pub certs: crate::pki::RepoCerts,
    /// Each caller's pinned certificates, from enrollment.log ([`crate::pins`]).
    pub pins: Pinned,
}

/// Pinned certificates by principal (SPIFFE ID as `enrollment.log` writes it);
/// a principal that is not here is not pinned.
pub type Pinned = BTreeMap<String, flor_vertex::artifact::Pins>;
