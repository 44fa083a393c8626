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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::limits::{GRO_DATAGRAM_BYTES, MAX_UDP_PAYLOAD};

static EXECUTOR: smol::Executor<'static> = smol::Executor::new();

/// Spawns a vertex task (run by whoever is in [`block_on`]).
///
/// A task is polled only when something woke it, whereas the future given to
/// [`block_on`] is polled on every turn of the loop: work that should not
/// repeat on every packet (e.g. a read of the signal pipe) belongs in a task.
///
/// Boxed first, so the executor's task machinery is compiled once per output
/// type rather than once per future type (flash on a router: each copy of
/// `async_task::RawTask` is kilobytes); one allocation per task, which the
/// executor made anyway.
pub fn spawn<T: Send + 'static>(f: impl Future<Output = T> + Send + 'static) -> smol::Task<T> {
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
        Box::pin(LazyTimer {
            timer: smol::Timer::at(t),
            armed: Some(t),
            deadline: t,
        })
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
        Ok(Arc::new(Datagrams {
            inner,
            blocked: AtomicBool::new(false),
        }))
    }
}

/// quinn's smol UDP socket, with segment counts that fit [`MAX_UDP_PAYLOAD`]
/// datagrams into the kernel's 64 KiB ([`GRO_DATAGRAM_BYTES`]), and a
/// writability check that asks the reactor only after a send found the
/// socket full ([`Writable`]).
///
/// quinn sizes its receive buffer as payload x receive segments x 32 slots,
/// and the kernel's report of 64 GRO segments would make that 18 MiB at
/// 8,952 bytes; no coalesced receive exceeds 64 KiB, so `ceil(64 KiB /
/// payload)` segments per slot hold every one. On the send side quinn may
/// batch 10 segments of the path MTU, which above 6,550 bytes would not fit
/// one GSO send; `(64 KiB - headers) / payload` always does.
#[derive(Debug)]
struct Datagrams {
    inner: Arc<dyn quinn::AsyncUdpSocket>,
    /// The last send found the socket's buffer full (`WouldBlock`).
    blocked: AtomicBool,
}

/// UDP and IPv6 headers, the most a GSO send's 64 KiB length field carries
/// beside the payload.
const DATAGRAM_HEADERS: usize = 8 + 40;

impl quinn::AsyncUdpSocket for Datagrams {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn quinn::UdpPoller>> {
        Box::pin(Writable {
            inner: self.inner.clone().create_io_poller(),
            socket: self,
        })
    }

    fn try_send(&self, transmit: &quinn::udp::Transmit) -> io::Result<()> {
        let sent = self.inner.try_send(transmit);
        if matches!(&sent, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
            self.blocked.store(true, Ordering::Relaxed);
        }
        sent
    }

    fn poll_recv(
        &self,
        cx: &mut std::task::Context,
        bufs: &mut [io::IoSliceMut<'_>],
        meta: &mut [quinn::udp::RecvMeta],
    ) -> std::task::Poll<io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        let fit = (GRO_DATAGRAM_BYTES - DATAGRAM_HEADERS) / usize::from(MAX_UDP_PAYLOAD);
        self.inner.max_transmit_segments().min(fit.max(1))
    }

    fn max_receive_segments(&self) -> usize {
        let fit = GRO_DATAGRAM_BYTES.div_ceil(usize::from(MAX_UDP_PAYLOAD));
        self.inner.max_receive_segments().min(fit)
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

/// quinn asks this before every send. Its smol poller answers with async-io's
/// `writable()`, which is pending until the reactor has reported the socket
/// writable, so every burst of packets cost a trip through the reactor (an
/// `epoll_ctl` to ask, an `epoll_wait` to hear it, another `epoll_ctl` to stop
/// asking) although a UDP socket is nearly always writable: three or four
/// such trips per new flow on each vertex. quinn's contract is "likely
/// writable": so this says yes until a send actually finds the socket full,
/// and only then waits for the reactor (the kernel's readiness, as before).
#[derive(Debug)]
struct Writable {
    socket: Arc<Datagrams>,
    inner: Pin<Box<dyn quinn::UdpPoller>>,
}

impl quinn::UdpPoller for Writable {
    fn poll_writable(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context,
    ) -> std::task::Poll<io::Result<()>> {
        if !self.socket.blocked.load(Ordering::Relaxed) {
            return std::task::Poll::Ready(Ok(()));
        }
        let ready = std::task::ready!(self.inner.as_mut().poll_writable(cx));
        self.socket.blocked.store(false, Ordering::Relaxed);
        std::task::Poll::Ready(ready)
    }
}

/// A connection's timer for quinn that moves the reactor's timer only when
/// the deadline comes earlier.
///
/// quinn resets its timer whenever its next deadline changes, which is on
/// nearly every packet (the idle timeout moves later with each one). Each
/// `smol::Timer::set_at` removes and inserts the reactor's timer and wakes the
/// reactor (an eventfd write, then one more `epoll_wait` round to read it).
/// Here a later deadline only updates `deadline`: the reactor's timer stays
/// where it was and, when it fires early, is moved to the deadline then (one
/// move instead of one per packet). An earlier deadline moves it at once.
#[derive(Debug)]
struct LazyTimer {
    timer: smol::Timer,
    /// When the reactor's timer fires; `None` once it has fired.
    armed: Option<Instant>,
    /// When quinn wants to be woken.
    deadline: Instant,
}

impl quinn::AsyncTimer for LazyTimer {
    fn reset(mut self: Pin<&mut Self>, at: Instant) {
        self.deadline = at;
        if self.armed.is_none_or(|armed| at < armed) {
            self.timer.set_at(at);
            self.armed = Some(at);
        }
    }

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context) -> std::task::Poll<()> {
        loop {
            if self.armed.is_none() {
                // Fired, and not reset since: quinn resets before it waits again.
                return std::task::Poll::Pending;
            }
            std::task::ready!(Future::poll(Pin::new(&mut self.timer), cx));
            let deadline = self.deadline;
            if self.armed.is_some_and(|armed| armed >= deadline) {
                self.armed = None;
                return std::task::Poll::Ready(());
            }
            // Fired for a deadline that has since moved later: follow it.
            self.timer.set_at(deadline);
            self.armed = Some(deadline);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test fixtures: a failed setup step should abort the test loudly
    use super::*;
    use quinn::{AsyncTimer, AsyncUdpSocket, Runtime as _};
    use std::task::Poll;
    use std::time::Duration;

    fn timer(at: Instant) -> Pin<Box<dyn AsyncTimer>> {
        Runtime::VERTEX.new_timer(at)
    }

    /// Polls `t` until it fires; returns when it did.
    fn fired_at(t: &mut Pin<Box<dyn AsyncTimer>>) -> Instant {
        smol::block_on(std::future::poll_fn(|cx| t.as_mut().poll(cx)));
        Instant::now()
    }

    #[test]
    fn a_deadline_moved_later_is_not_fired_early() {
        let start = Instant::now();
        let mut t = timer(start + Duration::from_millis(20));
        t.as_mut().reset(start + Duration::from_millis(120));
        assert!(fired_at(&mut t) >= start + Duration::from_millis(120));
    }

    #[test]
    fn a_deadline_moved_earlier_fires_then() {
        let start = Instant::now();
        let mut t = timer(start + Duration::from_secs(30));
        t.as_mut().reset(start + Duration::from_millis(30));
        let at = fired_at(&mut t);
        assert!(at >= start + Duration::from_millis(30));
        assert!(
            at < start + Duration::from_secs(5),
            "fired {:?} late",
            at - start
        );
    }

    #[test]
    fn a_fired_timer_fires_again_after_a_reset() {
        let start = Instant::now();
        let mut t = timer(start + Duration::from_millis(10));
        fired_at(&mut t);
        // Later than the first deadline, as quinn's next deadline always is.
        t.as_mut().reset(Instant::now() + Duration::from_millis(40));
        let at = fired_at(&mut t);
        assert!(at >= start + Duration::from_millis(50));
        assert!(at < start + Duration::from_secs(5));
    }

    #[test]
    fn a_fired_timer_without_a_reset_stays_quiet() {
        let mut t = timer(Instant::now());
        fired_at(&mut t);
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        assert!(t.as_mut().poll(&mut cx).is_pending());
    }

    /// A UDP socket whose buffer is full on demand, and which counts how often
    /// its poller (the reactor, for the real one) is asked.
    #[derive(Debug, Default)]
    struct Fake {
        full: std::sync::atomic::AtomicBool,
        asked: std::sync::atomic::AtomicUsize,
    }

    #[derive(Debug)]
    struct FakePoller(Arc<Fake>);

    impl quinn::UdpPoller for FakePoller {
        fn poll_writable(self: Pin<&mut Self>, _: &mut std::task::Context) -> Poll<io::Result<()>> {
            self.0.asked.fetch_add(1, Ordering::Relaxed);
            if self.0.full.load(Ordering::Relaxed) {
                Poll::Pending
            } else {
                Poll::Ready(Ok(()))
            }
        }
    }

    impl AsyncUdpSocket for Fake {
        fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn quinn::UdpPoller>> {
            Box::pin(FakePoller(self))
        }
        fn try_send(&self, _: &quinn::udp::Transmit) -> io::Result<()> {
            if self.full.load(Ordering::Relaxed) {
                Err(io::ErrorKind::WouldBlock.into())
            } else {
                Ok(())
            }
        }
        fn poll_recv(
            &self,
            _: &mut std::task::Context,
            _: &mut [io::IoSliceMut<'_>],
            _: &mut [quinn::udp::RecvMeta],
        ) -> Poll<io::Result<usize>> {
            Poll::Pending
        }
        fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
            Ok(([127, 0, 0, 1], 1).into())
        }
    }

    #[test]
    fn writability_is_asked_of_the_reactor_only_after_a_full_send() {
        let fake = Arc::new(Fake::default());
        let socket = Arc::new(Datagrams {
            inner: fake.clone(),
            blocked: AtomicBool::new(false),
        });
        let mut poller = socket.clone().create_io_poller();
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let transmit = quinn::udp::Transmit {
            destination: ([127, 0, 0, 1], 2).into(),
            ecn: None,
            contents: &[0u8; 1200],
            segment_size: None,
            src_ip: None,
        };
        let asked = || fake.asked.load(Ordering::Relaxed);
        // Room in the buffer: "likely writable", the reactor is not asked.
        for _ in 0..3 {
            assert!(matches!(
                poller.as_mut().poll_writable(&mut cx),
                Poll::Ready(Ok(()))
            ));
            socket.try_send(&transmit).unwrap();
        }
        assert_eq!(asked(), 0);
        // A send finds the buffer full: from now on the reactor decides.
        fake.full.store(true, Ordering::Relaxed);
        let e = socket.try_send(&transmit).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert!(poller.as_mut().poll_writable(&mut cx).is_pending());
        assert!(poller.as_mut().poll_writable(&mut cx).is_pending());
        assert_eq!(asked(), 2);
        // The kernel reports room: ready, and back to not asking.
        fake.full.store(false, Ordering::Relaxed);
        assert!(matches!(
            poller.as_mut().poll_writable(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(asked(), 3);
        socket.try_send(&transmit).unwrap();
        assert!(matches!(
            poller.as_mut().poll_writable(&mut cx),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(asked(), 3);
    }
}
