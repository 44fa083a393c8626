//! The rete's PKI with a file backend: the CA, management-plane signers,
//! principal X.509-SVIDs, and the checks `validate` runs on certs in the repo.
//!
//! ```text
//! repo (public, in git)                 key dir (private, outside the repo, 0600)
//!   certs/ca.crt                          ca.key
//!   certs/management-planes/<n>.crt       management-planes/<n>.key   (Ed25519)
//!   enrollment.log                        (principal keys of Flow A live only in bundles)
//! ```
//!
//! Every certificate is an X.509-SVID: exactly one URI SAN
//! `spiffe://<td>/<kind>/[<node>/]<name>`, signed by the rete CA. The CA and
//! principal keys are ECDSA P-256; management-plane signers are Ed25519 so
//! their raw public key is what envelopes name in `authorized_mgmt_signers`.
//! Private keys are written 0600, never into the repo, never to stdout.

use std::path::{Path, PathBuf};

use ::time::{Duration, OffsetDateTime};
use flor_vertex::identity::{Kind, SpiffeId};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use ring::rand::SecureRandom;
use x509_parser::prelude::*;

use crate::fsutil::{self, FsError, MODE_PUBLIC, MODE_SECRET};
use crate::model::Problem;

/// Repo path of the CA certificate.
pub const CA_CERT: &str = "certs/ca.crt";
/// Repo directory of management-plane signer certificates.
pub const MGMT_CERT_DIR: &str = "certs/management-planes";
/// Key-dir file of the CA key.
pub const CA_KEY: &str = "ca.key";
/// Key-dir directory of management-plane signer keys.
pub const MGMT_KEY_DIR: &str = "management-planes";
/// The append-only record of every issued certificate (repo root).
pub const ENROLLMENT_LOG: &str = "enrollment.log";

/// CA lifetime: ten years, since rotating the root means re-enrolling every node.
pub const CA_DAYS: i64 = 3650;
/// Default principal and signer certificate lifetime.
pub const LEAF_DAYS: i64 = 365;

/// Why a PKI operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A file could not be read or written.
    #[error(transparent)]
    Fs(#[from] FsError),
    /// rcgen refused to generate or sign.
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// A PEM certificate or key did not parse.
    #[error("{path}: {what}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// The key directory is inside the repo.
    #[error("key directory {keys} is inside the repo {repo}: private keys must never be committed; pass --keys <dir outside the repo>")]
    KeysInRepo {
        /// The key dir.
        keys: PathBuf,
        /// The repo.
        repo: PathBuf,
    },
    /// The CA already exists.
    #[error("{0} already exists; the rete has a CA (refusing to replace it)")]
    CaExists(PathBuf),
    /// The CA is missing.
    #[error("{0} is missing: run `retectl ca init` first")]
    NoCa(PathBuf),
    /// A management-plane signer key does not match its certificate.
    #[error("{key}: key does not match the public key in {cert}")]
    KeyMismatch {
        /// The key file.
        key: PathBuf,
        /// The cert file.
        cert: PathBuf,
    },
    /// The system random generator failed.
    #[error("the system random number generator failed")]
    Random,
    /// Only some kinds may be signed with `ca sign`.
    #[error("`ca sign` issues management-plane signers only; principals get certificates through `retectl issue-bundle`")]
    KindNotSignable,
}

/// The default key directory: `~/.config/retectl/<rete>/`.
pub fn default_keys_dir(rete: &str) -> PathBuf {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".config").join("retectl").join(rete)
}

/// Creates the key dir (0700) and refuses one inside the repo.
pub fn prepare_keys_dir(repo: &Path, keys: &Path) -> Result<PathBuf, PkiError> {
    std::fs::create_dir_all(keys).map_err(fsutil::io_at(keys))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(keys, std::fs::Permissions::from_mode(0o700));
    }
    let k = keys.canonicalize().map_err(fsutil::io_at(keys))?;
    let r = repo.canonicalize().map_err(fsutil::io_at(repo))?;
    if k.starts_with(&r) {
        return Err(PkiError::KeysInRepo { keys: k, repo: r });
    }
    Ok(k)
}

fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut b = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| PkiError::Random)?;
    // Positive and without a leading zero byte, so DER needs no padding.
    b[0] = (b[0] & 0x7f) | 0x01;
    Ok(SerialNumber::from_slice(&b))
}

fn parse_err(path: &Path, what: impl Into<String>) -> PkiError {
    PkiError::Parse {
        path: path.to_path_buf(),
        what: what.into(),
    }
}

/// The rete CA, loaded with its key for issuing.
pub struct Ca {
    /// PEM of `certs/ca.crt`.
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
    not_after: OffsetDateTime,
}

impl Ca {
    /// `retectl ca init`: generates the CA key (to `keys/ca.key`, 0600) and
    /// the self-signed CA certificate (to `repo/certs/ca.crt`).
    pub fn init(repo: &Path, keys: &Path, rete: &str) -> Result<(Ca, CertInfo), PkiError> {
        let cert_path = repo.join(CA_CERT);
        let key_path = keys.join(CA_KEY);
        for p in [&cert_path, &key_path] {
            if p.exists() {
                return Err(PkiError::CaExists(p.clone()));
            }
        }
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Florete");
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{rete} rete CA"));
        // The SPIFFE ID of a trust domain, as SPIFFE recommends for a signing CA.
        params.subject_alt_names = vec![SanType::URI(format!("spiffe://{rete}").try_into()?)];
        // Path length 0: the CA signs leaves only; no intermediates in C0.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = now - Duration::minutes(5);
        params.not_after = now + Duration::days(CA_DAYS);
        params.serial_number = Some(random_serial()?);
        let cert = params.self_signed(&key)?;
        let cert_pem = cert.pem();
        // Key first: a crash in between leaves a key without a cert, which `init` can be re-run over by hand.
        fsutil::write_new(&key_path, key.serialize_pem().as_bytes(), MODE_SECRET)?;
        fsutil::write_new(&cert_path, cert_pem.as_bytes(), MODE_PUBLIC)?;
        let info = CertInfo::parse(&cert_path, cert_pem.as_bytes())?;
        let not_after = params.not_after;
        Ok((
            Ca {
                cert_pem,
                issuer: Issuer::new(params, key),
                not_after,
            },
            info,
        ))
    }

    /// Loads `repo/certs/ca.crt` and `keys/ca.key`.
    pub fn load(repo: &Path, keys: &Path) -> Result<Ca, PkiError> {
        let cert_path = repo.join(CA_CERT);
        if !cert_path.exists() {
            return Err(PkiError::NoCa(cert_path));
        }
        let cert_pem = fsutil::read_string(&cert_path)?;
        let key_path = keys.join(CA_KEY);
        let key_pem = fsutil::read_string(&key_path)?;
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|e| parse_err(&key_path, format!("not a PEM private key: {e}")))?;
        let info = CertInfo::parse(&cert_path, cert_pem.as_bytes())?;
        if info.public_key != key.public_key_raw() {
            return Err(PkiError::KeyMismatch {
                key: key_path,
                cert: cert_path,
            });
        }
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)
            .map_err(|e| parse_err(&cert_path, e.to_string()))?;
        let not_after = OffsetDateTime::from_unix_timestamp(info.not_after)
            .map_err(|e| parse_err(&cert_path, e.to_string()))?;
        Ok(Ca {
            cert_pem,
            issuer,
            not_after,
        })
    }

    /// Issues an X.509-SVID for `id` over `public_key`, valid for `days` (capped at the CA's expiry).
    pub fn issue(
        &self,
        id: &SpiffeId,
        public_key: &impl PublicKeyData,
        days: i64,
    ) -> Result<String, PkiError> {
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, id.name().as_str());
        params.subject_alt_names = vec![SanType::URI(id.to_string().try_into()?)];
        params.is_ca = IsCa::ExplicitNoCa;
        if id.kind() == Kind::ManagementPlane {
            // Sign-only identity: it signs envelopes, never a TLS handshake.
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        } else {
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
        }
        params.use_authority_key_identifier_extension = true;
        params.not_before = now - Duration::minutes(5);
        params.not_after = (now + Duration::days(days)).min(self.not_after);
        params.serial_number = Some(random_serial()?);
        Ok(params.signed_by(public_key, &self.issuer)?.pem())
    }
}

/// `retectl ca sign --kind management-plane --name <n>`: a new Ed25519 signer.
/// Writes the key (0600) to the key dir and the certificate to the repo.
pub fn sign_mgmt(
    ca: &Ca,
    repo: &Path,
    keys: &Path,
    id: &SpiffeId,
    days: i64,
) -> Result<CertInfo, PkiError> {
    if id.kind() != Kind::ManagementPlane {
        return Err(PkiError::KindNotSignable);
    }
    let name = id.name().as_str();
    let cert_path = repo.join(MGMT_CERT_DIR).join(format!("{name}.crt"));
    let key_path = keys.join(MGMT_KEY_DIR).join(format!("{name}.key"));
    for p in [&cert_path, &key_path] {
        if p.exists() {
            return Err(FsError::Exists(p.clone()).into());
        }
    }
    let key_dir = keys.join(MGMT_KEY_DIR);
    std::fs::create_dir_all(&key_dir).map_err(fsutil::io_at(&key_dir))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&key_dir, std::fs::Permissions::from_mode(0o700));
    }
    let key = KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
    let pem = ca.issue(id, &key, days)?;
    fsutil::write_new(&key_path, key.serialize_pem().as_bytes(), MODE_SECRET)?;
    fsutil::write_new(&cert_path, pem.as_bytes(), MODE_PUBLIC)?;
    CertInfo::parse(&cert_path, pem.as_bytes())
}

/// Loads a management-plane signer's Ed25519 key and checks it against its repo certificate.
pub fn load_mgmt_key(
    repo: &Path,
    keys: &Path,
    name: &str,
) -> Result<ed25519_compact::SecretKey, PkiError> {
    let cert_path = repo.join(MGMT_CERT_DIR).join(format!("{name}.crt"));
    let key_path = keys.join(MGMT_KEY_DIR).join(format!("{name}.key"));
    let cert = CertInfo::parse(&cert_path, fsutil::read_string(&cert_path)?.as_bytes())?;
    let key_pem = fsutil::read_string(&key_path)?;
    let der = pem_body(&key_pem, "PRIVATE KEY")
        .ok_or_else(|| parse_err(&key_path, "not a PEM PKCS#8 private key"))?;
    let seed =
        ed25519_seed(&der).ok_or_else(|| parse_err(&key_path, "not an Ed25519 PKCS#8 key"))?;
    let kp = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(seed));
    if cert.public_key != kp.pk.as_ref() {
        return Err(PkiError::KeyMismatch {
            key: key_path,
            cert: cert_path,
        });
    }
    Ok(kp.sk)
}

/// The 32-byte seed of an Ed25519 PKCS#8 (v1 or v2) key: the OID 1.3.101.112
/// followed by `OCTET STRING { OCTET STRING (32) }`.
fn ed25519_seed(der: &[u8]) -> Option<[u8; 32]> {
    const OID: [u8; 5] = [0x06, 0x03, 0x2b, 0x65, 0x70];
    const WRAP: [u8; 4] = [0x04, 0x22, 0x04, 0x20];
    let at = der.windows(OID.len()).position(|w| w == OID)? + OID.len();
    let rest = der.get(at..)?;
    let rest = rest.strip_prefix(&WRAP)?;
    rest.get(..32)?.try_into().ok()
}

/// Decodes the base64 body of the first PEM block labelled `label`.
pub fn pem_body(pem: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin)? + begin.len();
    let stop = start + pem[start..].find(&end)?;
    let b64: String = pem[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64_decode(&b64)
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let bytes = s.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= val(c)? << (18 - 6 * i);
        }
        let n = match chunk.len() {
            4 => 3,
            3 => 2,
            2 => 1,
            _ => return None,
        };
        out.extend_from_slice(&acc.to_be_bytes()[1..1 + n]);
    }
    Some(out)
}

/// What retectl needs to know about a certificate.
#[derive(Clone, Debug)]
pub struct CertInfo {
    /// DER bytes.
    pub der: Vec<u8>,
    /// Serial number, lowercase hex with colons stripped.
    pub serial: String,
    /// SHA-256 of the DER, lowercase hex.
    pub fingerprint: String,
    /// Not-after, Unix seconds.
    pub not_after: i64,
    /// Not-before, Unix seconds.
    pub not_before: i64,
    /// URI SANs.
    pub uris: Vec<String>,
    /// Whether basicConstraints says CA.
    pub is_ca: bool,
    /// Raw subject public key bits (the 32-byte key for Ed25519).
    pub public_key: Vec<u8>,
    /// Whether the key is Ed25519.
    pub ed25519: bool,
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An RFC 3339 UTC timestamp (seconds).
pub fn rfc3339(unix: i64) -> String {
    let Ok(t) = OffsetDateTime::from_unix_timestamp(unix) else {
        return unix.to_string();
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

impl CertInfo {
    /// Parses one PEM certificate; `path` only names the file in errors.
    pub fn parse(path: &Path, pem: &[u8]) -> Result<CertInfo, PkiError> {
        let (_, p) = parse_x509_pem(pem).map_err(|_| parse_err(path, "not a PEM certificate"))?;
        if p.label != "CERTIFICATE" {
            return Err(parse_err(
                path,
                format!("PEM block is {:?}, not CERTIFICATE", p.label),
            ));
        }
        let cert = p
            .parse_x509()
            .map_err(|e| parse_err(path, format!("not an X.509 certificate: {e}")))?;
        let mut uris = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for n in &san.value.general_names {
                if let GeneralName::URI(u) = n {
                    uris.push((*u).to_owned());
                }
            }
        }
        let spki = cert.public_key();
        Ok(CertInfo {
            der: p.contents.clone(),
            serial: hex(cert.raw_serial()),
            fingerprint: hex(ring::digest::digest(&ring::digest::SHA256, &p.contents).as_ref()),
            not_after: cert.validity().not_after.timestamp(),
            not_before: cert.validity().not_before.timestamp(),
            uris,
            is_ca: cert.is_ca(),
            public_key: spki.subject_public_key.data.to_vec(),
            ed25519: spki.algorithm.algorithm == x509_parser::oid_registry::OID_SIG_ED25519,
        })
    }

    /// Whether this certificate's signature verifies with `ca`'s key.
    pub fn signed_by(&self, ca: &CertInfo) -> bool {
        let (Ok((_, leaf)), Ok((_, ca))) = (
            X509Certificate::from_der(&self.der),
            X509Certificate::from_der(&ca.der),
        ) else {
            return false;
        };
        leaf.verify_signature(Some(ca.public_key())).is_ok()
    }
}

/// One line of `enrollment.log`:
/// `<issued-at>\t<flow>\t<principal>\t<serial>\t<sha256>\t<not-after>`.
pub fn log_issued(
    repo: &Path,
    flow: &str,
    principal: &str,
    info: &CertInfo,
) -> Result<(), PkiError> {
    let path = repo.join(ENROLLMENT_LOG);
    if !path.exists() {
        fsutil::append_line(
            &path,
            "# issued-at\tflow\tprincipal\tserial\tsha256-fingerprint\tnot-after",
        )?;
    }
    let line = format!(
        "{}\t{flow}\t{principal}\t{}\t{}\t{}",
        rfc3339(OffsetDateTime::now_utc().unix_timestamp()),
        info.serial,
        info.fingerprint,
        rfc3339(info.not_after)
    );
    Ok(fsutil::append_line(&path, &line)?)
}

/// The repo's certificates as `validate` and `compile` see them.
#[derive(Debug, Default)]
pub struct RepoCerts {
    /// The CA, if `certs/ca.crt` exists and parses.
    pub ca: Option<(String, CertInfo)>,
    /// Management-plane signers found: name → (Ed25519 public key).
    pub signers: std::collections::BTreeMap<String, [u8; 32]>,
}

/// Checks `certs/`: the CA parses, is a CA and is current; every signer cert
/// chains to it, is current, is Ed25519 with exactly one matching SPIFFE SAN;
/// every name in `mgmt_signers` has one. Missing `certs/ca.crt` is not a
/// problem here (a fresh repo before `ca init`); `compile` requires it.
pub fn check_repo(
    repo: &Path,
    td: &str,
    signer_names: &[(String, u64)],
    problems: &mut Vec<Problem>,
) -> RepoCerts {
    let mut out = RepoCerts::default();
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let ca_path = repo.join(CA_CERT);
    let mgmt_dir = repo.join(MGMT_CERT_DIR);
    if ca_path.exists() {
        match fsutil::read_string(&ca_path)
            .map_err(PkiError::from)
            .and_then(|pem| CertInfo::parse(&ca_path, pem.as_bytes()).map(|i| (pem, i)))
        {
            Ok((pem, info)) => {
                if !info.is_ca {
                    problems.push(Problem::new(
                        CA_CERT,
                        1,
                        "certificate is not a CA (basicConstraints CA:TRUE missing)",
                    ));
                }
                if !info.signed_by(&info) {
                    problems.push(Problem::new(
                        CA_CERT,
                        1,
                        "CA certificate is not self-signed",
                    ));
                }
                if info.not_after < now {
                    problems.push(Problem::new(
                        CA_CERT,
                        1,
                        format!("CA certificate expired at {}", rfc3339(info.not_after)),
                    ));
                }
                out.ca = Some((pem, info));
            }
            Err(e) => problems.push(Problem::new(CA_CERT, 1, e.to_string())),
        }
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&mgmt_dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "crt"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    for path in files {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let rel = format!("{MGMT_CERT_DIR}/{stem}.crt");
        let info = match fsutil::read_string(&path)
            .map_err(PkiError::from)
            .and_then(|pem| CertInfo::parse(&path, pem.as_bytes()))
        {
            Ok(i) => i,
            Err(e) => {
                problems.push(Problem::new(&rel, 1, e.to_string()));
                continue;
            }
        };
        let mut ok = true;
        let want = format!("spiffe://{td}/management-plane/{stem}");
        if info.uris != [want.clone()] {
            problems.push(Problem::new(
                &rel,
                1,
                format!(
                    "certificate must carry exactly one URI SAN {want}, has {:?}",
                    info.uris
                ),
            ));
            ok = false;
        }
        match &out.ca {
            Some((_, ca)) if !info.signed_by(ca) => {
                problems.push(Problem::new(
                    &rel,
                    1,
                    format!("certificate does not chain to {CA_CERT}"),
                ));
                ok = false;
            }
            None => {
                problems.push(Problem::new(
                    &rel,
                    1,
                    format!("signer certificate present but {CA_CERT} is missing"),
                ));
                ok = false;
            }
            _ => {}
        }
        if info.not_after < now {
            problems.push(Problem::new(
                &rel,
                1,
                format!("certificate expired at {}", rfc3339(info.not_after)),
            ));
            ok = false;
        }
        if !info.ed25519 || info.public_key.len() != 32 {
            problems.push(Problem::new(
                &rel,
                1,
                "management-plane signer key must be Ed25519",
            ));
            ok = false;
        }
        if ok {
            let mut k = [0u8; 32];
            k.copy_from_slice(&info.public_key);
            out.signers.insert(stem, k);
        }
    }
    if out.ca.is_some() {
        for (name, line) in signer_names {
            let path = mgmt_dir.join(format!("{name}.crt"));
            if !path.exists() {
                problems.push(Problem::new(
                    crate::model::RETE_FILE,
                    *line,
                    format!("mgmt_signers names {name:?} but {MGMT_CERT_DIR}/{name}.crt is missing (run `retectl ca sign --kind management-plane --name {name}`)"),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_vectors() {
        // RFC 4648 section 10.
        for (enc, dec) in [
            ("", ""),
            ("Zg==", "f"),
            ("Zm8=", "fo"),
            ("Zm9v", "foo"),
            ("Zm9vYg==", "foob"),
            ("Zm9vYmE=", "fooba"),
            ("Zm9vYmFy", "foobar"),
        ] {
            assert_eq!(base64_decode(enc).unwrap(), dec.as_bytes(), "{enc}");
        }
        assert!(base64_decode("Zm9v!").is_none());
    }

    #[test]
    fn ed25519_seed_from_rcgen_key_matches_public_key() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let der = pem_body(&key.serialize_pem(), "PRIVATE KEY").unwrap();
        let seed = ed25519_seed(&der).unwrap();
        let kp = ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(seed));
        assert_eq!(kp.pk.as_ref(), key.public_key_raw());
        assert!(ed25519_seed(&der[..20]).is_none());
    }

    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
