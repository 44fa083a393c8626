//! The flow pump: QUIC stream <-> TCP stream, both directions at once, with
//! half-close passed through and an idle timeout over the flow as a whole.
//!
//! Costs per byte and per idle flow are what this module is about:
//!
//! - TCP -> QUIC reads through one [`FLOW_BUFFER_BYTES`] buffer that exists
//!   only while the socket has data: an idle flow waits for readiness without
//!   it, so 1,000 quiet flows do not hold 1,000 buffers.
//! - QUIC -> TCP writes quinn's own received chunks (no second buffer, no
//!   copy), and gathers every chunk quinn already holds, up to
//!   [`UPSTREAM_WRITE_BATCH_BYTES`], into one vectored write: one syscall
//!   (and one wake-up of the reader) per batch instead of one per QUIC packet.

use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn::Chunk;
use smol::future;
use smol::net::TcpStream;
use smol::{Async, Timer};

use crate::counters::Flows;
use crate::limits::{FLOW_BUFFER_BYTES, UPSTREAM_WRITE_BATCH_BYTES, UPSTREAM_WRITE_BATCH_CHUNKS};

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
///
/// Bytes are added to `bytes` (the side's counters) as they are handed on:
/// each read from TCP once quinn has taken it, each write to TCP as the
/// kernel takes it, whether the flow ends cleanly or not.
pub async fn pump(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    tcp: TcpStream,
    idle: Duration,
    bytes: &Flows,
) -> io::Result<Moved> {
    let start = Instant::now();
    // Milliseconds since `start` as a wrapping u32: 32-bit MIPS routers have no
    // 64-bit atomics, and a 49-day wrap cannot hide an idle timeout of seconds.
    let now_ms = || start.elapsed().as_millis() as u32;
    let last = AtomicU32::new(0);
    let touch = || last.store(now_ms(), Ordering::Relaxed);
    // The reactor handle itself: readiness without a buffer, and vectored writes.
    let tcp: Arc<Async<std::net::TcpStream>> = tcp.into();

    let up = async {
        let mut total = 0u64;
        loop {
            // Wait without a buffer; take one only while the socket has data.
            tcp.readable().await?;
            let mut buf = vec![0u8; FLOW_BUFFER_BYTES];
            loop {
                let n = match tcp.get_ref().read(&mut buf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                if n == 0 {
                    // Ignore "already finished/reset": the peer may have gone first.
                    let _ = send.finish();
                    return Ok::<u64, io::Error>(total);
                }
                touch();
                send.write_all(&buf[..n]).await.map_err(io::Error::from)?;
                bytes.sent(n as u64);
                total += n as u64;
            }
        }
    };
    let down = async {
        let mut total = 0u64;
        loop {
            // The first chunk is awaited; the batch then takes what else quinn
            // holds already, without waiting for more.
            let Some(first) = recv
                .read_chunk(UPSTREAM_WRITE_BATCH_BYTES, true)
                .await
                .map_err(io::Error::from)?
            else {
                let _ = tcp.get_ref().shutdown(Shutdown::Write);
                return Ok::<u64, io::Error>(total);
            };
            touch();
            let mut len = first.bytes.len();
            let mut batch = Vec::with_capacity(UPSTREAM_WRITE_BATCH_CHUNKS);
            batch.push(first.bytes);
            let mut ended = false;
            while len < UPSTREAM_WRITE_BATCH_BYTES && batch.len() < UPSTREAM_WRITE_BATCH_CHUNKS {
                let more = recv.read_chunk(UPSTREAM_WRITE_BATCH_BYTES - len, true);
                match future::poll_once(more).await {
                    Some(Ok(Some(Chunk { bytes, .. }))) => {
                        len += bytes.len();
                        batch.push(bytes);
                    }
                    Some(Ok(None)) => {
                        ended = true;
                        break;
                    }
                    Some(Err(e)) => return Err(io::Error::from(e)),
                    None => break,
                }
            }
            write_all_vectored(&tcp, &batch, bytes).await?;
            total += len as u64;
            if ended {
                let _ = tcp.get_ref().shutdown(Shutdown::Write);
                return Ok(total);
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

/// Writes every chunk to `tcp`, as few `writev` calls as the socket allows,
/// counting each call's bytes as received from Florete.
async fn write_all_vectored<B: std::ops::Deref<Target = [u8]>>(
    tcp: &Async<std::net::TcpStream>,
    chunks: &[B],
    bytes: &Flows,
) -> io::Result<()> {
    let mut iov: Vec<IoSlice<'_>> = chunks.iter().map(|c| IoSlice::new(c)).collect();
    let mut rest = &mut iov[..];
    while !rest.is_empty() {
        let n = tcp
            .write_with(|mut s: &std::net::TcpStream| s.write_vectored(&*rest))
            .await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        bytes.received(n as u64);
        IoSlice::advance_slices(&mut rest, n);
    }
    Ok(())
}
