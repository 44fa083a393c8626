//! Who the operator is when they publish: `--as olga` or `--as <cert path>`.
//!
//! A name is looked up where `flor enroll` put the operator's user identity
//! on this machine — the flor scope of the tree's rete under the flor home
//! (the same rule as flor: [`contract::choose_home`]) — or in `--key-dir`,
//! and only a certificate whose SPIFFE ID is `spiffe://<rete>/user/<name>`
//! counts, so a second rete enrolled on the same laptop cannot be picked by
//! mistake. The CA comes from the rete repo that holds the current directory
//! (found by walking up to `rete.yaml`), wherever retectl is run from inside
//! it, else from that flor scope.
//!
//! ```text
//! <home>/retes/<scope>/certs/user/<name>.crt   keys/user/<name>.key   ca.crt
//! <key-dir>/certs/user/<name>.crt ...  or  <key-dir>/<name>.crt, <name>.key
//! ```

use std::path::{Path, PathBuf};

use flor_vertex::artifact::{cert_path, key_path, CA_PATH};
use flor_vertex::contract;
use flor_vertex::identity::{Kind, Name, SpiffeId, TrustDomain};

use crate::pki::{CertInfo, CA_CERT};

/// The operator's credentials and the CA to dial with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    /// The user certificate (PEM).
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// The rete CA certificate.
    pub ca: PathBuf,
}

/// Why the operator's identity could not be found.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// `--as` is neither a user name nor an existing file.
    #[error("--as {0}: neither a user name (like olga) nor a certificate file")]
    BadName(String),
    /// No certificate for that user of this rete was found.
    #[error(
        "no certificate for {id} found; looked in {looked}. Enroll your user bundle with \
         `flor enroll`, pass --key-dir <dir>, or pass --as <cert path>"
    )]
    NotFound {
        /// The identity looked for.
        id: String,
        /// Where it looked.
        looked: String,
    },
    /// No CA was given or found.
    #[error(
        "no rete CA: not inside a rete repo ({CA_CERT} next to rete.yaml) and no flor scope \
         of the rete holds one; pass --ca <path>"
    )]
    NoCa,
}

/// `--as` is a path when it names an existing file or looks like one.
pub fn is_path(who: &str) -> bool {
    who.contains('/')
        || who.contains('\\')
        || who.ends_with(".crt")
        || who.ends_with(".pem")
        || Path::new(who).is_file()
}

/// The flor home on this machine, by flor's own rule.
pub fn flor_home() -> PathBuf {
    #[cfg(windows)]
    if std::env::var_os(contract::HOME_ENV).is_none() {
        if let Some(p) = std::env::var_os("ProgramData") {
            return PathBuf::from(p).join("Florete");
        }
    }
    flor_vertex::file::flor_home()
}

/// The rete repo holding `from`: the nearest directory upwards with `rete.yaml`.
pub fn repo_root(from: &Path) -> Option<PathBuf> {
    from.ancestors()
        .find(|d| d.join("rete.yaml").is_file())
        .map(Path::to_path_buf)
}

/// Finds the operator `name` of `rete` in `key_dir`, or in every flor scope
/// under `home`; the CA from `ca`, else the repo holding `cwd`, else the scope.
pub fn find(
    name: &str,
    rete: &TrustDomain,
    key_dir: Option<&Path>,
    home: &Path,
    cwd: &Path,
    ca: Option<&Path>,
) -> Result<Operator, OperatorError> {
    let user = Name::new(name).map_err(|_| OperatorError::BadName(name.to_owned()))?;
    let id = SpiffeId::new(rete.clone(), Kind::User, user);
    let roots: Vec<PathBuf> = match key_dir {
        Some(d) => vec![d.to_path_buf()],
        None => {
            let scopes = home.join(contract::SCOPES_DIR);
            let mut r: Vec<PathBuf> = std::fs::read_dir(&scopes)
                .map(|it| it.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            r.sort();
            r
        }
    };
    let (cert_rel, key_rel) = (cert_path(&id), key_path(&id));
    let found = roots.iter().find_map(|root| {
        [
            (root.join(cert_rel.as_str()), root.join(key_rel.as_str())),
            (
                root.join(format!("{name}.crt")),
                root.join(format!("{name}.key")),
            ),
        ]
        .into_iter()
        .find(|(c, k)| k.is_file() && holds(c, &id))
        .map(|(c, k)| (root.clone(), c, k))
    });
    let Some((root, cert, key)) = found else {
        let looked = match key_dir {
            Some(d) => d.display().to_string(),
            None => format!(
                "every scope under {}",
                home.join(contract::SCOPES_DIR).display()
            ),
        };
        return Err(OperatorError::NotFound {
            id: id.to_string(),
            looked,
        });
    };
    let ca = match ca {
        Some(c) => c.to_path_buf(),
        None => repo_root(cwd)
            .map(|r| r.join(CA_CERT))
            .filter(|c| c.is_file())
            .or_else(|| Some(root.join(CA_PATH)).filter(|c| c.is_file()))
            .ok_or(OperatorError::NoCa)?,
    };
    Ok(Operator { cert, key, ca })
}

/// Whether the PEM file at `path` is a certificate for exactly `id`.
fn holds(path: &Path, id: &SpiffeId) -> bool {
    let Ok(pem) = std::fs::read(path) else {
        return false;
    };
    CertInfo::parse(path, &pem).is_ok_and(|c| c.uris.len() == 1 && c.uris[0] == id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_names_are_told_apart() {
        for p in ["certs/olga.crt", "./olga", "olga.pem", "C:\\keys\\olga"] {
            assert!(is_path(p), "{p}");
        }
        assert!(!is_path("olga"));
    }

    #[test]
    fn the_repo_is_found_from_any_directory_inside_it() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("rete.yaml"), "").unwrap();
        let deep = d.path().join("a/b");
        std::fs::create_dir_all(&deep).unwrap();
        assert_eq!(repo_root(&deep).as_deref(), Some(d.path()));
    }
}
