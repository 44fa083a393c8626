//! Where a node's artifacts come from, and the one HTTP GET that fetches them.
//!
//! A source serves the compiled tree's `artifact/<node>/mgmt/...` paths:
//!
//! - the config-server through Florete (the `config` service, dialled as the
//!   node's own `node/<name>` identity) once the data-plane dialer is linked;
//! - any plain-HTTP mirror of the tree (`http://<ip>:<port>/[prefix/]`),
//!   including the config-server's own loopback read listener;
//! - a local compiled tree directory (`retectl compile --out <dir>`), which
//!   is how the management node bootstraps itself before anything runs.
//!
//! Nodes verify every envelope, so the source needs no trust of its own.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use flor_vertex::file;
use flor_vertex::identity::Dialable;
use flor_vertex::net::{Credentials, Dialer, ResponseError};

use flor_vertex::http;
use flor_vertex::identity::Name;
use flor_vertex::limits::MAX_ARTIFACT_BYTES;
use smol::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

/// How long one fetch (connect, request, whole body) may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an artifact could not be fetched.
#[derive(Debug)]
#[non_exhaustive]
pub enum FetchError {
    /// The source is not reachable (connection refused, timed out).
    Unreachable(String),
    /// The source answered with an HTTP status other than 200.
    Status(u16),
    /// The source's answer is not valid HTTP.
    Http(http::HttpError),
    /// The artifact is larger than the device accepts.
    TooLarge,
    /// The local tree has no such file.
    Missing(PathBuf),
    /// A source string is not `http://<ip>:<port>/...` or a directory.
    BadSource(String),
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::Unreachable(e) => write!(f, "config source unreachable: {e}"),
            FetchError::Status(404) => {
                f.write_str("config source has no artifact for this node (HTTP 404)")
            }
            FetchError::Status(s) => write!(f, "config source answered HTTP {s}"),
            FetchError::Http(e) => write!(f, "config source answered with bad HTTP: {e}"),
            FetchError::TooLarge => f.write_str("artifact is larger than MAX_ARTIFACT_BYTES"),
            FetchError::Missing(p) => write!(f, "{} does not exist", p.display()),
            FetchError::BadSource(s) => write!(
                f,
                "{s} is neither a directory nor an http://<ip>:<port>/ URL"
            ),
        }
    }
}

impl std::error::Error for FetchError {}

/// The config-server as a Florete service, dialled as this node.
#[derive(Clone)]
pub struct Florete {
    /// The dialer (one QUIC endpoint, connections reused per target).
    pub dialer: Arc<Dialer>,
    /// The node's own `node/<name>` credentials.
    pub caller: Arc<Credentials>,
    /// The `config` service.
    pub target: Dialable,
    /// The UDP address of the vertex publishing it.
    pub addr: SocketAddr,
}

impl fmt::Debug for Florete {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Florete({} at {})", self.target.id(), self.addr)
    }
}

/// A place to fetch a node's artifacts from.
#[derive(Clone, Debug)]
pub enum Source {
    /// A compiled tree on disk: `<dir>/<node>/mgmt/...`.
    Dir(PathBuf),
    /// A plain-HTTP mirror: `GET <prefix>artifact/<node>/mgmt/...` at `addr`.
    Http {
        /// The server's socket address.
        addr: SocketAddr,
        /// Path prefix ending in `/`.
        prefix: String,
    },
    /// The config-server over Florete (mTLS QUIC), as the node's identity.
    Florete(Box<Florete>),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Dir(d) => write!(f, "{}", d.display()),
            Source::Http { addr, prefix } => write!(f, "http://{addr}{prefix}"),
            Source::Florete(fl) => write!(f, "{} at {} (Florete)", fl.target.id(), fl.addr),
        }
    }
}

impl Source {
    /// Parses `--from`: an `http://<ip>:<port>[/prefix]` URL, else a directory path.
    pub fn parse(s: &str) -> Result<Source, FetchError> {
        if let Some(rest) = s.strip_prefix("http://") {
            let (hostport, path) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, "/"),
            };
            let addr: SocketAddr = hostport
                .parse()
                .map_err(|_| FetchError::BadSource(s.into()))?;
            let mut prefix = path.to_string();
            if !prefix.ends_with('/') {
                prefix.push('/');
            }
            return Ok(Source::Http { addr, prefix });
        }
        if s.contains("://") {
            return Err(FetchError::BadSource(s.into()));
        }
        let p = PathBuf::from(s);
        if !p.is_dir() {
            return Err(FetchError::BadSource(s.into()));
        }
        Ok(Source::Dir(p))
    }

    /// Fetches `<node>/<rel>` (rel is `mgmt/agent.json` or `mgmt/vertices/<name>.json`).
    pub async fn fetch(&self, node: &Name, rel: &str) -> Result<Vec<u8>, FetchError> {
        match self {
            Source::Dir(d) => {
                let p = d.join(node.as_str()).join(rel);
                file::read_bounded(&p, MAX_ARTIFACT_BYTES).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::NotFound {
                        FetchError::Missing(p)
                    } else if e.kind() == std::io::ErrorKind::InvalidData {
                        FetchError::TooLarge
                    } else {
                        FetchError::Unreachable(e.to_string())
                    }
                })
            }
            Source::Http { addr, prefix } => {
                let path = format!("{prefix}artifact/{node}/{rel}");
                let host = addr.to_string();
                let addr = *addr;
                with_timeout(async move {
                    let stream = smol::net::TcpStream::connect(addr)
                        .await
                        .map_err(|e| FetchError::Unreachable(e.to_string()))?;
                    get(stream, &host, &path).await
                })
                .await
            }
            Source::Florete(fl) => {
                let path = format!("/artifact/{node}/{rel}");
                with_timeout(async {
                    let flow = fl
                        .dialer
                        .connect(&fl.caller, &fl.target, fl.addr)
                        .await
                        .map_err(|e| FetchError::Unreachable(e.to_string()))?;
                    get(flow, fl.target.id().name().as_str(), &path).await
                })
                .await
            }
        }
    }
}

/// Runs `fut`, failing with `Unreachable` after [`FETCH_TIMEOUT`].
pub async fn with_timeout<T>(
    fut: impl std::future::Future<Output = Result<T, FetchError>>,
) -> Result<T, FetchError> {
    smol::future::or(fut, async {
        smol::Timer::after(FETCH_TIMEOUT).await;
        Err(FetchError::Unreachable("timed out".into()))
    })
    .await
}

/// One `GET` over any byte stream (TCP, or a Florete flow); returns a 200 body.
pub async fn get<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    host: &str,
    path: &str,
) -> Result<Vec<u8>, FetchError> {
    let mut head = [0u8; 512];
    let n = http::write_request("GET", host, path, None, &mut head).map_err(FetchError::Http)?;
    let unreachable = |e: std::io::Error| FetchError::Unreachable(e.to_string());
    stream.write_all(&head[..n]).await.map_err(unreachable)?;
    stream.flush().await.map_err(unreachable)?;
    let (status, body) = flor_vertex::net::read_response(&mut stream, MAX_ARTIFACT_BYTES)
        .await
        .map_err(|e| match e {
            ResponseError::Io(e) => unreachable(e),
            ResponseError::Closed => {
                FetchError::Unreachable("connection closed before a response".into())
            }
            ResponseError::Http(e) => FetchError::Http(e),
            ResponseError::TooLarge => FetchError::TooLarge,
            e => FetchError::Unreachable(e.to_string()),
        })?;
    if status != 200 {
        return Err(FetchError::Status(status));
    }
    Ok(body)
}
