//! `flor service run`: one agent for every enrolled scope, under one service.
//!
//! A service manager that starts one process per machine — the Windows
//! service manager, which the MSI registers `Florete` with before any rete is
//! enrolled — needs one process that finds the scopes itself. Every [`SCAN`]
//! this supervisor starts `flor agent run --rete <scope>` for each enrolled
//! scope that has no agent, restarts an agent that exited after a growing
//! pause ([`restart_delay`]), stops the agent of a scope that was removed,
//! and on stop ends them all (each agent stops its own vertex). Each agent's
//! output goes to the system log where the service's does (systemd, procd),
//! else to `<install>/agent.log`, kept under [`MAX_AGENT_LOG`].
//!
//! systemd (the `flor` unit) and procd (`/etc/init.d/flor`) run it too, so a
//! host has one service whatever it enrolls (packaging/). While it runs it
//! holds `<home>/service.lock` ([`SERVICE_LOCK`]): `flor enroll` reads from it
//! that a new scope will be started, and a second service for the same home
//! refuses to run. Agents are started from the running binary ([`crate::process::self_exe`]),
//! so a binary replaced by an upgrade never stops this supervisor.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::core::settle::Init;
use crate::process::ProcessError;
use crate::scope::{base_dir, scopes_dir, Scope};

/// How often the enrolled scopes are looked for and agents checked: a new
/// enrollment starts its agent within this time.
pub const SCAN: Duration = Duration::from_secs(2);
/// Longest pause before restarting an agent that keeps failing.
const MAX_RESTART_DELAY: Duration = Duration::from_secs(60);
/// An agent that ran this long counts as healthy again: its next failure restarts quickly.
const STABLE_AFTER: Duration = Duration::from_secs(60);
/// How long a stopped agent gets to stop its vertex before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Size at which `agent.log` is moved to `agent.log.1` (one old file kept):
/// a router's flash must not fill with logs.
pub const MAX_AGENT_LOG: u64 = 1024 * 1024;
/// The agent's log file in each install root.
pub const AGENT_LOG: &str = "agent.log";

/// The file in the flor home a running service holds an exclusive lock on.
/// The kernel drops the lock with the process, so a crashed service never
/// leaves a stale claim behind (unlike a pid file).
pub const SERVICE_LOCK: &str = "service.lock";

/// Why `flor service run` could not run or stopped with an error.
#[derive(Debug)]
#[non_exhaustive]
pub enum ServiceError {
    /// The running binary, which agents are started from, cannot be found.
    Exe(std::io::Error),
    /// The service lock file (or its home) could not be created or locked.
    Lock(PathBuf, std::io::Error),
    /// Another service holds the lock of this flor home.
    AlreadyRunning {
        /// The flor home.
        home: PathBuf,
        /// Its lock file.
        lock: PathBuf,
    },
    /// The stop signals cannot be watched.
    Process(ProcessError),
    /// The Windows service dispatcher could not start.
    #[cfg(windows)]
    Dispatcher(windows_service::Error),
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceError::Exe(e) => write!(f, "cannot find the flor binary: {e}"),
            ServiceError::Lock(p, e) => write!(f, "{}: {e}", p.display()),
            ServiceError::AlreadyRunning { home, lock } => write!(
                f,
                "another flor service already runs for {} (it holds {}); stop it first",
                home.display(),
                lock.display()
            ),
            ServiceError::Process(e) => write!(f, "{e}"),
            #[cfg(windows)]
            ServiceError::Dispatcher(e) => write!(f, "starting the service dispatcher: {e}"),
        }
    }
}

impl std::error::Error for ServiceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ServiceError::Exe(e) | ServiceError::Lock(_, e) => Some(e),
            ServiceError::AlreadyRunning { .. } => None,
            ServiceError::Process(e) => Some(e),
            #[cfg(windows)]
            ServiceError::Dispatcher(e) => Some(e),
        }
    }
}

impl From<ProcessError> for ServiceError {
    fn from(e: ProcessError) -> Self {
        ServiceError::Process(e)
    }
}

/// Takes `<home>/service.lock`; the lock lasts as long as the returned file.
fn take_lock(home: &Path) -> Result<fs::File, ServiceError> {
    let path = home.join(SERVICE_LOCK);
    let fail = |e: std::io::Error| ServiceError::Lock(path.clone(), e);
    // The service may start before anything created its home (a fresh install).
    fs::create_dir_all(home).map_err(fail)?;
    let f = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(fail)?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(fs::TryLockError::WouldBlock) => Err(ServiceError::AlreadyRunning {
            home: home.to_path_buf(),
            lock: path,
        }),
        Err(fs::TryLockError::Error(e)) => Err(fail(e)),
    }
}

/// Whether a `flor service run` runs for the flor home `home` (holds its lock).
pub fn service_running(home: &Path) -> bool {
    let Ok(f) = fs::File::open(home.join(SERVICE_LOCK)) else {
        return false;
    };
    matches!(f.try_lock_shared(), Err(fs::TryLockError::WouldBlock))
}

/// The command that starts the service for the flor home `home` on this host.
pub fn start_hint(home: &Path) -> &'static str {
    let system = cfg!(windows) || home == Path::new(flor_vertex::contract::SYSTEM_HOME);
    crate::core::settle::start_hint(init_system(), system)
}

/// The service manager of this host, from the files each one leaves.
fn init_system() -> Init {
    if cfg!(windows) {
        Init::Windows
    } else if Path::new("/run/systemd/system").is_dir() {
        Init::Systemd
    } else if Path::new("/etc/rc.common").is_file() {
        Init::Procd
    } else {
        Init::Other
    }
}

/// The pause before restarting an agent that failed `failures` times in a row (1, 2, 4 … 60 s).
pub fn restart_delay(failures: u32) -> Duration {
    let secs = 1u64 << failures.saturating_sub(1).min(6);
    Duration::from_secs(secs).min(MAX_RESTART_DELAY)
}

/// One scope's agent process and its restart state.
struct Supervised {
    scope: String,
    child: Option<Child>,
    started: Instant,
    failures: u32,
    next_start: Instant,
}

impl Supervised {
    fn new(scope: String, now: Instant) -> Supervised {
        Supervised {
            scope,
            child: None,
            started: now,
            failures: 0,
            next_start: now,
        }
    }

    /// Notices an exit and (re)starts the agent when its pause is over.
    fn tick(&mut self, exe: &Path, scope: &Scope, now: Instant) {
        if let Some(c) = &mut self.child {
            match c.try_wait() {
                Ok(None) => return,
                Ok(Some(status)) => {
                    if now.duration_since(self.started) >= STABLE_AFTER {
                        self.failures = 0;
                    }
                    self.failures += 1;
                    let delay = restart_delay(self.failures);
                    log::warn!(
                        "agent for {} exited ({status}); restarting in {} s (see {})",
                        scope.name,
                        delay.as_secs(),
                        scope.install.join(AGENT_LOG).display()
                    );
                    self.child = None;
                    self.next_start = now + delay;
                }
                Err(e) => {
                    log::warn!("agent for {}: {e}", scope.name);
                    return;
                }
            }
        }
        if now < self.next_start {
            return;
        }
        match spawn_agent(exe, scope) {
            Ok(c) => {
                log::info!("started the agent for {} (pid {})", scope.name, c.id());
                self.child = Some(c);
                self.started = now;
            }
            Err(e) => {
                self.failures += 1;
                self.next_start = now + restart_delay(self.failures);
                log::error!("cannot start the agent for {}: {e}", scope.name);
            }
        }
    }
}

/// Opens `<install>/agent.log` for appending, moving a full one aside first.
fn agent_log(scope: &Scope) -> std::io::Result<fs::File> {
    let path = scope.install.join(AGENT_LOG);
    if fs::metadata(&path).is_ok_and(|m| m.len() >= MAX_AGENT_LOG) {
        let mut old = path.clone().into_os_string();
        old.push(".1");
        fs::rename(&path, PathBuf::from(old))?;
    }
    fs::OpenOptions::new().create(true).append(true).open(path)
}

/// Starts a scope's agent. Under systemd and procd it writes to the service's
/// own streams, so its lines are in the system log (`journalctl -u flor`,
/// `logread -e flor`) and a router's flash is not written; elsewhere (a
/// terminal, the Windows service) to `<install>/agent.log`.
fn spawn_agent(exe: &Path, scope: &Scope) -> std::io::Result<Child> {
    let mut cmd = Command::new(exe);
    cmd.args(["agent", "run", "--rete", &scope.name])
        .stdin(Stdio::null());
    if !crate::logging::streams_are_system_log() {
        let log = agent_log(scope)?;
        cmd.stdout(log.try_clone()?).stderr(log);
    }
    cmd.spawn()
}

/// Asks every agent to stop, waits for them, kills the ones that do not.
fn stop_all(agents: &mut [Supervised]) {
    let mut children: Vec<(String, Child)> = agents
        .iter_mut()
        .filter_map(|s| Some((s.scope.clone(), s.child.take()?)))
        .collect();
    for (_, c) in &mut children {
        ask_to_stop(c);
    }
    let deadline = Instant::now() + STOP_GRACE;
    for (name, mut c) in children {
        while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        if matches!(c.try_wait(), Ok(None)) {
            log::warn!("agent for {name} did not stop in time; killing it");
            let _ = c.kill();
        }
        let _ = c.wait();
        log::info!("stopped the agent for {name}");
    }
}

/// SIGTERM on Unix (the agent stops its vertex); Windows has no such signal, so
/// the agent is ended and its job object ends its vertex.
fn ask_to_stop(c: &mut Child) {
    #[cfg(unix)]
    if let Some(pid) = i32::try_from(c.id())
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    #[cfg(not(unix))]
    let _ = c.kill();
}

/// Supervises one agent per enrolled scope until `stop_within(SCAN)` says a stop was asked for.
///
/// `stop_within(d)` waits at most `d` and returns whether the service must stop.
pub fn supervise(mut stop_within: impl FnMut(Duration) -> bool) -> Result<(), ServiceError> {
    #[cfg(windows)]
    crate::windows::kill_children_with_me();
    let exe = crate::process::self_exe().map_err(ServiceError::Exe)?;
    let _lock = take_lock(&base_dir())?;
    log::info!(
        "service: running an agent for every rete enrolled under {}",
        scopes_dir().display()
    );
    let mut agents: Vec<Supervised> = Vec::new();
    loop {
        let now = Instant::now();
        let enrolled = Scope::enrolled();
        let (mut kept, mut removed): (Vec<_>, Vec<_>) = agents
            .into_iter()
            .partition(|s| enrolled.contains(&s.scope));
        for s in &removed {
            log::info!(
                "scope {} is no longer enrolled; stopping its agent",
                s.scope
            );
        }
        stop_all(&mut removed);
        for name in enrolled {
            let scope = match Scope::named(&name) {
                Ok(scope) => scope,
                Err(e) => {
                    log::warn!("skipping {name}: {e}");
                    continue;
                }
            };
            let i = match kept.iter().position(|s| s.scope == name) {
                Some(i) => i,
                None => {
                    kept.push(Supervised::new(name, now));
                    kept.len() - 1
                }
            };
            kept[i].tick(&exe, &scope, now);
        }
        agents = kept;
        if stop_within(SCAN) {
            break;
        }
    }
    log::info!("service stopping");
    stop_all(&mut agents);
    Ok(())
}

/// The Windows service entry point: `flor service run` started by the service
/// control manager reports to it through `windows-service`. Its
/// `define_windows_service!` expands to the FFI shim the service manager
/// calls, which is `unsafe` inside the macro; nothing here writes `unsafe`.
#[cfg(windows)]
#[allow(unsafe_code)]
mod win {
    /// The service's registered name (the MSI's ServiceInstall Name).
    pub const SERVICE_NAME: &str = "Florete";

    windows_service::define_windows_service!(ffi_service_main, service_main);

    /// Runs `flor service run` under the service control manager.
    ///
    /// `Ok(false)`: this process was not started by the service manager (a person
    /// ran it in a console), so the caller runs in the foreground instead.
    pub fn run_as_service() -> Result<bool, super::ServiceError> {
        match windows_service::service_dispatcher::start(SERVICE_NAME, ffi_service_main) {
            Ok(()) => Ok(true),
            // ERROR_FAILED_SERVICE_CONTROLLER_CONNECT: not started as a service.
            Err(windows_service::Error::Winapi(e)) if e.raw_os_error() == Some(1063) => Ok(false),
            Err(e) => Err(super::ServiceError::Dispatcher(e)),
        }
    }

    fn service_main(_args: Vec<std::ffi::OsString>) {
        use windows_service::service::{
            ServiceControl, ServiceControlAccept, ServiceExitCode, ServiceState, ServiceStatus,
            ServiceType,
        };
        use windows_service::service_control_handler::{self, ServiceControlHandlerResult};

        let (stop_tx, stop_rx) = smol::channel::bounded::<()>(1);
        let handler = move |event| match event {
            ServiceControl::Stop | ServiceControl::Shutdown => {
                let _ = stop_tx.try_send(());
                ServiceControlHandlerResult::NoError
            }
            ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
            _ => ServiceControlHandlerResult::NotImplemented,
        };
        let status = match service_control_handler::register(SERVICE_NAME, handler) {
            Ok(s) => s,
            Err(e) => {
                log::error!("registering the service control handler: {e}");
                return;
            }
        };
        let report = |state, exit: u32| {
            let _ = status.set_service_status(ServiceStatus {
                service_type: ServiceType::OWN_PROCESS,
                current_state: state,
                controls_accepted: if state == ServiceState::Running {
                    ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN
                } else {
                    ServiceControlAccept::empty()
                },
                exit_code: ServiceExitCode::Win32(exit),
                checkpoint: 0,
                wait_hint: std::time::Duration::from_secs(10),
                process_id: None,
            });
        };
        report(ServiceState::Running, 0);
        let result = super::supervise(|wait| {
            smol::block_on(smol::future::or(
                async {
                    // A stop, or the handler gone (then nothing can stop us later).
                    let _ = stop_rx.recv().await;
                    true
                },
                super::timeout(wait),
            ))
        });
        if let Err(e) = &result {
            log::error!("{e}");
        }
        // ERROR_SERVICE_SPECIFIC_ERROR-style code 1 tells the manager it failed.
        report(ServiceState::Stopped, u32::from(result.is_err()));
    }
}

/// `flor service run`: as a Windows service when the service manager started
/// it, else in the foreground until SIGTERM or Ctrl-C.
pub fn run() -> Result<(), ServiceError> {
    #[cfg(windows)]
    if win::run_as_service()? {
        return Ok(());
    }
    let mut signals = crate::process::stop_signals()?;
    supervise(|wait| {
        use smol::stream::StreamExt;
        // Short sleeps and a look at the signal stream, not a reactor timer: under
        // qemu-user (how CI runs the MIPS router build) a smol timer in this loop
        // never fired, so a scope enrolled after the first scan was never started.
        let deadline = Instant::now() + wait;
        loop {
            if smol::block_on(smol::future::poll_once(signals.next())).is_some() {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            std::thread::sleep(STOP_POLL.min(deadline - now));
        }
    })
}

/// How often `flor service run` looks for SIGTERM while it waits for the next scan.
const STOP_POLL: Duration = Duration::from_millis(200);

/// Resolves to `false` after `d`: the "no stop asked for" side of a wait.
#[cfg(windows)]
pub async fn timeout(d: Duration) -> bool {
    smol::Timer::after(d).await;
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_lock_is_held_by_one_service_and_seen_by_others() {
        let home = std::env::temp_dir().join(format!("flor-service-lock-{}", std::process::id()));
        let _ = fs::remove_dir_all(&home);
        assert!(!service_running(&home), "no lock file: no service");
        let held = take_lock(&home).unwrap();
        assert!(service_running(&home));
        let second = take_lock(&home)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            second.contains("another flor service already runs for"),
            "{second}"
        );
        drop(held);
        assert!(!service_running(&home), "the lock goes with its holder");
        fs::remove_dir_all(&home).unwrap();
    }

    #[test]
    fn restarts_back_off_to_a_minute() {
        let secs: Vec<u64> = (1..=9).map(|f| restart_delay(f).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(restart_delay(u32::MAX), MAX_RESTART_DELAY);
    }
}
