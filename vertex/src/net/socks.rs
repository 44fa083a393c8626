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

use super::counting;
use super::dial::{DialError, Dialer};
use super::forward::pump;
use super::tls::Credentials;
use crate::acl::Swap;
use crate::artifact::SOCKS_FALLBACK_MIN_PORT;
use crate::counters::{self, Refusal};
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

/// Binds `ip:preferred` if it is free, else a free port at or above
/// [`SOCKS_FALLBACK_MIN_PORT`], outside every scope's preferred band, so a
/// listener never takes another principal's preferred port (an application
/// configured for that port would otherwise speak as the wrong identity).
/// `preferred` 0 means no usable preference (it overflowed with the offset).
/// Returns the listener and whether the preferred port was not used.
///
/// # Errors
/// The bind error of the preferred port unless it is taken or not permitted;
/// `AddrInUse` when no fallback port could be bound either.
pub fn bind_preferred(ip: IpAddr, preferred: u16) -> io::Result<(TcpListener, bool)> {
    if preferred != 0 {
        match std::net::TcpListener::bind((ip, preferred)) {
            Ok(l) => return Ok((TcpListener::try_from(l)?, false)),
            Err(e)
                if e.kind() == io::ErrorKind::AddrInUse
                    || e.kind() == io::ErrorKind::PermissionDenied => {}
            Err(e) => return Err(e),
        }
    }
    let l = bind_fallback(ip)?;
    Ok((TcpListener::try_from(l)?, true))
}

/// A listener on a free port at or above [`SOCKS_FALLBACK_MIN_PORT`].
fn bind_fallback(ip: IpAddr) -> io::Result<std::net::TcpListener> {
    // The kernel's pick first: random, free, and normally in the ephemeral
    // range (Linux 32768-60999, elsewhere 49152-65535), above every band.
    let l = std::net::TcpListener::bind((ip, 0))?;
    if l.local_addr()?.port() >= SOCKS_FALLBACK_MIN_PORT {
        return Ok(l);
    }
    // The ephemeral range was lowered (net.ipv4.ip_local_port_range) into the
    // bands: look for a free port above them ourselves.
    drop(l);
    scan_from(ip, SOCKS_FALLBACK_MIN_PORT, FALLBACK_PROBES)
}

/// How many ports [`bind_fallback`] tries when the kernel's pick is too low.
/// One bind attempt each (microseconds); 1,024 finds a free port unless the
/// machine has nearly exhausted its ports, and then failing is right.
const FALLBACK_PROBES: u16 = 1024;

/// Binds the first free port of `first..first + probes` (not past 65535).
fn scan_from(ip: IpAddr, first: u16, probes: u16) -> io::Result<std::net::TcpListener> {
    for port in (first..=u16::MAX).take(usize::from(probes)) {
        match std::net::TcpListener::bind((ip, port)) {
            Ok(l) => return Ok(l),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {}
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        "no free port above the preferred SOCKS5 ports",
    ))
}

/// Serves SOCKS5 on `listener`, every flow as `caller`; the sessions run on
/// the vertex executor ([`super::block_on`]).
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
        super::exec::spawn(async move { session(tcp, &caller, &ctx).await }).detach();
    }
}

fn reply_for(e: &DialError) -> Reply {
    match e {
        DialError::Denied | DialError::NotPinned => Reply::NotAllowed,
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
            counters::DIAL.refused(Refusal::UnknownService);
            return refuse(tcp, Reply::HostUnreachable).await;
        }
    };
    let Some(&addr) = ctx.routes.load().get(target.id()) else {
        log::warn!("SOCKS5 {} -> {target}: no route (unknown service, or not granted to any principal here)", caller.id);
        counters::DIAL.refused(Refusal::UnknownService);
        return refuse(tcp, Reply::HostUnreachable).await;
    };
    let Some(_flow) = super::take_slot(&ctx.flows, MAX_FLOWS) else {
        log::warn!(
            "SOCKS5 {} -> {target}: at MAX_FLOWS ({MAX_FLOWS})",
            caller.id
        );
        counters::DIAL.refused(Refusal::Overloaded);
        return refuse(tcp, Reply::GeneralFailure).await;
    };
    // The bytes the client sent behind its request go with the flow's start
    // (behind the hello where that is safe, see `Dialer::connect`).
    let flow = match ctx
        .dialer
        .connect_with(caller, &target, addr, &early[..early_len])
        .await
    {
        Ok(f) => f,
        Err(e) => {
            log::warn!("refused {} -> {target}: {e}", caller.id);
            counting::dial_failed(&e);
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
    counters::DIAL.opened();
    // Sent into Florete with the flow's start, so not through the pump.
    counters::DIAL.sent(early_len as u64);
    let (send, recv) = flow.into_parts();
    match pump(send, recv, tcp, ctx.idle, &counters::DIAL).await {
        Ok(m) => log::debug!(
            "flow {} -> {target} done: {} bytes out, {} in",
            caller.id,
            m.to_peer,
            m.from_peer
        ),
        Err(e) => log::info!("flow {} -> {target} ended: {e}", caller.id),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test fixtures: a failed setup step should abort the test loudly
    use super::*;
    use crate::artifact::{
        in_some_scope_band, MAX_SCOPE_PORT_OFFSET, SOCKS_PORT_BAND, SOCKS_PORT_FIRST,
        SOCKS_PORT_LAST,
    };
    use std::net::Ipv4Addr;

    const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    /// Makes sure `port` on loopback is taken: binds it, or finds it bound by
    /// someone else (another vertex on this machine). The guard keeps it taken.
    fn occupy(port: u16) -> Option<std::net::TcpListener> {
        match std::net::TcpListener::bind((LO, port)) {
            Ok(l) => Some(l),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => None,
            Err(e) => panic!("cannot occupy {port}: {e}"),
        }
    }

    fn assert_outside_every_band(port: u16) {
        assert!(port >= SOCKS_FALLBACK_MIN_PORT, "fallback {port}");
        assert!(!in_some_scope_band(port), "fallback {port} is in a band");
        let mut offset = 0;
        while offset <= MAX_SCOPE_PORT_OFFSET {
            let band = SOCKS_PORT_FIRST + offset..=SOCKS_PORT_LAST + offset;
            assert!(
                !band.contains(&port),
                "{port} is in the band of offset {offset}"
            );
            offset += SOCKS_PORT_BAND;
        }
    }

    #[test]
    fn a_taken_preferred_port_falls_back_outside_every_scope_band() {
        // The first and last port of the band at the first, an automatic, and the highest offset.
        for offset in [0, 100, 900, MAX_SCOPE_PORT_OFFSET] {
            for preferred in [SOCKS_PORT_FIRST + offset, SOCKS_PORT_LAST + offset] {
                let _guard = occupy(preferred);
                let (l, taken) = smol::block_on(async { bind_preferred(LO, preferred) }).unwrap();
                assert!(taken, "{preferred} was occupied");
                assert_outside_every_band(l.local_addr().unwrap().port());
            }
        }
    }

    #[test]
    fn a_free_preferred_port_is_bound_as_is() {
        let port = {
            let l = std::net::TcpListener::bind((LO, 0)).unwrap();
            l.local_addr().unwrap().port()
        };
        let (l, taken) = smol::block_on(async { bind_preferred(LO, port) }).unwrap();
        // Another test may have raced us to the port; then it must have fallen back.
        let actual = l.local_addr().unwrap().port();
        assert!(!taken && actual == port || taken && actual != port);
    }

    #[test]
    fn no_preference_falls_back_too() {
        let (l, taken) = smol::block_on(async { bind_preferred(LO, 0) }).unwrap();
        assert!(taken);
        assert_outside_every_band(l.local_addr().unwrap().port());
    }

    #[test]
    fn the_scan_skips_taken_ports_and_gives_up_when_all_are() {
        let first = loop {
            // A free port with a free successor, held so the scan must skip it.
            let l = std::net::TcpListener::bind((LO, 0)).unwrap();
            let p = l.local_addr().unwrap().port();
            if p < u16::MAX {
                break (l, p);
            }
        };
        let (held, port) = first;
        match scan_from(LO, port, 2) {
            Ok(l) => assert_eq!(l.local_addr().unwrap().port(), port + 1),
            // Someone else holds port + 1: then nothing in the window was free.
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::AddrInUse),
        }
        let e = scan_from(LO, port, 1).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        drop(held);
    }
}
