//! `flor vertex run`: the data-plane process the agent supervises.
//!
//! It reads `mgmt/vertices/<name>.json` from the scope, verifies the envelope
//! against the scope's trusted management signers, loads the certificates
//! the artifact names, binds, and then writes its actual bindings to
//! `<runtime root>/vertices/<name>.status.json`. That file appearing is the
//! vertex's "ready" signal to the agent; the process then serves until
//! SIGTERM/SIGINT, when it closes its connections with SHUTDOWN so callers
//! redial its successor at once, and removes the status file.
//!
//! Started by the agent (`--agent-pipe`), the vertex also reads requests on
//! its standard input, one line each, and answers one line on its standard
//! output: [`APPLY`] re-reads and verifies the live artifact and, when only
//! its permission tables changed (`VertexConfig::change_to`), swaps the ACL
//! and the routes in place — established flows keep running — and answers
//! `applied <version>`; otherwise it changes nothing and says why. A pipe
//! needs no file permissions and no port, works the same on Windows, and
//! belongs to exactly one agent.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use argh::FromArgs;
use flor_vertex::artifact::{key_path, Addr, VertexConfig};
use flor_vertex::contract::{self, ContractError};
use flor_vertex::file;
use flor_vertex::identity::{Kind, SpiffeId};
use flor_vertex::limits::{MAX_ARTIFACT_BYTES, MAX_SOCKS_LISTENERS, SHUTDOWN_GRACE_MS};
use flor_vertex::net::{self, Credentials, NetError, ResetSecret, VertexSetup};
use serde::{Deserialize, Serialize};
use smol::stream::StreamExt;
use std::io::Write as _;

use crate::scope::{Scope, ScopeError};

/// Largest PEM file (certificate chain or key) a vertex reads.
const MAX_PEM_FILE: usize = flor_vertex::limits::MAX_PEM_LEN;

/// Vertex commands.
#[derive(FromArgs)]
#[argh(subcommand, name = "vertex")]
pub struct VertexCmd {
    #[argh(subcommand)]
    cmd: VertexSub,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum VertexSub {
    Run(RunArgs),
}

/// Run a vertex in the foreground (normally started by `flor agent run`).
#[derive(FromArgs)]
#[argh(subcommand, name = "run")]
struct RunArgs {
    /// rete scope (default: the only one enrolled)
    #[argh(option)]
    rete: Option<String>,
    /// vertex name (default: flor)
    #[argh(option, default = "String::from(\"flor\")")]
    name: String,
    /// read `apply` requests on standard input and answer on standard output (set by the agent)
    #[argh(switch)]
    agent_pipe: bool,
}

/// The request line that asks a vertex to apply the live artifact in place.
pub const APPLY: &str = "apply\n";
/// How a vertex's answer to [`APPLY`] starts when it applied; the version follows.
pub const APPLIED: &str = "applied ";
/// The request line that asks a vertex for its counters.
pub const COUNTERS: &str = "counters\n";
/// How a vertex's answer to [`COUNTERS`] starts; exposition lines follow,
/// each ended by [`COUNTERS_SEP`] instead of a newline (one answer, one line).
pub const COUNTERS_ANSWER: &str = "counters ";
/// What ends each exposition line inside a [`COUNTERS_ANSWER`].
pub const COUNTERS_SEP: char = ';';

/// Why a vertex could not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum VertexCmdError {
    /// The scope is not enrolled or unreadable.
    Scope(ScopeError),
    /// A file the artifact needs could not be read.
    Read(PathBuf, std::io::Error),
    /// The artifact was refused (envelope, payload or name).
    Refused(PathBuf, ContractError),
    /// A certificate or key was refused.
    Credentials(Box<SpiffeId>, NetError),
    /// Binding or TLS setup failed.
    Net(NetError),
    /// The status file could not be written.
    Status(PathBuf, std::io::Error),
    /// The vertex name is not a valid name.
    BadName(String),
    /// The stop-signal handlers could not be installed.
    Signals(crate::process::ProcessError),
}

impl fmt::Display for VertexCmdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VertexCmdError::Scope(e) => write!(f, "{e}"),
            VertexCmdError::Read(p, e) => write!(f, "{}: {e}", p.display()),
            VertexCmdError::Refused(p, e) => write!(f, "{}: refused: {e}", p.display()),
            VertexCmdError::Credentials(id, e) => write!(f, "credentials of {id}: {e}"),
            VertexCmdError::Net(e) => write!(f, "{e}"),
            VertexCmdError::Status(p, e) => write!(f, "cannot write {}: {e}", p.display()),
            VertexCmdError::BadName(n) => write!(f, "vertex name {n:?} is not a valid name"),
            VertexCmdError::Signals(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for VertexCmdError {}

/// One SOCKS5 listener as the vertex bound it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocksStatus {
    /// The caller identity of the listener.
    pub principal: SpiffeId,
    /// Preferred port (artifact port + scope offset).
    pub preferred: u16,
    /// Bound port.
    pub actual: u16,
}

/// `<runtime>/vertices/<name>.status.json`: what a running vertex bound.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VertexStatus {
    /// The vertex process.
    pub pid: u32,
    /// The artifact version it runs.
    pub version: u32,
    /// Bound QUIC address, if it serves.
    pub udp: Option<Addr>,
    /// Bound SOCKS5 listeners.
    pub socks: heapless::Vec<SocksStatus, MAX_SOCKS_LISTENERS>,
}

impl VertexStatus {
    /// Where a scope's vertex writes its status.
    pub fn path(scope: &Scope, name: &str) -> PathBuf {
        scope
            .runtime
            .join("vertices")
            .join(format!("{name}.status.json"))
    }

    /// Reads a status file (None if absent or unreadable: the vertex is not ready).
    pub fn read(path: &Path) -> Option<VertexStatus> {
        let bytes = file::read_bounded(path, 8 * 1024).ok()?;
        flor_vertex::artifact::parse_payload(&bytes).ok()
    }
}

fn read(path: PathBuf, max: usize) -> Result<Vec<u8>, VertexCmdError> {
    file::read_bounded(&path, max).map_err(|e| VertexCmdError::Read(path, e))
}

/// Reads and verifies the live artifact of vertex `name`: its configuration and version.
pub fn load_config(scope: &Scope, name: &str) -> Result<(VertexConfig, u32), VertexCmdError> {
    let info = scope.info().map_err(VertexCmdError::Scope)?;
    let vname = flor_vertex::identity::Name::new(name)
        .map_err(|_| VertexCmdError::BadName(name.to_string()))?;
    let rel = contract::vertex_rel(&vname);
    let path = crate::store::live_path(scope, &rel).unwrap_or_else(|| scope.install.join(&rel));
    let bytes = read(path.clone(), MAX_ARTIFACT_BYTES)?;
    // The agent enforces monotonic versions when it installs; the vertex
    // runs whatever verified artifact is installed (a rollback included).
    let (header, cfg) = contract::open_vertex(&bytes, &crate::store::trust(&info, None), &vname)
        .map_err(|e| VertexCmdError::Refused(path, e))?;
    Ok((cfg, header.version))
}

/// Loads and verifies everything a vertex needs from its scope.
pub fn load(scope: &Scope, name: &str) -> Result<(VertexSetup, u32), VertexCmdError> {
    let info = scope.info().map_err(VertexCmdError::Scope)?;
    let (cfg, version) = load_config(scope, name)?;
    let ca_pem = read(scope.path(&cfg.ca), MAX_PEM_FILE)?;
    let mut credentials = Vec::with_capacity(cfg.principals.len());
    let mut keys = Vec::with_capacity(cfg.principals.len());
    for p in cfg.principals.iter() {
        let cert = read(scope.path(&p.cert), MAX_PEM_FILE)?;
        let key = read(scope.path(&p.key), MAX_PEM_FILE)?;
        let c = Credentials::from_pem(p.id.clone(), &cert, &key)
            .map_err(|e| VertexCmdError::Credentials(Box::new(p.id.clone()), e))?;
        credentials.push(Arc::new(c));
        keys.push(key);
    }
    let node = SpiffeId::new(info.rete.clone(), Kind::Node, info.node.clone());
    let node_key = file::read_bounded(&scope.path(&key_path(&node)), MAX_PEM_FILE).ok();
    let setup = VertexSetup {
        cfg,
        ca_pem,
        credentials,
        port_offset: info.port_offset,
        socks_ip: net::SOCKS_IP,
        reset_secret: reset_secret(name, node_key.as_deref(), &keys),
        runtime: Some(scope.runtime.clone()),
    };
    Ok((setup, version))
}

/// Writes what a running vertex bound, for the agent and `flor agent status`.
fn write_status(
    path: &Path,
    running: &net::RunningVertex,
    version: u32,
) -> Result<(), VertexCmdError> {
    let mut socks = heapless::Vec::new();
    for b in &running.socks {
        let _ = socks.push(SocksStatus {
            principal: b.principal.clone(),
            preferred: b.preferred,
            actual: b.actual,
        });
    }
    let status = VertexStatus {
        pid: std::process::id(),
        version,
        udp: running.udp.map(Addr),
        socks,
    };
    let mut buf = vec![0u8; 8 * 1024];
    let n = serde_json_core::to_slice(&status, &mut buf).map_err(|_| {
        VertexCmdError::Status(path.to_path_buf(), std::io::ErrorKind::InvalidData.into())
    })?;
    buf.truncate(n);
    file::write_atomic(path, &buf, 0o644).map_err(|e| VertexCmdError::Status(path.to_path_buf(), e))
}

/// Answers one `apply`: the line to write back.
fn apply(
    scope: &Scope,
    name: &str,
    status_path: &Path,
    running: &mut net::RunningVertex,
) -> String {
    let (cfg, version) = match load_config(scope, name) {
        Ok(x) => x,
        Err(e) => return format!("refused: {e}"),
    };
    let change = running.apply(cfg);
    if !change.is_hot() {
        return format!("restart: v{version} {change}");
    }
    if let Err(e) = write_status(status_path, running, version) {
        log::warn!("{e}");
    }
    log::info!("applied v{version} in place ({change})");
    format!("{APPLIED}{version}")
}

/// Answers one `counters`: the process's counters and its flows in progress.
fn counters(running: &net::RunningVertex) -> String {
    use flor_vertex::counters::{render_vertex, series};
    let mut out = String::from(COUNTERS_ANSWER);
    let (serving, dialing) = running.active_flows();
    // Writing into a String cannot fail.
    let _ = render_vertex(&mut out, COUNTERS_SEP);
    for (side, n) in [("serve", serving), ("dial", dialing)] {
        let _ = series(
            &mut out,
            "flor_flows_active",
            &[("side", side)],
            n,
            COUNTERS_SEP,
        );
    }
    out
}

/// The serving endpoint's stateless-reset secret: from the node principal's
/// key, which every version of the artifact shares, so a vertex restarted for
/// a new version still resets its predecessor's connections. A scope laid
/// out without the node key (hand-made test scopes) falls back to the keys
/// the artifact names, stable while its principals are; failing all, random.
fn reset_secret(name: &str, node_key: Option<&[u8]>, keys: &[Vec<u8>]) -> ResetSecret {
    if let Some(s) = node_key.and_then(|k| ResetSecret::from_key_pems([k], name)) {
        return s;
    }
    log::info!("no node key in the scope: stateless-reset key from the artifact's principals");
    ResetSecret::from_key_pems(keys.iter().map(Vec::as_slice), name).unwrap_or_else(|| {
        log::warn!("no private key to derive a stateless-reset key from; using a random one");
        ResetSecret::random()
    })
}

impl VertexCmd {
    /// The scope named with `--rete`, if any.
    pub fn rete(&self) -> Option<&str> {
        match &self.cmd {
            VertexSub::Run(a) => a.rete.as_deref(),
        }
    }

    /// Whether standard output is the agent's apply pipe (`--agent-pipe`).
    pub fn agent_pipe(&self) -> bool {
        match &self.cmd {
            VertexSub::Run(a) => a.agent_pipe,
        }
    }

    /// Runs the subcommand until SIGTERM or SIGINT (Ctrl-C; Windows has only
    /// that), then closes every connection with SHUTDOWN, waits at most
    /// [`SHUTDOWN_GRACE_MS`] for the close frames to leave, removes the status
    /// file and returns `Ok` (exit 0). Returns early only on error.
    pub fn run(self) -> Result<(), VertexCmdError> {
        let VertexSub::Run(args) = self.cmd;
        crate::process::raise_open_files(flor_vertex::limits::OPEN_FILES_WANTED);
        let scope = Scope::find(args.rete.as_deref()).map_err(VertexCmdError::Scope)?;
        let status_path = VertexStatus::path(&scope, &args.name);
        // A stale status from an earlier process must not read as "ready".
        let _ = std::fs::remove_file(&status_path);
        let (setup, version) = load(&scope, &args.name)?;
        // Installed before serving, so a stop signal never finds the default
        // handler (which would exit without closing the connections).
        let mut signals = crate::process::stop_signals().map_err(VertexCmdError::Signals)?;
        net::block_on(async {
            // In a task of its own: the future given to block_on is polled on
            // every wake-up of the vertex, and each poll of the signal stream
            // is a read of its pipe (one wasted system call per packet).
            let stop = net::spawn(async move { signals.next().await });
            let mut running = net::start(setup).map_err(VertexCmdError::Net)?;
            write_status(&status_path, &running, version)?;
            log::info!(
                "vertex ready: version {version}, status in {}",
                status_path.display()
            );
            let signal = {
                let pipe = async {
                    if args.agent_pipe {
                        // Requests come from a plain thread reading standard
                        // input: a pipe cannot join the reactor on every platform.
                        let (tx, rx) = smol::channel::unbounded::<String>();
                        let reader = std::thread::Builder::new().name("agent-pipe".into()).spawn(
                            move || {
                                use std::io::BufRead as _;
                                for l in std::io::stdin().lock().lines() {
                                    let Ok(l) = l else { return };
                                    if tx.send_blocking(l).is_err() {
                                        return;
                                    }
                                }
                            },
                        );
                        if let Err(e) = reader {
                            log::warn!("cannot read the agent's requests: {e}");
                        }
                        while let Ok(line) = rx.recv().await {
                            let answer = if line.trim() == APPLY.trim() {
                                apply(&scope, &args.name, &status_path, &mut running)
                            } else if line.trim() == COUNTERS.trim() {
                                counters(&running)
                            } else {
                                format!("refused: unknown request {:?}", line.trim())
                            };
                            let mut out = std::io::stdout().lock();
                            let _ = writeln!(out, "{answer}").and_then(|()| out.flush());
                        }
                        // The agent went away (its end of the pipe closed): keep
                        // serving; the next agent stops this process first.
                    }
                    smol::future::pending().await
                };
                smol::future::or(stop, pipe).await
            };
            // Callers get SHUTDOWN and redial the next process at once,
            // instead of waiting for a connection that will never answer.
            log::info!("vertex stopping ({signal:?}): closing connections");
            running.shutdown();
            smol::future::or(running.wait_idle(), async {
                smol::Timer::after(Duration::from_millis(SHUTDOWN_GRACE_MS)).await;
            })
            .await;
            // The agent must not read a stopped vertex as ready.
            let _ = std::fs::remove_file(&status_path);
            drop(running);
            Ok(())
        })
    }
}
