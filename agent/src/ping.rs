//! `flor ping <name>.rete [--as <principal>]`: one flow to a service, as one
//! of this node's principals, and what the rete answered.
//!
//! The flow is opened exactly as the SOCKS5 ingress opens one (the same
//! [`Dialer`], route and credentials from the live vertex artifact), so the
//! verdict is the one an application would get:
//!
//! ```text
//! allowed        the target's vertex connected its upstream
//! denied         no role of the caller grants the service
//! unknown        no route here, or the service is not published at its node
//! upstream down  the service's upstream refused or did not answer
//! unreachable    the hosting node did not answer / the handshake failed
//! ```
//!
//! Timings: the QUIC handshake, then the flow on that connection (stream
//! open, the server's ACL check and upstream connect, the verdict byte).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flor_vertex::artifact::{VertexConfig, CA_PATH};
use flor_vertex::file;
use flor_vertex::identity::{resolve, Dialable, SpiffeId};
use flor_vertex::limits::MAX_PEM_LEN;
use flor_vertex::net::{Credentials, DialError, Dialer};

use crate::scope::Scope;

/// Why a ping could not even start (a local problem, not the rete's answer).
#[derive(Debug)]
#[non_exhaustive]
pub enum PingError {
    /// The scope or its live artifact could not be read.
    Scope(String),
    /// The host is not a `.rete` name of this rete.
    BadHost(String, flor_vertex::identity::IdentityError),
    /// `--as` names no principal this node holds.
    NoSuchPrincipal(String),
    /// The principal's certificate or key, or the CA, could not be loaded.
    Credentials(String),
}

impl fmt::Display for PingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PingError::Scope(e) => write!(f, "{e}"),
            PingError::BadHost(h, e) => write!(f, "{h}: {e}"),
            PingError::NoSuchPrincipal(p) => write!(
                f,
                "--as {p}: this node holds no such principal (see flor agent status; e.g. --as bob or --as user/bob)"
            ),
            PingError::Credentials(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for PingError {}

/// The live vertex artifact of a scope.
pub fn live_config(scope: &Scope) -> Result<VertexConfig, PingError> {
    crate::vertex_cmd::load_config(scope, crate::agent::VERTEX_NAME)
        .map(|(cfg, _)| cfg)
        .map_err(|e| PingError::Scope(e.to_string()))
}

/// A dialer trusting the scope's CA, on its own ephemeral UDP port.
pub fn dialer(scope: &Scope) -> Result<Dialer, PingError> {
    let p = scope.install.join(CA_PATH);
    let ca = file::read_bounded(&p, MAX_PEM_LEN)
        .map_err(|e| PingError::Credentials(format!("{}: {e}", p.display())))?;
    Dialer::new(&ca).map_err(|e| PingError::Credentials(format!("the rete CA: {e}")))
}

/// The credentials of `id` as the artifact names them.
pub fn credentials(
    scope: &Scope,
    cfg: &VertexConfig,
    id: &SpiffeId,
) -> Result<Arc<Credentials>, PingError> {
    let p = cfg
        .principals
        .iter()
        .find(|p| p.id == *id)
        .ok_or_else(|| PingError::NoSuchPrincipal(id.to_string()))?;
    let read = |rel: &flor_vertex::artifact::ScopePath| {
        let path = scope.path(rel);
        file::read_bounded(&path, MAX_PEM_LEN)
            .map_err(|e| PingError::Credentials(format!("{}: {e}", path.display())))
    };
    let c = Credentials::from_pem(id.clone(), &read(&p.cert)?, &read(&p.key)?)
        .map_err(|e| PingError::Credentials(format!("credentials of {id}: {e}")))?;
    Ok(Arc::new(c))
}

/// The principal `--as` names: a full SPIFFE ID, `kind/name`, or a bare
/// name; without `--as`, the first SOCKS5 listener's identity (what an
/// application on this node uses), else the first principal.
fn caller(cfg: &VertexConfig, as_: Option<&str>) -> Result<SpiffeId, PingError> {
    let Some(a) = as_ else {
        return cfg
            .socks
            .first()
            .map(|s| s.principal.clone())
            .or_else(|| cfg.principals.first().map(|p| p.id.clone()))
            .ok_or_else(|| PingError::NoSuchPrincipal("(none given)".into()));
    };
    cfg.principals
        .iter()
        .map(|p| &p.id)
        .find(|id| {
            let s = id.to_string();
            s == a || s.ends_with(&format!("/{a}"))
        })
        .cloned()
        .ok_or_else(|| PingError::NoSuchPrincipal(a.into()))
}

/// What the rete answered.
#[derive(Debug)]
pub enum Verdict {
    /// The flow is open.
    Allowed,
    /// The ACL refused the caller.
    Denied,
    /// No route here, or not published at its node.
    Unknown(String),
    /// The upstream refused or did not answer.
    UpstreamDown(String),
    /// The node did not answer, or the handshake failed.
    Unreachable(String),
}

/// One ping's outcome.
pub struct Ping {
    /// The caller.
    pub caller: SpiffeId,
    /// The target, if the name resolved.
    pub target: Option<Dialable>,
    /// The hosting vertex, if routed.
    pub addr: Option<std::net::SocketAddr>,
    /// The handshake's duration, if one completed.
    pub handshake: Option<Duration>,
    /// Stream open to verdict, if a flow was tried.
    pub flow: Option<Duration>,
    /// The answer.
    pub verdict: Verdict,
}

/// A duration as milliseconds with one decimal, in integer arithmetic:
/// `{:.1}` of an f64 would link float formatting (about 11 KB measured).
pub struct Ms(pub Duration);

impl fmt::Display for Ms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let us = self.0.as_micros();
        write!(f, "{}.{} ms", us / 1000, us % 1000 / 100)
    }
}

impl fmt::Display for Ping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.target, &self.addr) {
            (Some(t), Some(a)) => write!(f, "{t} at {a} as {}: ", self.caller)?,
            (Some(t), None) => write!(f, "{t} as {}: ", self.caller)?,
            _ => write!(f, "as {}: ", self.caller)?,
        }
        match &self.verdict {
            Verdict::Allowed => f.write_str("allowed")?,
            Verdict::Denied => write!(f, "denied (no role of {} grants it)", self.caller)?,
            Verdict::Unknown(why) => write!(f, "unknown ({why})")?,
            Verdict::UpstreamDown(why) => write!(f, "upstream down ({why})")?,
            Verdict::Unreachable(why) => write!(f, "unreachable ({why})")?,
        }
        if let Some(h) = self.handshake {
            write!(f, "; handshake {}", Ms(h))?;
        }
        if let Some(fl) = self.flow {
            write!(f, ", flow verdict {}", Ms(fl))?;
        }
        Ok(())
    }
}

/// Opens one flow to `host` as `as_` (or the default caller) and closes it.
pub fn ping(scope: &Scope, host: &str, as_: Option<&str>) -> Result<Ping, PingError> {
    let cfg = live_config(scope)?;
    let caller_id = caller(&cfg, as_)?;
    let mut out = Ping {
        caller: caller_id.clone(),
        target: None,
        addr: None,
        handshake: None,
        flow: None,
        verdict: Verdict::Unknown(String::new()),
    };
    let target = resolve(host, &cfg.rete).map_err(|e| PingError::BadHost(host.into(), e))?;
    out.target = Some(target.clone());
    let Some(route) = cfg.routes.iter().find(|r| r.target == *target.id()) else {
        out.verdict = Verdict::Unknown(
            "this node has no route to it: no such service, or no principal here is granted it"
                .into(),
        );
        return Ok(out);
    };
    let addr = route.addr.0;
    out.addr = Some(addr);
    let creds = credentials(scope, &cfg, &caller_id)?;
    let dialer = dialer(scope)?;
    smol::block_on(async {
        match dialer.warm(&creds, &target, addr).await {
            Ok(h) => out.handshake = Some(h),
            Err(e) => {
                out.verdict = Verdict::Unreachable(e.to_string());
                return;
            }
        }
        let started = Instant::now();
        let r = dialer.connect(&creds, &target, addr).await;
        out.flow = Some(started.elapsed());
        out.verdict = match r {
            Ok(_flow) => Verdict::Allowed,
            Err(DialError::Denied) => Verdict::Denied,
            Err(e @ DialError::UnknownService) => Verdict::Unknown(e.to_string()),
            Err(e @ (DialError::UpstreamRefused | DialError::UpstreamUnreachable)) => {
                Verdict::UpstreamDown(e.to_string())
            }
            Err(e) => Verdict::Unreachable(e.to_string()),
        };
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_with_one_decimal() {
        assert_eq!(Ms(Duration::from_micros(12_345)).to_string(), "12.3 ms");
        assert_eq!(Ms(Duration::from_micros(999)).to_string(), "0.9 ms");
        assert_eq!(Ms(Duration::from_secs(10)).to_string(), "10000.0 ms");
    }
}
