//! The contract between retectl and the device, in one place: where each
//! artifact lives, what a device trusts when it opens one, and which version
//! may replace which.
//!
//! ```text
//! <node>/mgmt/agent.json              kind agent   (AGENT_REL)
//! <node>/mgmt/vertices/<name>.json    kind vertex  (vertex_rel, named by agent.json)
//! ```
//!
//! Every reader — the agent's store, the vertex, the config-server, retectl's
//! self-check after sealing — opens an artifact with [`open_agent`] or
//! [`open_vertex`] under a [`Trust`]: the envelope (signature, authorised
//! signer, plane, schema, kind, rete, node, version), then the payload's own
//! consistency (`validate`), then the names the path promises. A store
//! replaces a copy only under [`may_replace`].

use core::fmt;
use std::path::PathBuf;

use crate::artifact::{AgentConfig, ArtifactError, MgmtSigner, VertexConfig};
use crate::envelope::{self, ArtifactKind, EnvelopeError, Expect, Header};
use crate::identity::{Name, SpiffeId, TrustDomain};

/// The agent artifact's path inside a node's tree (and on the config-server).
pub const AGENT_REL: &str = "mgmt/agent.json";
/// The directory of vertex artifacts inside a node's tree.
pub const VERTICES_REL: &str = "mgmt/vertices/";
/// The directory both artifacts live under: the live-generation pointer on a device.
pub const MGMT_DIR: &str = "mgmt";

/// The rete-scoped service names of the management roles. retectl reserves
/// them (groups, landing page) and the node that publishes them runs the role
/// behind them (the agent's `core::roles`): the config-server serves `config`
/// (read) and `config-publish` (write), the metrics collector `metrics-push`
/// (agents push) and `metrics` (Prometheus and operators read).
pub const SERVICE_CONFIG: &str = "config";
/// The config-server's publish service (see [`SERVICE_CONFIG`]).
pub const SERVICE_CONFIG_PUBLISH: &str = "config-publish";
/// The metrics collector's push service (see [`SERVICE_CONFIG`]).
pub const SERVICE_METRICS_PUSH: &str = "metrics-push";
/// The metrics collector's read service (see [`SERVICE_CONFIG`]).
pub const SERVICE_METRICS: &str = "metrics";

/// The directory under a flor home that holds one install root per scope:
/// `<home>/retes/<scope>/` (scope.json, ca.crt, certs/, keys/, mgmt/).
pub const SCOPES_DIR: &str = "retes";
/// The environment variable that names a flor home outright.
pub const HOME_ENV: &str = "FLOR_HOME";
/// The system-wide home the Unix packages create (install.sh, the .ipk).
pub const SYSTEM_HOME: &str = "/etc/flor";
/// A user's own home, under their home directory.
pub const USER_HOME_DIR: &str = ".flor";

/// Which flor home a command uses, given what this host offers: `FLOR_HOME`
/// when set; else the system home when it exists and the caller may write it
/// (a root shell on a router or a Pi after a package install, so `flor agent
/// status` finds what the service runs); else `~/.flor`; else the system home
/// (a service with no home directory). Pure, so flor and retectl agree on it.
pub fn choose_home(
    flor_home: Option<PathBuf>,
    system_writable: bool,
    user_home: Option<PathBuf>,
) -> PathBuf {
    if let Some(h) = flor_home.filter(|h| !h.as_os_str().is_empty()) {
        return h;
    }
    if system_writable {
        return PathBuf::from(SYSTEM_HOME);
    }
    match user_home.filter(|h| !h.as_os_str().is_empty() && h.as_os_str() != "/") {
        Some(h) => h.join(USER_HOME_DIR),
        None => PathBuf::from(SYSTEM_HOME),
    }
}

/// The directory under a scope's runtime root that holds the identity
/// side-channel sockets, one directory per vertex (`callers/<vertex>/`).
pub const CALLERS_DIR: &str = "callers";

/// Where vertex `vertex` serves the identity side-channel of `service`,
/// relative to the scope's runtime root: `callers/<vertex>/<name>[.<node>].sock`
/// (the service's hostname without the rete, so a rete-scoped `config` and a
/// node-scoped `beta/tcp-echo` cannot collide). The vertex binds it; an
/// upstream (the config-server, the metrics collector, any service) connects.
pub fn caller_socket_rel(vertex: &Name, service: &SpiffeId) -> String {
    let mut s = String::from(CALLERS_DIR);
    s.push('/');
    s.push_str(vertex.as_str());
    s.push('/');
    s.push_str(service.name().as_str());
    if let Some(node) = service.node() {
        s.push('.');
        s.push_str(node.as_str());
    }
    s.push_str(".sock");
    s
}

/// `mgmt/vertices/<name>.json`.
pub fn vertex_rel(name: &Name) -> String {
    let mut s = String::from(VERTICES_REL);
    s.push_str(name.as_str());
    s.push_str(".json");
    s
}

/// The vertex name in a `mgmt/vertices/<name>.json` path.
pub fn vertex_name_of(rel: &str) -> Option<Name> {
    let name = rel.strip_prefix(VERTICES_REL)?.strip_suffix(".json")?;
    Name::new(name).ok()
}

/// The kind of artifact at `rel`, or `None` for a path that is no artifact.
pub fn kind_of(rel: &str) -> Option<ArtifactKind> {
    if rel == AGENT_REL {
        Some(ArtifactKind::Agent)
    } else if vertex_name_of(rel).is_some() {
        Some(ArtifactKind::Vertex)
    } else {
        None
    }
}

/// What a reader trusts: whose node it is and which signers it accepts now.
#[derive(Clone, Copy, Debug)]
pub struct Trust<'a> {
    /// The rete.
    pub rete: &'a TrustDomain,
    /// The node the artifact must be for.
    pub node: &'a Name,
    /// The management signers trusted now (a bundle's, or the last committed envelope's).
    pub signers: &'a [MgmtSigner],
    /// The version running now: a replacement must be newer. `None` accepts any
    /// (first install, a vertex re-reading what its agent installed, a server storing a publish).
    pub current: Option<u32>,
}

impl Trust<'_> {
    /// What [`envelope::open`] checks for an artifact of `kind`.
    pub fn for_kind(&self, kind: ArtifactKind) -> Expect<'_> {
        Expect {
            kind,
            rete: self.rete,
            node: self.node,
            trusted: self.signers,
            current_version: self.current,
        }
    }
}

/// Why an artifact was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ContractError {
    /// The envelope was refused.
    Envelope(EnvelopeError),
    /// The payload is inconsistent.
    Artifact(ArtifactError),
    /// agent.json names a vertex artifact somewhere other than `mgmt/vertices/<name>.json`.
    BadVertexPath,
    /// A vertex artifact describes another vertex than its path names.
    VertexNameMismatch,
}

impl fmt::Display for ContractError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ContractError::Envelope(e) => write!(f, "{e}"),
            ContractError::Artifact(e) => write!(f, "{e}"),
            ContractError::BadVertexPath => {
                f.write_str("it names a vertex artifact outside mgmt/vertices/<name>.json")
            }
            ContractError::VertexNameMismatch => {
                f.write_str("it describes a different vertex than its path names")
            }
        }
    }
}

impl std::error::Error for ContractError {}

/// Opens `mgmt/agent.json`: envelope, payload consistency, vertex paths.
pub fn open_agent(bytes: &[u8], trust: &Trust<'_>) -> Result<(Header, AgentConfig), ContractError> {
    let opened = envelope::open::<AgentConfig>(bytes, &trust.for_kind(ArtifactKind::Agent))
        .map_err(ContractError::Envelope)?;
    opened.payload.validate().map_err(ContractError::Artifact)?;
    for v in opened.payload.vertices.iter() {
        if vertex_name_of(v.artifact.as_str()).as_ref() != Some(&v.name) {
            return Err(ContractError::BadVertexPath);
        }
    }
    Ok((opened.header, opened.payload))
}

/// Opens `mgmt/vertices/<name>.json`: envelope, payload consistency, and that it describes `name`.
pub fn open_vertex(
    bytes: &[u8],
    trust: &Trust<'_>,
    name: &Name,
) -> Result<(Header, VertexConfig), ContractError> {
    let opened = envelope::open::<VertexConfig>(bytes, &trust.for_kind(ArtifactKind::Vertex))
        .map_err(ContractError::Envelope)?;
    opened.payload.validate().map_err(ContractError::Artifact)?;
    if &opened.payload.name != name {
        return Err(ContractError::VertexNameMismatch);
    }
    Ok((opened.header, opened.payload))
}

/// Opens the artifact at `rel` (agent or vertex), whichever it is.
pub fn open_at(rel: &str, bytes: &[u8], trust: &Trust<'_>) -> Result<Header, ContractError> {
    match vertex_name_of(rel) {
        Some(name) => open_vertex(bytes, trust, &name).map(|(h, _)| h),
        None => open_agent(bytes, trust).map(|(h, _)| h),
    }
}

/// Why a stored copy may not be replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotReplaceable {
    /// The version offered.
    pub offered: u32,
    /// The version stored.
    pub stored: u32,
}

impl fmt::Display for NotReplaceable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "version {} would replace stored version {} (rollback; publish a newer version)",
            self.offered, self.stored
        )
    }
}

/// The version rule of every store (config-server, compiled tree): a copy is
/// replaced by a newer version, or by the very same bytes (publishing again is
/// idempotent); never by an older version or other bytes under the same version.
pub fn may_replace(
    stored_version: u32,
    stored: &[u8],
    offered_version: u32,
    offered: &[u8],
) -> Result<(), NotReplaceable> {
    if offered_version > stored_version || (offered_version == stored_version && stored == offered)
    {
        Ok(())
    } else {
        Err(NotReplaceable {
            offered: offered_version,
            stored: stored_version,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_home_is_flor_home_then_a_writable_system_root_then_the_users() {
        let pb = PathBuf::from;
        let alice = || Some(pb("/home/alice"));
        // FLOR_HOME wins over everything, even a writable /etc/flor.
        assert_eq!(choose_home(Some(pb("/x")), true, alice()), pb("/x"));
        // Root on a router after a package install: the package's home.
        assert_eq!(choose_home(None, true, Some(pb("/root"))), pb(SYSTEM_HOME));
        // A user who may not write /etc/flor (or it does not exist): their own.
        assert_eq!(choose_home(None, false, alice()), pb("/home/alice/.flor"));
        // A service with no home directory.
        assert_eq!(choose_home(None, false, None), pb(SYSTEM_HOME));
        assert_eq!(choose_home(None, false, Some(pb("/"))), pb(SYSTEM_HOME));
        assert_eq!(
            choose_home(Some(pb("")), false, alice()),
            pb("/home/alice/.flor")
        );
    }

    #[test]
    fn paths_name_their_kind() {
        let flor = Name::new("flor").unwrap();
        assert_eq!(vertex_rel(&flor), "mgmt/vertices/flor.json");
        assert_eq!(
            vertex_name_of("mgmt/vertices/flor.json"),
            Some(flor.clone())
        );
        let id = |s| SpiffeId::parse(s).unwrap();
        assert_eq!(
            caller_socket_rel(&flor, &id("spiffe://demo.flor/service/config")),
            "callers/flor/config.sock"
        );
        assert_eq!(
            caller_socket_rel(&flor, &id("spiffe://demo.flor/service/beta/tcp-echo")),
            "callers/flor/tcp-echo.beta.sock"
        );
        assert_eq!(kind_of(AGENT_REL), Some(ArtifactKind::Agent));
        assert_eq!(
            kind_of("mgmt/vertices/flor.json"),
            Some(ArtifactKind::Vertex)
        );
        for bad in [
            "mgmt/vertices/../agent.json",
            "mgmt/vertices/Flor.json",
            "mgmt/vertices/flor.json.bak",
            "mgmt/other.json",
            "agent.json",
        ] {
            assert_eq!(kind_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn newer_or_byte_identical() {
        assert_eq!(may_replace(3, b"a", 4, b"b"), Ok(()));
        assert_eq!(may_replace(3, b"a", 3, b"a"), Ok(()), "idempotent");
        assert_eq!(
            may_replace(3, b"a", 3, b"b"),
            Err(NotReplaceable {
                offered: 3,
                stored: 3
            })
        );
        assert!(may_replace(3, b"a", 2, b"a").is_err());
        assert_eq!(
            may_replace(5, b"", 4, b"").unwrap_err().to_string(),
            "version 4 would replace stored version 5 (rollback; publish a newer version)"
        );
    }
}
