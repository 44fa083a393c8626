//! SOCKS5 listeners: each bound to one caller identity (port -> identity), each
//! CONNECT resolved to a Dialable service and carried over a warm connection.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use smol::future;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::{TcpListener, TcpStream};
use smol::Timer;

use super::dial::{DialError, Dialer};
use super::forward::pump;
use super::tls::Credentials;
use crate::acl::Swap;
use crate::identity::{resolve, SpiffeId, TrustDomain};
use crate::limits::{HANDSHAKE_TIMEOUT_S, MAX_FLOWS};
use crate::socks5::{self, Destination, Reply, MAX_MESSAGE};

/// Service -> UDP address of the vertex hosting it.
pub type RouteTable = HashMap<SpiffeId, SocketAddr>;

/// What every SOCKS5 listener of a vertex shares.
#[derive(Debug)]
pub struct SocksCtx {
    /// This rete: the context `.rete` names are resolved in.
    pub td: TrustDomain,
    /// Opens flows.
    pub dialer: Arc<Dialer>,
    /// Service -> UDP address of the vertex hosting it; swapped whole by a hot reload.
    pub routes: Arc<Swap<RouteTable>>,
    /// Idle timeout of a flow.
    pub idle: Duration,
    /// Flows being forwarded from all listeners.
    pub flows: AtomicUsize,
}

/// Binds `ip:preferred` if it is free, else any free port on `ip`. Returns
/// the listener and whether the preferred port was taken.
pub fn bind_preferred(ip: IpAddr, preferred: u16) -> io::Result<(TcpListener, bool)> {
    match std::net::TcpListener::bind((ip, preferred)) {
        Ok(l) => Ok((TcpListener::try_from(l)?, false)),
        Err(e)
            if e.kind() == io::ErrorKind::AddrInUse
                || e.kind() == io::ErrorKind::PermissionDenied =>
        {
            let l = std::net::TcpListener::bind((ip, 0))?;
            Ok((TcpListener::try_from(l)?, true))
        }
        Err(e) => Err(e),
    }
}

/// Serves SOCKS5 on `listener`, every flow as `caller`.
pub async fn serve_socks(listener: TcpListener, caller: Arc<Credentials>, ctx: Arc<SocksCtx>) {
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                log::warn!("SOCKS5 accept for {}: {e}", caller.id);
                Timer::after(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (caller, ctx) = (Arc::clone(&caller), Arc::clone(&ctx));
        smol::spawn(async move { session(tcp, &caller, &ctx).await }).detach();
    }
}

fn reply_for(e: &DialError) -> Reply {
    match e {
        DialError::Denied => Reply::NotAllowed,
        DialError::UnknownService | DialError::UpstreamUnreachable | DialError::Unreachable => {
            Reply::HostUnreachable
        }
        DialError::UpstreamRefused => Reply::ConnectionRefused,
        _ => Reply::GeneralFailure,
    }
}

/// Reads until `parse` sees a whole message; returns what it yields (owned, so
/// the buffer can be read again).
async fn read_message<T>(
    tcp: &mut TcpStream,
    buf: &mut [u8; MAX_MESSAGE],
    filled: &mut usize,
    parse: impl Fn(&[u8]) -> Result<Option<T>, socks5::Socks5Error>,
) -> Option<T> {
    loop {
        match parse(&buf[..*filled]) {
            Ok(Some(m)) => return Some(m),
            Ok(None) if *filled < buf.len() => {}
            Ok(None) => return None,
            Err(e) => {
                log::warn!("SOCKS5 client sent a bad message: {e}");
                return None;
            }
        }
        match tcp.read(&mut buf[*filled..]).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => *filled += n,
        }
    }
}

async fn refuse(mut tcp: TcpStream, reply: Reply) {
    let _ = tcp.write_all(&socks5::encode_reply(reply)).await;
}

async fn session(mut tcp: TcpStream, caller: &Arc<Credentials>, ctx: &SocksCtx) {
    let negotiate = async {
        let mut buf = [0u8; MAX_MESSAGE];
        let mut filled = 0;
        let g = read_message(&mut tcp, &mut buf, &mut filled, socks5::parse_greeting).await?;
        tcp.write_all(&socks5::method_reply(g.no_auth_offered))
            .await
            .ok()?;
        if !g.no_auth_offered {
            return None;
        }
        buf.copy_within(g.len..filled, 0);
        filled -= g.len;
        let (host, len, cmd_ok) = {
            read_message(&mut tcp, &mut buf, &mut filled, |b| {
                socks5::parse_request(b).map(|r| r.map(|_| ()))
            })
            .await?;
            let r = socks5::parse_request(&buf[..filled]).ok().flatten()?;
            let host = match r.destination {
                Destination::Domain(h) => Some(heapless::String::<255>::try_from(h).ok()?),
                _ => None,
            };
            (host, r.len, r.is_connect())
        };
        let mut early = [0u8; MAX_MESSAGE];
        let early_len = filled - len;
        early[..early_len].copy_from_slice(&buf[len..filled]);
        Some((host, cmd_ok, early, early_len))
    };
    let timeout = async {
        Timer::after(Duration::from_secs(HANDSHAKE_TIMEOUT_S)).await;
        None
    };
    let Some((host, cmd_ok, early, early_len)) = future::or(negotiate, timeout).await else {
        return;
    };
    if !cmd_ok {
        return refuse(tcp, Reply::CommandNotSupported).await;
    }
    let Some(host) = host else {
        log::warn!(
            "SOCKS5 {}: IP literal refused; dial a .rete name",
            caller.id
        );
        return refuse(tcp, Reply::AddressTypeNotSupported).await;
    };
    let target = match resolve(&host, &ctx.td) {
        Ok(t) => t,
        Err(e) => {
            log::warn!("SOCKS5 {} -> {host}: {e}", caller.id);
            return refuse(tcp, Reply::HostUnreachable).await;
        }
    };
    let Some(&addr) = ctx.routes.load().get(target.id()) else {
        log::warn!("SOCKS5 {} -> {target}: no route (unknown service, or not granted to any principal here)", caller.id);
        return refuse(tcp, Reply::HostUnreachable).await;
    };
    let Some(_flow) = super::take_slot(&ctx.flows, MAX_FLOWS) else {
        log::warn!(
            "SOCKS5 {} -> {target}: at MAX_FLOWS ({MAX_FLOWS})",
            caller.id
        );
        return refuse(tcp, Reply::GeneralFailure).await;
    };
    let flow = match ctx.dialer.connect(caller, &target, addr).await {
        Ok(f) => f,
        Err(e) => {
            log::warn!("refused {} -> {target}: {e}", caller.id);
            return refuse(tcp, reply_for(&e)).await;
        }
    };
    if tcp
        .write_all(&socks5::encode_reply(Reply::Succeeded))
        .await
        .is_err()
    {
        return;
    }
    let _ = tcp.set_nodelay(true);
    let (mut send, recv) = flow.into_parts();
    if early_len > 0 && send.write_all(&early[..early_len]).await.is_err() {
        return;
    }
    match pump(send, recv, tcp, ctx.idle).await {
        Ok(m) => log::debug!(
            "flow {} -> {target} done: {} bytes out, {} in",
            caller.id,
            m.to_peer,
            m.from_peer
        ),
        Err(e) => log::info!("flow {} -> {target} ended: {e}", caller.id),
    }
}
