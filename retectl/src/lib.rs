//! retectl: the Florete operator's offline toolchain.
//!
//! The operator's workflow before anything reaches a node:
//!
//! ```text
//! declare (YAML in git) -> validate -> compile -> commit -> publish
//!        rete.yaml nodes.yaml users.yaml services.yaml roles.yaml groups.yaml
//!          |  model (serde-saphyr, every value with its line)
//!          v
//!        validate: all rules at once, `file:line: message`
//!          |  Rete + Access (principals -> roles -> services/groups)
//!          v
//!        compile: per node, flor-vertex's own AgentConfig/VertexConfig,
//!                 sealed with envelope::seal by management-plane/<name>
//!          v
//!        <out>/<node>/mgmt/agent.json, <out>/<node>/mgmt/vertices/flor.json
//! ```
//!
//! retectl never edits the source YAML: git diffs are the audit log. It holds
//! the rete's PKI with a file backend ([`pki`]): the CA and signer keys live in
//! a key directory outside the repo; only `certs/ca.crt` and
//! `certs/management-planes/<name>.crt` are committed. Enrollment bundles
//! ([`bundle`]) carry a node's certificates (and keys in Flow A) to the device.
//!
//! Each subcommand is one module with an `Args` (clap) and a `run`; `main.rs`
//! only dispatches, so adding a subcommand is one enum variant and one module.

#![warn(missing_docs)]

pub mod artifacts;
pub mod bundle;
pub mod ca;
pub mod checked;
pub mod compile;
pub mod fsutil;
pub mod landing;
pub mod model;
pub mod new;
pub mod pki;
pub mod ports;
pub mod publish;
pub mod validate;
