//! The rete's source of truth as written: six YAML files in a git repo.
//!
//! ```text
//! rete.yaml      name (trust domain), version, crypto, mgmt_signers, config_server
//! nodes.yaml     nodes: name, listen (UDP, server nodes), users held, extra roles, socks_port
//! users.yaml     users: name, role | roles, socks_port
//! services.yaml  services: name, node, scope, upstream, roles, groups, socks_port, caller_socket
//! roles.yaml     roles: name, services, groups
//! groups.yaml    groups: name, services
//! ```
//!
//! Every value is read as [`Spanned`] so that each later check can point at
//! `file:line`. This module only parses; [`crate::validate`] turns the raw
//! files into a checked [`crate::checked::Rete`] and reports every problem.
//! The field reference lives in `docs/yaml.md`.

use std::fmt;
use std::path::Path;

use serde::Deserialize;
use serde_saphyr::Spanned;

/// The source files of a rete repo, in the order problems are reported.
pub const FILES: [&str; 6] = [
    RETE_FILE,
    NODES_FILE,
    USERS_FILE,
    SERVICES_FILE,
    ROLES_FILE,
    GROUPS_FILE,
];
/// `rete.yaml`.
pub const RETE_FILE: &str = "rete.yaml";
/// `nodes.yaml`.
pub const NODES_FILE: &str = "nodes.yaml";
/// `users.yaml`.
pub const USERS_FILE: &str = "users.yaml";
/// `services.yaml`.
pub const SERVICES_FILE: &str = "services.yaml";
/// `roles.yaml`.
pub const ROLES_FILE: &str = "roles.yaml";
/// `groups.yaml`.
pub const GROUPS_FILE: &str = "groups.yaml";

/// One thing wrong with the repo, located as `file:line`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    /// Repo-relative file name.
    pub file: String,
    /// 1-based line (1 when the whole file is meant).
    pub line: u64,
    /// What is wrong and, where possible, what to do.
    pub message: String,
}

impl Problem {
    /// A problem at `file:line`.
    pub fn new(file: &str, line: u64, message: impl Into<String>) -> Self {
        Problem {
            file: file.to_owned(),
            line: line.max(1),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

/// A value with the line it was written on.
pub type S<T> = Spanned<T>;

/// The line a spanned value was written on.
pub fn line<T>(s: &S<T>) -> u64 {
    s.referenced.line()
}

/// `rete.yaml`: the rete itself.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReteFile {
    /// The trust domain (`demo.flor`); dotted names are allowed.
    pub name: S<String>,
    /// Monotonic artifact version; bump it for every publish.
    pub version: S<u64>,
    /// Per-category crypto.
    pub crypto: S<CryptoFile>,
    /// Names of the management-plane signers nodes accept (`primary`).
    pub mgmt_signers: S<Vec<S<String>>>,
    /// Where the config-server runs.
    pub config_server: S<ConfigServerFile>,
    /// Optional plain-HTTP mirror of the published tree, copied into bundles.
    #[serde(default)]
    pub mirror_url: Option<S<String>>,
    /// Agent and vertex timings.
    #[serde(default)]
    pub timings: Option<S<TimingsFile>>,
    /// Days a replaced certificate stays pinned after its successor was issued.
    #[serde(default)]
    pub pin_overlap_days: Option<S<u32>>,
}

/// `rete.yaml` `crypto:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CryptoFile {
    /// Algorithm of the rete CA key.
    pub ca: S<String>,
    /// Signer algorithms by plane.
    pub signers: S<SignersFile>,
    /// Algorithm of every principal's TLS key.
    pub tls_principals: S<String>,
}

/// `rete.yaml` `crypto.signers:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignersFile {
    /// Algorithm of management-plane envelope signers.
    pub mgmt: S<String>,
}

/// `rete.yaml` `config_server:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigServerFile {
    /// The node hosting services `config` and `config-publish`.
    pub node: S<String>,
}

/// `rete.yaml` `timings:` (all optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimingsFile {
    /// Seconds between config-server polls.
    pub poll_interval_s: Option<S<u32>>,
    /// Seconds a new version may run unconfirmed before rollback.
    pub commit_timeout_s: Option<S<u32>>,
    /// Seconds of silence before a QUIC connection or flow is closed.
    pub idle_timeout_s: Option<S<u32>>,
    /// Seconds between agents' pushes to `metrics-push` (when the rete has one).
    pub metrics_interval_s: Option<S<u32>>,
}

/// `nodes.yaml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodesFile {
    /// The nodes.
    #[serde(default)]
    pub nodes: Vec<S<NodeEntry>>,
}

/// One node.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    /// Node name (one DNS label).
    pub name: S<String>,
    /// UDP address its vertex accepts QUIC on; only server nodes have one.
    #[serde(default)]
    pub listen: Option<S<String>>,
    /// Users whose certificates this node holds (a laptop).
    #[serde(default)]
    pub users: Vec<S<String>>,
    /// Roles for the node principal on top of the automatic `node`.
    #[serde(default)]
    pub roles: Vec<S<String>>,
    /// Preferred SOCKS5 port of the node principal (default: the top of the band).
    #[serde(default)]
    pub socks_port: Option<S<i64>>,
}

/// `users.yaml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsersFile {
    /// The users.
    #[serde(default)]
    pub users: Vec<S<UserEntry>>,
}

/// One user.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    /// User name (one DNS label).
    pub name: S<String>,
    /// One role (shorthand for `roles: [x]`).
    #[serde(default)]
    pub role: Option<S<String>>,
    /// Roles.
    #[serde(default)]
    pub roles: Vec<S<String>>,
    /// Preferred SOCKS5 port of this user on every node that holds it.
    #[serde(default)]
    pub socks_port: Option<S<i64>>,
}

/// `services.yaml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServicesFile {
    /// The services.
    #[serde(default)]
    pub services: Vec<S<ServiceEntry>>,
}

/// One service.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceEntry {
    /// Service name (one DNS label).
    pub name: S<String>,
    /// The node that hosts it.
    pub node: S<String>,
    /// `rete` (default: `spiffe://<td>/service/<name>`) or `node` (`.../service/<node>/<name>`).
    #[serde(default)]
    pub scope: Option<S<String>>,
    /// Local TCP address on the hosting node the vertex forwards to.
    pub upstream: S<String>,
    /// Roles of the service principal (when the service itself calls others).
    #[serde(default)]
    pub roles: Vec<S<String>>,
    /// Groups this service joins.
    #[serde(default)]
    pub groups: Vec<S<String>>,
    /// Preferred SOCKS5 port of the service principal (when it calls other services).
    #[serde(default)]
    pub socks_port: Option<S<i64>>,
    /// Who may ask the service's identity side-channel (docs/wire.md).
    #[serde(default)]
    pub caller_socket: Option<S<CallerSocketEntry>>,
}

/// `caller_socket:` of a service: the local account that owns the socket of
/// its identity side-channel, and a group that may ask too.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerSocketEntry {
    /// User name or number on the hosting node (default: the vertex's user).
    #[serde(default)]
    pub user: Option<S<String>>,
    /// Group name or number on the hosting node (default: none).
    #[serde(default)]
    pub group: Option<S<String>>,
}

/// `roles.yaml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolesFile {
    /// The roles.
    #[serde(default)]
    pub roles: Vec<S<RoleEntry>>,
}

/// One role: what it grants.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleEntry {
    /// Role name.
    pub name: S<String>,
    /// Services granted directly (`wiki`, or `beta/tcp-echo` for node-scoped).
    #[serde(default)]
    pub services: Vec<S<String>>,
    /// Groups whose services are granted.
    #[serde(default)]
    pub groups: Vec<S<String>>,
}

/// `groups.yaml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupsFile {
    /// The groups.
    #[serde(default)]
    pub groups: Vec<S<GroupEntry>>,
}

/// One group: a named set of services.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupEntry {
    /// Group name.
    pub name: S<String>,
    /// Member services (services may also join with their own `groups:`).
    #[serde(default)]
    pub services: Vec<S<String>>,
}

/// All six files as parsed.
#[derive(Debug)]
pub struct Source {
    /// `rete.yaml`.
    pub rete: ReteFile,
    /// `nodes.yaml`.
    pub nodes: NodesFile,
    /// `users.yaml`.
    pub users: UsersFile,
    /// `services.yaml`.
    pub services: ServicesFile,
    /// `roles.yaml`.
    pub roles: RolesFile,
    /// `groups.yaml`.
    pub groups: GroupsFile,
}

fn parse_file<T: for<'de> Deserialize<'de>>(
    dir: &Path,
    file: &str,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    let path = dir.join(file);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            problems.push(Problem::new(file, 1, format!("cannot read: {e}")));
            return None;
        }
    };
    match serde_saphyr::from_str::<T>(&text) {
        Ok(v) => Some(v),
        Err(e) => {
            let line = e.location().map(|l| l.line()).unwrap_or(1);
            let msg = e.without_snippet().to_string();
            // The plain message may still carry its own "at line N" suffix; keep one line.
            let msg = msg
                .lines()
                .next()
                .unwrap_or("invalid YAML")
                .trim()
                .to_owned();
            let mut msg = msg;
            // The location is already in front as file:line.
            if let Some(at) = msg.rfind(" at line ") {
                msg.truncate(at);
            }
            problems.push(Problem::new(file, line, msg));
            None
        }
    }
}

/// Reads and parses all six files; every file that fails adds a problem.
pub fn load(dir: &Path) -> Result<Source, Vec<Problem>> {
    let mut problems = Vec::new();
    let rete = parse_file::<ReteFile>(dir, RETE_FILE, &mut problems);
    let nodes = parse_file::<NodesFile>(dir, NODES_FILE, &mut problems);
    let users = parse_file::<UsersFile>(dir, USERS_FILE, &mut problems);
    let services = parse_file::<ServicesFile>(dir, SERVICES_FILE, &mut problems);
    let roles = parse_file::<RolesFile>(dir, ROLES_FILE, &mut problems);
    let groups = parse_file::<GroupsFile>(dir, GROUPS_FILE, &mut problems);
    match (rete, nodes, users, services, roles, groups) {
        (Some(rete), Some(nodes), Some(users), Some(services), Some(roles), Some(groups))
            if problems.is_empty() =>
        {
            Ok(Source {
                rete,
                nodes,
                users,
                services,
                roles,
                groups,
            })
        }
        _ => Err(problems),
    }
}

/// Parses only `rete.yaml` (for `ca` commands, which need the rete's name
/// even while other files are still being written).
pub fn load_rete(dir: &Path) -> Result<ReteFile, Vec<Problem>> {
    let mut problems = Vec::new();
    parse_file::<ReteFile>(dir, RETE_FILE, &mut problems).ok_or(problems)
}
