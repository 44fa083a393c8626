//! The calling side: one warm QUIC connection per (caller, target, address),
//! one stream per flow, so a new flow costs a stream open and one round trip
//! for the verdict, never a handshake.
//!
//! Bytes the application sent before its flow was allowed (SOCKS5 early data)
//! ride behind the hello when the connection speaks preamble version 2 and no
//! retry can follow ([`early_rides_with_hello`]); otherwise they follow the
//! verdict. Either way they are sent exactly once.

use core::fmt;
use std::collections::HashMap;
use std::future::Future;
use std::net::{Ipv6Addr, SocketAddr, UdpSocket};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use rustls::RootCertStore;
use smol::future;
use smol::io::{AsyncRead, AsyncWrite};
use smol::Timer;

use super::tls::{client_config, Credentials, HandshakeFailure};
use super::{transport, NetError};
use crate::identity::{sni_for, Dialable, SpiffeId};
use crate::limits::{
    HANDSHAKE_ATTEMPT_INTERVAL_MS, HANDSHAKE_TIMEOUT_S, MAX_HANDSHAKE_ATTEMPTS,
    PEER_SILENCE_FLOOR_MS, PEER_SILENCE_RTTS, UPSTREAM_CONNECT_TIMEOUT_S,
};
use crate::wire::{close, Preamble, Verdict};

/// Why a flow could not be opened. Each maps to one SOCKS5 reply.
#[derive(Debug)]
#[non_exhaustive]
pub enum DialError {
    /// The target's ACL does not grant the caller.
    Denied,
    /// The target is not published at that address.
    UnknownService,
    /// The target's upstream refused the TCP connection.
    UpstreamRefused,
    /// The target's upstream did not answer.
    UpstreamUnreachable,
    /// The target vertex is at a connection or flow limit.
    Overloaded,
    /// The target's ACL pins other certificates for the caller than the one it presented.
    NotPinned,
    /// The hosting node did not answer (down, or no route).
    Unreachable,
    /// The handshake failed: the server's certificate was refused here, or ours there.
    Handshake(quinn::ConnectionError),
    /// The peer broke the preamble or closed unexpectedly.
    Protocol,
    /// Local TLS setup failed.
    Setup(NetError),
}

impl fmt::Display for DialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DialError::Denied => f.write_str("denied: no role of the caller grants this service"),
            DialError::UnknownService => f.write_str("the service is not published on its node"),
            DialError::UpstreamRefused => {
                f.write_str("the service's upstream refused the connection")
            }
            DialError::UpstreamUnreachable => f.write_str("the service's upstream did not answer"),
            DialError::Overloaded => f.write_str("the service's vertex is at its limit"),
            DialError::NotPinned => f.write_str(
                "the service's node does not pin this certificate of the caller: renewed \
                 and not yet in its artifact (retectl compile, publish), or not issued by retectl",
            ),
            DialError::Unreachable => f.write_str("the service's node did not answer"),
            DialError::Handshake(e) => write!(
                f,
                "mTLS handshake failed: {}",
                HandshakeFailure {
                    error: e,
                    ours_is_client: true
                }
            ),
            DialError::Protocol => f.write_str("the peer broke the Florete stream preamble"),
            DialError::Setup(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for DialError {}

impl DialError {
    fn from_connection(e: quinn::ConnectionError) -> DialError {
        match &e {
            quinn::ConnectionError::ApplicationClosed(c) => {
                match u32::try_from(c.error_code.into_inner()) {
                    Ok(close::DENIED) => DialError::Denied,
                    Ok(close::UNKNOWN_SERVICE) => DialError::UnknownService,
                    Ok(close::OVERLOADED) => DialError::Overloaded,
                    Ok(close::NOT_PINNED) => DialError::NotPinned,
                    _ => DialError::Handshake(e),
                }
            }
            quinn::ConnectionError::TimedOut => DialError::Unreachable,
            _ => DialError::Handshake(e),
        }
    }

    fn from_verdict(v: Verdict) -> DialError {
        match v {
            Verdict::Denied => DialError::Denied,
            Verdict::UnknownService => DialError::UnknownService,
            Verdict::UpstreamRefused => DialError::UpstreamRefused,
            Verdict::UpstreamUnreachable => DialError::UpstreamUnreachable,
            Verdict::Overloaded => DialError::Overloaded,
            Verdict::Allowed => DialError::Protocol,
        }
    }
}

type PoolKey = (SpiffeId, Dialable, SocketAddr);
type Slot = Arc<smol::lock::Mutex<Option<quinn::Connection>>>;

/// Opens flows to services on other vertices.
#[derive(Debug)]
pub struct Dialer {
    endpoint: quinn::Endpoint,
    roots: Arc<RootCertStore>,
    idle: Duration,
    pool: Mutex<HashMap<PoolKey, Slot>>,
}

/// One open flow: a QUIC stream the server has allowed. Reads and writes go
/// to the target's upstream; closing the write side half-closes it.
#[derive(Debug)]
pub struct Flow {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
}

impl Flow {
    /// The stream halves, for [`super::pump`].
    pub fn into_parts(self) -> (quinn::SendStream, quinn::RecvStream) {
        (self.send, self.recv)
    }
}

impl AsyncRead for Flow {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.recv).poll_read(cx, buf)
    }
}

impl AsyncWrite for Flow {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        AsyncWrite::poll_write(Pin::new(&mut self.send), cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        AsyncWrite::poll_flush(Pin::new(&mut self.send), cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        AsyncWrite::poll_close(Pin::new(&mut self.send), cx)
    }
}

/// A client-only QUIC endpoint on an ephemeral UDP port (dual-stack if the host has IPv6).
pub fn client_endpoint() -> Result<quinn::Endpoint, NetError> {
    client_endpoint_on(Arc::new(super::exec::Runtime::PLAIN))
}

/// [`client_endpoint`] whose drivers run on `runtime` (a vertex's: `exec`).
pub(crate) fn client_endpoint_on(
    runtime: Arc<dyn quinn::Runtime>,
) -> Result<quinn::Endpoint, NetError> {
    let socket = dual_stack_udp().or_else(|_| UdpSocket::bind(("0.0.0.0", 0)))?;
    super::size_udp_buffers(&socket);
    let mut cfg = quinn::EndpointConfig::default();
    super::accept_large_datagrams(&mut cfg);
    Ok(quinn::Endpoint::new(cfg, None, socket, runtime)?)
}

/// `[::]:0` that also reaches IPv4 nodes (as IPv4-mapped addresses).
///
/// Dual-stack is asked for explicitly: Windows makes an IPv6 socket IPv6-only
/// unless told otherwise, and then every send to an IPv4 node fails.
fn dual_stack_udp() -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_only_v6(false)?;
    s.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)).into())?;
    Ok(s.into())
}

impl Dialer {
    /// A dialer with its own client endpoint, trusting only the rete CA in `ca_pem`.
    pub fn new(ca_pem: &[u8]) -> Result<Dialer, NetError> {
        Ok(Dialer::with_endpoint(
            client_endpoint()?,
            super::load_ca(ca_pem)?,
            Duration::from_secs(60),
        ))
    }

    /// A dialer on an existing endpoint (a vertex dials from its server endpoint).
    pub fn with_endpoint(
        endpoint: quinn::Endpoint,
        roots: Arc<RootCertStore>,
        idle: Duration,
    ) -> Dialer {
        Dialer {
            endpoint,
            roots,
            idle,
            pool: Mutex::new(HashMap::new()),
        }
    }

    /// Opens one flow to `target` at the vertex on `addr`, as `caller`
    /// ([`Dialer::connect_with`] without early bytes).
    ///
    /// Not an `async fn` of its own: it returns [`Dialer::connect_with`]'s
    /// future as is, so the state machine exists once in the binary.
    pub fn connect<'a>(
        &'a self,
        caller: &'a Arc<Credentials>,
        target: &'a Dialable,
        addr: SocketAddr,
    ) -> impl Future<Output = Result<Flow, DialError>> + 'a {
        self.connect_with(caller, target, addr, &[])
    }

    /// Opens one flow to `target` at the vertex on `addr`, as `caller`, and
    /// sends `early` (bytes the application already sent, may be empty) on it
    /// exactly once: behind the hello where [`early_rides_with_hello`],
    /// otherwise right after the verdict.
    ///
    /// A pooled connection may have died since its last flow (the peer's
    /// vertex restarted or went away): if it fails before the verdict
    /// ([`retry_on_fresh`]) or stays silent after the stream open
    /// ([`silence_window`]), the flow is retried once on a fresh connection.
    /// That is safe because on a pooled connection nothing of the
    /// application's is sent before the verdict: at most the server repeats a
    /// TCP connect to its upstream.
    pub async fn connect_with(
        &self,
        caller: &Arc<Credentials>,
        target: &Dialable,
        addr: SocketAddr,
        early: &[u8],
    ) -> Result<Flow, DialError> {
        let key: PoolKey = (caller.id.clone(), target.clone(), addr);
        let slot = {
            let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(pool.entry(key).or_default())
        };
        // The stable id of a pooled connection this call found dead: never reused.
        let mut dead = None;
        loop {
            let (conn, pooled) = {
                let mut guard = slot.lock().await;
                match guard.as_ref() {
                    Some(c) if c.close_reason().is_none() && Some(c.stable_id()) != dead => {
                        (c.clone(), true)
                    }
                    _ => {
                        // Holding the slot: concurrent flows wait for this one handshake.
                        let c = self.handshake(caller, target, addr).await?;
                        *guard = Some(c.clone());
                        (c, false)
                    }
                }
            };
            let failure = match open_flow(&conn, pooled, early).await {
                Ok(flow) => return Ok(flow),
                Err(f) => f,
            };
            // Only a pooled connection is retried, and on a pooled connection
            // the stream carried the hello alone (early_rides_with_hello).
            let retry = pooled
                && dead.is_none()
                && match &failure {
                    Failure::Silent => true,
                    Failure::Connection(e) => retry_on_fresh(e),
                    Failure::Dial(_) => false,
                };
            if !retry {
                return Err(failure.into_dial_error());
            }
            if matches!(failure, Failure::Silent) {
                // Other flows on it fail at once instead of each waiting out the silence.
                conn.close(
                    quinn::VarInt::from_u32(close::UNRESPONSIVE),
                    b"no answer; redialing",
                );
            }
            log::info!(
                "connection to {target} at {addr} is gone ({}); retrying the flow on a fresh one",
                failure.into_dial_error()
            );
            dead = Some(conn.stable_id());
        }
    }

    /// Dials `addr` until the handshake completes, fails, or
    /// [`HANDSHAKE_TIMEOUT_S`] passes. While the node is silent a new attempt
    /// starts every [`HANDSHAKE_ATTEMPT_INTERVAL_MS`], because quinn's own
    /// Initial retransmissions back off to seconds apart: a vertex that comes
    /// back mid-dial is reached within one interval, not one growing PTO.
    async fn handshake(
        &self,
        caller: &Credentials,
        target: &Dialable,
        addr: SocketAddr,
    ) -> Result<quinn::Connection, DialError> {
        let tls =
            client_config(Arc::clone(&self.roots), caller, target).map_err(DialError::Setup)?;
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
            .map_err(|_| DialError::Setup(NetError::Tls("QUIC client config")))?;
        let mut cfg = quinn::ClientConfig::new(Arc::new(quic));
        cfg.transport_config(transport(self.idle));
        let sni = sni_for(target);
        let deadline = Instant::now() + Duration::from_secs(HANDSHAKE_TIMEOUT_S);
        let interval = Duration::from_millis(HANDSHAKE_ATTEMPT_INTERVAL_MS);
        let mut attempts: Vec<quinn::Connecting> = Vec::with_capacity(MAX_HANDSHAKE_ATTEMPTS);
        loop {
            if attempts.len() >= MAX_HANDSHAKE_ATTEMPTS {
                // Keep the first (a slow live path completes on it); drop the oldest later one.
                drop(attempts.remove(1));
            }
            let connecting = self
                .endpoint
                .connect_with(cfg.clone(), addr, &sni)
                .map_err(|e| {
                    log::warn!("cannot dial {target} at {addr}: {e}");
                    DialError::Unreachable
                })?;
            attempts.push(connecting);
            let mut next = Timer::at(deadline.min(Instant::now() + interval));
            let done = future::poll_fn(|cx| {
                for a in attempts.iter_mut() {
                    if let Poll::Ready(r) = Pin::new(a).poll(cx) {
                        return Poll::Ready(Some(r));
                    }
                }
                Pin::new(&mut next).poll(cx).map(|_| None)
            })
            .await;
            match done {
                // The other attempts are dropped: quinn closes them.
                Some(r) => {
                    return r.map_err(|error| {
                        let failure = HandshakeFailure {
                            error: &error,
                            ours_is_client: true,
                        };
                        if failure.problem().is_some() {
                            log::warn!("handshake with {target} at {addr} failed: {failure}");
                        }
                        DialError::from_connection(error)
                    })
                }
                None if Instant::now() >= deadline => return Err(DialError::Unreachable),
                None => log::debug!("no answer from {target} at {addr} yet; one more attempt"),
            }
        }
    }

    /// Completes a handshake with `target` at `addr` as `caller` and keeps
    /// the connection for the next [`Dialer::connect`]; returns how long the
    /// handshake took (`flor doctor`, `flor ping`).
    pub async fn warm(
        &self,
        caller: &Arc<Credentials>,
        target: &Dialable,
        addr: SocketAddr,
    ) -> Result<Duration, DialError> {
        let key: PoolKey = (caller.id.clone(), target.clone(), addr);
        let slot = {
            let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(pool.entry(key).or_default())
        };
        let started = Instant::now();
        let conn = self.handshake(caller, target, addr).await?;
        let took = started.elapsed();
        *slot.lock().await = Some(conn);
        Ok(took)
    }

    /// The path MTU (largest UDP payload) the pooled connection to `target`
    /// at `addr` as `caller` has found so far, if there is one: 1,200 at the
    /// start, up to [`crate::limits::MAX_UDP_PAYLOAD`] where the path and the
    /// peer take it (discovery probes beside the traffic once the handshake is
    /// confirmed; a path stuck low explains a slow bulk transfer).
    pub async fn path_mtu(
        &self,
        caller: &Arc<Credentials>,
        target: &Dialable,
        addr: SocketAddr,
    ) -> Option<u16> {
        let key: PoolKey = (caller.id.clone(), target.clone(), addr);
        let slot = {
            let pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(pool.get(&key)?)
        };
        let conn = slot.lock().await;
        conn.as_ref().map(|c| c.stats().path.current_mtu)
    }

    /// The local UDP address flows leave from.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }
}

/// Why a flow could not be opened on one connection.
#[derive(Debug)]
enum Failure {
    /// The connection failed before the verdict.
    Connection(quinn::ConnectionError),
    /// The peer sent no datagram within [`silence_window`] of the stream open.
    Silent,
    /// A final answer (a verdict, a broken preamble, a timeout).
    Dial(DialError),
}

impl Failure {
    fn into_dial_error(self) -> DialError {
        match self {
            Failure::Connection(e) => DialError::from_connection(e),
            Failure::Silent => DialError::Unreachable,
            Failure::Dial(e) => e,
        }
    }
}

/// Whether a flow that failed with `e` before its verdict may be retried on a
/// fresh connection: the connection is gone (the peer restarted, shut down,
/// reset it, or stopped answering), not refused. A refusal (DENIED,
/// UNKNOWN_SERVICE, OVERLOADED, BAD_IDENTITY) is the peer's answer and a new
/// connection would get the same one; a local protocol error would recur.
pub(crate) fn retry_on_fresh(e: &quinn::ConnectionError) -> bool {
    use quinn::ConnectionError as E;
    match e {
        E::ApplicationClosed(c) => matches!(
            u32::try_from(c.error_code.into_inner()),
            Ok(close::SHUTDOWN | close::DONE | close::IDLE)
        ),
        E::Reset | E::TimedOut | E::LocallyClosed | E::ConnectionClosed(_) => true,
        E::VersionMismatch | E::TransportError(_) | E::CidsExhausted => false,
    }
}

/// How long a caller waits for any datagram after opening a stream on a
/// pooled connection: `max(PEER_SILENCE_RTTS x rtt, PEER_SILENCE_FLOOR_MS)`.
pub(crate) fn silence_window(rtt: Duration) -> Duration {
    (rtt * PEER_SILENCE_RTTS).max(Duration::from_millis(PEER_SILENCE_FLOOR_MS))
}

/// Whether the application's early bytes go out behind the hello, before the
/// verdict: only if the connection speaks a preamble that allows it
/// ([`Preamble::early_data`]) and is not `pooled` (fresh from its
/// handshake). A flow on a pooled connection may be retried on a fresh one if
/// it fails before the verdict, and bytes the dead connection carried may
/// already have reached the upstream (the old process forwards them right
/// after its verdict, which may be lost with it): sending them again would
/// deliver them twice. So on a pooled connection they wait for the verdict,
/// and a flow on a fresh connection is never retried.
pub(crate) fn early_rides_with_hello(preamble: Preamble, pooled: bool) -> bool {
    preamble.early_data() && !pooled
}

/// The preamble version `conn` speaks, from its negotiated ALPN; `None` if
/// it names none this build knows (rustls refuses such a handshake first).
pub(crate) fn preamble_of(conn: &quinn::Connection) -> Option<Preamble> {
    let data = conn.handshake_data()?;
    let data = data
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .ok()?;
    Preamble::from_alpn(data.protocol.as_deref()?)
}

/// Opens a stream, sends the hello (with `early` where
/// [`early_rides_with_hello`]) and reads the verdict; sends `early` after it
/// otherwise. On a `pooled` connection, a peer that sends no datagram at all
/// within [`silence_window`] is taken for gone ([`Failure::Silent`]). A live
/// peer acknowledges the hello within its ACK delay even while it connects
/// the upstream, so a slow verdict is never mistaken for a dead peer.
async fn open_flow(conn: &quinn::Connection, pooled: bool, early: &[u8]) -> Result<Flow, Failure> {
    let received_before = conn.stats().udp_rx.datagrams;
    let preamble = preamble_of(conn).ok_or(Failure::Dial(DialError::Protocol))?;
    let with_hello = early_rides_with_hello(preamble, pooled) && !early.is_empty();
    let flow = async {
        let (mut send, mut recv) = conn.open_bi().await.map_err(Failure::Connection)?;
        let before_verdict = |e| match e {
            quinn::WriteError::ConnectionLost(c) => Failure::Connection(c),
            _ => Failure::Dial(DialError::Protocol),
        };
        // Both writes only fill quinn's send buffer, so the connection task
        // usually sends them in one packet; the server reads the hello alone
        // first either way.
        send.write_all(&[preamble.hello()])
            .await
            .map_err(before_verdict)?;
        if with_hello {
            match send.write_all(early).await {
                // The server refused the flow and stopped reading: its
                // verdict says why.
                Ok(()) | Err(quinn::WriteError::Stopped(_)) => {}
                Err(e) => return Err(before_verdict(e)),
            }
        }
        let mut verdict = [0u8; 1];
        recv.read_exact(&mut verdict).await.map_err(|e| match e {
            quinn::ReadExactError::ReadError(quinn::ReadError::ConnectionLost(c)) => {
                Failure::Connection(c)
            }
            _ => Failure::Dial(DialError::Protocol),
        })?;
        match Verdict::from_byte(verdict[0]) {
            Some(Verdict::Allowed) => {}
            Some(v) => return Err(Failure::Dial(DialError::from_verdict(v))),
            None => return Err(Failure::Dial(DialError::Protocol)),
        }
        if !with_hello && !early.is_empty() {
            // After the verdict nothing is retried: a lost connection now is
            // a flow cut short, reported as such.
            send.write_all(early)
                .await
                .map_err(|_| Failure::Dial(DialError::Protocol))?;
        }
        Ok(Flow { send, recv })
    };
    // One timer per flow (each one armed costs the reactor a wake-up): first
    // the silence check on a pooled connection, then the overall deadline.
    // The server answers within its upstream connect timeout; past that the
    // peer is stuck, and a retry could repeat a connect that is still running.
    let guard = async {
        let now = Instant::now();
        let deadline = now + Duration::from_secs(HANDSHAKE_TIMEOUT_S + UPSTREAM_CONNECT_TIMEOUT_S);
        // A fresh connection needs no silence check: its handshake just now
        // proved the peer alive.
        let first = if pooled {
            now + silence_window(conn.rtt())
        } else {
            deadline
        };
        let mut timer = Timer::at(first);
        if pooled {
            (&mut timer).await;
            if conn.stats().udp_rx.datagrams == received_before {
                return Err(Failure::Silent);
            }
            // Something came back: the peer is alive, however slow its verdict.
            timer.set_at(deadline);
        }
        timer.await;
        Err(Failure::Dial(DialError::Unreachable))
    };
    future::or(flow, guard).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app_close(code: u32) -> quinn::ConnectionError {
        quinn::ConnectionError::ApplicationClosed(quinn::ApplicationClose {
            error_code: quinn::VarInt::from_u32(code),
            reason: Default::default(),
        })
    }

    #[test]
    fn gone_connections_are_retried_refusals_are_not() {
        for code in [close::SHUTDOWN, close::DONE, close::IDLE] {
            assert!(retry_on_fresh(&app_close(code)), "{code:#x}");
        }
        for code in [
            close::BAD_IDENTITY,
            close::DENIED,
            close::UNKNOWN_SERVICE,
            close::OVERLOADED,
            close::BAD_PREAMBLE,
            close::NOT_PINNED,
            0x4242,
        ] {
            assert!(!retry_on_fresh(&app_close(code)), "{code:#x}");
        }
        use quinn::ConnectionError as E;
        assert!(retry_on_fresh(&E::Reset));
        assert!(retry_on_fresh(&E::TimedOut));
        assert!(retry_on_fresh(&E::LocallyClosed));
        assert!(!retry_on_fresh(&E::VersionMismatch));
        assert!(!retry_on_fresh(&E::CidsExhausted));
    }

    #[test]
    fn early_data_never_rides_where_a_retry_can_follow() {
        // Only flows on pooled connections are retried (`Dialer::connect_with`):
        // on those the hello must travel alone, whatever the version.
        for p in Preamble::ALL {
            assert!(!early_rides_with_hello(p, true), "{p:?}");
        }
        assert!(early_rides_with_hello(Preamble::V2, false));
        // A version 1 server was promised a lone hello.
        assert!(!early_rides_with_hello(Preamble::V1, false));
    }

    #[test]
    fn silence_window_is_three_round_trips_but_never_under_the_floor() {
        let floor = Duration::from_millis(PEER_SILENCE_FLOOR_MS);
        assert_eq!(silence_window(Duration::from_micros(200)), floor);
        assert_eq!(silence_window(Duration::ZERO), floor);
        assert_eq!(
            silence_window(Duration::from_millis(300)),
            Duration::from_millis(900)
        );
    }
}
