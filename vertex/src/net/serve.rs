//! The serving side: accept QUIC connections, learn who calls (the caller's
//! SVID, and its SHA-256 for the ACL's pins) and what for (the SNI, looked
//! up), ask the ACL, and forward each allowed stream to the service's upstream.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::sign::CertifiedKey;
use smol::future;
use smol::net::TcpStream;
use smol::Timer;

use super::forward::pump;
use super::take_slot;
use super::tls::{spiffe_id_of, HandshakeFailure};
use crate::acl::{AclHandle, Verdict as AclVerdict};
use crate::callers::CallerTable;
use crate::counters;
use crate::identity::{Dialable, SniRegistry, SpiffeId, TrustDomain};
use crate::limits::{HANDSHAKE_TIMEOUT_S, MAX_CONNECTIONS, MAX_FLOWS, UPSTREAM_CONNECT_TIMEOUT_S};
use crate::wire::{close, Preamble, Verdict};

/// Everything the serving side needs, shared by all connections.
#[derive(Debug)]
pub struct ServerCtx {
    /// This rete.
    pub td: TrustDomain,
    /// Published identities by SNI.
    pub registry: Arc<SniRegistry<Arc<CertifiedKey>>>,
    /// Service -> upstream TCP address.
    pub upstreams: HashMap<SpiffeId, SocketAddr>,
    /// The RBAC table, swappable whole.
    pub acl: Arc<AclHandle>,
    /// Idle timeout of a flow.
    pub idle: Duration,
    /// Connections being served.
    pub connections: AtomicUsize,
    /// Flows being forwarded.
    pub flows: AtomicUsize,
    /// Upstream connections -> their callers, for the identity side-channel.
    pub callers: Arc<Mutex<CallerTable>>,
}

fn code(c: u32) -> quinn::VarInt {
    quinn::VarInt::from_u32(c)
}

/// Accepts connections on `endpoint` until it is closed; the connections'
/// tasks run on the vertex executor ([`super::block_on`]).
pub async fn serve(endpoint: quinn::Endpoint, ctx: Arc<ServerCtx>) {
    while let Some(incoming) = endpoint.accept().await {
        let ctx = Arc::clone(&ctx);
        super::exec::spawn(async move {
            let Some(_slot) = take_slot(&ctx.connections, MAX_CONNECTIONS) else {
                log::warn!(
                    "refused connection from {}: at MAX_CONNECTIONS ({MAX_CONNECTIONS})",
                    incoming.remote_address()
                );
                counters::SERVE.refused(counters::Refusal::Overloaded);
                incoming.refuse();
                return;
            };
            let remote = incoming.remote_address();
            let handshake = async { Some(incoming.await) };
            let timeout = async {
                Timer::after(Duration::from_secs(HANDSHAKE_TIMEOUT_S)).await;
                counters::SERVE_HANDSHAKES.failed(counters::HandshakeAlert::Timeout);
                None
            };
            match future::or(handshake, timeout).await {
                Some(Ok(conn)) => connection(conn, &ctx).await,
                Some(Err(error)) => {
                    counters::SERVE_HANDSHAKES.failed_with(&error);
                    log::warn!(
                        "refused connection from {remote}: {}",
                        HandshakeFailure {
                            error: &error,
                            ours_is_client: false
                        }
                    )
                }
                None => log::warn!(
                    "refused connection from {remote}: no handshake within {HANDSHAKE_TIMEOUT_S} s"
                ),
            }
        })
        .detach();
    }
}

/// Why a connection is closed right after its handshake: close code, reason, caller if known.
type Refusal = (u32, &'static str, Option<Box<SpiffeId>>);

/// Who calls: the caller's SPIFFE ID and the SHA-256 of its certificate's DER.
#[derive(Debug)]
struct Caller {
    /// Shared with the side-channel's table while a flow runs.
    id: Arc<SpiffeId>,
    cert_sha256: [u8; 32],
}

/// Who is calling, what for, and in which preamble version, once the handshake is done.
fn identify(
    conn: &quinn::Connection,
    ctx: &ServerCtx,
) -> Result<(Caller, Dialable, Preamble), Refusal> {
    let caller = conn
        .peer_identity()
        .and_then(|any| {
            any.downcast::<Vec<pki_types::CertificateDer<'static>>>()
                .ok()
        })
        .ok_or((close::BAD_IDENTITY, "no client certificate", None))?;
    let leaf = caller
        .first()
        .ok_or((close::BAD_IDENTITY, "empty client chain", None))?;
    let digest = ring::digest::digest(&ring::digest::SHA256, leaf.as_ref());
    let mut cert_sha256 = [0u8; 32];
    cert_sha256.copy_from_slice(digest.as_ref());
    let caller = spiffe_id_of(leaf, &ctx.td).map_err(|e| {
        log::warn!("refused caller from {}: {e}", conn.remote_address());
        (
            close::BAD_IDENTITY,
            "caller certificate names no principal of this rete",
            None,
        )
    })?;
    let (sni, alpn) = conn
        .handshake_data()
        .and_then(|any| any.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .map(|h| (h.server_name, h.protocol))
        .unwrap_or_default();
    let sni = sni.ok_or((
        close::UNKNOWN_SERVICE,
        "no SNI",
        Some(Box::new(caller.clone())),
    ))?;
    let (target, _) = ctx.registry.lookup(&sni).ok_or((
        close::UNKNOWN_SERVICE,
        "SNI names nothing published",
        Some(Box::new(caller.clone())),
    ))?;
    // rustls already refused a client offering no version we speak.
    let preamble = alpn.as_deref().and_then(Preamble::from_alpn).ok_or((
        close::BAD_PREAMBLE,
        "no Florete ALPN negotiated",
        Some(Box::new(caller.clone())),
    ))?;
    let caller = Caller {
        id: Arc::new(caller),
        cert_sha256,
    };
    Ok((caller, target.clone(), preamble))
}

async fn connection(conn: quinn::Connection, ctx: &Arc<ServerCtx>) {
    let (caller, target, preamble) = match identify(&conn, ctx) {
        Ok(x) => x,
        Err((c, reason, caller)) => {
            match caller {
                Some(id) => log::warn!("refused {id} from {}: {reason}", conn.remote_address()),
                None => log::warn!("refused caller from {}: {reason}", conn.remote_address()),
            }
            counters::SERVE.refused(counters::Refusal::Identity);
            conn.close(code(c), reason.as_bytes());
            return;
        }
    };
    match acl_refusal(ctx, &caller, target.id()) {
        Ok(None) => {}
        Ok(Some(reason)) => {
            log::warn!("refused {} -> {target}: {}", caller.id, reason.as_str());
            let c = if reason == Verdict::Denied {
                close::DENIED
            } else {
                close::UNKNOWN_SERVICE
            };
            counters::SERVE.refused_with(reason);
            conn.close(code(c), reason.as_str().as_bytes());
            return;
        }
        Err(NotPinned) => return not_pinned(&conn, &caller, &target),
    }
    log::info!(
        "connection {} (certificate sha256 {}) -> {target} from {} ({preamble:?})",
        caller.id,
        Sha256(&caller.cert_sha256),
        conn.remote_address()
    );
    let caller = Arc::new(caller);
    let service = Arc::new(target.id().clone());
    let target = Arc::new(target);
    loop {
        match conn.accept_bi().await {
            Ok((send, recv)) => {
                let ctx = Arc::clone(ctx);
                let (caller, target, service) = (
                    Arc::clone(&caller),
                    Arc::clone(&target),
                    Arc::clone(&service),
                );
                let conn = conn.clone();
                super::exec::spawn(async move {
                    let who = Who {
                        caller: &caller,
                        target: &target,
                        service: &service,
                    };
                    stream(send, recv, &conn, &ctx, who, preamble).await
                })
                .detach();
            }
            Err(_) => return,
        }
    }
}

/// The caller's certificate is not pinned: the whole connection is refused,
/// since every flow on it presents the same certificate.
#[derive(Debug)]
struct NotPinned;

/// Lowercase hex of a SHA-256, for log lines (the form `enrollment.log` uses).
struct Sha256<'a>(&'a [u8; 32]);

impl core::fmt::Display for Sha256<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mut buf = [0u8; 64];
        f.write_str(crate::hex::encode(self.0, &mut buf))
    }
}

fn not_pinned(conn: &quinn::Connection, caller: &Caller, target: &Dialable) {
    log::warn!(
        "refused {} -> {target} from {}: certificate sha256 {} is not pinned for it (not issued by retectl, or replaced longer ago than the rete's pin overlap)",
        caller.id,
        conn.remote_address(),
        Sha256(&caller.cert_sha256)
    );
    counters::SERVE.refused(counters::Refusal::NotPinned);
    conn.close(code(close::NOT_PINNED), b"certificate not pinned");
}

fn acl_refusal(
    ctx: &ServerCtx,
    caller: &Caller,
    target: &SpiffeId,
) -> Result<Option<Verdict>, NotPinned> {
    // A clock before 1970 reads as 0: only pins with an end can be affected, and they hold.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match ctx
        .acl
        .load()
        .check(&caller.id, &caller.cert_sha256, target, now)
    {
        AclVerdict::Allowed => Ok(None),
        AclVerdict::Denied => Ok(Some(Verdict::Denied)),
        AclVerdict::UnknownService => Ok(Some(Verdict::UnknownService)),
        AclVerdict::NotPinned => Err(NotPinned),
    }
}

/// Answers `verdict` and ends the stream. The caller's bytes behind the hello
/// (preamble version 2) are discarded unread: STOP_SENDING tells the caller
/// to send no more of them.
async fn refuse_stream(mut send: quinn::SendStream, mut recv: quinn::RecvStream, verdict: Verdict) {
    counters::SERVE.refused_with(verdict);
    let _ = recv.stop(code(close::DONE));
    drop(recv);
    let _ = send.write_all(&[verdict as u8]).await;
    let _ = send.finish();
    // Wait for the verdict to be delivered before the stream is dropped.
    let _ = future::or(async { send.stopped().await.ok().flatten() }, async {
        Timer::after(Duration::from_secs(2)).await;
        None
    })
    .await;
}

/// Who a flow is for: the caller, and the service (as dialled and as an ID).
#[derive(Clone, Copy)]
struct Who<'a> {
    caller: &'a Caller,
    target: &'a Dialable,
    service: &'a Arc<SpiffeId>,
}

/// One flow: the hello, the checks, the upstream connect, the verdict, then
/// the pump. Nothing the caller sent behind the hello is read before the
/// verdict `Allowed` is written: the pump is the first reader of those bytes.
/// While the pump runs, the side-channel can name the caller of its upstream
/// connection.
async fn stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    conn: &quinn::Connection,
    ctx: &ServerCtx,
    who: Who<'_>,
    preamble: Preamble,
) {
    let (caller, target) = (&who.caller.id, who.target);
    let mut hello = [0u8; 1];
    if recv.read_exact(&mut hello).await.is_err() || hello[0] != preamble.hello() {
        log::warn!("refused stream {caller} -> {target}: bad preamble");
        counters::SERVE.refused(counters::Refusal::Other);
        let _ = send.reset(code(close::BAD_PREAMBLE));
        return;
    }
    let Some(_flow) = take_slot(&ctx.flows, MAX_FLOWS) else {
        log::warn!("refused flow {caller} -> {target}: at MAX_FLOWS ({MAX_FLOWS})");
        return refuse_stream(send, recv, Verdict::Overloaded).await;
    };
    // Checked per flow as well: an ACL swapped since the handshake, or a pin
    // that ran out, applies to new flows.
    match acl_refusal(ctx, who.caller, target.id()) {
        Ok(None) => {}
        Ok(Some(v)) => {
            log::warn!("refused flow {caller} -> {target}: {}", v.as_str());
            return refuse_stream(send, recv, v).await;
        }
        Err(NotPinned) => return not_pinned(conn, who.caller, target),
    }
    let Some(&upstream) = ctx.upstreams.get(target.id()) else {
        log::warn!("refused flow {caller} -> {target}: no upstream configured");
        return refuse_stream(send, recv, Verdict::UnknownService).await;
    };
    let connect = async { Some(TcpStream::connect(upstream).await) };
    let timeout = async {
        Timer::after(Duration::from_secs(UPSTREAM_CONNECT_TIMEOUT_S)).await;
        None
    };
    let tcp = match future::or(connect, timeout).await {
        Some(Ok(tcp)) => tcp,
        Some(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            log::warn!("flow {caller} -> {target}: upstream {upstream} refused the connection");
            return refuse_stream(send, recv, Verdict::UpstreamRefused).await;
        }
        Some(Err(e)) => {
            log::warn!("flow {caller} -> {target}: upstream {upstream}: {e}");
            return refuse_stream(send, recv, Verdict::UpstreamUnreachable).await;
        }
        None => {
            log::warn!("flow {caller} -> {target}: upstream {upstream} did not answer");
            return refuse_stream(send, recv, Verdict::UpstreamUnreachable).await;
        }
    };
    let _ = tcp.set_nodelay(true);
    // Recorded before the verdict: the caller's first bytes, and so the
    // upstream's first question, can only follow it.
    let _recorded = super::callers::record(&ctx.callers, &tcp, &who.caller.id, who.service);
    if send.write_all(&[Verdict::Allowed as u8]).await.is_err() {
        return;
    }
    counters::SERVE.opened();
    match pump(send, recv, tcp, ctx.idle, &counters::SERVE).await {
        Ok(m) => log::debug!(
            "flow {caller} -> {target} done: {} bytes in, {} out",
            m.to_peer,
            m.from_peer
        ),
        Err(e) => log::info!("flow {caller} -> {target} ended: {e}"),
    }
}
