//! The identity side-channel's shell: the table's entries as flows open and
//! end, and one Unix socket per published service where its upstream asks
//! who is on a connection ([`crate::callers`] has the lines and the table).
//!
//! ```text
//! serve.rs: upstream TCP connected -> record(local, peer -> caller, service, now)
//!           flow ends (any path)   -> entry dropped
//! <runtime>/callers/<vertex>/<service>.sock  (mode 0600, or 0660 with a group)
//!           "127.0.0.1:P 127.0.0.1:Q\n" -> "spiffe://... spiffe://... <start>\n" | "unknown\n"
//! ```
//!
//! Who may ask is decided by the socket file's owner, group and mode, set
//! from the artifact's `caller_socket` (docs/wire.md). Windows has no Unix
//! sockets in Rust's std: there the vertex serves no side-channel.

use std::sync::{Arc, Mutex, MutexGuard};

use crate::callers::{CallerTable, Entry, Request};
use crate::counters;
use crate::identity::SpiffeId;

/// The table, shared by the serving side and the sockets.
#[cfg(unix)]
pub(crate) type Table = Arc<Mutex<CallerTable>>;

fn lock(t: &Mutex<CallerTable>) -> MutexGuard<'_, CallerTable> {
    // A holder cannot panic mid-update (map insert/remove), so a poisoned
    // lock still guards a whole table.
    t.lock().unwrap_or_else(|p| p.into_inner())
}

/// A served flow's entry; removed from the table when dropped, on every exit path.
pub(crate) struct Recorded<'a> {
    table: &'a Mutex<CallerTable>,
    key: Request,
}

impl Drop for Recorded<'_> {
    fn drop(&mut self) {
        lock(self.table).remove(&self.key);
    }
}

/// Records the upstream connection `tcp` as `caller`'s flow to `service`.
/// `None` (logged, counted) when the table is full or the socket has no
/// addresses: the flow is served all the same, its upstream hears `unknown`.
pub(crate) fn record<'a>(
    table: &'a Mutex<CallerTable>,
    tcp: &smol::net::TcpStream,
    caller: &Arc<SpiffeId>,
    service: &Arc<SpiffeId>,
) -> Option<Recorded<'a>> {
    // As the upstream sees it: its peer is our local end.
    let key = Request {
        peer: tcp.local_addr().ok()?,
        local: tcp.peer_addr().ok()?,
    };
    let start_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let entry = Entry {
        caller: Arc::clone(caller),
        service: Arc::clone(service),
        start_s,
    };
    if lock(table).insert(key, entry).is_err() {
        counters::CALLERS.table_full.inc();
        log::warn!(
            "flow {caller} -> {service}: caller table full (MAX_CALLER_ENTRIES {}); served, but its upstream will hear \"unknown\"",
            crate::limits::MAX_CALLER_ENTRIES
        );
        return None;
    }
    Some(Recorded { table, key })
}

/// The sockets of one vertex: removed when dropped (the vertex stops), so
/// an asker finds no socket rather than a dead one. Empty on Windows.
#[derive(Debug, Default)]
pub(crate) struct SideChannel {
    /// Bound socket files.
    pub(crate) paths: Vec<std::path::PathBuf>,
    /// Side-channel connections being served, all services together.
    #[cfg_attr(not(unix), allow(dead_code))]
    pub(crate) active: Arc<std::sync::atomic::AtomicUsize>,
}

impl Drop for SideChannel {
    fn drop(&mut self) {
        for p in &self.paths {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Why the identity side-channel of a service could not be set up.
#[cfg(unix)]
#[derive(Debug)]
#[non_exhaustive]
pub(crate) enum SideChannelError {
    /// The artifact's `caller_socket` names a user or group this host does not have.
    NoAccount {
        /// The account database looked in (`/etc/passwd`, `/etc/group`).
        db: &'static str,
        /// The name asked for.
        name: String,
    },
    /// The socket (or its directory) could not be created.
    Io(std::path::PathBuf, std::io::Error),
    /// The socket could not be given its owner, group and mode.
    Secure {
        /// The socket file (removed again).
        path: std::path::PathBuf,
        /// The owner asked for.
        uid: Option<u32>,
        /// The group asked for.
        gid: Option<u32>,
        /// The mode asked for.
        mode: u32,
        /// Why it failed.
        source: std::io::Error,
    },
}

#[cfg(unix)]
impl core::fmt::Display for SideChannelError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SideChannelError::NoAccount { db, name } => write!(f, "no account {name:?} in {db}"),
            SideChannelError::Io(p, e) => write!(f, "{}: {e}", p.display()),
            SideChannelError::Secure {
                path,
                uid,
                gid,
                mode,
                source,
            } => write!(
                f,
                "{}: cannot give it owner {uid:?} group {gid:?} mode {mode:o}: {source}",
                path.display()
            ),
        }
    }
}

#[cfg(unix)]
impl std::error::Error for SideChannelError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SideChannelError::NoAccount { .. } => None,
            SideChannelError::Io(_, e) | SideChannelError::Secure { source: e, .. } => Some(e),
        }
    }
}

#[cfg(unix)]
pub(crate) use unix::{bind, serve_socket};

#[cfg(unix)]
mod unix {
    use std::io::Read as _;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::time::Duration;

    use smol::io::{AsyncReadExt, AsyncWriteExt};
    use smol::net::unix::{UnixListener, UnixStream};

    use super::{lock, SideChannelError, Table};
    use crate::artifact::CallerSocket;
    use crate::callers::{account_id, error_line, Answer, Request, MAX_REQUEST_LINE};
    use crate::counters;
    use crate::identity::SpiffeId;
    use crate::limits::{CALLER_LOOKUP_IDLE_S, MAX_CALLER_LOOKUPS};
    use crate::net::take_slot;

    /// Largest `/etc/passwd` or `/etc/group` read to resolve an account name.
    const MAX_ACCOUNT_DB: u64 = 1024 * 1024;

    fn id_of(db: &'static str, name: &str) -> Result<u32, SideChannelError> {
        let text = std::fs::File::open(db)
            .and_then(|f| {
                let mut s = String::new();
                f.take(MAX_ACCOUNT_DB).read_to_string(&mut s).map(|_| s)
            })
            .unwrap_or_default();
        account_id(&text, name).ok_or_else(|| SideChannelError::NoAccount {
            db,
            name: name.to_owned(),
        })
    }

    /// Binds `path` for the side-channel of one service, owned as `owner`
    /// says: mode 0600 (0660 with a group), chowned to the named user/group.
    /// Parent directories are made traversable (0755) so the service's
    /// account can reach the socket; the socket itself is what is guarded.
    pub(crate) fn bind(
        path: &Path,
        owner: Option<&CallerSocket>,
    ) -> Result<UnixListener, SideChannelError> {
        let fail = |e: std::io::Error| SideChannelError::Io(path.to_path_buf(), e);
        let uid = match owner.and_then(|o| o.user.as_ref()) {
            Some(u) => Some(id_of("/etc/passwd", u.as_str())?),
            None => None,
        };
        let gid = match owner.and_then(|o| o.group.as_ref()) {
            Some(g) => Some(id_of("/etc/group", g.as_str())?),
            None => None,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(fail)?;
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
        }
        // A file left by a killed vertex: nobody listens on it any more.
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).map_err(fail)?;
        // Connecting needs write permission on the socket, which the usual
        // umask (022) already withholds from others until this narrows it.
        let mode = if gid.is_some() { 0o660 } else { 0o600 };
        let secured = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .and_then(|()| {
                if uid.is_some() || gid.is_some() {
                    std::os::unix::fs::chown(path, uid, gid)
                } else {
                    Ok(())
                }
            });
        if let Err(e) = secured {
            let _ = std::fs::remove_file(path);
            return Err(SideChannelError::Secure {
                path: path.to_path_buf(),
                uid,
                gid,
                mode,
                source: e,
            });
        }
        Ok(listener)
    }

    /// Answers the side-channel of `service` on `listener` until the vertex stops.
    pub(crate) async fn serve_socket(
        listener: UnixListener,
        service: Arc<SpiffeId>,
        table: Table,
        active: Arc<AtomicUsize>,
    ) {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                smol::Timer::after(Duration::from_millis(100)).await;
                continue;
            };
            let (service, table, active) = (
                Arc::clone(&service),
                Arc::clone(&table),
                Arc::clone(&active),
            );
            crate::net::exec::spawn(async move {
                let Some(_slot) = take_slot(&active, MAX_CALLER_LOOKUPS) else {
                    log::warn!("side-channel of {service}: at MAX_CALLER_LOOKUPS ({MAX_CALLER_LOOKUPS}); closed one");
                    return;
                };
                let _ = answer(stream, &service, &table).await;
            })
            .detach();
        }
    }

    /// One asker: a line in, a line out, until it closes, falls silent for
    /// [`CALLER_LOOKUP_IDLE_S`], or sends a line that is not a question.
    async fn answer(mut s: UnixStream, service: &SpiffeId, table: &Table) -> std::io::Result<()> {
        let mut buf = [0u8; MAX_REQUEST_LINE];
        let mut filled = 0;
        loop {
            if let Some(nl) = buf[..filled].iter().position(|&b| b == b'\n') {
                let (reply, ok) = match Request::parse(&buf[..=nl]) {
                    Ok(req) => {
                        let a = Answer::of(&lock(table), &req, service);
                        counters::CALLERS.asked(matches!(a, Answer::Known { .. }));
                        (a.to_line(), true)
                    }
                    Err(e) => (error_line(e), false),
                };
                s.write_all(reply.as_bytes()).await?;
                if !ok {
                    return Ok(());
                }
                buf.copy_within(nl + 1..filled, 0);
                filled -= nl + 1;
                continue;
            }
            if filled == buf.len() {
                let e = error_line(crate::callers::RequestError::TooLong);
                return s.write_all(e.as_bytes()).await;
            }
            let read = s.read(&mut buf[filled..]);
            let idle = async {
                smol::Timer::after(Duration::from_secs(CALLER_LOOKUP_IDLE_S)).await;
                Ok(0)
            };
            match smol::future::or(read, idle).await? {
                0 => return Ok(()),
                n => filled += n,
            }
        }
    }
}
