//! `retectl ca init` and `retectl ca sign`: the rete CA with a file backend.
//!
//! `init` creates the CA key in the key directory (outside the repo, 0600)
//! and `certs/ca.crt` in the repo. `sign --kind management-plane --name
//! primary` issues the Ed25519 envelope signer: key to the key directory,
//! certificate to `certs/management-planes/primary.crt`. Principals (users,
//! services, nodes) get their certificates through `retectl issue-bundle`.
//! Both record what they issued in `enrollment.log`; neither prints a key.

use std::path::{Path, PathBuf};

use flor_vertex::identity::{Kind, Name, SpiffeId, TrustDomain};

use crate::model::{self, Problem};
use crate::pki::{self, Ca, PkiError};

/// `retectl ca …`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create the rete CA: key in the key directory, certs/ca.crt in the repo.
    Init(InitArgs),
    /// Issue a management-plane signer (Ed25519), e.g. --kind management-plane --name primary.
    Sign(SignArgs),
}

/// Where the key directory is, shared by every command that uses keys.
#[derive(Debug, clap::Args)]
pub struct KeysArg {
    /// Directory holding the CA and signer keys (outside the repo). Default: $RETECTL_KEYS, else ~/.config/retectl/<rete>/.
    #[arg(long, env = "RETECTL_KEYS")]
    pub keys: Option<PathBuf>,
}

impl KeysArg {
    /// The key directory for `rete`, created and checked to be outside `repo`.
    pub fn resolve(&self, repo: &Path, rete: &str) -> Result<PathBuf, PkiError> {
        let dir = self
            .keys
            .clone()
            .unwrap_or_else(|| pki::default_keys_dir(rete));
        pki::prepare_keys_dir(repo, &dir)
    }
}

/// `retectl ca init`.
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// The rete repo.
    #[arg(default_value = ".")]
    pub repo: PathBuf,
    #[command(flatten)]
    keys: KeysArg,
}

/// `retectl ca sign`.
#[derive(Debug, clap::Args)]
pub struct SignArgs {
    /// The rete repo.
    #[arg(default_value = ".")]
    pub repo: PathBuf,
    /// Principal kind; only management-plane is issued here.
    #[arg(long)]
    pub kind: String,
    /// Signer name (convention: primary).
    #[arg(long)]
    pub name: String,
    /// Certificate lifetime in days.
    #[arg(long, default_value_t = pki::LEAF_DAYS)]
    pub days: i64,
    #[command(flatten)]
    keys: KeysArg,
}

/// Why a `ca` command failed.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// rete.yaml is broken.
    #[error("rete.yaml is not usable: {0}")]
    Rete(String),
    /// A PKI step failed.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// A bad --kind or --name.
    #[error("{0}")]
    Usage(String),
}

fn rete_name(repo: &Path) -> Result<TrustDomain, CaError> {
    let r = model::load_rete(repo).map_err(|p| {
        CaError::Rete(
            p.iter()
                .map(Problem::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        )
    })?;
    TrustDomain::new(&r.name.value)
        .map_err(|e| CaError::Rete(format!("name {:?}: {e}", r.name.value)))
}

/// Runs `retectl ca …`.
pub fn run(cmd: Command) -> Result<(), CaError> {
    match cmd {
        Command::Init(a) => {
            let td = rete_name(&a.repo)?;
            let keys = a.keys.resolve(&a.repo, td.as_str())?;
            let (_, info) = Ca::init(&a.repo, &keys, td.as_str())?;
            pki::log_issued(&a.repo, "ca-init", &format!("spiffe://{td}"), &info)?;
            println!(
                "created {} (serial {}, sha256 {}, not after {})",
                pki::CA_CERT,
                info.serial,
                info.fingerprint,
                pki::rfc3339(info.not_after)
            );
            println!(
                "CA key written to {} (mode 0600; keep it off the repo and backed up offline)",
                keys.join(pki::CA_KEY).display()
            );
            Ok(())
        }
        Command::Sign(a) => {
            let kind = Kind::parse(&a.kind)
                .map_err(|e| CaError::Usage(format!("--kind {:?}: {e}", a.kind)))?;
            if kind != Kind::ManagementPlane {
                return Err(PkiError::KindNotSignable.into());
            }
            let name = Name::new(&a.name)
                .map_err(|e| CaError::Usage(format!("--name {:?}: {e}", a.name)))?;
            if a.days < 1 {
                return Err(CaError::Usage("--days must be at least 1".into()));
            }
            let td = rete_name(&a.repo)?;
            let keys = a.keys.resolve(&a.repo, td.as_str())?;
            let ca = Ca::load(&a.repo, &keys)?;
            let id = SpiffeId::new(td, kind, name.clone());
            let info = pki::sign_mgmt(&ca, &a.repo, &keys, &id, a.days)?;
            pki::log_issued(&a.repo, "ca-sign", &id.to_string(), &info)?;
            println!(
                "issued {id}: {}/{name}.crt (serial {}, not after {}); public key {}",
                pki::MGMT_CERT_DIR,
                info.serial,
                pki::rfc3339(info.not_after),
                pki::hex(&info.public_key)
            );
            println!("add \"{name}\" to mgmt_signers in rete.yaml if it is not there yet");
            Ok(())
        }
    }
}
