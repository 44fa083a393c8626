//! A scope's installed artifacts: generations, the live pointer, the pending commit.
//!
//! ```text
//! <install>/mgmt          -> gen/7        symlink (Windows: mgmt.live holds 7): what agent and vertex read
//! <install>/gen/7/agent.json              (mgmt/agent.json)
//! <install>/gen/7/vertices/flor.json      (mgmt/vertices/flor.json)
//! <install>/gen/6/...                     the previous version, kept for rollback
//! <install>/commit.json                   present only while a version is pending
//! ```
//!
//! Both artifacts of a version change together because the only switch is
//! one `rename` of the `mgmt` symlink: a crash at any instant leaves the old
//! or the new generation live, never a mix. The order of writes is chosen so
//! that every crash point recovers to a consistent state ([`recover`]):
//!
//! - stage: write `gen/<new>` (temp dir, fsync, rename) → write `commit.json`
//!   → switch `mgmt`. A crash before the switch leaves a `commit.json` that
//!   names a generation which is not live: recovery drops it.
//! - roll back: switch `mgmt` to the previous generation → remove
//!   `commit.json` → remove the failed generation.
//! - commit: remove `commit.json` → adopt the envelope's signer snapshot into
//!   `scope.json` → prune generations older than the previous one. Adoption is
//!   idempotent and redone by [`recover`], so a crash in between is harmless.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use flor_vertex::artifact::{AgentConfig, VertexConfig};
use flor_vertex::contract::{self, ContractError, Trust};
use flor_vertex::envelope::{self, Header};
use flor_vertex::file;
use flor_vertex::identity::Name;
use flor_vertex::limits::MAX_ARTIFACT_BYTES;
use serde::{Deserialize, Serialize};

use crate::live::Live;
use crate::scope::{Scope, ScopeInfo};

/// The live-generation pointer in the install root ([`crate::live`]).
pub const MGMT_LINK: &str = contract::MGMT_DIR;
/// Directory of generations in the install root.
pub const GEN_DIR: &str = "gen";
/// The pending-commit record.
pub const COMMIT_FILE: &str = "commit.json";
use flor_vertex::contract::{vertex_rel, AGENT_REL};

/// Why fetched artifacts were refused or could not be installed.
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// An artifact was refused (envelope, payload, names): which file and why.
    Refused(String, ContractError),
    /// The filesystem refused: what was being done and why.
    Io(&'static str, io::Error),
    /// Nothing is installed (the scope was never synced).
    NothingInstalled,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Refused(file, e) => write!(f, "{file} refused: {e}"),
            StoreError::Io(what, e) => write!(f, "{what}: {e}"),
            StoreError::NothingInstalled => {
                f.write_str("no artifacts are installed in this scope (run flor enroll)")
            }
        }
    }
}

impl std::error::Error for StoreError {}

/// One verified vertex artifact.
#[derive(Clone, Debug)]
pub struct VerifiedVertex {
    /// The vertex name.
    pub name: Name,
    /// Its payload.
    pub config: VertexConfig,
    /// The envelope bytes, exactly as fetched.
    pub bytes: Vec<u8>,
}

/// A verified set of artifacts for one version.
#[derive(Clone, Debug)]
pub struct Verified {
    /// The agent envelope's header.
    pub header: Header,
    /// The agent envelope bytes.
    pub agent_bytes: Vec<u8>,
    /// Every vertex agent.json lists.
    pub vertices: Vec<VerifiedVertex>,
}

impl Verified {
    /// The version of this set (the agent envelope's version).
    pub fn version(&self) -> u32 {
        self.header.version
    }
}

/// What this scope trusts, with `current` the version a replacement must beat.
pub fn trust(info: &ScopeInfo, current: Option<u32>) -> Trust<'_> {
    Trust {
        rete: &info.rete,
        node: &info.node,
        signers: &info.mgmt_signers,
        current,
    }
}

/// Opens and validates agent.json against the scope's trust and current version.
pub fn verify_agent(
    info: &ScopeInfo,
    bytes: Vec<u8>,
    current: Option<u32>,
) -> Result<(Header, AgentConfig, Vec<u8>), StoreError> {
    let (header, cfg) = contract::open_agent(&bytes, &trust(info, current))
        .map_err(|e| StoreError::Refused(AGENT_REL.into(), e))?;
    Ok((header, cfg, bytes))
}

/// Opens and validates one vertex artifact.
pub fn verify_vertex(
    info: &ScopeInfo,
    name: &Name,
    bytes: Vec<u8>,
    current: Option<u32>,
) -> Result<VerifiedVertex, StoreError> {
    let (_, config) = contract::open_vertex(&bytes, &trust(info, current), name)
        .map_err(|e| StoreError::Refused(vertex_rel(name), e))?;
    Ok(VerifiedVertex {
        name: name.clone(),
        config,
        bytes,
    })
}

fn gen_dir(scope: &Scope, version: u32) -> PathBuf {
    mgmt(scope).gen_dir(u64::from(version))
}

/// The `mgmt` pointer of a scope (a symlink on Unix; see [`crate::live`]).
fn mgmt(scope: &Scope) -> Live<'_> {
    Live {
        root: &scope.install,
        name: MGMT_LINK,
        gens: GEN_DIR,
    }
}

/// The live generation's version, read from the `mgmt` pointer.
pub fn live_version(scope: &Scope) -> Option<u32> {
    u32::try_from(mgmt(scope).read()?).ok()
}

/// Where a scope-relative path is; `mgmt/...` resolves through the live pointer.
///
/// `None`: the path is under `mgmt/` and nothing is installed yet.
pub fn live_path(scope: &Scope, rel: &str) -> Option<PathBuf> {
    match rel.strip_prefix("mgmt/") {
        Some(inside) => mgmt(scope).resolve(Path::new(inside)),
        None => Some(scope.install.join(rel)),
    }
}

/// Reads an installed artifact of the live generation (`mgmt/...`), bounded.
pub fn read_live(scope: &Scope, rel: &str) -> Result<Vec<u8>, StoreError> {
    let inside = rel.strip_prefix("mgmt/").unwrap_or(rel);
    mgmt(scope)
        .read_bounded(Path::new(inside), MAX_ARTIFACT_BYTES)
        .map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                StoreError::NothingInstalled
            } else {
                StoreError::Io("reading installed artifact", e)
            }
        })
}

/// The live generation's version per file (the "current" each new envelope must beat).
pub fn live_header(scope: &Scope, rel: &str) -> Option<Header> {
    let bytes = read_live(scope, rel).ok()?;
    envelope::peek_header(&bytes).ok()
}

/// Writes a verified set as generation `<version>` (not yet live).
pub fn write_generation(scope: &Scope, v: &Verified) -> Result<(), StoreError> {
    let io = |e| StoreError::Io("writing a new generation", e);
    let gens = scope.install.join(GEN_DIR);
    fs::create_dir_all(&gens).map_err(io)?;
    let dst = gen_dir(scope, v.version());
    if dst.exists() {
        if live_version(scope) == Some(v.version()) {
            // Same version already live (re-enroll): nothing to write.
            return Ok(());
        }
        fs::remove_dir_all(&dst).map_err(io)?;
    }
    let tmp = gens.join(format!(".tmp-{}-{}", v.version(), std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    file::write_atomic(&tmp.join("agent.json"), &v.agent_bytes, 0o644).map_err(io)?;
    for vx in &v.vertices {
        let mut file = String::from(vx.name.as_str());
        file.push_str(".json");
        file::write_atomic(&tmp.join("vertices").join(file), &vx.bytes, 0o644).map_err(io)?;
    }
    fs::rename(&tmp, &dst).map_err(io)?;
    file::sync_dir(&gens).map_err(io)
}

/// Points `mgmt` at generation `<version>` with one atomic rename.
pub fn switch_to(scope: &Scope, version: u32) -> Result<(), StoreError> {
    mgmt(scope)
        .point(u64::from(version))
        .map_err(|e| StoreError::Io("switching the live generation", e))
}

/// The record of a version that runs but is not yet committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitRecord {
    /// The staged version.
    pub pending: u32,
    /// The version to return to.
    pub previous: u32,
    /// Wall-clock deadline (Unix seconds) for confirmation; survives an agent restart.
    pub deadline_unix: u64,
    /// Commit as soon as the vertex is healthy (a poll, or `sync --confirm`) rather than on confirmation.
    pub auto: bool,
}

/// Reads `commit.json`, if any.
pub fn read_commit(scope: &Scope) -> Option<CommitRecord> {
    let bytes = file::read_bounded(&scope.install.join(COMMIT_FILE), 1024).ok()?;
    serde_json_core::from_slice::<CommitRecord>(&bytes)
        .ok()
        .map(|(r, _)| r)
}

fn write_commit(scope: &Scope, r: &CommitRecord) -> Result<(), StoreError> {
    let mut buf = [0u8; 256];
    let n = serde_json_core::to_slice(r, &mut buf).map_err(|_| {
        StoreError::Io(
            "writing commit.json",
            io::Error::new(io::ErrorKind::InvalidData, "record too long"),
        )
    })?;
    file::write_atomic(&scope.install.join(COMMIT_FILE), &buf[..n], 0o644)
        .map_err(|e| StoreError::Io("writing commit.json", e))
}

fn remove_commit(scope: &Scope) -> Result<(), StoreError> {
    match fs::remove_file(scope.install.join(COMMIT_FILE)) {
        Ok(()) => {
            file::sync_dir(&scope.install).map_err(|e| StoreError::Io("removing commit.json", e))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::Io("removing commit.json", e)),
    }
}

/// Installs a verified set and makes it live at once, with nothing pending (enroll).
pub fn install_committed(
    scope: &Scope,
    info: &mut ScopeInfo,
    v: &Verified,
) -> Result<(), StoreError> {
    write_generation(scope, v)?;
    switch_to(scope, v.version())?;
    remove_commit(scope)?;
    adopt_signers(scope, info, &v.header)?;
    prune(scope, v.version(), None);
    Ok(())
}

/// Stages a verified set: writes it, records it as pending, makes it live.
pub fn stage(
    scope: &Scope,
    v: &Verified,
    previous: u32,
    deadline_unix: u64,
    auto: bool,
) -> Result<(), StoreError> {
    write_generation(scope, v)?;
    write_commit(
        scope,
        &CommitRecord {
            pending: v.version(),
            previous,
            deadline_unix,
            auto,
        },
    )?;
    switch_to(scope, v.version())
}

/// Returns to the previous generation and forgets the failed one.
pub fn roll_back(scope: &Scope, failed: u32, previous: u32) -> Result<(), StoreError> {
    switch_to(scope, previous)?;
    remove_commit(scope)?;
    let _ = fs::remove_dir_all(gen_dir(scope, failed));
    Ok(())
}

/// Makes the pending version permanent and adopts its signer snapshot.
pub fn commit(
    scope: &Scope,
    info: &mut ScopeInfo,
    version: u32,
    keep: Option<u32>,
) -> Result<(), StoreError> {
    remove_commit(scope)?;
    if let Some(h) = live_header(scope, AGENT_REL) {
        adopt_signers(scope, info, &h)?;
    }
    prune(scope, version, keep);
    Ok(())
}

/// Writes the header's `authorized_mgmt_signers` into `scope.json` if they differ.
pub fn adopt_signers(scope: &Scope, info: &mut ScopeInfo, h: &Header) -> Result<(), StoreError> {
    if info.mgmt_signers == h.authorized_mgmt_signers {
        return Ok(());
    }
    info.mgmt_signers = h.authorized_mgmt_signers.clone();
    scope
        .write_info(info)
        .map_err(|e| StoreError::Io("adopting the signer snapshot into scope.json", e))
}

/// Removes every generation except `live` and `keep`, and stray temp dirs.
fn prune(scope: &Scope, live: u32, keep: Option<u32>) {
    let Ok(entries) = fs::read_dir(scope.install.join(GEN_DIR)) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let v: Option<u32> = name.parse().ok();
        if v == Some(live) || (v.is_some() && v == keep) {
            continue;
        }
        let _ = fs::remove_dir_all(e.path());
    }
}

/// What [`recover`] found at agent start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recovered {
    /// A committed version is live and nothing is pending.
    Committed(u32),
    /// A staged version is live and still inside its confirmation window.
    Pending(CommitRecord),
    /// A staged version's window passed while the agent was down: rolled back.
    RolledBack {
        /// The version that was rolled back.
        failed: u32,
        /// The version live now.
        live: u32,
    },
}

/// Brings the install root to a consistent state after a crash at any point.
pub fn recover(
    scope: &Scope,
    info: &mut ScopeInfo,
    now_unix: u64,
) -> Result<Recovered, StoreError> {
    let live = live_version(scope).ok_or(StoreError::NothingInstalled)?;
    // Leftover temp generations and links from an interrupted write.
    if let Ok(entries) = fs::read_dir(scope.install.join(GEN_DIR)) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(".tmp-") {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
    match read_commit(scope) {
        Some(r) if r.pending == live => {
            if now_unix >= r.deadline_unix {
                roll_back(scope, r.pending, r.previous)?;
                return Ok(Recovered::RolledBack {
                    failed: r.pending,
                    live: r.previous,
                });
            }
            Ok(Recovered::Pending(r))
        }
        stale => {
            if let Some(r) = stale {
                // Crashed before the switch, or after a rollback's switch.
                remove_commit(scope)?;
                if r.pending != live {
                    let _ = fs::remove_dir_all(gen_dir(scope, r.pending));
                }
            }
            if let Some(h) = live_header(scope, AGENT_REL) {
                adopt_signers(scope, info, &h)?;
            }
            Ok(Recovered::Committed(live))
        }
    }
}

/// What `--dry-run` prints: the differences between the live and a new set.
pub fn diff(live: Option<(&Header, &[VertexConfig])>, new: &Verified) -> Vec<String> {
    let mut out = Vec::new();
    let old_v = live.map(|(h, _)| h.version);
    out.push(match old_v {
        Some(o) => format!("version: {o} -> {}", new.version()),
        None => format!("version: (none) -> {}", new.version()),
    });
    if let Some((h, _)) = live {
        if h.authorized_mgmt_signers != new.header.authorized_mgmt_signers {
            out.push("authorized management signers change".into());
        }
    }
    let empty: &[VertexConfig] = &[];
    let olds = live.map(|(_, v)| v).unwrap_or(empty);
    for nv in &new.vertices {
        let ov = olds.iter().find(|o| o.name == nv.name);
        let n = &nv.config;
        let prefix = nv.name.as_str();
        // Services.
        for s in n.services.iter() {
            match ov.and_then(|o| o.services.iter().find(|x| x.id == s.id)) {
                None => out.push(format!("{prefix}: + service {} -> {}", s.id, s.upstream)),
                Some(x) if x.upstream != s.upstream => out.push(format!(
                    "{prefix}: ~ service {} upstream {} -> {}",
                    s.id, x.upstream, s.upstream
                )),
                Some(_) => {}
            }
        }
        if let Some(o) = ov {
            for s in o.services.iter() {
                if !n.services.iter().any(|x| x.id == s.id) {
                    out.push(format!("{prefix}: - service {}", s.id));
                }
            }
        }
        // ACL rows, compared by caller and the service ids they grant.
        let grants = |cfg: &VertexConfig, i: usize| -> Vec<String> {
            let mut g: Vec<String> = cfg.acl[i]
                .services
                .iter()
                .filter_map(|&k| cfg.services.get(usize::from(k)))
                .map(|s| s.id.to_string())
                .collect();
            g.sort();
            g
        };
        for (i, row) in n.acl.iter().enumerate() {
            let new_g = grants(n, i);
            let old = ov.and_then(|o| {
                o.acl
                    .iter()
                    .position(|r| r.caller == row.caller)
                    .map(|j| grants(o, j))
            });
            match old {
                None => out.push(format!(
                    "{prefix}: + acl {} -> [{}]",
                    row.caller,
                    new_g.join(", ")
                )),
                Some(g) if g != new_g => out.push(format!(
                    "{prefix}: ~ acl {} [{}] -> [{}]",
                    row.caller,
                    g.join(", "),
                    new_g.join(", ")
                )),
                Some(_) => {}
            }
        }
        if let Some(o) = ov {
            for row in o.acl.iter() {
                if !n.acl.iter().any(|r| r.caller == row.caller) {
                    out.push(format!("{prefix}: - acl {}", row.caller));
                }
            }
        }
        // Routes.
        for r in n.routes.iter() {
            match ov.and_then(|o| o.routes.iter().find(|x| x.target == r.target)) {
                None => out.push(format!("{prefix}: + route {} via {}", r.target, r.addr)),
                Some(x) if x.addr != r.addr => out.push(format!(
                    "{prefix}: ~ route {} via {} -> {}",
                    r.target, x.addr, r.addr
                )),
                Some(_) => {}
            }
        }
        if let Some(o) = ov {
            for r in o.routes.iter() {
                if !n.routes.iter().any(|x| x.target == r.target) {
                    out.push(format!("{prefix}: - route {}", r.target));
                }
            }
            if o.listen != n.listen {
                out.push(format!(
                    "{prefix}: ~ listen {} -> {}",
                    o.listen
                        .map(|a| a.to_string())
                        .unwrap_or_else(|| "none".into()),
                    n.listen
                        .map(|a| a.to_string())
                        .unwrap_or_else(|| "none".into())
                ));
            }
        }
    }
    if out.len() == 1 {
        out.push("no change to services, ACL rows or routes".into());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use flor_vertex::artifact::{MgmtSigners, ShortText};
    use flor_vertex::envelope::{ArtifactKind, Plane};
    use flor_vertex::identity::{SpiffeId, TrustDomain};

    fn scope(tag: &str) -> Scope {
        let install = std::env::temp_dir().join(format!("flor-store-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&install);
        fs::create_dir_all(&install).unwrap();
        Scope {
            name: "demo.flor".into(),
            runtime: install.join("run"),
            install,
        }
    }

    fn info() -> ScopeInfo {
        serde_json::from_value(serde_json::json!({
            "rete": "demo.flor", "node": "alpha", "port_offset": 0, "mgmt_signers": [],
            "config_server": {"service": "spiffe://demo.flor/service/config", "addr": "127.0.0.1:9"},
            "mirror_url": null,
        }))
        .unwrap()
    }

    /// A set whose files carry their version in their bytes (no signature is checked here).
    fn set(version: u32) -> Verified {
        let header = Header {
            kind: ArtifactKind::Agent,
            schema: ShortText::new("1.0").unwrap(),
            plane: Plane::Mgmt,
            version,
            rete: TrustDomain::new("demo.flor").unwrap(),
            node: Name::new("alpha").unwrap(),
            signer: SpiffeId::parse("spiffe://demo.flor/management-plane/primary").unwrap(),
            authorized_mgmt_signers: MgmtSigners::default(),
        };
        let config: VertexConfig = serde_json::from_value(serde_json::json!({
            "rete": "demo.flor", "node": "alpha", "name": "flor", "ca": "ca.crt", "listen": null,
            "idle_timeout_s": 30, "principals": [], "services": [], "acl": [], "routes": [], "socks": [],
        }))
        .unwrap();
        Verified {
            header,
            agent_bytes: format!("agent v{version}").into_bytes(),
            vertices: vec![VerifiedVertex {
                name: Name::new("flor").unwrap(),
                config,
                bytes: format!("vertex v{version}").into_bytes(),
            }],
        }
    }

    fn live_files(s: &Scope) -> (String, String) {
        (
            fs::read_to_string(live_path(s, "mgmt/agent.json").unwrap()).unwrap(),
            fs::read_to_string(live_path(s, "mgmt/vertices/flor.json").unwrap()).unwrap(),
        )
    }

    #[test]
    fn stage_commit_and_roll_back_switch_both_files_together() {
        let s = scope("switch");
        let mut i = info();
        install_committed(&s, &mut i, &set(1)).unwrap();
        assert_eq!(live_version(&s), Some(1));
        stage(&s, &set(2), 1, 100, false).unwrap();
        assert_eq!(live_files(&s), ("agent v2".into(), "vertex v2".into()));
        assert_eq!(read_commit(&s).unwrap().pending, 2);
        roll_back(&s, 2, 1).unwrap();
        assert_eq!(live_files(&s), ("agent v1".into(), "vertex v1".into()));
        assert!(read_commit(&s).is_none());
        assert!(!s.install.join("gen/2").exists());
        stage(&s, &set(3), 1, 100, true).unwrap();
        commit(&s, &mut i, 3, Some(1)).unwrap();
        assert!(read_commit(&s).is_none());
        stage(&s, &set(4), 3, 100, false).unwrap();
        commit(&s, &mut i, 4, Some(3)).unwrap();
        let mut gens: Vec<String> = fs::read_dir(s.install.join(GEN_DIR))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        gens.sort();
        assert_eq!(
            gens,
            ["3", "4"],
            "the live and the previous generation are kept"
        );
        fs::remove_dir_all(&s.install).unwrap();
    }

    #[test]
    fn recovery_from_every_crash_point_is_old_or_new() {
        let s = scope("recover");
        let mut i = info();
        install_committed(&s, &mut i, &set(1)).unwrap();

        // Crash after writing gen/2 and commit.json, before the switch: old.
        write_generation(&s, &set(2)).unwrap();
        write_commit(
            &s,
            &CommitRecord {
                pending: 2,
                previous: 1,
                deadline_unix: 100,
                auto: false,
            },
        )
        .unwrap();
        fs::create_dir_all(s.install.join("gen/.tmp-9-1")).unwrap();
        assert_eq!(recover(&s, &mut i, 50).unwrap(), Recovered::Committed(1));
        assert!(read_commit(&s).is_none());
        assert!(!s.install.join("gen/2").exists());
        assert!(!s.install.join("gen/.tmp-9-1").exists());
        assert_eq!(live_files(&s).0, "agent v1");

        // Crash after the switch, deadline ahead: the new version stays pending.
        stage(&s, &set(2), 1, 100, false).unwrap();
        match recover(&s, &mut i, 50).unwrap() {
            Recovered::Pending(r) => assert_eq!((r.pending, r.previous), (2, 1)),
            other => panic!("{other:?}"),
        }
        // ... and once the deadline passed while the agent was down: rolled back.
        assert_eq!(
            recover(&s, &mut i, 100).unwrap(),
            Recovered::RolledBack { failed: 2, live: 1 }
        );
        assert_eq!(live_files(&s).0, "agent v1");

        // Crash in a rollback after the switch, before commit.json was removed: old.
        stage(&s, &set(2), 1, 100, false).unwrap();
        switch_to(&s, 1).unwrap();
        assert_eq!(recover(&s, &mut i, 50).unwrap(), Recovered::Committed(1));
        assert!(read_commit(&s).is_none());

        // Crash in a commit after commit.json was removed: new, committed.
        stage(&s, &set(2), 1, 100, false).unwrap();
        remove_commit(&s).unwrap();
        assert_eq!(recover(&s, &mut i, 50).unwrap(), Recovered::Committed(2));
        fs::remove_dir_all(&s.install).unwrap();
    }

    #[test]
    fn dry_run_diff_names_services_acl_rows_and_routes() {
        let old = set(1);
        let mut new = set(2);
        let v: VertexConfig = serde_json::from_value(serde_json::json!({
            "rete": "demo.flor", "node": "alpha", "name": "flor", "ca": "ca.crt", "listen": "127.0.0.1:7443",
            "idle_timeout_s": 30, "principals": [],
            "services": [{"id": "spiffe://demo.flor/service/wiki", "upstream": "127.0.0.1:8080"}],
            "acl": [{"caller": "spiffe://demo.flor/user/bob", "services": [0]}],
            "routes": [{"target": "spiffe://demo.flor/service/db", "addr": "127.0.0.1:7444"}],
            "socks": [],
        }))
        .unwrap();
        new.vertices[0].config = v;
        let d = diff(Some((&old.header, &[old.vertices[0].config.clone()])), &new);
        assert_eq!(
            d,
            [
                "version: 1 -> 2",
                "flor: + service spiffe://demo.flor/service/wiki -> 127.0.0.1:8080",
                "flor: + acl spiffe://demo.flor/user/bob -> [spiffe://demo.flor/service/wiki]",
                "flor: + route spiffe://demo.flor/service/db via 127.0.0.1:7444",
                "flor: ~ listen none -> 127.0.0.1:7443",
            ]
        );
        let back = diff(Some((&new.header, &[new.vertices[0].config.clone()])), &old);
        assert!(
            back.contains(&"flor: - acl spiffe://demo.flor/user/bob".to_string()),
            "{back:?}"
        );
        assert!(back.contains(&"flor: - service spiffe://demo.flor/service/wiki".to_string()));
        let same = diff(
            Some((&old.header, &[old.vertices[0].config.clone()])),
            &set(2),
        );
        assert_eq!(same[1], "no change to services, ACL rows or routes");
    }
}
