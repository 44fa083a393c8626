//! The serving endpoint's stateless-reset key, derived from the node's own
//! secret so that a restarted vertex can reset its predecessor's connections.
//!
//! A QUIC server hands each connection ID out with a reset token,
//! `HMAC(reset key, connection ID)`. A packet for a connection ID the server
//! does not know (its process was restarted) is answered with that token,
//! and the client drops the connection at once (RFC 9000, section 10.3). With
//! quinn's default random key a restarted process computes other tokens, the
//! client ignores them, and every flow on the old connection hangs until the
//! idle timeout. So the key must be the same in every process of one vertex,
//! and secret: whoever knows it can reset the vertex's connections.

use core::fmt;
use std::sync::Arc;

use ring::hmac;

/// Domain separation: the key's bytes are used for nothing but this.
const RESET_KEY_LABEL: &[u8] = b"florete/1 QUIC stateless reset key";

/// What a vertex's stateless resets are made of: the HMAC key of its reset
/// tokens, and the key its connection IDs are tagged with. quinn drops a
/// short-header packet whose connection ID does not carry its endpoint's tag
/// (a cheap filter against answering junk), so a restarted process must also
/// recognise its predecessor's connection IDs before it will reset them.
#[derive(Clone, PartialEq, Eq)]
pub struct ResetSecret {
    reset: [u8; 32],
    cid: [u8; 32],
}

/// HKDF-Expand, first block: `T(1) = HMAC(PRK, vertex || 0x00 || purpose || 0x01)`.
fn expand(prk: &hmac::Key, vertex: &str, purpose: &[u8]) -> [u8; 32] {
    let mut ctx = hmac::Context::with_key(prk);
    ctx.update(vertex.as_bytes());
    ctx.update(&[0x00]);
    ctx.update(purpose);
    ctx.update(&[0x01]);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

impl ResetSecret {
    /// Derives the secret of vertex `vertex` from `node_secret` (the DER of
    /// the node principal's private key): HKDF-SHA256 (RFC 5869) with the
    /// fixed label as salt, and the vertex name and the key's purpose as
    /// info, so two vertices of one node differ and no key is used twice.
    pub fn derive(node_secret: &[u8], vertex: &str) -> ResetSecret {
        let prk = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, RESET_KEY_LABEL),
            node_secret,
        );
        let prk = hmac::Key::new(hmac::HMAC_SHA256, prk.as_ref());
        ResetSecret {
            reset: expand(&prk, vertex, b"reset token"),
            cid: expand(&prk, vertex, b"connection id"),
        }
    }

    /// Derives the secret of vertex `vertex` from private keys in PEM
    /// (PKCS#8, SEC1 or PKCS#1), hashed in the order given: normally the node
    /// principal's key alone. `None` if no key parses.
    pub fn from_key_pems<'a>(
        pems: impl IntoIterator<Item = &'a [u8]>,
        vertex: &str,
    ) -> Option<ResetSecret> {
        use pki_types::pem::PemObject;
        let mut secret = Vec::new();
        for pem in pems {
            if let Ok(der) = pki_types::PrivateKeyDer::from_pem_slice(pem) {
                secret.extend_from_slice(der.secret_der());
            }
        }
        (!secret.is_empty()).then(|| ResetSecret::derive(&secret, vertex))
    }

    /// A random secret: the vertex cannot reset connections of an earlier
    /// process (tests, and a node whose key cannot be read).
    pub fn random() -> ResetSecret {
        use ring::rand::SecureRandom;
        let mut seed = [0u8; 32];
        // SystemRandom fails only without an OS entropy source, where TLS
        // could not run either; a zero seed then only weakens resets.
        let _ = ring::rand::SystemRandom::new().fill(&mut seed);
        ResetSecret::derive(&seed, "random")
    }

    /// A quinn endpoint configuration whose reset tokens and connection IDs
    /// come from this secret.
    pub(crate) fn endpoint_config(&self) -> quinn::EndpointConfig {
        let mut cfg =
            quinn::EndpointConfig::new(Arc::new(hmac::Key::new(hmac::HMAC_SHA256, &self.reset)));
        let secret = self.clone();
        cfg.cid_generator(move || Box::new(secret.cid_generator()));
        super::accept_large_datagrams(&mut cfg);
        cfg
    }

    /// Connection IDs tagged with a key every process of this vertex shares.
    fn cid_generator(&self) -> quinn_proto::HashedConnectionIdGenerator {
        let mut key = [0u8; 8];
        key.copy_from_slice(&self.cid[..8]);
        quinn_proto::HashedConnectionIdGenerator::from_key(u64::from_le_bytes(key))
    }
}

impl fmt::Debug for ResetSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ResetSecret(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quinn::crypto::HmacKey;

    fn token(s: &ResetSecret, cid: &[u8]) -> Vec<u8> {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &s.reset);
        let mut out = vec![0u8; HmacKey::signature_len(&key)];
        HmacKey::sign(&key, cid, &mut out);
        out
    }

    #[test]
    fn derivation_is_deterministic_and_separates_secrets_and_vertices() {
        let a = ResetSecret::derive(b"node key one", "flor");
        assert_eq!(a, ResetSecret::derive(b"node key one", "flor"));
        assert_ne!(a, ResetSecret::derive(b"node key two", "flor"));
        assert_ne!(a, ResetSecret::derive(b"node key one", "mesh"));
        // The two keys differ, and neither is a plain HMAC of the secret.
        assert_ne!(a.reset, a.cid);
        assert_ne!(
            a.reset.as_slice(),
            hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, b"node key one"), b"flor").as_ref()
        );
        // Two processes with the same secret give the same token for a connection ID.
        let b = ResetSecret::derive(b"node key one", "flor");
        assert_eq!(token(&a, &[7; 8]), token(&b, &[7; 8]));
        assert_ne!(token(&a, &[7; 8]), token(&a, &[8; 8]));
        assert_ne!(ResetSecret::random(), ResetSecret::random());
    }

    #[test]
    fn a_successor_recognises_its_predecessors_connection_ids() {
        use quinn::ConnectionIdGenerator;
        let old = ResetSecret::derive(b"node key", "flor");
        let new = ResetSecret::derive(b"node key", "flor");
        let stranger = ResetSecret::derive(b"other node key", "flor");
        let cid = old.cid_generator().generate_cid();
        assert!(new.cid_generator().validate(&cid).is_ok());
        // A CID not tagged by this vertex (with overwhelming likelihood) is dropped unanswered.
        let foreign = stranger.cid_generator().generate_cid();
        assert!(new.cid_generator().validate(&foreign).is_err());
    }

    #[test]
    fn key_pems_are_read_as_der() {
        let key = rcgen::KeyPair::generate().expect("key generation");
        let pem = key.serialize_pem();
        let from_pem = ResetSecret::from_key_pems([pem.as_bytes()], "flor");
        assert_eq!(
            from_pem,
            Some(ResetSecret::derive(&key.serialize_der(), "flor"))
        );
        // The same key re-encoded (CRLF line ends) gives the same secret.
        let crlf = pem.replace('\n', "\r\n");
        assert_eq!(
            ResetSecret::from_key_pems([crlf.as_bytes()], "flor"),
            from_pem
        );
        assert_eq!(
            ResetSecret::from_key_pems([&b"not a key"[..]], "flor"),
            None
        );
    }

    #[test]
    fn debug_does_not_print_the_secret() {
        assert_eq!(
            format!("{:?}", ResetSecret::derive(b"k", "flor")),
            "ResetSecret(..)"
        );
    }

    /// Checked against ring's own HKDF: the hand-written two-HMAC form is
    /// exactly HKDF-SHA256 (RFC 5869) with L = 32.
    #[test]
    fn derivation_equals_hkdf_sha256() {
        struct Len32;
        impl ring::hkdf::KeyType for Len32 {
            fn len(&self) -> usize {
                32
            }
        }
        let secret = b"some node key der";
        let hkdf = |purpose: &[u8]| {
            let mut out = [0u8; 32];
            ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, RESET_KEY_LABEL)
                .extract(secret)
                .expand(&[b"flor", &[0], purpose], Len32)
                .expect("32 bytes is within HKDF's output limit")
                .fill(&mut out)
                .expect("the buffer is 32 bytes");
            out
        };
        let s = ResetSecret::derive(secret, "flor");
        assert_eq!(s.reset, hkdf(b"reset token"));
        assert_eq!(s.cid, hkdf(b"connection id"));
    }
}
