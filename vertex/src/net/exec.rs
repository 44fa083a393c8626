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

/// quinn's smol runtime, except that connection and endpoint drivers run on
/// the vertex's executor.
#[derive(Debug)]
pub(crate) struct VertexRuntime;

impl quinn::Runtime for VertexRuntime {
    fn new_timer(&self, t: Instant) -> Pin<Box<dyn quinn::AsyncTimer>> {
        quinn::SmolRuntime.new_timer(t)
    }

    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) {
        EXECUTOR.spawn(future).detach();
    }

    fn wrap_udp_socket(
        &self,
        sock: std::net::UdpSocket,
    ) -> io::Result<Arc<dyn quinn::AsyncUdpSocket>> {
        quinn::SmolRuntime.wrap_udp_socket(sock)
    }
}
