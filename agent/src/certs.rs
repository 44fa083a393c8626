//! The certificates a scope holds, with their validity windows: the rete CA,
//! the node's own identity, and every principal the live vertex artifact
//! names. Read by `flor agent status` (days left), the agent's expiry
//! warnings ([`crate::core::machine::HeldCert`]) and `flor doctor`.
//!
//! The window itself comes from [`flor_vertex::validity`], the one reader of
//! certificate times in the workspace's device code.

use std::fmt;
use std::path::PathBuf;

use flor_vertex::artifact::{cert_path, CA_PATH};
use flor_vertex::file;
use flor_vertex::identity::{Kind, SpiffeId};
use flor_vertex::limits::MAX_PEM_LEN;
use flor_vertex::validity::{Utc, Validity, ValidityError, DAY_S};

use crate::core::machine::HeldCert;
use crate::scope::{Scope, ScopeInfo};

/// Whose certificate the CA's entry is, as messages name it.
pub const CA_NAME: &str = "the rete CA";

/// Why a held certificate's window could not be read.
#[derive(Debug)]
#[non_exhaustive]
pub enum CertError {
    /// The certificate file could not be read.
    Read(PathBuf, std::io::Error),
    /// The file holds no certificate whose window can be read.
    Validity(PathBuf, ValidityError),
}

impl fmt::Display for CertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertError::Read(p, e) => write!(f, "{}: {e}", p.display()),
            CertError::Validity(p, e) => write!(f, "{}: {e}", p.display()),
        }
    }
}

impl std::error::Error for CertError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CertError::Read(_, e) => Some(e),
            CertError::Validity(_, e) => Some(e),
        }
    }
}

/// One certificate on disk.
#[derive(Debug)]
pub struct Held {
    /// A SPIFFE ID, or [`CA_NAME`].
    pub who: String,
    /// Its window, or why it could not be read.
    pub validity: Result<Validity, CertError>,
}

impl Held {
    /// The time left as a person reads it: "364 days left (until 2027-...)" or "expired 3 days ago (...)".
    pub fn left(&self, now: i64) -> String {
        match &self.validity {
            Ok(v) => Left(v, now).to_string(),
            Err(e) => e.to_string(),
        }
    }
}

/// Days left of a window at a time, in words.
pub struct Left<'a>(pub &'a Validity, pub i64);

impl fmt::Display for Left<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Left(v, now) = *self;
        let s = v.seconds_left(now);
        if s < 0 {
            write!(
                f,
                "expired {} days ago ({})",
                (-s) / DAY_S,
                Utc(v.not_after)
            )
        } else {
            write!(
                f,
                "{} days left (until {})",
                v.days_left(now),
                Utc(v.not_after)
            )
        }
    }
}

/// Every certificate the scope holds, CA first, each path once: the CA, the
/// node identity (when enrolled with one), and the principals of the live
/// artifact of vertex `vertex`.
pub fn held(scope: &Scope, info: &ScopeInfo, vertex: &str) -> Vec<Held> {
    let node = SpiffeId::new(info.rete.clone(), Kind::Node, info.node.clone());
    let mut list: Vec<(String, PathBuf)> = vec![(CA_NAME.into(), scope.install.join(CA_PATH))];
    let node_cert = scope.path(&cert_path(&node));
    if node_cert.is_file() {
        list.push((node.to_string(), node_cert));
    }
    if let Ok((cfg, _)) = crate::vertex_cmd::load_config(scope, vertex) {
        for p in cfg.principals.iter() {
            let path = scope.path(&p.cert);
            if !list.iter().any(|(_, q)| *q == path) {
                list.push((p.id.to_string(), path));
            }
        }
    }
    list.into_iter()
        .map(|(who, path)| {
            let validity = match file::read_bounded(&path, MAX_PEM_LEN) {
                Ok(pem) => Validity::of_pem(&pem).map_err(|e| CertError::Validity(path, e)),
                Err(e) => Err(CertError::Read(path, e)),
            };
            Held { who, validity }
        })
        .collect()
}

/// What the agent's machine watches: the readable ones.
pub fn watched(held: &[Held]) -> Vec<HeldCert> {
    held.iter()
        .filter_map(|h| {
            Some(HeldCert {
                who: h.who.clone(),
                not_after: h.validity.as_ref().ok()?.not_after,
            })
        })
        .collect()
}
