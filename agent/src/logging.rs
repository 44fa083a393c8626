//! Log lines as each platform's log collector wants them.
//!
//! `RUST_LOG` filters as env_logger does (default `info`). Where the lines go
//! and how they look depends on who reads them:
//!
//! ```text
//! systemd (JOURNAL_STREAM names  stderr  "<4>flor::agent: msg"   the journal reads <N> as the
//!  our stderr)
//!                                                                priority (journalctl -p warning)
//!                                                                and adds its own timestamp
//! procd (FLOR_LOG=procd, set by  stdout  info and below          logd files stdout as info and
//!  the init script)              stderr  warnings and errors     stderr as err; it adds the time
//! anything else (a terminal,     stderr  "2026-11-27T15:08:22Z WARN flor::agent: msg"
//!  a file, the Windows service)
//! ```
//!
//! In the journal and under procd every scope's agent, vertex and roles
//! write to the one system log, so there each line names its scope after the
//! priority (`<4>demo.flor flor::agent: msg`) when the process was started
//! for one (`--rete`); a log file belongs to one scope already.
//!
//! A vertex under procd shares its standard output with the agent as the
//! apply pipe, so it writes info lines there behind [`PIPED_LOG`], and the
//! agent passes them on to its own standard output unchanged.
//!
//! The format is a closure over env_logger's filter, not its formatting
//! features (humantime, colours, regex), which cost flash on a router.

use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use flor_vertex::validity::Utc;
use log::Level;

/// Set by the OpenWrt init script (packaging/openwrt/files/flor.init).
pub const PROCD_ENV: (&str, &str) = ("FLOR_LOG", "procd");
/// How a vertex's log line on the apply pipe starts (procd only).
pub const PIPED_LOG: &str = "log: ";

/// Where log lines go and how they look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Style {
    /// Priority prefix, no timestamp: the journal adds one.
    Journal,
    /// Info on stdout, warnings on stderr; `piped`: stdout is the apply pipe.
    Procd { piped: bool },
    /// A timestamp in front of every line.
    Plain,
}

/// syslog(3) priority of a level, as sd-daemon(3) prefixes read it.
fn priority(l: Level) -> u8 {
    match l {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

fn style(agent_pipe: bool) -> Style {
    if std::env::var_os(PROCD_ENV.0).is_some_and(|v| v == PROCD_ENV.1) {
        Style::Procd { piped: agent_pipe }
    } else if stderr_is_journal() {
        Style::Journal
    } else {
        Style::Plain
    }
}

/// Whether standard error is the journal stream systemd set up: it names
/// that stream as `JOURNAL_STREAM=<dev>:<inode>` (systemd.exec(5)). The
/// variable is inherited by everything a service starts, a terminal
/// included, so on Linux the stream must also be our stderr.
fn stderr_is_journal() -> bool {
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::MetadataExt as _;
        let named = v.to_str().and_then(|v| {
            let (dev, ino) = v.split_once(':')?;
            Some((dev.parse::<u64>().ok()?, ino.parse::<u64>().ok()?))
        });
        match (named, std::fs::metadata("/proc/self/fd/2")) {
            (Some((dev, ino)), Ok(m)) => m.dev() == dev && m.ino() == ino,
            _ => false,
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = v;
        true
    }
}

/// Whether this process's standard streams go to the system log (the journal
/// under systemd, logd under procd), which a child writing to them reaches too.
pub fn streams_are_system_log() -> bool {
    matches!(style(false), Style::Journal | Style::Procd { .. })
}

/// Installs the logger. `file`: append there instead of standard error;
/// `agent_pipe`: this process is a vertex whose standard output is the agent's pipe;
/// `scope`: the rete scope this process serves, named on system-log lines.
pub fn init(file: Option<std::fs::File>, agent_pipe: bool, scope: Option<&str>) {
    let scope = scope.map(|s| format!("{s} ")).unwrap_or_default();
    let mut b = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    // A log file always gets timestamps, whoever started the process.
    let style = if file.is_some() {
        Style::Plain
    } else {
        style(agent_pipe)
    };
    if let Some(f) = file {
        b.target(env_logger::Target::Pipe(Box::new(f)));
    }
    b.format(move |buf, r| match style {
        Style::Journal => writeln!(
            buf,
            "<{}>{scope}{}: {}",
            priority(r.level()),
            r.target(),
            r.args()
        ),
        Style::Procd { piped } if r.level() > Level::Warn => {
            // Written here, not to env_logger's target (stderr); `buf` stays empty.
            let prefix = if piped { PIPED_LOG } else { "" };
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{prefix}{scope}{}: {}", r.target(), r.args())
                .and_then(|()| out.flush());
            Ok(())
        }
        Style::Procd { .. } => writeln!(buf, "{} {scope}{}: {}", r.level(), r.target(), r.args()),
        Style::Plain => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            writeln!(
                buf,
                "{} {} {}: {}",
                Utc(i64::try_from(now).unwrap_or(i64::MAX)),
                r.level(),
                r.target(),
                r.args()
            )
        }
    });
    b.init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_priorities_match_syslog() {
        // journalctl -p warning shows 0..=4: errors and warnings, not info.
        assert_eq!(priority(Level::Error), 3);
        assert_eq!(priority(Level::Warn), 4);
        assert!(priority(Level::Info) > 4);
        assert!(priority(Level::Debug) > 4);
    }
}
