//! flor-vertex: the core every Florete component builds on.
//!
//! A rete is a SPIFFE trust domain whose operator compiles hand-edited YAML
//! into signed per-node artifacts. This crate holds the types both ends share,
//! so the producer (retectl, on the operator's workstation) and the consumer
//! (`flor`, on a router or a Raspberry Pi) cannot drift apart:
//!
//! ```text
//! retectl: YAML -> model -> artifact::{AgentConfig, VertexConfig} -> envelope::seal
//!                                                                        |
//! flor:    envelope::open (signer, signature, plane, version) <- bytes <-+
//!              -> artifact::validate -> acl::Acl (RBAC) + identity::SniRegistry
//! ```
//!
//! Everything here except `net` and `file` is sans-IO: functions take bytes, names and versions and
//! return values or typed errors; no sockets, files or clocks. Parsing uses
//! serde-json-core into fixed-capacity fields whose bounds live in [`limits`].
//! Nothing here panics on outside input.
//!
//! Modules:
//! - [`identity`]: trust domains, SPIFFE IDs, `Dialable`, `render`/`resolve`/`sni_for` (ADR-0007).
//! - [`artifact`]: the `agent.json` and `vertices/<name>.json` shapes.
//! - [`bundle`]: enrollment bundles and CSR requests (operator <-> device).
//! - [`envelope`]: the Ed25519-signed wrapper and its verifier.
//! - [`contract`]: artifact paths, what a reader trusts ([`contract::Trust`]),
//!   open-and-validate, and the version rule of stores.
//! - [`acl`]: RBAC tables, swappable whole behind an `Arc`.
//! - [`socks5`]: SOCKS5 ingress parsing (sans-IO).
//! - [`wire`]: the stream preamble and close codes of the data plane.
//! - [`http`]: sans-IO HTTP/1.1 heads and the publish body for the config-server and its clients.
//! - [`control`]: the agent's control-socket request line.
//! - [`callers`]: the identity side-channel: which caller is behind an upstream
//!   TCP connection the vertex opened (table, request and answer lines).
//! - [`counters`]: process-wide event counters of the vertex and the agent (fixed, atomic).
//! - [`limits`]: every capacity, with its reason.
//! - [`validity`]: a certificate's validity window and the time left (expiry).
//! - `net` (feature `net`): the QUIC/mTLS data plane on smol.
//! - `file` (feature `file`): atomic file writes and bounded reads, for the
//!   agent, retectl and size-report. `net` and `file` are the only I/O in this crate.

#![warn(missing_docs)]

pub mod acl;
pub mod artifact;
pub mod bundle;
pub mod callers;
pub mod contract;
pub mod control;
pub mod counters;
pub mod envelope;
#[cfg(feature = "file")]
pub mod file;
pub mod hex;
pub mod http;
pub mod identity;
pub mod limits;
#[cfg(feature = "net")]
pub mod net;
pub mod socks5;
pub mod validity;
pub mod wire;
