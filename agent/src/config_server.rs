//! `flor config-server`: stores the published tree and serves it to nodes.
//!
//! ```text
//! read listener    GET  /artifact/<node>/mgmt/agent.json          -> stored envelope
//!                  GET  /artifact/<node>/mgmt/vertices/<name>.json
//! publish listener POST /publish   (body: flor_vertex::http::tree)  -> 200 | 4xx + reason
//! ```
//!
//! Both listeners are plain HTTP/1.1 on loopback; the management node's
//! vertex publishes them as the Florete services `config` (group
//! `config-read`) and `config-publish` (group `config-write`), so who may read
//! or publish is decided by the rete's ACL before a byte reaches this process.
//!
//! Then, per connection, the server asks the vertex's identity side-channel
//! who is calling ([`crate::caller_id`]): a node reads only its own
//! `/artifact/<node>/...` (another node's is `403`, logged with the caller's
//! SPIFFE ID); an operator — a caller this node's ACL also grants
//! `config-publish` — reads every node and may publish; a connection the
//! vertex did not make (a process on this host) is served as before. A caller
//! that cannot be proven (no side-channel socket, no answer) gets `503`.
//!
//! The server only stores and serves: it cannot mint state. Still, it refuses
//! a publish in which any envelope is not signed by one of the rete's
//! authorised signers (read from the scope's `scope.json` at each publish), is
//! for another rete or node than its path says, or would lower a node's
//! version. A publish is all or nothing: the new tree is written to a fresh
//! directory and made live by renaming one pointer ([`crate::live`]).
//!
//! ```text
//! <store>/tree -> trees/5      symlink (Windows: tree.live holds 5), swapped atomically
//! <store>/trees/5/<node>/mgmt/{agent.json, vertices/flor.json}
//! ```

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::fs;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use flor_vertex::contract::{self, Trust};
use flor_vertex::envelope::{self, ArtifactKind};
use flor_vertex::file;
use flor_vertex::http::{self, tree, Parsed};
use flor_vertex::identity::Name;
use flor_vertex::limits::MAX_ARTIFACT_BYTES;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::{TcpListener, TcpStream};

use crate::caller_id::{self, Authority, Caller};
use crate::live::Live;
use crate::scope::{Scope, ScopeError};

/// The live-tree pointer in the store.
const TREE_LINK: &str = "tree";
/// Generations of the stored tree.
const TREES_DIR: &str = "trees";
/// Largest publish body: 64 nodes × (agent + vertex) at the artifact limit
/// would be 32 MiB; a pilot's tree is a few hundred KB. Bounded so a
/// misbehaving client cannot fill the management node's disk.
pub const MAX_PUBLISH_BYTES: u64 = 16 * 1024 * 1024;
/// Artifacts in one publish (two per node in C0, three in C1).
pub const MAX_PUBLISH_FILES: usize = 256;
/// Connections served at once; more wait in the kernel's accept queue.
const MAX_CONNECTIONS: usize = 32;
/// Time a client has to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes of the publish body read at a time (files are collected whole, each
/// at most MAX_ARTIFACT_BYTES, as the decoder hands them over).
const READ_CHUNK: usize = 16 * 1024;
/// Time a client has to send a whole publish body.
const BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// A refusal: HTTP status and a reason a person can act on.
#[derive(Debug)]
struct Refusal(u16, String);

fn refuse<T>(status: u16, msg: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal(status, msg.into()))
}

/// Which store and which rete this server serves.
struct Server {
    scope: Scope,
    /// The read listener's address, as configured (the `config` service's upstream).
    read: SocketAddr,
    /// The publish listener's address (`config-publish`'s upstream: its callers are operators).
    publish: SocketAddr,
    store: PathBuf,
    publish_lock: smol::lock::Mutex<()>,
    slots: std::sync::Arc<smol::lock::Semaphore>,
}

/// Why a management service's loopback listener could not be bound (this
/// server's and the metrics collector's).
#[derive(Debug)]
pub struct ListenError {
    /// The address asked for.
    pub addr: SocketAddr,
    /// Why the bind failed.
    pub source: io::Error,
}

impl fmt::Display for ListenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot listen on {}: {}", self.addr, self.source)
    }
}

impl std::error::Error for ListenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Why `flor config-server` could not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConfigServerError {
    /// The scope it checks publishes against could not be read.
    Scope(ScopeError),
    /// The store directory could not be created.
    Store(PathBuf, io::Error),
    /// A listener could not be bound.
    Listen(ListenError),
    /// A bound listener has no local address.
    LocalAddr(io::Error),
}

impl fmt::Display for ConfigServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigServerError::Scope(e) => write!(f, "{e}"),
            ConfigServerError::Store(p, e) => write!(f, "{}: {e}", p.display()),
            ConfigServerError::Listen(e) => write!(f, "{e}"),
            ConfigServerError::LocalAddr(e) => {
                write!(f, "reading the address a listener was bound to: {e}")
            }
        }
    }
}

impl std::error::Error for ConfigServerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigServerError::Scope(e) => Some(e),
            ConfigServerError::Store(_, e) | ConfigServerError::LocalAddr(e) => Some(e),
            ConfigServerError::Listen(e) => Some(e),
        }
    }
}

impl From<ListenError> for ConfigServerError {
    fn from(e: ListenError) -> Self {
        ConfigServerError::Listen(e)
    }
}

/// A loopback listener of a management service (this server's and the
/// metrics collector's), or why it cannot listen.
pub(crate) async fn listen(addr: SocketAddr) -> Result<TcpListener, ListenError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ListenError { addr, source })
}

/// Runs the config-server until killed.
pub fn run(
    scope: Scope,
    read: SocketAddr,
    publish: SocketAddr,
    store: PathBuf,
) -> Result<(), ConfigServerError> {
    let info = scope.info().map_err(ConfigServerError::Scope)?;
    if let Err(e) = fs::create_dir_all(store.join(TREES_DIR)) {
        return Err(ConfigServerError::Store(store, e));
    }
    smol::block_on(async move {
        let read_l = listen(read).await?;
        let pub_l = listen(publish).await?;
        log::info!(
            "config-server for rete {} serving {} (read on {}, publish on {})",
            info.rete,
            store.display(),
            read_l.local_addr().map_err(ConfigServerError::LocalAddr)?,
            pub_l.local_addr().map_err(ConfigServerError::LocalAddr)?
        );
        let server = Rc::new(Server {
            scope,
            read,
            publish,
            store,
            publish_lock: smol::lock::Mutex::new(()),
            slots: std::sync::Arc::new(smol::lock::Semaphore::new(MAX_CONNECTIONS)),
        });
        let ex = Rc::new(smol::LocalExecutor::new());
        let a = accept_loop(ex.clone(), server.clone(), read_l, false);
        let b = accept_loop(ex.clone(), server, pub_l, true);
        ex.run(smol::future::zip(a, b)).await;
        Ok(())
    })
}

async fn accept_loop(
    ex: Rc<smol::LocalExecutor<'static>>,
    server: Rc<Server>,
    l: TcpListener,
    publish: bool,
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
        let permit = server.slots.acquire_arc().await;
        let server = server.clone();
        ex.spawn(async move {
            if let Err(e) = serve(&server, stream, publish).await {
                log::debug!("connection ended: {e}");
            }
            drop(permit);
        })
        .detach();
    }
}

/// Writes one whole response (head and body) and flushes it.
pub(crate) async fn respond(
    stream: &mut TcpStream,
    status: u16,
    ctype: &str,
    body: &[u8],
) -> io::Result<()> {
    let mut head = [0u8; 256];
    let n = http::write_response(status, ctype, body.len() as u64, &mut head)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    stream.write_all(&head[..n]).await?;
    stream.write_all(body).await?;
    stream.flush().await
}

/// Who is on `stream`, and what this node's artifact says they may do
/// (`None`: no vertex artifact, so only local callers exist).
async fn who_calls(
    server: &Server,
    stream: &TcpStream,
    publish: bool,
) -> Result<(Caller, Option<Authority>), Refusal> {
    let unproven = |e: caller_id::ProveError| Refusal(503, format!("{e}\n"));
    let Some(cfg) = caller_id::live_vertex(&server.scope).map_err(unproven)? else {
        return Ok((Caller::Local, None));
    };
    let listen = if publish { server.publish } else { server.read };
    let auth = Authority::new(&cfg, listen, Some(server.publish));
    let io = |e: io::Error| Refusal(503, format!("connection addresses: {e}\n"));
    let (peer, local) = (
        stream.peer_addr().map_err(io)?,
        stream.local_addr().map_err(io)?,
    );
    let caller = caller_id::prove(&server.scope, auth.service.as_ref(), peer, local)
        .await
        .map_err(unproven)?;
    Ok((caller, Some(auth)))
}

/// Whether `caller` may publish (`node`: `None`) or read `node`'s artifacts.
fn allowed(caller: &Caller, auth: Option<&Authority>, node: Option<&Name>) -> bool {
    match (auth, node) {
        (None, _) => *caller == Caller::Local,
        (Some(a), Some(n)) => a.may_read(caller, n),
        (Some(a), None) => a.may_publish(caller),
    }
}

async fn serve(server: &Server, mut stream: TcpStream, publish: bool) -> io::Result<()> {
    let mut buf = vec![0u8; http::MAX_HEAD];
    let mut filled = 0;
    let head = smol::future::or(
        async {
            loop {
                let n = stream.read(&mut buf[filled..]).await?;
                if n == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed"));
                }
                filled += n;
                match http::parse_request(&buf[..filled]) {
                    Ok(Parsed::Partial) => continue,
                    Ok(Parsed::Complete(r)) => {
                        return Ok(Ok((
                            r.method == "POST",
                            r.method == "GET",
                            r.path.to_string(),
                            r.content_length,
                            r.head_len,
                            r.expect_continue,
                        )))
                    }
                    Err(e) => return Ok(Err(e)),
                }
            }
        },
        async {
            smol::Timer::after(HEAD_TIMEOUT).await;
            Err(io::Error::new(io::ErrorKind::TimedOut, "request head"))
        },
    )
    .await?;
    let (is_post, is_get, path, len, head_len, expect_continue) = match head {
        Ok(h) => h,
        Err(e) => return respond(&mut stream, 400, "text/plain", e.to_string().as_bytes()).await,
    };
    let (caller, auth) = match who_calls(server, &stream, publish).await {
        Ok(x) => x,
        Err(Refusal(status, msg)) => {
            log::warn!("refused ({status}): {}", msg.trim_end());
            return respond(&mut stream, status, "text/plain", msg.as_bytes()).await;
        }
    };
    let result = if publish {
        if !is_post || path != "/publish" {
            refuse(405, "this listener accepts only POST /publish\n")
        } else if !allowed(&caller, auth.as_ref(), None) {
            refuse(
                403,
                format!(
                    "{caller} may not publish: this node's ACL does not grant it config-publish\n"
                ),
            )
        } else {
            if expect_continue && len <= MAX_PUBLISH_BYTES {
                stream.write_all(http::CONTINUE).await?;
            }
            let pre = buf[head_len..filled].to_vec();
            let mut body = (&pre[..]).chain(&mut stream).take(len);
            let r = smol::future::or(handle_publish(server, &mut body, len), async {
                smol::Timer::after(BODY_TIMEOUT).await;
                refuse(408, "publish body did not arrive in time\n")
            })
            .await;
            if r.is_err() && len <= MAX_PUBLISH_BYTES {
                // Read the rest before answering: closing a socket with unread
                // bytes resets it, and the client would lose the reason.
                let _ = smol::future::or(
                    async {
                        let _ = smol::io::copy(&mut body, &mut smol::io::sink()).await;
                    },
                    async {
                        smol::Timer::after(BODY_TIMEOUT).await;
                    },
                )
                .await;
            }
            r
        }
    } else if !is_get {
        refuse(405, "this listener accepts only GET /artifact/<node>/...\n")
    } else {
        match artifact_path(&path) {
            Some((node, _)) if !allowed(&caller, auth.as_ref(), Some(&node)) => refuse(
                403,
                format!(
                    "{caller} may not read the artifacts of node {node}: a node reads only its own; operators (callers granted config-publish) read every node\n"
                ),
            ),
            _ => handle_get(server, &path),
        }
    };
    match result {
        Ok((ctype, body)) => {
            if publish {
                log::info!("publish by {caller}");
            } else {
                log::debug!("{path} read by {caller}");
            }
            respond(&mut stream, 200, ctype, &body).await
        }
        Err(Refusal(status, msg)) => {
            log::warn!("refused ({status}): {}", msg.trim_end());
            respond(&mut stream, status, "text/plain", msg.as_bytes()).await
        }
    }
}

/// Maps `/artifact/<node>/<rel>` to the stored file, refusing anything else.
fn artifact_path(path: &str) -> Option<(Name, String)> {
    let rest = path.strip_prefix("/artifact/")?;
    let (node, rel) = rest.split_once('/')?;
    let node = Name::new(node).ok()?;
    if contract::kind_of(rel).is_some() {
        Some((node, rel.to_string()))
    } else {
        None
    }
}

fn handle_get(server: &Server, path: &str) -> Result<(&'static str, Vec<u8>), Refusal> {
    let Some((node, rel)) = artifact_path(path) else {
        return refuse(
            404,
            "no such artifact path; use /artifact/<node>/mgmt/agent.json\n",
        );
    };
    match tree(&server.store).read_bounded(&Path::new(node.as_str()).join(&rel), MAX_ARTIFACT_BYTES)
    {
        Ok(b) => Ok(("application/json", b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            refuse(404, format!("nothing published for {node}/{rel}\n"))
        }
        Err(e) => refuse(500, format!("reading {node}/{rel}: {e}\n")),
    }
}

async fn handle_publish<R: smol::io::AsyncRead + Unpin>(
    server: &Server,
    body: &mut R,
    len: u64,
) -> Result<(&'static str, Vec<u8>), Refusal> {
    if len > MAX_PUBLISH_BYTES {
        return refuse(
            413,
            format!("publish body is over {MAX_PUBLISH_BYTES} bytes\n"),
        );
    }
    let info = server
        .scope
        .info()
        .map_err(|e| Refusal(500, format!("{e}\n")))?;
    let _guard = server.publish_lock.lock().await;
    let trees = server.store.join(TREES_DIR);
    let incoming = trees.join(format!(".incoming-{}", std::process::id()));
    let _ = fs::remove_dir_all(&incoming);
    let result = receive(server, &info, body, &incoming).await;
    let summary = match result {
        Ok(s) => s,
        Err(e) => {
            let _ = fs::remove_dir_all(&incoming);
            return Err(e);
        }
    };
    swap_in(&server.store, &incoming).map_err(|e| {
        let _ = fs::remove_dir_all(&incoming);
        Refusal(500, format!("storing the tree: {e}\n"))
    })?;
    let mut msg = String::from("published");
    for (node, v) in &summary {
        let _ = write!(msg, " {node} v{v}");
    }
    msg.push('\n');
    log::info!("{}", msg.trim_end());
    Ok(("text/plain", msg.into_bytes()))
}

/// One file of the publish being received.
struct Incoming {
    path: String,
    node: Name,
    rel: String,
    bytes: Vec<u8>,
}

/// Reads the body with the sans-IO [`tree::Decoder`] and checks every entry
/// into `incoming`; returns node -> agent version.
async fn receive<R: smol::io::AsyncRead + Unpin>(
    server: &Server,
    info: &crate::scope::ScopeInfo,
    body: &mut R,
    incoming: &Path,
) -> Result<BTreeMap<String, u32>, Refusal> {
    let bad = |e: tree::TreeError| Refusal(400, format!("{e}\n"));
    let mut dec = tree::Decoder::new();
    let mut buf = vec![0u8; READ_CHUNK];
    let (mut start, mut end) = (0, 0);
    let mut current: Option<Incoming> = None;
    let mut seen: Vec<String> = Vec::new();
    let mut versions: BTreeMap<String, u32> = BTreeMap::new();
    let mut vertex_nodes: Vec<String> = Vec::new();
    loop {
        let (used, item) = dec.decode(&buf[start..end]).map_err(bad)?;
        start += used;
        match item {
            None => {
                let n = body
                    .read(&mut buf)
                    .await
                    .map_err(|e| Refusal(400, format!("reading publish body: {e}\n")))?;
                if n == 0 {
                    return Err(bad(tree::TreeError::Truncated));
                }
                (start, end) = (0, n);
            }
            Some(tree::Item::End) => break,
            Some(tree::Item::File { len, path }) => {
                let path = path.to_string();
                if seen.len() >= MAX_PUBLISH_FILES {
                    return refuse(
                        413,
                        format!("publish has more than {MAX_PUBLISH_FILES} files\n"),
                    );
                }
                if seen.contains(&path) {
                    return refuse(400, format!("{path} appears twice in the publish\n"));
                }
                if len > MAX_ARTIFACT_BYTES as u64 {
                    return refuse(413, format!("{path} is larger than MAX_ARTIFACT_BYTES\n"));
                }
                let Some((node, rel)) = artifact_path(&format!("/artifact/{path}")) else {
                    return refuse(
                        400,
                        format!(
                            "{path} is not <node>/mgmt/agent.json or <node>/mgmt/vertices/<name>.json\n"
                        ),
                    );
                };
                current = Some(Incoming {
                    path,
                    node,
                    rel,
                    bytes: Vec::with_capacity(len as usize),
                });
            }
            Some(tree::Item::Data { bytes, last }) => {
                let Some(f) = current.as_mut() else { continue };
                f.bytes.extend_from_slice(bytes);
                if !last {
                    continue;
                }
                let Some(f) = current.take() else { continue };
                let (kind, version) = check_and_store(server, info, incoming, &f)?;
                if kind == ArtifactKind::Agent {
                    versions.insert(f.node.to_string(), version);
                } else {
                    vertex_nodes.push(f.node.to_string());
                }
                seen.push(f.path);
            }
        }
    }
    if let Some(n) = vertex_nodes.iter().find(|n| !versions.contains_key(*n)) {
        return refuse(
            400,
            format!("node {n} has vertex artifacts but no mgmt/agent.json\n"),
        );
    }
    if versions.is_empty() {
        return refuse(400, "publish holds no artifacts\n");
    }
    Ok(versions)
}

/// Verifies one received artifact (signer, rete, node, no lower version than
/// the stored one) and writes it into `incoming`; returns its kind and version.
fn check_and_store(
    server: &Server,
    info: &crate::scope::ScopeInfo,
    incoming: &Path,
    f: &Incoming,
) -> Result<(ArtifactKind, u32), Refusal> {
    let path = &f.path;
    let kind = contract::kind_of(&f.rel).unwrap_or(ArtifactKind::Vertex);
    let trust = Trust {
        rete: &info.rete,
        node: &f.node,
        signers: &info.mgmt_signers,
        current: None,
    };
    let version = contract::open_at(&f.rel, &f.bytes, &trust)
        .map_err(|e| Refusal(403, format!("{path} refused: {e}\n")))?
        .version;
    let stored = tree(&server.store).read_bounded(Path::new(path), MAX_ARTIFACT_BYTES);
    if let Ok(old) = stored {
        if let Ok(h) = envelope::peek_header(&old) {
            contract::may_replace(h.version, &old, version, &f.bytes)
                .map_err(|e| Refusal(409, format!("{path} refused: {e}\n")))?;
        }
    }
    file::write_atomic(&incoming.join(path), &f.bytes, 0o644)
        .map_err(|e| Refusal(500, format!("storing {path}: {e}\n")))?;
    Ok((kind, version))
}

/// The live-tree pointer of a store ([`crate::live`]).
fn tree(store: &Path) -> Live<'_> {
    Live {
        root: store,
        name: TREE_LINK,
        gens: TREES_DIR,
    }
}

/// Makes `incoming` the live tree: rename to the next generation, swap the pointer, drop the old one.
fn swap_in(store: &Path, incoming: &Path) -> io::Result<()> {
    let live = tree(store);
    let old = live.read();
    let next = fs::read_dir(store.join(TREES_DIR))?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u64>().ok())
        .max()
        .map_or(1, |m| m + 1);
    fs::rename(incoming, live.gen_dir(next))?;
    file::sync_dir(&store.join(TREES_DIR))?;
    live.point(next)?;
    if let Some(old) = old {
        let _ = fs::remove_dir_all(live.gen_dir(old));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_artifact_paths_map_to_files() {
        assert_eq!(
            artifact_path("/artifact/alpha/mgmt/agent.json"),
            Some((Name::new("alpha").unwrap(), "mgmt/agent.json".into()))
        );
        assert!(artifact_path("/artifact/alpha/mgmt/vertices/flor.json").is_some());
        for bad in [
            "/artifact/../mgmt/agent.json",
            "/artifact/alpha/../../etc/passwd",
            "/artifact/alpha/mgmt/vertices/../agent.json",
            "/artifact/Alpha/mgmt/agent.json",
            "/artifact/alpha/scope.json",
            "/other",
        ] {
            assert_eq!(artifact_path(bad), None, "{bad}");
        }
    }
}
