//! The calling side: one warm QUIC connection per (caller, target, address),
//! one stream per flow, so a new flow costs a stream open and one round trip
//! for the verdict, never a handshake.

use core::fmt;
use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddr, UdpSocket};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::RootCertStore;
use smol::future;
use smol::io::{AsyncRead, AsyncWrite};
use smol::Timer;

use super::tls::{client_config, Credentials};
use super::{transport, NetError};
use crate::identity::{sni_for, Dialable, SpiffeId};
use crate::limits::{HANDSHAKE_TIMEOUT_S, UPSTREAM_CONNECT_TIMEOUT_S};
use crate::wire::{close, Verdict, STREAM_HELLO};

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
            DialError::Unreachable => f.write_str("the service's node did not answer"),
            DialError::Handshake(e) => write!(f, "mTLS handshake failed: {e}"),
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

async fn within<T>(
    secs: u64,
    fut: impl std::future::Future<Output = Result<T, DialError>>,
) -> Result<T, DialError> {
    future::or(fut, async {
        Timer::after(Duration::from_secs(secs)).await;
        Err(DialError::Unreachable)
    })
    .await
}

/// A client-only QUIC endpoint on an ephemeral UDP port (dual-stack if the host has IPv6).
pub fn client_endpoint() -> Result<quinn::Endpoint, NetError> {
    let socket = dual_stack_udp().or_else(|_| UdpSocket::bind(("0.0.0.0", 0)))?;
    Ok(quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        socket,
        Arc::new(quinn::SmolRuntime),
    )?)
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

    /// Opens one flow to `target` at the vertex on `addr`, as `caller`.
    pub async fn connect(
        &self,
        caller: &Arc<Credentials>,
        target: &Dialable,
        addr: SocketAddr,
    ) -> Result<Flow, DialError> {
        let key: PoolKey = (caller.id.clone(), target.clone(), addr);
        let slot = {
            let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(pool.entry(key).or_default())
        };
        // A pooled connection may have died since its last flow; one retry on a fresh one.
        for fresh in [false, true] {
            let conn = {
                let mut guard = slot.lock().await;
                match guard.as_ref() {
                    Some(c) if !fresh && c.close_reason().is_none() => c.clone(),
                    _ => {
                        let c = self.handshake(caller, target, addr).await?;
                        *guard = Some(c.clone());
                        c
                    }
                }
            };
            match open_flow(&conn).await {
                // Lost (not slow): a timeout here would only be repeated.
                Err(DialError::Handshake(_)) if !fresh => continue,
                other => return other,
            }
        }
        Err(DialError::Protocol)
    }

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
        let connecting = self
            .endpoint
            .connect_with(cfg, addr, &sni_for(target))
            .map_err(|e| {
                log::warn!("cannot dial {target} at {addr}: {e}");
                DialError::Unreachable
            })?;
        within(HANDSHAKE_TIMEOUT_S, async {
            connecting.await.map_err(DialError::from_connection)
        })
        .await
    }

    /// The local UDP address flows leave from.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }
}

async fn open_flow(conn: &quinn::Connection) -> Result<Flow, DialError> {
    within(HANDSHAKE_TIMEOUT_S + UPSTREAM_CONNECT_TIMEOUT_S, async {
        let (mut send, mut recv) = conn.open_bi().await.map_err(DialError::from_connection)?;
        send.write_all(&[STREAM_HELLO]).await.map_err(|e| match e {
            quinn::WriteError::ConnectionLost(c) => DialError::from_connection(c),
            _ => DialError::Protocol,
        })?;
        let mut verdict = [0u8; 1];
        recv.read_exact(&mut verdict).await.map_err(|e| match e {
            quinn::ReadExactError::ReadError(quinn::ReadError::ConnectionLost(c)) => {
                DialError::from_connection(c)
            }
            _ => DialError::Protocol,
        })?;
        match Verdict::from_byte(verdict[0]) {
            Some(Verdict::Allowed) => Ok(Flow { send, recv }),
            Some(v) => Err(DialError::from_verdict(v)),
            None => Err(DialError::Protocol),
        }
    })
    .await
}
