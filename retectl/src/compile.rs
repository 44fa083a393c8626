//! `retectl compile`: the thin shell around [`crate::artifacts`]. It checks
//! the repo by every rule, loads the signer's key, has every node built and
//! sealed once, and writes the sealed bytes to `<out>/<node>/mgmt/`.
//!
//! The device-limits rule needs sealed bytes, so here it runs on the real
//! ones ([`crate::validate::Pending::finish`] with the signer's key): the bytes
//! the rule measured are the bytes written. Without a key, or when other rules
//! already failed, the limits are checked the way `retectl validate` checks
//! them (a throwaway key), so the operator gets the same report either way.

use std::collections::BTreeMap;

use flor_vertex::envelope;
use flor_vertex::identity::{Kind, SpiffeId};

use crate::artifacts::{mgmt_signers, Compiled, Signing, AGENT_PATH, VERTEX_PATH};
use crate::checked::{Checked, Rete};
use crate::validate::{self, ValidateError};

/// `retectl compile`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The rete repo.
    #[arg(default_value = ".")]
    pub repo: std::path::PathBuf,
    /// Compile this node (repeatable).
    #[arg(long = "node", required_unless_present = "all", conflicts_with = "all")]
    pub nodes: Vec<String>,
    /// Compile every node.
    #[arg(long)]
    pub all: bool,
    /// Output tree: <out>/<node>/mgmt/agent.json and <out>/<node>/mgmt/vertices/flor.json.
    #[arg(long)]
    pub out: std::path::PathBuf,
    /// The management-plane signer to sign with (default: the first of mgmt_signers).
    #[arg(long)]
    pub signer: Option<String>,
    #[command(flatten)]
    keys: crate::ca::KeysArg,
    /// Print one JSON object on stdout (docs/yaml.md lists its fields).
    #[arg(long)]
    pub json: bool,
}

/// Why `compile` failed.
#[derive(Debug, thiserror::Error)]
pub enum CompileCmdError {
    /// Validation failed (problems were printed).
    #[error(transparent)]
    Invalid(#[from] ValidateError),
    /// A key or certificate is missing or wrong.
    #[error(transparent)]
    Pki(#[from] crate::pki::PkiError),
    /// Writing the tree failed.
    #[error(transparent)]
    Fs(#[from] crate::fsutil::FsError),
    /// A bad flag.
    #[error("{0}")]
    Usage(String),
    /// The output already holds artifacts the new ones would not supersede.
    #[error("{path}: holds version {old}, and this compile is version {new} with different content; bump `version:` in rete.yaml (devices refuse a version that is not newer)")]
    VersionNotBumped {
        /// The existing artifact.
        path: std::path::PathBuf,
        /// Its version.
        old: u32,
        /// The new version.
        new: u32,
    },
}

/// The key `args` asks for, once the rete passed every rule but the device
/// limits: the CA is there, `--signer` is a signer of the rete, its key
/// matches its certificate.
fn signing(args: &Args, checked: &Checked) -> Result<Signing, CompileCmdError> {
    let rete = &checked.rete;
    if checked.certs.ca.is_none() {
        return Err(crate::pki::PkiError::NoCa(args.repo.join(crate::pki::CA_CERT)).into());
    }
    let signer_name = match &args.signer {
        Some(s) => s.clone(),
        None => rete
            .signers
            .first()
            .map(|s| s.name.to_string())
            .unwrap_or_default(),
    };
    let Some(signer) = rete.signers.iter().find(|s| s.name.as_str() == signer_name) else {
        return Err(CompileCmdError::Usage(format!(
            "--signer {signer_name:?} is not in mgmt_signers of rete.yaml"
        )));
    };
    let keys = args.keys.resolve(&args.repo, rete.td.as_str())?;
    let key = crate::pki::load_mgmt_key(&args.repo, &keys, signer.name.as_str())?;
    let signer_id = SpiffeId::new(rete.td.clone(), Kind::ManagementPlane, signer.name.clone());
    Ok(Signing::new(
        signer_id,
        mgmt_signers(rete, &checked.certs.signers),
        key,
    ))
}

/// Checks the repo at `args.repo` by every rule and, if it passes, returns
/// every node built and sealed with the real key, each node sealed once: the
/// device-limits rule measures the very bytes that are returned.
///
/// # Errors
///
/// The rete's problems (printed, as `retectl validate` prints them), or a
/// missing CA, signer or key.
fn compile_repo(args: &Args) -> Result<(Checked, BTreeMap<String, Compiled>), CompileCmdError> {
    let report = |p: &[crate::model::Problem]| validate::report_unless(args.json, p);
    let pending = validate::check_rules(&args.repo).map_err(|p| report(&p))?;
    let key = match pending.problems() {
        [] => signing(args, pending.checked()).map_err(Some),
        _ => Err(None),
    };
    match key {
        Ok(signing) => Ok(pending
            .finish(|rete, arts| signing.seal(rete, arts))
            .map_err(|p| report(&p))?),
        Err(why) => {
            // Every problem of the rete first, the device limits checked with
            // validate's throwaway key, as `retectl validate` reports them;
            // a missing key only once the rete is right.
            let problems = pending.finish_with_probe().err().unwrap_or_default();
            Err(match why {
                Some(e) if problems.is_empty() => e,
                _ => report(&problems).into(),
            })
        }
    }
}

/// Runs `retectl compile`.
pub fn run(args: Args) -> Result<(), CompileCmdError> {
    let json = args.json;
    let r = compile(args);
    if json {
        let out = match &r {
            Ok(nodes) => serde_json::json!({"ok": true, "nodes": nodes, "problems": []}),
            Err(CompileCmdError::Invalid(ValidateError::Problems(p))) => {
                serde_json::json!({"ok": false, "problems": validate::problems_json(p)})
            }
            Err(e) => serde_json::json!({"ok": false, "error": e.to_string(), "problems": []}),
        };
        println!("{out}");
    }
    r.map(|_| ())
}

/// What `compile` wrote, one JSON object per node (and per removed node).
fn compile(args: Args) -> Result<Vec<serde_json::Value>, CompileCmdError> {
    let mut written = Vec::new();
    let (checked, compiled) = compile_repo(&args)?;
    let rete = &checked.rete;
    // Every node of the rete was compiled (a node that was not is a problem,
    // reported above), so the names of `compiled` are those of nodes.yaml.
    let out: Vec<&Compiled> = if args.all {
        compiled.values().collect()
    } else {
        let mut t = Vec::new();
        for n in &args.nodes {
            match compiled.get(n) {
                Some(c) => t.push(c),
                None => {
                    return Err(CompileCmdError::Usage(format!(
                        "--node {n:?} is not in nodes.yaml"
                    )))
                }
            }
        }
        t
    };
    // Everything is compiled before anything is written: a failure leaves the old tree whole.
    for c in &out {
        let sealed = &c.sealed;
        for (rel, bytes) in [(AGENT_PATH, &sealed.agent), (VERTEX_PATH, &sealed.vertex)] {
            let path = args.out.join(c.arts.vertex.node.as_str()).join(rel);
            if let Ok(old) = std::fs::read(&path) {
                if let Ok(h) = envelope::peek_header(&old) {
                    if h.version > rete.version || (h.version == rete.version && &old != bytes) {
                        return Err(CompileCmdError::VersionNotBumped {
                            path,
                            old: h.version,
                            new: rete.version,
                        });
                    }
                }
            }
        }
    }
    for c in &out {
        let v = &c.arts.vertex;
        let dir = args.out.join(v.node.as_str());
        crate::fsutil::write_atomic(
            &dir.join(AGENT_PATH),
            &c.sealed.agent,
            crate::fsutil::MODE_PUBLIC,
        )?;
        crate::fsutil::write_atomic(
            &dir.join(VERTEX_PATH),
            &c.sealed.vertex,
            crate::fsutil::MODE_PUBLIC,
        )?;
        let mgmt = dir.join("mgmt");
        if !args.json {
            println!(
                "{}: version {}: {} principals, {} services, {} ACL rows, {} routes, {} SOCKS5 listeners -> {}",
                v.node,
                rete.version,
                v.principals.len(),
                v.services.len(),
                v.acl.len(),
                v.routes.len(),
                v.socks.len(),
                mgmt.display()
            );
        }
        written.push(serde_json::json!({
            "node": v.node.as_str(),
            "version": rete.version,
            "principals": v.principals.len(),
            "services": v.services.len(),
            "acl_rows": v.acl.len(),
            "routes": v.routes.len(),
            "socks": v.socks.len(),
            "dir": mgmt.display().to_string(),
            "removed": false,
        }));
    }
    if args.all {
        for (name, dir) in prune_removed_nodes(&args.out, rete)? {
            if !args.json {
                println!("{name}: no longer in nodes.yaml; removed {}", dir.display());
            }
            written.push(serde_json::json!({
                "node": name,
                "dir": dir.display().to_string(),
                "removed": true,
            }));
        }
    }
    Ok(written)
}

/// Removes the output of nodes that are no longer in nodes.yaml, so the next
/// publish stops serving them. Only a directory holding this rete's signed
/// `mgmt/agent.json` for a node of its own name counts; anything else in the
/// output directory is left alone.
fn prune_removed_nodes(
    out: &std::path::Path,
    rete: &Rete,
) -> Result<Vec<(String, std::path::PathBuf)>, CompileCmdError> {
    let Ok(entries) = std::fs::read_dir(out) else {
        return Ok(Vec::new());
    };
    let mut gone: Vec<(String, std::path::PathBuf)> = Vec::new();
    for e in entries.flatten() {
        let Ok(name) = e.file_name().into_string() else {
            continue;
        };
        if rete.nodes.contains_key(name.as_str()) {
            continue;
        }
        let Ok(bytes) = std::fs::read(e.path().join(AGENT_PATH)) else {
            continue;
        };
        match envelope::peek_header(&bytes) {
            Ok(h) if h.rete == rete.td && h.node.as_str() == name => gone.push((name, e.path())),
            _ => {}
        }
    }
    gone.sort();
    for (_, dir) in &gone {
        std::fs::remove_dir_all(dir).map_err(crate::fsutil::io_at(dir))?;
    }
    Ok(gone)
}
