//! Who is calling a management service (the config-server, the metrics
//! collector), proven by this node's vertex over its identity side-channel.
//!
//! ```text
//! accepted TCP (peer P, local Q)
//!   live vertex artifact: which published service has upstream = our listener?
//!     none   -> nobody reaches us through the rete: Local
//!     some S -> ask <runtime>/callers/flor/<S>.sock "P Q\n"
//!                 "spiffe://.../node/alpha ..." -> Proven(node/alpha)
//!                 "unknown"                    -> Local (a process on this host)
//!                 no socket, no answer         -> error (the server answers 503)
//! ```
//!
//! A failure to ask is never taken for "local": a missing or unreadable
//! socket fails closed. What each server then allows is decided in pure
//! functions next to it ([`Authority`]), unit-tested without sockets.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use flor_vertex::acl::Acl;
use flor_vertex::artifact::VertexConfig;
#[cfg(unix)]
use flor_vertex::callers::Answer;
use flor_vertex::callers::AnswerError;
use flor_vertex::identity::{Kind, Name, SpiffeId};

use crate::scope::Scope;
use crate::vertex_cmd::{self, VertexCmdError};

/// How long asking the side-channel may take (connect, question, answer).
#[cfg(unix)]
const ASK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Longest answer line read: two SPIFFE IDs, a number, spaces and a newline.
#[cfg(unix)]
const MAX_ANSWER: usize = 2 * flor_vertex::limits::MAX_SPIFFE_ID_LEN + 32;

/// Who is on an accepted connection.
// One per accepted connection, on the stack; a box would allocate for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// A flow the vertex forwarded, from this principal (its certificate proved it).
    // Windows builds have no side-channel to prove it with (`ask`).
    #[cfg_attr(not(unix), allow(dead_code))]
    Proven(SpiffeId),
    /// A connection the vertex did not make: a process on this host.
    Local,
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Caller::Proven(id) => write!(f, "{id}"),
            Caller::Local => f.write_str("a local process (not through the rete)"),
        }
    }
}

/// Why the caller could not be proven.
#[derive(Debug)]
#[non_exhaustive]
pub enum ProveError {
    /// The live vertex artifact could not be read or verified.
    Artifact(VertexCmdError),
    /// The side-channel socket could not be reached or did not answer.
    // Windows builds have no side-channel to ask (`ask`).
    #[cfg_attr(not(unix), allow(dead_code))]
    Unreachable(PathBuf, std::io::Error),
    /// The side-channel answered something else than an answer.
    #[cfg_attr(not(unix), allow(dead_code))]
    Answer(PathBuf, AnswerError),
}

impl fmt::Display for ProveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProveError::Artifact(e) => write!(f, "cannot read this node's vertex artifact: {e}"),
            ProveError::Unreachable(p, e) => write!(
                f,
                "cannot ask the vertex who is calling ({}: {e}); is the vertex running, and may this user open its socket (caller_socket in services.yaml)?",
                p.display()
            ),
            ProveError::Answer(p, e) => write!(f, "{}: {e}", p.display()),
        }
    }
}

impl std::error::Error for ProveError {}

/// What this node's live vertex artifact says about one listener.
pub struct Authority {
    /// The rete's ACL on this node.
    pub acl: Acl,
    /// The service whose upstream is the listener, if the vertex publishes it.
    pub service: Option<SpiffeId>,
    /// The service whose callers are operators (`config-publish`'s upstream), if any.
    pub operators: Option<SpiffeId>,
}

impl Authority {
    /// From the artifact: the services whose upstreams are `listen` and `operators_listen`.
    pub fn new(
        cfg: &VertexConfig,
        listen: SocketAddr,
        operators_listen: Option<SocketAddr>,
    ) -> Self {
        let at = |a: SocketAddr| {
            cfg.services
                .iter()
                .find(|s| s.upstream.0 == a)
                .map(|s| s.id.clone())
        };
        Authority {
            acl: Acl::from_config(cfg),
            service: at(listen),
            operators: operators_listen.and_then(at),
        }
    }

    /// Whether `id` is an operator: this node's ACL grants it the operators' service.
    pub fn is_operator(&self, id: &SpiffeId) -> bool {
        self.operators
            .as_ref()
            .is_some_and(|s| self.acl.grants(id, s))
    }

    /// Whether `caller` may read `node`'s artifacts: the node itself, an
    /// operator, or a local process.
    pub fn may_read(&self, caller: &Caller, node: &Name) -> bool {
        match caller {
            Caller::Local => true,
            Caller::Proven(id) => node_of(id) == Some(node) || self.is_operator(id),
        }
    }

    /// Whether `caller` may publish: an operator, or a local process.
    pub fn may_publish(&self, caller: &Caller) -> bool {
        match caller {
            Caller::Local => true,
            Caller::Proven(id) => self.is_operator(id),
        }
    }
}

/// The node a `spiffe://<td>/node/<name>` identity names.
pub fn node_of(id: &SpiffeId) -> Option<&Name> {
    (id.kind() == Kind::Node && id.node().is_none()).then(|| id.name())
}

/// The live vertex artifact of `scope`, or `None` when there is none (no
/// vertex can run, so nobody reaches this host through the rete).
pub fn live_vertex(scope: &Scope) -> Result<Option<VertexConfig>, ProveError> {
    match vertex_cmd::load_config(scope, crate::agent::VERTEX_NAME) {
        Ok((cfg, _)) => Ok(Some(cfg)),
        Err(VertexCmdError::Read(_, e)) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ProveError::Artifact(e)),
    }
}

/// Asks the side-channel of `service` who is on the connection (`peer`, `local`)
/// this process accepted; `service` `None`: the listener is no upstream of the vertex.
pub async fn prove(
    scope: &Scope,
    service: Option<&SpiffeId>,
    peer: SocketAddr,
    local: SocketAddr,
) -> Result<Caller, ProveError> {
    let Some(service) = service else {
        return Ok(Caller::Local);
    };
    ask(scope, service, peer, local).await
}

#[cfg(unix)]
async fn ask(
    scope: &Scope,
    service: &SpiffeId,
    peer: SocketAddr,
    local: SocketAddr,
) -> Result<Caller, ProveError> {
    use smol::io::{AsyncReadExt, AsyncWriteExt};
    let name = Name::new(crate::agent::VERTEX_NAME)
        .map_err(|_| ProveError::Answer(PathBuf::new(), AnswerError::Malformed))?;
    let path = scope
        .runtime
        .join(flor_vertex::contract::caller_socket_rel(&name, service));
    let question = flor_vertex::callers::Request { peer, local }.to_line();
    let exchange = async {
        let mut s = smol::net::unix::UnixStream::connect(&path).await?;
        s.write_all(question.as_bytes()).await?;
        let mut buf = vec![0u8; MAX_ANSWER];
        let mut filled = 0;
        while !buf[..filled].contains(&b'\n') && filled < buf.len() {
            match s.read(&mut buf[filled..]).await? {
                0 => break,
                n => filled += n,
            }
        }
        buf.truncate(filled);
        Ok::<_, std::io::Error>(buf)
    };
    let timeout = async {
        smol::Timer::after(ASK_TIMEOUT).await;
        Err(std::io::ErrorKind::TimedOut.into())
    };
    let line = smol::future::or(exchange, timeout)
        .await
        .map_err(|e| ProveError::Unreachable(path.clone(), e))?;
    let line = std::str::from_utf8(&line)
        .map_err(|_| ProveError::Answer(path.clone(), AnswerError::Malformed))?;
    match Answer::parse(line).map_err(|e| ProveError::Answer(path, e))? {
        Answer::Known { caller, .. } => Ok(Caller::Proven(caller)),
        Answer::Unknown => Ok(Caller::Local),
    }
}

/// Windows builds have no Unix sockets, so the vertex serves no side-channel
/// (docs/wire.md): every caller is taken as local, as before per-node reads.
#[cfg(not(unix))]
async fn ask(
    _scope: &Scope,
    _service: &SpiffeId,
    _peer: SocketAddr,
    _local: SocketAddr,
) -> Result<Caller, ProveError> {
    Ok(Caller::Local)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test fixtures
    use super::*;

    fn id(s: &str) -> SpiffeId {
        SpiffeId::parse(s).unwrap()
    }

    /// mgmt01's artifact in the example rete: `config` and `config-publish`,
    /// read by every node, published by olga (role operator).
    fn mgmt01() -> VertexConfig {
        let v = serde_json::json!({
            "rete": "demo.flor", "node": "mgmt01", "name": "flor", "ca": "ca.crt",
            "listen": "127.0.0.1:7443", "idle_timeout_s": 60, "principals": [],
            "services": [
                {"id": "spiffe://demo.flor/service/config", "upstream": "127.0.0.1:7080"},
                {"id": "spiffe://demo.flor/service/config-publish", "upstream": "127.0.0.1:7081"},
            ],
            "acl": [
                {"caller": "spiffe://demo.flor/node/alpha", "services": [0]},
                {"caller": "spiffe://demo.flor/node/beta", "services": [0]},
                {"caller": "spiffe://demo.flor/user/olga", "services": [0, 1]},
            ],
            "routes": [], "socks": [],
        });
        flor_vertex::artifact::parse_payload(v.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn nodes_read_their_own_operators_read_all() {
        let a = Authority::new(
            &mgmt01(),
            "127.0.0.1:7080".parse().unwrap(),
            Some("127.0.0.1:7081".parse().unwrap()),
        );
        assert_eq!(a.service, Some(id("spiffe://demo.flor/service/config")));
        let alpha = Caller::Proven(id("spiffe://demo.flor/node/alpha"));
        let olga = Caller::Proven(id("spiffe://demo.flor/user/olga"));
        let bob = Caller::Proven(id("spiffe://demo.flor/user/bob"));
        let (n_alpha, n_beta) = (Name::new("alpha").unwrap(), Name::new("beta").unwrap());
        assert!(a.may_read(&alpha, &n_alpha));
        assert!(!a.may_read(&alpha, &n_beta), "alpha may not read beta");
        assert!(a.may_read(&olga, &n_beta), "an operator reads every node");
        assert!(!a.may_read(&bob, &n_alpha));
        assert!(a.may_read(&Caller::Local, &n_beta));
        assert!(a.may_publish(&olga));
        assert!(!a.may_publish(&alpha));
        assert!(!a.may_publish(&bob));
        // A user named like a node is no node.
        let user_alpha = Caller::Proven(id("spiffe://demo.flor/user/alpha"));
        assert!(!a.may_read(&user_alpha, &n_alpha));
        // No config-publish published here: nobody is an operator.
        let a = Authority::new(&mgmt01(), "127.0.0.1:7080".parse().unwrap(), None);
        assert!(!a.may_read(&olga, &n_beta));
        assert!(!a.may_publish(&olga));
        // A listener the vertex does not forward to: no service to ask about.
        let a = Authority::new(&mgmt01(), "127.0.0.1:9999".parse().unwrap(), None);
        assert_eq!(a.service, None);
    }
}
