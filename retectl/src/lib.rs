//! retectl: the Florete operator's offline toolchain.
//!
//! The operator's workflow before anything reaches a node:
//!
//! ```text
//! declare (YAML in git) -> validate -> compile -> commit -> publish
//!        rete.yaml nodes.yaml users.yaml services.yaml roles.yaml groups.yaml
//!          |  model (serde-saphyr, every value with its line)
//!          v
//!        validate: all rules at once, one pass per rule family, `file:line: message`
//!          |  checked: Rete + Access (principals -> roles -> services/groups)
//!          v
//!        artifacts: per node, flor-vertex's own AgentConfig/VertexConfig,
//!                   sealed with envelope::seal by management-plane/<name>,
//!                   opened again with the device's reader
//!          v
//!        compile: <out>/<node>/mgmt/agent.json, <out>/<node>/mgmt/vertices/flor.json
//! ```
//!
//! The device limits are a rule of validate that needs sealed bytes: `retectl
//! compile` runs it with the signer's key and writes the very bytes it
//! measured, so each node is built and sealed once; `retectl validate` runs
//! it with a throwaway key ([`artifacts::Signing::probe`]).
//!
//! retectl never edits the source YAML: git diffs are the audit log. It holds
//! the rete's PKI with a file backend ([`pki`]): the CA and signer keys live in
//! a key directory outside the repo; only `certs/ca.crt` and
//! `certs/management-planes/<name>.crt` are committed. Enrollment bundles
//! ([`bundle`]) carry a node's certificates (and keys in Flow A) to the device.
//!
//! Each subcommand is one module with an `Args` (clap) and a `run`; `main.rs`
//! only dispatches, so adding a subcommand is one enum variant and one module.
//!
//! The modules import one way, so there are no circles: each module below
//! uses (`crate::x`) only modules on lower lines.
//!
//! ```text
//! compile  bundle  landing  publish  new   the commands: nothing imports them
//! validate                                 the rules: model in, checked out
//! artifacts                                build, seal, the device-limits rule
//! ports                                    SOCKS5 ports of a node's principals
//! checked  ca  operator                    the checked model; the `ca` command; who publishes
//! pins                                     each caller's pinned certificates, from the log
//! certs                                    enrollment.log's certificates and their expiry
//! pki                                      the rete's PKI (file backend)
//! model  fsutil                            YAML and Problem; writing files
//! ```
//!
//! - [`checked`] is the result of validation (`Rete`, `Node`, `Access`,
//!   `Checked`): plain types, built only by [`validate`] and read by every
//!   module above it. It uses only [`pki`] (the repo's certificates).
//! - [`ports`] and [`artifacts`] work on the checked model and know neither
//!   validate nor compile; [`validate`] calls them for their rules (port
//!   clashes, device limits). [`compile`] seals only through
//!   [`validate::Pending::finish`], handing it the signer's key, and writes
//!   what comes back.

#![warn(missing_docs)]

pub mod artifacts;
pub mod bundle;
pub mod ca;
pub mod certs;
pub mod checked;
pub mod compile;
pub mod fsutil;
pub mod landing;
pub mod model;
pub mod new;
pub mod operator;
pub mod pins;
pub mod pki;
pub mod ports;
pub mod publish;
pub mod validate;
