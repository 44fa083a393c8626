//! `flor agent status` as data: one [`Status`] value, rendered as JSON
//! (serde-json-core, the same serializer the artifacts use) or as text for a
//! person. The JSON carries [`SCHEMA`]; a field is only ever added within a
//! schema, so scripts that read `listeners[].actual` keep working.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// Version of the status JSON. Bump on a change that removes or renames a field.
pub const SCHEMA: u32 = 1;

/// Largest status JSON the agent writes: 16 SOCKS5 listeners with their
/// identities, one QUIC listener, an error and an event fit with room to spare.
pub const MAX_STATUS_JSON: usize = 16 * 1024;

/// `vertex.health` of a vertex that reported its bindings and serves.
pub const HEALTHY: &str = "healthy";

/// The part of the status JSON `flor enroll` reads back to tell that the new
/// scope's traffic flows (any schema: only fields that are never removed).
#[derive(Debug, Deserialize)]
pub struct Brief<'a> {
    /// The supervised vertex.
    #[serde(borrow)]
    pub vertex: BriefVertex<'a>,
}

/// [`VertexHealth`] as [`Brief`] reads it.
#[derive(Debug, Deserialize)]
pub struct BriefVertex<'a> {
    /// [`HEALTHY`], "starting" or "restarting".
    pub health: &'a str,
}

impl Brief<'_> {
    /// Whether the status JSON `json` says the vertex serves; `None`: not a status.
    pub fn healthy(json: &str) -> Option<bool> {
        let (b, _) = serde_json_core::from_str::<Brief<'_>>(json).ok()?;
        Some(b.vertex.health == HEALTHY)
    }
}

/// What `flor agent status` shows.
#[derive(Clone, Debug, Serialize)]
pub struct Status<'a> {
    /// [`SCHEMA`].
    pub schema: u32,
    /// The local scope name.
    pub scope: &'a str,
    /// The scope's install root: says which flor home this agent uses.
    pub install: &'a str,
    /// The rete (trust domain).
    pub rete: &'a str,
    /// This node.
    pub node: &'a str,
    /// Added to every preferred local port.
    pub port_offset: u16,
    /// The live version.
    pub version: u32,
    /// The version waiting to be committed.
    pub pending: Option<PendingStatus>,
    /// The supervised vertex.
    pub vertex: VertexHealth<'a>,
    /// Polls of the config source.
    pub poll: PollStatus<'a>,
    /// The last thing the agent did or decided.
    pub last_event: Option<&'a str>,
    /// Every listener with its preferred and actual address; `None` until the vertex reported.
    pub listeners: Option<Vec<Listener>>,
    /// Every held certificate with its expiry (added in schema 1).
    pub certificates: Vec<CertStatus>,
    /// The management roles this node hosts (added in schema 1; empty on most nodes).
    pub roles: Vec<RoleStatus>,
}

/// A management role the agent runs because this node publishes its services.
#[derive(Clone, Debug, Serialize)]
pub struct RoleStatus {
    /// `config-server` or `metrics-server`.
    pub role: &'static str,
    /// Its listen addresses: its two services' upstreams.
    pub listen: Vec<String>,
    /// Its pid, if it runs.
    pub pid: Option<u32>,
    /// "running", "restarting" or "not in this build".
    pub state: &'static str,
    /// Restarts after an exit since the agent started.
    pub restarts: u32,
}

/// One held certificate and its time left.
#[derive(Clone, Debug, Serialize)]
pub struct CertStatus {
    /// A SPIFFE ID, or "the rete CA".
    pub who: String,
    /// Its `notAfter`; `None` if it could not be read.
    pub not_after_unix: Option<i64>,
    /// Whole days until `notAfter` (negative: expired).
    pub days_left: Option<i64>,
    /// Why it could not be read, or the time left in words.
    pub note: String,
}

/// A version that runs but is not committed.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct PendingStatus {
    /// The staged version.
    pub version: u32,
    /// The version a rollback returns to.
    pub previous: u32,
    /// Whether the vertex runs it healthy (or applied it in place).
    pub healthy: bool,
    /// When it rolls back unless confirmed; `None`: commits once healthy.
    pub deadline_unix: Option<u64>,
}

/// The vertex process as the agent supervises it.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct VertexHealth<'a> {
    /// The vertex name.
    pub name: &'a str,
    /// Its pid, if running.
    pub pid: Option<u32>,
    /// "healthy", "starting" or "restarting".
    pub health: &'a str,
    /// Crashes since the agent started.
    pub restarts: u32,
    /// Versions applied in place, without a restart, since the agent started.
    pub applied_in_place: u32,
}

/// The poller.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct PollStatus<'a> {
    /// Where polls go; `None`: polling is off.
    pub source: Option<&'a str>,
    /// Failed polls in a row.
    pub failures: u32,
    /// Milliseconds until the next poll.
    pub next_in_ms: u64,
    /// When a poll last succeeded.
    pub last_ok_unix: Option<u64>,
    /// Why the last poll or sync failed.
    pub last_error: Option<&'a str>,
}

/// One bound listener.
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum Listener {
    /// The QUIC listener of a serving node.
    Quic(QuicListener),
    /// A SOCKS5 listener of one principal.
    Socks(SocksListener),
}

/// The QUIC listener.
#[derive(Clone, Debug, Serialize)]
pub struct QuicListener {
    /// Always "quic".
    pub kind: &'static str,
    /// The address the artifact asks for.
    pub preferred: Option<String>,
    /// The address bound.
    pub actual: String,
}

/// A SOCKS5 listener.
#[derive(Clone, Debug, Serialize)]
pub struct SocksListener {
    /// Always "socks5".
    pub kind: &'static str,
    /// The identity every flow through it uses.
    pub principal: String,
    /// Preferred port (artifact port + scope offset).
    pub preferred: u16,
    /// Bound port.
    pub actual: u16,
}

/// Why a status could not be rendered as JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooLarge;

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the status is larger than MAX_STATUS_JSON")
    }
}

impl Status<'_> {
    /// One JSON object.
    pub fn to_json(&self) -> Result<String, TooLarge> {
        let mut buf = vec![0u8; MAX_STATUS_JSON];
        let n = serde_json_core::to_slice(self, &mut buf).map_err(|_| TooLarge)?;
        buf.truncate(n);
        String::from_utf8(buf).map_err(|_| TooLarge)
    }

    /// The text a person reads.
    pub fn to_text(&self, now_unix: u64) -> String {
        let mut o = String::new();
        let _ = writeln!(
            o,
            "scope:    {} (rete {}, node {})",
            self.scope, self.rete, self.node
        );
        let _ = writeln!(o, "home:     {}", self.install);
        let _ = writeln!(o, "version:  v{}", self.version);
        match &self.pending {
            Some(p) => {
                let _ = writeln!(
                    o,
                    "pending:  v{} ({}), rolls back to v{}{}",
                    p.version,
                    if p.healthy { "healthy" } else { "starting" },
                    p.previous,
                    p.deadline_unix.map_or_else(
                        || " if it fails to come up".to_string(),
                        |d| format!(" in {} s unless confirmed", d.saturating_sub(now_unix))
                    )
                );
            }
            None => o.push_str("pending:  none\n"),
        }
        let v = &self.vertex;
        let _ = writeln!(
            o,
            "vertex:   {} pid {} {}, {} restarts, {} versions applied in place",
            v.name,
            v.pid.map_or_else(|| "-".to_string(), |p| p.to_string()),
            v.health,
            v.restarts,
            v.applied_in_place
        );
        let _ = writeln!(
            o,
            "poll:     {} failures in a row, next in {} s{}",
            self.poll.failures,
            self.poll.next_in_ms / 1000,
            self.poll
                .last_error
                .map_or_else(String::new, |e| format!("; last error: {e}"))
        );
        if let Some(e) = self.last_event {
            let _ = writeln!(o, "event:    {e}");
        }
        let _ = writeln!(o, "listeners (port offset {}):", self.port_offset);
        match &self.listeners {
            None => o.push_str("  unknown (the vertex has not reported its bindings)\n"),
            Some(ls) => {
                for l in ls {
                    match l {
                        Listener::Quic(q) => {
                            let _ = writeln!(
                                o,
                                "  quic    preferred {} actual {}",
                                q.preferred.as_deref().unwrap_or("-"),
                                q.actual
                            );
                        }
                        Listener::Socks(s) => {
                            let _ = writeln!(
                                o,
                                "  socks5  preferred 127.0.0.1:{} actual 127.0.0.1:{}{}  {}",
                                s.preferred,
                                s.actual,
                                if s.preferred == s.actual {
                                    ""
                                } else {
                                    " (preferred port was taken)"
                                },
                                s.principal
                            );
                        }
                    }
                }
            }
        }
        for r in &self.roles {
            let _ = writeln!(
                o,
                "role:     {} pid {} {}, {} restarts, listening on {}",
                r.role,
                r.pid.map_or_else(|| "-".to_string(), |p| p.to_string()),
                r.state,
                r.restarts,
                r.listen.join(" and ")
            );
        }
        o.push_str("certificates:\n");
        for c in &self.certificates {
            let warn = match c.days_left {
                Some(d) if d < 0 => "  EXPIRED",
                Some(d) if d < 30 => "  RENEW SOON",
                Some(_) => "",
                None => "  UNREADABLE",
            };
            let _ = writeln!(o, "  {}: {}{warn}", c.who, c.note);
        }
        o.truncate(o.trim_end().len());
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Status<'static> {
        Status {
            schema: SCHEMA,
            scope: "demo.flor",
            install: "/etc/flor/retes/demo.flor",
            rete: "demo.flor",
            node: "laptop",
            port_offset: 0,
            version: 3,
            pending: Some(PendingStatus {
                version: 4,
                previous: 3,
                healthy: true,
                deadline_unix: Some(1_000_060),
            }),
            vertex: VertexHealth {
                name: "flor",
                pid: Some(42),
                health: "healthy",
                restarts: 1,
                applied_in_place: 2,
            },
            poll: PollStatus {
                source: Some("http://127.0.0.1:7080/"),
                failures: 0,
                next_in_ms: 30_000,
                last_ok_unix: None,
                last_error: Some("config source said \"no\"\n"),
            },
            last_event: None,
            listeners: Some(vec![
                Listener::Quic(QuicListener {
                    kind: "quic",
                    preferred: Some("127.0.0.1:7443".into()),
                    actual: "127.0.0.1:7443".into(),
                }),
                Listener::Socks(SocksListener {
                    kind: "socks5",
                    principal: "spiffe://demo.flor/user/bob".into(),
                    preferred: 1080,
                    actual: 40_000,
                }),
            ]),
            certificates: vec![CertStatus {
                who: "spiffe://demo.flor/user/bob".into(),
                not_after_unix: Some(1_000_000 + 5 * 86_400),
                days_left: Some(5),
                note: "5 days left (until 1970-01-17T01:46:40Z)".into(),
            }],
            roles: vec![RoleStatus {
                role: "config-server",
                listen: vec!["127.0.0.1:7080".into(), "127.0.0.1:7081".into()],
                pid: Some(43),
                state: "running",
                restarts: 0,
            }],
        }
    }

    #[test]
    fn json_is_one_object_with_the_schema_and_escaped_strings() {
        let j = sample().to_json().unwrap();
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["schema"], SCHEMA);
        assert_eq!(v["pending"]["version"], 4);
        assert_eq!(v["vertex"]["applied_in_place"], 2);
        assert_eq!(v["poll"]["last_error"], "config source said \"no\"\n");
        assert_eq!(v["poll"]["last_ok_unix"], serde_json::Value::Null);
        assert_eq!(v["listeners"][0]["kind"], "quic");
        assert_eq!(v["listeners"][0]["preferred"], "127.0.0.1:7443");
        assert_eq!(
            v["listeners"][1]["principal"],
            "spiffe://demo.flor/user/bob"
        );
        assert_eq!(v["listeners"][1]["actual"], 40_000);
        assert_eq!(v["certificates"][0]["days_left"], 5);
        assert_eq!(v["roles"][0]["listen"][1], "127.0.0.1:7081");
        assert_eq!(v["roles"][0]["pid"], 43);
        let mut s = sample();
        s.listeners = None;
        s.pending = None;
        let v: serde_json::Value = serde_json::from_str(&s.to_json().unwrap()).unwrap();
        assert!(v["listeners"].is_null() && v["pending"].is_null());
    }

    #[test]
    fn enroll_reads_the_vertex_health_back_from_the_json() {
        assert_eq!(Brief::healthy(&sample().to_json().unwrap()), Some(true));
        let mut s = sample();
        s.vertex.health = "starting";
        assert_eq!(Brief::healthy(&s.to_json().unwrap()), Some(false));
        assert_eq!(Brief::healthy("no rete"), None);
    }

    #[test]
    fn text_says_what_a_person_needs() {
        let t = sample().to_text(1_000_000);
        assert!(t.contains("home:     /etc/flor/retes/demo.flor"));
        assert!(t.contains("pending:  v4 (healthy), rolls back to v3 in 60 s unless confirmed"));
        assert!(
            t.contains("vertex:   flor pid 42 healthy, 1 restarts, 2 versions applied in place")
        );
        assert!(t.contains(
            "preferred 127.0.0.1:1080 actual 127.0.0.1:40000 (preferred port was taken)"
        ));
        assert!(t.contains(
            "  spiffe://demo.flor/user/bob: 5 days left (until 1970-01-17T01:46:40Z)  RENEW SOON"
        ));
        assert!(t.contains(
            "role:     config-server pid 43 running, 0 restarts, listening on 127.0.0.1:7080 and 127.0.0.1:7081"
        ));
        let mut s = sample();
        s.listeners = None;
        assert!(s
            .to_text(0)
            .contains("unknown (the vertex has not reported its bindings)"));
    }
}
