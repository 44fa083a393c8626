//! `retectl issue-bundle`: a node's enrollment bundle.
//!
//! ```text
//! Flow A: retectl issue-bundle --node alpha               -> alpha.bundle.json (certs + keys, 0600)
//! Flow B: flor id create (device) -> alpha.csr.json
//!         retectl issue-bundle --node alpha --csr alpha.csr.json -> alpha.bundle.json (certs only)
//! ```
//!
//! The bundle is flor-vertex's own [`Bundle`] (format `florete-bundle/1`),
//! written with serde_json and checked with the device's parser before it is
//! written. It carries the CA, one X.509-SVID per principal the node holds
//! (its `node/<name>` first, then hosted services, then listed users), the
//! authorised management signers and where the config-server is. In Flow B
//! every CSR's identity must be one the node may hold and its only SAN that
//! identity; the key stays on the device. Every certificate issued is
//! appended to `enrollment.log`. Format: `docs/bundle.md`.

use std::collections::BTreeSet;
use std::path::PathBuf;

use flor_vertex::artifact::{Addr, ConfigServer, MgmtSigner};
use flor_vertex::bundle::{Bundle, BundlePrincipal, CsrRequest, BUNDLE_FORMAT};
use flor_vertex::identity::SpiffeId;
use rcgen::{CertificateSigningRequestParams, KeyPair, SanType};

use crate::checked::Checked;
use crate::fsutil::{self, MODE_PUBLIC, MODE_SECRET};
use crate::pki::{self, Ca, CertInfo, PkiError};
use crate::validate::ValidateError;

/// `retectl issue-bundle`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The rete repo.
    #[arg(default_value = ".")]
    pub repo: PathBuf,
    /// The node to enroll.
    #[arg(long)]
    pub node: String,
    /// Flow B: sign the CSR request `flor id create` made on the device (no keys leave it).
    #[arg(long)]
    pub csr: Option<PathBuf>,
    /// Where to write the bundle (default: ./<node>.bundle.json).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Certificate lifetime in days.
    #[arg(long, default_value_t = pki::LEAF_DAYS)]
    pub days: i64,
    #[command(flatten)]
    keys: crate::ca::KeysArg,
}

/// Why `issue-bundle` failed.
#[derive(Debug, thiserror::Error)]
pub enum BundleCmdError {
    /// Validation failed (problems were printed).
    #[error(transparent)]
    Invalid(#[from] ValidateError),
    /// A PKI step failed.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// Writing failed.
    #[error(transparent)]
    Fs(#[from] fsutil::FsError),
    /// A bad flag.
    #[error("{0}")]
    Usage(String),
    /// The CSR request was refused; every reason is listed.
    #[error("{path}: CSR request refused:\n  {}", reasons.join("\n  "))]
    Csr {
        /// The file.
        path: PathBuf,
        /// Each reason.
        reasons: Vec<String>,
    },
    /// The bundle the device would read does not parse (too many principals, too big).
    #[error("the device would refuse this bundle: {0}")]
    DeviceRefused(flor_vertex::bundle::BundleError),
}

/// The identities node `name` holds, node identity first.
pub fn held_ids(c: &Checked, name: &str) -> Option<Vec<SpiffeId>> {
    let node = c.rete.nodes.get(name)?;
    let mut ids = vec![node.id.clone()];
    let mut svcs: Vec<SpiffeId> = c
        .rete
        .services
        .values()
        .filter(|s| s.node == name)
        .map(|s| s.id.clone())
        .collect();
    svcs.sort();
    ids.extend(svcs);
    let mut users: Vec<SpiffeId> = node
        .users
        .iter()
        .filter_map(|u| c.rete.users.get(u).map(|u| u.id.clone()))
        .collect();
    users.sort();
    ids.extend(users);
    Some(ids)
}

/// Runs `retectl issue-bundle`.
pub fn run(args: Args) -> Result<(), BundleCmdError> {
    let c = crate::validate::checked_or_report(&args.repo)?;
    let Some(ids) = held_ids(&c, &args.node) else {
        return Err(BundleCmdError::Usage(format!(
            "--node {:?} is not in nodes.yaml",
            args.node
        )));
    };
    if args.days < 1 {
        return Err(BundleCmdError::Usage("--days must be at least 1".into()));
    }
    let keys = args.keys.resolve(&args.repo, c.rete.td.as_str())?;
    let ca = Ca::load(&args.repo, &keys)?;
    let flow = if args.csr.is_some() { "B" } else { "A" };
    let mut principals = Vec::new();
    match &args.csr {
        None => {
            for id in &ids {
                let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                    .map_err(PkiError::from)?;
                let cert_pem = ca.issue(id, &key, args.days)?;
                principals.push(BundlePrincipal {
                    id: id.clone(),
                    cert_pem,
                    key_pem: Some(key.serialize_pem()),
                });
            }
        }
        Some(path) => {
            let bytes = std::fs::read(path).map_err(fsutil::io_at(path))?;
            let reasons_or = sign_csrs(&c, &args.node, &ids, &bytes, &ca, args.days);
            match reasons_or {
                Ok(p) => principals = p,
                Err(reasons) => {
                    return Err(BundleCmdError::Csr {
                        path: path.clone(),
                        reasons,
                    })
                }
            }
        }
    }

    let mgmt_signers: Vec<MgmtSigner> = crate::artifacts::mgmt_signers(&c.rete, &c.certs.signers).0;
    let config = c.rete.config_service().map(|s| s.id.clone());
    let addr = c.rete.nodes.get(&c.rete.config_node).and_then(|n| n.listen);
    let (Some(service), Some(addr)) = (config, addr) else {
        return Err(BundleCmdError::Usage(
            "the config-server has no service or listen address".into(),
        ));
    };
    let bundle = Bundle {
        format: BUNDLE_FORMAT.to_owned(),
        rete: c.rete.td.clone(),
        node: c.rete.nodes[&args.node].name.clone(),
        ca_pem: ca.cert_pem.clone(),
        principals,
        mgmt_signers,
        config_server: ConfigServer {
            service,
            addr: Addr(addr),
        },
        mirror_url: c.rete.mirror_url.clone(),
    };
    let mut json =
        serde_json::to_vec_pretty(&bundle).map_err(|e| BundleCmdError::Usage(e.to_string()))?;
    json.push(b'\n');
    let back = Bundle::parse(&json).map_err(BundleCmdError::DeviceRefused)?;
    if back != bundle {
        return Err(BundleCmdError::Usage(
            "bundle does not parse back to what was written (retectl bug)".into(),
        ));
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.bundle.json", args.node)));
    if flow == "A" && inside(&args.repo, &out) {
        return Err(BundleCmdError::Usage(format!(
            "{}: a Flow A bundle holds private keys and may not be written inside the repo; pass --out <path outside it>",
            out.display()
        )));
    }
    // Flow A holds private keys: owner-only, like a key file.
    fsutil::write_atomic(
        &out,
        &json,
        if flow == "A" {
            MODE_SECRET
        } else {
            MODE_PUBLIC
        },
    )?;
    for p in &bundle.principals {
        let info = CertInfo::parse(&out, p.cert_pem.as_bytes())?;
        pki::log_issued(&args.repo, flow, &p.id.to_string(), &info)?;
        println!(
            "issued {} (flow {flow}, serial {}, not after {})",
            p.id,
            info.serial,
            pki::rfc3339(info.not_after)
        );
    }
    println!(
        "wrote {}{}",
        out.display(),
        if flow == "A" {
            " (mode 0600: it holds private keys)"
        } else {
            ""
        }
    );
    Ok(())
}

/// Whether `path` (which may not exist yet) lies inside `repo`.
fn inside(repo: &std::path::Path, path: &std::path::Path) -> bool {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    match (repo.canonicalize(), parent.canonicalize()) {
        (Ok(r), Ok(p)) => p.starts_with(r),
        _ => false,
    }
}

/// Flow B: checks every CSR and signs the good ones; all reasons on failure.
fn sign_csrs(
    c: &Checked,
    node: &str,
    allowed: &[SpiffeId],
    bytes: &[u8],
    ca: &Ca,
    days: i64,
) -> Result<Vec<BundlePrincipal>, Vec<String>> {
    let req = CsrRequest::parse(bytes).map_err(|e| vec![e.to_string()])?;
    let mut reasons = Vec::new();
    if req.rete != c.rete.td {
        reasons.push(format!(
            "request is for rete {}, this repo is {}",
            req.rete, c.rete.td
        ));
    }
    if req.node.as_str() != node {
        reasons.push(format!(
            "request was made by node {}, but --node is {node}",
            req.node
        ));
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for entry in &req.csrs {
        let id = &entry.id;
        if !allowed.contains(id) {
            let list: Vec<String> = allowed.iter().map(ToString::to_string).collect();
            reasons.push(format!(
                "{id}: node {node} may not hold this identity (it may hold: {})",
                list.join(", ")
            ));
            continue;
        }
        if !seen.insert(id.clone()) {
            reasons.push(format!("{id}: requested twice"));
            continue;
        }
        let csr = match CertificateSigningRequestParams::from_pem(&entry.csr_pem) {
            Ok(csr) => csr,
            Err(e) => {
                reasons.push(format!("{id}: not a valid signed PKCS#10 request: {e}"));
                continue;
            }
        };
        let want = id.to_string();
        let sans_ok = matches!(csr.params.subject_alt_names.as_slice(), [SanType::URI(u)] if u.as_str() == want);
        if !sans_ok {
            reasons.push(format!(
                "{id}: the CSR must carry exactly one SAN, the URI {want}"
            ));
            continue;
        }
        if csr.public_key.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
            reasons.push(format!(
                "{id}: key must be ECDSA P-256 (crypto.tls_principals)"
            ));
            continue;
        }
        // Only the public key and the checked identity come from the CSR;
        // every other field of the certificate is retectl's.
        match ca.issue(id, &csr.public_key, days) {
            Ok(cert_pem) => out.push(BundlePrincipal {
                id: id.clone(),
                cert_pem,
                key_pem: None,
            }),
            Err(e) => reasons.push(format!("{id}: {e}")),
        }
    }
    if reasons.is_empty() {
        let mut missing: Vec<String> = allowed
            .iter()
            .filter(|id| !seen.contains(*id))
            .map(ToString::to_string)
            .collect();
        if !missing.is_empty() {
            missing.sort();
            eprintln!(
                "note: the request does not cover {}; issue them with another request",
                missing.join(", ")
            );
        }
        // Node identity first, as the bundle format asks.
        out.sort_by_key(|p| allowed.iter().position(|a| a == &p.id));
        Ok(out)
    } else {
        Err(reasons)
    }
}
