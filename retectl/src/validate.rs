//! Every rule of the rete, checked at once.
//!
//! [`check`] turns the parsed [`Source`] into a [`Rete`] whose names are
//! valid, unique and resolved, collecting every [`Problem`] on the way rather
//! than stopping at the first: the operator fixes a whole batch per run.
//! Rules (each has a test in `tests/validate.rs`):
//!
//! - names are valid (one DNS label; the rete name a SPIFFE trust domain) and unique;
//! - reserved roles `node`, `operator` and groups `config-read`, `config-write` exist,
//!   `config-read` holds `config` and `config-write` holds `config-publish`,
//!   and at least one user has role `operator`;
//! - every reference (node → user, service → node/role/group, role → service/group,
//!   group → service, config-server → node) resolves;
//! - addresses are `ip:port` with a non-zero port; upstreams do not clash on a node;
//!   UDP listen addresses do not clash between nodes; a node that hosts services listens;
//! - a declared `socks_port` is inside the SOCKS5 band (1080-1179), and no two SOCKS5
//!   principals of a node end up on the same port, declared or default ([`crate::ports`]);
//! - crypto categories name algorithms retectl knows;
//! - certificates in the repo chain to `certs/ca.crt` and are not expired ([`crate::pki`]);
//! - every node's compiled artifact fits the device limits ([`crate::compile`]).
//!
//! Access is derived here too ([`Rete::access`]): principals → roles →
//! services and groups → services, walked directly.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::SocketAddr;

use flor_vertex::identity::{Kind, Name, SpiffeId, TrustDomain};
use flor_vertex::limits;

use crate::model::{self, line, Problem, Source, S};

/// Reserved role every node principal gets automatically.
pub const ROLE_NODE: &str = "node";
/// Reserved role of operators (`role: operator` in users.yaml).
pub const ROLE_OPERATOR: &str = "operator";
/// Reserved group that grants reading artifacts from the config-server.
pub const GROUP_CONFIG_READ: &str = "config-read";
/// Reserved group that grants publishing to the config-server.
pub const GROUP_CONFIG_WRITE: &str = "config-write";
/// The config-server's read service.
pub const SERVICE_CONFIG: &str = "config";
/// The config-server's write service.
pub const SERVICE_CONFIG_PUBLISH: &str = "config-publish";

/// The CA key algorithms retectl can issue with.
pub const CA_ALGS: [&str; 1] = ["ecdsa-p256"];
/// The management-plane signer algorithms (the envelope is Ed25519).
pub const MGMT_SIGNER_ALGS: [&str; 1] = ["ed25519"];
/// The principal TLS key algorithms.
pub const TLS_ALGS: [&str; 1] = ["ecdsa-p256"];

/// Default seconds between config-server polls.
pub const DEFAULT_POLL_INTERVAL_S: u32 = 60;
/// Default seconds an unconfirmed new version runs before rollback (the spec's 5m).
pub const DEFAULT_COMMIT_TIMEOUT_S: u32 = 300;
/// Default idle timeout for QUIC connections and flows.
pub const DEFAULT_IDLE_TIMEOUT_S: u32 = 60;

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

/// Collects problems while building the [`Rete`].
struct Checker {
    problems: Vec<Problem>,
    /// Names that were declared but invalid: references to them are not reported again.
    bad: HashSet<(&'static str, String)>,
}

impl Checker {
    fn push(&mut self, file: &str, line: u64, msg: impl Into<String>) {
        self.problems.push(Problem::new(file, line, msg));
    }

    fn name(&mut self, file: &str, what: &'static str, s: &S<String>) -> Option<Name> {
        match Name::new(&s.value) {
            Ok(n) => Some(n),
            Err(e) => {
                self.push(file, line(s), format!("{what} name {:?}: {e}", s.value));
                self.bad.insert((what, s.value.clone()));
                None
            }
        }
    }

    fn addr(&mut self, file: &str, what: &str, s: &S<String>) -> Option<SocketAddr> {
        match s.value.parse::<SocketAddr>() {
            Ok(a) if a.port() != 0 => Some(a),
            Ok(_) => {
                self.push(
                    file,
                    line(s),
                    format!("{what} {:?}: port 0 is not a valid port", s.value),
                );
                None
            }
            Err(_) => {
                self.push(
                    file,
                    line(s),
                    format!(
                        "{what} {:?}: not an ip:port address (e.g. 127.0.0.1:8080, [::1]:8080)",
                        s.value
                    ),
                );
                None
            }
        }
    }

    /// A `socks_port:` inside the band, or a problem naming the band.
    fn socks_port(&mut self, file: &str, whose: &str, s: Option<&S<i64>>) -> Option<DeclaredPort> {
        let s = s?;
        let band = crate::ports::FIRST..=crate::ports::LAST;
        match u16::try_from(s.value) {
            Ok(port) if band.contains(&port) => Some(DeclaredPort {
                port,
                line: line(s),
            }),
            _ => {
                self.push(
                    file,
                    line(s),
                    format!(
                        "socks_port {} of {whose} is outside the SOCKS5 port band {}-{} (every rete's principals get their ports from this band; a device running several retes moves each rete's band by a multiple of {})",
                        s.value,
                        crate::ports::FIRST,
                        crate::ports::LAST,
                        flor_vertex::artifact::SOCKS_PORT_BAND,
                    ),
                );
                None
            }
        }
    }

    fn algorithm(&mut self, category: &str, s: &S<String>, known: &[&str]) {
        if !known.contains(&s.value.as_str()) {
            self.push(
                model::RETE_FILE,
                line(s),
                format!(
                    "crypto {category}: unknown algorithm {:?} (known: {})",
                    s.value,
                    known.join(", ")
                ),
            );
        }
    }

    fn reference(
        &mut self,
        file: &str,
        s: &S<String>,
        what: &'static str,
        exists: bool,
        defined_in: &str,
    ) {
        if !exists && !self.bad.contains(&(what, s.value.clone())) {
            self.push(
                file,
                line(s),
                format!("unknown {what} {:?} (not defined in {defined_in})", s.value),
            );
        }
    }
}

/// Checks every YAML rule; returns the rete (possibly partial) and all problems.
pub fn check(src: &Source) -> (Option<Rete>, Vec<Problem>) {
    let mut c = Checker {
        problems: Vec::new(),
        bad: HashSet::new(),
    };
    let r = &src.rete;
    let td = match TrustDomain::new(&r.name.value) {
        Ok(td) => Some(td),
        Err(e) => {
            c.push(
                model::RETE_FILE,
                line(&r.name),
                format!("rete name {:?}: {e}", r.name.value),
            );
            None
        }
    };
    let version = match u32::try_from(r.version.value) {
        Ok(v) if v >= 1 => v,
        _ => {
            c.push(
                model::RETE_FILE,
                line(&r.version),
                format!(
                    "version {} must be between 1 and {}",
                    r.version.value,
                    u32::MAX
                ),
            );
            1
        }
    };
    let crypto = &r.crypto.value;
    c.algorithm("ca", &crypto.ca, &CA_ALGS);
    c.algorithm(
        "signers.mgmt",
        &crypto.signers.value.mgmt,
        &MGMT_SIGNER_ALGS,
    );
    c.algorithm("tls_principals", &crypto.tls_principals, &TLS_ALGS);

    let mut signers = Vec::new();
    if r.mgmt_signers.value.is_empty() {
        c.push(
            model::RETE_FILE,
            line(&r.mgmt_signers),
            "mgmt_signers is empty: nodes would accept no artifact (convention: [primary])",
        );
    }
    if r.mgmt_signers.value.len() > limits::MAX_MGMT_SIGNERS {
        c.push(
            model::RETE_FILE,
            line(&r.mgmt_signers),
            format!(
                "mgmt_signers has {} entries, over {} by {}",
                r.mgmt_signers.value.len(),
                flor_vertex::limits::Limit::MgmtSigners,
                r.mgmt_signers.value.len() - limits::MAX_MGMT_SIGNERS
            ),
        );
    }
    let mut seen = HashSet::new();
    for s in &r.mgmt_signers.value {
        if let Some(name) = c.name(model::RETE_FILE, "management-plane signer", s) {
            if !seen.insert(s.value.clone()) {
                c.push(
                    model::RETE_FILE,
                    line(s),
                    format!("duplicate management-plane signer {:?}", s.value),
                );
            } else {
                signers.push(SignerName {
                    name,
                    line: line(s),
                });
            }
        }
    }
    let mirror_url = r.mirror_url.as_ref().map(|m| {
        if !m.value.starts_with("http://") && !m.value.starts_with("https://") {
            c.push(
                model::RETE_FILE,
                line(m),
                format!(
                    "mirror_url {:?} must start with http:// or https://",
                    m.value
                ),
            );
        }
        m.value.clone()
    });
    let t = r.timings.as_ref().map(|t| &t.value);
    let timing = |c: &mut Checker, v: Option<&S<u32>>, default: u32, what: &str| match v {
        Some(s) if s.value == 0 => {
            c.push(
                model::RETE_FILE,
                line(s),
                format!("timings.{what} must be at least 1 second"),
            );
            default
        }
        Some(s) => s.value,
        None => default,
    };
    let poll_interval_s = timing(
        &mut c,
        t.and_then(|t| t.poll_interval_s.as_ref()),
        DEFAULT_POLL_INTERVAL_S,
        "poll_interval_s",
    );
    let commit_timeout_s = timing(
        &mut c,
        t.and_then(|t| t.commit_timeout_s.as_ref()),
        DEFAULT_COMMIT_TIMEOUT_S,
        "commit_timeout_s",
    );
    let idle_timeout_s = timing(
        &mut c,
        t.and_then(|t| t.idle_timeout_s.as_ref()),
        DEFAULT_IDLE_TIMEOUT_S,
        "idle_timeout_s",
    );

    // Declarations first (so references can be checked in any order).
    let td_or_placeholder = td.clone().or_else(|| TrustDomain::new("invalid").ok());
    let Some(tdp) = td_or_placeholder else {
        return (None, c.problems);
    };

    let mut users = BTreeMap::new();
    for u in &src.users.users {
        let Some(name) = c.name(model::USERS_FILE, "user", &u.value.name) else {
            continue;
        };
        if users.contains_key(&u.value.name.value) {
            c.push(
                model::USERS_FILE,
                line(&u.value.name),
                format!("duplicate user {:?}", u.value.name.value),
            );
            continue;
        }
        let whose = format!("user {:?}", u.value.name.value);
        let socks_port = c.socks_port(model::USERS_FILE, &whose, u.value.socks_port.as_ref());
        users.insert(
            u.value.name.value.clone(),
            User {
                id: SpiffeId::new(tdp.clone(), Kind::User, name),
                roles: Vec::new(),
                socks_port,
                line: line(&u.value.name),
            },
        );
    }
    let mut nodes = BTreeMap::new();
    for n in &src.nodes.nodes {
        let Some(name) = c.name(model::NODES_FILE, "node", &n.value.name) else {
            continue;
        };
        if nodes.contains_key(&n.value.name.value) {
            c.push(
                model::NODES_FILE,
                line(&n.value.name),
                format!("duplicate node {:?}", n.value.name.value),
            );
            continue;
        }
        let listen = n
            .value
            .listen
            .as_ref()
            .and_then(|l| c.addr(model::NODES_FILE, "listen", l));
        let socks_port = c.socks_port(
            model::NODES_FILE,
            &format!("node {:?}", n.value.name.value),
            n.value.socks_port.as_ref(),
        );
        nodes.insert(
            n.value.name.value.clone(),
            Node {
                id: SpiffeId::new(tdp.clone(), Kind::Node, name.clone()),
                name,
                listen,
                users: Vec::new(),
                roles: vec![ROLE_NODE.to_owned()],
                socks_port,
                line: line(&n.value.name),
            },
        );
    }
    let mut roles: BTreeMap<String, Role> = BTreeMap::new();
    let mut role_lines = BTreeMap::new();
    for ro in &src.roles.roles {
        if c.name(model::ROLES_FILE, "role", &ro.value.name).is_none() {
            continue;
        }
        if roles.contains_key(&ro.value.name.value) {
            c.push(
                model::ROLES_FILE,
                line(&ro.value.name),
                format!("duplicate role {:?}", ro.value.name.value),
            );
            continue;
        }
        roles.insert(ro.value.name.value.clone(), Role::default());
        role_lines.insert(ro.value.name.value.clone(), line(&ro.value.name));
    }
    let mut groups: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for g in &src.groups.groups {
        if c.name(model::GROUPS_FILE, "group", &g.value.name).is_none() {
            continue;
        }
        if groups.contains_key(&g.value.name.value) {
            c.push(
                model::GROUPS_FILE,
                line(&g.value.name),
                format!("duplicate group {:?}", g.value.name.value),
            );
            continue;
        }
        groups.insert(g.value.name.value.clone(), BTreeSet::new());
    }
    let mut services = BTreeMap::new();
    for s in &src.services.services {
        let e = &s.value;
        let name = c.name(model::SERVICES_FILE, "service", &e.name);
        let node_known = nodes.contains_key(&e.node.value);
        c.reference(
            model::SERVICES_FILE,
            &e.node,
            "node",
            node_known,
            model::NODES_FILE,
        );
        let scope = e.scope.as_ref().map(|s| s.value.as_str()).unwrap_or("rete");
        let node_scoped = match scope {
            "rete" => false,
            "node" => true,
            other => {
                let l = e.scope.as_ref().map(line).unwrap_or(line(&e.name));
                c.push(
                    model::SERVICES_FILE,
                    l,
                    format!("scope {other:?} must be \"rete\" or \"node\""),
                );
                false
            }
        };
        let upstream = c.addr(model::SERVICES_FILE, "upstream", &e.upstream);
        let socks_port = c.socks_port(
            model::SERVICES_FILE,
            &format!("service {:?}", e.name.value),
            e.socks_port.as_ref(),
        );
        let (Some(name), true, Some(upstream)) = (name, node_known, upstream) else {
            // Declared but unusable: references to it are not reported again.
            let key = if node_scoped {
                format!("{}/{}", e.node.value, e.name.value)
            } else {
                e.name.value.clone()
            };
            c.bad.insert(("service", key));
            continue;
        };
        let (key, id) = if node_scoped {
            let node = nodes[&e.node.value].name.clone();
            let Ok(id) = SpiffeId::node_scoped(tdp.clone(), Kind::Service, node, name) else {
                continue;
            };
            (format!("{}/{}", e.node.value, e.name.value), id)
        } else {
            (
                e.name.value.clone(),
                SpiffeId::new(tdp.clone(), Kind::Service, name),
            )
        };
        if services.contains_key(&key) {
            c.push(
                model::SERVICES_FILE,
                line(&e.name),
                format!("duplicate service {key:?}"),
            );
            continue;
        }
        services.insert(
            key,
            Service {
                id,
                node: e.node.value.clone(),
                upstream,
                roles: Vec::new(),
                socks_port,
                line: line(&e.name),
            },
        );
    }

    // References.
    for u in &src.users.users {
        let e = &u.value;
        if e.role.is_some() && !e.roles.is_empty() {
            c.push(
                model::USERS_FILE,
                line(&e.name),
                format!(
                    "user {:?}: give either role or roles, not both",
                    e.name.value
                ),
            );
        }
        let mut rs = Vec::new();
        for r in e.role.iter().chain(e.roles.iter()) {
            c.reference(
                model::USERS_FILE,
                r,
                "role",
                roles.contains_key(&r.value),
                model::ROLES_FILE,
            );
            if roles.contains_key(&r.value) && !rs.contains(&r.value) {
                rs.push(r.value.clone());
            }
        }
        if let Some(user) = users.get_mut(&e.name.value) {
            if user.roles.is_empty() {
                user.roles = rs;
            }
        }
    }
    for n in &src.nodes.nodes {
        let e = &n.value;
        let mut held = Vec::new();
        for u in &e.users {
            c.reference(
                model::NODES_FILE,
                u,
                "user",
                users.contains_key(&u.value),
                model::USERS_FILE,
            );
            if held.contains(&u.value) {
                c.push(
                    model::NODES_FILE,
                    line(u),
                    format!("user {:?} listed twice on node {:?}", u.value, e.name.value),
                );
            } else if users.contains_key(&u.value) {
                held.push(u.value.clone());
            }
        }
        let mut extra = Vec::new();
        for r in &e.roles {
            c.reference(
                model::NODES_FILE,
                r,
                "role",
                roles.contains_key(&r.value),
                model::ROLES_FILE,
            );
            if roles.contains_key(&r.value) && r.value != ROLE_NODE && !extra.contains(&r.value) {
                extra.push(r.value.clone());
            }
        }
        if let Some(node) = nodes.get_mut(&e.name.value) {
            if node.users.is_empty() {
                node.users = held;
                node.roles.extend(extra);
            }
        }
    }
    for s in &src.services.services {
        let e = &s.value;
        let key = match e.scope.as_ref().map(|s| s.value.as_str()) {
            Some("node") => format!("{}/{}", e.node.value, e.name.value),
            _ => e.name.value.clone(),
        };
        let mut rs = Vec::new();
        for r in &e.roles {
            c.reference(
                model::SERVICES_FILE,
                r,
                "role",
                roles.contains_key(&r.value),
                model::ROLES_FILE,
            );
            if roles.contains_key(&r.value) && !rs.contains(&r.value) {
                rs.push(r.value.clone());
            }
        }
        for g in &e.groups {
            c.reference(
                model::SERVICES_FILE,
                g,
                "group",
                groups.contains_key(&g.value),
                model::GROUPS_FILE,
            );
            if services.contains_key(&key) {
                if let Some(members) = groups.get_mut(&g.value) {
                    members.insert(key.clone());
                }
            }
        }
        if let Some(svc) = services.get_mut(&key) {
            if svc.line == line(&e.name) {
                svc.roles = rs;
            }
        }
    }
    let service_ref = |c: &mut Checker, file: &str, s: &S<String>| {
        let known = services.contains_key(&s.value);
        if !known && !c.bad.contains(&("service", s.value.clone())) {
            let hint = if s.value.contains('/') {
                String::new()
            } else {
                let scoped: Vec<&String> = services
                    .keys()
                    .filter(|k| k.ends_with(&format!("/{}", s.value)))
                    .collect();
                match scoped.first() {
                    Some(k) => {
                        format!("; node-scoped services are written <node>/<name>, e.g. {k:?}")
                    }
                    None => String::new(),
                }
            };
            c.push(
                file,
                line(s),
                format!(
                    "unknown service {:?} (not defined in {}){hint}",
                    s.value,
                    model::SERVICES_FILE
                ),
            );
        }
        known
    };
    for g in &src.groups.groups {
        let e = &g.value;
        for s in &e.services {
            if service_ref(&mut c, model::GROUPS_FILE, s) {
                if let Some(members) = groups.get_mut(&e.name.value) {
                    members.insert(s.value.clone());
                }
            }
        }
    }
    for ro in &src.roles.roles {
        let e = &ro.value;
        let mut role = Role::default();
        for s in &e.services {
            if service_ref(&mut c, model::ROLES_FILE, s) && !role.services.contains(&s.value) {
                role.services.push(s.value.clone());
            }
        }
        for g in &e.groups {
            c.reference(
                model::ROLES_FILE,
                g,
                "group",
                groups.contains_key(&g.value),
                model::GROUPS_FILE,
            );
            if groups.contains_key(&g.value) && !role.groups.contains(&g.value) {
                role.groups.push(g.value.clone());
            }
        }
        if role_lines.get(&e.name.value) == Some(&line(&e.name)) {
            roles.insert(e.name.value.clone(), role);
        }
    }

    // Reserved names.
    for (name, file, present) in [
        (ROLE_NODE, model::ROLES_FILE, roles.contains_key(ROLE_NODE)),
        (
            ROLE_OPERATOR,
            model::ROLES_FILE,
            roles.contains_key(ROLE_OPERATOR),
        ),
        (
            GROUP_CONFIG_READ,
            model::GROUPS_FILE,
            groups.contains_key(GROUP_CONFIG_READ),
        ),
        (
            GROUP_CONFIG_WRITE,
            model::GROUPS_FILE,
            groups.contains_key(GROUP_CONFIG_WRITE),
        ),
    ] {
        if !present {
            let what = if file == model::ROLES_FILE {
                "role"
            } else {
                "group"
            };
            c.push(
                file,
                1,
                format!("reserved {what} {name:?} is missing; every rete defines it"),
            );
        }
    }
    if roles.contains_key(ROLE_OPERATOR)
        && !users
            .values()
            .any(|u| u.roles.iter().any(|r| r == ROLE_OPERATOR))
    {
        c.push(
            model::USERS_FILE,
            1,
            "no user has role operator: nobody could publish (add `role: operator` to a user)",
        );
    }

    // The config-server.
    let cs = &r.config_server.value;
    let cs_known = nodes.contains_key(&cs.node.value);
    c.reference(
        model::RETE_FILE,
        &cs.node,
        "node",
        cs_known,
        model::NODES_FILE,
    );
    for (svc, group) in [
        (SERVICE_CONFIG, GROUP_CONFIG_READ),
        (SERVICE_CONFIG_PUBLISH, GROUP_CONFIG_WRITE),
    ] {
        match services.get(svc) {
            None => c.push(
                model::SERVICES_FILE,
                1,
                format!("service {svc:?} (rete-scoped) is missing: the config-server publishes it on node {:?}", cs.node.value),
            ),
            Some(s) if cs_known && s.node != cs.node.value => c.push(
                model::SERVICES_FILE,
                s.line,
                format!("service {svc:?} is hosted on {:?} but rete.yaml config_server.node is {:?}", s.node, cs.node.value),
            ),
            Some(_) => {}
        }
        if let Some(members) = groups.get(group) {
            if services.contains_key(svc) && !members.contains(svc) {
                let l = src
                    .groups
                    .groups
                    .iter()
                    .find(|g| g.value.name.value == group)
                    .map(|g| line(&g.value.name))
                    .unwrap_or(1);
                c.push(
                    model::GROUPS_FILE,
                    l,
                    format!("reserved group {group:?} must contain service {svc:?}"),
                );
            }
        }
    }

    // Addresses: upstreams per node, UDP listens across nodes, hosting nodes listen.
    let mut upstreams: BTreeMap<(String, SocketAddr), String> = BTreeMap::new();
    for (key, s) in &services {
        if let Some(other) = upstreams.insert((s.node.clone(), s.upstream), key.clone()) {
            c.push(
                model::SERVICES_FILE,
                s.line,
                format!(
                    "upstream {} of service {key:?} clashes with service {other:?} on node {:?}",
                    s.upstream, s.node
                ),
            );
        }
        if let Some(n) = nodes.get(&s.node) {
            if n.listen.is_none() && !c.bad.contains(&("listen", n.name.to_string())) {
                c.bad.insert(("listen", n.name.to_string()));
                c.push(
                    model::NODES_FILE,
                    n.line,
                    format!(
                        "node {:?} hosts services (e.g. {key:?}) but has no listen address",
                        s.node
                    ),
                );
            }
        }
    }
    let mut listens: BTreeMap<SocketAddr, String> = BTreeMap::new();
    for n in nodes.values() {
        if let Some(l) = n.listen {
            if let Some(other) = listens.insert(l, n.name.to_string()) {
                c.push(
                    model::NODES_FILE,
                    n.line,
                    format!(
                        "listen {l} of node {:?} clashes with node {other:?}",
                        n.name.as_str()
                    ),
                );
            }
        }
    }

    let rete = td.map(|td| Rete {
        td,
        version,
        signers,
        config_node: cs.node.value.clone(),
        mirror_url,
        poll_interval_s,
        commit_timeout_s,
        idle_timeout_s,
        nodes,
        users,
        services,
        roles,
        groups,
    });
    (rete, c.problems)
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
}

/// Runs every rule on the repo at `dir`: YAML, references, certificates, device limits.
pub fn validate_repo(dir: &std::path::Path) -> Result<Checked, Vec<Problem>> {
    let src = model::load(dir)?;
    let (rete, mut problems) = check(&src);
    let Some(rete) = rete else {
        problems.sort();
        return Err(problems);
    };
    let names: Vec<(String, u64)> = rete
        .signers
        .iter()
        .map(|s| (s.name.to_string(), s.line))
        .collect();
    // The limits rule needs a consistent model; skip it while the YAML is broken
    // (certificate problems do not change what a node's artifact holds).
    let yaml_ok = problems.is_empty();
    let certs = crate::pki::check_repo(dir, rete.td.as_str(), &names, &mut problems);
    let access = rete.access();
    if yaml_ok {
        problems.extend(crate::ports::check(&rete, &access));
        problems.extend(crate::compile::check_limits(&rete, &access, &certs.signers));
    }
    if problems.is_empty() {
        Ok(Checked {
            rete,
            access,
            certs,
        })
    } else {
        problems.sort();
        Err(problems)
    }
}

/// `retectl validate <repo>`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The rete repo (directory holding rete.yaml).
    #[arg(default_value = ".")]
    pub repo: std::path::PathBuf,
}

/// Why `validate` (or a command that validates first) failed.
#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    /// The repo has problems; each was printed as `file:line: message`.
    #[error("{0} problem(s) in the rete; nothing was written")]
    Problems(usize),
}

/// Prints every problem to stderr as `file:line: message`.
pub fn report(problems: &[Problem]) -> ValidateError {
    for p in problems {
        eprintln!("{p}");
    }
    ValidateError::Problems(problems.len())
}

/// Validates, or prints all problems.
pub fn checked_or_report(repo: &std::path::Path) -> Result<Checked, ValidateError> {
    validate_repo(repo).map_err(|p| report(&p))
}

/// Runs `retectl validate`.
pub fn run(args: Args) -> Result<(), ValidateError> {
    let c = checked_or_report(&args.repo)?;
    if c.certs.ca.is_none() {
        eprintln!(
            "note: {} is not present, so certificate checks were skipped (run `retectl ca init`)",
            crate::pki::CA_CERT
        );
    }
    println!(
        "ok: rete {} version {}: {} nodes, {} users, {} services, {} roles, {} groups",
        c.rete.td,
        c.rete.version,
        c.rete.nodes.len(),
        c.rete.users.len(),
        c.rete.services.len(),
        c.rete.roles.len(),
        c.rete.groups.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(nodes: &str, users: &str, services: &str, roles: &str, groups: &str) -> Source {
        let rete = "name: t.flor\nversion: 1\ncrypto: {ca: ecdsa-p256, signers: {mgmt: ed25519}, tls_principals: ecdsa-p256}\nmgmt_signers: [primary]\nconfig_server: {node: m}\n";
        Source {
            rete: serde_saphyr::from_str(rete).unwrap(),
            nodes: serde_saphyr::from_str(nodes).unwrap(),
            users: serde_saphyr::from_str(users).unwrap(),
            services: serde_saphyr::from_str(services).unwrap(),
            roles: serde_saphyr::from_str(roles).unwrap(),
            groups: serde_saphyr::from_str(groups).unwrap(),
        }
    }

    #[test]
    fn access_walks_roles_groups_and_joined_services() {
        let src = source(
            "nodes:\n  - {name: m, listen: 127.0.0.1:1}\n  - {name: b, listen: 127.0.0.2:1}\n",
            "users:\n  - {name: op, role: operator}\n  - {name: web, roles: [reader]}\n  - {name: none}\n",
            "services:\n  - {name: config, node: m, upstream: 127.0.0.1:2}\n  - {name: config-publish, node: m, upstream: 127.0.0.1:3}\n  - {name: wiki, node: b, upstream: 127.0.0.2:2, groups: [web]}\n  - {name: echo, node: b, scope: node, upstream: 127.0.0.2:3, roles: [reader]}\n",
            "roles:\n  - {name: node, groups: [config-read]}\n  - {name: operator, groups: [config-read, config-write]}\n  - {name: reader, groups: [web], services: [b/echo]}\n",
            "groups:\n  - {name: config-read, services: [config]}\n  - {name: config-write, services: [config-publish]}\n  - {name: web}\n",
        );
        let (rete, problems) = check(&src);
        assert!(problems.is_empty(), "{problems:?}");
        let rete = rete.unwrap();
        let a = rete.access();
        let reach = |id: &str| -> Vec<String> {
            a.reach
                .get(&SpiffeId::parse(id).unwrap())
                .map(|s| s.iter().cloned().collect())
                .unwrap_or_default()
        };
        assert_eq!(
            reach("spiffe://t.flor/user/op"),
            ["config", "config-publish"]
        );
        assert_eq!(reach("spiffe://t.flor/user/web"), ["b/echo", "wiki"]);
        assert!(reach("spiffe://t.flor/user/none").is_empty());
        // Every node has the reserved role automatically.
        assert_eq!(reach("spiffe://t.flor/node/b"), ["config"]);
        // A service principal with roles is a caller too.
        assert_eq!(reach("spiffe://t.flor/service/b/echo"), ["b/echo", "wiki"]);
        assert_eq!(a.callers["wiki"].len(), 2);
    }
}
