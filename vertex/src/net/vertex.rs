//! Assembles a running vertex from a verified artifact and its credentials:
//! the serving endpoint, the dialer, and one SOCKS5 listener per caller identity.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::dial::{client_endpoint_on, Dialer};
use super::exec::{self, Runtime};
use super::reset::ResetSecret;
use super::serve::{serve, ServerCtx};
use super::socks::{bind_preferred, serve_socks, RouteTable, SocksCtx};
use super::tls::{load_ca, registry, server_config, Credentials};
use super::{transport, NetError};
use crate::acl::{Acl, AclHandle, Swap};
use crate::artifact::{Change, VertexConfig};
use crate::callers::{CallerTable, MAX_CALLER_ENTRIES};
use crate::identity::{Dialable, SpiffeId};

/// What a vertex starts from: a validated artifact and the files it names.
#[derive(Debug)]
pub struct VertexSetup {
    /// The verified, validated vertex artifact.
    pub cfg: VertexConfig,
    /// PEM of the rete CA.
    pub ca_pem: Vec<u8>,
    /// Credentials of the principals the artifact lists.
    pub credentials: Vec<Arc<Credentials>>,
    /// The scope's local port offset, added to every preferred SOCKS5 port.
    pub port_offset: u16,
    /// Address SOCKS5 listeners bind (loopback: only local apps may use them).
    pub socks_ip: IpAddr,
    /// The stateless-reset secret of the serving endpoint: the same in every
    /// process of this vertex ([`ResetSecret::derive`]), so a restarted vertex
    /// resets its predecessor's connections and callers redial at once.
    pub reset_secret: ResetSecret,
    /// The scope's runtime root: each published service's identity
    /// side-channel socket is bound under it
    /// ([`crate::contract::caller_socket_rel`]). `None`: no side-channel.
    pub runtime: Option<PathBuf>,
}

/// One SOCKS5 listener as bound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocksBinding {
    /// The identity every flow through it uses.
    pub principal: SpiffeId,
    /// The port the artifact prefers, plus the scope's offset.
    pub preferred: u16,
    /// The port actually bound (differs when the preferred one was taken).
    pub actual: u16,
}

/// A vertex serving in the background of the smol executor.
#[derive(Debug)]
pub struct RunningVertex {
    /// The bound QUIC address, if this vertex serves.
    pub udp: Option<SocketAddr>,
    /// SOCKS5 listeners as bound.
    pub socks: Vec<SocksBinding>,
    /// The RBAC table: `acl.swap(..)` replaces it without dropping flows.
    pub acl: Arc<AclHandle>,
    /// The routes of the SOCKS5 side, swapped like the ACL.
    routes: Arc<Swap<RouteTable>>,
    /// The artifact the process was built from, with the hot tables applied since.
    cfg: VertexConfig,
    endpoint: Option<quinn::Endpoint>,
    /// The dialer's endpoint, if this vertex has SOCKS5 listeners.
    client: Option<quinn::Endpoint>,
    serving: Option<Arc<ServerCtx>>,
    dialing: Option<Arc<SocksCtx>>,
    /// The side-channel sockets, removed when the vertex is dropped.
    side_channel: super::callers::SideChannel,
    _tasks: Vec<smol::Task<()>>,
}

fn route_table(cfg: &VertexConfig) -> RouteTable {
    cfg.routes
        .iter()
        .map(|r| (r.target.clone(), r.addr.0))
        .collect()
}

impl RunningVertex {
    /// Flows being forwarded now: (served, dialled for SOCKS5 clients).
    pub fn active_flows(&self) -> (usize, usize) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.serving.as_ref().map_or(0, |c| c.flows.load(Relaxed)),
            self.dialing.as_ref().map_or(0, |c| c.flows.load(Relaxed)),
        )
    }

    /// Moves the running vertex to `new` in place if only its permission
    /// tables change ([`VertexConfig::change_to`]): new flows see the new ACL
    /// and routes at once, established flows keep running. Returns the change;
    /// on [`Change::Restart`] nothing was applied and a new process is needed.
    pub fn apply(&mut self, new: VertexConfig) -> Change {
        let change = self.cfg.change_to(&new);
        if change == Change::Hot {
            self.acl.swap(Acl::from_config(&new));
            self.routes.swap(route_table(&new));
        }
        if change.is_hot() {
            self.cfg = new;
        }
        change
    }

    /// The identity side-channel sockets bound, one per published service.
    pub fn caller_sockets(&self) -> &[PathBuf] {
        &self.side_channel.paths
    }

    /// Closes every connection with close code SHUTDOWN, telling callers to
    /// redial (they drop the connection at once instead of finding it dead)
    /// and the nodes this vertex dials to forget its connections. Follow with
    /// [`RunningVertex::wait_idle`] so the close frames leave before exit.
    ///
    /// The serving endpoint first stops answering handshakes: a closed quinn
    /// endpoint would refuse them (CONNECTION_REFUSED, which a caller must take
    /// for an answer), while silence makes the caller re-attempt until the
    /// next process of this vertex answers.
    pub fn shutdown(&self) {
        if let Some(ep) = &self.endpoint {
            ep.set_server_config(None);
        }
        for ep in self.endpoint.iter().chain(self.client.iter()) {
            ep.close(
                quinn::VarInt::from_u32(crate::wire::close::SHUTDOWN),
                b"vertex shutting down",
            );
        }
    }

    /// Waits until the closed connections are drained (their CONNECTION_CLOSE
    /// frames sent). Unbounded on a lossy path: bound it with a timer.
    pub async fn wait_idle(&self) {
        for ep in self.endpoint.iter().chain(self.client.iter()) {
            ep.wait_idle().await;
        }
    }
}

/// Binds and starts everything the artifact describes.
///
/// A UDP listen address that cannot be bound is an error (the node could not
/// serve); a SOCKS5 port that is taken is not: another port is bound and logged.
/// Its tasks run only while some thread is in [`super::block_on`].
pub fn start(setup: VertexSetup) -> Result<RunningVertex, NetError> {
    let cfg = &setup.cfg;
    let idle = Duration::from_secs(u64::from(cfg.idle_timeout_s.max(1)));
    let roots = load_ca(&setup.ca_pem)?;
    let creds_of = |id: &SpiffeId| setup.credentials.iter().find(|c| &c.id == id).cloned();
    let acl = Arc::new(AclHandle::new(Acl::from_config(cfg)));
    let routes = Arc::new(Swap::new(route_table(cfg)));
    let mut tasks = Vec::new();

    let mut published = Vec::new();
    let mut upstreams = HashMap::new();
    for s in cfg.services.iter() {
        let creds = creds_of(&s.id)
            .ok_or_else(|| NetError::CertificateIdMismatch(Box::new(s.id.clone())))?;
        let d = Dialable::new(s.id.clone())
            .map_err(|_| NetError::Tls("published identity is not dialable"))?;
        published.push((d, creds));
        upstreams.insert(s.id.clone(), s.upstream.0);
    }

    // Kept to read the flows in progress (`active_flows`).
    let (mut serving, mut dialing) = (None, None);
    let callers = Arc::new(Mutex::new(CallerTable::new(MAX_CALLER_ENTRIES)));
    #[cfg_attr(not(unix), allow(unused_mut))]
    let mut side_channel = super::callers::SideChannel::default();
    #[cfg(unix)]
    if let (Some(runtime), Some(_)) = (&setup.runtime, cfg.listen) {
        for s in cfg.services.iter() {
            let path = runtime.join(crate::contract::caller_socket_rel(&cfg.name, &s.id));
            match super::callers::bind(&path, s.caller_socket.as_ref()) {
                Ok(listener) => {
                    log::info!("identity side-channel of {} on {}", s.id, path.display());
                    tasks.push(exec::spawn(super::callers::serve_socket(
                        listener,
                        Arc::new(s.id.clone()),
                        Arc::clone(&callers),
                        Arc::clone(&side_channel.active),
                    )));
                    side_channel.paths.push(path);
                }
                // The service is still served; only its side-channel is missing.
                Err(e) => log::error!("no identity side-channel for {}: {e}", s.id),
            }
        }
    }
    let (udp, endpoint) = match cfg.listen {
        Some(listen) => {
            let tls = server_config(Arc::clone(&roots), Arc::new(registry(&published)))?;
            let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
                .map_err(|_| NetError::Tls("QUIC server config"))?;
            let mut sc = quinn::ServerConfig::with_crypto(Arc::new(quic));
            sc.transport_config(transport(idle));
            let socket = UdpSocket::bind(listen.0).map_err(|e| NetError::Bind(listen.0, e))?;
            super::size_udp_buffers(&socket);
            let ep = quinn::Endpoint::new(
                setup.reset_secret.endpoint_config(),
                Some(sc),
                socket,
                Arc::new(Runtime::VERTEX),
            )?;
            let bound = ep.local_addr()?;
            log::info!(
                "vertex {} serving {} service(s) on udp {bound}",
                cfg.name,
                published.len()
            );
            let ctx = Arc::new(ServerCtx {
                td: cfg.rete.clone(),
                registry: Arc::new(registry(&published)),
                upstreams,
                acl: Arc::clone(&acl),
                idle,
                connections: AtomicUsize::new(0),
                flows: AtomicUsize::new(0),
                callers: Arc::clone(&callers),
            });
            serving = Some(Arc::clone(&ctx));
            tasks.push(exec::spawn(serve(ep.clone(), ctx)));
            (Some(bound), Some(ep))
        }
        None => (None, None),
    };

    let mut socks = Vec::new();
    let mut client = None;
    if !cfg.socks.is_empty() {
        let ep = client_endpoint_on(Arc::new(Runtime::VERTEX))?;
        client = Some(ep.clone());
        let dialer = Arc::new(Dialer::with_endpoint(ep, Arc::clone(&roots), idle));
        let ctx = Arc::new(SocksCtx {
            td: cfg.rete.clone(),
            dialer,
            routes: Arc::clone(&routes),
            idle,
            flows: AtomicUsize::new(0),
        });
        dialing = Some(Arc::clone(&ctx));
        for l in cfg.socks.iter() {
            let Some(creds) = creds_of(&l.principal) else {
                continue;
            };
            let preferred = l.port.checked_add(setup.port_offset).unwrap_or(0);
            match bind_preferred(setup.socks_ip, preferred) {
                Ok((listener, taken)) => {
                    let actual = listener.local_addr().map(|a| a.port()).unwrap_or(0);
                    if taken {
                        log::warn!(
                            "SOCKS5 for {}: preferred port {preferred} is taken; bound {}:{actual}",
                            l.principal,
                            setup.socks_ip
                        );
                    } else {
                        log::info!("SOCKS5 for {} on {}:{actual}", l.principal, setup.socks_ip);
                    }
                    socks.push(SocksBinding {
                        principal: l.principal.clone(),
                        preferred,
                        actual,
                    });
                    tasks.push(exec::spawn(serve_socks(listener, creds, Arc::clone(&ctx))));
                }
                Err(e) => log::error!(
                    "SOCKS5 for {}: cannot bind {}: {e}",
                    l.principal,
                    setup.socks_ip
                ),
            }
        }
    }
    Ok(RunningVertex {
        udp,
        socks,
        acl,
        routes,
        cfg: setup.cfg,
        endpoint,
        client,
        serving,
        dialing,
        side_channel,
        _tasks: tasks,
    })
}

/// The loopback address SOCKS5 listeners bind by default.
pub const SOCKS_IP: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
