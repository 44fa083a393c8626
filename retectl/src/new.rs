//! `retectl new <dir>`: a fresh rete repo from the template.
//!
//! The template holds the reserved roles and groups, a management node
//! `mgmt01` hosting the config-server (`config`, `config-publish`) and one
//! operator, so it validates as written. It never overwrites a file.

use std::path::PathBuf;

use flor_vertex::identity::TrustDomain;

use crate::fsutil::{self, FsError, MODE_PUBLIC};

const TEMPLATE: [(&str, &str); 7] = [
    ("rete.yaml", include_str!("../template/rete.yaml")),
    ("nodes.yaml", include_str!("../template/nodes.yaml")),
    ("users.yaml", include_str!("../template/users.yaml")),
    ("services.yaml", include_str!("../template/services.yaml")),
    ("roles.yaml", include_str!("../template/roles.yaml")),
    ("groups.yaml", include_str!("../template/groups.yaml")),
    (".gitignore", include_str!("../template/gitignore")),
];

/// `retectl new`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory to create (must not exist, or be empty).
    pub dir: PathBuf,
    /// The rete's name (SPIFFE trust domain; dotted allowed).
    #[arg(long, default_value = "example.flor")]
    pub name: String,
}

/// Why `new` failed.
#[derive(Debug, thiserror::Error)]
pub enum NewError {
    /// The directory has files in it.
    #[error("{0}: exists and is not empty; refusing to overwrite")]
    NotEmpty(PathBuf),
    /// The name is not a trust domain.
    #[error("--name {name:?}: {reason}")]
    BadName {
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },
    /// Writing failed.
    #[error(transparent)]
    Fs(#[from] FsError),
}

/// Runs `retectl new`.
pub fn run(args: Args) -> Result<(), NewError> {
    TrustDomain::new(&args.name).map_err(|e| NewError::BadName {
        name: args.name.clone(),
        reason: e.to_string(),
    })?;
    if let Ok(mut rd) = std::fs::read_dir(&args.dir) {
        if rd.next().is_some() {
            return Err(NewError::NotEmpty(args.dir));
        }
    }
    for (file, text) in TEMPLATE {
        let text = text.replace("{{rete}}", &args.name);
        fsutil::write_new(&args.dir.join(file), text.as_bytes(), MODE_PUBLIC)?;
    }
    println!("created rete {} in {}", args.name, args.dir.display());
    println!(
        "next: retectl ca init {0} && retectl ca sign {0} --kind management-plane --name primary",
        args.dir.display()
    );
    Ok(())
}
