//! Fetch and verify one version of a node's artifacts from a source.
//!
//! agent.json comes first: it names the vertices whose artifacts follow. Each
//! envelope must be signed by a signer the scope trusts now, be for this rete
//! and node, and be newer than the file it would replace. A source that still
//! serves the running version is "up to date", not an error.

use std::fmt;

use crate::fetch::{FetchError, Source};
use crate::scope::{Scope, ScopeInfo};
use crate::store::{self, StoreError, Verified};
use flor_vertex::contract::AGENT_REL;

/// Why a sync did not produce a new version.
#[derive(Debug)]
#[non_exhaustive]
pub enum SyncError {
    /// The source could not be reached or answered badly.
    Fetch(FetchError),
    /// An artifact was refused (signature, signer, rete, node, version, payload).
    Store(StoreError),
}

impl fmt::Display for SyncError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyncError::Fetch(e) => write!(f, "{e}"),
            SyncError::Store(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for SyncError {}

/// Why the agent cannot say where to fetch from, or cannot reach the rete's
/// own services as its node: what `flor enroll`, the agent, `flor doctor`
/// and the metrics pusher report.
#[derive(Debug)]
#[non_exhaustive]
pub enum SourceError {
    /// The bundle's mirror URL does not parse.
    Mirror(FetchError),
    /// A file the node proves itself with (the rete CA, its certificate or key).
    Read(std::path::PathBuf, std::io::Error),
    /// The node's certificate and key do not make credentials.
    Credentials(flor_vertex::net::NetError),
    /// The rete CA does not load.
    Ca(flor_vertex::net::NetError),
    /// The service to reach is not one a node can dial.
    Target(
        Box<flor_vertex::identity::SpiffeId>,
        flor_vertex::identity::IdentityError,
    ),
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceError::Mirror(e) => write!(f, "the bundle's mirror URL: {e}"),
            SourceError::Read(p, e) => write!(f, "{}: {e}", p.display()),
            SourceError::Credentials(e) => write!(f, "node credentials: {e}"),
            SourceError::Ca(e) => write!(f, "the rete CA: {e}"),
            SourceError::Target(id, e) => write!(f, "{id}: {e}"),
        }
    }
}

impl std::error::Error for SourceError {}

/// The outcome of a fetch.
#[derive(Debug)]
pub enum Fetched {
    /// The source serves the version that runs.
    UpToDate(u32),
    /// A newer, verified version.
    New(Box<Verified>),
}

/// Where the agent fetches from when no `--from` is given: the scope's
/// plain-HTTP mirror if the bundle named one (an operator's explicit choice,
/// e.g. the management node's own loopback listener), else the config-server
/// over Florete as the node's `node/<name>` identity.
pub fn default_source(scope: &Scope, info: &ScopeInfo) -> Result<Source, SourceError> {
    if let Some(url) = info.mirror_url.as_ref() {
        return Source::parse(url).map_err(SourceError::Mirror);
    }
    florete_source(scope, info)
}

/// The config-server over Florete, with this node's identity and the scope's CA.
pub fn florete_source(scope: &Scope, info: &ScopeInfo) -> Result<Source, SourceError> {
    let cs = &info.config_server;
    florete_client(scope, info, &cs.service, cs.addr.0).map(|f| Source::Florete(Box::new(f)))
}

/// A Florete client of `service` at `addr`, as this node's `node/<name>`
/// identity with the scope's CA: how the agent reaches the rete's own
/// infrastructure (the config-server, the metrics collector).
pub fn florete_client(
    scope: &Scope,
    info: &ScopeInfo,
    service: &flor_vertex::identity::SpiffeId,
    addr: std::net::SocketAddr,
) -> Result<crate::fetch::Florete, SourceError> {
    use flor_vertex::artifact::{cert_path, key_path, CA_PATH};
    use flor_vertex::identity::{Dialable, Kind, SpiffeId};
    use flor_vertex::limits::MAX_PEM_LEN;
    let read = |rel: &str| {
        let p = scope.install.join(rel);
        flor_vertex::file::read_bounded(&p, MAX_PEM_LEN).map_err(|e| SourceError::Read(p, e))
    };
    let me = SpiffeId::new(info.rete.clone(), Kind::Node, info.node.clone());
    let ca = read(CA_PATH)?;
    let cert = read(cert_path(&me).as_str())?;
    let key = read(key_path(&me).as_str())?;
    let caller = flor_vertex::net::Credentials::from_pem(me, &cert, &key)
        .map_err(SourceError::Credentials)?;
    let dialer = flor_vertex::net::Dialer::new(&ca).map_err(SourceError::Ca)?;
    let target = Dialable::new(service.clone())
        .map_err(|e| SourceError::Target(Box::new(service.clone()), e))?;
    Ok(crate::fetch::Florete {
        dialer: std::sync::Arc::new(dialer),
        caller: std::sync::Arc::new(caller),
        target,
        addr,
    })
}

/// Fetches and verifies a full set for a first install (enroll): any version.
pub async fn fetch_verified(
    source: &Source,
    info: &ScopeInfo,
    current: Option<u32>,
) -> Result<Verified, SyncError> {
    let bytes = source
        .fetch(&info.node, AGENT_REL)
        .await
        .map_err(SyncError::Fetch)?;
    verify_set(source, info, bytes, current, |_| None).await
}

/// Verifies fetched agent.json bytes, then fetches and verifies its vertices.
/// `vertex_current` gives the running version of each vertex artifact.
async fn verify_set(
    source: &Source,
    info: &ScopeInfo,
    agent_bytes: Vec<u8>,
    current: Option<u32>,
    vertex_current: impl Fn(&flor_vertex::identity::Name) -> Option<u32>,
) -> Result<Verified, SyncError> {
    let (header, agent, agent_bytes) =
        store::verify_agent(info, agent_bytes, current).map_err(SyncError::Store)?;
    // agent.json names the vertices whose artifacts complete this version.
    let mut vertices = Vec::new();
    for v in agent.vertices.iter() {
        let rel = flor_vertex::contract::vertex_rel(&v.name);
        let bytes = source
            .fetch(&info.node, &rel)
            .await
            .map_err(SyncError::Fetch)?;
        vertices.push(
            store::verify_vertex(info, &v.name, bytes, vertex_current(&v.name))
                .map_err(SyncError::Store)?,
        );
    }
    Ok(Verified {
        header,
        agent_bytes,
        vertices,
    })
}

/// Fetches for a running scope: up to date, or a verified newer version.
pub async fn fetch_for(
    scope: &Scope,
    info: &ScopeInfo,
    source: &Source,
) -> Result<Fetched, SyncError> {
    let current = store::live_header(scope, AGENT_REL).map(|h| h.version);
    let bytes = source
        .fetch(&info.node, AGENT_REL)
        .await
        .map_err(SyncError::Fetch)?;
    if let Some(cur) = current {
        // An unchanged server costs no signature check; anything else (newer,
        // or a replayed or tampered copy) is fully verified and refused with its reason.
        let live = store::read_live(scope, AGENT_REL).map_err(SyncError::Store)?;
        if bytes == live {
            return Ok(Fetched::UpToDate(cur));
        }
    }
    let vcur = |n: &flor_vertex::identity::Name| {
        store::live_header(scope, &flor_vertex::contract::vertex_rel(n)).map(|h| h.version)
    };
    verify_set(source, info, bytes, current, vcur)
        .await
        .map(|v| Fetched::New(Box::new(v)))
}
