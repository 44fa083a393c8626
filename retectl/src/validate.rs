//! Every rule of the rete, checked at once.
//!
//! [`check`] turns the parsed [`Source`] into a [`Rete`] whose names are
//! valid, unique and resolved, collecting every [`Problem`] on the way rather
//! than stopping at the first: the operator fixes a whole batch per run.
//! It runs one pass per rule family; [`check_rules`] adds the rules that need
//! the whole model or the repo's files, and [`Pending::finish`] the device
//! limits. Rules (each has a test in `tests/validate.rs`):
//!
//! - names are valid (one DNS label; the rete name a SPIFFE trust domain) and unique;
//! - reserved roles `node`, `operator` and groups `config-read`, `config-write` exist,
//!   `config-read` holds `config` and `config-write` holds `config-publish`,
//!   and at least one user has role `operator`;
//! - the management plane stays reachable: every node may reach `config` (and
//!   `metrics-push` when the rete has one), some user `config-publish`;
//! - every reference (node → user, service → node/role/group, role → service/group,
//!   group → service, config-server → node) resolves;
//! - addresses are `ip:port` with a non-zero port; upstreams do not clash on a node;
//!   UDP listen addresses do not clash between nodes; a node that hosts services listens;
//! - a declared `socks_port` is inside the SOCKS5 band (1080-1179), and no two SOCKS5
//!   principals of a node end up on the same port, declared or default ([`crate::ports`]);
//! - crypto categories name algorithms retectl knows;
//! - certificates in the repo chain to `certs/ca.crt` and are not expired ([`crate::pki`]);
//! - every node's sealed artifacts fit the device limits ([`crate::artifacts::seal_nodes`]).
//!
//! The result is the checked model of [`crate::checked`]; this module is the
//! only one that builds it from YAML.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::SocketAddr;

use flor_vertex::identity::{Kind, Name, SpiffeId, TrustDomain};
use flor_vertex::limits;

use crate::artifacts::{self, CompileError, Compiled, NodeArtifacts, Sealed, Signing};
use crate::checked::{
    Access, Checked, DeclaredPort, Node, Rete, Role, Service, SignerName, User, GROUP_CONFIG_READ,
    GROUP_CONFIG_WRITE, ROLE_NODE, ROLE_OPERATOR, SERVICE_CONFIG, SERVICE_CONFIG_PUBLISH,
    SERVICE_METRICS_PUSH,
};
use crate::model::{self, line, Problem, Source, S};

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
/// Default seconds between agents' metrics pushes: twice a minute, so a
/// Prometheus scraping every 15-30 s sees a fresh snapshot and the management
/// node takes one small request per node and half-minute.
pub const DEFAULT_METRICS_INTERVAL_S: u32 = 30;
/// Largest `pin_overlap_days`: a replaced certificate usable for a year is no pin.
pub const MAX_PIN_OVERLAP_DAYS: u32 = 365;

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

    /// A local account (user or group) on the hosting node: a name of the
    /// characters account names use, or a number; checked here, resolved by
    /// the vertex on the node.
    fn account(
        &mut self,
        file: &str,
        what: &str,
        s: &S<String>,
    ) -> Option<flor_vertex::artifact::AccountName> {
        let v = &s.value;
        let ok = !v.is_empty()
            && !v.starts_with('-')
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        match flor_vertex::artifact::AccountName::new(v) {
            Ok(a) if ok => Some(a),
            Ok(_) => {
                self.push(
                    file,
                    line(s),
                    format!("{what} {v:?}: not an account name (letters, digits, _ - .) or number"),
                );
                None
            }
            Err(l) => {
                self.push(file, line(s), format!("{what} {v:?}: longer than {l}"));
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

/// What rete.yaml sets, checked (the config-server node is checked with the
/// references, in [`config_server`]).
struct Settings {
    /// `None` when the rete name is not a trust domain (reported).
    td: Option<TrustDomain>,
    version: u32,
    signers: Vec<SignerName>,
    mirror_url: Option<String>,
    poll_interval_s: u32,
    commit_timeout_s: u32,
    idle_timeout_s: u32,
    metrics_interval_s: u32,
    pin_overlap_days: u32,
}

/// The rete as the passes build it: the declarations first, so that every
/// reference can then be checked whatever the order of the files.
struct Draft {
    users: BTreeMap<String, User>,
    nodes: BTreeMap<String, Node>,
    roles: BTreeMap<String, Role>,
    /// Line of each role's first declaration (a duplicate does not replace it).
    role_lines: BTreeMap<String, u64>,
    groups: BTreeMap<String, BTreeSet<String>>,
    services: BTreeMap<String, Service>,
}

/// Checks every YAML rule; returns the rete (possibly partial) and all problems.
///
/// One pass per rule family, in this order (a later pass relies on what the
/// earlier ones declared, and on the names they marked bad so that a
/// reference to a broken declaration is not reported twice):
/// rete.yaml's settings and signers; the declarations (users, nodes, roles,
/// groups, services); the references between them; the reserved names; the
/// config-server; the addresses. The certificates, the SOCKS5 ports and the
/// device limits are checked on the result ([`check_rules`], [`Pending::finish`]).
pub fn check(src: &Source) -> (Option<Rete>, Vec<Problem>) {
    let mut c = Checker {
        problems: Vec::new(),
        bad: HashSet::new(),
    };
    let settings = settings(&mut c, &src.rete);
    // A placeholder trust domain while the name is wrong, so that every other
    // rule still runs and reports.
    let Some(td) = settings
        .td
        .clone()
        .or_else(|| TrustDomain::new("invalid").ok())
    else {
        return (None, c.problems);
    };
    let users = declare_users(&mut c, src, &td);
    let nodes = declare_nodes(&mut c, src, &td);
    let (roles, role_lines) = declare_roles(&mut c, src);
    let groups = declare_groups(&mut c, src);
    let services = declare_services(&mut c, src, &td, &nodes);
    let mut d = Draft {
        users,
        nodes,
        roles,
        role_lines,
        groups,
        services,
    };
    user_roles(&mut c, src, &mut d);
    node_members(&mut c, src, &mut d);
    service_roles_and_groups(&mut c, src, &mut d);
    group_services(&mut c, src, &mut d);
    role_grants(&mut c, src, &mut d);
    reserved_names(&mut c, &d);
    config_server(&mut c, src, &d);
    addresses(&mut c, &d);

    let Settings {
        td,
        version,
        signers,
        mirror_url,
        poll_interval_s,
        commit_timeout_s,
        idle_timeout_s,
        metrics_interval_s,
        pin_overlap_days,
    } = settings;
    let rete = td.map(|td| Rete {
        td,
        version,
        signers,
        config_node: src.rete.config_server.value.node.value.clone(),
        mirror_url,
        poll_interval_s,
        commit_timeout_s,
        idle_timeout_s,
        metrics_interval_s,
        pin_overlap_days,
        nodes: d.nodes,
        users: d.users,
        services: d.services,
        roles: d.roles,
        groups: d.groups,
    });
    (rete, c.problems)
}

/// rete.yaml: the name is a trust domain, the version is in range, the crypto
/// categories name known algorithms, the signers, the mirror URL, the timings.
fn settings(c: &mut Checker, r: &model::ReteFile) -> Settings {
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
    let signers = signers(c, r);
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
    let pin_overlap_days = match &r.pin_overlap_days {
        Some(d) if d.value > MAX_PIN_OVERLAP_DAYS => {
            c.push(
                model::RETE_FILE,
                line(d),
                format!(
                    "pin_overlap_days {} is over {MAX_PIN_OVERLAP_DAYS}: a replaced certificate would stay usable for years",
                    d.value
                ),
            );
            crate::pins::DEFAULT_OVERLAP_DAYS
        }
        Some(d) => d.value,
        None => crate::pins::DEFAULT_OVERLAP_DAYS,
    };
    Settings {
        pin_overlap_days,
        td,
        version,
        signers,
        mirror_url,
        poll_interval_s: timing(
            c,
            t.and_then(|t| t.poll_interval_s.as_ref()),
            DEFAULT_POLL_INTERVAL_S,
            "poll_interval_s",
        ),
        commit_timeout_s: timing(
            c,
            t.and_then(|t| t.commit_timeout_s.as_ref()),
            DEFAULT_COMMIT_TIMEOUT_S,
            "commit_timeout_s",
        ),
        idle_timeout_s: timing(
            c,
            t.and_then(|t| t.idle_timeout_s.as_ref()),
            DEFAULT_IDLE_TIMEOUT_S,
            "idle_timeout_s",
        ),
        metrics_interval_s: timing(
            c,
            t.and_then(|t| t.metrics_interval_s.as_ref()),
            DEFAULT_METRICS_INTERVAL_S,
            "metrics_interval_s",
        ),
    }
}

/// `mgmt_signers`: not empty, within the device's limit, valid and unique names.
fn signers(c: &mut Checker, r: &model::ReteFile) -> Vec<SignerName> {
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
    signers
}

/// users.yaml declarations: valid, unique names; `socks_port` in the band.
fn declare_users(c: &mut Checker, src: &Source, td: &TrustDomain) -> BTreeMap<String, User> {
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
                id: SpiffeId::new(td.clone(), Kind::User, name),
                roles: Vec::new(),
                socks_port,
                line: line(&u.value.name),
            },
        );
    }
    users
}

/// nodes.yaml declarations: valid, unique names; `listen` an address;
/// `socks_port` in the band.
fn declare_nodes(c: &mut Checker, src: &Source, td: &TrustDomain) -> BTreeMap<String, Node> {
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
                id: SpiffeId::new(td.clone(), Kind::Node, name.clone()),
                name,
                listen,
                users: Vec::new(),
                roles: vec![ROLE_NODE.to_owned()],
                socks_port,
                line: line(&n.value.name),
            },
        );
    }
    nodes
}

/// roles.yaml declarations: valid, unique names (what they grant comes in [`role_grants`]).
fn declare_roles(c: &mut Checker, src: &Source) -> (BTreeMap<String, Role>, BTreeMap<String, u64>) {
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
    (roles, role_lines)
}

/// groups.yaml declarations: valid, unique names (members come in
/// [`service_roles_and_groups`] and [`group_services`]).
fn declare_groups(c: &mut Checker, src: &Source) -> BTreeMap<String, BTreeSet<String>> {
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
    groups
}

/// services.yaml declarations: valid names, a known hosting node, a scope,
/// an upstream address, `socks_port` in the band, unique keys.
fn declare_services(
    c: &mut Checker,
    src: &Source,
    td: &TrustDomain,
    nodes: &BTreeMap<String, Node>,
) -> BTreeMap<String, Service> {
    let mut services = BTreeMap::new();
    for s in &src.services.services {
        let e = &s.value;
        let name = c.name(model::SERVICES_FILE, "service", &e.name);
        let hosting = nodes.get(&e.node.value);
        c.reference(
            model::SERVICES_FILE,
            &e.node,
            "node",
            hosting.is_some(),
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
        let caller_socket = e.caller_socket.as_ref().map(|cs| {
            let mut account = |what: &str, v: &Option<S<String>>| {
                let v = v.as_ref()?;
                c.account(model::SERVICES_FILE, &format!("caller_socket {what}"), v)
            };
            flor_vertex::artifact::CallerSocket {
                user: account("user", &cs.value.user),
                group: account("group", &cs.value.group),
            }
        });
        let (Some(name), Some(hosting), Some(upstream)) = (name, hosting, upstream) else {
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
            let Ok(id) =
                SpiffeId::node_scoped(td.clone(), Kind::Service, hosting.name.clone(), name)
            else {
                continue;
            };
            (format!("{}/{}", e.node.value, e.name.value), id)
        } else {
            (
                e.name.value.clone(),
                SpiffeId::new(td.clone(), Kind::Service, name),
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
                caller_socket,
                line: line(&e.name),
            },
        );
    }
    services
}

/// users.yaml references: `role` or `roles` (not both) name declared roles.
fn user_roles(c: &mut Checker, src: &Source, d: &mut Draft) {
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
                d.roles.contains_key(&r.value),
                model::ROLES_FILE,
            );
            if d.roles.contains_key(&r.value) && !rs.contains(&r.value) {
                rs.push(r.value.clone());
            }
        }
        if let Some(user) = d.users.get_mut(&e.name.value) {
            if user.roles.is_empty() {
                user.roles = rs;
            }
        }
    }
}

/// nodes.yaml references: the users a node holds (each once) and its extra roles.
fn node_members(c: &mut Checker, src: &Source, d: &mut Draft) {
    for n in &src.nodes.nodes {
        let e = &n.value;
        let mut held = Vec::new();
        for u in &e.users {
            c.reference(
                model::NODES_FILE,
                u,
                "user",
                d.users.contains_key(&u.value),
                model::USERS_FILE,
            );
            if held.contains(&u.value) {
                c.push(
                    model::NODES_FILE,
                    line(u),
                    format!("user {:?} listed twice on node {:?}", u.value, e.name.value),
                );
            } else if d.users.contains_key(&u.value) {
                held.push(u.value.clone());
            }
        }
        let mut extra = Vec::new();
        for r in &e.roles {
            c.reference(
                model::NODES_FILE,
                r,
                "role",
                d.roles.contains_key(&r.value),
                model::ROLES_FILE,
            );
            if d.roles.contains_key(&r.value) && r.value != ROLE_NODE && !extra.contains(&r.value) {
                extra.push(r.value.clone());
            }
        }
        if let Some(node) = d.nodes.get_mut(&e.name.value) {
            if node.users.is_empty() {
                node.users = held;
                node.roles.extend(extra);
            }
        }
    }
}

/// services.yaml references: a service's roles, and the groups it joins.
fn service_roles_and_groups(c: &mut Checker, src: &Source, d: &mut Draft) {
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
                d.roles.contains_key(&r.value),
                model::ROLES_FILE,
            );
            if d.roles.contains_key(&r.value) && !rs.contains(&r.value) {
                rs.push(r.value.clone());
            }
        }
        for g in &e.groups {
            c.reference(
                model::SERVICES_FILE,
                g,
                "group",
                d.groups.contains_key(&g.value),
                model::GROUPS_FILE,
            );
            if d.services.contains_key(&key) {
                if let Some(members) = d.groups.get_mut(&g.value) {
                    members.insert(key.clone());
                }
            }
        }
        if let Some(svc) = d.services.get_mut(&key) {
            if svc.line == line(&e.name) {
                svc.roles = rs;
            }
        }
    }
}

/// A reference to a service key from groups.yaml or roles.yaml; a bare name
/// that only exists node-scoped gets a hint on how to write it.
fn service_ref(
    c: &mut Checker,
    services: &BTreeMap<String, Service>,
    file: &str,
    s: &S<String>,
) -> bool {
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
}

/// groups.yaml references: the services a group lists.
fn group_services(c: &mut Checker, src: &Source, d: &mut Draft) {
    for g in &src.groups.groups {
        let e = &g.value;
        for s in &e.services {
            if service_ref(c, &d.services, model::GROUPS_FILE, s) {
                if let Some(members) = d.groups.get_mut(&e.name.value) {
                    members.insert(s.value.clone());
                }
            }
        }
    }
}

/// roles.yaml references: the services and groups a role grants.
fn role_grants(c: &mut Checker, src: &Source, d: &mut Draft) {
    for ro in &src.roles.roles {
        let e = &ro.value;
        let mut role = Role::default();
        for s in &e.services {
            if service_ref(c, &d.services, model::ROLES_FILE, s)
                && !role.services.contains(&s.value)
            {
                role.services.push(s.value.clone());
            }
        }
        for g in &e.groups {
            c.reference(
                model::ROLES_FILE,
                g,
                "group",
                d.groups.contains_key(&g.value),
                model::GROUPS_FILE,
            );
            if d.groups.contains_key(&g.value) && !role.groups.contains(&g.value) {
                role.groups.push(g.value.clone());
            }
        }
        if d.role_lines.get(&e.name.value) == Some(&line(&e.name)) {
            d.roles.insert(e.name.value.clone(), role);
        }
    }
}

/// The reserved roles and groups exist, and some user is an operator.
fn reserved_names(c: &mut Checker, d: &Draft) {
    for (name, file, present) in [
        (
            ROLE_NODE,
            model::ROLES_FILE,
            d.roles.contains_key(ROLE_NODE),
        ),
        (
            ROLE_OPERATOR,
            model::ROLES_FILE,
            d.roles.contains_key(ROLE_OPERATOR),
        ),
        (
            GROUP_CONFIG_READ,
            model::GROUPS_FILE,
            d.groups.contains_key(GROUP_CONFIG_READ),
        ),
        (
            GROUP_CONFIG_WRITE,
            model::GROUPS_FILE,
            d.groups.contains_key(GROUP_CONFIG_WRITE),
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
    if d.roles.contains_key(ROLE_OPERATOR)
        && !d
            .users
            .values()
            .any(|u| u.roles.iter().any(|r| r == ROLE_OPERATOR))
    {
        c.push(
            model::USERS_FILE,
            1,
            "no user has role operator: nobody could publish (add `role: operator` to a user)",
        );
    }
}

/// The config-server: its node exists, it hosts `config` and
/// `config-publish`, and the reserved groups hold them.
fn config_server(c: &mut Checker, src: &Source, d: &Draft) {
    let cs = &src.rete.config_server.value;
    let cs_known = d.nodes.contains_key(&cs.node.value);
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
        match d.services.get(svc) {
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
        if let Some(members) = d.groups.get(group) {
            if d.services.contains_key(svc) && !members.contains(svc) {
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
}

/// Addresses: upstreams do not clash on a node, a node that hosts services
/// listens, UDP listen addresses do not clash between nodes.
fn addresses(c: &mut Checker, d: &Draft) {
    let mut upstreams: BTreeMap<(String, SocketAddr), String> = BTreeMap::new();
    for (key, s) in &d.services {
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
        if let Some(n) = d.nodes.get(&s.node) {
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
    for n in d.nodes.values() {
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
}

/// A repo through every rule but the device limits, which need each node's
/// sealed bytes and so a key: [`Pending::finish`] seals with the caller's
/// (`retectl compile`), [`Pending::finish_with_probe`] with a throwaway one
/// (`retectl validate`, issue-bundle, landing).
#[derive(Debug)]
pub struct Pending {
    checked: Checked,
    problems: Vec<Problem>,
    /// The YAML rules passed: the model is whole enough to build artifacts from.
    yaml_ok: bool,
}

impl Pending {
    /// The model, checked so far.
    pub fn checked(&self) -> &Checked {
        &self.checked
    }

    /// The problems found so far (unsorted).
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// The device-limits rule ([`artifacts::seal_nodes`]) with `sealer`, then
    /// the verdict: the checked repo and every node as built and sealed, each
    /// node once, or every problem, sorted.
    ///
    /// # Errors
    ///
    /// Every problem of the repo, sorted by `file:line`.
    pub fn finish(
        self,
        sealer: impl FnMut(&Rete, &NodeArtifacts) -> Result<Sealed, CompileError>,
    ) -> Result<(Checked, BTreeMap<String, Compiled>), Vec<Problem>> {
        let limits = self.yaml_ok.then(|| {
            artifacts::seal_nodes(
                &self.checked.rete,
                &self.checked.access,
                &self.checked.pins,
                sealer,
            )
        });
        self.conclude(limits)
    }

    /// [`Pending::finish`] with validate's throwaway key ([`Signing::probe`]):
    /// the sizes are the real ones, the signatures are not kept.
    ///
    /// # Errors
    ///
    /// Every problem of the repo, sorted by `file:line`.
    pub fn finish_with_probe(self) -> Result<Checked, Vec<Problem>> {
        let probe = Signing::probe(&self.checked.rete, &self.checked.certs.signers);
        let limits = match (self.yaml_ok, probe) {
            (true, Some(p)) => Some(artifacts::seal_nodes(
                &self.checked.rete,
                &self.checked.access,
                &self.checked.pins,
                |rete, arts| p.seal(rete, arts),
            )),
            _ => None,
        };
        self.conclude(limits).map(|(c, _)| c)
    }

    fn conclude(
        self,
        limits: Option<(BTreeMap<String, Compiled>, Vec<Problem>)>,
    ) -> Result<(Checked, BTreeMap<String, Compiled>), Vec<Problem>> {
        let Pending {
            checked,
            mut problems,
            ..
        } = self;
        let (compiled, limit_problems) = limits.unwrap_or_default();
        problems.extend(limit_problems);
        if problems.is_empty() {
            Ok((checked, compiled))
        } else {
            problems.sort();
            Err(problems)
        }
    }
}

/// Runs every rule on the repo at `dir` but the device limits: YAML,
/// references, certificates, SOCKS5 ports.
///
/// # Errors
///
/// The problems, sorted, when the YAML does not even give a rete (a file
/// does not parse, or the rete name is not a trust domain).
pub fn check_rules(dir: &std::path::Path) -> Result<Pending, Vec<Problem>> {
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
    // The ports and limits rules need a consistent model; skip them while the
    // YAML is broken (certificate problems do not change what a node's artifact holds).
    let yaml_ok = problems.is_empty();
    let certs = crate::pki::check_repo(dir, rete.td.as_str(), &names, &mut problems);
    let pins = match crate::certs::log(dir) {
        Ok(log) => crate::pins::from_log(&log, rete.pin_overlap_days),
        Err(crate::certs::CertsError::BadLine(n)) => {
            problems.push(Problem::new(
                crate::pki::ENROLLMENT_LOG,
                n as u64,
                "not a line retectl wrote: certificates cannot be pinned from it",
            ));
            Default::default()
        }
        Err(e) => {
            problems.push(Problem::new(crate::pki::ENROLLMENT_LOG, 1, e.to_string()));
            Default::default()
        }
    };
    let access = rete.access();
    if yaml_ok {
        problems.extend(crate::ports::check(&rete, &access));
        problems.extend(management_reach(&src, &rete, &access));
    }
    Ok(Pending {
        checked: Checked {
            rete,
            access,
            certs,
            pins,
        },
        problems,
        yaml_ok,
    })
}

/// Most nodes a management-reach problem names before "and N more".
const NAMED_NODES: usize = 8;

/// The management plane stays usable once published: every node may reach
/// `config` (its agent fetches its artifacts there; without it a publish
/// strands the node on what it has), every node may reach `metrics-push`
/// when the rete has one (each agent is told to push there every
/// `metrics_interval_s` and would be refused each time), and some user may
/// reach `config-publish` (else nobody can publish the fix). That the
/// reserved groups hold `config` and `config-publish` is [`config_server`]'s
/// rule (no group is reserved for `metrics-push`); this one walks from the
/// principals, through whatever roles and groups they have, to the services.
fn management_reach(src: &Source, rete: &Rete, access: &Access) -> Vec<Problem> {
    let mut out = Vec::new();
    let role_line = |name: &str| {
        src.roles
            .roles
            .iter()
            .find(|r| r.value.name.value == name)
            .map(|r| line(&r.value.name))
            .unwrap_or(1)
    };
    let may = |id: &SpiffeId, svc: &str| access.reach.get(id).is_some_and(|s| s.contains(svc));
    // What would grant a service to `role`: the groups holding it, or the service itself.
    let fix = |svc: &str, role: &str| {
        let g: Vec<&str> = rete
            .groups
            .iter()
            .filter(|(_, m)| m.contains(svc))
            .map(|(n, _)| n.as_str())
            .collect();
        if g.is_empty() {
            format!("add {svc:?} to the services of role {role:?}")
        } else {
            format!("add group {} to role {role:?}", g.join(" or "))
        }
    };
    // `why(one)`: the consequence, for one node or for several.
    let mut node_rule = |svc: &str, why: &dyn Fn(bool) -> String| {
        if !rete.services.contains_key(svc) {
            return;
        }
        let left: Vec<&str> = rete
            .nodes
            .values()
            .filter(|n| !may(&n.id, svc))
            .map(|n| n.name.as_str())
            .collect();
        let named = match left.len() {
            0 => return,
            1 => format!("node {}", left[0]),
            n if n <= NAMED_NODES => format!("nodes {}", left.join(", ")),
            n => format!(
                "nodes {} and {} more",
                left[..NAMED_NODES].join(", "),
                n - NAMED_NODES
            ),
        };
        out.push(Problem::new(
            model::ROLES_FILE,
            role_line(ROLE_NODE),
            format!(
                "{named} may not reach service {svc:?} (role {ROLE_NODE:?} does not grant it): {}; {}",
                why(left.len() == 1),
                fix(svc, ROLE_NODE)
            ),
        ));
    };
    node_rule(SERVICE_CONFIG, &|one| {
        let (who, whose) = if one {
            ("its agent", "its")
        } else {
            ("their agents", "their")
        };
        format!(
            "{who} could never fetch another configuration, so the version published next \
             would be {whose} last"
        )
    });
    let every = rete.metrics_interval_s;
    node_rule(SERVICE_METRICS_PUSH, &|one| {
        let (who, push, whose) = if one {
            ("its agent", "pushes", "its")
        } else {
            ("their agents", "push", "their")
        };
        format!(
            "{who} {push} {whose} counters there every {every} s and would be refused each time"
        )
    });
    if rete.services.contains_key(SERVICE_CONFIG_PUBLISH)
        && rete.roles.contains_key(ROLE_OPERATOR)
        && !rete
            .users
            .values()
            .any(|u| may(&u.id, SERVICE_CONFIG_PUBLISH))
    {
        out.push(Problem::new(
            model::ROLES_FILE,
            role_line(ROLE_OPERATOR),
            format!(
                "no user may reach service {SERVICE_CONFIG_PUBLISH:?}: nobody could publish, not even a fix; {}",
                fix(SERVICE_CONFIG_PUBLISH, ROLE_OPERATOR)
            ),
        ));
    }
    out
}

/// Runs every rule on the repo at `dir`: YAML, references, certificates,
/// SOCKS5 ports, device limits (with a throwaway key).
///
/// # Errors
///
/// Every problem, sorted by `file:line`.
pub fn validate_repo(dir: &std::path::Path) -> Result<Checked, Vec<Problem>> {
    check_rules(dir)?.finish_with_probe()
}

/// `retectl validate <repo>`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The rete repo (directory holding rete.yaml).
    #[arg(default_value = ".")]
    pub repo: std::path::PathBuf,
    /// Print one JSON object on stdout (docs/yaml.md lists its fields).
    #[arg(long)]
    pub json: bool,
}

/// Why `validate` (or a command that validates first) failed.
#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    /// The repo has problems; each was printed as `file:line: message`
    /// (or is in the `--json` output).
    #[error("{} problem(s) in the rete; nothing was written", .0.len())]
    Problems(Vec<Problem>),
}

/// Prints every problem to stderr as `file:line: message`.
pub fn report(problems: &[Problem]) -> ValidateError {
    for p in problems {
        eprintln!("{p}");
    }
    ValidateError::Problems(problems.to_vec())
}

/// As [`report`], but silent when the caller prints `--json` instead.
pub fn report_unless(json: bool, problems: &[Problem]) -> ValidateError {
    if json {
        ValidateError::Problems(problems.to_vec())
    } else {
        report(problems)
    }
}

/// Problems as the `--json` outputs list them.
pub fn problems_json(problems: &[Problem]) -> serde_json::Value {
    problems
        .iter()
        .map(|p| serde_json::json!({"file": p.file, "line": p.line, "message": p.message}))
        .collect()
}

/// Validates, or prints all problems.
pub fn checked_or_report(repo: &std::path::Path) -> Result<Checked, ValidateError> {
    validate_repo(repo).map_err(|p| report(&p))
}

/// Runs `retectl validate`.
pub fn run(args: Args) -> Result<(), ValidateError> {
    let c = match validate_repo(&args.repo) {
        Ok(c) => c,
        Err(problems) => {
            if args.json {
                let out = serde_json::json!({"ok": false, "problems": problems_json(&problems)});
                println!("{out}");
            }
            return Err(report_unless(args.json, &problems));
        }
    };
    let mut notes = Vec::new();
    if c.certs.ca.is_none() {
        notes.push(format!(
            "{} is not present, so certificate checks were skipped (run `retectl ca init`)",
            crate::pki::CA_CERT
        ));
    }
    // Warnings, not problems: the rete is valid, but someone must act soon.
    let warnings = crate::certs::warnings(&args.repo);
    let r = &c.rete;
    if args.json {
        let out = serde_json::json!({
            "ok": true,
            "rete": r.td.to_string(),
            "version": r.version,
            "nodes": r.nodes.len(),
            "users": r.users.len(),
            "services": r.services.len(),
            "roles": r.roles.len(),
            "groups": r.groups.len(),
            "problems": [],
            "warnings": warnings,
            "notes": notes,
        });
        println!("{out}");
        return Ok(());
    }
    for n in &notes {
        eprintln!("note: {n}");
    }
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    println!(
        "ok: rete {} version {}: {} nodes, {} users, {} services, {} roles, {} groups",
        r.td,
        r.version,
        r.nodes.len(),
        r.users.len(),
        r.services.len(),
        r.roles.len(),
        r.groups.len()
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

    /// What `retectl compile` runs: the rules, then the device limits with the
    /// real key; the sealer runs once per node and its bytes come back.
    #[test]
    fn finish_seals_each_node_of_the_example_once_with_the_given_key() {
        let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/my-rete");
        let pending = check_rules(&example).unwrap();
        assert!(pending.problems().is_empty(), "{:?}", pending.problems());
        let rete = pending.checked().rete.clone();
        let kp = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([1; 32]));
        let keys = BTreeMap::from([("primary".to_owned(), *kp.pk)]);
        let signers = artifacts::mgmt_signers(&rete, &keys);
        let signing = Signing::new(signers.0[0].id.clone(), signers, kp.sk);
        let mut seals: BTreeMap<String, usize> = BTreeMap::new();
        let mut returned = Vec::new();
        let (_, compiled) = pending
            .finish(|r, a| {
                *seals.entry(a.vertex.node.to_string()).or_default() += 1;
                let sealed = signing.seal(r, a);
                if let Ok(s) = &sealed {
                    returned.push(s.clone());
                }
                sealed
            })
            .unwrap();
        let once: BTreeMap<String, usize> = rete.nodes.keys().map(|n| (n.clone(), 1)).collect();
        assert_eq!(seals, once);
        let kept: Vec<Sealed> = compiled.values().map(|c| c.sealed.clone()).collect();
        assert_eq!(
            kept, returned,
            "the sealed bytes are kept, not sealed again"
        );
    }
}
