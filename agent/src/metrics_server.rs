//! `flor metrics-server`: keeps the last counters snapshot each node pushed
//! and serves them all in the Prometheus text exposition format.
//!
//! ```text
//! push listener  POST /push/<node>  (body: counters::series lines)  -> 200 | 4xx + reason
//! read listener  GET  /metrics (or /) -> text/plain; version=0.0.4, every series with node="<node>"
//! ```
//!
//! Like the config-server, both listeners are plain HTTP on loopback, and the
//! management node's vertex publishes them as the Florete services
//! `metrics-push` (granted to role `node`) and `metrics` (granted to role
//! `operator`), so who may push or read is decided by the rete's ACL before
//! a byte arrives here. A Prometheus on the management node scrapes the read
//! address directly.
//!
//! The node is the one the vertex proves: the collector asks the vertex's
//! identity side-channel who is on each push connection ([`crate::caller_id`])
//! and labels the snapshot with that node's name. A push whose path names
//! another node, or that comes from a principal that is no node, is refused
//! (`403`, logged with the caller's SPIFFE ID). A push from a process on this
//! host (not through the rete) is labelled by its path, as before.
//!
//! Memory is bounded: at most [`MAX_NODES`] snapshots of at most
//! [`MAX_PUSH_BYTES`] each, the last per node; a new node beyond the cap
//! replaces the snapshot received longest ago. A snapshot older than
//! [`STALE_INTERVALS`] of its node's push interval is still served, marked
//! `flor_snapshot_stale{node} 1`, so a silent node shows instead of vanishing.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use flor_vertex::counters::parse_series;
use flor_vertex::http::{self, Parsed};
use flor_vertex::identity::Name;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::{TcpListener, TcpStream};

use crate::caller_id::{self, Authority, Caller};
use crate::config_server::{respond, ListenError};
use crate::scope::{Scope, ScopeError};

/// Nodes whose last snapshot is kept (the spec's largest rete has 64 nodes; room for growth).
pub const MAX_NODES: usize = 1024;
/// Largest push body: a vertex with every series and 16 held certificates
/// renders under 8 KiB; twice that leaves room for new counters.
pub const MAX_PUSH_BYTES: u64 = 16 * 1024;
/// Series in one push.
pub const MAX_SERIES_PER_PUSH: usize = 256;
/// A snapshot is stale after this many of its node's push intervals without a new one.
pub const STALE_INTERVALS: u64 = 3;
/// The push interval assumed when a snapshot does not say (agent.json's default).
const DEFAULT_INTERVAL_S: u64 = 30;
/// Connections served at once; more wait in the kernel's accept queue.
const MAX_CONNECTIONS: usize = 32;
/// Time a client has to send its request (head and body).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One node's last push: its lines, checked, and when it arrived.
struct Snapshot {
    received: Instant,
    interval_s: u64,
    /// `(name, labels, value)`, as parsed.
    series: Vec<(String, String, String)>,
}

/// HELP and TYPE of the series flor pushes; others are served as `untyped`.
const FAMILIES: &[(&str, &str, &str)] = &[
    ("flor_flows_opened_total", "counter", "Flows admitted and connected, by side (serve: published services; dial: SOCKS5 clients)."),
    ("flor_flows_refused_total", "counter", "Flows refused, by side and reason (acl, unknown_service, upstream, overloaded, unreachable, handshake, identity, other)."),
    ("flor_flow_bytes_total", "counter", "Bytes forwarded by flows, counted as each is handed on, by side and direction (sent into / received from Florete)."),
    ("flor_flows_active", "gauge", "Flows being forwarded now, by side."),
    ("flor_handshakes_failed_total", "counter", "QUIC/mTLS handshakes that failed, by side and TLS alert."),
    ("flor_caller_lookups_total", "counter", "Identity side-channel questions answered, by answer (known, unknown)."),
    ("flor_caller_table_full_total", "counter", "Served flows the identity side-channel could not record (table at MAX_CALLER_ENTRIES)."),
    ("flor_agent_syncs_total", "counter", "Polls of the config source that answered."),
    ("flor_agent_poll_failures_total", "counter", "Polls of the config source that failed."),
    ("flor_agent_commits_total", "counter", "Artifact versions committed."),
    ("flor_agent_rollbacks_total", "counter", "Artifact versions rolled back."),
    ("flor_agent_vertex_restarts_total", "counter", "Vertex processes the agent started after its first."),
    ("flor_artifact_version", "gauge", "The live artifact version."),
    ("flor_vertex_up", "gauge", "1 when the vertex answered the agent for this snapshot."),
    ("flor_role_up", "gauge", "1 when the management role's process runs on the node that hosts it."),
    ("flor_push_interval_seconds", "gauge", "Seconds between the node's pushes."),
    ("flor_certificate_expiry_seconds", "gauge", "Seconds until a held certificate (or the CA) expires; negative once expired."),
    ("flor_snapshot_age_seconds", "gauge", "Seconds since the node's last push arrived."),
    ("flor_snapshot_stale", "gauge", "1 when the node's last push is older than 3 push intervals."),
];

struct Collector {
    nodes: BTreeMap<Name, Snapshot>,
}

impl Collector {
    /// Stores a push, or says why not (status, reason).
    fn store(&mut self, node: Name, body: &[u8], now: Instant) -> Result<usize, (u16, String)> {
        let text = std::str::from_utf8(body).map_err(|_| (400, "body is not UTF-8\n".into()))?;
        let mut series = Vec::new();
        let mut interval_s = DEFAULT_INTERVAL_S;
        for (i, line) in text.lines().filter(|l| !l.is_empty()).enumerate() {
            if series.len() >= MAX_SERIES_PER_PUSH {
                return Err((413, format!("more than {MAX_SERIES_PER_PUSH} series\n")));
            }
            let s = parse_series(line).map_err(|e| (400, format!("line {}: {e}\n", i + 1)))?;
            if s.name == "flor_push_interval_seconds" {
                interval_s = s.value.parse::<u64>().unwrap_or(DEFAULT_INTERVAL_S).max(1);
            }
            series.push((
                s.name.to_string(),
                s.labels.to_string(),
                s.value.to_string(),
            ));
        }
        if !self.nodes.contains_key(&node) && self.nodes.len() >= MAX_NODES {
            // The cap holds: forget the node heard from longest ago.
            let oldest = self
                .nodes
                .iter()
                .min_by_key(|(_, s)| s.received)
                .map(|(n, _)| n.clone());
            if let Some(o) = oldest {
                log::warn!("at MAX_NODES ({MAX_NODES}): dropping the snapshot of {o}");
                self.nodes.remove(&o);
            }
        }
        let n = series.len();
        self.nodes.insert(
            node,
            Snapshot {
                received: now,
                interval_s,
                series,
            },
        );
        Ok(n)
    }

    /// Every snapshot as one exposition, grouped by family as the format requires.
    fn render(&self, now: Instant) -> String {
        let mut families: BTreeMap<&str, Vec<(&Name, &str, &str)>> = BTreeMap::new();
        for (node, snap) in &self.nodes {
            for (name, labels, value) in &snap.series {
                families
                    .entry(name)
                    .or_default()
                    .push((node, labels, value));
            }
        }
        let mut ages = Vec::new();
        for (node, snap) in &self.nodes {
            let age = now.duration_since(snap.received).as_secs();
            let stale = age > STALE_INTERVALS * snap.interval_s;
            ages.push((node, age, stale));
        }
        let mut out = String::new();
        let head = |out: &mut String, name: &str| {
            let (ty, help) = FAMILIES
                .iter()
                .find(|f| f.0 == name)
                .map_or(("untyped", ""), |f| (f.1, f.2));
            if !help.is_empty() {
                let _ = writeln!(out, "# HELP {name} {help}");
            }
            let _ = writeln!(out, "# TYPE {name} {ty}");
        };
        for (name, rows) in &families {
            head(&mut out, name);
            for (node, labels, value) in rows {
                let sep = if labels.is_empty() { "" } else { "," };
                let _ = writeln!(out, "{name}{{node=\"{node}\"{sep}{labels}}} {value}");
            }
        }
        if !ages.is_empty() {
            head(&mut out, "flor_snapshot_age_seconds");
            for (node, age, _) in &ages {
                let _ = writeln!(out, "flor_snapshot_age_seconds{{node=\"{node}\"}} {age}");
            }
            head(&mut out, "flor_snapshot_stale");
            for (node, _, stale) in &ages {
                let _ = writeln!(
                    out,
                    "flor_snapshot_stale{{node=\"{node}\"}} {}",
                    u8::from(*stale)
                );
            }
        }
        out
    }
}

/// The node a push is stored under: the proven caller's own node, or for a
/// local process the node its path names; `Err` (403 reason) otherwise.
fn push_node(caller: &Caller, claimed: Name) -> Result<Name, String> {
    match caller {
        Caller::Local => Ok(claimed),
        Caller::Proven(id) => match caller_id::node_of(id) {
            Some(n) if *n == claimed => Ok(claimed),
            Some(n) => Err(format!(
                "{id} may push only as node {n}, not as {claimed}\n"
            )),
            None => Err(format!("{id} is not a node; only nodes push counters\n")),
        },
    }
}

/// Who is on a push connection (`Local` when this node runs no vertex).
async fn push_caller(
    scope: &Scope,
    listen: SocketAddr,
    stream: &TcpStream,
) -> Result<Caller, String> {
    let Some(cfg) = caller_id::live_vertex(scope).map_err(|e| format!("{e}\n"))? else {
        return Ok(Caller::Local);
    };
    let auth = Authority::new(&cfg, listen, None);
    let (peer, local) = match (stream.peer_addr(), stream.local_addr()) {
        (Ok(p), Ok(l)) => (p, l),
        (Err(e), _) | (_, Err(e)) => return Err(format!("connection addresses: {e}\n")),
    };
    caller_id::prove(scope, auth.service.as_ref(), peer, local)
        .await
        .map_err(|e| format!("{e}\n"))
}

/// Why `flor metrics-server` could not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum MetricsServerError {
    /// The scope of the rete whose nodes push here could not be read.
    Scope(ScopeError),
    /// A listener could not be bound.
    Listen(ListenError),
    /// A bound listener has no local address.
    LocalAddr(io::Error),
}

impl fmt::Display for MetricsServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetricsServerError::Scope(e) => write!(f, "{e}"),
            MetricsServerError::Listen(e) => write!(f, "{e}"),
            MetricsServerError::LocalAddr(e) => {
                write!(f, "reading the address a listener was bound to: {e}")
            }
        }
    }
}

impl std::error::Error for MetricsServerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            MetricsServerError::Scope(e) => Some(e),
            MetricsServerError::Listen(e) => Some(e),
            MetricsServerError::LocalAddr(e) => Some(e),
        }
    }
}

impl From<ListenError> for MetricsServerError {
    fn from(e: ListenError) -> Self {
        MetricsServerError::Listen(e)
    }
}

/// Runs the collector until killed.
pub fn run(scope: Scope, push: SocketAddr, read: SocketAddr) -> Result<(), MetricsServerError> {
    let info = scope.info().map_err(MetricsServerError::Scope)?;
    smol::block_on(async move {
        let push_l = crate::config_server::listen(push).await?;
        let read_l = crate::config_server::listen(read).await?;
        log::info!(
            "metrics-server for rete {} (push on {}, read on {})",
            info.rete,
            push_l.local_addr().map_err(MetricsServerError::LocalAddr)?,
            read_l.local_addr().map_err(MetricsServerError::LocalAddr)?
        );
        let collector = Rc::new(std::cell::RefCell::new(Collector {
            nodes: BTreeMap::new(),
        }));
        let slots = std::sync::Arc::new(smol::lock::Semaphore::new(MAX_CONNECTIONS));
        let ex = Rc::new(smol::LocalExecutor::new());
        let ctx = Rc::new((scope, push));
        let a = accept_loop(
            ex.clone(),
            ctx.clone(),
            collector.clone(),
            slots.clone(),
            push_l,
            true,
        );
        let b = accept_loop(ex.clone(), ctx, collector, slots, read_l, false);
        ex.run(smol::future::zip(a, b)).await;
        Ok(())
    })
}

async fn accept_loop(
    ex: Rc<smol::LocalExecutor<'static>>,
    ctx: Rc<(Scope, SocketAddr)>,
    collector: Rc<std::cell::RefCell<Collector>>,
    slots: std::sync::Arc<smol::lock::Semaphore>,
    l: TcpListener,
    push: bool,
) {
    loop {
        let (stream, _) = match l.accept().await {
            Ok(s) => s,
            Err(e) => {
                log::warn!("accept failed: {e}");
                smol::Timer::after(Duration::from_millis(100)).await;
                continue;
            }
        };
        let permit = slots.acquire_arc().await;
        let collector = collector.clone();
        let ctx = ctx.clone();
        ex.spawn(async move {
            let served = smol::future::or(serve(&ctx, &collector, stream, push), async {
                smol::Timer::after(REQUEST_TIMEOUT).await;
                Err(io::Error::new(io::ErrorKind::TimedOut, "request"))
            });
            if let Err(e) = served.await {
                log::debug!("connection ended: {e}");
            }
            drop(permit);
        })
        .detach();
    }
}

async fn serve(
    ctx: &(Scope, SocketAddr),
    collector: &std::cell::RefCell<Collector>,
    mut stream: TcpStream,
    push: bool,
) -> io::Result<()> {
    let mut buf = vec![0u8; http::MAX_HEAD];
    let mut filled = 0;
    let (method, path, len, head_len, expect_continue) = loop {
        let n = stream.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed"));
        }
        filled += n;
        match http::parse_request(&buf[..filled]) {
            Ok(Parsed::Partial) => continue,
            Ok(Parsed::Complete(r)) => {
                break (
                    r.method.to_string(),
                    r.path.to_string(),
                    r.content_length,
                    r.head_len,
                    r.expect_continue,
                )
            }
            Err(e) => {
                return respond(&mut stream, 400, "text/plain", e.to_string().as_bytes()).await
            }
        }
    };
    let text = "text/plain";
    if !push {
        if method != "GET" || !(path == "/metrics" || path == "/") {
            let msg = b"this listener serves only GET /metrics\n";
            return respond(&mut stream, 405, text, msg).await;
        }
        let body = collector.borrow().render(Instant::now());
        return respond(
            &mut stream,
            200,
            "text/plain; version=0.0.4",
            body.as_bytes(),
        )
        .await;
    }
    let node = path.strip_prefix("/push/").and_then(|n| Name::new(n).ok());
    let Some(node) = node.filter(|_| method == "POST") else {
        let msg = b"this listener accepts only POST /push/<node>\n";
        return respond(&mut stream, 405, text, msg).await;
    };
    let node = match push_caller(&ctx.0, ctx.1, &stream).await {
        Ok(caller) => match push_node(&caller, node) {
            Ok(n) => n,
            Err(msg) => {
                log::warn!("refused push (403): {}", msg.trim_end());
                return respond(&mut stream, 403, text, msg.as_bytes()).await;
            }
        },
        Err(msg) => {
            log::warn!("refused push (503): {}", msg.trim_end());
            return respond(&mut stream, 503, text, msg.as_bytes()).await;
        }
    };
    if len > MAX_PUSH_BYTES {
        let msg = format!("push body is over {MAX_PUSH_BYTES} bytes\n");
        return respond(&mut stream, 413, text, msg.as_bytes()).await;
    }
    if expect_continue {
        stream.write_all(http::CONTINUE).await?;
    }
    // Bounded by MAX_PUSH_BYTES above.
    let mut body = buf[head_len..filled].to_vec();
    body.truncate(len as usize);
    let mut rest = vec![0u8; len as usize - body.len()];
    stream.read_exact(&mut rest).await?;
    body.extend_from_slice(&rest);
    let stored = collector
        .borrow_mut()
        .store(node.clone(), &body, Instant::now());
    match stored {
        Ok(n) => {
            log::debug!("stored {n} series from {node}");
            respond(
                &mut stream,
                200,
                text,
                format!("stored {n} series\n").as_bytes(),
            )
            .await
        }
        Err((status, msg)) => {
            log::warn!("refused push for {node} ({status}): {}", msg.trim_end());
            respond(&mut stream, status, text, msg.as_bytes()).await
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test fixtures
    use super::*;

    fn name(n: &str) -> Name {
        Name::new(n).unwrap()
    }

    #[test]
    fn snapshots_render_by_family_with_the_node_label_and_go_stale() {
        let mut c = Collector {
            nodes: BTreeMap::new(),
        };
        let t0 = Instant::now();
        let a = "flor_flows_opened_total{side=\"serve\"} 2\nflor_artifact_version 3\nflor_push_interval_seconds 10\n";
        let b = "flor_flows_opened_total{side=\"serve\"} 5\nflor_artifact_version 3\n";
        assert_eq!(c.store(name("alpha"), a.as_bytes(), t0), Ok(3));
        assert_eq!(c.store(name("beta"), b.as_bytes(), t0), Ok(2));
        let out = c.render(t0 + Duration::from_secs(31));
        let opened = out.find("# TYPE flor_flows_opened_total counter").unwrap();
        assert!(out[opened..].starts_with(
            "# TYPE flor_flows_opened_total counter\nflor_flows_opened_total{node=\"alpha\",side=\"serve\"} 2\nflor_flows_opened_total{node=\"beta\",side=\"serve\"} 5\n"
        ), "{out}");
        assert!(out.contains("flor_artifact_version{node=\"alpha\"} 3\n"));
        // alpha pushes every 10 s: 31 s is stale; beta's default 30 s is not.
        assert!(
            out.contains("flor_snapshot_stale{node=\"alpha\"} 1\n"),
            "{out}"
        );
        assert!(out.contains("flor_snapshot_stale{node=\"beta\"} 0\n"));
        assert!(out.contains("flor_snapshot_age_seconds{node=\"beta\"} 31\n"));
        // A new push replaces the node's snapshot whole.
        c.store(name("alpha"), b"flor_artifact_version 4\n", t0)
            .unwrap();
        let out = c.render(t0);
        assert!(!out.contains("flor_flows_opened_total{node=\"alpha\""));
        assert!(out.contains("flor_artifact_version{node=\"alpha\"} 4\n"));
    }

    #[test]
    fn pushes_are_labelled_by_the_proven_node() {
        let id = |s| Caller::Proven(flor_vertex::identity::SpiffeId::parse(s).unwrap());
        let alpha = id("spiffe://demo.flor/node/alpha");
        assert_eq!(push_node(&alpha, name("alpha")), Ok(name("alpha")));
        let e = push_node(&alpha, name("beta")).unwrap_err();
        assert_eq!(
            e,
            "spiffe://demo.flor/node/alpha may push only as node alpha, not as beta\n"
        );
        assert!(push_node(&id("spiffe://demo.flor/user/bob"), name("bob")).is_err());
        assert_eq!(push_node(&Caller::Local, name("beta")), Ok(name("beta")));
    }

    #[test]
    fn bad_pushes_are_refused_and_memory_stays_bounded() {
        let mut c = Collector {
            nodes: BTreeMap::new(),
        };
        let t0 = Instant::now();
        assert_eq!(c.store(name("a"), b"up 1\n", t0).unwrap_err().0, 400);
        assert_eq!(
            c.store(name("a"), b"flor_x{node=\"b\"} 1\n", t0)
                .unwrap_err()
                .0,
            400
        );
        assert_eq!(c.store(name("a"), &[0xff, 0xfe], t0).unwrap_err().0, 400);
        let many = "flor_x 1\n".repeat(MAX_SERIES_PER_PUSH + 1);
        assert_eq!(c.store(name("a"), many.as_bytes(), t0).unwrap_err().0, 413);
        assert!(c.nodes.is_empty());
        for i in 0..MAX_NODES + 5 {
            let t = t0 + Duration::from_millis(i as u64);
            c.store(name(&format!("n{i}")), b"flor_x 1\n", t).unwrap();
        }
        assert_eq!(c.nodes.len(), MAX_NODES);
        // The first ones heard from were dropped.
        assert!(!c.nodes.contains_key(&name("n0")));
        assert!(c.nodes.contains_key(&name(&format!("n{}", MAX_NODES + 4))));
    }
}
