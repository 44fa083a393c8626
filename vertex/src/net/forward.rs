//! The flow pump: QUIC stream <-> TCP stream, both directions at once, with
//! half-close passed through and an idle timeout over the flow as a whole.
//! TCP -> QUIC copies through one fixed buffer per flow; QUIC -> TCP writes
//! quinn's received chunks directly (bounded by the stream window).

use std::io;
use std::net::Shutdown;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use smol::future;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::TcpStream;
use smol::Timer;

use crate::limits::FLOW_BUFFER_BYTES;

/// Bytes moved by a finished flow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Moved {
    /// TCP -> QUIC.
    pub to_peer: u64,
    /// QUIC -> TCP.
    pub from_peer: u64,
}

/// Copies bytes both ways until both directions have ended.
///
/// TCP EOF finishes the QUIC send side; the QUIC stream's end shuts the TCP
/// write side, so each direction closes on its own (half-close). A flow with
/// no byte in either direction for `idle` ends with `TimedOut`.
pub async fn pump(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    tcp: TcpStream,
    idle: Duration,
) -> io::Result<Moved> {
    let start = Instant::now();
    // Milliseconds since `start` as a wrapping u32: 32-bit MIPS routers have no
    // 64-bit atomics, and a 49-day wrap cannot hide an idle timeout of seconds.
    let now_ms = || start.elapsed().as_millis() as u32;
    let last = AtomicU32::new(0);
    let touch = || last.store(now_ms(), Ordering::Relaxed);
    let mut tcp_r = tcp.clone();
    let mut tcp_w = tcp;

    let up = async {
        let mut buf = vec![0u8; FLOW_BUFFER_BYTES];
        let mut total = 0u64;
        loop {
            let n = tcp_r.read(&mut buf).await?;
            if n == 0 {
                // Ignore "already finished/reset": the peer may have gone first.
                let _ = send.finish();
                return Ok::<u64, io::Error>(total);
            }
            touch();
            send.write_all(&buf[..n]).await.map_err(io::Error::from)?;
            total += n as u64;
        }
    };
    let down = async {
        // quinn hands out its own received chunks: no second buffer per flow
        // and no copy on this side.
        let mut total = 0u64;
        loop {
            match recv
                .read_chunk(FLOW_BUFFER_BYTES, true)
                .await
                .map_err(io::Error::from)?
            {
                None => {
                    let _ = tcp_w.shutdown(Shutdown::Write);
                    return Ok::<u64, io::Error>(total);
                }
                Some(chunk) => {
                    touch();
                    tcp_w.write_all(&chunk.bytes).await?;
                    total += chunk.bytes.len() as u64;
                }
            }
        }
    };
    let both = async {
        let (to_peer, from_peer) = future::try_zip(up, down).await?;
        Ok(Moved { to_peer, from_peer })
    };
    let watchdog = async {
        let tick = (idle / 4).max(Duration::from_millis(250));
        loop {
            Timer::after(tick).await;
            let quiet = Duration::from_millis(u64::from(
                now_ms().wrapping_sub(last.load(Ordering::Relaxed)),
            ));
            if quiet >= idle {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "flow idle for longer than the idle timeout",
                ));
            }
        }
    };
    let result = future::or(both, watchdog).await;
    if result.is_err() {
        // Without this, dropping an unfinished quinn stream would finish it
        // cleanly and the peer would take a truncated flow for a whole one.
        let code = quinn::VarInt::from_u32(crate::wire::close::IDLE);
        let _ = send.reset(code);
        let _ = recv.stop(code);
    }
    result
}
