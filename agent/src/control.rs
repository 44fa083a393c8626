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
//! reload            -> (after `flor enroll`) the scope re-read, vertex restarting, OK | FAILED
//! ```
//!
//! The request line's parser is sans-IO in `flor_vertex::control` (fuzzed
//! there); this module is the socket around it.
//!
//! The socket is created with mode 0600 inside the install root: whoever may
//! read the scope's keys may drive its agent, nobody else.
//!
//! Windows has no Unix sockets in Rust's std, so there the agent listens on a
//! loopback TCP port and writes `agent.port` (`127.0.0.1:<port> <cookie>`,
//! private like a key) into the install root; a client's first line must be
//! the cookie. This is Tor's control-port cookie scheme: the right to read a
//! file in the install root is again the right to drive the agent.

use std::fmt;
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::scope::Scope;

pub use flor_vertex::control::{parse_duration, Request, MAX_REQUEST};

/// The control endpoint file in each install root.
#[cfg(unix)]
pub const SOCKET: &str = "agent.sock";
/// The control endpoint file in each install root (port and cookie).
#[cfg(not(unix))]
pub const SOCKET: &str = "agent.port";
/// Bytes of randomness in the Windows control cookie.
#[cfg(not(unix))]
const COOKIE_BYTES: usize = 16;
/// Last line of a successful answer.
pub const OK: &str = "OK";
/// Last line of a failed answer.
pub const FAILED: &str = "FAILED";

/// Why the control endpoint could not be served or an agent could not be asked.
#[derive(Debug)]
#[non_exhaustive]
pub enum ControlError {
    /// Another agent answers on the scope's endpoint.
    AlreadyServed(PathBuf),
    /// The endpoint file could not be bound, secured or written.
    Endpoint(PathBuf, io::Error),
    /// The system random generator failed (the Windows cookie).
    #[cfg(not(unix))]
    Random,
    /// No agent answers on the scope's endpoint.
    Unreachable {
        /// The scope whose agent was asked.
        scope: String,
        /// Its endpoint file.
        path: PathBuf,
        /// Why connecting failed.
        source: io::Error,
    },
    /// The request could not be sent.
    Send(io::Error),
    /// The agent's answer could not be read.
    Answer(io::Error),
    /// The agent closed the connection before its last line.
    NoAnswer,
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlError::AlreadyServed(p) => write!(
                f,
                "another agent already serves {}; stop it first",
                p.display()
            ),
            ControlError::Endpoint(p, e) => write!(f, "{}: {e}", p.display()),
            #[cfg(not(unix))]
            ControlError::Random => f.write_str("the system random generator failed"),
            ControlError::Unreachable {
                scope,
                path,
                source,
            } => write!(
                f,
                "cannot reach the agent of scope {scope} at {} ({source}); is `flor agent run --rete {scope}` running?",
                path.display()
            ),
            ControlError::Send(e) => write!(f, "sending the request to the agent: {e}"),
            ControlError::Answer(e) => write!(f, "reading the agent's answer: {e}"),
            ControlError::NoAnswer => {
                f.write_str("the agent closed the connection without an answer")
            }
        }
    }
}

impl std::error::Error for ControlError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ControlError::Endpoint(_, e)
            | ControlError::Unreachable { source: e, .. }
            | ControlError::Send(e)
            | ControlError::Answer(e) => Some(e),
            _ => None,
        }
    }
}

/// The socket path of a scope.
pub fn socket_path(scope: &Scope) -> PathBuf {
    scope.install.join(SOCKET)
}

/// One accepted control connection.
#[cfg(unix)]
pub type Conn = smol::net::unix::UnixStream;
/// One accepted control connection.
#[cfg(not(unix))]
pub type Conn = smol::net::TcpStream;

/// The agent's end of the control endpoint; removes its file when dropped.
pub struct Listener {
    #[cfg(unix)]
    inner: smol::net::unix::UnixListener,
    #[cfg(not(unix))]
    inner: smol::net::TcpListener,
    path: PathBuf,
    /// The line a client must send first (Windows); `None` on Unix.
    cookie: Option<std::rc::Rc<str>>,
}

impl Listener {
    /// Binds the scope's endpoint, refusing if another agent already serves it.
    pub fn bind(scope: &Scope) -> Result<Listener, ControlError> {
        let path = socket_path(scope);
        if agent_running(scope) {
            return Err(ControlError::AlreadyServed(path));
        }
        let _ = std::fs::remove_file(&path);
        let fail = |e: io::Error| ControlError::Endpoint(path.clone(), e);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let inner = smol::net::unix::UnixListener::bind(&path).map_err(fail)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(fail)?;
            Ok(Listener {
                inner,
                path,
                cookie: None,
            })
        }
        #[cfg(not(unix))]
        {
            let std_listener = std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(fail)?;
            let addr = std_listener.local_addr().map_err(fail)?;
            let mut raw = [0u8; COOKIE_BYTES];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw)
                .map_err(|_| ControlError::Random)?;
            let mut hex = [0u8; 2 * COOKIE_BYTES];
            let cookie = flor_vertex::hex::encode(&raw, &mut hex);
            flor_vertex::file::write_atomic(&path, format!("{addr} {cookie}\n").as_bytes(), 0o600)
                .map_err(fail)?;
            let inner = smol::net::TcpListener::try_from(std_listener).map_err(fail)?;
            Ok(Listener {
                inner,
                path,
                cookie: Some(cookie.into()),
            })
        }
    }

    /// Waits for the next client.
    pub async fn accept(&self) -> io::Result<Conn> {
        Ok(self.inner.accept().await?.0)
    }

    /// The endpoint file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The first line a client must send, where the platform needs one.
    pub fn cookie(&self) -> Option<std::rc::Rc<str>> {
        self.cookie.clone()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether an agent answers on the scope's control endpoint.
pub fn agent_running(scope: &Scope) -> bool {
    connect_raw(&socket_path(scope)).is_ok()
}

/// Whether `line` is the cookie (compared in constant time: the port is open to every local user).
pub fn cookie_matches(cookie: &str, line: &str) -> bool {
    let (a, b) = (cookie.as_bytes(), line.trim_end().as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A client connection to the agent, before any request is written.
#[cfg(unix)]
fn connect_raw(path: &Path) -> io::Result<std::os::unix::net::UnixStream> {
    std::os::unix::net::UnixStream::connect(path)
}

/// A client connection to the agent, cookie already sent.
#[cfg(not(unix))]
fn connect_raw(path: &Path) -> io::Result<std::net::TcpStream> {
    let text = flor_vertex::file::read_bounded(path, 128)?;
    let text = String::from_utf8_lossy(&text);
    let mut words = text.split_ascii_whitespace();
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed agent.port file");
    let addr: std::net::SocketAddr = words.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
    let cookie = words.next().ok_or_else(bad)?;
    if !addr.ip().is_loopback() {
        return Err(bad());
    }
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.write_all(format!("{cookie}\n").as_bytes())?;
    Ok(s)
}

/// Sends `req` to the scope's agent and prints the answer; returns whether it succeeded.
///
/// `timeout` bounds the whole exchange (a sync waits for the new vertex to come up).
pub fn call(scope: &Scope, req: Request, timeout: Duration) -> Result<bool, ControlError> {
    let out = std::io::stdout();
    call_with(scope, req, timeout, |l| {
        let mut o = out.lock();
        let _ = writeln!(o, "{l}");
    })
}

/// Sends `req` to the scope's agent and hands each answer line to `line`;
/// returns whether it succeeded.
pub fn call_with(
    scope: &Scope,
    req: Request,
    timeout: Duration,
    mut on_line: impl FnMut(&str),
) -> Result<bool, ControlError> {
    let path = socket_path(scope);
    let mut s = connect_raw(&path).map_err(|source| ControlError::Unreachable {
        scope: scope.name.clone(),
        path,
        source,
    })?;
    s.set_read_timeout(Some(timeout))
        .map_err(ControlError::Send)?;
    let mut line = req.to_line();
    line.push('\n');
    s.write_all(line.as_bytes()).map_err(ControlError::Send)?;
    let mut ok = None;
    for l in BufReader::new(s).lines() {
        let l = l.map_err(ControlError::Answer)?;
        match l.as_str() {
            OK => ok = Some(true),
            FAILED => ok = Some(false),
            _ => on_line(&l),
        }
    }
    ok.ok_or(ControlError::NoAnswer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_cookie_opens_the_windows_endpoint() {
        let c = "00112233445566778899aabbccddeeff";
        assert!(cookie_matches(c, "00112233445566778899aabbccddeeff\n"));
        assert!(!cookie_matches(c, "00112233445566778899aabbccddeefe\n"));
        assert!(!cookie_matches(c, "00112233445566778899aabbccddee\n"));
        assert!(!cookie_matches(c, "status\n"));
        assert!(!cookie_matches(c, ""));
    }
}
