//! The signed envelope around every artifact.
//!
//! An envelope file is one JSON object whose signed part is kept byte for byte:
//!
//! ```text
//! {"header":{..},"payload":{..},"signature":"<128 hex digits>"}\n
//! |<------------- signed bytes (raw, as in the file) ------->|
//! ```
//!
//! The Ed25519 signature covers [`DOMAIN`] followed by every byte of the file
//! before `,"signature":"`. Nothing is re-serialised to verify: the device
//! checks the bytes it read, then parses them. The trailer has a fixed shape,
//! so finding the signed part needs no JSON parsing.
//!
//! The header names the artifact kind, schema, plane (`mgmt`; `ctrl` is
//! reserved), a monotonic version, the rete and node it is for, the signer,
//! and the snapshot of authorised management signers that the device adopts
//! once it accepts the envelope. [`open`] refuses anything else with a reason.

use core::fmt;

use ed25519_compact::{PublicKey, SecretKey, Signature};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use crate::artifact::{self, ArtifactError, MgmtSigners, ShortText, SCHEMA_MAJOR};
use crate::identity::{Kind, Name, SpiffeId, TrustDomain};
use crate::limits::{self, Limit};

/// Domain separation: a signature over an envelope can never be valid for any
/// other message this rete's keys sign (and vice versa).
pub const DOMAIN: &[u8] = b"florete/mgmt-envelope/v1\0";

const TRAILER_HEAD: &[u8] = b",\"signature\":\"";
const TRAILER_TAIL: &[u8] = b"\"}";
const SIG_HEX_LEN: usize = 128;

/// Which artifact an envelope carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArtifactKind {
    /// `mgmt/agent.json`.
    Agent,
    /// `mgmt/vertices/<name>.json`.
    Vertex,
}

impl ArtifactKind {
    /// The kind as written in the header.
    pub const fn as_str(self) -> &'static str {
        match self {
            ArtifactKind::Agent => "agent",
            ArtifactKind::Vertex => "vertex",
        }
    }
}

/// Which authority signed the artifact.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Plane {
    /// Operator-signed management state: the only plane C0 accepts.
    Mgmt,
    /// Reserved for the B1+ control plane; refused today.
    Ctrl,
}

/// The signed header of an envelope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// The artifact kind.
    pub kind: ArtifactKind,
    /// Schema version, `major.minor`.
    pub schema: ShortText,
    /// The plane that signed it.
    pub plane: Plane,
    /// Monotonic version: the device accepts only a version newer than its current one.
    pub version: u32,
    /// The rete (trust domain) it is for.
    pub rete: TrustDomain,
    /// The node it is for.
    pub node: Name,
    /// The management-plane principal that signed it.
    pub signer: SpiffeId,
    /// The signers the device trusts from this version on.
    pub authorized_mgmt_signers: MgmtSigners,
}

/// Why an envelope was refused. Each refusal says which signer, version or limit.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The file or a field is over a device limit.
    OverLimit(Limit),
    /// The file does not end in the `,"signature":"<hex>"}` trailer.
    MissingSignature,
    /// The file is not a well-formed envelope.
    Malformed,
    /// The signer is not among the signers this device trusts.
    UnauthorizedSigner(Box<SpiffeId>),
    /// The signature does not verify with the signer's trusted key.
    BadSignature(Box<SpiffeId>),
    /// The plane is not `mgmt`.
    WrongPlane(Plane),
    /// The schema's major version is not one this build understands.
    UnknownSchemaMajor(ShortText),
    /// The artifact kind is not the one expected at this path.
    WrongKind {
        /// What the header says.
        got: ArtifactKind,
        /// What was expected.
        want: ArtifactKind,
    },
    /// The envelope is for another rete.
    WrongRete(Box<TrustDomain>),
    /// The envelope is for another node.
    WrongNode(Name),
    /// The version is not newer than the one the device runs (replay or rollback).
    NotNewer {
        /// The envelope's version.
        got: u32,
        /// The version the device runs.
        current: u32,
    },
    /// The payload does not parse or validate.
    BadPayload(ArtifactError),
}

impl fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvelopeError::OverLimit(l) => write!(f, "envelope is over the device limit {l}"),
            EnvelopeError::MissingSignature => f.write_str("envelope has no signature trailer"),
            EnvelopeError::Malformed => {
                f.write_str("envelope is not well-formed JSON of the expected shape")
            }
            EnvelopeError::UnauthorizedSigner(s) => {
                write!(f, "signer {s} is not an authorised management signer here")
            }
            EnvelopeError::BadSignature(s) => {
                write!(f, "signature does not verify with the key of {s}")
            }
            EnvelopeError::WrongPlane(_) => {
                f.write_str("plane \"ctrl\" is reserved; only \"mgmt\" is accepted")
            }
            EnvelopeError::UnknownSchemaMajor(s) => {
                write!(
                    f,
                    "schema {s} has an unknown major version (this build reads {SCHEMA_MAJOR}.x)"
                )
            }
            EnvelopeError::WrongKind { got, want } => {
                write!(
                    f,
                    "artifact kind is {} where {} was expected",
                    got.as_str(),
                    want.as_str()
                )
            }
            EnvelopeError::WrongRete(r) => write!(f, "artifact is for rete {r}, not this one"),
            EnvelopeError::WrongNode(n) => write!(f, "artifact is for node {n}, not this one"),
            EnvelopeError::NotNewer { got, current } => {
                write!(f, "version {got} is not newer than the running version {current} (replay or rollback)")
            }
            EnvelopeError::BadPayload(e) => write!(f, "payload refused: {e}"),
        }
    }
}

impl std::error::Error for EnvelopeError {}

/// What the device expects of an envelope before it accepts it.
#[derive(Clone, Copy, Debug)]
pub struct Expect<'a> {
    /// The artifact kind at this path.
    pub kind: ArtifactKind,
    /// This device's rete.
    pub rete: &'a TrustDomain,
    /// This device's node name.
    pub node: &'a Name,
    /// The signers this device trusts now (from its bundle or its last accepted envelope).
    pub trusted: &'a [artifact::MgmtSigner],
    /// The version running now; `None` accepts any version (first install).
    pub current_version: Option<u32>,
}

/// An envelope whose signature and header checks passed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opened<P> {
    /// The verified header.
    pub header: Header,
    /// The parsed payload.
    pub payload: P,
}

#[derive(Deserialize)]
struct HeadOnly {
    header: Header,
    #[allow(dead_code)]
    payload: IgnoredAny,
    #[allow(dead_code)]
    signature: IgnoredAny,
}

#[derive(Deserialize)]
struct PayloadOnly<P> {
    #[allow(dead_code)]
    header: IgnoredAny,
    payload: P,
    #[allow(dead_code)]
    signature: IgnoredAny,
}

/// Splits a file into (signed bytes, signature).
fn split(bytes: &[u8]) -> Result<(&[u8], Signature), EnvelopeError> {
    if bytes.len() > limits::MAX_ARTIFACT_BYTES {
        return Err(EnvelopeError::OverLimit(Limit::ArtifactBytes));
    }
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let trailer_len = TRAILER_HEAD.len() + SIG_HEX_LEN + TRAILER_TAIL.len();
    if body.len() < trailer_len {
        return Err(EnvelopeError::MissingSignature);
    }
    let (signed, trailer) = body.split_at(body.len() - trailer_len);
    let (head, rest) = trailer.split_at(TRAILER_HEAD.len());
    let (hex, tail) = rest.split_at(SIG_HEX_LEN);
    if head != TRAILER_HEAD || tail != TRAILER_TAIL {
        return Err(EnvelopeError::MissingSignature);
    }
    let hex = core::str::from_utf8(hex).map_err(|_| EnvelopeError::MissingSignature)?;
    let mut sig = [0u8; 64];
    crate::hex::decode(hex, &mut sig).map_err(|_| EnvelopeError::MissingSignature)?;
    Ok((signed, Signature::new(sig)))
}

fn parse_err(e: serde_json_core::de::Error) -> EnvelopeError {
    match artifact::map_parse_error(e) {
        ArtifactError::OverLimit(l) => EnvelopeError::OverLimit(l),
        _ => EnvelopeError::Malformed,
    }
}

/// Reads the header without checking the signature: for display only
/// (`--dry-run`, status), never to act on.
pub fn peek_header(bytes: &[u8]) -> Result<Header, EnvelopeError> {
    let _ = split(bytes)?;
    let _ = limits::take_exceeded_limit();
    serde_json_core::from_slice::<HeadOnly>(bytes)
        .map(|(h, _)| h.header)
        .map_err(parse_err)
}

/// Verifies `bytes` against `expect` and parses the payload.
///
/// Checks, in order: size, trailer, header shape, signer trusted, signature,
/// plane, schema major, kind, rete, node, version newer, payload shape.
pub fn open<'a, P: Deserialize<'a>>(
    bytes: &'a [u8],
    expect: &Expect<'_>,
) -> Result<Opened<P>, EnvelopeError> {
    let (signed, sig) = split(bytes)?;
    let header = peek_header(bytes)?;

    let signer = expect
        .trusted
        .iter()
        .find(|s| s.id == header.signer && s.id.kind() == Kind::ManagementPlane)
        .ok_or_else(|| EnvelopeError::UnauthorizedSigner(Box::new(header.signer.clone())))?;
    let pk = PublicKey::new(signer.key.0);
    let mut state = pk
        .verify_incremental(&sig)
        .map_err(|_| EnvelopeError::BadSignature(Box::new(header.signer.clone())))?;
    state.absorb(DOMAIN);
    state.absorb(signed);
    state
        .verify()
        .map_err(|_| EnvelopeError::BadSignature(Box::new(header.signer.clone())))?;

    if header.plane != Plane::Mgmt {
        return Err(EnvelopeError::WrongPlane(header.plane));
    }
    if schema_major(header.schema.as_str()) != Some(SCHEMA_MAJOR) {
        return Err(EnvelopeError::UnknownSchemaMajor(header.schema.clone()));
    }
    if header.kind != expect.kind {
        return Err(EnvelopeError::WrongKind {
            got: header.kind,
            want: expect.kind,
        });
    }
    if &header.rete != expect.rete {
        return Err(EnvelopeError::WrongRete(Box::new(header.rete.clone())));
    }
    if &header.node != expect.node {
        return Err(EnvelopeError::WrongNode(header.node.clone()));
    }
    if let Some(current) = expect.current_version {
        if header.version <= current {
            return Err(EnvelopeError::NotNewer {
                got: header.version,
                current,
            });
        }
    }
    let _ = limits::take_exceeded_limit();
    let payload = serde_json_core::from_slice::<PayloadOnly<P>>(bytes)
        .map(|(p, _)| p.payload)
        .map_err(|e| match artifact::map_parse_error(e) {
            ArtifactError::OverLimit(l) => EnvelopeError::OverLimit(l),
            other => EnvelopeError::BadPayload(other),
        })?;
    Ok(Opened { header, payload })
}

fn schema_major(s: &str) -> Option<u16> {
    let (major, minor) = s.split_once('.')?;
    minor.parse::<u16>().ok()?;
    major.parse().ok()
}

/// Seals an artifact: `{"header":<header_json>,"payload":<payload_json>,"signature":"<hex>"}\n`.
///
/// Signing is deterministic (RFC 8032, no noise), so the same inputs give the
/// same bytes on any machine. `header_json` and `payload_json` must each be one
/// JSON object; they are copied verbatim.
pub fn seal(header_json: &[u8], payload_json: &[u8], key: &SecretKey) -> std::vec::Vec<u8> {
    let mut out = std::vec::Vec::with_capacity(header_json.len() + payload_json.len() + 200);
    out.extend_from_slice(b"{\"header\":");
    out.extend_from_slice(header_json);
    out.extend_from_slice(b",\"payload\":");
    out.extend_from_slice(payload_json);
    let mut msg = std::vec::Vec::with_capacity(DOMAIN.len() + out.len());
    msg.extend_from_slice(DOMAIN);
    msg.extend_from_slice(&out);
    let sig = key.sign(&msg, None);
    let mut hex = [0u8; SIG_HEX_LEN];
    out.extend_from_slice(TRAILER_HEAD);
    out.extend_from_slice(crate::hex::encode(sig.as_ref(), &mut hex).as_bytes());
    out.extend_from_slice(TRAILER_TAIL);
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::tests::sample_vertex;
    use crate::artifact::{MgmtSigner, PublicKeyHex, VertexConfig};
    use ed25519_compact::{KeyPair, Seed};

    fn keypair(seed: u8) -> KeyPair {
        KeyPair::from_seed(Seed::new([seed; 32]))
    }

    fn signer(name: &str, kp: &KeyPair) -> MgmtSigner {
        MgmtSigner {
            id: SpiffeId::parse(&format!("spiffe://demo.flor/management-plane/{name}")).unwrap(),
            key: PublicKeyHex(*kp.pk),
        }
    }

    fn header(version: u32, signer_name: &str, trusted: &[MgmtSigner]) -> Header {
        let mut signers = MgmtSigners::default();
        for s in trusted {
            signers.push(s.clone()).unwrap();
        }
        Header {
            kind: ArtifactKind::Vertex,
            schema: ShortText::new("1.0").unwrap(),
            plane: Plane::Mgmt,
            version,
            rete: TrustDomain::new("demo.flor").unwrap(),
            node: Name::new("beta").unwrap(),
            signer: SpiffeId::parse(&format!(
                "spiffe://demo.flor/management-plane/{signer_name}"
            ))
            .unwrap(),
            authorized_mgmt_signers: signers,
        }
    }

    fn sealed(h: &Header, kp: &KeyPair) -> std::vec::Vec<u8> {
        seal(
            &serde_json::to_vec(h).unwrap(),
            &serde_json::to_vec(&sample_vertex()).unwrap(),
            &kp.sk,
        )
    }

    struct Ctx {
        rete: TrustDomain,
        node: Name,
        trusted: std::vec::Vec<MgmtSigner>,
    }

    impl Ctx {
        fn new(trusted: std::vec::Vec<MgmtSigner>) -> Self {
            Ctx {
                rete: TrustDomain::new("demo.flor").unwrap(),
                node: Name::new("beta").unwrap(),
                trusted,
            }
        }
        fn expect(&self, current: Option<u32>) -> Expect<'_> {
            Expect {
                kind: ArtifactKind::Vertex,
                rete: &self.rete,
                node: &self.node,
                trusted: &self.trusted,
                current_version: current,
            }
        }
    }

    #[test]
    fn sealed_envelope_opens() {
        let kp = keypair(1);
        let primary = signer("primary", &kp);
        let bytes = sealed(&header(3, "primary", std::slice::from_ref(&primary)), &kp);
        let ctx = Ctx::new(vec![primary]);
        let opened: Opened<VertexConfig> = open(&bytes, &ctx.expect(Some(2))).unwrap();
        assert_eq!(opened.header.version, 3);
        assert_eq!(opened.payload, sample_vertex());
        // Sealing is deterministic.
        assert_eq!(bytes, sealed(&header(3, "primary", &ctx.trusted), &kp));
        // The signature is a plain RFC 8032 signature over DOMAIN || signed bytes.
        let (signed, sig) = split(&bytes).unwrap();
        let msg = [DOMAIN, signed].concat();
        kp.pk.verify(&msg, &sig).unwrap();
    }

    #[test]
    fn every_single_byte_change_is_refused() {
        let kp = keypair(1);
        let primary = signer("primary", &kp);
        let bytes = sealed(&header(3, "primary", std::slice::from_ref(&primary)), &kp);
        let ctx = Ctx::new(vec![primary]);
        let expect = ctx.expect(Some(2));
        // Every byte, including the signature digits; the final newline is optional by design.
        for i in 0..bytes.len() - 1 {
            for flip in [0x01u8, 0x20, 0x80] {
                let mut t = bytes.clone();
                t[i] ^= flip;
                let r = open::<VertexConfig>(&t, &expect);
                assert!(r.is_err(), "byte {i} ^ {flip:#x} was accepted");
            }
        }
    }

    #[test]
    fn content_change_is_a_bad_signature() {
        let kp = keypair(1);
        let primary = signer("primary", &kp);
        let bytes = sealed(&header(3, "primary", std::slice::from_ref(&primary)), &kp);
        let text = std::string::String::from_utf8(bytes)
            .unwrap()
            .replace("127.0.0.1:8080", "127.0.0.1:8081");
        let ctx = Ctx::new(vec![primary.clone()]);
        assert_eq!(
            open::<VertexConfig>(text.as_bytes(), &ctx.expect(None)),
            Err(EnvelopeError::BadSignature(Box::new(primary.id)))
        );
    }

    #[test]
    fn valid_signature_by_unauthorised_signer_is_refused() {
        let good = keypair(1);
        let rogue = keypair(2);
        let primary = signer("primary", &good);
        let rogue_signer = signer("rogue", &rogue);
        // The rogue even lists itself in its own snapshot: that grants nothing.
        let bytes = sealed(
            &header(9, "rogue", std::slice::from_ref(&rogue_signer)),
            &rogue,
        );
        let ctx = Ctx::new(vec![primary.clone()]);
        assert_eq!(
            open::<VertexConfig>(&bytes, &ctx.expect(Some(1))),
            Err(EnvelopeError::UnauthorizedSigner(Box::new(
                rogue_signer.id.clone()
            )))
        );
        // A rogue key claiming to be "primary" fails the signature instead.
        let bytes = sealed(
            &header(9, "primary", std::slice::from_ref(&primary)),
            &rogue,
        );
        assert_eq!(
            open::<VertexConfig>(&bytes, &ctx.expect(Some(1))),
            Err(EnvelopeError::BadSignature(Box::new(primary.id)))
        );
    }

    #[test]
    fn older_or_equal_version_is_refused() {
        let kp = keypair(1);
        let primary = signer("primary", &kp);
        let ctx = Ctx::new(vec![primary.clone()]);
        let bytes = sealed(&header(5, "primary", &[primary]), &kp);
        assert_eq!(
            open::<VertexConfig>(&bytes, &ctx.expect(Some(5))),
            Err(EnvelopeError::NotNewer { got: 5, current: 5 })
        );
        assert_eq!(
            open::<VertexConfig>(&bytes, &ctx.expect(Some(6))),
            Err(EnvelopeError::NotNewer { got: 5, current: 6 })
        );
        assert!(open::<VertexConfig>(&bytes, &ctx.expect(Some(4))).is_ok());
        assert!(open::<VertexConfig>(&bytes, &ctx.expect(None)).is_ok());
    }

    #[test]
    fn header_mismatches_each_have_a_reason() {
        let kp = keypair(1);
        let primary = signer("primary", &kp);
        let ctx = Ctx::new(vec![primary.clone()]);
        let e = ctx.expect(None);

        let mut h = header(1, "primary", std::slice::from_ref(&primary));
        h.plane = Plane::Ctrl;
        assert_eq!(
            open::<VertexConfig>(&sealed(&h, &kp), &e),
            Err(EnvelopeError::WrongPlane(Plane::Ctrl))
        );

        let mut h = header(1, "primary", std::slice::from_ref(&primary));
        h.schema = ShortText::new("2.0").unwrap();
        assert_eq!(
            open::<VertexConfig>(&sealed(&h, &kp), &e),
            Err(EnvelopeError::UnknownSchemaMajor(h.schema.clone()))
        );

        let mut h = header(1, "primary", std::slice::from_ref(&primary));
        h.kind = ArtifactKind::Agent;
        assert_eq!(
            open::<VertexConfig>(&sealed(&h, &kp), &e),
            Err(EnvelopeError::WrongKind {
                got: ArtifactKind::Agent,
                want: ArtifactKind::Vertex
            })
        );

        let mut h = header(1, "primary", std::slice::from_ref(&primary));
        h.node = Name::new("alpha").unwrap();
        assert_eq!(
            open::<VertexConfig>(&sealed(&h, &kp), &e),
            Err(EnvelopeError::WrongNode(h.node.clone()))
        );

        // Another rete's signer with the same key is still not this rete's signer.
        let mut h = header(1, "primary", std::slice::from_ref(&primary));
        h.rete = TrustDomain::new("other").unwrap();
        h.signer = SpiffeId::parse("spiffe://other/management-plane/primary").unwrap();
        assert!(matches!(
            open::<VertexConfig>(&sealed(&h, &kp), &e),
            Err(EnvelopeError::UnauthorizedSigner(_))
        ));

        let mut h = header(1, "primary", std::slice::from_ref(&primary));
        h.rete = TrustDomain::new("other").unwrap();
        assert_eq!(
            open::<VertexConfig>(&sealed(&h, &kp), &e),
            Err(EnvelopeError::WrongRete(Box::new(h.rete.clone())))
        );
    }

    #[test]
    fn trailer_and_size_are_checked() {
        let ctx = Ctx::new(vec![]);
        let e = ctx.expect(None);
        assert_eq!(
            open::<VertexConfig>(b"{}", &e),
            Err(EnvelopeError::MissingSignature)
        );
        assert_eq!(
            open::<VertexConfig>(b"", &e),
            Err(EnvelopeError::MissingSignature)
        );
        let big = vec![b' '; limits::MAX_ARTIFACT_BYTES + 1];
        assert_eq!(
            open::<VertexConfig>(&big, &e),
            Err(EnvelopeError::OverLimit(Limit::ArtifactBytes))
        );
    }

    #[test]
    fn payload_over_limit_names_the_limit() {
        let kp = keypair(1);
        let primary = signer("primary", &kp);
        let ctx = Ctx::new(vec![primary.clone()]);
        let mut v = serde_json::to_value(sample_vertex()).unwrap();
        let rows: std::vec::Vec<_> = (0..=limits::MAX_ROUTES)
            .map(|i| serde_json::json!({"target": format!("spiffe://demo.flor/service/s{i}"), "addr": "127.0.0.1:1"}))
            .collect();
        v["routes"] = serde_json::Value::Array(rows);
        let bytes = seal(
            &serde_json::to_vec(&header(1, "primary", &[primary])).unwrap(),
            &serde_json::to_vec(&v).unwrap(),
            &kp.sk,
        );
        assert_eq!(
            open::<VertexConfig>(&bytes, &ctx.expect(None)),
            Err(EnvelopeError::OverLimit(Limit::Routes))
        );
    }
}
