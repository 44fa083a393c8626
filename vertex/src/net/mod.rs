//! The data plane (feature `net`): QUIC with mTLS on smol, SOCKS5 ingress and
//! TCP forwarding — the thin I/O shell around the sans-IO core.
//!
//! ```text
//! app --TCP--> SOCKS5 listener (port -> caller identity)
//!        resolve(host) -> Dialable -> route (hosting node's UDP address)
//!        Dialer: one QUIC connection per (caller, target), one stream per flow
//!   ==QUIC/mTLS, SNI = sni_for(target)==> vertex on the hosting node
//!        SNI lookup -> target's SVID; caller's SVID -> SPIFFE ID -> ACL
//!        verdict byte; upstream TCP connect; pump both ways
//! ```
//!
//! A flow reads TCP through one [`FLOW_BUFFER_BYTES`] buffer while data moves
//! and writes quinn's received chunks to TCP in batches (`forward`); every
//! task runs on the thread in [`block_on`] (`exec`). Connections, streams and
//! flows are capped by [`crate::limits`].

mod callers;
mod counting;
mod dial;
mod exec;
mod forward;
mod reset;
mod response;
mod serve;
mod socks;
pub mod tls;
mod vertex;

use core::fmt;
use std::sync::Arc;
use std::time::Duration;

pub use dial::{client_endpoint, DialError, Dialer, Flow};
pub use exec::{block_on, spawn};
pub use forward::{pump, Moved};
pub use reset::ResetSecret;
pub use response::{read_response, ResponseError};
pub use serve::{serve, ServerCtx};
pub use socks::{bind_preferred, serve_socks, SocksCtx};
pub use tls::{load_ca, CertProblem, Credentials, HandshakeFailure, P256Key, PeerIdError};
pub use vertex::{start, RunningVertex, SocksBinding, VertexSetup, SOCKS_IP};

use crate::identity::SpiffeId;
use crate::limits::{
    CONNECTION_RECEIVE_WINDOW, FLOW_BUFFER_BYTES, KEEP_ALIVE_S, MAX_STREAMS_PER_CONNECTION,
    MAX_UDP_PAYLOAD, SEND_WINDOW, STREAM_RECEIVE_WINDOW, UDP_SOCKET_BUFFER_BYTES,
};

/// Why the data plane could not be set up.
#[derive(Debug)]
#[non_exhaustive]
pub enum NetError {
    /// A PEM file does not hold what it should.
    BadPem(&'static str),
    /// A certificate does not name one SPIFFE ID of this rete.
    BadCertificate(PeerIdError),
    /// A certificate names another principal than the artifact says.
    CertificateIdMismatch(Box<SpiffeId>),
    /// A private key does not match its certificate.
    KeyMismatch,
    /// TLS configuration failed.
    Tls(&'static str),
    /// The UDP listen address could not be bound.
    Bind(std::net::SocketAddr, std::io::Error),
    /// A socket could not be bound or configured.
    Io(std::io::Error),
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetError::BadPem(what) => write!(f, "{what} PEM is missing or malformed"),
            NetError::BadCertificate(e) => write!(f, "certificate refused: {e}"),
            NetError::CertificateIdMismatch(id) => write!(f, "certificate does not name {id}"),
            NetError::KeyMismatch => f.write_str("private key does not match its certificate"),
            NetError::Tls(what) => write!(f, "TLS setup failed: {what}"),
            NetError::Bind(a, e) => write!(f, "cannot listen on udp {a}: {e}"),
            NetError::Io(e) => write!(f, "socket: {e}"),
        }
    }
}

impl std::error::Error for NetError {}

impl From<std::io::Error> for NetError {
    fn from(e: std::io::Error) -> Self {
        NetError::Io(e)
    }
}

/// QUIC transport settings shared by both ends, from [`crate::limits`].
pub(crate) fn transport(idle: Duration) -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(MAX_STREAMS_PER_CONNECTION.into());
    t.max_concurrent_uni_streams(0u32.into());
    t.stream_receive_window(STREAM_RECEIVE_WINDOW.into());
    t.receive_window(CONNECTION_RECEIVE_WINDOW.into());
    t.send_window(SEND_WINDOW);
    t.keep_alive_interval(Some(Duration::from_secs(KEEP_ALIVE_S)));
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(MAX_UDP_PAYLOAD);
    t.mtu_discovery_config(Some(mtu));
    if let Ok(idle) = quinn::IdleTimeout::try_from(idle) {
        t.max_idle_timeout(Some(idle));
    }
    Arc::new(t)
}

/// The datagram size every endpoint of ours accepts ([`MAX_UDP_PAYLOAD`]; quinn's
/// default is 1,472), set on an endpoint configuration made elsewhere.
pub(crate) fn accept_large_datagrams(cfg: &mut quinn::EndpointConfig) {
    // Only fails below QUIC's 1,200-byte minimum, which the constant is not.
    let _ = cfg.max_udp_payload_size(MAX_UDP_PAYLOAD);
}

/// Asks the kernel for [`UDP_SOCKET_BUFFER_BYTES`] of queue on a QUIC socket,
/// both ways. The default (~208 KiB on Linux) overflows when a burst of a
/// fast flow arrives while the vertex is busy, and every dropped datagram is
/// a congestion signal that halves the sender's window. The kernel caps the
/// request at `net.core.rmem_max`/`wmem_max`; failure is not fatal.
pub(crate) fn size_udp_buffers(socket: &std::net::UdpSocket) {
    let s = socket2::SockRef::from(socket);
    let _ = s.set_recv_buffer_size(UDP_SOCKET_BUFFER_BYTES);
    let _ = s.set_send_buffer_size(UDP_SOCKET_BUFFER_BYTES);
}

/// A taken place under a cap; gives it back when dropped, on every exit path.
pub(crate) struct Slot<'a>(&'a std::sync::atomic::AtomicUsize);

/// Takes a place under `max`, or `None` when all are taken.
pub(crate) fn take_slot(counter: &std::sync::atomic::AtomicUsize, max: usize) -> Option<Slot<'_>> {
    use std::sync::atomic::Ordering;
    if counter.fetch_add(1, Ordering::AcqRel) >= max {
        counter.fetch_sub(1, Ordering::AcqRel);
        return None;
    }
    Some(Slot(counter))
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Buffer size of one flow direction (re-exported for docs and benches).
pub const FLOW_BUFFER: usize = FLOW_BUFFER_BYTES;
