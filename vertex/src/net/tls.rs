//! mTLS for the data plane: credentials, the server's certificate choice by
//! SNI lookup, the client's exact-SAN check, and reading a peer's SPIFFE ID.
//!
//! Trust is the rete CA alone. The server requires a client certificate that
//! chains to it; the client accepts a server only if its chain ends at the CA
//! and its leaf's one URI SAN equals the target it dialed (ADR-0007: exact SAN
//! match is the gate; SNI is a routing hint that is looked up, never parsed).

use std::sync::Arc;

use pki_types::pem::PemObject;
use pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

use super::NetError;
use crate::identity::{Dialable, SniRegistry, SpiffeId, TrustDomain};
use crate::wire::Preamble;

/// A principal's certificate chain and private key, ready for TLS.
#[derive(Debug)]
pub struct Credentials {
    /// The principal, as in the leaf's URI SAN.
    pub id: SpiffeId,
    key: Arc<CertifiedKey>,
}

impl Credentials {
    /// Loads PEM files; refuses a leaf whose SPIFFE ID is not `id`, so a
    /// misplaced file fails at start, not at the first handshake.
    pub fn from_pem(id: SpiffeId, cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, NetError> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|_| NetError::BadPem("certificate"))?;
        let leaf = chain.first().ok_or(NetError::BadPem("certificate"))?;
        let found = spiffe_id_of(leaf, id.trust_domain()).map_err(NetError::BadCertificate)?;
        if found != id {
            return Err(NetError::CertificateIdMismatch(Box::new(id)));
        }
        let key =
            PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| NetError::BadPem("private key"))?;
        let signing = provider()
            .key_provider
            .load_private_key(key)
            .map_err(|_| NetError::BadPem("private key"))?;
        let certified = CertifiedKey::new(chain, signing);
        certified.keys_match().map_err(|_| NetError::KeyMismatch)?;
        Ok(Credentials {
            id,
            key: Arc::new(certified),
        })
    }
}

/// Presents the caller's one certificate whatever the server asks.
#[derive(Debug)]
struct OneClientCert(Arc<CertifiedKey>);

impl rustls::client::ResolvesClientCert for OneClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The crypto provider: rustls with ring, cut to what a rete uses.
///
/// Every certificate of a rete is ECDSA P-256 (retectl's CA, bundles and
/// Flow B CSRs), every peer is a flor speaking TLS 1.3 over QUIC, so the
/// provider offers only that: one signature scheme to verify and sign, one
/// key exchange, AES-128-GCM (which QUIC's Initial packets require anyway)
/// and ChaCha20-Poly1305 (faster where there is no AES hardware, as on MIPS
/// routers). Leaving RSA, P-384 and AES-256 unreferenced lets the linker drop
/// their code (size-report/README.md has what it saved).
pub fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::{cipher_suite, kx_group};
    Arc::new(CryptoProvider {
        cipher_suites: vec![
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ],
        kx_groups: vec![kx_group::X25519],
        signature_verification_algorithms: P256_ONLY,
        secure_random: &P256Keys,
        key_provider: &P256Keys,
    })
}

/// Verifies only ECDSA P-256 with SHA-256: the one scheme rete certificates use.
/// The provider and both verifiers read it from here.
static P256_ONLY: WebPkiSupportedAlgorithms = WebPkiSupportedAlgorithms {
    all: &[webpki::ring::ECDSA_P256_SHA256],
    mapping: &[(
        SignatureScheme::ECDSA_NISTP256_SHA256,
        &[webpki::ring::ECDSA_P256_SHA256],
    )],
};

/// Loads P-256 private keys (PKCS#8, as retectl and `flor enroll` write them)
/// and draws randomness from the OS, through ring. rustls's own ring key
/// provider also accepts RSA, P-384 and Ed25519 keys, which would keep their
/// code in the binary; this one is the few lines rustls leaves to providers.
#[derive(Debug)]
struct P256Keys;

impl rustls::crypto::SecureRandom for P256Keys {
    fn fill(&self, buf: &mut [u8]) -> Result<(), rustls::crypto::GetRandomFailed> {
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), buf)
            .map_err(|_| rustls::crypto::GetRandomFailed)
    }
}

impl rustls::crypto::KeyProvider for P256Keys {
    fn load_private_key(
        &self,
        key: PrivateKeyDer<'static>,
    ) -> Result<Arc<dyn SigningKey>, rustls::Error> {
        let PrivateKeyDer::Pkcs8(der) = key else {
            return Err(rustls::Error::General("private key is not PKCS#8".into()));
        };
        let key = P256Key::from_pkcs8(der.secret_pkcs8_der())
            .map_err(|_| rustls::Error::General("private key is not ECDSA P-256".into()))?;
        Ok(Arc::new(TlsKey(Arc::new(key))))
    }
}

/// An ECDSA P-256 private key: the one key type of a rete. The TLS provider
/// signs handshakes with it and `flor enroll` signs its certificate requests.
#[derive(Debug)]
pub struct P256Key(EcdsaKeyPair);

impl P256Key {
    /// A new random key and its PKCS#8 DER (what the key file holds).
    pub fn generate() -> Result<(P256Key, Vec<u8>), NetError> {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            .map_err(|_| NetError::Tls("P-256 key generation"))?;
        let key = P256Key::from_pkcs8(pkcs8.as_ref())?;
        Ok((key, pkcs8.as_ref().to_vec()))
    }

    /// Reads a PKCS#8 DER key; refuses any other key type.
    pub fn from_pkcs8(der: &[u8]) -> Result<P256Key, NetError> {
        EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_ASN1_SIGNING,
            der,
            &ring::rand::SystemRandom::new(),
        )
        .map(P256Key)
        .map_err(|_| NetError::BadPem("private key (ECDSA P-256, PKCS#8)"))
    }

    /// Reads a PEM `PRIVATE KEY` (PKCS#8) file's contents.
    pub fn from_pem(pem: &[u8]) -> Result<P256Key, NetError> {
        match PrivateKeyDer::from_pem_slice(pem) {
            Ok(PrivateKeyDer::Pkcs8(der)) => P256Key::from_pkcs8(der.secret_pkcs8_der()),
            _ => Err(NetError::BadPem("private key (ECDSA P-256, PKCS#8)")),
        }
    }

    /// The public key as an uncompressed point (65 bytes), as it appears in
    /// a certificate's SubjectPublicKeyInfo.
    pub fn public_key(&self) -> &[u8] {
        self.0.public_key().as_ref()
    }

    /// An ASN.1 DER ECDSA signature over SHA-256 of `message`.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, NetError> {
        self.0
            .sign(&ring::rand::SystemRandom::new(), message)
            .map(|sig| sig.as_ref().to_vec())
            .map_err(|_| NetError::Tls("ECDSA signing"))
    }
}

/// A [`P256Key`] signing TLS 1.3 CertificateVerify messages.
#[derive(Debug)]
struct TlsKey(Arc<P256Key>);

impl SigningKey for TlsKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        offered
            .contains(&SignatureScheme::ECDSA_NISTP256_SHA256)
            .then(|| Box::new(TlsSigner(Arc::clone(&self.0))) as Box<dyn Signer>)
    }

    fn public_key(&self) -> Option<pki_types::SubjectPublicKeyInfoDer<'_>> {
        // keys_match() compares this with the certificate's key.
        Some(rustls::sign::public_key_to_spki(
            &pki_types::alg_id::ECDSA_P256,
            self.0.public_key(),
        ))
    }

    fn algorithm(&self) -> rustls::SignatureAlgorithm {
        rustls::SignatureAlgorithm::ECDSA
    }
}

#[derive(Debug)]
struct TlsSigner(Arc<P256Key>);

impl Signer for TlsSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        self.0
            .sign(message)
            .map_err(|_| rustls::Error::General("ECDSA signing failed".into()))
    }

    fn scheme(&self) -> SignatureScheme {
        SignatureScheme::ECDSA_NISTP256_SHA256
    }
}

/// Loads the rete CA (one or more PEM certificates) as the only trust anchor.
pub fn load_ca(pem: &[u8]) -> Result<Arc<RootCertStore>, NetError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|_| NetError::BadPem("CA certificate"))?;
        roots
            .add(cert)
            .map_err(|_| NetError::BadPem("CA certificate"))?;
    }
    if roots.is_empty() {
        return Err(NetError::BadPem("CA certificate"));
    }
    Ok(Arc::new(roots))
}

/// Why a peer certificate does not name a principal of this rete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerIdError {
    /// The certificate does not parse.
    Unparseable,
    /// No `spiffe://` URI SAN.
    NoSpiffeId,
    /// More than one `spiffe://` URI SAN.
    SeveralSpiffeIds,
    /// The URI is not a valid SPIFFE ID.
    BadSpiffeId,
    /// The SPIFFE ID is in another trust domain.
    ForeignTrustDomain,
}

impl core::fmt::Display for PeerIdError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            PeerIdError::Unparseable => "certificate does not parse",
            PeerIdError::NoSpiffeId => "certificate has no spiffe:// URI SAN",
            PeerIdError::SeveralSpiffeIds => "certificate has more than one spiffe:// URI SAN",
            PeerIdError::BadSpiffeId => "certificate URI SAN is not a valid SPIFFE ID",
            PeerIdError::ForeignTrustDomain => "certificate SPIFFE ID is in another trust domain",
        })
    }
}

/// The one SPIFFE ID a certificate names, in trust domain `td`.
pub fn spiffe_id_of(cert: &CertificateDer<'_>, td: &TrustDomain) -> Result<SpiffeId, PeerIdError> {
    let ee = webpki::EndEntityCert::try_from(cert).map_err(|_| PeerIdError::Unparseable)?;
    let mut uris = ee.valid_uri_names().filter(|u| u.starts_with("spiffe://"));
    let uri = uris.next().ok_or(PeerIdError::NoSpiffeId)?;
    if uris.next().is_some() {
        return Err(PeerIdError::SeveralSpiffeIds);
    }
    let id = SpiffeId::parse(uri).map_err(|_| PeerIdError::BadSpiffeId)?;
    if id.trust_domain() != td {
        return Err(PeerIdError::ForeignTrustDomain);
    }
    Ok(id)
}

/// Picks the certificate to present by looking the SNI up in the registry.
#[derive(Debug)]
struct SniResolver(Arc<SniRegistry<Arc<CertifiedKey>>>);

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let sni = hello.server_name()?;
        match self.0.lookup(sni) {
            Some((_, key)) => Some(Arc::clone(key)),
            None => {
                log::warn!("refused handshake: SNI {sni} names nothing published here");
                None
            }
        }
    }
}

/// Builds the registry of published identities from held credentials.
pub fn registry(published: &[(Dialable, Arc<Credentials>)]) -> SniRegistry<Arc<CertifiedKey>> {
    let mut reg = SniRegistry::new();
    for (d, creds) in published {
        reg.publish(d.clone(), Arc::clone(&creds.key));
    }
    reg
}

/// The rustls server config of a vertex: client certificates required and
/// chained to the rete CA; server certificate chosen by SNI lookup.
pub fn server_config(
    roots: Arc<RootCertStore>,
    registry: Arc<SniRegistry<Arc<CertifiedKey>>>,
) -> Result<rustls::ServerConfig, NetError> {
    let verifier = Arc::new(CaClientVerifier { roots });
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|_| NetError::Tls("TLS 1.3"))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(SniResolver(registry)));
    cfg.alpn_protocols = alpn_protocols();
    Ok(cfg)
}

/// Every preamble version this build speaks, newest first, as ALPN ids: the
/// server picks the first the client also offers, so two new nodes speak the
/// newest version and a node of an older release still gets `florete/1`.
fn alpn_protocols() -> Vec<Vec<u8>> {
    Preamble::ALL.iter().map(|p| p.alpn().to_vec()).collect()
}

/// The rustls client config for one (caller, target) connection.
pub fn client_config(
    roots: Arc<RootCertStore>,
    caller: &Credentials,
    target: &Dialable,
) -> Result<rustls::ClientConfig, NetError> {
    let verifier = ExactSanVerifier {
        roots,
        expected: target.id().clone(),
    };
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|_| NetError::Tls("TLS 1.3"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(Arc::new(OneClientCert(Arc::clone(&caller.key))));
    cfg.alpn_protocols = alpn_protocols();
    Ok(cfg)
}

/// Accepts a server only if its chain ends at the rete CA and its leaf's one
/// URI SAN is exactly the dialed target. The SNI plays no part in the check.
#[derive(Debug)]
struct ExactSanVerifier {
    roots: Arc<RootCertStore>,
    expected: SpiffeId,
}

impl ServerCertVerifier for ExactSanVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The dialer logs a refusal with the address (HandshakeFailure);
        // the error keeps the reason so that log line can name it.
        verify_chain(
            &self.roots,
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
        )?;
        match spiffe_id_of(end_entity, self.expected.trust_domain()) {
            Ok(id) if id == self.expected => Ok(ServerCertVerified::assertion()),
            Ok(id) => {
                log::warn!(
                    "refused server: presented {id} where {} was dialed (wrong SAN)",
                    self.expected
                );
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForName,
                ))
            }
            Err(e) => {
                log::warn!("refused server {}: {e}", self.expected);
                Err(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::NotValidForName,
                ))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // TLS 1.3 only (QUIC); a TLS 1.2 signature is never legitimate here.
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &P256_ONLY)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        P256_ONLY.supported_schemes()
    }
}

/// Checks that `end_entity` chains to the rete CA for `usage` at `now`.
fn verify_chain(
    roots: &RootCertStore,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
    usage: webpki::KeyUsage,
) -> Result<(), rustls::Error> {
    let ee = webpki::EndEntityCert::try_from(end_entity)
        .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding))?;
    ee.verify_for_usage(
        P256_ONLY.all,
        &roots.roots,
        intermediates,
        now,
        usage,
        None,
        None,
    )
    .map(|_| ())
    .map_err(|e| rustls::Error::InvalidCertificate(certificate_error(e)))
}

/// Requires a client certificate that chains to the rete CA. rustls's
/// `WebPkiClientVerifier` checks the same and also parses revocation lists,
/// which a rete does not use (a principal is removed by name, spec 000), so
/// this verifier keeps that parser out of router builds. It sends no CA
/// names in its request: every flor presents its one certificate anyway.
/// Which principal a verified certificate names is decided after the
/// handshake, by the ACL (serve.rs).
#[derive(Debug)]
struct CaClientVerifier {
    roots: Arc<RootCertStore>,
}

impl ClientCertVerifier for CaClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        verify_chain(
            &self.roots,
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::client_auth(),
        )?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // TLS 1.3 only (QUIC), as for the server's certificate.
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &P256_ONLY)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        P256_ONLY.supported_schemes()
    }
}

/// The rustls error for a webpki refusal, keeping what an operator acts on:
/// expired and not-yet-valid with their times, another CA as unknown issuer.
fn certificate_error(e: webpki::Error) -> rustls::CertificateError {
    use rustls::CertificateError as C;
    match e {
        webpki::Error::CertExpired { time, not_after } => C::ExpiredContext { time, not_after },
        webpki::Error::CertNotValidYet { time, not_before } => {
            C::NotValidYetContext { time, not_before }
        }
        webpki::Error::UnknownIssuer => C::UnknownIssuer,
        webpki::Error::InvalidSignatureForPublicKey => C::BadSignature,
        _ => C::BadEncoding,
    }
}

/// Why a certificate was refused in a handshake, as an operator acts on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CertProblem {
    /// Past its `notAfter`: issue a new one (`retectl issue-bundle`), re-enroll.
    Expired,
    /// Before its `notBefore`: a clock is wrong, or it was issued for later.
    NotYetValid,
    /// It does not chain to this rete's CA (another rete's, a stale CA, or
    /// one that only bears its name).
    OtherCa,
    /// It names another principal than the one dialed.
    WrongSan,
    /// The client presented none.
    NoCertificate,
    /// Another TLS refusal, by its alert number.
    Other(u8),
}

/// TLS alerts (RFC 8446 6.2) that rustls sends for certificate refusals.
const ALERT_BAD_CERTIFICATE: u8 = 42;
const ALERT_CERTIFICATE_EXPIRED: u8 = 45;
const ALERT_UNKNOWN_CA: u8 = 48;
/// A signature that does not verify: in a chain, a certificate signed by
/// another CA that bears this CA's name (rustls' BadSignature).
const ALERT_DECRYPT_ERROR: u8 = 51;
const ALERT_CERTIFICATE_REQUIRED: u8 = 116;

impl CertProblem {
    /// From a TLS alert and the refusing side's message. One alert covers
    /// expired and not-yet-valid (RFC 8446 `certificate_expired`), so the
    /// message (rustls' own wording) tells the two apart.
    fn of_alert(alert: u8, reason: &str) -> CertProblem {
        match alert {
            ALERT_CERTIFICATE_EXPIRED if reason.contains("not valid yet") => {
                CertProblem::NotYetValid
            }
            ALERT_CERTIFICATE_EXPIRED => CertProblem::Expired,
            ALERT_UNKNOWN_CA | ALERT_DECRYPT_ERROR => CertProblem::OtherCa,
            ALERT_BAD_CERTIFICATE => CertProblem::WrongSan,
            ALERT_CERTIFICATE_REQUIRED => CertProblem::NoCertificate,
            a => CertProblem::Other(a),
        }
    }
}

impl core::fmt::Display for CertProblem {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            CertProblem::Expired => f.write_str("certificate expired"),
            CertProblem::NotYetValid => f.write_str(
                "certificate not yet valid (a clock is wrong, or it was issued for later)",
            ),
            CertProblem::OtherCa => f.write_str("certificate from another CA than this rete's"),
            CertProblem::WrongSan => {
                f.write_str("certificate for another principal than the one dialed (wrong SAN)")
            }
            CertProblem::NoCertificate => f.write_str("certificate missing (none presented)"),
            CertProblem::Other(a) => write!(f, "certificate refused (TLS alert {a})"),
        }
    }
}

/// A failed handshake in words: who refused whose certificate, and why.
///
/// `ours_is_client`: this end dialed. A refusal made here names the peer's
/// certificate; one the peer sent names ours, with the peer's own message.
pub struct HandshakeFailure<'a> {
    /// The error the handshake ended with.
    pub error: &'a quinn::ConnectionError,
    /// Whether this end is the client.
    pub ours_is_client: bool,
}

impl HandshakeFailure<'_> {
    /// The certificate problem, and whether the peer (not this end) refused.
    pub fn problem(&self) -> Option<(CertProblem, bool)> {
        let (code, reason, by_peer) = match self.error {
            quinn::ConnectionError::TransportError(t) => (u64::from(t.code), &*t.reason, false),
            quinn::ConnectionError::ConnectionClosed(c) => (
                u64::from(c.error_code),
                core::str::from_utf8(&c.reason).unwrap_or(""),
                true,
            ),
            _ => return None,
        };
        // QUIC carries a TLS alert as crypto error 0x100 + alert (RFC 9001 4.8).
        let alert = u8::try_from(code.checked_sub(0x100)?).ok()?;
        Some((CertProblem::of_alert(alert, reason), by_peer))
    }
}

impl core::fmt::Display for HandshakeFailure<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let peer = if self.ours_is_client {
            "server"
        } else {
            "client"
        };
        match (self.problem(), self.error) {
            (Some((p, false)), quinn::ConnectionError::TransportError(t)) => {
                write!(f, "{peer} {p} ({})", t.reason)
            }
            (Some((p, _)), quinn::ConnectionError::ConnectionClosed(c)) => write!(
                f,
                "the {peer} refused our certificate: {p} (it said: {})",
                String::from_utf8_lossy(&c.reason)
            ),
            _ => write!(f, "{}", self.error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alerts_name_the_certificate_problem() {
        let expired = "invalid peer certificate: certificate expired: verification time 2 (UNIX), but certificate is not valid after 1 (1 seconds ago)";
        let early = "invalid peer certificate: certificate not valid yet: verification time 1 (UNIX), but certificate is not valid before 2 (1 seconds in future)";
        assert_eq!(CertProblem::of_alert(45, expired), CertProblem::Expired);
        assert_eq!(CertProblem::of_alert(45, early), CertProblem::NotYetValid);
        assert_eq!(CertProblem::of_alert(48, ""), CertProblem::OtherCa);
        assert_eq!(CertProblem::of_alert(51, ""), CertProblem::OtherCa);
        assert_eq!(CertProblem::of_alert(42, ""), CertProblem::WrongSan);
        assert_eq!(CertProblem::of_alert(116, ""), CertProblem::NoCertificate);
        assert_eq!(CertProblem::of_alert(40, ""), CertProblem::Other(40));
    }

    #[test]
    fn a_handshake_failure_says_who_refused_whom() {
        let local = quinn::ConnectionError::TransportError(quinn_proto::TransportError {
            code: quinn::TransportErrorCode::crypto(116),
            frame: None,
            reason: "peer sent no certificates".into(),
        });
        let f = HandshakeFailure {
            error: &local,
            ours_is_client: false,
        };
        assert_eq!(f.problem(), Some((CertProblem::NoCertificate, false)));
        assert_eq!(
            f.to_string(),
            "client certificate missing (none presented) (peer sent no certificates)"
        );
        let remote = quinn::ConnectionError::ConnectionClosed(quinn_proto::ConnectionClose {
            error_code: quinn::TransportErrorCode::crypto(48),
            frame_type: None,
            reason: b"invalid peer certificate: UnknownIssuer"[..].into(),
        });
        let f = HandshakeFailure {
            error: &remote,
            ours_is_client: true,
        };
        assert_eq!(
            f.to_string(),
            "the server refused our certificate: certificate from another CA than this rete's (it said: invalid peer certificate: UnknownIssuer)"
        );
        // Not a certificate matter: the error as quinn says it.
        let f = HandshakeFailure {
            error: &quinn::ConnectionError::TimedOut,
            ours_is_client: true,
        };
        assert_eq!(f.problem(), None);
    }
}
