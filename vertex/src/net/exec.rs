//! Where a vertex's tasks run: one executor, driven by the thread that calls
//! [`block_on`] (the vertex process's main thread), which also drives the
//! reactor (epoll) whenever no task is ready.
//!
//! With smol's global executor the tasks ran on a thread of their own while
//! the main thread waited in the reactor, so every readiness event (a QUIC
//! packet, a TCP segment) was read on one thread and its task woken on the
//! other: a futex wake and a context switch per event, on both vertices of a
//! flow. Here the thread that sees the event runs the task, and the process
//! has one thread fewer (its stack and its allocator arena).
//!
//! Everything [`super::start`] spawns — connection drivers, flows, SOCKS5
//! sessions — runs here, so the caller must drive it with [`block_on`].
//! Endpoints made for other callers (the agent's and retectl's `Dialer`) keep
//! quinn's plain smol runtime.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use crate::limits::{GRO_DATAGRAM_BYTES, MAX_UDP_PAYLOAD};

static EXECUTOR: smol::Executor<'static> = smol::Executor::new();

/// Spawns a vertex task (run by whoever is in [`block_on`]).
///
/// Boxed first, so the executor's task machinery is compiled once per output
/// type rather than once per future type (flash on a router: each copy of
/// `async_task::RawTask` is kilobytes); one allocation per task, which the
/// executor made anyway.
pub(crate) fn spawn<T: Send + 'static>(
    f: impl Future<Output = T> + Send + 'static,
) -> smol::Task<T> {
    let f: Pin<Box<dyn Future<Output = T> + Send>> = Box::pin(f);
    EXECUTOR.spawn(f)
}

/// Runs `f` to completion on this thread, running the vertex's tasks and
/// driving the reactor while it waits. A vertex started with
/// [`super::start`] does nothing unless some thread is in here.
pub fn block_on<T>(f: impl Future<Output = T>) -> T {
    smol::block_on(EXECUTOR.run(f))
}

/// quinn's smol runtime with [`Datagrams`] sockets. [`Runtime::VERTEX`]
/// runs connection and endpoint drivers on the vertex's executor;
/// [`Runtime::PLAIN`] on smol's global one, for endpoints outside a vertex
/// (the agent's and retectl's `Dialer`).
#[derive(Debug)]
pub(crate) struct Runtime {
    on_vertex_executor: bool,
}

impl Runtime {
    /// Drivers run where the vertex's tasks run ([`block_on`]).
    pub(crate) const VERTEX: Runtime = Runtime {
        on_vertex_executor: true,
    };
    /// Drivers run on smol's global executor.
    pub(crate) const PLAIN: Runtime = Runtime {
        on_vertex_executor: false,
    };
}

impl quinn::Runtime for Runtime {
    fn new_timer(&self, t: Instant) -> Pin<Box<dyn quinn::AsyncTimer>> {
        quinn::SmolRuntime.new_timer(t)
    }

    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) {
        if self.on_vertex_executor {
            EXECUTOR.spawn(future).detach();
        } else {
            quinn::SmolRuntime.spawn(future)
        }
    }

    fn wrap_udp_socket(
        &self,
        sock: std::net::UdpSocket,
    ) -> io::Result<Arc<dyn quinn::AsyncUdpSocket>> {
        let inner = quinn::SmolRuntime.wrap_udp_socket(sock)?;
        Ok(Arc::new(Datagrams(inner)))
    }
}

/// quinn's smol UDP socket, with segment counts that fit [`MAX_UDP_PAYLOAD`]
/// datagrams into the kernel's 64 KiB ([`GRO_DATAGRAM_BYTES`]).
///
/// quinn sizes its receive buffer as payload x receive segments x 32 slots,
/// and the kernel's report of 64 GRO segments would make that 18 MiB at
/// 8,952 bytes; no coalesced receive exceeds 64 KiB, so `ceil(64 KiB /
/// payload)` segments per slot hold every one. On the send side quinn may
/// batch 10 segments of the path MTU, which above 6,550 bytes would not fit
/// one GSO send; `(64 KiB - headers) / payload` always does.
#[derive(Debug)]
struct Datagrams(Arc<dyn quinn::AsyncUdpSocket>);

/// UDP and IPv6 headers, the most a GSO send's 64 KiB length field carries
/// beside the payload.
const DATAGRAM_HEADERS: usize = 8 + 40;

impl quinn::AsyncUdpSocket for Datagrams {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn quinn::UdpPoller>> {
        self.0.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &quinn::udp::Transmit) -> io::Result<()> {
        self.0.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut std::task::Context,
        bufs: &mut [io::IoSliceMut<'_>],
        meta: &mut [quinn::udp::RecvMeta],
    ) -> std::task::Poll<io::Result<usize>> {
        self.0.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.0.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        let fit = (GRO_DATAGRAM_BYTES - DATAGRAM_HEADERS) / usize::from(MAX_UDP_PAYLOAD);
        self.0.max_transmit_segments().min(fit.max(1))
    }

    fn max_receive_segments(&self) -> usize {
        let fit = GRO_DATAGRAM_BYTES.div_ceil(usize::from(MAX_UDP_PAYLOAD));
        self.0.max_receive_segments().min(fit)
    }

    fn may_fragment(&self) -> bool {
        self.0.may_fragment()
    }
}
