//! Enrollment bundles and CSR requests: what travels between the operator
//! and a device outside the config-server.
//!
//! ```text
//! Flow A: retectl issue-bundle --node alpha            -> alpha.bundle.json (certs + keys)
//! Flow B: flor id create (device) -> alpha.csr.json -> retectl issue-bundle --csr
//!                                                       -> alpha.bundle.json (certs only)
//! flor enroll alpha.bundle.json                        -> the scope's install root
//! ```
//!
//! A bundle is one JSON file a person can copy to a router. It carries the
//! rete CA, every principal the node will hold (its `node/<name>` identity,
//! the services it hosts, the users of a laptop), the authorised management
//! signers (the device's first trust anchor for artifacts) and where the
//! config-server is. retectl writes these types with serde_json; the device
//! reads them with serde-json-core, so the format cannot drift.

use core::fmt;

use serde::{Deserialize, Serialize};

use crate::artifact::{ConfigServer, MgmtSigner};
use crate::identity::{Name, SpiffeId, TrustDomain};
use crate::limits::{self, Limit};

/// The `format` field of a bundle this build writes and reads.
pub const BUNDLE_FORMAT: &str = "florete-bundle/1";
/// The `format` field of a CSR request this build writes and reads.
pub const CSR_FORMAT: &str = "florete-csr/1";

/// Why a bundle or CSR request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BundleError {
    /// The file or a PEM string is over a limit.
    OverLimit(Limit),
    /// The file is not JSON of the bundle's shape.
    Malformed,
    /// The `format` field names a format this build does not read.
    UnknownFormat,
    /// The bundle carries no principal, or a principal of another rete.
    BadPrincipals,
}

impl fmt::Display for BundleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BundleError::OverLimit(l) => write!(f, "bundle is over the device limit {l}"),
            BundleError::Malformed => f.write_str("not a Florete bundle: JSON of the wrong shape"),
            BundleError::UnknownFormat => {
                f.write_str("bundle format is not florete-bundle/1 or florete-csr/1; upgrade flor")
            }
            BundleError::BadPrincipals => {
                f.write_str("bundle has no principal, or one outside the bundle's rete")
            }
        }
    }
}

impl std::error::Error for BundleError {}

/// One principal in a bundle: its certificate, and its key in Flow A.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundlePrincipal {
    /// The principal's SPIFFE ID (the certificate's only URI SAN).
    pub id: SpiffeId,
    /// PEM certificate (leaf).
    pub cert_pem: std::string::String,
    /// PEM PKCS#8 private key (Flow A); `None` in Flow B, where the key never left the device.
    pub key_pem: Option<std::string::String>,
}

/// An enrollment bundle (`<node>.bundle.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bundle {
    /// Always [`BUNDLE_FORMAT`].
    pub format: std::string::String,
    /// The rete (trust domain); the default local scope name.
    pub rete: TrustDomain,
    /// The node this bundle enrolls.
    pub node: Name,
    /// PEM of the rete CA certificate.
    pub ca_pem: std::string::String,
    /// Principals the node will hold, its `node/<name>` identity first.
    pub principals: std::vec::Vec<BundlePrincipal>,
    /// Signers whose artifacts the node accepts until an accepted envelope says otherwise.
    pub mgmt_signers: std::vec::Vec<MgmtSigner>,
    /// Where to fetch artifacts for bootstrap.
    pub config_server: ConfigServer,
    /// Optional plain-HTTP mirror of the published tree (`http://host:port/`); nodes verify anyway.
    pub mirror_url: Option<std::string::String>,
}

/// One certificate signing request made on the device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CsrEntry {
    /// The identity the request is for.
    pub id: SpiffeId,
    /// PEM PKCS#10 request; its public key is the device's.
    pub csr_pem: std::string::String,
}

/// The file `flor id create` writes for the operator (`<node>.csr.json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CsrRequest {
    /// Always [`CSR_FORMAT`].
    pub format: std::string::String,
    /// The rete the requests are for.
    pub rete: TrustDomain,
    /// The node that made them.
    pub node: Name,
    /// One request per principal.
    pub csrs: std::vec::Vec<CsrEntry>,
}

fn parse_json<'a, T: Deserialize<'a>>(
    bytes: &'a [u8],
    scratch: &'a mut [u8],
) -> Result<T, BundleError> {
    if bytes.len() > limits::MAX_BUNDLE_BYTES {
        return Err(BundleError::OverLimit(Limit::BundleBytes));
    }
    let _ = limits::take_exceeded_limit();
    serde_json_core::from_slice_escaped::<T>(bytes, scratch)
        .map(|(v, _)| v)
        .map_err(|e| match e {
            serde_json_core::de::Error::EscapedStringIsTooLong => {
                BundleError::OverLimit(Limit::PemLen)
            }
            e => match crate::artifact::map_parse_error(e) {
                crate::artifact::ArtifactError::OverLimit(l) => BundleError::OverLimit(l),
                _ => BundleError::Malformed,
            },
        })
}

impl Bundle {
    /// Parses and checks a bundle with the device parser.
    pub fn parse(bytes: &[u8]) -> Result<Bundle, BundleError> {
        let mut scratch = std::vec![0u8; limits::MAX_PEM_LEN];
        let b: Bundle = parse_json(bytes, &mut scratch)?;
        if b.format != BUNDLE_FORMAT {
            return Err(BundleError::UnknownFormat);
        }
        if b.principals.is_empty()
            || b.principals.len() > limits::MAX_BUNDLE_PRINCIPALS
            || b.principals.iter().any(|p| p.id.trust_domain() != &b.rete)
        {
            return Err(BundleError::BadPrincipals);
        }
        if b.mgmt_signers.len() > limits::MAX_MGMT_SIGNERS {
            return Err(BundleError::OverLimit(Limit::MgmtSigners));
        }
        Ok(b)
    }
}

impl CsrRequest {
    /// Parses and checks a CSR request.
    pub fn parse(bytes: &[u8]) -> Result<CsrRequest, BundleError> {
        let mut scratch = std::vec![0u8; limits::MAX_PEM_LEN];
        let r: CsrRequest = parse_json(bytes, &mut scratch)?;
        if r.format != CSR_FORMAT {
            return Err(BundleError::UnknownFormat);
        }
        if r.csrs.is_empty()
            || r.csrs.len() > limits::MAX_BUNDLE_PRINCIPALS
            || r.csrs.iter().any(|c| c.id.trust_domain() != &r.rete)
        {
            return Err(BundleError::BadPrincipals);
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::{Addr, PublicKeyHex};

    fn sample() -> Bundle {
        Bundle {
            format: BUNDLE_FORMAT.into(),
            rete: TrustDomain::new("demo.flor").unwrap(),
            node: Name::new("alpha").unwrap(),
            ca_pem: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into(),
            principals: vec![BundlePrincipal {
                id: SpiffeId::parse("spiffe://demo.flor/node/alpha").unwrap(),
                cert_pem: "-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n".into(),
                key_pem: Some(
                    "-----BEGIN PRIVATE KEY-----\nMIGH\n-----END PRIVATE KEY-----\n".into(),
                ),
            }],
            mgmt_signers: vec![MgmtSigner {
                id: SpiffeId::parse("spiffe://demo.flor/management-plane/primary").unwrap(),
                key: PublicKeyHex([7; 32]),
            }],
            config_server: ConfigServer {
                service: SpiffeId::parse("spiffe://demo.flor/service/config").unwrap(),
                addr: Addr("127.0.0.1:7443".parse().unwrap()),
            },
            mirror_url: None,
        }
    }

    #[test]
    fn serde_json_output_parses_on_device() {
        let b = sample();
        let json = serde_json::to_vec_pretty(&b).unwrap();
        assert_eq!(Bundle::parse(&json).unwrap(), b);
    }

    #[test]
    fn refusals_are_typed() {
        let mut b = sample();
        b.format = "florete-bundle/9".into();
        assert_eq!(
            Bundle::parse(&serde_json::to_vec(&b).unwrap()),
            Err(BundleError::UnknownFormat)
        );

        let mut b = sample();
        b.principals[0].id = SpiffeId::parse("spiffe://other/node/alpha").unwrap();
        assert_eq!(
            Bundle::parse(&serde_json::to_vec(&b).unwrap()),
            Err(BundleError::BadPrincipals)
        );

        let mut b = sample();
        b.ca_pem = "x\n".repeat(limits::MAX_PEM_LEN);
        assert_eq!(
            Bundle::parse(&serde_json::to_vec(&b).unwrap()),
            Err(BundleError::OverLimit(Limit::PemLen))
        );

        assert_eq!(
            Bundle::parse(b"{\"format\":1}"),
            Err(BundleError::Malformed)
        );
        assert_eq!(
            Bundle::parse(&vec![b' '; limits::MAX_BUNDLE_BYTES + 1]),
            Err(BundleError::OverLimit(Limit::BundleBytes))
        );
    }

    #[test]
    fn csr_request_round_trip() {
        let r = CsrRequest {
            format: CSR_FORMAT.into(),
            rete: TrustDomain::new("demo.flor").unwrap(),
            node: Name::new("alpha").unwrap(),
            csrs: vec![CsrEntry {
                id: SpiffeId::parse("spiffe://demo.flor/node/alpha").unwrap(),
                csr_pem:
                    "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n"
                        .into(),
            }],
        };
        assert_eq!(
            CsrRequest::parse(&serde_json::to_vec(&r).unwrap()).unwrap(),
            r
        );
    }
}
