//! `retectl publish`: push a compiled tree to the rete's config-server over Florete.
//!
//! ```text
//! <compiled-dir>/<node>/mgmt/{agent.json, vertices/*.json}
//!     -> one POST /publish body (flor_vertex::http::tree framing)
//!     -> mTLS QUIC flow as user/<operator> to service `config-publish`
//!        at the vertex hosting the config-server (flor_vertex::net::Dialer)
//!     -> config-server checks every envelope, refuses rollbacks, swaps atomically
//! ```
//!
//! The operator publishes as their own `user/<op>` identity (a certificate
//! issued like any other user's); the rete's ACL decides whether that user's
//! roles reach `config-publish` (group `config-write`). Where the service is
//! comes from the tree itself: every agent.json names the config-server's
//! vertex address, and `config-publish` is published next to `config`.
//! `--to` overrides it.

use flor_vertex::contract::{AGENT_REL, VERTICES_REL};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use flor_vertex::artifact::AgentConfig;
use flor_vertex::envelope;
use flor_vertex::http::{self, tree};
use flor_vertex::identity::{Dialable, Kind, Name, SpiffeId};
use flor_vertex::net::{read_response, Credentials, Dialer, ResponseError};
use smol::io::AsyncWriteExt;

use crate::operator::{self, Operator};
use crate::pki::CertInfo;

/// The Florete service name of the config-server's publish listener.
pub const PUBLISH_SERVICE: &str = "config-publish";
/// Longest answer read from the config-server (its reasons are one line).
const MAX_ANSWER: usize = 64 * 1024;
/// How long the whole publish (dial, upload, answer) may take.
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// `retectl publish`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The compiled tree (`retectl compile --out <dir>`).
    pub compiled: PathBuf,
    /// The operator: a user name (olga), found in this machine's flor scope of
    /// the tree's rete or in --key-dir; or the path of a user certificate (PEM).
    #[arg(long = "as")]
    pub who: String,
    /// The private key (default: found with a user name; next to a certificate
    /// path, with extension `.key`).
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Where a user name's certificate and key are: a flor scope's install root
    /// or a directory holding <name>.crt and <name>.key.
    #[arg(long)]
    pub key_dir: Option<PathBuf>,
    /// The rete CA certificate (default: certs/ca.crt of the rete repo around
    /// the current directory, else the flor scope's ca.crt).
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// UDP address of the vertex publishing config-publish (default: from the tree's agent.json).
    #[arg(long)]
    pub to: Option<SocketAddr>,
    /// Print one JSON object (docs/config-server.md lists its fields).
    #[arg(long)]
    pub json: bool,
}

/// Why a publish failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// A file could not be read.
    #[error(transparent)]
    Read(#[from] crate::fsutil::FsError),
    /// The tree holds nothing publishable.
    #[error("{0}: no <node>/mgmt/agent.json found; is this a `retectl compile` output directory?")]
    EmptyTree(PathBuf),
    /// An artifact in the tree is not a sealed envelope.
    #[error("{path}: not a signed artifact: {reason}")]
    BadArtifact {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The operator's identity or the CA could not be found.
    #[error(transparent)]
    Operator(#[from] crate::operator::OperatorError),
    /// The certificate is not a user SVID.
    #[error("{0}: expected a certificate with one URI SAN spiffe://<rete>/user/<name>")]
    NotAUser(PathBuf),
    /// Credentials or dialer setup failed.
    #[error("{0}")]
    Setup(String),
    /// The flow to config-publish could not be opened.
    #[error("cannot reach {target} at {addr}: {reason}")]
    Dial {
        /// The service.
        target: String,
        /// The vertex address.
        addr: SocketAddr,
        /// Why (denied, unreachable, ...).
        reason: String,
    },
    /// The transfer broke.
    #[error("publish transfer failed: {0}")]
    Io(String),
    /// The config-server refused the tree.
    #[error("config-server refused the publish (HTTP {status}): {body}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Its reason.
        body: String,
    },
}

fn read(path: &Path) -> Result<Vec<u8>, PublishError> {
    Ok(std::fs::read(path).map_err(crate::fsutil::io_at(path))?)
}

/// Collects `<node>/mgmt/agent.json` and `<node>/mgmt/vertices/*.json`, sorted, as (path, bytes).
pub fn collect(dir: &Path) -> Result<Vec<(String, Vec<u8>)>, PublishError> {
    let mut nodes: Vec<String> = std::fs::read_dir(dir)
        .map_err(crate::fsutil::io_at(dir))?
        .flatten()
        .filter(|e| e.path().join(AGENT_REL).is_file())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| Name::new(n).is_ok())
        .collect();
    nodes.sort();
    let mut files = Vec::new();
    for node in nodes {
        let rel = format!("{node}/{AGENT_REL}");
        files.push((rel.clone(), read(&dir.join(&rel))?));
        let vdir = dir.join(&node).join(VERTICES_REL);
        let mut vs: Vec<String> = std::fs::read_dir(&vdir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| n.ends_with(".json"))
            .collect();
        vs.sort();
        for v in vs {
            let rel = format!("{node}/{VERTICES_REL}{v}");
            files.push((rel.clone(), read(&dir.join(&rel))?));
        }
    }
    if files.is_empty() {
        return Err(PublishError::EmptyTree(dir.to_path_buf()));
    }
    Ok(files)
}

/// The publish body for `files`.
pub fn body(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = tree::MAGIC.to_vec();
    for (path, bytes) in files {
        tree::push_file(&mut out, path, bytes);
    }
    out.extend_from_slice(tree::END);
    out
}

/// The config-server's vertex address, from the first agent.json in the tree.
fn config_server_addr(dir: &Path, files: &[(String, Vec<u8>)]) -> Result<SocketAddr, PublishError> {
    let (path, bytes) = files
        .iter()
        .find(|(p, _)| p.strip_suffix(AGENT_REL).is_some_and(|n| n.ends_with('/')))
        .ok_or_else(|| PublishError::EmptyTree(dir.to_path_buf()))?;
    #[derive(serde::Deserialize)]
    struct Env {
        payload: AgentConfig,
    }
    let bad = |reason: String| PublishError::BadArtifact {
        path: dir.join(path),
        reason,
    };
    envelope::peek_header(bytes).map_err(|e| bad(e.to_string()))?;
    let env: Env = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    Ok(env.payload.config_server.addr.0)
}

/// `retectl publish`.
pub fn run(args: Args) -> Result<(), PublishError> {
    let files = collect(&args.compiled)?;
    for (path, bytes) in &files {
        envelope::peek_header(bytes).map_err(|e| PublishError::BadArtifact {
            path: args.compiled.join(path),
            reason: e.to_string(),
        })?;
    }
    let addr = match args.to {
        Some(a) => a,
        None => config_server_addr(&args.compiled, &files)?,
    };
    let who = operator(&args, &files)?;
    let cert = read(&who.cert)?;
    let key = read(&who.key)?;
    let ca = read(&who.ca)?;
    let info = CertInfo::parse(&who.cert, &cert).map_err(|e| PublishError::Setup(e.to_string()))?;
    let me = match info.uris.as_slice() {
        [uri] => SpiffeId::parse(uri).ok(),
        _ => None,
    }
    .filter(|id| id.kind() == Kind::User)
    .ok_or_else(|| PublishError::NotAUser(who.cert.clone()))?;
    let target = Dialable::service(
        me.trust_domain().clone(),
        None,
        Name::new(PUBLISH_SERVICE).map_err(|e| PublishError::Setup(e.to_string()))?,
    );
    let creds = Credentials::from_pem(me.clone(), &cert, &key)
        .map_err(|e| PublishError::Setup(format!("{}: {e}", who.cert.display())))?;
    let body = body(&files);
    let answer = smol::block_on(async {
        smol::future::or(send(&ca, creds, &target, addr, &body), async {
            smol::Timer::after(TIMEOUT).await;
            Err(PublishError::Io("timed out".into()))
        })
        .await
    })?;
    if args.json {
        let out = serde_json::json!({
            "published": files.len(),
            "as": me.to_string(),
            "service": target.id().to_string(),
            "to": addr.to_string(),
            "answer": answer.trim_end(),
        });
        println!("{out}");
    } else {
        println!(
            "published {} artifacts as {me} to {} at {addr}: {}",
            files.len(),
            target.id(),
            answer.trim_end()
        );
    }
    Ok(())
}

/// The operator's certificate, key and CA from `--as` (a name or a path).
fn operator(args: &Args, files: &[(String, Vec<u8>)]) -> Result<Operator, PublishError> {
    if operator::is_path(&args.who) {
        let cert = PathBuf::from(&args.who);
        let ca = match &args.ca {
            Some(c) => c.clone(),
            None => std::env::current_dir()
                .ok()
                .and_then(|d| operator::repo_root(&d))
                .map(|r| r.join(crate::pki::CA_CERT))
                .filter(|c| c.is_file())
                .unwrap_or_else(|| PathBuf::from(crate::pki::CA_CERT)),
        };
        return Ok(Operator {
            key: args
                .key
                .clone()
                .unwrap_or_else(|| cert.with_extension("key")),
            cert,
            ca,
        });
    }
    // A name: the rete is the tree's own (every envelope names it).
    let rete = files
        .iter()
        .find_map(|(_, b)| envelope::peek_header(b).ok().map(|h| h.rete))
        .ok_or_else(|| PublishError::EmptyTree(args.compiled.clone()))?;
    let cwd = std::env::current_dir().unwrap_or_default();
    let mut who = operator::find(
        &args.who,
        &rete,
        args.key_dir.as_deref(),
        &operator::flor_home(),
        &cwd,
        args.ca.as_deref(),
    )?;
    if let Some(k) = &args.key {
        who.key = k.clone();
    }
    Ok(who)
}

async fn send(
    ca: &[u8],
    creds: Credentials,
    target: &Dialable,
    addr: SocketAddr,
    body: &[u8],
) -> Result<String, PublishError> {
    let dialer = Dialer::new(ca).map_err(|e| PublishError::Setup(e.to_string()))?;
    let caller = Arc::new(creds);
    let mut flow = dialer
        .connect(&caller, target, addr)
        .await
        .map_err(|e| PublishError::Dial {
            target: target.id().to_string(),
            addr,
            reason: e.to_string(),
        })?;
    let io = |e: std::io::Error| PublishError::Io(e.to_string());
    let mut head = [0u8; 512];
    let n = http::write_request(
        "POST",
        PUBLISH_SERVICE,
        "/publish",
        Some(body.len() as u64),
        &mut head,
    )
    .map_err(|e| PublishError::Io(e.to_string()))?;
    flow.write_all(&head[..n]).await.map_err(io)?;
    flow.write_all(body).await.map_err(io)?;
    flow.flush().await.map_err(io)?;
    // The answer: a short text body (a reason or a summary).
    let (status, answer) = read_response(&mut flow, MAX_ANSWER)
        .await
        .map_err(|e| match e {
            ResponseError::Closed => {
                PublishError::Io("the config-server closed the flow without an answer".into())
            }
            e => PublishError::Io(e.to_string()),
        })?;
    let text = String::from_utf8_lossy(&answer).into_owned();
    if status != 200 {
        return Err(PublishError::Refused {
            status,
            body: text.trim_end().to_string(),
        });
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_is_collected_sorted_and_framed() {
        let dir = tempfile::tempdir().unwrap();
        for (p, b) in [
            ("beta/mgmt/agent.json", "B"),
            ("beta/mgmt/vertices/flor.json", "BV"),
            ("alpha/mgmt/agent.json", "A"),
            ("alpha/mgmt/vertices/flor.json", "AV"),
            ("notes/readme.txt", "x"),
        ] {
            let f = dir.path().join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, b).unwrap();
        }
        let files = collect(dir.path()).unwrap();
        let paths: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "alpha/mgmt/agent.json",
                "alpha/mgmt/vertices/flor.json",
                "beta/mgmt/agent.json",
                "beta/mgmt/vertices/flor.json"
            ]
        );
        let b = body(&files);
        assert!(b.starts_with(b"florete-tree/1\nfile 1 alpha/mgmt/agent.json\nA"));
        assert!(b.ends_with(b"file 2 beta/mgmt/vertices/flor.json\nBVend\n"));
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            collect(empty.path()),
            Err(PublishError::EmptyTree(_))
        ));
    }
}
