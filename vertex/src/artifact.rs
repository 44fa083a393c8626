//! The compiled per-node artifacts: `mgmt/agent.json` (kind `agent`) and
//! `mgmt/vertices/<name>.json` (kind `vertex`).
//!
//! These are the stable contract between the operator's compiler and the
//! device. retectl serialises these very types (with serde_json); the device
//! parses them with serde-json-core into fixed-capacity fields, so the two
//! cannot drift. Every list and string is bounded by a constant in
//! [`crate::limits`], and a value one past its bound is refused with the
//! limit's name.
//!
//! Paths inside artifacts are relative to the rete scope's install root
//! (`ca.crt`, `certs/service/wiki.crt`); the agent resolves them. Listen ports
//! are preferences: the vertex binds the preferred port if it is free, else any.

use core::fmt;
use core::net::SocketAddr;

use heapless::String;
use serde::de::{SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::identity::{Kind, Name, SpiffeId, TrustDomain};
use crate::limits::{self, record_exceeded, Limit};

/// Schema major version this build understands; a different major is refused.
pub const SCHEMA_MAJOR: u16 = 1;
/// Schema version this build writes (`major.minor`); minors only add optional fields.
pub const SCHEMA_VERSION: &str = "1.3";

/// Why an artifact was refused after (or while) parsing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ArtifactError {
    /// The JSON is malformed or a field has the wrong type or value.
    Malformed,
    /// A list or string is over its limit.
    OverLimit(Limit),
    /// An ACL row names a service index that the artifact does not publish.
    AclIndexOutOfRange,
    /// ACL rows are not sorted by caller, or a caller appears twice.
    AclNotSorted,
    /// A service, route or principal belongs to another trust domain.
    ForeignIdentity,
    /// A published service or route target is not a service.
    NotAService,
    /// A SOCKS5 listener is bound to a principal this vertex does not hold.
    UnknownSocksPrincipal,
    /// Two services, principals or routes share an identity.
    Duplicate,
    /// A path is absolute or climbs out of the scope (`..`).
    PathEscapesScope,
}

impl fmt::Display for ArtifactError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArtifactError::Malformed => {
                f.write_str("artifact is not valid JSON of the expected shape")
            }
            ArtifactError::OverLimit(l) => {
                f.write_str("artifact is over the device limit ")?;
                fmt::Display::fmt(l, f)
            }
            ArtifactError::AclIndexOutOfRange => {
                f.write_str("an ACL row grants a service index that is not published")
            }
            ArtifactError::AclNotSorted => {
                f.write_str("ACL rows are not sorted by caller or repeat a caller")
            }
            ArtifactError::ForeignIdentity => {
                f.write_str("an identity belongs to another trust domain")
            }
            ArtifactError::NotAService => {
                f.write_str("a published service or route target is not of kind service")
            }
            ArtifactError::UnknownSocksPrincipal => {
                f.write_str("a SOCKS5 listener is bound to a principal the vertex does not hold")
            }
            ArtifactError::Duplicate => f.write_str("an identity appears twice in one list"),
            ArtifactError::PathEscapesScope => {
                f.write_str("a path is absolute or leaves the scope with '..'")
            }
        }
    }
}

impl std::error::Error for ArtifactError {}

/// Maps a serde-json-core error to a typed refusal, naming the limit if one was hit.
pub fn map_parse_error(_e: serde_json_core::de::Error) -> ArtifactError {
    match limits::take_exceeded_limit() {
        Some(l) => ArtifactError::OverLimit(l),
        None => ArtifactError::Malformed,
    }
}

/// Parses a bare artifact payload (no envelope) with the device parser.
pub fn parse_payload<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, ArtifactError> {
    if bytes.len() > limits::MAX_ARTIFACT_BYTES {
        return Err(ArtifactError::OverLimit(Limit::ArtifactBytes));
    }
    let _ = limits::take_exceeded_limit();
    serde_json_core::from_slice::<T>(bytes)
        .map(|(v, _)| v)
        .map_err(map_parse_error)
}

macro_rules! bounded_text {
    ($(#[$doc:meta])* $ty:ident, $max:expr, $limit:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $ty(String<{ $max }>);

        impl $ty {
            /// Copies `s` in, or names the limit it is over.
            pub fn new(s: &str) -> Result<Self, Limit> {
                let mut out = String::new();
                out.push_str(s).map_err(|_| $limit)?;
                Ok($ty(out))
            }

            /// The text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str("a string")
                    }
                    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<$ty, E> {
                        $ty::new(s).map_err(|l| {
                            record_exceeded(l);
                            E::custom(l.name())
                        })
                    }
                }
                d.deserialize_str(V)
            }
        }
    };
}

bounded_text!(
    /// A scope-relative file path (`certs/service/wiki.crt`).
    ScopePath,
    limits::MAX_PATH_LEN,
    Limit::PathLen
);
bounded_text!(
    /// A short text field: schema version, vertex name.
    ShortText,
    limits::MAX_SHORT_LEN,
    Limit::ShortLen
);

bounded_text!(
    /// A local account on the node, user or group, by name (`www-data`) or number (`33`).
    AccountName,
    limits::MAX_NAME_LEN,
    Limit::NameLen
);

impl ScopePath {
    /// Whether the path stays inside the scope: relative, no `..`, no empty segment.
    pub fn is_contained(&self) -> bool {
        let p = self.as_str();
        !p.is_empty()
            && !p.starts_with('/')
            && !p.contains('\\')
            && p.split('/')
                .all(|seg| !seg.is_empty() && seg != ".." && seg != ".")
    }
}

/// A socket address (`127.0.0.1:8080`, `[::1]:7443`); hostnames are not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Addr(pub SocketAddr);

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl Serialize for Addr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Addr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Addr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an IP socket address")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Addr, E> {
                if s.len() > limits::MAX_ADDR_LEN {
                    record_exceeded(Limit::AddrLen);
                    return Err(E::custom(Limit::AddrLen.name()));
                }
                s.parse()
                    .map(Addr)
                    .map_err(|_| E::custom("bad socket address"))
            }
        }
        d.deserialize_str(V)
    }
}

macro_rules! bounded_list {
    ($(#[$doc:meta])* $ty:ident, $item:ty, $max:expr, $limit:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, Default, PartialEq, Eq)]
        pub struct $ty(pub std::vec::Vec<$item>);

        impl $ty {
            /// The most items the device accepts.
            pub const CAPACITY: usize = $max;

            /// Whether the list holds nothing.
            pub fn is_empty(&self) -> bool {
                self.0.is_empty()
            }

            /// Appends `item`, or names the limit the list is at.
            pub fn push(&mut self, item: $item) -> Result<(), Limit> {
                if self.0.len() >= $max {
                    return Err($limit);
                }
                self.0.push(item);
                Ok(())
            }
        }

        impl core::ops::Deref for $ty {
            type Target = [$item];
            fn deref(&self) -> &[$item] {
                &self.0
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_seq(self.0.iter())
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str("a list")
                    }
                    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<$ty, A::Error> {
                        let mut out = $ty::default();
                        while let Some(item) = seq.next_element::<$item>()? {
                            if out.push(item).is_err() {
                                record_exceeded($limit);
                                return Err(serde::de::Error::custom($limit.name()));
                            }
                        }
                        Ok(out)
                    }
                }
                d.deserialize_seq(V)
            }
        }
    };
}

/// A principal whose certificate and key a vertex (or agent) holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// The principal's SPIFFE ID, as in its certificate's URI SAN.
    pub id: SpiffeId,
    /// Scope-relative path of the PEM certificate (leaf first).
    pub cert: ScopePath,
    /// Scope-relative path of the PEM private key.
    pub key: ScopePath,
}

/// A service this node publishes: where its bytes go once the ACL allows a caller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedService {
    /// The service identity (rete- or node-scoped), presented as the server SAN.
    pub id: SpiffeId,
    /// The local upstream TCP address the vertex connects to.
    pub upstream: Addr,
    /// Who may ask the service's identity side-channel (schema 1.3); `None`:
    /// only the vertex's own user. Vertices of schema 1.1 ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller_socket: Option<CallerSocket>,
}

/// The owner and group of a service's identity side-channel socket
/// (`callers/<vertex>/<service>.sock`, docs/wire.md): the socket is mode
/// 0600 for its user, 0660 when a group is named, so exactly the service's
/// own account (or group) can ask which caller is on a connection.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallerSocket {
    /// The owning user; `None`: the vertex's own user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<AccountName>,
    /// The group that may ask too; `None`: no group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<AccountName>,
}

/// One caller and the services (indexes into `services`) it may reach.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclRow {
    /// The caller's SPIFFE ID.
    pub caller: SpiffeId,
    /// Indexes into [`VertexConfig::services`], ascending.
    pub services: ServiceIndexes,
    /// The caller's certificates the server accepts (schema 1.2), newest
    /// first. Empty (and absent from the JSON): any CA-signed certificate
    /// naming the caller, as before pinning; vertices of schema 1.1 ignore it.
    #[serde(default, skip_serializing_if = "Pins::is_empty")]
    pub pins: Pins,
}

/// One pinned certificate of a caller: the SHA-256 of its DER and, for an
/// older certificate kept through a renewal, until when it is accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    /// SHA-256 of the certificate's DER (what `enrollment.log` records).
    pub sha256: Sha256Hex,
    /// Unix seconds from which the pin no longer holds (its successor's
    /// issue time plus the rete's `pin_overlap_days`, or its own expiry);
    /// `None` for the newest certificate, which its own expiry bounds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<u32>,
}

impl Pin {
    /// Whether this pin accepts the certificate whose DER hashes to `sha256` at `now_unix`.
    pub fn accepts(&self, sha256: &[u8; 32], now_unix: u64) -> bool {
        &self.sha256.0 == sha256 && self.until.is_none_or(|u| now_unix < u64::from(u))
    }
}

/// A remote service this node's principals may dial, and where its node listens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// The target service identity.
    pub target: SpiffeId,
    /// The UDP address of the hosting node's vertex.
    pub addr: Addr,
}

/// A local SOCKS5 listener bound to one caller identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocksListener {
    /// The identity every flow through this listener uses.
    pub principal: SpiffeId,
    /// Preferred loopback TCP port (before the scope's port offset), in
    /// [`SOCKS_PORT_FIRST`]`..=`[`SOCKS_PORT_LAST`] when retectl compiled it; if
    /// it is taken, a port at or above [`SOCKS_FALLBACK_MIN_PORT`].
    pub port: u16,
}

// The SOCKS5 port band. A listener's port is how an application on the device
// chooses an identity, so a port must never pass from one principal to another
// by accident: retectl gives each principal a port of its own inside one band
// (never by position), and a listener whose port is taken falls back above
// every scope's band instead of onto a neighbour's port.

/// First preferred SOCKS5 port of the band: the conventional SOCKS port, which
/// the one user of a single-rete device gets unless the rete gives it another.
pub const SOCKS_PORT_FIRST: u16 = 1080;

/// Width of the band, and the step between two scopes' port offsets
/// (`flor enroll` picks offsets in multiples of it), so the bands of two retes
/// on one device never overlap. 100 principals with a SOCKS5 listener per node
/// is far above [`limits::MAX_SOCKS_LISTENERS`].
pub const SOCKS_PORT_BAND: u16 = 100;

/// Last preferred SOCKS5 port of the band (1179): the node identity's default,
/// since a node holds exactly one node identity.
pub const SOCKS_PORT_LAST: u16 = SOCKS_PORT_FIRST + SOCKS_PORT_BAND - 1;

/// Lowest port a SOCKS5 listener falls back to when its preferred port is
/// taken: the start of Linux's default ephemeral range (macOS, the BSDs and
/// Windows start at 49152). Every scope's band lies below it as long as the
/// scope's offset is below [`MAX_SCOPE_PORT_OFFSET`], so a fallback port is
/// never another principal's preferred port.
pub const SOCKS_FALLBACK_MIN_PORT: u16 = 32768;

/// Largest port offset a scope may have: its band still ends below
/// [`SOCKS_FALLBACK_MIN_PORT`] (31,500: room for 316 retes on one device).
pub const MAX_SCOPE_PORT_OFFSET: u16 =
    (SOCKS_FALLBACK_MIN_PORT - SOCKS_PORT_FIRST - SOCKS_PORT_BAND) / SOCKS_PORT_BAND
        * SOCKS_PORT_BAND;
const _: () = assert!(
    SOCKS_PORT_LAST as u32 + MAX_SCOPE_PORT_OFFSET as u32 <= SOCKS_FALLBACK_MIN_PORT as u32,
    "the highest scope's band must stay below the fallback ports"
);

/// Whether `port` is a preferred SOCKS5 port of some scope: inside the band
/// moved by any allowed offset (a multiple of [`SOCKS_PORT_BAND`] up to
/// [`MAX_SCOPE_PORT_OFFSET`]). Offsets are multiples of the band's width, so
/// the union of every scope's band is one range.
pub const fn in_some_scope_band(port: u16) -> bool {
    port >= SOCKS_PORT_FIRST && port <= SOCKS_PORT_LAST + MAX_SCOPE_PORT_OFFSET
}

/// An authorised management-plane signer: its identity and Ed25519 public key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MgmtSigner {
    /// `spiffe://<td>/management-plane/<name>`.
    pub id: SpiffeId,
    /// The 32-byte Ed25519 public key.
    pub key: PublicKeyHex,
}

/// An Ed25519 public key written as 64 lowercase hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublicKeyHex(pub [u8; 32]);

/// A SHA-256 digest written as 64 lowercase hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Sha256Hex(pub [u8; 32]);

impl Serialize for Sha256Hex {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        PublicKeyHex(self.0).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Sha256Hex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        PublicKeyHex::deserialize(d).map(|k| Sha256Hex(k.0))
    }
}

impl Serialize for PublicKeyHex {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 64];
        s.serialize_str(crate::hex::encode(&self.0, &mut buf))
    }
}

impl<'de> Deserialize<'de> for PublicKeyHex {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PublicKeyHex;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("64 hex digits")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<PublicKeyHex, E> {
                let mut out = [0u8; 32];
                crate::hex::decode(s, &mut out).map_err(|_| E::custom("bad hex key"))?;
                Ok(PublicKeyHex(out))
            }
        }
        d.deserialize_str(V)
    }
}

bounded_list!(
    /// Principals a vertex holds ([`limits::MAX_PRINCIPALS`]).
    Principals, Principal, limits::MAX_PRINCIPALS, Limit::Principals
);
bounded_list!(
    /// Services a node publishes ([`limits::MAX_SERVICES`]).
    PublishedServices, PublishedService, limits::MAX_SERVICES, Limit::Services
);
bounded_list!(
    /// Indexes of granted services ([`limits::MAX_SERVICES`]).
    ServiceIndexes, u8, limits::MAX_SERVICES, Limit::Services
);
bounded_list!(
    /// ACL rows ([`limits::MAX_ACL_ROWS`]).
    AclRows, AclRow, limits::MAX_ACL_ROWS, Limit::AclRows
);
bounded_list!(
    /// Certificate pins of one caller ([`limits::MAX_PINS`]).
    Pins, Pin, limits::MAX_PINS, Limit::Pins
);
bounded_list!(
    /// Dialable remote services ([`limits::MAX_ROUTES`]).
    Routes, Route, limits::MAX_ROUTES, Limit::Routes
);
bounded_list!(
    /// SOCKS5 listeners ([`limits::MAX_SOCKS_LISTENERS`]).
    SocksListeners, SocksListener, limits::MAX_SOCKS_LISTENERS, Limit::SocksListeners
);
bounded_list!(
    /// Authorised management signers ([`limits::MAX_MGMT_SIGNERS`]).
    MgmtSigners, MgmtSigner, limits::MAX_MGMT_SIGNERS, Limit::MgmtSigners
);
bounded_list!(
    /// Vertices an agent supervises ([`limits::MAX_VERTICES`]).
    VertexRefs, VertexRef, limits::MAX_VERTICES, Limit::Vertices
);

/// A vertex the agent supervises and where its artifact lives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VertexRef {
    /// The vertex name (`flor` in C0).
    pub name: Name,
    /// Scope-relative artifact path (`mgmt/vertices/flor.json`).
    pub artifact: ScopePath,
}

/// How the agent reaches its rete's config-server: a Florete service on a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigServer {
    /// The config-read service (`spiffe://<td>/service/config`).
    pub service: SpiffeId,
    /// The UDP address of the vertex hosting it.
    pub addr: Addr,
}

/// Where and how often the agent pushes its counters: the rete's
/// `metrics-push` service (schema 1.1; absent when the rete declares none).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricsPush {
    /// The push service (`spiffe://<td>/service/metrics-push`).
    pub service: SpiffeId,
    /// The UDP address of the vertex hosting it.
    pub addr: Addr,
    /// Seconds between pushes.
    pub interval_s: u32,
}

/// Payload of `mgmt/agent.json` (envelope kind `agent`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentConfig {
    /// The rete (trust domain).
    pub rete: TrustDomain,
    /// This node's name.
    pub node: Name,
    /// Scope-relative path of the rete CA certificate.
    pub ca: ScopePath,
    /// The node's own principal (`node/<name>`), used to fetch artifacts.
    pub identity: Principal,
    /// Where to fetch artifacts from.
    pub config_server: ConfigServer,
    /// Seconds between polls of the config-server when all is well.
    pub poll_interval_s: u32,
    /// Seconds a new version may run unconfirmed before it is rolled back.
    pub commit_timeout_s: u32,
    /// Vertices to supervise.
    pub vertices: VertexRefs,
    /// Where to push counters (schema 1.1); `None`: the rete collects none.
    /// Agents of schema 1.0 ignore the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsPush>,
}

/// Payload of `mgmt/vertices/<name>.json` (envelope kind `vertex`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VertexConfig {
    /// The rete (trust domain).
    pub rete: TrustDomain,
    /// The node this vertex runs on.
    pub node: Name,
    /// The vertex name (`flor`).
    pub name: Name,
    /// Scope-relative path of the rete CA certificate.
    pub ca: ScopePath,
    /// UDP address to accept QUIC on; `None` on nodes that only dial (laptops).
    pub listen: Option<Addr>,
    /// Seconds of silence after which a QUIC connection or TCP flow is closed.
    pub idle_timeout_s: u32,
    /// Principals whose certificates this vertex holds.
    pub principals: Principals,
    /// Services this node publishes (server side).
    pub services: PublishedServices,
    /// Who may reach which of `services`, sorted by caller.
    pub acl: AclRows,
    /// Remote services the held principals may dial (client side).
    pub routes: Routes,
    /// Local SOCKS5 listeners, one per caller identity.
    pub socks: SocksListeners,
}

/// Where a principal's certificate lives in a scope: `certs/<kind>/[<node>/]<name>.crt`.
/// One convention for the compiler (which writes it into artifacts) and
/// `flor enroll` (which installs files there).
pub fn cert_path(id: &SpiffeId) -> ScopePath {
    scoped(id, "certs/", ".crt")
}

/// Where a principal's private key lives in a scope: `keys/<kind>/[<node>/]<name>.key`.
pub fn key_path(id: &SpiffeId) -> ScopePath {
    scoped(id, "keys/", ".key")
}

/// Where the rete CA certificate lives in a scope.
pub const CA_PATH: &str = "ca.crt";

fn scoped(id: &SpiffeId, dir: &str, ext: &str) -> ScopePath {
    let mut out = String::new();
    // Cannot overflow: 6 + 16 + 1 + 63 + 1 + 63 + 4 < MAX_PATH_LEN.
    let _ = out.push_str(dir);
    let _ = out.push_str(&id.path());
    let _ = out.push_str(ext);
    ScopePath(out)
}

fn check_path(p: &ScopePath) -> Result<(), ArtifactError> {
    if p.is_contained() {
        Ok(())
    } else {
        Err(ArtifactError::PathEscapesScope)
    }
}

fn check_td(id: &SpiffeId, td: &TrustDomain) -> Result<(), ArtifactError> {
    if id.trust_domain() == td {
        Ok(())
    } else {
        Err(ArtifactError::ForeignIdentity)
    }
}

fn check_unique<T, K: PartialEq>(items: &[T], key: impl Fn(&T) -> &K) -> Result<(), ArtifactError> {
    // Lists are bounded (<= 512), so the quadratic scan stays under a
    // quarter-million comparisons once per artifact and needs no allocation.
    for (i, a) in items.iter().enumerate() {
        if items[i + 1..].iter().any(|b| key(a) == key(b)) {
            return Err(ArtifactError::Duplicate);
        }
    }
    Ok(())
}

impl AgentConfig {
    /// Checks what the types alone cannot: paths stay in scope, identities are in the rete.
    pub fn validate(&self) -> Result<(), ArtifactError> {
        check_path(&self.ca)?;
        check_path(&self.identity.cert)?;
        check_path(&self.identity.key)?;
        check_td(&self.identity.id, &self.rete)?;
        check_td(&self.config_server.service, &self.rete)?;
        if self.config_server.service.kind() != Kind::Service {
            return Err(ArtifactError::NotAService);
        }
        for v in self.vertices.iter() {
            check_path(&v.artifact)?;
        }
        if let Some(m) = &self.metrics {
            check_td(&m.service, &self.rete)?;
            if m.service.kind() != Kind::Service {
                return Err(ArtifactError::NotAService);
            }
        }
        check_unique(&self.vertices, |v| &v.name)
    }
}

impl VertexConfig {
    /// Checks what the types alone cannot: indexes in range, rows sorted,
    /// identities in the rete, SOCKS5 principals held, paths in scope.
    pub fn validate(&self) -> Result<(), ArtifactError> {
        check_path(&self.ca)?;
        for p in self.principals.iter() {
            check_path(&p.cert)?;
            check_path(&p.key)?;
            check_td(&p.id, &self.rete)?;
        }
        check_unique(&self.principals, |p| &p.id)?;
        for s in self.services.iter() {
            check_td(&s.id, &self.rete)?;
            if s.id.kind() != Kind::Service {
                return Err(ArtifactError::NotAService);
            }
        }
        check_unique(&self.services, |s| &s.id)?;
        let n = self.services.len();
        let mut prev: Option<&SpiffeId> = None;
        for row in self.acl.iter() {
            check_td(&row.caller, &self.rete)?;
            if prev.is_some_and(|p| p >= &row.caller) {
                return Err(ArtifactError::AclNotSorted);
            }
            prev = Some(&row.caller);
            if row.services.iter().any(|&i| usize::from(i) >= n) {
                return Err(ArtifactError::AclIndexOutOfRange);
            }
        }
        for r in self.routes.iter() {
            check_td(&r.target, &self.rete)?;
            if r.target.kind() != Kind::Service {
                return Err(ArtifactError::NotAService);
            }
        }
        check_unique(&self.routes, |r| &r.target)?;
        for s in self.socks.iter() {
            if !self.principals.iter().any(|p| p.id == s.principal) {
                return Err(ArtifactError::UnknownSocksPrincipal);
            }
        }
        check_unique(&self.socks, |s| &s.principal)
    }

    /// The held principal with this identity.
    pub fn principal(&self, id: &SpiffeId) -> Option<&Principal> {
        self.principals.iter().find(|p| &p.id == id)
    }

    /// The route to a target service.
    pub fn route(&self, target: &SpiffeId) -> Option<&Route> {
        self.routes.iter().find(|r| &r.target == target)
    }

    /// How a running vertex on `self` can move to `new` (spec 000, "Hot reload").
    ///
    /// Only the permission tables are hot: the ACL rows (who may reach the
    /// services this node publishes) and the routes (which remote services
    /// the held principals may dial). The vertex swaps both whole in place and
    /// established flows keep running. Everything else is bound into sockets,
    /// TLS configurations or certificates when the vertex starts, so a change
    /// there needs a new process; the field that forces it is named.
    pub fn change_to(&self, new: &VertexConfig) -> Change {
        let restart = |field| Change::Restart(field);
        if self.rete != new.rete || self.node != new.node || self.name != new.name {
            return restart(RestartField::Identity);
        }
        if self.ca != new.ca {
            return restart(RestartField::Ca);
        }
        if self.listen != new.listen {
            return restart(RestartField::Listen);
        }
        if self.idle_timeout_s != new.idle_timeout_s {
            return restart(RestartField::IdleTimeout);
        }
        if self.principals != new.principals {
            return restart(RestartField::Principals);
        }
        if self.services != new.services {
            return restart(RestartField::Services);
        }
        if self.socks != new.socks {
            return restart(RestartField::Socks);
        }
        if self.acl == new.acl && self.routes == new.routes {
            Change::None
        } else {
            Change::Hot
        }
    }
}

/// How a vertex moves from one artifact to the next ([`VertexConfig::change_to`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// The payloads are equal: only the envelope's version moves.
    None,
    /// Only ACL rows or routes change: applied in place, flows kept.
    Hot,
    /// A field the running process is built from changes: a new process.
    Restart(RestartField),
}

impl Change {
    /// Whether a running vertex can take this change without restarting.
    pub fn is_hot(self) -> bool {
        !matches!(self, Change::Restart(_))
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::None => f.write_str("applied in place: the vertex configuration is unchanged"),
            Change::Hot => f.write_str(
                "applied in place: only ACL rows or routes change; established flows are kept",
            ),
            Change::Restart(field) => write!(f, "restarts the vertex: {field} change"),
        }
    }
}

/// The first field of a [`VertexConfig`] whose change needs a vertex restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RestartField {
    /// rete, node or vertex name.
    Identity,
    /// The CA certificate path.
    Ca,
    /// The QUIC listen address.
    Listen,
    /// The idle timeout (built into every QUIC transport configuration).
    IdleTimeout,
    /// The held principals (certificates and keys).
    Principals,
    /// The published services (SNI registry, upstreams, ACL bit positions).
    Services,
    /// The SOCKS5 listeners.
    Socks,
}

impl fmt::Display for RestartField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RestartField::Identity => "the rete, node or vertex name",
            RestartField::Ca => "the CA path",
            RestartField::Listen => "the listen address",
            RestartField::IdleTimeout => "the idle timeout",
            RestartField::Principals => "the held principals",
            RestartField::Services => "the published services",
            RestartField::Socks => "the SOCKS5 listeners",
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample_vertex() -> VertexConfig {
        let id = |s: &str| SpiffeId::parse(s).unwrap();
        let path = |s: &str| ScopePath::new(s).unwrap();
        let mut v = VertexConfig {
            rete: TrustDomain::new("demo.flor").unwrap(),
            node: Name::new("beta").unwrap(),
            name: Name::new("flor").unwrap(),
            ca: path("ca.crt"),
            listen: Some(Addr("127.0.0.1:7443".parse().unwrap())),
            idle_timeout_s: 60,
            principals: Principals::default(),
            services: PublishedServices::default(),
            acl: AclRows::default(),
            routes: Routes::default(),
            socks: SocksListeners::default(),
        };
        v.principals
            .push(Principal {
                id: id("spiffe://demo.flor/service/wiki"),
                cert: path("certs/service/wiki.crt"),
                key: path("keys/service/wiki.key"),
            })
            .unwrap();
        v.services
            .push(PublishedService {
                id: id("spiffe://demo.flor/service/wiki"),
                upstream: Addr("127.0.0.1:8080".parse().unwrap()),
                caller_socket: Some(CallerSocket {
                    user: None,
                    group: Some(AccountName::new("www-data").unwrap()),
                }),
            })
            .unwrap();
        v.services
            .push(PublishedService {
                id: id("spiffe://demo.flor/service/beta/tcp-echo"),
                upstream: Addr("127.0.0.1:9000".parse().unwrap()),
                caller_socket: None,
            })
            .unwrap();
        let mut both = ServiceIndexes::default();
        both.push(0).unwrap();
        both.push(1).unwrap();
        let mut wiki = ServiceIndexes::default();
        wiki.push(0).unwrap();
        v.acl
            .push(AclRow {
                caller: id("spiffe://demo.flor/user/alice"),
                services: both,
                pins: Pins::default(),
            })
            .unwrap();
        v.acl
            .push(AclRow {
                caller: id("spiffe://demo.flor/user/bob"),
                services: wiki,
                pins: Pins::default(),
            })
            .unwrap();
        v
    }

    #[test]
    fn only_acl_rows_and_routes_are_hot() {
        let old = sample_vertex();
        assert_eq!(old.change_to(&old.clone()), Change::None);
        let mut acl = old.clone();
        acl.acl.0.retain(|r| r.caller.name().as_str() != "bob");
        assert_eq!(old.change_to(&acl), Change::Hot);
        let mut routes = old.clone();
        routes
            .routes
            .push(Route {
                target: SpiffeId::parse("spiffe://demo.flor/service/db").unwrap(),
                addr: Addr("127.0.0.9:7443".parse().unwrap()),
            })
            .unwrap();
        assert_eq!(old.change_to(&routes), Change::Hot);
        assert!(Change::Hot.is_hot() && Change::None.is_hot());
        let restart = |f: &dyn Fn(&mut VertexConfig), field| {
            let mut new = old.clone();
            f(&mut new);
            assert_eq!(old.change_to(&new), Change::Restart(field));
            assert!(!old.change_to(&new).is_hot());
        };
        restart(&|v| v.listen = None, RestartField::Listen);
        restart(&|v| v.idle_timeout_s = 30, RestartField::IdleTimeout);
        restart(
            &|v| v.ca = ScopePath::new("other.crt").unwrap(),
            RestartField::Ca,
        );
        restart(
            &|v| v.node = Name::new("gamma").unwrap(),
            RestartField::Identity,
        );
        restart(&|v| v.principals.0.clear(), RestartField::Principals);
        restart(
            &|v| {
                v.services.0.pop();
            },
            RestartField::Services,
        );
        restart(
            &|v| {
                v.socks
                    .push(SocksListener {
                        principal: SpiffeId::parse("spiffe://demo.flor/service/wiki").unwrap(),
                        port: 1080,
                    })
                    .unwrap();
            },
            RestartField::Socks,
        );
        // A hot change next to a structural one is a restart.
        let mut both = acl.clone();
        both.listen = None;
        assert_eq!(old.change_to(&both), Change::Restart(RestartField::Listen));
    }

    #[test]
    fn scope_paths_follow_the_identity() {
        let id = SpiffeId::parse("spiffe://demo.flor/service/beta/tcp-echo").unwrap();
        assert_eq!(cert_path(&id).as_str(), "certs/service/beta/tcp-echo.crt");
        assert_eq!(key_path(&id).as_str(), "keys/service/beta/tcp-echo.key");
        assert!(cert_path(&id).is_contained());
    }

    #[test]
    fn round_trip_through_device_parser() {
        let v = sample_vertex();
        v.validate().unwrap();
        let json = serde_json::to_vec(&v).unwrap();
        let back: VertexConfig = parse_payload(&json).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn pins_round_trip_and_rows_without_pins_keep_the_old_shape() {
        let mut v = sample_vertex();
        let json = serde_json::to_string(&v).unwrap();
        assert!(!json.contains("pins"), "{json}");
        v.acl.0[1]
            .pins
            .push(Pin {
                sha256: Sha256Hex([0xab; 32]),
                until: None,
            })
            .unwrap();
        v.acl.0[1]
            .pins
            .push(Pin {
                sha256: Sha256Hex([0x01; 32]),
                until: Some(1_795_792_102),
            })
            .unwrap();
        let json = serde_json::to_vec(&v).unwrap();
        let text = String::<4096>::try_from(core::str::from_utf8(&json).unwrap()).unwrap();
        assert!(text.contains(&format!(
            r#""pins":[{{"sha256":"{}"}},{{"sha256":"{}","until":1795792102}}]"#,
            "ab".repeat(32),
            "01".repeat(32)
        )));
        assert_eq!(parse_payload::<VertexConfig>(&json).unwrap(), v);
        // One over MAX_PINS is named.
        let mut j = serde_json::to_value(&v).unwrap();
        let pin = j["acl"][1]["pins"][0].clone();
        j["acl"][1]["pins"] = serde_json::Value::Array(vec![pin; limits::MAX_PINS + 1]);
        assert_eq!(
            parse_payload::<VertexConfig>(j.to_string().as_bytes()),
            Err(ArtifactError::OverLimit(Limit::Pins))
        );
        j["acl"][1]["pins"] = serde_json::json!([{"sha256": "AB"}]);
        assert_eq!(
            parse_payload::<VertexConfig>(j.to_string().as_bytes()),
            Err(ArtifactError::Malformed)
        );
    }

    #[test]
    fn wire_shape_is_stable() {
        let json = serde_json::to_string(&sample_vertex()).unwrap();
        assert!(json.starts_with(r#"{"rete":"demo.flor","node":"beta","name":"flor","ca":"ca.crt","listen":"127.0.0.1:7443""#), "{json}");
        assert!(
            json.contains(r#"{"caller":"spiffe://demo.flor/user/alice","services":[0,1]}"#),
            "{json}"
        );
    }

    fn over_by_one(list_field: &str, item: &str, n: usize) -> std::string::String {
        let v = serde_json::to_value(sample_vertex()).unwrap();
        let mut v = v;
        let items: std::vec::Vec<serde_json::Value> = (0..n)
            .map(|i| serde_json::from_str(&item.replace("{i}", &i.to_string())).unwrap())
            .collect();
        v[list_field] = serde_json::Value::Array(items);
        serde_json::to_string(&v).unwrap()
    }

    #[test]
    fn one_over_each_list_limit_is_named() {
        let cases = [
            (
                "principals",
                r#"{"id":"spiffe://demo.flor/user/u{i}","cert":"c","key":"k"}"#,
                limits::MAX_PRINCIPALS,
                Limit::Principals,
            ),
            (
                "services",
                r#"{"id":"spiffe://demo.flor/service/s{i}","upstream":"127.0.0.1:1"}"#,
                limits::MAX_SERVICES,
                Limit::Services,
            ),
            (
                "acl",
                r#"{"caller":"spiffe://demo.flor/user/u{i}","services":[]}"#,
                limits::MAX_ACL_ROWS,
                Limit::AclRows,
            ),
            (
                "routes",
                r#"{"target":"spiffe://demo.flor/service/s{i}","addr":"127.0.0.1:1"}"#,
                limits::MAX_ROUTES,
                Limit::Routes,
            ),
            (
                "socks",
                r#"{"principal":"spiffe://demo.flor/user/u{i}","port":1080}"#,
                limits::MAX_SOCKS_LISTENERS,
                Limit::SocksListeners,
            ),
        ];
        for (field, item, max, limit) in cases {
            let at = over_by_one(field, item, max);
            assert!(
                parse_payload::<VertexConfig>(at.as_bytes()).is_ok(),
                "{field} at its limit must parse"
            );
            let over = over_by_one(field, item, max + 1);
            assert_eq!(
                parse_payload::<VertexConfig>(over.as_bytes()),
                Err(ArtifactError::OverLimit(limit)),
                "{field}"
            );
        }
        // The grant list of one row.
        let idx: std::vec::Vec<u8> = (0..=limits::MAX_SERVICES as u8).collect();
        let over = over_by_one(
            "acl",
            &format!(r#"{{"caller":"spiffe://demo.flor/user/u{{i}}","services":{idx:?}}}"#),
            1,
        );
        assert_eq!(
            parse_payload::<VertexConfig>(over.as_bytes()),
            Err(ArtifactError::OverLimit(Limit::Services))
        );
    }

    #[test]
    fn one_over_each_text_limit_is_named() {
        let mut v = serde_json::to_value(sample_vertex()).unwrap();
        v["ca"] = serde_json::Value::String("c".repeat(limits::MAX_PATH_LEN));
        assert!(parse_payload::<VertexConfig>(v.to_string().as_bytes()).is_ok());
        v["ca"] = serde_json::Value::String("c".repeat(limits::MAX_PATH_LEN + 1));
        assert_eq!(
            parse_payload::<VertexConfig>(v.to_string().as_bytes()),
            Err(ArtifactError::OverLimit(Limit::PathLen))
        );

        let mut v = serde_json::to_value(sample_vertex()).unwrap();
        v["rete"] = serde_json::Value::String("t".repeat(limits::MAX_TRUST_DOMAIN_LEN + 1));
        assert_eq!(
            parse_payload::<VertexConfig>(v.to_string().as_bytes()),
            Err(ArtifactError::OverLimit(Limit::TrustDomainLen))
        );

        let mut v = serde_json::to_value(sample_vertex()).unwrap();
        v["node"] = serde_json::Value::String("n".repeat(limits::MAX_NAME_LEN + 1));
        assert_eq!(
            parse_payload::<VertexConfig>(v.to_string().as_bytes()),
            Err(ArtifactError::OverLimit(Limit::NameLen))
        );

        let mut v = serde_json::to_value(sample_vertex()).unwrap();
        v["acl"][0]["caller"] = serde_json::Value::String(format!(
            "spiffe://demo.flor/user/{}",
            "a".repeat(limits::MAX_SPIFFE_ID_LEN)
        ));
        assert_eq!(
            parse_payload::<VertexConfig>(v.to_string().as_bytes()),
            Err(ArtifactError::OverLimit(Limit::SpiffeIdLen))
        );

        let mut v = serde_json::to_value(sample_vertex()).unwrap();
        v["listen"] = serde_json::Value::String("1".repeat(limits::MAX_ADDR_LEN + 1));
        assert_eq!(
            parse_payload::<VertexConfig>(v.to_string().as_bytes()),
            Err(ArtifactError::OverLimit(Limit::AddrLen))
        );

        let big = vec![b' '; limits::MAX_ARTIFACT_BYTES + 1];
        assert_eq!(
            parse_payload::<VertexConfig>(&big),
            Err(ArtifactError::OverLimit(Limit::ArtifactBytes))
        );
    }

    #[test]
    fn malformed_input_is_a_typed_error() {
        for bad in [&b""[..], b"{", b"null", b"{\"rete\":1}", b"\xff\xfe", b"[]"] {
            assert_eq!(
                parse_payload::<VertexConfig>(bad),
                Err(ArtifactError::Malformed)
            );
        }
        let mut v = serde_json::to_value(sample_vertex()).unwrap();
        v["listen"] = serde_json::Value::String("example.com:80".into());
        assert_eq!(
            parse_payload::<VertexConfig>(v.to_string().as_bytes()),
            Err(ArtifactError::Malformed)
        );
    }

    #[test]
    fn validate_catches_what_types_cannot() {
        let mut v = sample_vertex();
        v.acl.0.swap(0, 1);
        assert_eq!(v.validate(), Err(ArtifactError::AclNotSorted));

        let mut v = sample_vertex();
        v.acl.0[0].services.push(7).unwrap();
        assert_eq!(v.validate(), Err(ArtifactError::AclIndexOutOfRange));

        let mut v = sample_vertex();
        v.principals.0[0].key = ScopePath::new("../../etc/shadow").unwrap();
        assert_eq!(v.validate(), Err(ArtifactError::PathEscapesScope));
        v.principals.0[0].key = ScopePath::new("/etc/shadow").unwrap();
        assert_eq!(v.validate(), Err(ArtifactError::PathEscapesScope));

        let mut v = sample_vertex();
        v.services.0[0].id = SpiffeId::parse("spiffe://other/service/wiki").unwrap();
        assert_eq!(v.validate(), Err(ArtifactError::ForeignIdentity));

        let mut v = sample_vertex();
        v.services.0[0].id = SpiffeId::parse("spiffe://demo.flor/user/wiki").unwrap();
        assert_eq!(v.validate(), Err(ArtifactError::NotAService));

        let mut v = sample_vertex();
        v.socks
            .push(SocksListener {
                principal: SpiffeId::parse("spiffe://demo.flor/user/mallory").unwrap(),
                port: 1080,
            })
            .unwrap();
        assert_eq!(v.validate(), Err(ArtifactError::UnknownSocksPrincipal));

        let mut v = sample_vertex();
        let dup = v.services[0].clone();
        v.services.push(dup).unwrap();
        assert_eq!(v.validate(), Err(ArtifactError::Duplicate));
    }
}
