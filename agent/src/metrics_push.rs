//! Pushing this node's counters to the rete's `metrics-push` service.
//!
//! ```text
//! every agent.json metrics.interval_s:
//!   agent --"counters"--> vertex pipe --"counters <lines;...>"--> agent
//!   body = vertex lines + agent counters + gauges (artifact version, certificate expiry)
//!   POST /push/<node> over Florete as node/<name> --> mgmt01 vertex (ACL: role node)
//!        --> flor metrics-server --push-listen (keeps the last snapshot per node)
//! ```
//!
//! A vertex that does not answer within [`VERTEX_ANSWER_WAIT`] (stopped,
//! restarting) only leaves its lines out; the agent's own still go, with
//! `flor_vertex_up 0`. A failed push is dropped, not retried: the next one
//! carries the newer totals anyway.

use std::fmt;
use std::time::{Duration, Instant};

use flor_vertex::artifact::MetricsPush;
use flor_vertex::counters::{render_agent, series};
use flor_vertex::http;
use flor_vertex::identity::Name;
use smol::io::AsyncWriteExt;

use crate::fetch::{with_timeout, FetchError, Florete};
use crate::scope::{Scope, ScopeInfo};
use crate::sync::SourceError;
use crate::vertex_cmd::COUNTERS_SEP;

/// How long the agent waits for the vertex's counters before pushing without them.
pub const VERTEX_ANSWER_WAIT: Duration = Duration::from_secs(2);
/// Largest answer the collector sends back (a short status line).
const MAX_ANSWER: usize = 1024;

/// Why a push did not arrive.
#[derive(Debug)]
#[non_exhaustive]
pub enum PushError {
    /// The collector's node did not answer, or the vertex refused the flow
    /// (check that role `node` reaches `metrics-push`).
    Unreachable(String),
    /// The collector answered with another status than 200.
    Status(u16, String),
    /// The request could not be written.
    Http(http::HttpError),
}

impl fmt::Display for PushError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PushError::Unreachable(e) => write!(f, "metrics-push unreachable: {e}"),
            PushError::Status(s, why) => write!(f, "metrics-push answered HTTP {s}: {why}"),
            PushError::Http(e) => write!(f, "metrics push request: {e}"),
        }
    }
}

impl std::error::Error for PushError {}

/// When and where this agent pushes.
pub struct Pusher {
    client: Florete,
    interval: Duration,
    next: Instant,
    /// Since when the agent waits for the vertex's counters.
    waiting: Option<Instant>,
    /// Whether the last push failed (to log a change once, not every interval).
    failing: bool,
}

impl Pusher {
    /// A pusher for agent.json's `metrics` section; the first push is one interval away.
    pub fn new(scope: &Scope, info: &ScopeInfo, m: &MetricsPush) -> Result<Pusher, SourceError> {
        let client = crate::sync::florete_client(scope, info, &m.service, m.addr.0)?;
        let interval = Duration::from_secs(u64::from(m.interval_s.max(1)));
        Ok(Pusher {
            client,
            interval,
            next: Instant::now() + interval,
            waiting: None,
            failing: false,
        })
    }

    /// Whether a push is due now (and the vertex should be asked for its counters).
    pub fn due(&mut self, now: Instant) -> bool {
        if self.waiting.is_none() && now >= self.next {
            self.waiting = Some(now);
            self.next = now + self.interval;
            return true;
        }
        false
    }

    /// Whether the vertex was asked and did not answer in time.
    pub fn gave_up_waiting(&self, now: Instant) -> bool {
        self.waiting
            .is_some_and(|t| now.duration_since(t) >= VERTEX_ANSWER_WAIT)
    }

    /// Whether an answer from the vertex is awaited.
    pub fn waiting(&self) -> bool {
        self.waiting.is_some()
    }

    /// Ends the wait; the caller pushes now.
    pub fn take(&mut self) -> (Florete, u32) {
        self.waiting = None;
        (self.client.clone(), self.interval.as_secs() as u32)
    }

    /// Records a push's outcome; returns whether to log it (a change).
    pub fn record(&mut self, ok: bool) -> bool {
        let changed = self.failing == ok;
        self.failing = !ok;
        changed
    }
}

/// What goes into one push besides the vertex's lines.
pub struct Gauges {
    /// The live artifact version.
    pub version: u32,
    /// Seconds between pushes (the collector marks a snapshot stale after a few).
    pub interval_s: u32,
    /// Whether the vertex answered (it runs and serves).
    pub vertex_up: bool,
    /// (certificate, seconds until it expires): the CA as `ca`, principals by SPIFFE ID.
    pub certs: Vec<(String, i64)>,
    /// (role, whether its process runs) for each management role this node hosts.
    pub roles: Vec<(&'static str, bool)>,
}

/// The push body: exposition lines, one per line, without `node` (the collector adds it).
pub fn body(vertex_answer: Option<&str>, g: &Gauges) -> String {
    let mut out = String::new();
    if let Some(v) = vertex_answer {
        for line in v.split(COUNTERS_SEP).filter(|l| !l.is_empty()) {
            out.push_str(line);
            out.push('\n');
        }
    }
    // Writing into a String cannot fail.
    let _ = render_agent(&mut out, '\n');
    let _ = series(&mut out, "flor_artifact_version", &[], g.version, '\n');
    let _ = series(&mut out, "flor_vertex_up", &[], u8::from(g.vertex_up), '\n');
    let _ = series(
        &mut out,
        "flor_push_interval_seconds",
        &[],
        g.interval_s,
        '\n',
    );
    for (role, up) in &g.roles {
        let _ = series(
            &mut out,
            "flor_role_up",
            &[("role", *role)],
            u8::from(*up),
            '\n',
        );
    }
    for (cert, left) in &g.certs {
        let labels = [("cert", cert.as_str())];
        let _ = series(
            &mut out,
            "flor_certificate_expiry_seconds",
            &labels,
            left,
            '\n',
        );
    }
    out
}

/// Seconds until each held certificate expires, at `now` (Unix), labelled for
/// the gauge: the CA as `ca`, the others by SPIFFE ID; unreadable ones are skipped
/// (`flor agent status` and `flor doctor` name them).
pub fn cert_expiry(held: &[crate::certs::Held], now: i64) -> Vec<(String, i64)> {
    held.iter()
        .filter_map(|h| {
            let left = h.validity.as_ref().ok()?.seconds_left(now);
            let label = if h.who == crate::certs::CA_NAME {
                "ca".to_owned()
            } else {
                h.who.clone()
            };
            Some((label, left))
        })
        .collect()
}

/// Sends one snapshot: `POST /push/<node>` over Florete.
pub async fn push(client: &Florete, node: &Name, body: &str) -> Result<(), PushError> {
    let unreachable = |e: &dyn fmt::Display| PushError::Unreachable(e.to_string());
    let r = with_timeout(async {
        let mut flow = client
            .dialer
            .connect(&client.caller, &client.target, client.addr)
            .await
            .map_err(|e| FetchError::Unreachable(e.to_string()))?;
        let mut head = [0u8; 512];
        let path = format!("/push/{node}");
        let host = client.target.id().name().as_str();
        let n = http::write_request("POST", host, &path, Some(body.len() as u64), &mut head)
            .map_err(FetchError::Http)?;
        let io = |e: std::io::Error| FetchError::Unreachable(e.to_string());
        flow.write_all(&head[..n]).await.map_err(io)?;
        flow.write_all(body.as_bytes()).await.map_err(io)?;
        flow.flush().await.map_err(io)?;
        flor_vertex::net::read_response(&mut flow, MAX_ANSWER)
            .await
            .map_err(|e| FetchError::Unreachable(e.to_string()))
    })
    .await;
    match r {
        Ok((200, _)) => Ok(()),
        Ok((s, why)) => Err(PushError::Status(
            s,
            String::from_utf8_lossy(&why).trim_end().to_string(),
        )),
        Err(FetchError::Http(e)) => Err(PushError::Http(e)),
        Err(e) => Err(unreachable(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_holds_vertex_lines_agent_counters_and_gauges() {
        let g = Gauges {
            version: 7,
            interval_s: 30,
            vertex_up: true,
            certs: vec![("ca".into(), 1000), ("spiffe://t.flor/node/a".into(), -5)],
            roles: vec![("config-server", true), ("metrics-server", false)],
        };
        let b = body(
            Some("flor_flows_opened_total{side=\"serve\"} 2;flor_flows_active{side=\"serve\"} 0;"),
            &g,
        );
        let lines: Vec<&str> = b.lines().collect();
        assert_eq!(lines[0], "flor_flows_opened_total{side=\"serve\"} 2");
        assert_eq!(lines[1], "flor_flows_active{side=\"serve\"} 0");
        assert!(lines.contains(&"flor_agent_commits_total 0"));
        assert!(lines.contains(&"flor_artifact_version 7"));
        assert!(lines.contains(&"flor_vertex_up 1"));
        assert!(lines.contains(&"flor_role_up{role=\"config-server\"} 1"));
        assert!(lines.contains(&"flor_role_up{role=\"metrics-server\"} 0"));
        assert!(lines.contains(&"flor_certificate_expiry_seconds{cert=\"ca\"} 1000"));
        assert!(
            lines.contains(&"flor_certificate_expiry_seconds{cert=\"spiffe://t.flor/node/a\"} -5")
        );
        // Every line parses as the collector reads it.
        for l in lines {
            assert!(flor_vertex::counters::parse_series(l).is_ok(), "{l}");
        }
    }
}
