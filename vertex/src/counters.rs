//! Process-wide counters of the vertex and the agent: fixed statics, one
//! atomic add per event, no allocation, no lock on 64-bit targets.
//!
//! ```text
//! serve.rs / socks.rs --SERVE.refused(..), DIAL.opened(), ...--> statics here
//! flor vertex run  --"counters" on its agent pipe--> render(';') -> one line
//! flor agent run   --AGENT.commits.inc(), ...--> statics here (its own process)
//!                  vertex line + render_agent + gauges -> POST /push -> metrics-push
//! ```
//!
//! The names, labels and types of every series are here, in one table per
//! group, rendered as Prometheus text exposition lines (`name{labels} value`);
//! the collector (`flor metrics-server`, management node only) adds the
//! `node` label, `# HELP` and `# TYPE`, so routers carry no help text.
//!
//! Counters only grow; a restarted process starts again at zero, which
//! Prometheus reads as a counter reset. Bytes are counted as they are
//! handed on (`net::pump`: one add per read passed to QUIC, per `writev` to
//! TCP; the SOCKS5 side adds the early bytes sent with a flow's start), so a
//! long flow shows in a rate while it runs and a flow that ends in an error
//! (reset, idle timeout) keeps what it moved.

use core::fmt::{self, Write};

use crate::wire::Verdict;

/// A monotonically growing 64-bit count.
///
/// 32-bit MIPS has no 64-bit atomics (`target_has_atomic = "64"` is off), and a
/// 32-bit count of bytes wraps after 4 GiB, which Prometheus would read as a
/// reset; there a mutex guards the value (an uncontended futex: no syscall).
#[derive(Debug, Default)]
pub struct Counter {
    #[cfg(target_has_atomic = "64")]
    v: core::sync::atomic::AtomicU64,
    #[cfg(not(target_has_atomic = "64"))]
    v: std::sync::Mutex<u64>,
}

impl Counter {
    /// A counter at zero (for statics).
    pub const fn new() -> Counter {
        Counter {
            #[cfg(target_has_atomic = "64")]
            v: core::sync::atomic::AtomicU64::new(0),
            #[cfg(not(target_has_atomic = "64"))]
            v: std::sync::Mutex::new(0),
        }
    }

    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        #[cfg(target_has_atomic = "64")]
        self.v.fetch_add(n, core::sync::atomic::Ordering::Relaxed);
        #[cfg(not(target_has_atomic = "64"))]
        if let Ok(mut v) = self.v.lock() {
            *v = v.wrapping_add(n);
        }
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        #[cfg(target_has_atomic = "64")]
        return self.v.load(core::sync::atomic::Ordering::Relaxed);
        #[cfg(not(target_has_atomic = "64"))]
        self.v.lock().map_or(0, |v| *v)
    }
}

/// Why a flow was not opened (the `reason` label of `flor_flows_refused_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Refusal {
    /// No role of the caller grants the service (the ACL said no).
    Acl,
    /// The service is not published there, or this node has no route to it.
    UnknownService,
    /// The service's upstream refused the TCP connection or did not answer.
    Upstream,
    /// A connection or flow cap was reached.
    Overloaded,
    /// The hosting node did not answer (dialling side).
    Unreachable,
    /// The mTLS handshake failed (dialling side; the server counts [`SERVE_HANDSHAKES`]).
    Handshake,
    /// The caller's certificate names no principal of this rete (serving side).
    Identity,
    /// The caller's certificate is not one its ACL row pins (serving side;
    /// dialling side: the server said so).
    NotPinned,
    /// A broken preamble, a local TLS setup error, or anything else.
    Other,
}

impl Refusal {
    const ALL: [Refusal; 9] = [
        Refusal::Acl,
        Refusal::UnknownService,
        Refusal::Upstream,
        Refusal::Overloaded,
        Refusal::Unreachable,
        Refusal::Handshake,
        Refusal::Identity,
        Refusal::NotPinned,
        Refusal::Other,
    ];

    /// The label value.
    pub const fn label(self) -> &'static str {
        match self {
            Refusal::Acl => "acl",
            Refusal::UnknownService => "unknown_service",
            Refusal::Upstream => "upstream",
            Refusal::Overloaded => "overloaded",
            Refusal::Unreachable => "unreachable",
            Refusal::Handshake => "handshake",
            Refusal::Identity => "identity",
            Refusal::NotPinned => "not_pinned",
            Refusal::Other => "other",
        }
    }
}

impl From<Verdict> for Refusal {
    fn from(v: Verdict) -> Refusal {
        match v {
            Verdict::Denied => Refusal::Acl,
            Verdict::UnknownService => Refusal::UnknownService,
            Verdict::UpstreamRefused | Verdict::UpstreamUnreachable => Refusal::Upstream,
            Verdict::Overloaded => Refusal::Overloaded,
            Verdict::Allowed => Refusal::Other,
        }
    }
}

/// The flows of one side of the data plane.
#[derive(Debug)]
pub struct Flows {
    side: &'static str,
    opened: Counter,
    refused: [Counter; Refusal::ALL.len()],
    /// Bytes sent into Florete (TCP -> QUIC), as they move.
    sent: Counter,
    /// Bytes received from Florete (QUIC -> TCP), as they move.
    received: Counter,
}

impl Flows {
    const fn new(side: &'static str) -> Flows {
        Flows {
            side,
            opened: Counter::new(),
            refused: [const { Counter::new() }; Refusal::ALL.len()],
            sent: Counter::new(),
            received: Counter::new(),
        }
    }

    /// A flow was admitted and connected (bytes may flow).
    pub fn opened(&self) {
        self.opened.inc();
    }

    /// A flow was refused, for `why`.
    pub fn refused(&self, why: Refusal) {
        self.refused[why as usize].inc();
    }

    /// A refused verdict on the wire (sent or received).
    pub fn refused_with(&self, v: Verdict) {
        self.refused(v.into());
    }

    /// A flow read `n` bytes from its TCP side and handed them to Florete.
    pub fn sent(&self, n: u64) {
        self.sent.add(n);
    }

    /// A flow wrote `n` bytes from Florete to its TCP side.
    pub fn received(&self, n: u64) {
        self.received.add(n);
    }

    /// Bytes sent into Florete so far (`direction="sent"`).
    pub fn sent_count(&self) -> u64 {
        self.sent.get()
    }

    /// Bytes received from Florete so far (`direction="received"`).
    pub fn received_count(&self) -> u64 {
        self.received.get()
    }

    /// How many flows were refused for `why` so far.
    pub fn refused_count(&self, why: Refusal) -> u64 {
        self.refused[why as usize].get()
    }

    /// How many flows were opened so far.
    pub fn opened_count(&self) -> u64 {
        self.opened.get()
    }

    fn render(&self, out: &mut dyn Write, sep: char) -> fmt::Result {
        let side = self.side;
        series(
            out,
            "flor_flows_opened_total",
            &[("side", side)],
            self.opened.get(),
            sep,
        )?;
        for r in Refusal::ALL {
            let v = self.refused[r as usize].get();
            let labels = [("side", side), ("reason", r.label())];
            series(out, "flor_flows_refused_total", &labels, v, sep)?;
        }
        for (dir, c) in [("sent", &self.sent), ("received", &self.received)] {
            let labels = [("side", side), ("direction", dir)];
            series(out, "flor_flow_bytes_total", &labels, c.get(), sep)?;
        }
        Ok(())
    }
}

/// Flows this vertex serves (its published services' side).
pub static SERVE: Flows = Flows::new("serve");
/// Flows this vertex dials for its SOCKS5 listeners.
pub static DIAL: Flows = Flows::new("dial");

/// Why a QUIC/mTLS handshake failed, by the TLS alert either side sent
/// (RFC 8446 6.2), so the label is the same whichever end refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum HandshakeAlert {
    /// Alert 45: a certificate is expired or not yet valid (rustls sends one alert for both).
    CertificateExpired,
    /// Alert 48: a certificate chains to another CA.
    UnknownCa,
    /// Alert 42: a certificate was refused (wrong SAN, not of this rete, malformed).
    BadCertificate,
    /// Alert 116: the client presented no certificate.
    CertificateRequired,
    /// No answer within the handshake timeout.
    Timeout,
    /// Any other alert or error.
    Other,
}

impl HandshakeAlert {
    const ALL: [HandshakeAlert; 6] = [
        HandshakeAlert::CertificateExpired,
        HandshakeAlert::UnknownCa,
        HandshakeAlert::BadCertificate,
        HandshakeAlert::CertificateRequired,
        HandshakeAlert::Timeout,
        HandshakeAlert::Other,
    ];

    /// The label value (the alert's RFC name).
    pub const fn label(self) -> &'static str {
        match self {
            HandshakeAlert::CertificateExpired => "certificate_expired",
            HandshakeAlert::UnknownCa => "unknown_ca",
            HandshakeAlert::BadCertificate => "bad_certificate",
            HandshakeAlert::CertificateRequired => "certificate_required",
            HandshakeAlert::Timeout => "timeout",
            HandshakeAlert::Other => "other",
        }
    }

    /// From a TLS alert number.
    pub const fn from_alert(alert: u8) -> HandshakeAlert {
        match alert {
            45 => HandshakeAlert::CertificateExpired,
            48 => HandshakeAlert::UnknownCa,
            42 | 43 => HandshakeAlert::BadCertificate,
            116 => HandshakeAlert::CertificateRequired,
            _ => HandshakeAlert::Other,
        }
    }

    /// From a QUIC transport error code: crypto errors are `0x100 + alert` (RFC 9001 4.8).
    pub const fn from_quic_code(code: u64) -> HandshakeAlert {
        if code >= 0x100 && code <= 0x1ff {
            HandshakeAlert::from_alert((code - 0x100) as u8)
        } else {
            HandshakeAlert::Other
        }
    }

    /// From the error quinn reports for a failed handshake.
    #[cfg(feature = "net")]
    pub fn of(e: &quinn::ConnectionError) -> HandshakeAlert {
        use quinn::ConnectionError as E;
        match e {
            E::TransportError(t) => HandshakeAlert::from_quic_code(t.code.into()),
            E::ConnectionClosed(c) => HandshakeAlert::from_quic_code(c.error_code.into()),
            E::TimedOut => HandshakeAlert::Timeout,
            _ => HandshakeAlert::Other,
        }
    }
}

/// Failed handshakes, counted by the side that saw them.
#[derive(Debug)]
pub struct Handshakes {
    side: &'static str,
    failed: [Counter; HandshakeAlert::ALL.len()],
}

impl Handshakes {
    const fn new(side: &'static str) -> Handshakes {
        Handshakes {
            side,
            failed: [const { Counter::new() }; HandshakeAlert::ALL.len()],
        }
    }

    /// A handshake failed for `why`.
    pub fn failed(&self, why: HandshakeAlert) {
        self.failed[why as usize].inc();
    }

    /// A handshake failed with quinn's error `e`.
    #[cfg(feature = "net")]
    pub fn failed_with(&self, e: &quinn::ConnectionError) {
        self.failed(HandshakeAlert::of(e));
    }

    fn render(&self, out: &mut dyn Write, sep: char) -> fmt::Result {
        for h in HandshakeAlert::ALL {
            let labels = [("side", self.side), ("reason", h.label())];
            let v = self.failed[h as usize].get();
            series(out, "flor_handshakes_failed_total", &labels, v, sep)?;
        }
        Ok(())
    }
}

/// Handshakes of connections this vertex accepted.
pub static SERVE_HANDSHAKES: Handshakes = Handshakes::new("serve");
/// Handshakes of connections this vertex dialled.
pub static DIAL_HANDSHAKES: Handshakes = Handshakes::new("dial");

/// The identity side-channel (`net::callers`): questions answered and flows it could not record.
#[derive(Debug)]
pub struct Callers {
    /// Served flows not recorded because the table was at `MAX_CALLER_ENTRIES`.
    pub table_full: Counter,
    /// Questions answered with a caller.
    known: Counter,
    /// Questions answered `unknown`.
    unknown: Counter,
}

impl Callers {
    /// A question was answered, with a caller (`known`) or `unknown`.
    pub fn asked(&self, known: bool) {
        if known {
            self.known.inc();
        } else {
            self.unknown.inc();
        }
    }

    fn render(&self, out: &mut dyn Write, sep: char) -> fmt::Result {
        let full = self.table_full.get();
        series(out, "flor_caller_table_full_total", &[], full, sep)?;
        for (answer, c) in [("known", &self.known), ("unknown", &self.unknown)] {
            let labels = [("answer", answer)];
            series(out, "flor_caller_lookups_total", &labels, c.get(), sep)?;
        }
        Ok(())
    }
}

/// The side-channel's counters.
pub static CALLERS: Callers = Callers {
    table_full: Counter::new(),
    known: Counter::new(),
    unknown: Counter::new(),
};

/// Renders the vertex's counters as exposition lines, each ended by `sep`.
pub fn render_vertex(out: &mut dyn Write, sep: char) -> fmt::Result {
    SERVE.render(out, sep)?;
    DIAL.render(out, sep)?;
    SERVE_HANDSHAKES.render(out, sep)?;
    DIAL_HANDSHAKES.render(out, sep)?;
    CALLERS.render(out, sep)
}

/// The agent's own events (one agent process per scope).
#[derive(Debug)]
pub struct Agent {
    /// Polls of the config source that answered (up to date or a new version).
    pub syncs: Counter,
    /// Polls that failed (unreachable source, refused artifact).
    pub poll_failures: Counter,
    /// Versions committed.
    pub commits: Counter,
    /// Versions rolled back.
    pub rollbacks: Counter,
    /// Vertex processes started after the first.
    pub vertex_restarts: Counter,
}

/// The agent's counters.
pub static AGENT: Agent = Agent {
    syncs: Counter::new(),
    poll_failures: Counter::new(),
    commits: Counter::new(),
    rollbacks: Counter::new(),
    vertex_restarts: Counter::new(),
};

/// Renders the agent's counters as exposition lines, each ended by `sep`.
pub fn render_agent(out: &mut dyn Write, sep: char) -> fmt::Result {
    let a = &AGENT;
    for (name, c) in [
        ("flor_agent_syncs_total", &a.syncs),
        ("flor_agent_poll_failures_total", &a.poll_failures),
        ("flor_agent_commits_total", &a.commits),
        ("flor_agent_rollbacks_total", &a.rollbacks),
        ("flor_agent_vertex_restarts_total", &a.vertex_restarts),
    ] {
        series(out, name, &[], c.get(), sep)?;
    }
    Ok(())
}

/// Writes one exposition line `name{k="v",...} value` and `sep`. Label
/// values are written as given: callers pass names and SPIFFE IDs, which
/// hold no `"`, `\` or newline.
pub fn series(
    out: &mut dyn Write,
    name: &str,
    labels: &[(&str, &str)],
    value: impl fmt::Display,
    sep: char,
) -> fmt::Result {
    out.write_str(name)?;
    for (i, (k, v)) in labels.iter().enumerate() {
        out.write_char(if i == 0 { '{' } else { ',' })?;
        write!(out, "{k}=\"{v}\"")?;
    }
    if !labels.is_empty() {
        out.write_char('}')?;
    }
    write!(out, " {value}")?;
    out.write_char(sep)
}

/// One exposition line as the collector reads a push: borrowed, checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Series<'a> {
    /// The metric name (starts with `flor_`).
    pub name: &'a str,
    /// The labels between the braces (`side="serve",reason="acl"`), possibly empty.
    pub labels: &'a str,
    /// The value as sent (an integer or a decimal number).
    pub value: &'a str,
}

/// Why a pushed line was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SeriesError {
    /// The name is not `flor_` followed by `[a-z0-9_]`.
    Name,
    /// The labels are not `key="value"` pairs of plain characters.
    Labels,
    /// A label is called `node`, which the collector sets itself.
    NodeLabel,
    /// The value is not a finite number.
    Value,
}

impl fmt::Display for SeriesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SeriesError::Name => "metric name is not flor_[a-z0-9_]+",
            SeriesError::Labels => "labels are not key=\"value\" pairs of plain characters",
            SeriesError::NodeLabel => "label node is set by the collector, not the pusher",
            SeriesError::Value => "value is not a finite number",
        })
    }
}

/// Longest metric name or label text the collector accepts.
pub const MAX_SERIES_TEXT: usize = 256;

/// Parses one line `name{labels} value` of a push (what [`series`] writes).
///
/// Stricter than the exposition format on purpose: only `flor_` names,
/// label values without quotes, backslashes or control characters, no
/// timestamps. So the collector can re-emit a line with `node` added
/// without escaping anything, and a pusher cannot inject a line.
pub fn parse_series(line: &str) -> Result<Series<'_>, SeriesError> {
    let (series, value) = line.rsplit_once(' ').ok_or(SeriesError::Value)?;
    let (name, labels) = match series.split_once('{') {
        Some((n, rest)) => (n, rest.strip_suffix('}').ok_or(SeriesError::Labels)?),
        None => (series, ""),
    };
    let name_ok = name.len() <= MAX_SERIES_TEXT
        && name.strip_prefix("flor_").is_some_and(|r| {
            !r.is_empty()
                && r.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        });
    if !name_ok {
        return Err(SeriesError::Name);
    }
    if labels.len() > MAX_SERIES_TEXT {
        return Err(SeriesError::Labels);
    }
    if !labels.is_empty() {
        // Values hold no quote, so splitting on `",` finds every pair.
        for pair in labels
            .strip_suffix('"')
            .ok_or(SeriesError::Labels)?
            .split("\",")
        {
            let (k, v) = pair.split_once("=\"").ok_or(SeriesError::Labels)?;
            let key_ok = !k.is_empty()
                && k.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            let value_ok = v
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\' && b != b'{' && b != b'}');
            if !key_ok || !value_ok {
                return Err(SeriesError::Labels);
            }
            if k == "node" {
                return Err(SeriesError::NodeLabel);
            }
        }
    }
    let finite = value.len() <= 32
        && value
            .bytes()
            .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
        && value.parse::<f64>().is_ok_and(f64::is_finite);
    if !finite {
        return Err(SeriesError::Value);
    }
    Ok(Series {
        name,
        labels,
        value,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test fixtures
    use super::*;

    #[test]
    fn a_counter_adds_and_renders_with_labels() {
        let c = Counter::new();
        c.inc();
        c.add(41);
        assert_eq!(c.get(), 42);
        let f = Flows::new("serve");
        f.opened();
        f.refused_with(Verdict::Denied);
        f.refused_with(Verdict::UpstreamRefused);
        f.refused(Refusal::NotPinned);
        f.sent(10);
        f.received(20);
        let mut s = String::new();
        f.render(&mut s, '\n').unwrap();
        assert!(
            s.starts_with("flor_flows_opened_total{side=\"serve\"} 1\n"),
            "{s}"
        );
        assert!(s.contains("flor_flows_refused_total{side=\"serve\",reason=\"acl\"} 1\n"));
        assert!(s.contains("flor_flows_refused_total{side=\"serve\",reason=\"upstream\"} 1\n"));
        assert!(s.contains("flor_flows_refused_total{side=\"serve\",reason=\"overloaded\"} 0\n"));
        assert!(s.contains("flor_flows_refused_total{side=\"serve\",reason=\"not_pinned\"} 1\n"));
        assert!(s.contains("flor_flow_bytes_total{side=\"serve\",direction=\"received\"} 20\n"));
        let mut a = String::new();
        series(&mut a, "flor_x", &[], 7, ';').unwrap();
        assert_eq!(a, "flor_x 7;");
    }

    #[test]
    fn rendered_lines_parse_back_and_bad_lines_are_refused() {
        let mut s = String::new();
        render_vertex(&mut s, '\n').unwrap();
        render_agent(&mut s, '\n').unwrap();
        for l in s.lines() {
            parse_series(l).unwrap();
        }
        assert_eq!(
            parse_series("flor_x{side=\"serve\",reason=\"acl\"} 3"),
            Ok(Series {
                name: "flor_x",
                labels: "side=\"serve\",reason=\"acl\"",
                value: "3"
            })
        );
        parse_series("flor_cert{cert=\"spiffe://t.flor/node/a\"} -5").unwrap();
        for (bad, e) in [
            ("up 1", SeriesError::Name),
            ("flor_X 1", SeriesError::Name),
            ("flor_ 1", SeriesError::Name),
            ("flor_x 1 2", SeriesError::Name),
            ("flor_x{a=\"b\" 1", SeriesError::Labels),
            ("flor_x{a=b} 1", SeriesError::Labels),
            ("flor_x{a=\"b\\\"c\"} 1", SeriesError::Labels),
            ("flor_x{a=\"b}\nflor_y{c=\"d\"} 1", SeriesError::Labels),
            ("flor_x{node=\"alpha\"} 1", SeriesError::NodeLabel),
            ("flor_x NaN", SeriesError::Value),
            ("flor_x inf", SeriesError::Value),
            ("flor_x", SeriesError::Value),
            ("flor_x ", SeriesError::Value),
        ] {
            assert_eq!(parse_series(bad), Err(e), "{bad}");
        }
    }

    #[test]
    fn crypto_close_codes_name_the_alert() {
        assert_eq!(
            HandshakeAlert::from_quic_code(0x100 + 45),
            HandshakeAlert::CertificateExpired
        );
        assert_eq!(
            HandshakeAlert::from_quic_code(0x100 + 48),
            HandshakeAlert::UnknownCa
        );
        assert_eq!(
            HandshakeAlert::from_quic_code(0x100 + 116),
            HandshakeAlert::CertificateRequired
        );
        assert_eq!(
            HandshakeAlert::from_quic_code(0x100 + 42),
            HandshakeAlert::BadCertificate
        );
        assert_eq!(HandshakeAlert::from_quic_code(0x0a), HandshakeAlert::Other);
        assert_eq!(HandshakeAlert::from_quic_code(0x200), HandshakeAlert::Other);
    }
}
