//! Rete scopes: where one rete's material and runtime files live on this host.
//!
//! A host may join several retes; each gets a scope named after the rete (or
//! `flor enroll --as <name>`), with an install root and a runtime root:
//!
//! ```text
//! <base>/retes/<scope>/          install root: scope.json, ca.crt, certs/, keys/,
//!                                mgmt/agent.json, mgmt/vertices/flor.json, agent.sock
//! <runtime>/<scope>/             runtime root: vertex status files (C1: FlorIO sockets)
//! ```
//!
//! `<base>` is `$FLOR_HOME`, else `/etc/flor` when it exists and the caller may
//! write it (the packages create it), else `~/.flor`, else `/etc/flor` (a
//! system service with no home); on Windows `%ProgramData%\Florete`. The runtime root is `$FLOR_RUNTIME_DIR/<scope>`, else
//! `/run/flor/<scope>` for a system install, else `$XDG_RUNTIME_DIR/flor/<scope>`,
//! else `<install>/run`. Paths inside artifacts are scope-relative and resolved here.

use std::fmt;
use std::path::{Path, PathBuf};

use flor_vertex::artifact::{ConfigServer, MgmtSigners, ScopePath};
use flor_vertex::contract;
use flor_vertex::file;
use flor_vertex::identity::{Name, TrustDomain};
use serde::{Deserialize, Serialize};

/// The file in each install root that records the scope's rete and trust anchor.
pub const SCOPE_FILE: &str = "scope.json";
/// Largest `scope.json` accepted.
const MAX_SCOPE_FILE: usize = 8 * 1024;

/// Why a scope could not be found or read.
#[derive(Debug)]
#[non_exhaustive]
pub enum ScopeError {
    /// No scope of that name is installed.
    NotEnrolled(String),
    /// No `--rete` was given and more than one scope is installed.
    Ambiguous(Vec<String>),
    /// No scope is installed at all.
    NoneEnrolled(PathBuf),
    /// The scope name is not a valid name.
    BadName(String),
    /// `scope.json` could not be read or parsed.
    BadScopeFile(PathBuf, String),
}

impl fmt::Display for ScopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScopeError::NotEnrolled(s) => write!(
                f,
                "no rete scope named {s} is enrolled on this host (see flor enroll)"
            ),
            ScopeError::Ambiguous(all) => write!(
                f,
                "several retes are enrolled ({}); choose one with --rete",
                all.join(", ")
            ),
            ScopeError::NoneEnrolled(base) => write!(
                f,
                "no rete is enrolled under {} (see flor enroll)",
                base.display()
            ),
            ScopeError::BadName(s) => {
                write!(f, "scope name {s:?} may hold only a-z, 0-9, '.', '-', '_'")
            }
            ScopeError::BadScopeFile(p, e) => write!(f, "{}: {e}", p.display()),
        }
    }
}

impl std::error::Error for ScopeError {}

/// What `flor enroll` records about a scope, from its bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeInfo {
    /// The rete (trust domain).
    pub rete: TrustDomain,
    /// This host's node name in that rete.
    pub node: Name,
    /// Added to every preferred local port, so two retes do not collide (0 for the first).
    pub port_offset: u16,
    /// Signers whose artifacts are accepted now; replaced by each accepted envelope's snapshot.
    pub mgmt_signers: MgmtSigners,
    /// Where the config-server is.
    pub config_server: ConfigServer,
    /// Optional plain-HTTP mirror of the published tree.
    pub mirror_url: Option<heapless::String<128>>,
}

/// One rete scope on this host.
#[derive(Clone, Debug)]
pub struct Scope {
    /// The scope's local name.
    pub name: String,
    /// Install root.
    pub install: PathBuf,
    /// Runtime root.
    pub runtime: PathBuf,
}

/// The directory holding every scope's install root (the flor home): the rule
/// is [`contract::choose_home`]; on Windows one machine-wide place,
/// `%ProgramData%\Florete`, so the service (LocalSystem) finds what an
/// administrator enrolled from a console.
pub fn base_dir() -> PathBuf {
    #[cfg(windows)]
    if std::env::var_os(contract::HOME_ENV).is_none() {
        if let Some(p) = crate::windows::program_data() {
            return p.join("Florete");
        }
    }
    file::flor_home()
}

/// Every scope's install root lives here.
pub fn scopes_dir() -> PathBuf {
    base_dir().join(contract::SCOPES_DIR)
}

fn runtime_base(install: &Path) -> Option<PathBuf> {
    if let Some(r) = std::env::var_os("FLOR_RUNTIME_DIR") {
        return Some(PathBuf::from(r));
    }
    if install.starts_with(contract::SYSTEM_HOME) {
        return Some(PathBuf::from("/run/flor"));
    }
    std::env::var_os("XDG_RUNTIME_DIR").map(|x| PathBuf::from(x).join("flor"))
}

fn valid_scope_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 96
        && !s.starts_with('.')
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        })
}

impl Scope {
    /// The scope named `name`, whether or not it is enrolled yet.
    pub fn named(name: &str) -> Result<Scope, ScopeError> {
        if !valid_scope_name(name) {
            return Err(ScopeError::BadName(name.to_string()));
        }
        let install = scopes_dir().join(name);
        let runtime = match runtime_base(&install) {
            Some(r) => r.join(name),
            None => install.join("run"),
        };
        Ok(Scope {
            name: name.to_string(),
            install,
            runtime,
        })
    }

    /// Every enrolled scope name, sorted.
    pub fn enrolled() -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(scopes_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().join(SCOPE_FILE).is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        out.sort();
        out
    }

    /// The scope a command acts on: the one named, or the only one enrolled.
    pub fn find(name: Option<&str>) -> Result<Scope, ScopeError> {
        if let Some(n) = name {
            let s = Scope::named(n)?;
            if !s.install.join(SCOPE_FILE).is_file() {
                return Err(ScopeError::NotEnrolled(n.to_string()));
            }
            return Ok(s);
        }
        let all = Scope::enrolled();
        match all.len() {
            0 => Err(ScopeError::NoneEnrolled(scopes_dir())),
            1 => Scope::named(&all[0]),
            _ => Err(ScopeError::Ambiguous(all)),
        }
    }

    /// Resolves a scope-relative artifact path against the install root.
    pub fn path(&self, rel: &ScopePath) -> PathBuf {
        self.install.join(rel.as_str())
    }

    /// Reads `scope.json`.
    pub fn info(&self) -> Result<ScopeInfo, ScopeError> {
        let p = self.install.join(SCOPE_FILE);
        let bytes = file::read_bounded(&p, MAX_SCOPE_FILE)
            .map_err(|e| ScopeError::BadScopeFile(p.clone(), e.to_string()))?;
        flor_vertex::artifact::parse_payload::<ScopeInfo>(&bytes)
            .map_err(|e| ScopeError::BadScopeFile(p, e.to_string()))
    }

    /// Writes `scope.json` atomically.
    pub fn write_info(&self, info: &ScopeInfo) -> std::io::Result<()> {
        let mut buf = vec![0u8; MAX_SCOPE_FILE];
        let n = serde_json_core::to_slice(info, &mut buf).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "scope.json would exceed 8 KiB",
            )
        })?;
        buf.truncate(n);
        buf.push(b'\n');
        file::write_atomic(&self.install.join(SCOPE_FILE), &buf, 0o644)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_names_are_checked() {
        assert!(valid_scope_name("demo.flor"));
        assert!(!valid_scope_name("../etc"));
        assert!(!valid_scope_name("a/b"));
        assert!(!valid_scope_name(""));
        assert!(!valid_scope_name(".hidden"));
    }
}
