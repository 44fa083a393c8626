//! The agent's control-socket requests (sans-IO): one line of text per request.
//!
//! ```text
//! status            -> human-readable status, OK
//! status json       -> one JSON object, OK
//! sync [dry-run] [confirm] [timeout=<s>]  -> progress lines, OK | FAILED
//! reload            -> (after `flor enroll`) the scope re-read, vertex restarting, OK | FAILED
//! ```
//!
//! The socket (and on Windows its cookie) lives in `flor`; this module only
//! turns a line into a [`Request`] and back, so the parser of what a local
//! client sends can be fuzzed with the rest (`fuzz/fuzz_targets/control_request.rs`).

use core::fmt::Write as _;

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
    /// `reload`: `flor enroll` rewrote the scope; re-read it and restart the vertex.
    Reload,
}

impl Request {
    /// Parses one request line (without its newline); `None` for anything else.
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
            "reload" => words.next().is_none().then_some(Request::Reload),
            _ => None,
        }
    }

    /// The request as one line (without newline); [`Request::parse`] reads it back.
    pub fn to_line(self) -> String {
        match self {
            Request::Status { json: false } => "status".into(),
            Request::Status { json: true } => "status json".into(),
            Request::Reload => "reload".into(),
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
                    // Writing into a String cannot fail.
                    let _ = write!(s, " timeout={t}");
                }
                s
            }
        }
    }
}

/// Parses `5m`, `90s`, `300`, `1h` into seconds; `None` if malformed or over `u32::MAX`.
pub fn parse_duration(s: &str) -> Option<u32> {
    let (num, mult) = match s.as_bytes().last()? {
        b's' => (&s[..s.len() - 1], 1),
        b'm' => (&s[..s.len() - 1], 60),
        b'h' => (&s[..s.len() - 1], 3600),
        _ => (s, 1),
    };
    num.parse::<u32>().ok()?.checked_mul(mult)
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
            Request::Sync {
                dry_run: true,
                confirm: true,
                timeout_s: Some(u32::MAX),
            },
            Request::Sync {
                dry_run: false,
                confirm: false,
                timeout_s: Some(0),
            },
            Request::Reload,
        ] {
            assert_eq!(Request::parse(&r.to_line()), Some(r));
        }
        assert_eq!(Request::parse("sync timeout=abc"), None);
        assert_eq!(Request::parse("reboot"), None);
        assert_eq!(Request::parse("reload now"), None);
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
        // A multi-byte last character must not split a code point.
        assert_eq!(parse_duration("5é"), None);
    }
}
