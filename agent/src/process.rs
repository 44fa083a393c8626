//! Child processes and stop signals, for the agent (its vertex) and
//! `flor service run` (its agents): the one place that knows which binary a
//! child runs and how a child is asked to stop.

use std::fmt;
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

/// Why a flor process cannot watch for its stop signals.
#[derive(Debug)]
#[non_exhaustive]
pub enum ProcessError {
    /// The SIGTERM/SIGINT handlers could not be installed.
    Signals(std::io::Error),
}

impl fmt::Display for ProcessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProcessError::Signals(e) => write!(f, "installing signal handlers: {e}"),
        }
    }
}

impl std::error::Error for ProcessError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ProcessError::Signals(e) => Some(e),
        }
    }
}

/// The binary children are started from: the one this process runs.
///
/// On Linux that is `/proc/self/exe`, which names the running executable even
/// after a package upgrade renamed a new file over its path (the old path then
/// reads "(deleted)" and cannot be started, but `/proc/self/exe` still can).
/// So a replaced binary never stops a node from restarting its vertex; the
/// new binary takes over when the service restarts the agent (docs/install.md).
pub fn self_exe() -> std::io::Result<PathBuf> {
    #[cfg(target_os = "linux")]
    {
        let p = PathBuf::from("/proc/self/exe");
        if p.exists() {
            return Ok(p);
        }
    }
    std::env::current_exe()
}

/// The signals that ask a flor process to stop cleanly: SIGTERM (service
/// managers) and SIGINT (Ctrl-C); Windows delivers only the latter.
pub fn stop_signals() -> Result<async_signal::Signals, ProcessError> {
    #[cfg(unix)]
    let wanted = [async_signal::Signal::Term, async_signal::Signal::Int];
    #[cfg(not(unix))]
    let wanted = [async_signal::Signal::Int];
    async_signal::Signals::new(wanted).map_err(ProcessError::Signals)
}

/// Asks a child to stop (SIGTERM on Unix), waits up to `grace` for it, then
/// kills it. Windows has no such signal: the child is ended at once.
/// Returns whether the child stopped by itself.
pub fn terminate(c: &mut Child, grace: Duration) -> bool {
    #[cfg(unix)]
    {
        if let Some(pid) = i32::try_from(c.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if !matches!(c.try_wait(), Ok(None)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    #[cfg(not(unix))]
    let _ = (grace, Instant::now());
    let _ = c.kill();
    let _ = c.wait();
    false
}

/// Raises this process's soft open-file limit to `want`, or to the hard limit
/// when that is lower (an unprivileged process may go up to it, no further);
/// a warning names what the node then cannot do. Unix only: Windows has no
/// such per-process descriptor limit for sockets.
pub fn raise_open_files(want: u64) {
    #[cfg(unix)]
    {
        use rustix::process::{getrlimit, setrlimit, Resource};
        let mut l = getrlimit(Resource::Nofile);
        let Some(soft) = l.current else {
            return; // unlimited
        };
        if soft >= want {
            return;
        }
        let new = l.maximum.map_or(want, |hard| hard.min(want));
        if new > soft {
            l.current = Some(new);
            if let Err(e) = setrlimit(Resource::Nofile, l) {
                log::warn!("cannot raise the open-file limit from {soft} to {new}: {e}");
                return;
            }
        }
        if new < want {
            log::warn!(
                "open-file limit is {new} (hard limit), below the {want} a vertex at full load \
                 holds: expect \"too many open files\" before MAX_FLOWS; raise LimitNOFILE / \
                 ulimit -Hn"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = want;
}
