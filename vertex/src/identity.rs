//! Identity and naming, as ADR-0007 decides.
//!
//! Three layers: the user-facing `.rete` hostname, the SPIFFE ID (authoritative:
//! it is what certificates, ACLs and artifacts carry), and the wire routing hint
//! (SNI). [`render`] and [`resolve`] convert between the first two; [`sni_for`]
//! derives the third; [`SniRegistry`] turns an incoming SNI back into an identity
//! by lookup, never by parsing.
//!
//! ```text
//! spiffe://demo.flor/service/wiki            <-> wiki.demo.flor.rete
//! spiffe://demo.flor/service/beta/tcp-echo   <-> tcp-echo.beta.demo.flor.rete
//! ```

use core::fmt;
use core::fmt::Write as _;

use heapless::String;

use crate::limits::{MAX_HOSTNAME_LEN, MAX_NAME_LEN, MAX_SPIFFE_ID_LEN, MAX_TRUST_DOMAIN_LEN};

/// The suffix every user-facing Florete hostname ends with.
pub const RETE_SUFFIX: &str = ".rete";

/// Why a trust domain, name, SPIFFE ID or hostname was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdentityError {
    /// The trust domain is empty.
    EmptyTrustDomain,
    /// The trust domain is longer than `MAX_TRUST_DOMAIN_LEN`.
    TrustDomainTooLong,
    /// The trust domain has a character outside `a-z 0-9 . - _`, or an empty label.
    BadTrustDomain,
    /// A name is empty.
    EmptyName,
    /// A name is longer than one DNS label (63 bytes).
    NameTooLong,
    /// A name has a character outside `a-z 0-9 -`, or starts or ends with `-`.
    BadName,
    /// The text does not start with `spiffe://`.
    NotSpiffe,
    /// The path does not name a known kind.
    UnknownKind,
    /// The path has the wrong number of segments for its kind.
    BadPath,
    /// Only services and vertices may be node-scoped.
    NodeScopeNotAllowed,
    /// The SPIFFE ID is longer than `MAX_SPIFFE_ID_LEN`.
    SpiffeIdTooLong,
    /// Only services and vertices can be dialed.
    NotDialable,
    /// The hostname does not end in `.rete`.
    NotRete,
    /// The hostname belongs to another rete (foreign trust domain); C0 dials only its own.
    ForeignTrustDomain,
    /// The hostname has no label in front of the trust domain.
    MissingName,
    /// The hostname has more than two labels in front of the trust domain.
    TooManyLabels,
    /// The hostname is longer than `MAX_HOSTNAME_LEN`.
    HostnameTooLong,
}

impl fmt::Display for IdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IdentityError::EmptyTrustDomain => "trust domain is empty",
            IdentityError::TrustDomainTooLong => "trust domain is longer than 96 bytes",
            IdentityError::BadTrustDomain => {
                "trust domain may hold only a-z, 0-9, '.', '-', '_' in non-empty labels"
            }
            IdentityError::EmptyName => "name is empty",
            IdentityError::NameTooLong => "name is longer than 63 bytes (one DNS label)",
            IdentityError::BadName => {
                "name may hold only a-z, 0-9 and '-', and may not start or end with '-'"
            }
            IdentityError::NotSpiffe => "not a SPIFFE ID: must start with spiffe://",
            IdentityError::UnknownKind => {
                "unknown kind: expected user, service, node, vertex, management-plane or control-plane"
            }
            IdentityError::BadPath => {
                "SPIFFE path must be /<kind>/<name> or /<kind>/<node>/<name>"
            }
            IdentityError::NodeScopeNotAllowed => "only services and vertices may be node-scoped",
            IdentityError::SpiffeIdTooLong => "SPIFFE ID is longer than 256 bytes",
            IdentityError::NotDialable => "only services and vertices can be dialed",
            IdentityError::NotRete => "hostname does not end in .rete",
            IdentityError::ForeignTrustDomain => {
                "hostname belongs to another rete's trust domain (not supported in C0)"
            }
            IdentityError::MissingName => "hostname has no service name before the trust domain",
            IdentityError::TooManyLabels => {
                "hostname has more than <name>.<node> before the trust domain"
            }
            IdentityError::HostnameTooLong => "hostname is longer than 256 bytes",
        })
    }
}

impl std::error::Error for IdentityError {}

/// A SPIFFE trust domain, the rete's name. Dotted names are allowed (`demo.flor`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String<MAX_TRUST_DOMAIN_LEN>);

impl TrustDomain {
    /// Validates `s` by the SPIFFE rules: lowercase letters, digits, `.`, `-`, `_`, no empty label.
    pub fn new(s: &str) -> Result<Self, IdentityError> {
        if s.is_empty() {
            return Err(IdentityError::EmptyTrustDomain);
        }
        if s.len() > MAX_TRUST_DOMAIN_LEN {
            return Err(IdentityError::TrustDomainTooLong);
        }
        let chars_ok = s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        });
        if !chars_ok || s.split('.').any(str::is_empty) {
            return Err(IdentityError::BadTrustDomain);
        }
        let mut out = String::new();
        out.push_str(s)
            .map_err(|_| IdentityError::TrustDomainTooLong)?;
        Ok(TrustDomain(out))
    }

    /// The trust domain as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A principal, node or vertex name: one DNS label, lowercase.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(String<MAX_NAME_LEN>);

impl Name {
    /// Validates `s` as a lowercase DNS label (`a-z 0-9 -`, no leading or trailing `-`).
    pub fn new(s: &str) -> Result<Self, IdentityError> {
        if s.is_empty() {
            return Err(IdentityError::EmptyName);
        }
        if s.len() > MAX_NAME_LEN {
            return Err(IdentityError::NameTooLong);
        }
        let chars_ok = s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !chars_ok || s.starts_with('-') || s.ends_with('-') {
            return Err(IdentityError::BadName);
        }
        let mut out = String::new();
        out.push_str(s).map_err(|_| IdentityError::NameTooLong)?;
        Ok(Name(out))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a principal is. The kind is the first segment of the SPIFFE path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Kind {
    /// A person.
    User,
    /// A published workload.
    Service,
    /// A node's rete-member identity, used by its agent.
    Node,
    /// A vertex (dialed for mesh transit from C1 on).
    Vertex,
    /// The sign-only key that signs management-plane artifacts.
    ManagementPlane,
    /// Reserved for the B1+ control plane; nothing issues it in C0.
    ControlPlane,
}

impl Kind {
    /// Every kind, in path order.
    pub const ALL: [Kind; 6] = [
        Kind::User,
        Kind::Service,
        Kind::Node,
        Kind::Vertex,
        Kind::ManagementPlane,
        Kind::ControlPlane,
    ];

    /// The path segment for this kind.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::User => "user",
            Kind::Service => "service",
            Kind::Node => "node",
            Kind::Vertex => "vertex",
            Kind::ManagementPlane => "management-plane",
            Kind::ControlPlane => "control-plane",
        }
    }

    /// Parses a path segment.
    pub fn parse(s: &str) -> Result<Kind, IdentityError> {
        Kind::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == s)
            .ok_or(IdentityError::UnknownKind)
    }

    /// Whether an identity of this kind may be a connect target.
    pub const fn is_dialable(self) -> bool {
        matches!(self, Kind::Service | Kind::Vertex)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A SPIFFE ID: `spiffe://<td>/<kind>/<name>` or, node-scoped, `spiffe://<td>/<kind>/<node>/<name>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    td: TrustDomain,
    kind: Kind,
    node: Option<Name>,
    name: Name,
}

impl SpiffeId {
    /// A rete-scoped identity.
    pub fn new(td: TrustDomain, kind: Kind, name: Name) -> Self {
        SpiffeId {
            td,
            kind,
            node: None,
            name,
        }
    }

    /// A node-scoped identity; only services and vertices may be node-scoped.
    pub fn node_scoped(
        td: TrustDomain,
        kind: Kind,
        node: Name,
        name: Name,
    ) -> Result<Self, IdentityError> {
        if !kind.is_dialable() {
            return Err(IdentityError::NodeScopeNotAllowed);
        }
        Ok(SpiffeId {
            td,
            kind,
            node: Some(node),
            name,
        })
    }

    /// Parses `spiffe://<td>/<kind>/[<node>/]<name>`.
    pub fn parse(s: &str) -> Result<Self, IdentityError> {
        if s.len() > MAX_SPIFFE_ID_LEN {
            return Err(IdentityError::SpiffeIdTooLong);
        }
        let rest = s
            .strip_prefix("spiffe://")
            .ok_or(IdentityError::NotSpiffe)?;
        let (td, path) = rest.split_once('/').ok_or(IdentityError::BadPath)?;
        let td = TrustDomain::new(td)?;
        let mut segs = path.split('/');
        let kind = Kind::parse(segs.next().ok_or(IdentityError::BadPath)?)?;
        let a = segs.next().ok_or(IdentityError::BadPath)?;
        let b = segs.next();
        if segs.next().is_some() {
            return Err(IdentityError::BadPath);
        }
        match b {
            None => Ok(SpiffeId::new(td, kind, Name::new(a)?)),
            Some(b) => SpiffeId::node_scoped(td, kind, Name::new(a)?, Name::new(b)?),
        }
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.td
    }

    /// The kind.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The node of a node-scoped identity.
    pub fn node(&self) -> Option<&Name> {
        self.node.as_ref()
    }

    /// The principal's own name.
    pub fn name(&self) -> &Name {
        &self.name
    }

    /// The URI as a fixed-capacity string (always fits: every part is bounded).
    pub fn to_uri(&self) -> String<MAX_SPIFFE_ID_LEN> {
        let mut out = String::new();
        // Cannot fail: 9 + 96 + 18 + 63 + 1 + 63 < MAX_SPIFFE_ID_LEN.
        let _ = write!(out, "{self}");
        out
    }

    /// The path part after the trust domain, without the leading slash
    /// (`service/beta/tcp-echo`); used for scope-relative file names.
    pub fn path(&self) -> String<MAX_SPIFFE_ID_LEN> {
        let mut out = String::new();
        let _ = out.push_str(self.kind.as_str());
        if let Some(node) = &self.node {
            let _ = out.push('/');
            let _ = out.push_str(node.as_str());
        }
        let _ = out.push('/');
        let _ = out.push_str(self.name.as_str());
        out
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("spiffe://")?;
        f.write_str(self.td.as_str())?;
        f.write_str("/")?;
        f.write_str(&self.path())
    }
}

impl core::str::FromStr for SpiffeId {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SpiffeId::parse(s)
    }
}

/// A SPIFFE ID that may be a connect target: a service or a vertex.
///
/// The kind is checked where the value is born, so [`render`] and
/// [`sni_for`] cannot fail and an illegal target cannot be expressed.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dialable(SpiffeId);

impl Dialable {
    /// Admits `id` if it is a service or a vertex.
    pub fn new(id: SpiffeId) -> Result<Self, IdentityError> {
        if id.kind.is_dialable() {
            Ok(Dialable(id))
        } else {
            Err(IdentityError::NotDialable)
        }
    }

    /// A service target: what external ingress (SOCKS5) builds.
    pub fn service(td: TrustDomain, node: Option<Name>, name: Name) -> Self {
        Dialable(SpiffeId {
            td,
            kind: Kind::Service,
            node,
            name,
        })
    }

    /// The canonical identity.
    pub fn id(&self) -> &SpiffeId {
        &self.0
    }

    /// Consumes the target, giving its identity.
    pub fn into_id(self) -> SpiffeId {
        self.0
    }
}

impl fmt::Display for Dialable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// The user-facing hostname of a target: `<name>[.<node>].<trust-domain>.rete`.
pub fn render(d: &Dialable) -> String<MAX_HOSTNAME_LEN> {
    let id = &d.0;
    let mut out = String::new();
    // Cannot fail: 63 + 1 + 63 + 1 + 96 + 5 < MAX_HOSTNAME_LEN.
    let _ = out.push_str(id.name.as_str());
    if let Some(node) = &id.node {
        let _ = out.push('.');
        let _ = out.push_str(node.as_str());
    }
    let _ = out.push('.');
    let _ = out.push_str(id.td.as_str());
    let _ = out.push_str(RETE_SUFFIX);
    out
}

/// The SNI the transport sends when dialing `d`: a routing hint, never parsed.
///
/// For services it equals [`render`] (C0). A vertex gets an extra `_v` label in
/// front of the trust domain: a service and a vertex of the same name on the
/// same node would otherwise share one SNI and the server could not pick the
/// right certificate (ADR-0007, problem 1). Names never contain `_`, so no
/// service SNI can equal a vertex SNI.
pub fn sni_for(d: &Dialable) -> String<MAX_HOSTNAME_LEN> {
    let id = &d.0;
    if id.kind == Kind::Service {
        return render(d);
    }
    let mut out = String::new();
    let _ = out.push_str(id.name.as_str());
    if let Some(node) = &id.node {
        let _ = out.push('.');
        let _ = out.push_str(node.as_str());
    }
    let _ = out.push_str("._v.");
    let _ = out.push_str(id.td.as_str());
    let _ = out.push_str(RETE_SUFFIX);
    out
}

/// Resolves a user-facing hostname to a service target, in the context of the
/// caller's trust domain.
///
/// Strips `.rete`, then `.<ctx_td>`; one residual label is a rete-scoped service,
/// two are `<name>.<node>`. ASCII case and one trailing dot are ignored, as DNS does.
pub fn resolve(host: &str, ctx_td: &TrustDomain) -> Result<Dialable, IdentityError> {
    if host.len() > MAX_HOSTNAME_LEN {
        return Err(IdentityError::HostnameTooLong);
    }
    let mut buf: String<MAX_HOSTNAME_LEN> = String::new();
    for c in host.strip_suffix('.').unwrap_or(host).chars() {
        buf.push(c.to_ascii_lowercase())
            .map_err(|_| IdentityError::HostnameTooLong)?;
    }
    let stem = buf
        .strip_suffix(RETE_SUFFIX)
        .ok_or(IdentityError::NotRete)?;
    let td = ctx_td.as_str();
    let residual = match stem.strip_suffix(td) {
        Some(r) if r.ends_with('.') => &r[..r.len() - 1],
        Some("") | None if stem == td => return Err(IdentityError::MissingName),
        _ => return Err(IdentityError::ForeignTrustDomain),
    };
    if residual.is_empty() {
        return Err(IdentityError::MissingName);
    }
    let mut labels = residual.split('.');
    let first = labels.next().ok_or(IdentityError::MissingName)?;
    let second = labels.next();
    if labels.next().is_some() {
        return Err(IdentityError::TooManyLabels);
    }
    let name = Name::new(first)?;
    let node = second.map(Name::new).transpose()?;
    Ok(Dialable::service(ctx_td.clone(), node, name))
}

/// Published identities keyed by [`sni_for`]: how a server turns the SNI of an
/// incoming handshake into the identity (and its certificate) to present.
///
/// Lookup is exact and keeps the kind, so a service and a vertex with the same
/// name on the same node are two entries. The registry is built once from a
/// vertex artifact; it is small (one entry per held principal), so a sorted
/// vector with binary search beats a hash map in size and speed.
#[derive(Debug)]
pub struct SniRegistry<V> {
    entries: std::vec::Vec<(String<MAX_HOSTNAME_LEN>, Dialable, V)>,
}

impl<V> Default for SniRegistry<V> {
    fn default() -> Self {
        SniRegistry {
            entries: std::vec::Vec::new(),
        }
    }
}

impl<V> SniRegistry<V> {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Publishes `d` with its value (typically its certified key); replaces an
    /// earlier entry for the same identity and returns the old value.
    pub fn publish(&mut self, d: Dialable, value: V) -> Option<V> {
        let sni = sni_for(&d);
        match self
            .entries
            .binary_search_by(|(k, _, _)| k.as_str().cmp(sni.as_str()))
        {
            Ok(i) => Some(core::mem::replace(&mut self.entries[i], (sni, d, value)).2),
            Err(i) => {
                self.entries.insert(i, (sni, d, value));
                None
            }
        }
    }

    /// Looks an incoming SNI up; `None` when nothing is published under it.
    pub fn lookup(&self, sni: &str) -> Option<(&Dialable, &V)> {
        self.entries
            .binary_search_by(|(k, _, _)| k.as_str().cmp(sni))
            .ok()
            .map(|i| (&self.entries[i].1, &self.entries[i].2))
    }

    /// Number of published identities.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is published.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Published identities, in SNI order.
    pub fn iter(&self) -> impl Iterator<Item = (&Dialable, &V)> {
        self.entries.iter().map(|(_, d, v)| (d, v))
    }
}

/// Serde: identities travel as their text form and are validated when parsed.
mod serde_impls {
    use super::*;
    use crate::limits::{record_exceeded, Limit};
    use serde::de::Visitor;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    macro_rules! text_serde {
        ($ty:ty, $max:expr, $limit:expr, $parse:expr, $what:literal) => {
            impl Serialize for $ty {
                fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                    s.collect_str(self)
                }
            }

            impl<'de> Deserialize<'de> for $ty {
                fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                    struct V;
                    impl<'de> Visitor<'de> for V {
                        type Value = $ty;
                        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                            f.write_str($what)
                        }
                        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<$ty, E> {
                            if s.len() > $max {
                                record_exceeded($limit);
                                return Err(E::custom($limit.name()));
                            }
                            #[allow(clippy::redundant_closure_call)]
                            ($parse)(s).map_err(|e: IdentityError| E::custom(e))
                        }
                    }
                    d.deserialize_str(V)
                }
            }
        };
    }

    text_serde!(
        TrustDomain,
        MAX_TRUST_DOMAIN_LEN,
        Limit::TrustDomainLen,
        TrustDomain::new,
        "a trust domain"
    );
    text_serde!(
        Name,
        MAX_NAME_LEN,
        Limit::NameLen,
        Name::new,
        "a DNS-label name"
    );
    text_serde!(
        SpiffeId,
        MAX_SPIFFE_ID_LEN,
        Limit::SpiffeIdLen,
        SpiffeId::parse,
        "a SPIFFE ID"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn td(s: &str) -> TrustDomain {
        TrustDomain::new(s).unwrap()
    }

    fn id(s: &str) -> SpiffeId {
        SpiffeId::parse(s).unwrap()
    }

    // Vectors from ADR-0007, "Dotted trust domains are allowed".
    #[test]
    fn adr_node_scoped_vector() {
        let d = resolve("tcp-echo.beta.demo.flor.rete", &td("demo.flor")).unwrap();
        assert_eq!(d.id(), &id("spiffe://demo.flor/service/beta/tcp-echo"));
        assert_eq!(d.id().node().unwrap().as_str(), "beta");
        assert_eq!(render(&d).as_str(), "tcp-echo.beta.demo.flor.rete");
    }

    #[test]
    fn adr_rete_scoped_vector() {
        let d = resolve("wiki.demo.flor.rete", &td("demo.flor")).unwrap();
        assert_eq!(d.id(), &id("spiffe://demo.flor/service/wiki"));
        assert!(d.id().node().is_none());
    }

    #[test]
    fn foreign_trust_domain_is_refused() {
        let ctx = td("demo.flor");
        assert_eq!(
            resolve("wiki.other.rete", &ctx),
            Err(IdentityError::ForeignTrustDomain)
        );
        assert_eq!(
            resolve("wiki.demo.flor2.rete", &ctx),
            Err(IdentityError::ForeignTrustDomain)
        );
        // A suffix match that is not on a label boundary is foreign too.
        assert_eq!(
            resolve("wiki.xdemo.flor.rete", &ctx),
            Err(IdentityError::ForeignTrustDomain)
        );
        assert_eq!(
            resolve("wikidemo.flor.rete", &ctx),
            Err(IdentityError::ForeignTrustDomain)
        );
    }

    #[test]
    fn resolve_errors_name_the_problem() {
        let ctx = td("demo.flor");
        assert_eq!(resolve("wiki.demo.flor", &ctx), Err(IdentityError::NotRete));
        assert_eq!(resolve("example.com", &ctx), Err(IdentityError::NotRete));
        assert_eq!(
            resolve("demo.flor.rete", &ctx),
            Err(IdentityError::MissingName)
        );
        assert_eq!(
            resolve(".demo.flor.rete", &ctx),
            Err(IdentityError::MissingName)
        );
        assert_eq!(
            resolve("a.b.c.demo.flor.rete", &ctx),
            Err(IdentityError::TooManyLabels)
        );
        assert_eq!(
            resolve("wi_ki.demo.flor.rete", &ctx),
            Err(IdentityError::BadName)
        );
        assert_eq!(
            resolve("a..demo.flor.rete", &ctx),
            Err(IdentityError::EmptyName)
        );
        let long = "a".repeat(300);
        assert_eq!(resolve(&long, &ctx), Err(IdentityError::HostnameTooLong));
    }

    #[test]
    fn resolve_ignores_case_and_trailing_dot() {
        let d = resolve("Wiki.Demo.Flor.rete.", &td("demo.flor")).unwrap();
        assert_eq!(d.id(), &id("spiffe://demo.flor/service/wiki"));
    }

    #[test]
    fn render_resolve_round_trip() {
        let ctx = td("demo.flor");
        for host in [
            "wiki.demo.flor.rete",
            "tcp-echo.beta.demo.flor.rete",
            "a.demo.flor.rete",
            "config.mgmt01.demo.flor.rete",
        ] {
            assert_eq!(render(&resolve(host, &ctx).unwrap()).as_str(), host);
        }
        let single = td("home");
        assert_eq!(
            render(&resolve("nas.home.rete", &single).unwrap()).as_str(),
            "nas.home.rete"
        );
    }

    #[test]
    fn only_services_and_vertices_are_dialable() {
        for s in [
            "spiffe://demo.flor/user/alice",
            "spiffe://demo.flor/node/alpha",
            "spiffe://demo.flor/management-plane/primary",
            "spiffe://demo.flor/control-plane/main",
        ] {
            assert_eq!(Dialable::new(id(s)), Err(IdentityError::NotDialable), "{s}");
        }
        assert!(Dialable::new(id("spiffe://demo.flor/service/wiki")).is_ok());
        assert!(Dialable::new(id("spiffe://demo.flor/vertex/beta/flor")).is_ok());
    }

    #[test]
    fn spiffe_id_parse_and_display() {
        for s in [
            "spiffe://demo.flor/user/alice",
            "spiffe://demo.flor/service/beta/tcp-echo",
            "spiffe://demo.flor/management-plane/primary",
            "spiffe://a_b.c-d/node/n1",
        ] {
            assert_eq!(id(s).to_string(), s);
            assert_eq!(id(s).to_uri().as_str(), s);
        }
        let bad = [
            ("http://demo.flor/user/alice", IdentityError::NotSpiffe),
            ("spiffe://demo.flor", IdentityError::BadPath),
            ("spiffe://demo.flor/user", IdentityError::BadPath),
            ("spiffe://demo.flor/robot/x", IdentityError::UnknownKind),
            (
                "spiffe://demo.flor/user/a/b",
                IdentityError::NodeScopeNotAllowed,
            ),
            ("spiffe://demo.flor/service/a/b/c", IdentityError::BadPath),
            (
                "spiffe://Demo.flor/user/alice",
                IdentityError::BadTrustDomain,
            ),
            (
                "spiffe://demo..flor/user/alice",
                IdentityError::BadTrustDomain,
            ),
            ("spiffe:///user/alice", IdentityError::EmptyTrustDomain),
            ("spiffe://demo.flor/user/-alice", IdentityError::BadName),
            ("spiffe://demo.flor/user/Alice", IdentityError::BadName),
            ("spiffe://demo.flor/user/", IdentityError::EmptyName),
        ];
        for (s, e) in bad {
            assert_eq!(SpiffeId::parse(s), Err(e), "{s}");
        }
    }

    #[test]
    fn names_are_dns_labels() {
        assert!(Name::new(&"a".repeat(63)).is_ok());
        assert_eq!(Name::new(&"a".repeat(64)), Err(IdentityError::NameTooLong));
        assert_eq!(Name::new("a-"), Err(IdentityError::BadName));
        assert_eq!(Name::new("a.b"), Err(IdentityError::BadName));
        assert!(Name::new("0-a").is_ok());
    }

    #[test]
    fn longest_identity_fits() {
        let t = TrustDomain::new(&"t".repeat(96)).unwrap();
        let n = Name::new(&"n".repeat(63)).unwrap();
        let s = SpiffeId::node_scoped(t.clone(), Kind::Vertex, n.clone(), n.clone()).unwrap();
        assert_eq!(SpiffeId::parse(&s.to_string()).unwrap(), s);
        let d = Dialable::new(s).unwrap();
        assert!(sni_for(&d).len() < MAX_HOSTNAME_LEN);
        let m = SpiffeId::new(t, Kind::ManagementPlane, n);
        assert_eq!(m.to_uri().len(), m.to_string().len());
    }

    #[test]
    fn registry_is_kind_preserving() {
        let t = td("demo.flor");
        let beta = Name::new("beta").unwrap();
        let flor = Name::new("flor").unwrap();
        let svc = Dialable::new(
            SpiffeId::node_scoped(t.clone(), Kind::Service, beta.clone(), flor.clone()).unwrap(),
        )
        .unwrap();
        let vtx =
            Dialable::new(SpiffeId::node_scoped(t.clone(), Kind::Vertex, beta, flor).unwrap())
                .unwrap();
        // Same user-facing name, different wire hint.
        assert_eq!(render(&svc), render(&vtx));
        assert_ne!(sni_for(&svc), sni_for(&vtx));

        let mut reg = SniRegistry::new();
        assert!(reg.publish(svc.clone(), "svc-cert").is_none());
        assert!(reg.publish(vtx.clone(), "vtx-cert").is_none());
        assert_eq!(reg.len(), 2);
        let (d, v) = reg.lookup(&sni_for(&svc)).unwrap();
        assert_eq!((d.id().kind(), *v), (Kind::Service, "svc-cert"));
        let (d, v) = reg.lookup(&sni_for(&vtx)).unwrap();
        assert_eq!((d.id().kind(), *v), (Kind::Vertex, "vtx-cert"));
        assert!(reg.lookup("flor.beta.demo.flor").is_none());
        assert!(reg.lookup("other.demo.flor.rete").is_none());
        assert_eq!(reg.publish(svc, "svc-cert-2"), Some("svc-cert"));
        assert_eq!(reg.len(), 2);
    }

    #[test]
    fn service_sni_equals_render() {
        let d = resolve("wiki.demo.flor.rete", &td("demo.flor")).unwrap();
        assert_eq!(sni_for(&d), render(&d));
    }
}
