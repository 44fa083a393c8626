//! The agent's control socket, `<install root>/agent.sock`.
//!
//! One request per connection, one line of text; the agent answers with lines
//! and closes. The last line is [`OK`] or [`FAILED`], which the client turns
//! into its exit status; every other line is printed as it arrives, so a
//! person watching `flor agent sync` sees each step when it happens.
//!
//! ```text
//! status            -> human-readable status, OK
//! status json       -> one JSON object, OK
//! sync [dry-run] [confirm] [timeout=<s>]  -> progress lines, OK | FAILED
//! ```
//!
//! The socket is created with mode 0600 inside the install root: whoever may
//! read the scope's keys may drive its agent, nobody else.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use crate::scope::Scope;

/// The socket file in each install root.
pub const SOCKET: &str = "agent.sock";
/// Last line of a successful answer.
pub const OK: &str = "OK";
/// Last line of a failed answer.
pub const FAILED: &str = "FAILED";
/// Longest request line the agent reads.
pub const MAX_REQUEST: usize = 256;

/// A parsed control request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// `status` / `status json`.
    Status {
        /// Answer with JSON.
        json: bool,
    },
    /// `sync ...`.
    Sync {
        /// Print what would change; change nothing.
        dry_run: bool,
        /// Confirm a pending version, or commit a new one as soon as it is healthy.
        confirm: bool,
        /// Seconds before an unconfirmed version is rolled back; `None`: agent.json's value.
        timeout_s: Option<u32>,
    },
}

impl Request {
    /// Parses one request line.
    pub fn parse(line: &str) -> Option<Request> {
        let mut words = line.split_ascii_whitespace();
        match words.next()? {
            "status" => match words.next() {
                None => Some(Request::Status { json: false }),
                Some("json") => Some(Request::Status { json: true }),
                Some(_) => None,
            },
            "sync" => {
                let (mut dry_run, mut confirm, mut timeout_s) = (false, false, None);
                for w in words {
                    match w {
                        "dry-run" => dry_run = true,
                        "confirm" => confirm = true,
                        _ => timeout_s = Some(w.strip_prefix("timeout=")?.parse().ok()?),
                    }
                }
                Some(Request::Sync {
                    dry_run,
                    confirm,
                    timeout_s,
                })
            }
            _ => None,
        }
    }

    /// The request as one line (without newline).
    pub fn to_line(self) -> String {
        match self {
            Request::Status { json: false } => "status".into(),
            Request::Status { json: true } => "status json".into(),
            Request::Sync {
                dry_run,
                confirm,
                timeout_s,
            } => {
                let mut s = String::from("sync");
                if dry_run {
                    s.push_str(" dry-run");
                }
                if confirm {
                    s.push_str(" confirm");
                }
                if let Some(t) = timeout_s {
                    s.push_str(&format!(" timeout={t}"));
                }
                s
            }
        }
    }
}

/// Parses `5m`, `90s`, `300`, `1h` into seconds.
pub fn parse_duration(s: &str) -> Option<u32> {
    let (num, mult) = match s.as_bytes().last()? {
        b's' => (&s[..s.len() - 1], 1),
        b'm' => (&s[..s.len() - 1], 60),
        b'h' => (&s[..s.len() - 1], 3600),
        _ => (s, 1),
    };
    num.parse::<u32>().ok()?.checked_mul(mult)
}

/// The socket path of a scope.
pub fn socket_path(scope: &Scope) -> PathBuf {
    scope.install.join(SOCKET)
}

/// Sends `req` to the scope's agent and prints the answer; returns whether it succeeded.
///
/// `timeout` bounds the whole exchange (a sync waits for the new vertex to come up).
pub fn call(scope: &Scope, req: Request, timeout: Duration) -> Result<bool, String> {
    let path = socket_path(scope);
    let mut s = UnixStream::connect(&path).map_err(|e| {
        format!(
            "cannot reach the agent of scope {} at {} ({e}); is `flor agent run --rete {}` running?",
            scope.name,
            path.display(),
            scope.name
        )
    })?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let mut line = req.to_line();
    line.push('\n');
    s.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
    let mut ok = None;
    let out = std::io::stdout();
    for l in BufReader::new(s).lines() {
        let l = l.map_err(|e| format!("reading the agent's answer: {e}"))?;
        match l.as_str() {
            OK => ok = Some(true),
            FAILED => ok = Some(false),
            _ => {
                let mut o = out.lock();
                let _ = writeln!(o, "{l}");
            }
        }
    }
    ok.ok_or_else(|| "the agent closed the connection without an answer".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        for r in [
            Request::Status { json: false },
            Request::Status { json: true },
            Request::Sync {
                dry_run: true,
                confirm: false,
                timeout_s: None,
            },
            Request::Sync {
                dry_run: false,
                confirm: true,
                timeout_s: Some(300),
            },
        ] {
            assert_eq!(Request::parse(&r.to_line()), Some(r));
        }
        assert_eq!(Request::parse("sync timeout=abc"), None);
        assert_eq!(Request::parse("reboot"), None);
        assert_eq!(Request::parse(""), None);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5m"), Some(300));
        assert_eq!(parse_duration("90s"), Some(90));
        assert_eq!(parse_duration("2"), Some(2));
        assert_eq!(parse_duration("1h"), Some(3600));
        assert_eq!(parse_duration("m"), None);
        assert_eq!(parse_duration("99999999999h"), None);
    }
}
