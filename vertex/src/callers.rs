//! The identity side-channel (sans-IO): which caller is behind a TCP
//! connection the serving vertex opened to a local upstream service.
//!
//! flor forwards TCP bytes, so an upstream sees every flow coming from the
//! vertex's loopback address. For each upstream connection it opens, the
//! vertex records the connection's two ends -> the caller's SPIFFE ID, the
//! service and the flow's start, in a [`CallerTable`] bounded by
//! [`MAX_CALLER_ENTRIES`]; the entry goes when the flow ends. An upstream asks
//! on a Unix socket of its own service (`net` serves it, path from
//! [`crate::contract::caller_socket_rel`]), one line per question, and gets
//! one line back (docs/wire.md, "The identity side-channel"):
//!
//! ```text
//! <peer addr> <local addr>\n      the connection as the upstream sees it (peer: the vertex's end)
//!   -> <caller SPIFFE ID> <service SPIFFE ID> <start, unix seconds>\n
//!   -> unknown\n                   not a connection this vertex made for this service (now)
//!   -> error <reason>\n            the line is not a question; the socket closes
//! ```
//!
//! This module parses and renders both lines and keeps the table; the socket
//! lives in `net`. The request parser faces any local process that may open
//! the socket, so it is fuzzed (`fuzz/fuzz_targets/callers_request.rs`).

use core::fmt;
use core::net::SocketAddr;
use std::collections::HashMap;
use std::sync::Arc;

use crate::identity::SpiffeId;
pub use crate::limits::MAX_CALLER_ENTRIES;

/// Longest request line, newline included: two socket addresses of at most
/// 47 bytes (`[ffff:...:ffff]:65535`) and a space fit in 96; the rest is slack.
pub const MAX_REQUEST_LINE: usize = 128;

/// The answer for a connection the vertex did not make (or no longer carries).
pub const UNKNOWN: &str = "unknown";

/// A question: the two ends of a TCP connection, as its upstream sees them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Request {
    /// The connection's remote end (the vertex's local address and port).
    pub peer: SocketAddr,
    /// The connection's local end (the upstream's listening address and port).
    pub local: SocketAddr,
}

/// Why a request line is not a question.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestError {
    /// Longer than [`MAX_REQUEST_LINE`].
    TooLong,
    /// Not two words separated by one space.
    Shape,
    /// A word is not an `ip:port` socket address.
    BadAddress,
}

impl RequestError {
    /// The reason, as sent after `error `.
    pub const fn as_str(self) -> &'static str {
        match self {
            RequestError::TooLong => "request line is too long",
            RequestError::Shape => "expected two addresses: <peer ip:port> <local ip:port>",
            RequestError::BadAddress => "an address is not ip:port",
        }
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for RequestError {}

/// An IPv4-mapped IPv6 address as the IPv4 address it is: an upstream
/// listening on `[::]` sees the vertex's `127.0.0.1` as `::ffff:127.0.0.1`.
fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

impl Request {
    /// Parses one line (a trailing `\n` or `\r\n` is allowed).
    pub fn parse(line: &[u8]) -> Result<Request, RequestError> {
        if line.len() > MAX_REQUEST_LINE {
            return Err(RequestError::TooLong);
        }
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let text = core::str::from_utf8(line).map_err(|_| RequestError::Shape)?;
        let (a, b) = text.split_once(' ').ok_or(RequestError::Shape)?;
        let addr = |s: &str| {
            s.parse::<SocketAddr>()
                .map(canonical)
                .map_err(|_| RequestError::BadAddress)
        };
        Ok(Request {
            peer: addr(a)?,
            local: addr(b)?,
        })
    }

    /// The line that asks this question, newline included.
    pub fn to_line(&self) -> String {
        let mut s = String::with_capacity(MAX_REQUEST_LINE);
        let _ = fmt::Write::write_fmt(&mut s, format_args!("{} {}\n", self.peer, self.local));
        s
    }
}

/// What the vertex knows about one upstream connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The caller's SPIFFE ID, proven by its certificate.
    pub caller: Arc<SpiffeId>,
    /// The service the caller reached.
    pub service: Arc<SpiffeId>,
    /// When the flow started, in seconds since the Unix epoch.
    pub start_s: u64,
}

/// An answer, as sent or as read back.
// Lives for one line on the stack; boxing the IDs would allocate per question.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The connection carries a flow of `caller` to `service`.
    Known {
        /// The caller's SPIFFE ID.
        caller: SpiffeId,
        /// The service's SPIFFE ID.
        service: SpiffeId,
        /// The flow's start, in seconds since the Unix epoch.
        start_s: u64,
    },
    /// [`UNKNOWN`].
    Unknown,
}

/// Why an answer line could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AnswerError {
    /// The vertex said `error <reason>`: the question was malformed.
    Refused,
    /// The line is not an answer of this protocol.
    Malformed,
}

impl fmt::Display for AnswerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AnswerError::Refused => "the vertex refused the question as malformed",
            AnswerError::Malformed => {
                "the side-channel's answer is not `<id> <service> <start>` or `unknown`"
            }
        })
    }
}

impl std::error::Error for AnswerError {}

impl Answer {
    /// The answer to `req` from `table` for the socket of `service`: only
    /// that service's flows are told, so a service learns nothing about the
    /// callers of another one on the same node.
    pub fn of(table: &CallerTable, req: &Request, service: &SpiffeId) -> Answer {
        match table.get(req) {
            Some(e) if *e.service == *service => Answer::Known {
                caller: (*e.caller).clone(),
                service: (*e.service).clone(),
                start_s: e.start_s,
            },
            _ => Answer::Unknown,
        }
    }

    /// The answer line, newline included.
    pub fn to_line(&self) -> String {
        match self {
            Answer::Known {
                caller,
                service,
                start_s,
            } => {
                let mut s = String::with_capacity(2 * crate::limits::MAX_SPIFFE_ID_LEN);
                let _ =
                    fmt::Write::write_fmt(&mut s, format_args!("{caller} {service} {start_s}\n"));
                s
            }
            Answer::Unknown => "unknown\n".into(),
        }
    }

    /// Reads an answer line (with or without its newline).
    pub fn parse(line: &str) -> Result<Answer, AnswerError> {
        let line = line.trim_end_matches(['\n', '\r']);
        if line == UNKNOWN {
            return Ok(Answer::Unknown);
        }
        if line.starts_with("error ") {
            return Err(AnswerError::Refused);
        }
        let mut w = line.split(' ');
        let (Some(c), Some(s), Some(t), None) = (w.next(), w.next(), w.next(), w.next()) else {
            return Err(AnswerError::Malformed);
        };
        Ok(Answer::Known {
            caller: SpiffeId::parse(c).map_err(|_| AnswerError::Malformed)?,
            service: SpiffeId::parse(s).map_err(|_| AnswerError::Malformed)?,
            start_s: t.parse().map_err(|_| AnswerError::Malformed)?,
        })
    }
}

/// The line sent for a request that does not parse; the socket then closes.
pub fn error_line(e: RequestError) -> String {
    let mut s = String::from("error ");
    s.push_str(e.as_str());
    s.push('\n');
    s
}

/// The table is full: the flow is served, but the side-channel cannot name its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Full;

/// Upstream connections in progress -> what the vertex knows about them.
///
/// A heap map that refuses to grow past its capacity, like the artifact's
/// lists (`limits`): it costs RAM in proportion to the flows in progress.
#[derive(Debug)]
pub struct CallerTable {
    map: HashMap<Request, Entry>,
    capacity: usize,
}

impl CallerTable {
    /// An empty table holding at most `capacity` entries ([`MAX_CALLER_ENTRIES`] in the vertex).
    pub fn new(capacity: usize) -> CallerTable {
        CallerTable {
            map: HashMap::new(),
            capacity,
        }
    }

    /// Records the connection `key` (as its upstream sees it: peer = the
    /// vertex's end); [`Full`] when the table is at capacity (nothing recorded).
    pub fn insert(&mut self, key: Request, entry: Entry) -> Result<(), Full> {
        let key = Request {
            peer: canonical(key.peer),
            local: canonical(key.local),
        };
        if self.map.len() >= self.capacity && !self.map.contains_key(&key) {
            return Err(Full);
        }
        self.map.insert(key, entry);
        Ok(())
    }

    /// Forgets the connection `key` (its flow ended).
    pub fn remove(&mut self, key: &Request) {
        let key = Request {
            peer: canonical(key.peer),
            local: canonical(key.local),
        };
        self.map.remove(&key);
    }

    /// The entry of the connection `key`, if it is in progress.
    pub fn get(&self, key: &Request) -> Option<&Entry> {
        self.map.get(key)
    }

    /// Entries now.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no flow is recorded.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// The numeric ID of `name` in a `/etc/passwd` or `/etc/group` text (the
/// third field of the line whose first field is `name`), or `name` itself
/// when it is a number. The vertex reads the files; only local accounts are
/// seen (not NSS/LDAP: give a number for those).
pub fn account_id(db: &str, name: &str) -> Option<u32> {
    if let Ok(n) = name.parse::<u32>() {
        return Some(n);
    }
    db.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == name).then_some(())?;
        f.nth(1)?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> Arc<SpiffeId> {
        Arc::new(SpiffeId::parse(s).unwrap())
    }

    fn req(line: &str) -> Request {
        Request::parse(line.as_bytes()).unwrap()
    }

    #[test]
    fn requests_parse_and_render_back() {
        let r = req("127.0.0.1:40000 127.0.0.2:8080\n");
        assert_eq!(r.peer, "127.0.0.1:40000".parse().unwrap());
        assert_eq!(r.local, "127.0.0.2:8080".parse().unwrap());
        assert_eq!(r.to_line(), "127.0.0.1:40000 127.0.0.2:8080\n");
        assert_eq!(req(&r.to_line()), r);
        assert_eq!(req("[::1]:5 [::1]:6\r\n").to_line(), "[::1]:5 [::1]:6\n");
        // What an upstream on a dual-stack [::] socket sees is the IPv4 flow.
        assert_eq!(req("[::ffff:127.0.0.1]:40000 [::ffff:127.0.0.2]:8080"), r);
        for (bad, e) in [
            ("", RequestError::Shape),
            ("127.0.0.1:1", RequestError::Shape),
            ("127.0.0.1:1  127.0.0.1:2", RequestError::BadAddress),
            ("127.0.0.1:1 127.0.0.1:2 x", RequestError::BadAddress),
            ("127.0.0.1 127.0.0.1:2", RequestError::BadAddress),
            ("localhost:1 127.0.0.1:2", RequestError::BadAddress),
            ("127.0.0.1:70000 127.0.0.1:2", RequestError::BadAddress),
        ] {
            assert_eq!(Request::parse(bad.as_bytes()), Err(e), "{bad:?}");
        }
        assert_eq!(
            Request::parse(&[b'1'; MAX_REQUEST_LINE + 1]),
            Err(RequestError::TooLong)
        );
        assert_eq!(
            Request::parse(&[0xff, b' ', b'1']),
            Err(RequestError::Shape)
        );
        assert_eq!(
            error_line(RequestError::Shape),
            "error expected two addresses: <peer ip:port> <local ip:port>\n"
        );
    }

    #[test]
    fn each_service_hears_only_of_its_own_flows_while_they_last() {
        let wiki = id("spiffe://demo.flor/service/wiki");
        let echo = id("spiffe://demo.flor/service/beta/tcp-echo");
        let mut t = CallerTable::new(2);
        let bob_flow = req("127.0.0.1:40001 127.0.0.2:8080");
        let carol_flow = req("127.0.0.1:40002 127.0.0.2:8080");
        let entry = |who: &str, service: &Arc<SpiffeId>| Entry {
            caller: id(who),
            service: Arc::clone(service),
            start_s: 1_764_268_800,
        };
        t.insert(bob_flow, entry("spiffe://demo.flor/user/bob", &wiki))
            .unwrap();
        t.insert(carol_flow, entry("spiffe://demo.flor/user/carol", &wiki))
            .unwrap();
        assert_eq!(
            Answer::of(&t, &bob_flow, &wiki).to_line(),
            "spiffe://demo.flor/user/bob spiffe://demo.flor/service/wiki 1764268800\n"
        );
        assert_eq!(
            Answer::of(&t, &carol_flow, &wiki).to_line(),
            "spiffe://demo.flor/user/carol spiffe://demo.flor/service/wiki 1764268800\n"
        );
        // The echo service's socket is not told about the wiki's callers.
        assert_eq!(Answer::of(&t, &bob_flow, &echo), Answer::Unknown);
        // Full: refused, nothing replaced; the flow is still served by the shell.
        let third = req("127.0.0.1:40003 127.0.0.2:8080");
        assert_eq!(
            t.insert(third, entry("spiffe://demo.flor/user/olga", &wiki)),
            Err(Full)
        );
        assert_eq!(Answer::of(&t, &third, &wiki), Answer::Unknown);
        // bob's flow ends: his entry goes, and his port may serve someone else.
        t.remove(&bob_flow);
        assert_eq!(Answer::of(&t, &bob_flow, &wiki).to_line(), "unknown\n");
        t.insert(third, entry("spiffe://demo.flor/user/olga", &wiki))
            .unwrap();
        assert_eq!(t.len(), 2);
        // Same port, other upstream: another connection (Linux shares source ports).
        assert_eq!(
            Answer::of(&t, &req("127.0.0.1:40002 127.0.0.3:9000"), &wiki),
            Answer::Unknown
        );
    }

    #[test]
    fn answers_read_back() {
        for a in [
            Answer::Unknown,
            Answer::Known {
                caller: SpiffeId::parse("spiffe://demo.flor/node/alpha").unwrap(),
                service: SpiffeId::parse("spiffe://demo.flor/service/config").unwrap(),
                start_s: 0,
            },
        ] {
            assert_eq!(Answer::parse(&a.to_line()), Ok(a));
        }
        assert_eq!(
            Answer::parse("error request line is too long\n"),
            Err(AnswerError::Refused)
        );
        for bad in ["", "spiffe://demo.flor/user/bob", "a b c", "unknown x"] {
            assert_eq!(Answer::parse(bad), Err(AnswerError::Malformed), "{bad}");
        }
    }

    #[test]
    fn accounts_by_name_or_number() {
        // From Debian 12's /etc/passwd and /etc/group.
        let passwd = "root:x:0:0:root:/root:/bin/bash\nwww-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\n";
        let group = "root:x:0:\nwww-data:x:33:\nflor:x:998:alice,bob\n";
        assert_eq!(account_id(passwd, "www-data"), Some(33));
        assert_eq!(account_id(passwd, "root"), Some(0));
        assert_eq!(account_id(group, "flor"), Some(998));
        assert_eq!(account_id(group, "1234"), Some(1234));
        assert_eq!(account_id(passwd, "nobody"), None);
        assert_eq!(account_id("www:x:abc:1\n", "www"), None);
        assert_eq!(account_id(passwd, "www"), None, "a prefix is not a name");
    }
}
