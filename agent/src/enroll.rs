//! `flor id create` and `flor enroll`: how a device joins a rete.
//!
//! ```text
//! Flow A: operator: retectl issue-bundle --node alpha     -> alpha.bundle.json (certs + keys)
//! Flow B: device:   flor id create --rete demo.flor --node alpha
//!                     keys -> <scope>/pending/keys/... (0600), CSRs -> alpha.csr.json
//!         operator: retectl issue-bundle --csr alpha.csr.json -> alpha.bundle.json (certs only)
//! Renewal (Flow B): device: flor id renew -> CSRs for the installed keys -> alpha-renew.csr.json
//!         operator: retectl issue-bundle --csr ... ; device: flor enroll (keys untouched)
//! device: flor enroll alpha.bundle.json [--as <scope>] [--from <dir|http://...>]
//!           -> ca.crt, certs/, keys/ (0600), mgmt/ (verified artifacts), scope.json (last)
//! ```
//!
//! `scope.json` is written last: it is what makes a scope "enrolled", so an
//! enrollment interrupted at any point is simply not there yet and can be run
//! again. Then [`settle`] waits for the host's service to start the scope's
//! agent and its vertex ([`crate::core::settle`] decides), so enroll ends by
//! saying that traffic flows, or what to start.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use flor_vertex::artifact::{self, MgmtSigners};
use flor_vertex::bundle::{Bundle, CsrEntry, CsrRequest, CSR_FORMAT};
use flor_vertex::file;
use flor_vertex::identity::{Kind, Name, SpiffeId, TrustDomain};
use flor_vertex::limits::{MAX_BUNDLE_BYTES, MAX_PEM_LEN};
use flor_vertex::net::{NetError, P256Key};
use pki_types::pem::PemObject;

use crate::core::settle::{self, Probe, Settled};
use crate::fetch::{FetchError, Source};
use crate::scope::{Scope, ScopeError, ScopeInfo};
use crate::store::{self, StoreError};

/// The pending-key area of a scope (Flow B keys waiting for their certificates).
pub const PENDING_DIR: &str = "pending";

/// Why `flor id create` or `flor enroll` failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum EnrollError {
    /// A flag's value is invalid.
    BadArg(String),
    /// The bundle file could not be read or parsed.
    Bundle(PathBuf, String),
    /// The scope name is taken by a rete with a different CA.
    ScopeTaken(String),
    /// A Flow B principal has no key in the pending area.
    NoPendingKey(Box<SpiffeId>, PathBuf),
    /// A key does not belong to its certificate.
    KeyMismatch(Box<SpiffeId>),
    /// Key or CSR generation failed.
    Crypto(String),
    /// No `--from` was given and the config-server cannot be dialled.
    NoSource(crate::sync::SourceError),
    /// Fetching the artifacts failed.
    Fetch(FetchError),
    /// The artifacts were refused or could not be stored.
    Store(StoreError),
    /// A scope could not be resolved.
    Scope(ScopeError),
    /// Writing a file failed.
    Io(PathBuf, std::io::Error),
    /// The scope's running agent has a version pending: re-enrolling now would void it unseen.
    AgentPending(String),
    /// Enrolled, but the running agent refused to re-read the scope.
    AgentRefusedReload(String),
    /// Enrolled, but the running agent could not be asked to re-read the scope.
    AgentReload(String, crate::control::ControlError),
}

impl fmt::Display for EnrollError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnrollError::BadArg(s) => f.write_str(s),
            EnrollError::Bundle(p, e) => write!(f, "{}: {e}", p.display()),
            EnrollError::AgentPending(s) => write!(
                f,
                "the agent of scope {s} has a version pending; confirm it (flor agent sync --rete {s} --confirm) or let it roll back, then enroll again. Nothing was changed."
            ),
            EnrollError::AgentRefusedReload(s) => write!(
                f,
                "enrolled, but the running agent of scope {s} did not take it (it refused); restart the agent"
            ),
            EnrollError::AgentReload(s, why) => write!(
                f,
                "enrolled, but the running agent of scope {s} did not take it ({why}); restart the agent"
            ),
            EnrollError::ScopeTaken(s) => write!(
                f,
                "scope {s} is already enrolled with a different rete CA; choose another name with --as"
            ),
            EnrollError::NoPendingKey(id, p) => write!(
                f,
                "the bundle has no key for {id} and neither {} nor the installed key exists; run flor id create on this device first",
                p.display()
            ),
            EnrollError::KeyMismatch(id) => write!(
                f,
                "the certificate for {id} does not match its private key on this device"
            ),
            EnrollError::Crypto(e) => write!(f, "key generation failed: {e}"),
            EnrollError::NoSource(e) => write!(
                f,
                "cannot reach the config-server ({e}); pass --from <compiled dir|http://ip:port/>"
            ),
            EnrollError::Fetch(e) => write!(f, "fetching artifacts: {e}"),
            EnrollError::Store(e) => write!(f, "{e}"),
            EnrollError::Scope(e) => write!(f, "{e}"),
            EnrollError::Io(p, e) => write!(f, "{}: {e}", p.display()),
        }
    }
}

impl std::error::Error for EnrollError {}

fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), EnrollError> {
    file::write_atomic(path, bytes, mode).map_err(|e| EnrollError::Io(path.to_path_buf(), e))
}

/// `flor id create`: makes P-256 keys on the device and a CSR file for the operator.
pub fn id_create(
    rete: &str,
    node: &str,
    principals: &[String],
    out: Option<&Path>,
) -> Result<PathBuf, EnrollError> {
    let td =
        TrustDomain::new(rete).map_err(|e| EnrollError::BadArg(format!("--rete {rete}: {e}")))?;
    let node_name =
        Name::new(node).map_err(|e| EnrollError::BadArg(format!("--node {node}: {e}")))?;
    let mut ids = vec![SpiffeId::new(td.clone(), Kind::Node, node_name.clone())];
    for p in principals {
        let uri = format!("spiffe://{td}/{p}");
        let id = SpiffeId::parse(&uri)
            .map_err(|e| EnrollError::BadArg(format!("--principal {p}: {e}")))?;
        if matches!(id.kind(), Kind::ManagementPlane | Kind::ControlPlane) {
            return Err(EnrollError::BadArg(format!(
                "--principal {p}: signer keys stay on operator hardware"
            )));
        }
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    let scope = Scope::named(td.as_str()).map_err(EnrollError::Scope)?;
    let mut csrs = Vec::new();
    for id in ids {
        let key_file = scope
            .install
            .join(PENDING_DIR)
            .join(artifact::key_path(&id).as_str());
        // Re-running reuses the pending key, so a CSR already sent stays valid.
        let key = match fs::read(&key_file) {
            Ok(pem) => P256Key::from_pem(&pem).map_err(|e| EnrollError::Crypto(e.to_string()))?,
            Err(_) => {
                let (k, pkcs8) =
                    P256Key::generate().map_err(|e| EnrollError::Crypto(e.to_string()))?;
                write(&key_file, private_key_pem(pkcs8).as_bytes(), 0o600)?;
                k
            }
        };
        let csr_pem = csr(&id, &CsrKey(key))?;
        csrs.push(CsrEntry { id, csr_pem });
    }
    write_request(td, node_name, csrs, out)
}

/// A PKCS#10 request for `id` over `key`: the SPIFFE ID as the only SAN.
fn csr(id: &SpiffeId, key: &CsrKey) -> Result<String, EnrollError> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
        .map_err(|e| EnrollError::Crypto(e.to_string()))?;
    let uri = id.to_uri();
    params.subject_alt_names = vec![rcgen::SanType::URI(
        rcgen::string::Ia5String::try_from(uri.as_str())
            .map_err(|e| EnrollError::Crypto(e.to_string()))?,
    )];
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, uri.as_str());
    params
        .serialize_request(key)
        .and_then(|c| c.pem())
        .map_err(|e| EnrollError::Crypto(e.to_string()))
}

/// `flor id renew`: CSRs for the keys the scope already holds (its node
/// identity and every principal of the live vertex artifact), for the
/// operator's `retectl issue-bundle --csr`. No key is made or moved: the
/// bundle that comes back is enrolled over the same key files.
pub fn id_renew(scope: &Scope, out: Option<&Path>) -> Result<PathBuf, EnrollError> {
    let info = scope.info().map_err(EnrollError::Scope)?;
    let mut ids = vec![SpiffeId::new(
        info.rete.clone(),
        Kind::Node,
        info.node.clone(),
    )];
    if let Ok((cfg, _)) = crate::vertex_cmd::load_config(scope, crate::agent::VERTEX_NAME) {
        for p in cfg.principals.iter() {
            if !ids.contains(&p.id) {
                ids.push(p.id.clone());
            }
        }
    }
    let mut csrs = Vec::new();
    for id in ids {
        let key_file = scope.path(&artifact::key_path(&id));
        let pem = match file::read_bounded(&key_file, MAX_PEM_LEN) {
            Ok(pem) => pem,
            // A node enrolled without its node identity's key (an old bundle): nothing to renew there.
            Err(_) if id.kind() == Kind::Node => continue,
            Err(e) => return Err(EnrollError::Io(key_file, e)),
        };
        let key = P256Key::from_pem(&pem)
            .map_err(|e| EnrollError::Crypto(format!("{}: {e}", key_file.display())))?;
        let csr_pem = csr(&id, &CsrKey(key))?;
        csrs.push(CsrEntry { id, csr_pem });
    }
    let out = out.map_or_else(
        || PathBuf::from(format!("{}-renew.csr.json", info.node)),
        Path::to_path_buf,
    );
    write_request(info.rete, info.node, csrs, Some(&out))
}

/// Writes a CSR request file (`florete-csr/1`).
fn write_request(
    td: TrustDomain,
    node_name: Name,
    csrs: Vec<CsrEntry>,
    out: Option<&Path>,
) -> Result<PathBuf, EnrollError> {
    let req = CsrRequest {
        format: CSR_FORMAT.into(),
        rete: td,
        node: node_name.clone(),
        csrs,
    };
    let mut buf = vec![0u8; MAX_BUNDLE_BYTES];
    let n = serde_json_core::to_slice(&req, &mut buf)
        .map_err(|_| EnrollError::BadArg("CSR request would exceed MAX_BUNDLE_BYTES".into()))?;
    buf.truncate(n);
    buf.push(b'\n');
    let out = out.map_or_else(
        || PathBuf::from(format!("{node_name}.csr.json")),
        Path::to_path_buf,
    );
    write(&out, &buf, 0o644)?;
    Ok(out)
}

/// The raw public key of a PKCS#8 PEM key, to match it against a certificate.
fn public_key_of(key_pem: &str) -> Result<Vec<u8>, NetError> {
    Ok(P256Key::from_pem(key_pem.as_bytes())?.public_key().to_vec())
}

/// A PKCS#8 key as the PEM `PRIVATE KEY` file retectl also writes.
fn private_key_pem(pkcs8: Vec<u8>) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new("PRIVATE KEY", pkcs8), config)
}

/// The device's key as rcgen signs a certificate request with it. rcgen's own
/// `KeyPair` also carries RSA, whose code would then ship on every router;
/// this implements rcgen's signing trait with the one key type a rete uses.
struct CsrKey(P256Key);

impl rcgen::PublicKeyData for CsrKey {
    fn der_bytes(&self) -> &[u8] {
        self.0.public_key()
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ECDSA_P256_SHA256
    }
}

impl rcgen::SigningKey for CsrKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.0.sign(msg).map_err(|_| rcgen::Error::RingUnspecified)
    }
}

/// Whether the DER certificate in `cert_pem` carries `raw_pk` (its SubjectPublicKeyInfo bits).
fn cert_has_key(cert_pem: &str, raw_pk: &[u8]) -> bool {
    let Ok(der) = pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes()) else {
        return false;
    };
    // A P-256 point is 65 bytes and unique to its key; finding it inside
    // the DER is enough to tell "this cert was issued for this key".
    der.windows(raw_pk.len()).any(|w| w == raw_pk)
}

/// SHA-256 of the CA certificate's DER: the scope's trust-anchor fingerprint.
pub fn ca_fingerprint(ca_pem: &str) -> Option<[u8; 32]> {
    let der = pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes()).ok()?;
    let d = ring::digest::digest(&ring::digest::SHA256, &der);
    d.as_ref().try_into().ok()
}

/// The port offset for a new scope: 0 if it is the first, else
/// `STEP * (1 + fp[0] % 9)`, stepping by `STEP` past offsets other scopes use,
/// where `STEP` is the width of the SOCKS5 port band ([`artifact::SOCKS_PORT_BAND`],
/// 100), so two scopes' preferred ports never overlap.
pub fn choose_port_offset(fp0: u8, used: &[u16]) -> u16 {
    const STEP: u16 = artifact::SOCKS_PORT_BAND;
    if used.is_empty() {
        return 0;
    }
    let mut off = STEP * (1 + u16::from(fp0) % 9);
    for _ in 0..used.len() + 1 {
        if !used.contains(&off) && off != 0 {
            return off;
        }
        off = if off >= 9 * STEP { STEP } else { off + STEP };
    }
    // More than nine scopes: go past 10 steps in the same steps.
    let mut off = 10 * STEP;
    while used.contains(&off) {
        off += STEP;
    }
    off
}

/// Checks an operator-given `--port-offset`: a multiple of the band's width
/// (else two scopes' bands could overlap) that keeps the band below the
/// fallback ports ([`artifact::MAX_SCOPE_PORT_OFFSET`]).
pub fn check_port_offset(offset: u16) -> Result<u16, EnrollError> {
    if offset.is_multiple_of(artifact::SOCKS_PORT_BAND) && offset <= artifact::MAX_SCOPE_PORT_OFFSET
    {
        Ok(offset)
    } else {
        Err(EnrollError::BadArg(format!(
            "--port-offset {offset}: must be a multiple of {} up to {} (the SOCKS5 ports {}-{} plus the offset must stay apart from other retes' and below {})",
            artifact::SOCKS_PORT_BAND,
            artifact::MAX_SCOPE_PORT_OFFSET,
            artifact::SOCKS_PORT_FIRST,
            artifact::SOCKS_PORT_LAST,
            artifact::SOCKS_FALLBACK_MIN_PORT,
        )))
    }
}

/// What `flor enroll` did.
pub struct Enrolled {
    /// The scope.
    pub scope: Scope,
    /// Its record.
    pub info: ScopeInfo,
    /// The installed version.
    pub version: u32,
}

/// `flor enroll`.
pub fn enroll(
    bundle_path: &Path,
    as_scope: Option<&str>,
    from: Option<&str>,
    port_offset: Option<u16>,
) -> Result<Enrolled, EnrollError> {
    let bytes = file::read_bounded(bundle_path, MAX_BUNDLE_BYTES)
        .map_err(|e| EnrollError::Bundle(bundle_path.into(), e.to_string()))?;
    let b = Bundle::parse(&bytes)
        .map_err(|e| EnrollError::Bundle(bundle_path.into(), e.to_string()))?;
    if b.ca_pem.len() > MAX_PEM_LEN {
        return Err(EnrollError::Bundle(
            bundle_path.into(),
            "CA PEM too long".into(),
        ));
    }
    let scope_name = as_scope.unwrap_or(b.rete.as_str());
    let scope = Scope::named(scope_name).map_err(EnrollError::Scope)?;
    let fp = ca_fingerprint(&b.ca_pem).ok_or_else(|| {
        EnrollError::Bundle(
            bundle_path.into(),
            "the CA certificate is not valid PEM".into(),
        )
    })?;

    // Re-enrolling the same rete refreshes it; another rete may not take the name.
    let existing = scope.info().ok();
    if existing.is_some() {
        let old_ca = fs::read_to_string(scope.install.join(artifact::CA_PATH)).unwrap_or_default();
        if ca_fingerprint(&old_ca) != Some(fp) {
            return Err(EnrollError::ScopeTaken(scope.name.clone()));
        }
    }
    // A running agent is told to re-read the scope once everything is written;
    // it must not be in the middle of trying a version.
    let agent_running = existing.is_some() && crate::control::agent_running(&scope);
    if agent_running && scope.install.join(store::COMMIT_FILE).exists() {
        return Err(EnrollError::AgentPending(scope.name.clone()));
    }
    let offset = match (port_offset, &existing) {
        (Some(o), _) => check_port_offset(o)?,
        (None, Some(info)) => info.port_offset,
        (None, None) => {
            let used: Vec<u16> = Scope::enrolled()
                .iter()
                .filter(|n| *n != &scope.name)
                .filter_map(|n| Scope::named(n).ok()?.info().ok())
                .map(|i| i.port_offset)
                .collect();
            choose_port_offset(fp[0], &used)
        }
    };

    // Certificates and keys.
    write(
        &scope.install.join(artifact::CA_PATH),
        b.ca_pem.as_bytes(),
        0o644,
    )?;
    let pending_root = scope.install.join(PENDING_DIR);
    let rete_pending = Scope::named(b.rete.as_str())
        .map(|s| s.install.join(PENDING_DIR))
        .unwrap_or_else(|_| pending_root.clone());
    let mut used_pending = Vec::new();
    for p in &b.principals {
        let key_rel = artifact::key_path(&p.id);
        let installed = scope.install.join(key_rel.as_str());
        // Flow B: the key `flor id create` left pending, or (a renewal, `flor
        // id renew`) the key already installed; whichever the certificate is for.
        let key_pem = match &p.key_pem {
            Some(k) => Some(k.clone()),
            None => {
                let candidates = [
                    pending_root.join(key_rel.as_str()),
                    rete_pending.join(key_rel.as_str()),
                    installed.clone(),
                ];
                let mut found = None;
                for c in candidates.iter().filter(|c| c.is_file()) {
                    let pem = fs::read_to_string(c).map_err(|e| EnrollError::Io(c.clone(), e))?;
                    if public_key_of(&pem).is_ok_and(|pk| cert_has_key(&p.cert_pem, &pk)) {
                        found = Some((c, pem));
                        break;
                    }
                }
                match found {
                    Some((c, _)) if *c == installed => None,
                    Some((c, pem)) => {
                        used_pending.push(c.clone());
                        Some(pem)
                    }
                    None if candidates.iter().any(|c| c.is_file()) => {
                        return Err(EnrollError::KeyMismatch(Box::new(p.id.clone())))
                    }
                    None => {
                        return Err(EnrollError::NoPendingKey(
                            Box::new(p.id.clone()),
                            candidates[0].clone(),
                        ))
                    }
                }
            }
        };
        if let Some(key_pem) = &key_pem {
            let pk = public_key_of(key_pem)
                .map_err(|_| EnrollError::KeyMismatch(Box::new(p.id.clone())))?;
            if !cert_has_key(&p.cert_pem, &pk) {
                return Err(EnrollError::KeyMismatch(Box::new(p.id.clone())));
            }
        }
        write(
            &scope.install.join(artifact::cert_path(&p.id).as_str()),
            p.cert_pem.as_bytes(),
            0o644,
        )?;
        // A renewal over the installed key leaves the key file as it is.
        if let Some(key_pem) = key_pem {
            write(&installed, key_pem.as_bytes(), 0o600)?;
        }
    }

    let mut signers = MgmtSigners::default();
    for s in &b.mgmt_signers {
        signers
            .push(s.clone())
            .map_err(|l| EnrollError::Bundle(bundle_path.into(), format!("over limit {l}")))?;
    }
    let mirror_url = match &b.mirror_url {
        Some(u) => Some(heapless::String::try_from(u.as_str()).map_err(|_| {
            EnrollError::Bundle(bundle_path.into(), "mirror_url is over 128 bytes".into())
        })?),
        None => None,
    };
    let mut info = ScopeInfo {
        rete: b.rete.clone(),
        node: b.node.clone(),
        port_offset: offset,
        mgmt_signers: signers,
        config_server: b.config_server.clone(),
        mirror_url,
    };

    // Artifacts: fetched, verified against the bundle's signers, installed atomically.
    let source = match from {
        Some(f) => Source::parse(f).map_err(EnrollError::Fetch)?,
        None => crate::sync::default_source(&scope, &info).map_err(EnrollError::NoSource)?,
    };
    let verified =
        smol::block_on(crate::sync::fetch_verified(&source, &info, None)).map_err(|e| match e {
            crate::sync::SyncError::Fetch(f) => EnrollError::Fetch(f),
            crate::sync::SyncError::Store(s) => EnrollError::Store(s),
        })?;
    // The enrolled record must exist before the signer adoption rewrites it.
    store::install_committed(&scope, &mut info, &verified).map_err(EnrollError::Store)?;
    scope
        .write_info(&info)
        .map_err(|e| EnrollError::Io(scope.install.join(crate::scope::SCOPE_FILE), e))?;
    for p in used_pending {
        let _ = fs::remove_file(p);
    }
    if agent_running {
        let reload = crate::control::call(
            &scope,
            crate::control::Request::Reload,
            std::time::Duration::from_secs(10),
        );
        match reload {
            Ok(true) => {}
            Ok(false) => return Err(EnrollError::AgentRefusedReload(scope.name.clone())),
            Err(e) => return Err(EnrollError::AgentReload(scope.name.clone(), e)),
        }
    }
    Ok(Enrolled {
        scope,
        info,
        version: verified.version(),
    })
}

/// How the node runs the scope once `flor enroll` wrote it.
pub struct Settlement {
    /// How the wait ended.
    pub outcome: Settled,
    /// The flor home the scope is in (the one the service must run for).
    pub home: PathBuf,
    /// The command that starts this host's service.
    pub hint: &'static str,
    /// The agent's SOCKS5 lines from `flor agent status`, once it runs.
    pub socks: Vec<String>,
}

/// Waits (at most [`settle::SETTLE_WITHIN`]) until the scope's agent runs a
/// healthy vertex, or says at once that no service will start it.
pub fn settle(scope: &Scope) -> Settlement {
    let home = crate::scope::base_dir();
    let start = std::time::Instant::now();
    let outcome = loop {
        let probe = Probe {
            service: crate::service::service_running(&home),
            agent: agent_health(scope),
        };
        let elapsed = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        if let Some(outcome) = settle::decide(elapsed, probe) {
            break outcome;
        }
        std::thread::sleep(std::time::Duration::from_millis(settle::PROBE_EVERY));
    };
    let mut socks = Vec::new();
    if outcome == Settled::Running {
        let _ = crate::control::call_with(
            scope,
            crate::control::Request::Status { json: false },
            STATUS_TIMEOUT,
            |l| {
                if l.trim_start().starts_with("socks5") {
                    socks.push(l.trim().to_string());
                }
            },
        );
    }
    Settlement {
        outcome,
        hint: crate::service::start_hint(&home),
        home,
        socks,
    }
}

/// How long one status request to the agent may take.
const STATUS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// `Some(healthy)` when the scope's agent answers `status json`.
fn agent_health(scope: &Scope) -> Option<bool> {
    let mut json = String::new();
    let asked = crate::control::call_with(
        scope,
        crate::control::Request::Status { json: true },
        STATUS_TIMEOUT,
        |l| json.push_str(l),
    );
    match asked {
        Ok(true) => crate::status::Brief::healthy(&json),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_offsets_are_distinct_and_first_scope_gets_zero() {
        assert_eq!(choose_port_offset(7, &[]), 0);
        assert_eq!(choose_port_offset(0, &[0]), 100);
        assert_eq!(choose_port_offset(8, &[0]), 900);
        assert_eq!(choose_port_offset(9, &[0]), 100, "fp[0] % 9 wraps");
        assert_eq!(
            choose_port_offset(8, &[0, 900]),
            100,
            "skips a taken offset"
        );
        let all: Vec<u16> = (0..=9).map(|i| i * 100).collect();
        assert_eq!(choose_port_offset(3, &all), 1000);
    }

    #[test]
    fn a_given_port_offset_keeps_bands_apart_and_below_the_fallback_ports() {
        for ok in [0, 100, 900, 2000, artifact::MAX_SCOPE_PORT_OFFSET] {
            assert_eq!(check_port_offset(ok).ok(), Some(ok));
        }
        for bad in [1, 50, 150, artifact::MAX_SCOPE_PORT_OFFSET + 100, u16::MAX] {
            let e = check_port_offset(bad).err().map(|e| e.to_string());
            assert!(
                e.as_deref()
                    .is_some_and(|e| e.contains("multiple of 100 up to 31500")),
                "{bad}: {e:?}"
            );
        }
    }

    #[test]
    fn id_create_writes_csrs_with_the_spiffe_san_and_private_keys() {
        let home = std::env::temp_dir().join(format!("flor-idcreate-{}", std::process::id()));
        let _ = fs::remove_dir_all(&home);
        // The test sets FLOR_HOME for this process only; no other test reads it.
        std::env::set_var("FLOR_HOME", &home);
        let out = home.join("alpha.csr.json");
        id_create("demo.flor", "alpha", &["service/wiki".into()], Some(&out)).unwrap();
        let req = CsrRequest::parse(&fs::read(&out).unwrap()).unwrap();
        assert_eq!(req.csrs.len(), 2);
        assert_eq!(req.csrs[0].id.to_string(), "spiffe://demo.flor/node/alpha");
        assert!(req.csrs[1]
            .csr_pem
            .starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        let key = home.join("retes/demo.flor/pending/keys/service/wiki.key");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // Re-running keeps the key (a CSR already sent stays valid).
        let before = fs::read(&key).unwrap();
        id_create("demo.flor", "alpha", &["service/wiki".into()], Some(&out)).unwrap();
        assert_eq!(fs::read(&key).unwrap(), before);
        assert!(id_create(
            "demo.flor",
            "alpha",
            &["management-plane/primary".into()],
            Some(&out)
        )
        .is_err());
        fs::remove_dir_all(&home).unwrap();
    }
}
