//! `flor doctor [--rete <scope>] [--json]`: is this node fit to carry traffic,
//! and if not, what to do. One line per check per enrolled scope, the fix
//! under each that fails; exit status 1 when any check fails.
//!
//! ```text
//! clock      the wall clock is inside every held certificate's window
//! cert       days until each certificate (CA, node, principals) expires:
//!            warn under 30 days, fail under 7 (the agent warns at 30, 7, 1)
//! artifact   the live agent.json and vertex artifact verify (contract::open_*)
//! agent      the scope's agent answers on its control endpoint
//! vertex     its vertex reported, its process lives, every port is bound
//!            (preferred, or a fallback when the preferred one was taken)
//! config     the config service answers over Florete, as this node (RTT)
//! route      each route's vertex completes a QUIC handshake (RTT)
//! role       each management role this node hosts (config-server, metrics-server)
//!            is in this build and accepts connections on its services' upstreams
//! ```
//!
//! A route probe completes a handshake as the node's first SOCKS5 principal
//! (else the node identity); a peer whose ACL does not grant that principal
//! logs the refusal of the connection, which is harmless.

use std::fmt::{self, Write as _};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use flor_vertex::contract::AGENT_REL;
use flor_vertex::identity::{Dialable, Kind, SpiffeId};
use flor_vertex::validity::{Utc, Window, DAY_S};
use serde::Serialize;

use crate::certs::{self, CA_NAME};
use crate::ping::Ms;
use crate::scope::{Scope, ScopeInfo};
use crate::vertex_cmd::VertexStatus;

/// Version of `flor doctor --json`. A field is only ever added within a schema.
pub const SCHEMA: u32 = 1;
/// Under this many days left a certificate is a warning.
pub const WARN_DAYS: i64 = 30;
/// Under this many days left a certificate fails the check: renew now.
pub const FAIL_DAYS: i64 = 7;
/// Largest `--json` answer: 16 routes and 20 certificates fit with room.
const MAX_JSON: usize = 32 * 1024;

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Fine.
    Ok,
    /// Works, but needs attention soon.
    Warn,
    /// Broken: the exit status is 1.
    Fail,
}

/// One check's line.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// The scope it is about.
    pub scope: String,
    /// Which check: home, clock, cert, artifact, agent, vertex, config, route, role.
    pub check: &'static str,
    /// The outcome.
    pub level: Level,
    /// What was found.
    pub detail: String,
    /// What to do, when not ok.
    pub fix: Option<String>,
    /// Round-trip time in microseconds (config, route).
    pub rtt_us: Option<u64>,
}

/// `flor doctor --json`.
#[derive(Serialize)]
struct Report<'a> {
    schema: u32,
    ok: bool,
    checks: &'a [Check],
}

struct Checks<'a> {
    scope: &'a str,
    out: Vec<Check>,
}

impl Checks<'_> {
    fn push(&mut self, check: &'static str, level: Level, detail: String, fix: Option<String>) {
        self.out.push(Check {
            scope: self.scope.to_string(),
            check,
            level,
            detail,
            fix,
            rtt_us: None,
        });
    }

    fn rtt(&mut self, check: &'static str, detail: String, rtt: std::time::Duration) {
        self.push(check, Level::Ok, detail, None);
        if let Some(c) = self.out.last_mut() {
            c.rtt_us = Some(u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX));
        }
    }
}

/// Why `flor doctor` could not print its report (a failed check is no error: it is in the report).
#[derive(Debug)]
#[non_exhaustive]
pub enum DoctorError {
    /// The `--json` report does not fit in [`MAX_JSON`].
    ReportTooLarge,
}

impl fmt::Display for DoctorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DoctorError::ReportTooLarge => f.write_str("the doctor's report is larger than 32 KiB"),
        }
    }
}

impl std::error::Error for DoctorError {}

/// Runs every check on `scopes`; prints them; returns whether none failed.
pub fn run(scopes: &[Scope], json: bool) -> Result<bool, DoctorError> {
    let mut all = Vec::new();
    for scope in scopes {
        all.extend(check_scope(scope));
    }
    let ok = all.iter().all(|c| c.level != Level::Fail);
    if json {
        let mut buf = vec![0u8; MAX_JSON];
        let report = Report {
            schema: SCHEMA,
            ok,
            checks: &all,
        };
        let n = serde_json_core::to_slice(&report, &mut buf)
            .map_err(|_| DoctorError::ReportTooLarge)?;
        println!("{}", String::from_utf8_lossy(&buf[..n]));
    } else {
        print!("{}", text(&all));
    }
    Ok(ok)
}

/// The lines a person reads.
pub fn text(checks: &[Check]) -> String {
    let mut o = String::new();
    for c in checks {
        let level = match c.level {
            Level::Ok => "ok  ",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        };
        let _ = writeln!(o, "{level} {} {:<8} {}", c.scope, c.check, c.detail);
        if let Some(f) = &c.fix {
            let _ = writeln!(o, "       fix: {f}");
        }
    }
    o
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn check_scope(scope: &Scope) -> Vec<Check> {
    let mut c = Checks {
        scope: &scope.name,
        out: Vec::new(),
    };
    let info = match scope.info() {
        Ok(i) => i,
        Err(e) => {
            c.push(
                "scope",
                Level::Fail,
                e.to_string(),
                Some("enroll again: flor enroll <bundle>".into()),
            );
            return c.out;
        }
    };
    // Which flor home this is (FLOR_HOME, a writable /etc/flor, else ~/.flor):
    // a root shell and a user shell may look at different ones.
    c.push("home", Level::Ok, scope.install.display().to_string(), None);
    let now = now_unix();
    certificates(&mut c, scope, &info, now);
    artifact(&mut c, scope, &info);
    let running = agent_and_vertex(&mut c, scope);
    config(&mut c, scope, &info, running);
    routes(&mut c, scope, &info);
    roles(&mut c, scope);
    c.out
}

/// How long a role's loopback listener may take to accept.
const ROLE_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

fn roles(c: &mut Checks<'_>, scope: &Scope) {
    let Ok(cfg) = crate::ping::live_config(scope) else {
        return; // the artifact check already failed
    };
    let hosted = crate::core::roles::hosted(&cfg);
    for (role, missing) in &hosted.incomplete {
        c.push(
            "role",
            Level::Warn,
            format!("this node publishes only part of {role}'s services (no `{missing}`): it is not started"),
            Some("publish both of its services on this node in services.yaml, or neither".into()),
        );
    }
    for spec in &hosted.roles {
        let role = spec.role;
        let [a, b] = role.services();
        if !cfg!(feature = "mgmt") {
            c.push(
                "role",
                Level::Fail,
                format!("this node publishes `{a}` and `{b}`, but this flor was built without {role} (the `mgmt` feature of router boards)"),
                Some("install the x86_64, Debian or Raspberry Pi build on this node, or move the services to another node in services.yaml".into()),
            );
            continue;
        }
        let dead: Vec<String> = spec
            .listen
            .iter()
            .filter(|addr| {
                std::net::TcpStream::connect_timeout(addr, ROLE_CONNECT_TIMEOUT).is_err()
            })
            .map(|addr| addr.to_string())
            .collect();
        let listen = format!("{} and {}", spec.listen[0], spec.listen[1]);
        if dead.is_empty() {
            c.push(
                "role",
                Level::Ok,
                format!("{role} accepts on {listen}"),
                None,
            );
        } else {
            c.push(
                "role",
                Level::Fail,
                format!("{role} ({a}, {b}) does not accept on {}", dead.join(" and ")),
                Some(format!("this node's agent runs it on {listen}: is the agent running (flor agent status lists it under role:)? its log says why it exits")),
            );
        }
    }
}

fn renew_fix(info: &ScopeInfo, who: &str) -> String {
    if who == CA_NAME {
        "the operator renews the rete CA (retectl ca init on a new CA is a re-enrollment of every node)".into()
    } else {
        format!(
            "the operator runs retectl issue-bundle --node {}; then flor enroll <the new bundle> here",
            info.node
        )
    }
}

fn certificates(c: &mut Checks<'_>, scope: &Scope, info: &ScopeInfo, now: i64) {
    let held = certs::held(scope, info, crate::agent::VERTEX_NAME);
    let early: Vec<String> = held
        .iter()
        .filter_map(|h| {
            let v = h.validity.as_ref().ok()?;
            (v.window(now) == Window::NotYetValid)
                .then(|| format!("{} (valid from {})", h.who, Utc(v.not_before)))
        })
        .collect();
    if early.is_empty() {
        c.push(
            "clock",
            Level::Ok,
            format!(
                "{} is inside every held certificate's validity window",
                Utc(now)
            ),
            None,
        );
    } else {
        c.push(
            "clock",
            Level::Fail,
            format!(
                "{} is before the start of: {}",
                Utc(now),
                early.join(", ")
            ),
            Some(
                "set the clock (NTP; a router without a battery starts in the past): peers refuse certificates outside their window"
                    .into(),
            ),
        );
    }
    for h in &held {
        let (level, fix) = match &h.validity {
            Err(_) => (Level::Fail, Some(renew_fix(info, &h.who))),
            Ok(v) => {
                let left = v.seconds_left(now);
                if left < FAIL_DAYS * DAY_S {
                    (Level::Fail, Some(renew_fix(info, &h.who)))
                } else if left < WARN_DAYS * DAY_S {
                    (Level::Warn, Some(renew_fix(info, &h.who)))
                } else {
                    (Level::Ok, None)
                }
            }
        };
        let detail = match &h.validity {
            Ok(v) if v.seconds_left(now) >= 0 => format!(
                "{}: expires in {} days ({})",
                h.who,
                v.days_left(now),
                Utc(v.not_after)
            ),
            _ => format!("{}: {}", h.who, h.left(now)),
        };
        c.push("cert", level, detail, fix);
    }
}

fn artifact(c: &mut Checks<'_>, scope: &Scope, info: &ScopeInfo) {
    let agent = crate::store::read_live(scope, AGENT_REL)
        .map_err(|e| e.to_string())
        .and_then(|b| crate::store::verify_agent(info, b, None).map_err(|e| e.to_string()));
    let vertex = crate::vertex_cmd::load_config(scope, crate::agent::VERTEX_NAME);
    match (agent, vertex) {
        (Ok((h, _, _)), Ok((_, v))) => c.push(
            "artifact",
            Level::Ok,
            format!(
                "v{} (agent.json v{}) verifies against the scope's signers",
                v, h.version
            ),
            None,
        ),
        (Err(e), _) => c.push(
            "artifact",
            Level::Fail,
            format!("mgmt/agent.json: {e}"),
            Some(format!(
                "flor agent sync --rete {}, or enroll again",
                scope.name
            )),
        ),
        (_, Err(e)) => c.push(
            "artifact",
            Level::Fail,
            e.to_string(),
            Some(format!(
                "flor agent sync --rete {}, or enroll again",
                scope.name
            )),
        ),
    }
}

/// Whether a process with this pid lives (unknown elsewhere than Unix: yes).
fn alive(pid: u32) -> bool {
    #[cfg(unix)]
    {
        i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .is_some_and(|p| rustix::process::test_kill_process(p).is_ok())
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}

/// The agent and its vertex; returns whether the vertex runs.
fn agent_and_vertex(c: &mut Checks<'_>, scope: &Scope) -> bool {
    let start = format!(
        "start the flor service, which runs every enrolled scope: {} (or only this scope: flor agent run --rete {})",
        crate::service::start_hint(&crate::scope::base_dir()),
        scope.name
    );
    if crate::control::agent_running(scope) {
        c.push(
            "agent",
            Level::Ok,
            "answers on its control endpoint".into(),
            None,
        );
    } else {
        c.push(
            "agent",
            Level::Fail,
            "no agent answers for this scope".into(),
            Some(start.clone()),
        );
    }
    let path = VertexStatus::path(scope, crate::agent::VERTEX_NAME);
    let Some(st) = VertexStatus::read(&path).filter(|s| alive(s.pid)) else {
        c.push(
            "vertex",
            Level::Fail,
            "the vertex is not running (no live status report)".into(),
            Some(format!(
                "look at the agent's log for why it does not start; {start}"
            )),
        );
        return false;
    };
    let mut bound = Vec::new();
    let mut moved = Vec::new();
    let mut lost = Vec::new();
    if let Some(udp) = st.udp {
        // A bind that succeeds means nobody holds the port any more.
        match std::net::UdpSocket::bind(udp.0) {
            Ok(_) => lost.push(format!("quic {udp}")),
            Err(_) => bound.push(format!("quic {udp}")),
        }
    }
    for s in st.socks.iter() {
        let addr = (flor_vertex::net::SOCKS_IP, s.actual);
        let what = format!("socks5 {} ({})", s.actual, s.principal);
        if std::net::TcpListener::bind(addr).is_ok() {
            lost.push(what);
        } else if s.actual != s.preferred {
            moved.push(format!("{what}: preferred {} was taken", s.preferred));
        } else {
            bound.push(what);
        }
    }
    let mut detail = format!(
        "pid {} runs v{}; bound: {}",
        st.pid,
        st.version,
        bound.join(", ")
    );
    if !moved.is_empty() {
        let _ = write!(detail, "; on fallback ports: {}", moved.join(", "));
    }
    if !lost.is_empty() {
        let _ = write!(detail, "; NOT bound: {}", lost.join(", "));
        c.push(
            "vertex",
            Level::Fail,
            detail,
            Some(format!("restart the agent: {start}")),
        );
    } else if !moved.is_empty() {
        c.push(
            "vertex",
            Level::Warn,
            detail,
            Some("applications configured for the preferred port must use the fallback (flor agent status), or free the preferred port".into()),
        );
    } else {
        c.push("vertex", Level::Ok, detail, None);
    }
    true
}

fn config(c: &mut Checks<'_>, scope: &Scope, info: &ScopeInfo, vertex_runs: bool) {
    let target = format!(
        "{} at {}",
        info.config_server.service, info.config_server.addr
    );
    let source = match crate::sync::florete_source(scope, info) {
        Ok(s) => s,
        Err(e) => {
            c.push(
                "config",
                Level::Fail,
                format!("cannot dial {target}: {e}"),
                Some("enroll again: the node identity is missing or broken".into()),
            );
            return;
        }
    };
    let started = Instant::now();
    match smol::block_on(source.fetch(&info.node, AGENT_REL)) {
        Ok(_) => {
            let took = started.elapsed();
            c.rtt(
                "config",
                format!("{target} answered over Florete in {}", Ms(took)),
                took,
            );
        }
        Err(e) => {
            let mut fix = "on the management node: are its agent (which runs the config-server) and its vertex running (flor doctor there)?".to_string();
            if !vertex_runs {
                fix.push_str(" This node's own vertex is down too.");
            }
            c.push("config", Level::Fail, format!("{target}: {e}"), Some(fix));
        }
    }
}

fn routes(c: &mut Checks<'_>, scope: &Scope, info: &ScopeInfo) {
    let Ok(cfg) = crate::ping::live_config(scope) else {
        return; // the artifact check already failed
    };
    if cfg.routes.is_empty() {
        return;
    }
    let node = SpiffeId::new(info.rete.clone(), Kind::Node, info.node.clone());
    let caller = cfg
        .socks
        .first()
        .map(|s| s.principal.clone())
        .unwrap_or(node);
    let (dialer, creds) = match crate::ping::dialer(scope)
        .and_then(|d| Ok((d, crate::ping::credentials(scope, &cfg, &caller)?)))
    {
        Ok(x) => x,
        Err(e) => {
            c.push(
                "route",
                Level::Fail,
                format!("cannot dial as {caller}: {e}"),
                Some("enroll again".into()),
            );
            return;
        }
    };
    // All probes at once: a stopped node costs one handshake timeout, not one each.
    let probes = cfg.routes.iter().filter_map(|r| {
        let target = Dialable::new(r.target.clone()).ok()?;
        let (dialer, creds) = (&dialer, &creds);
        Some(async move {
            let rtt = dialer.warm(creds, &target, r.addr.0).await;
            (target, r.addr.0, rtt)
        })
    });
    let results = smol::block_on(join_all(probes.collect()));
    for (target, addr, rtt) in results {
        match rtt {
            Ok(t) => c.rtt(
                "route",
                format!("{target} at {addr}: handshake in {}", Ms(t)),
                t,
            ),
            Err(e) => c.push(
                "route",
                Level::Fail,
                format!("{target} at {addr}: {e}"),
                Some(format!(
                    "is the node hosting {target} up (flor doctor there)? is UDP {addr} reachable from here?"
                )),
            ),
        }
    }
}

/// Runs futures concurrently on the current thread; results in order.
async fn join_all<T>(futs: Vec<impl std::future::Future<Output = T>>) -> Vec<T> {
    let ex = smol::LocalExecutor::new();
    let tasks: Vec<_> = futs.into_iter().map(|f| ex.spawn(f)).collect();
    ex.run(async {
        let mut out = Vec::with_capacity(tasks.len());
        for t in tasks {
            out.push(t.await);
        }
        out
    })
    .await
}
