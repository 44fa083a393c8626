//! `flor`: the one binary on every Florete node.
//!
//! The agent pulls its node's signed artifacts from the rete's config-server,
//! verifies them on the device, and supervises one vertex child process
//! (`flor vertex run`), which carries the traffic. One binary for both, so a
//! router's flash holds one copy of quinn, rustls and ring.
//!
//! ```text
//! flor id create      keys + CSRs on the device (Flow B)
//! flor id renew       CSRs for the keys already on the device (renewal, Flow B)
//! flor enroll         bundle -> scope; fetch + verify + install artifacts
//! flor agent run      supervise the vertex, poll with backoff, serve agent.sock
//! flor agent sync     fetch now; stage, restart, confirm or roll back
//! flor agent status   what runs, what is pending, which ports are bound
//! flor doctor         check clock, certificates, artifact, vertex, config service, routes
//! flor ping           open one flow to a service and report the verdict and timings
//! flor config-server  store and serve the published tree (management node)
//! flor metrics-server keep each node's pushed counters, serve them to Prometheus (management node)
//! flor vertex run     the data plane (started by the agent)
//! flor service run    an agent for every enrolled scope (the host's one service)
//! ```

mod agent;
#[cfg(feature = "mgmt")]
mod caller_id;
mod certs;
#[cfg(feature = "mgmt")]
mod config_server;
mod control;
mod core;
mod doctor;
mod enroll;
mod fetch;
mod live;
mod logging;
mod metrics_push;
#[cfg(feature = "mgmt")]
mod metrics_server;
mod ping;
mod process;
mod scope;
mod service;
mod status;
mod store;
mod sync;
mod vertex_cmd;
#[cfg(windows)]
mod windows;

use std::path::PathBuf;
use std::time::Duration;

use argh::FromArgs;

use crate::core::settle::{self, Settled};

/// Florete node: agent and vertex.
#[derive(FromArgs)]
struct Flor {
    /// print the version and exit
    #[argh(switch)]
    version: bool,
    #[argh(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Cmd {
    Id(IdCmd),
    Enroll(EnrollCmd),
    Agent(AgentCmd),
    // Parsed without `mgmt` too, so the refusal names the build, not an unknown command.
    #[cfg_attr(not(feature = "mgmt"), allow(dead_code))]
    ConfigServer(ConfigServerCmd),
    #[cfg_attr(not(feature = "mgmt"), allow(dead_code))]
    MetricsServer(MetricsServerCmd),
    Vertex(vertex_cmd::VertexCmd),
    Service(ServiceCmd),
    Doctor(DoctorCmd),
    Ping(PingCmd),
}

/// Check every enrolled rete (or one): clock, certificates, artifact, vertex, config service, routes; exit 1 if any fails.
#[derive(FromArgs)]
#[argh(subcommand, name = "doctor")]
struct DoctorCmd {
    /// check only this scope
    #[argh(option)]
    rete: Option<String>,
    /// print one JSON object
    #[argh(switch)]
    json: bool,
}

/// Open one flow to a service as one of this node's principals; print the verdict and timings; exit 1 unless allowed.
#[derive(FromArgs)]
#[argh(subcommand, name = "ping")]
struct PingCmd {
    /// the service, e.g. wiki.demo.flor.rete
    #[argh(positional)]
    host: String,
    /// the caller: bob, user/bob or a SPIFFE ID (default: the first SOCKS5 principal)
    #[argh(option, long = "as")]
    as_principal: Option<String>,
    /// the scope (needed when several retes are enrolled)
    #[argh(option)]
    rete: Option<String>,
}

/// One agent for every enrolled rete (the host's service: systemd, procd, Windows).
#[derive(FromArgs)]
#[argh(subcommand, name = "service")]
struct ServiceCmd {
    #[argh(subcommand)]
    cmd: ServiceSub,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum ServiceSub {
    Run(ServiceRun),
}

/// Run `flor agent run` for each enrolled scope, start new ones as they are enrolled, stop all on SIGTERM or service stop.
#[derive(FromArgs)]
#[argh(subcommand, name = "run")]
struct ServiceRun {
    /// append this process's own log here instead of standard error (a Windows service has none)
    #[argh(option)]
    log: Option<PathBuf>,
}

/// Device identities.
#[derive(FromArgs)]
#[argh(subcommand, name = "id")]
struct IdCmd {
    #[argh(subcommand)]
    cmd: IdSub,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum IdSub {
    Create(IdCreate),
    Renew(IdRenew),
}

/// Write CSRs for the keys this device already holds, to renew its certificates (Flow B); no key changes.
#[derive(FromArgs)]
#[argh(subcommand, name = "renew")]
struct IdRenew {
    /// the scope (needed when several retes are enrolled)
    #[argh(option)]
    rete: Option<String>,
    /// where to write the CSR request (default: <node>-renew.csr.json)
    #[argh(option)]
    out: Option<PathBuf>,
}

/// Generate keys on this device and write CSRs for the operator (Flow B).
#[derive(FromArgs)]
#[argh(subcommand, name = "create")]
struct IdCreate {
    /// the rete (trust domain), e.g. demo.flor
    #[argh(option)]
    rete: String,
    /// this node's name in the rete
    #[argh(option)]
    node: String,
    /// another principal this device holds, as kind/name (service/wiki, user/alice); repeatable
    #[argh(option)]
    principal: Vec<String>,
    /// where to write the CSR request (default: <node>.csr.json)
    #[argh(option)]
    out: Option<PathBuf>,
}

/// Install a bundle, fetch and verify the node's artifacts.
#[derive(FromArgs)]
#[argh(subcommand, name = "enroll")]
struct EnrollCmd {
    /// the bundle file from the operator
    #[argh(positional)]
    bundle: PathBuf,
    /// local scope name (default: the rete's name)
    #[argh(option, long = "as")]
    as_scope: Option<String>,
    /// fetch artifacts from a compiled tree directory or http://<ip>:<port>/ mirror
    #[argh(option)]
    from: Option<String>,
    /// add this to every preferred local port (default: 0 for the first scope, else from the CA fingerprint)
    #[argh(option)]
    port_offset: Option<u16>,
}

/// The node agent.
#[derive(FromArgs)]
#[argh(subcommand, name = "agent")]
struct AgentCmd {
    #[argh(subcommand)]
    cmd: AgentSub,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum AgentSub {
    Run(AgentRun),
    Sync(AgentSync),
    Status(AgentStatus),
}

/// Run the agent: supervise the vertex, poll the config-server, serve agent.sock.
#[derive(FromArgs)]
#[argh(subcommand, name = "run")]
struct AgentRun {
    /// the scope (needed when several retes are enrolled)
    #[argh(option)]
    rete: Option<String>,
}

/// Fetch now; stage, restart the vertex, and confirm or roll back.
#[derive(FromArgs)]
#[argh(subcommand, name = "sync")]
struct AgentSync {
    /// the scope (needed when several retes are enrolled)
    #[argh(option)]
    rete: Option<String>,
    /// roll back unless confirmed within this time (e.g. 5m, 90s; default: agent.json's commit timeout)
    #[argh(option)]
    commit_timeout: Option<String>,
    /// confirm the pending version, or commit a new one as soon as it runs healthy
    #[argh(switch)]
    confirm: bool,
    /// print what would change and change nothing
    #[argh(switch)]
    dry_run: bool,
}

/// Show what the agent runs.
#[derive(FromArgs)]
#[argh(subcommand, name = "status")]
struct AgentStatus {
    /// the scope (needed when several retes are enrolled)
    #[argh(option)]
    rete: Option<String>,
    /// print one JSON object
    #[argh(switch)]
    json: bool,
}

/// Store and serve the published tree (runs on the management node).
#[derive(FromArgs)]
#[argh(subcommand, name = "config-server")]
#[cfg_attr(not(feature = "mgmt"), allow(dead_code))]
struct ConfigServerCmd {
    /// the scope whose rete and signers this server checks publishes against
    #[argh(option)]
    rete: Option<String>,
    /// loopback address for GET /artifact/... (the `config` service's upstream)
    #[argh(option)]
    read_listen: std::net::SocketAddr,
    /// loopback address for POST /publish (the `config-publish` service's upstream)
    #[argh(option)]
    publish_listen: std::net::SocketAddr,
    /// directory holding the published tree
    #[argh(option)]
    store: PathBuf,
}

/// Keep the counters each node pushes and serve them to Prometheus (runs on the management node).
#[cfg_attr(not(feature = "mgmt"), allow(dead_code))]
#[derive(FromArgs)]
#[argh(subcommand, name = "metrics-server")]
struct MetricsServerCmd {
    /// the scope of the rete whose nodes push here
    #[argh(option)]
    rete: Option<String>,
    /// loopback address for POST /push/<node> (the `metrics-push` service's upstream)
    #[argh(option)]
    push_listen: std::net::SocketAddr,
    /// address for GET /metrics in the Prometheus text format (the `metrics` service's upstream, scraped by Prometheus)
    #[argh(option)]
    read_listen: std::net::SocketAddr,
}

/// Why `flor config-server` and `flor metrics-server` refuse on a build without the `mgmt` feature.
#[cfg(not(feature = "mgmt"))]
const NO_MGMT: &str = "this flor was built for a router without the management roles \
(the `mgmt` cargo feature: config-server, metrics-server); run them on a node with the \
x86_64, Debian or Raspberry Pi build";

/// How long `flor agent sync` waits for the agent: fetch, restart and the health window.
const SYNC_CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

fn run(cmd: Cmd) -> Result<bool, String> {
    match cmd {
        Cmd::Id(IdCmd {
            cmd: IdSub::Create(c),
        }) => {
            let out = enroll::id_create(&c.rete, &c.node, &c.principal, c.out.as_deref())
                .map_err(|e| e.to_string())?;
            println!(
                "wrote {}; send it to the operator (retectl issue-bundle --csr), then run flor enroll <bundle>",
                out.display()
            );
            Ok(true)
        }
        Cmd::Id(IdCmd {
            cmd: IdSub::Renew(c),
        }) => {
            let scope = scope::Scope::find(c.rete.as_deref()).map_err(|e| e.to_string())?;
            let out = enroll::id_renew(&scope, c.out.as_deref()).map_err(|e| e.to_string())?;
            println!(
                "wrote {}; send it to the operator (retectl issue-bundle --csr), then run flor enroll <bundle>: the keys stay as they are",
                out.display()
            );
            Ok(true)
        }
        Cmd::Enroll(c) => {
            let e = enroll::enroll(
                &c.bundle,
                c.as_scope.as_deref(),
                c.from.as_deref(),
                c.port_offset,
            )
            .map_err(|e| e.to_string())?;
            println!(
                "enrolled node {} in rete {} as scope {} (v{}, port offset {}) at {}",
                e.info.node,
                e.info.rete,
                e.scope.name,
                e.version,
                e.info.port_offset,
                e.scope.install.display()
            );
            let s = enroll::settle(&e.scope);
            let name = &e.scope.name;
            match s.outcome {
                Settled::Running => {
                    println!("the agent of scope {name} runs its vertex: traffic flows");
                    for l in &s.socks {
                        println!("  {l}");
                    }
                    Ok(true)
                }
                Settled::NoService => {
                    println!(
                        "no flor service runs for {}, so nothing runs scope {name} yet; start it with:\n  {}",
                        s.home.display(),
                        s.hint
                    );
                    Ok(true)
                }
                Settled::NoAgent => Err(format!(
                    "enrolled, but the flor service for {} did not start the agent of scope {name} within {} s; see the service's log (journalctl -u flor, logread -e flor)",
                    s.home.display(),
                    settle::SETTLE_WITHIN / 1000
                )),
                Settled::NotHealthy => Err(format!(
                    "enrolled, but the vertex of scope {name} did not come up within {} s; see flor agent status --rete {name} and flor doctor --rete {name}",
                    settle::SETTLE_WITHIN / 1000
                )),
            }
        }
        Cmd::Agent(AgentCmd { cmd }) => match cmd {
            AgentSub::Run(r) => {
                let scope = scope::Scope::find(r.rete.as_deref()).map_err(|e| e.to_string())?;
                agent::run(scope).map(|()| true).map_err(|e| e.to_string())
            }
            AgentSub::Sync(s) => {
                let scope = scope::Scope::find(s.rete.as_deref()).map_err(|e| e.to_string())?;
                let timeout_s = match s.commit_timeout.as_deref() {
                    Some(t) => Some(control::parse_duration(t).ok_or_else(|| {
                        format!("--commit-timeout {t}: expected a duration like 5m, 90s or 300")
                    })?),
                    None => None,
                };
                control::call(
                    &scope,
                    control::Request::Sync {
                        dry_run: s.dry_run,
                        confirm: s.confirm,
                        timeout_s,
                    },
                    SYNC_CLIENT_TIMEOUT,
                )
                .map_err(|e| e.to_string())
            }
            AgentSub::Status(s) => {
                let scope = scope::Scope::find(s.rete.as_deref()).map_err(|e| e.to_string())?;
                control::call(
                    &scope,
                    control::Request::Status { json: s.json },
                    Duration::from_secs(5),
                )
                .map_err(|e| e.to_string())
            }
        },
        Cmd::Vertex(c) => c.run().map(|()| true).map_err(|e| e.to_string()),
        Cmd::Service(ServiceCmd {
            cmd: ServiceSub::Run(_),
        }) => service::run().map(|()| true).map_err(|e| e.to_string()),
        Cmd::Doctor(d) => {
            let scopes = match d.rete.as_deref() {
                Some(r) => vec![scope::Scope::find(Some(r)).map_err(|e| e.to_string())?],
                None => {
                    let all = scope::Scope::enrolled();
                    if all.is_empty() {
                        // The same message as every other command without a scope.
                        scope::Scope::find(None).map_err(|e| e.to_string())?;
                    }
                    all.iter()
                        .map(|n| scope::Scope::named(n).map_err(|e| e.to_string()))
                        .collect::<Result<_, _>>()?
                }
            };
            doctor::run(&scopes, d.json).map_err(|e| e.to_string())
        }
        Cmd::Ping(p) => {
            let scope = scope::Scope::find(p.rete.as_deref()).map_err(|e| e.to_string())?;
            let r = ping::ping(&scope, &p.host, p.as_principal.as_deref())
                .map_err(|e| e.to_string())?;
            println!("{r}");
            Ok(matches!(r.verdict, ping::Verdict::Allowed))
        }
        #[cfg(feature = "mgmt")]
        Cmd::ConfigServer(c) => {
            let scope = scope::Scope::find(c.rete.as_deref()).map_err(|e| e.to_string())?;
            config_server::run(scope, c.read_listen, c.publish_listen, c.store)
                .map(|()| true)
                .map_err(|e| e.to_string())
        }
        #[cfg(feature = "mgmt")]
        Cmd::MetricsServer(c) => {
            let scope = scope::Scope::find(c.rete.as_deref()).map_err(|e| e.to_string())?;
            metrics_server::run(scope, c.push_listen, c.read_listen)
                .map(|()| true)
                .map_err(|e| e.to_string())
        }
        #[cfg(not(feature = "mgmt"))]
        Cmd::ConfigServer(_) | Cmd::MetricsServer(_) => Err(NO_MGMT.to_owned()),
    }
}

/// The scope a long-running process serves, as its command line names it:
/// what its lines in the shared system log are tagged with.
fn serving_scope(cmd: &Cmd) -> Option<&str> {
    match cmd {
        Cmd::Agent(AgentCmd {
            cmd: AgentSub::Run(r),
        }) => r.rete.as_deref(),
        Cmd::Vertex(v) => v.rete(),
        Cmd::ConfigServer(c) => c.rete.as_deref(),
        Cmd::MetricsServer(c) => c.rete.as_deref(),
        _ => None,
    }
}

fn main() {
    let flor: Flor = argh::from_env();
    let mut log_file = None;
    if let Some(Cmd::Service(ServiceCmd {
        cmd: ServiceSub::Run(ServiceRun { log: Some(path) }),
    })) = &flor.cmd
    {
        if let Some(dir) = path.parent() {
            // The service may start before anything created its folder.
            let _ = std::fs::create_dir_all(dir);
        }
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            Ok(f) => log_file = Some(f),
            Err(e) => {
                eprintln!("flor: --log {}: {e}", path.display());
                std::process::exit(1);
            }
        }
    }
    let agent_pipe = matches!(&flor.cmd, Some(Cmd::Vertex(v)) if v.agent_pipe());
    logging::init(
        log_file,
        agent_pipe,
        flor.cmd.as_ref().and_then(serving_scope),
    );
    let Some(cmd) = flor.cmd else {
        if flor.version {
            println!("flor {}", env!("CARGO_PKG_VERSION"));
            return;
        }
        // Bare `flor`: its help, as `flor --help` prints it, on standard error
        // with exit status 2 — what retectl (clap) does too. Nothing was done,
        // so a script running `flor $cmd` with an empty $cmd fails loudly.
        if let Err(help) = Flor::from_args(&["flor"], &["--help"]) {
            eprint!("{}", help.output);
        }
        std::process::exit(2);
    };
    if flor.version {
        println!("flor {}", env!("CARGO_PKG_VERSION"));
        return;
    }
    match run(cmd) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("flor: {e}");
            std::process::exit(1);
        }
    }
}
