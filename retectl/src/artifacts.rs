//! Per-node artifacts, the contract with the device in one place: the
//! checked rete -> each node's `mgmt/agent.json` and `mgmt/vertices/flor.json`,
//! built from flor-vertex's own types, sealed, and opened again with the
//! device's own reader. No I/O: the caller brings the key and writes the bytes.
//!
//! Need to know: a node's vertex artifact carries only
//! - the principals it holds (its `node/<name>`, the services it hosts, the users listed on it),
//! - the services it hosts and the ACL rows for them (one per caller, sorted by
//!   caller, each with the caller's pinned certificates, [`crate::pins`]),
//! - routes to the services its principals may reach, and nothing else,
//! - SOCKS5 listeners: one per held user (by name), then one per held service principal
//!   that may call out, then the node principal; each on the port [`crate::ports`]
//!   gives it (declared `socks_port`, else a documented default — never by position).
//!
//! Deterministic: every list is built from sorted maps, no timestamps, the
//! JSON is serde_json's compact form of flor-vertex's own types in struct
//! order, and Ed25519 signing is deterministic. The same repo state gives the
//! same bytes on any machine. The version comes from `rete.yaml` (see
//! `docs/versions.md`).
//!
//! The device limits are a rule of the rete ([`seal_nodes`]): a node fits when
//! its artifacts build within the counts and its sealed envelopes within
//! [`limits::MAX_ARTIFACT_BYTES`]. Sizes need sealed bytes, so the rule seals:
//! `retectl compile` runs it once with the real key and keeps what it sealed;
//! `retectl validate`, which has no key, runs it with a throwaway one
//! ([`Signing::probe`]: an Ed25519 signature has a fixed length).

use std::collections::{BTreeMap, BTreeSet};

use flor_vertex::artifact::{
    self, AclRow, Addr, AgentConfig, ConfigServer, MgmtSigner, MgmtSigners, Principal,
    PublishedService, Route, ScopePath, ServiceIndexes, ShortText, SocksListener, VertexConfig,
    VertexRef,
};
use flor_vertex::contract::{self, Trust};
use flor_vertex::envelope::{self, ArtifactKind, Header, Plane};
use flor_vertex::identity::{Kind, Name, SpiffeId};
use flor_vertex::limits::{self, Limit};

use crate::checked::{Access, Node, Pinned, Rete, Service};
use crate::model::{self, Problem};

/// The one vertex a C0 node runs.
pub const VERTEX_NAME: &str = "flor";
/// Where the agent artifact lives in a scope and in the compiled tree.
pub const AGENT_PATH: &str = contract::AGENT_REL;
/// Where the vertex artifact lives in a scope and in the compiled tree.
pub const VERTEX_PATH: &str = "mgmt/vertices/flor.json";

/// Why compiling a node failed.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// The artifact would not fit a device limit.
    #[error("node {node}: {what} is {got}, over {limit} by {over}")]
    OverLimit {
        /// The node.
        node: String,
        /// What overflowed.
        what: &'static str,
        /// The count or length.
        got: usize,
        /// The limit.
        limit: Limit,
        /// By how much.
        over: usize,
    },
    /// A value does not fit a bounded field (a path or name).
    #[error("node {node}: {what} does not fit {limit}")]
    Field {
        /// The node.
        node: String,
        /// What overflowed.
        what: String,
        /// The limit.
        limit: Limit,
    },
    /// The node hosting the config-server, or a service's node, has no listen address.
    #[error("node {node}: {what}")]
    Unroutable {
        /// The node.
        node: String,
        /// What is missing.
        what: String,
    },
    /// The device parser or verifier refused the sealed artifact (a retectl bug).
    #[error("node {node}: the device refuses the compiled {kind}: {reason}")]
    DeviceRefused {
        /// The node.
        node: String,
        /// agent or vertex.
        kind: &'static str,
        /// The device's reason.
        reason: String,
    },
}

/// One node's artifacts, before sealing.
#[derive(Clone, Debug)]
pub struct NodeArtifacts {
    /// The agent payload.
    pub agent: AgentConfig,
    /// The vertex payload.
    pub vertex: VertexConfig,
}

fn path(node: &str, p: &str) -> Result<ScopePath, CompileError> {
    ScopePath::new(p).map_err(|limit| CompileError::Field {
        node: node.to_owned(),
        what: format!("path {p:?}"),
        limit,
    })
}

fn principal(id: &SpiffeId) -> Principal {
    Principal {
        id: id.clone(),
        cert: artifact::cert_path(id),
        key: artifact::key_path(id),
    }
}

fn check_count(
    node: &str,
    what: &'static str,
    got: usize,
    limit: Limit,
    errs: &mut Vec<CompileError>,
) {
    if got > limit.value() {
        errs.push(CompileError::OverLimit {
            node: node.to_owned(),
            what,
            got,
            limit,
            over: got - limit.value(),
        });
    }
}

/// Builds one node's payloads, or every limit it breaks. `pins` are the
/// callers' pinned certificates; a caller without any gets an unpinned row.
pub fn build(
    rete: &Rete,
    access: &Access,
    pins: &Pinned,
    node: &Node,
) -> Result<NodeArtifacts, Vec<CompileError>> {
    let n = node.name.as_str();
    let mut errs = Vec::new();

    // Principals held: node identity, hosted services, listed users.
    let hosted: BTreeMap<&SpiffeId, &Service> = rete
        .services
        .values()
        .filter(|s| s.node == n)
        .map(|s| (&s.id, s))
        .collect();
    let hosted_keys: BTreeMap<&SpiffeId, &str> = rete
        .services
        .iter()
        .filter(|(_, s)| s.node == n)
        .map(|(k, s)| (&s.id, k.as_str()))
        .collect();
    let users: Vec<&SpiffeId> = {
        let mut u: Vec<&str> = node.users.iter().map(String::as_str).collect();
        u.sort_unstable();
        u.iter()
            .filter_map(|name| rete.users.get(*name).map(|u| &u.id))
            .collect()
    };
    let mut held: BTreeSet<&SpiffeId> = BTreeSet::new();
    held.insert(&node.id);
    held.extend(hosted.keys().copied());
    held.extend(users.iter().copied());

    // ACL: for each hosted service (index in id order), its callers.
    let service_ids: Vec<&SpiffeId> = hosted.keys().copied().collect();
    let mut rows: BTreeMap<&SpiffeId, Vec<u8>> = BTreeMap::new();
    for (i, id) in service_ids.iter().enumerate() {
        let key = hosted_keys[id];
        for caller in access.callers.get(key).into_iter().flatten() {
            // i < MAX_SERVICES <= 64 when the count check passes; larger i is reported below.
            rows.entry(caller)
                .or_default()
                .push(u8::try_from(i).unwrap_or(u8::MAX));
        }
    }

    // Routes: every service a held principal may reach.
    let mut targets: BTreeSet<&str> = BTreeSet::new();
    for p in &held {
        if let Some(set) = access.reach.get(*p) {
            targets.extend(set.iter().map(String::as_str));
        }
    }
    let mut routes: BTreeMap<&SpiffeId, Addr> = BTreeMap::new();
    for key in &targets {
        let Some(svc) = rete.services.get(*key) else {
            continue;
        };
        match rete.nodes.get(&svc.node).and_then(|h| h.listen) {
            Some(addr) => {
                routes.insert(&svc.id, Addr(addr));
            }
            None => errs.push(CompileError::Unroutable {
                node: n.to_owned(),
                what: format!(
                    "service {key:?} is on node {:?}, which has no listen address",
                    svc.node
                ),
            }),
        }
    }

    // SOCKS5: users by name, then service principals that call out, then the node.
    let socks_principals = crate::ports::assign(rete, access, node);

    check_count(
        n,
        "principals held",
        held.len(),
        Limit::Principals,
        &mut errs,
    );
    check_count(
        n,
        "services published",
        service_ids.len(),
        Limit::Services,
        &mut errs,
    );
    check_count(
        n,
        "ACL rows (distinct callers of its services)",
        rows.len(),
        Limit::AclRows,
        &mut errs,
    );
    check_count(
        n,
        "routes (services its principals may reach)",
        routes.len(),
        Limit::Routes,
        &mut errs,
    );
    check_count(
        n,
        "SOCKS5 listeners",
        socks_principals.len(),
        Limit::SocksListeners,
        &mut errs,
    );
    let Some(config) = rete.config_service() else {
        errs.push(CompileError::Unroutable {
            node: n.to_owned(),
            what: "service \"config\" is not defined".into(),
        });
        return Err(errs);
    };
    let config_addr = rete.nodes.get(&rete.config_node).and_then(|c| c.listen);
    if config_addr.is_none() {
        errs.push(CompileError::Unroutable {
            node: n.to_owned(),
            what: format!(
                "config-server node {:?} has no listen address",
                rete.config_node
            ),
        });
    }
    if !errs.is_empty() {
        return Err(errs);
    }

    let field = |what: &str, l: Limit| CompileError::Field {
        node: n.to_owned(),
        what: what.to_owned(),
        limit: l,
    };
    let mut vertex = VertexConfig {
        rete: rete.td.clone(),
        node: node.name.clone(),
        name: Name::new(VERTEX_NAME).map_err(|_| vec![field("vertex name", Limit::NameLen)])?,
        ca: path(n, artifact::CA_PATH).map_err(|e| vec![e])?,
        listen: node.listen.map(Addr),
        idle_timeout_s: rete.idle_timeout_s,
        principals: Default::default(),
        services: Default::default(),
        acl: Default::default(),
        routes: Default::default(),
        socks: Default::default(),
    };
    // Counts were checked above, so pushes below cannot hit a limit; a failure is still reported, not unwrapped.
    let mut push_err = |what: &str, l: Limit| errs.push(field(what, l));
    for id in &held {
        if let Err(l) = vertex.principals.push(principal(id)) {
            push_err("principals", l);
        }
    }
    for id in &service_ids {
        let svc = hosted[id];
        if let Err(l) = vertex.services.push(PublishedService {
            id: (*id).clone(),
            upstream: Addr(svc.upstream),
            caller_socket: svc.caller_socket.clone(),
        }) {
            push_err("services", l);
        }
    }
    for (caller, idx) in rows {
        let mut services = ServiceIndexes::default();
        let mut idx = idx;
        idx.sort_unstable();
        idx.dedup();
        let mut over = None;
        for i in idx {
            if let Err(l) = services.push(i) {
                over = Some(l);
            }
        }
        if let Some(l) = over {
            push_err("ACL grants", l);
        }
        if let Err(l) = vertex.acl.push(AclRow {
            caller: caller.clone(),
            services,
            pins: pins.get(&caller.to_string()).cloned().unwrap_or_default(),
        }) {
            push_err("ACL rows", l);
        }
    }
    for (target, addr) in routes {
        if let Err(l) = vertex.routes.push(Route {
            target: target.clone(),
            addr,
        }) {
            push_err("routes", l);
        }
    }
    for p in &socks_principals {
        if let Err(l) = vertex.socks.push(SocksListener {
            principal: p.id.clone(),
            port: p.port,
        }) {
            push_err("SOCKS5 listeners", l);
        }
    }

    // Every node hosting services listens (validate), so the push service's node has an address.
    let metrics = rete.metrics_push_service().and_then(|m| {
        Some(artifact::MetricsPush {
            service: m.id.clone(),
            addr: Addr(rete.nodes.get(&m.node)?.listen?),
            interval_s: rete.metrics_interval_s,
        })
    });
    let mut vertices = artifact::VertexRefs::default();
    let vref = VertexRef {
        name: vertex.name.clone(),
        artifact: path(n, VERTEX_PATH).map_err(|e| vec![e])?,
    };
    if let Err(l) = vertices.push(vref) {
        push_err("vertices", l);
    }
    let agent = AgentConfig {
        rete: rete.td.clone(),
        node: node.name.clone(),
        ca: path(n, artifact::CA_PATH).map_err(|e| vec![e])?,
        identity: principal(&node.id),
        config_server: ConfigServer {
            service: config.id.clone(),
            // Checked above.
            addr: Addr(
                config_addr.unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 1))),
            ),
        },
        poll_interval_s: rete.poll_interval_s,
        commit_timeout_s: rete.commit_timeout_s,
        vertices,
        metrics,
    };
    if !errs.is_empty() {
        return Err(errs);
    }
    Ok(NodeArtifacts { agent, vertex })
}

/// The management-plane signers as envelopes list them (sorted by identity).
pub fn mgmt_signers(rete: &Rete, keys: &BTreeMap<String, [u8; 32]>) -> MgmtSigners {
    let mut list: Vec<MgmtSigner> = rete
        .signers
        .iter()
        .map(|s| MgmtSigner {
            id: SpiffeId::new(rete.td.clone(), Kind::ManagementPlane, s.name.clone()),
            key: artifact::PublicKeyHex(keys.get(s.name.as_str()).copied().unwrap_or([0; 32])),
        })
        .collect();
    list.sort_by(|a, b| a.id.cmp(&b.id));
    let mut out = MgmtSigners::default();
    for s in list.into_iter().take(limits::MAX_MGMT_SIGNERS) {
        let _ = out.push(s);
    }
    out
}

fn header(
    rete: &Rete,
    node: &Name,
    kind: ArtifactKind,
    signer: &SpiffeId,
    signers: &MgmtSigners,
) -> Header {
    Header {
        kind,
        // SCHEMA_VERSION is a short constant ("1.0"); it always fits.
        schema: ShortText::new(artifact::SCHEMA_VERSION).unwrap_or_default(),
        plane: Plane::Mgmt,
        version: rete.version,
        rete: rete.td.clone(),
        node: node.clone(),
        signer: signer.clone(),
        authorized_mgmt_signers: signers.clone(),
    }
}

/// A node's two sealed envelopes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    /// `mgmt/agent.json` bytes.
    pub agent: Vec<u8>,
    /// `mgmt/vertices/flor.json` bytes.
    pub vertex: Vec<u8>,
}

/// Seals both artifacts with the signer's key and checks that the device
/// verifier opens them and parses back exactly what was written.
pub fn seal(
    rete: &Rete,
    arts: &NodeArtifacts,
    signer: &SpiffeId,
    signers: &MgmtSigners,
    key: &ed25519_compact::SecretKey,
) -> Result<Sealed, CompileError> {
    let node = &arts.vertex.node;
    let agent = envelope::seal(
        &json(&header(rete, node, ArtifactKind::Agent, signer, signers)),
        &json(&arts.agent),
        key,
    );
    let vertex = envelope::seal(
        &json(&header(rete, node, ArtifactKind::Vertex, signer, signers)),
        &json(&arts.vertex),
        key,
    );
    let refused = |kind: &'static str, reason: String| CompileError::DeviceRefused {
        node: node.to_string(),
        kind,
        reason,
    };
    for (bytes, kind) in [
        (&agent, ArtifactKind::Agent),
        (&vertex, ArtifactKind::Vertex),
    ] {
        if bytes.len() > limits::MAX_ARTIFACT_BYTES {
            return Err(CompileError::OverLimit {
                node: node.to_string(),
                what: if kind == ArtifactKind::Agent {
                    "agent.json size in bytes"
                } else {
                    "vertices/flor.json size in bytes"
                },
                got: bytes.len(),
                limit: Limit::ArtifactBytes,
                over: bytes.len() - limits::MAX_ARTIFACT_BYTES,
            });
        }
    }
    // The device's own reader, under the trust the device will have.
    let trust = Trust {
        rete: &rete.td,
        node,
        signers,
        current: None,
    };
    let (_, a) =
        contract::open_agent(&agent, &trust).map_err(|e| refused("agent.json", e.to_string()))?;
    if a != arts.agent {
        return Err(refused(
            "agent.json",
            "payload does not parse back to what was written".into(),
        ));
    }
    let (_, v) = contract::open_vertex(&vertex, &trust, &arts.vertex.name)
        .map_err(|e| refused("vertices/flor.json", e.to_string()))?;
    if v != arts.vertex {
        return Err(refused(
            "vertices/flor.json",
            "payload does not parse back to what was written".into(),
        ));
    }
    Ok(Sealed { agent, vertex })
}

fn json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    // Serialising these plain structs (strings, numbers, lists) cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

/// Who seals: the signer named in every envelope header, the signer list the
/// envelopes carry, and the signer's key.
pub struct Signing {
    signer: SpiffeId,
    signers: MgmtSigners,
    key: ed25519_compact::SecretKey,
}

impl Signing {
    /// Seals as `signer` with `key`; `signers` is what the device will trust
    /// ([`mgmt_signers`]).
    pub fn new(signer: SpiffeId, signers: MgmtSigners, key: ed25519_compact::SecretKey) -> Self {
        Signing {
            signer,
            signers,
            key,
        }
    }

    /// `validate`'s stand-in for the real key: the same signer list (so the
    /// same sizes), with the first signer's key swapped for a throwaway one
    /// that signs. `None` when the rete names no signer.
    pub fn probe(rete: &Rete, signer_keys: &BTreeMap<String, [u8; 32]>) -> Option<Self> {
        let throwaway = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([7; 32]));
        let mut trusted = mgmt_signers(rete, signer_keys);
        let first = trusted.0.first_mut()?;
        first.key = artifact::PublicKeyHex(*throwaway.pk);
        let probe = first.id.clone();
        Some(Signing::new(probe, trusted, throwaway.sk))
    }

    /// [`seal`] with this signer.
    ///
    /// # Errors
    ///
    /// As [`seal`]: an envelope over [`limits::MAX_ARTIFACT_BYTES`], or one the
    /// device's reader refuses.
    pub fn seal(&self, rete: &Rete, arts: &NodeArtifacts) -> Result<Sealed, CompileError> {
        seal(rete, arts, &self.signer, &self.signers, &self.key)
    }
}

impl std::fmt::Debug for Signing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Signing")
            .field("signer", &self.signer)
            .finish_non_exhaustive()
    }
}

/// One node, built and sealed.
#[derive(Clone, Debug)]
pub struct Compiled {
    /// The payloads.
    pub arts: NodeArtifacts,
    /// Their envelopes, the bytes a device gets.
    pub sealed: Sealed,
}

/// The device-limits rule: builds every node of the rete once and seals
/// what was built once with `sealer`. Returns the nodes that fit, by name, and
/// for each node that does not, why, at its line in nodes.yaml.
///
/// `retectl compile` passes its real key and writes the returned bytes;
/// `retectl validate` passes [`Signing::probe`] and drops them.
pub fn seal_nodes(
    rete: &Rete,
    access: &Access,
    pins: &Pinned,
    mut sealer: impl FnMut(&Rete, &NodeArtifacts) -> Result<Sealed, CompileError>,
) -> (BTreeMap<String, Compiled>, Vec<Problem>) {
    let mut compiled = BTreeMap::new();
    let mut problems = Vec::new();
    for (name, node) in &rete.nodes {
        let at = |e: CompileError| Problem::new(model::NODES_FILE, node.line, e.to_string());
        match build(rete, access, pins, node) {
            Ok(arts) => match sealer(rete, &arts) {
                Ok(sealed) => {
                    compiled.insert(name.clone(), Compiled { arts, sealed });
                }
                Err(e) => problems.push(at(e)),
            },
            Err(errs) => problems.extend(errs.into_iter().map(at)),
        }
    }
    (compiled, problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Source;

    /// A rete of two nodes: `m` hosts the config-server, `b` holds `users`.
    fn rete(users: usize) -> Rete {
        let names: Vec<String> = (0..users).map(|i| format!("u{i:02}")).collect();
        let mut users_yaml = String::from("users:\n  - {name: op, role: operator}\n");
        for n in &names {
            users_yaml.push_str(&format!("  - {{name: {n}}}\n"));
        }
        let src = Source {
            rete: serde_saphyr::from_str("name: t.flor\nversion: 1\ncrypto: {ca: ecdsa-p256, signers: {mgmt: ed25519}, tls_principals: ecdsa-p256}\nmgmt_signers: [primary]\nconfig_server: {node: m}\n").unwrap(),
            nodes: serde_saphyr::from_str(&format!(
                "nodes:\n  - {{name: m, listen: 127.0.0.1:1}}\n  - {{name: b, users: [{}]}}\n",
                names.join(", ")
            ))
            .unwrap(),
            users: serde_saphyr::from_str(&users_yaml).unwrap(),
            services: serde_saphyr::from_str("services:\n  - {name: config, node: m, upstream: 127.0.0.1:2}\n  - {name: config-publish, node: m, upstream: 127.0.0.1:3}\n").unwrap(),
            roles: serde_saphyr::from_str("roles:\n  - {name: node, groups: [config-read]}\n  - {name: operator, groups: [config-read, config-write]}\n").unwrap(),
            groups: serde_saphyr::from_str("groups:\n  - {name: config-read, services: [config]}\n  - {name: config-write, services: [config-publish]}\n").unwrap(),
        };
        let (rete, problems) = crate::validate::check(&src);
        assert!(problems.is_empty(), "{problems:?}");
        rete.unwrap()
    }

    /// A signer of the rete with a key of the test's own, and what a device trusts.
    fn signing(rete: &Rete) -> (Signing, MgmtSigners) {
        let kp = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([1; 32]));
        let keys = BTreeMap::from([("primary".to_owned(), *kp.pk)]);
        let signers = mgmt_signers(rete, &keys);
        let id = signers.0[0].id.clone();
        (Signing::new(id, signers.clone(), kp.sk), signers)
    }

    #[test]
    fn seal_nodes_seals_each_node_once_and_returns_what_it_sealed() {
        let rete = rete(2);
        let access = rete.access();
        let (signing, signers) = signing(&rete);
        let mut sealed_for = Vec::new();
        let (compiled, problems) = seal_nodes(&rete, &access, &Pinned::new(), |r, a| {
            sealed_for.push(a.vertex.node.to_string());
            signing.seal(r, a)
        });
        assert!(problems.is_empty(), "{problems:?}");
        // One seal per node, in nodes.yaml's name order, and every node compiled.
        assert_eq!(sealed_for, ["b", "m"]);
        assert_eq!(compiled.keys().collect::<Vec<_>>(), ["b", "m"]);
        for c in compiled.values() {
            // The bytes returned are the real signer's, which the device opens:
            // what the limits rule measured is what compile writes.
            let trust = Trust {
                rete: &rete.td,
                node: &c.arts.vertex.node,
                signers: &signers,
                current: None,
            };
            let (_, agent) = contract::open_agent(&c.sealed.agent, &trust).unwrap();
            assert_eq!(agent, c.arts.agent);
            contract::open_vertex(&c.sealed.vertex, &trust, &c.arts.vertex.name).unwrap();
            assert_eq!(
                c.sealed,
                signing.seal(&rete, &c.arts).unwrap(),
                "deterministic"
            );
        }
    }

    #[test]
    fn a_node_over_the_limits_is_a_problem_and_the_others_are_still_sealed_once() {
        // 40 users on b (and b itself, which reaches config): more principals than a vertex
        // holds, more SOCKS5 listeners than it binds.
        let rete = rete(40);
        let access = rete.access();
        let (signing, _) = signing(&rete);
        let mut sealed_for = Vec::new();
        let (compiled, problems) = seal_nodes(&rete, &access, &Pinned::new(), |r, a| {
            sealed_for.push(a.vertex.node.to_string());
            signing.seal(r, a)
        });
        // b never got as far as sealing; m was sealed once.
        assert_eq!(sealed_for, ["m"]);
        assert_eq!(compiled.keys().collect::<Vec<_>>(), ["m"]);
        let b = rete.nodes["b"].line;
        let got: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                format!("nodes.yaml:{b}: node b: principals held is 41, over MAX_PRINCIPALS (32) by 9"),
                format!("nodes.yaml:{b}: node b: SOCKS5 listeners is 41, over MAX_SOCKS_LISTENERS (16) by 25"),
            ]
        );
    }

    #[test]
    fn the_probe_measures_the_same_sizes_as_the_real_signer() {
        let rete = rete(2);
        let access = rete.access();
        let (signing, _) = signing(&rete);
        let probe = Signing::probe(&rete, &BTreeMap::new()).unwrap();
        for node in rete.nodes.values() {
            let arts = build(&rete, &access, &Pinned::new(), node).unwrap();
            let real = signing.seal(&rete, &arts).unwrap();
            let probed = probe.seal(&rete, &arts).unwrap();
            assert_eq!(real.agent.len(), probed.agent.len());
            assert_eq!(real.vertex.len(), probed.vertex.len());
            assert_ne!(real, probed, "signed with another key");
        }
    }
}
