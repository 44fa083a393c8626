//! Every capacity of the device, in one place, with its reason and its cost.
//!
//! The device parses artifacts into fixed-capacity (`heapless`) types, so each
//! list and string has a ceiling chosen here. `retectl validate` checks every
//! node's compiled artifact against these same constants, so a rete that would
//! not fit a device is refused on the operator's workstation, naming the limit.
//!
//! Strings are inline, fixed-capacity (`heapless::String`). Lists are heap
//! vectors that refuse to grow past their limit: a list at its limit inline
//! would put ~250 KB on the stack of the parsing thread (musl gives threads
//! 128 KB), while a real pilot's artifact needs a few KB. So raising a list
//! limit costs nothing until an artifact uses it, and then RAM in proportion;
//! raising a string limit costs its bytes in every copy of that field.

use core::fmt;

/// Longest trust domain. SPIFFE allows 255; 96 keeps a whole SPIFFE ID under
/// [`MAX_SPIFFE_ID_LEN`] and is far beyond any name an operator types.
pub const MAX_TRUST_DOMAIN_LEN: usize = 96;

/// Longest principal or node name: one DNS label (RFC 1035).
pub const MAX_NAME_LEN: usize = 63;

/// Longest SPIFFE ID: `spiffe://` + trust domain + `/management-plane/` + node + `/` + name.
/// 9 + 96 + 18 + 63 + 1 + 63 = 250, rounded up.
pub const MAX_SPIFFE_ID_LEN: usize = 256;

/// Longest `.rete` hostname: name + node + trust domain + `._v` + `.rete`, with dots.
pub const MAX_HOSTNAME_LEN: usize = 256;

/// Longest scope-relative path inside an artifact (`certs/service/beta/tcp-echo.crt`).
pub const MAX_PATH_LEN: usize = 128;

/// Longest socket address in text (`[ffff:...:ffff]:65535` is 47 bytes; hostnames are not used).
pub const MAX_ADDR_LEN: usize = 64;

/// Longest short text field (schema version, kind, plane, vertex name).
pub const MAX_SHORT_LEN: usize = 16;

/// Largest artifact file the device reads. A vertex artifact at every list
/// limit below is about 170 KB of JSON; 256 KiB leaves room and caps the read.
pub const MAX_ARTIFACT_BYTES: usize = 256 * 1024;

/// Largest enrollment bundle or CSR request `flor enroll` reads: a CA, a
/// handful of PEM certificates and keys, and the signer list fit in 64 KiB.
pub const MAX_BUNDLE_BYTES: usize = 64 * 1024;

/// Largest single JSON string `flor enroll` unescapes from a bundle (one PEM
/// chain). A P-256 leaf plus its CA is ~1.5 KB of PEM; 16 KiB leaves room.
pub const MAX_PEM_LEN: usize = 16 * 1024;

/// Principals one bundle may carry (the same bound as a vertex holds).
pub const MAX_BUNDLE_PRINCIPALS: usize = MAX_PRINCIPALS;

/// Management-plane signers an envelope may authorise. A pilot has one
/// (`primary`) and briefly two while rotating; 4 leaves room for a spare.
pub const MAX_MGMT_SIGNERS: usize = 4;

/// Principals one vertex holds certificates for (node identity, hosted
/// services, users of a laptop). 32 covers a server hosting a handful of
/// services or a shared workstation; each costs ~650 bytes of parse RAM.
pub const MAX_PRINCIPALS: usize = 32;

/// Services one node publishes. 64 so an ACL row's grant fits one `u64` bitmask.
pub const MAX_SERVICES: usize = 64;
const _: () = assert!(MAX_SERVICES <= 64, "ACL grants are a u64 bitmask");

/// Distinct callers allowed to reach any service of one node. 512 rows of
/// ~264 bytes is ~135 KB of parse RAM; a 20-user pilot needs about 30.
pub const MAX_ACL_ROWS: usize = 512;

/// Certificate pins one ACL row carries (schema 1.2): the caller's newest
/// certificate plus older ones still inside their renewal overlap. A renewal
/// needs 2; a principal held on several nodes or renewed twice within the
/// overlap needs more. Each costs 37 bytes of parse RAM and ~90 bytes of JSON.
pub const MAX_PINS: usize = 4;

/// Remote services this node's principals may dial (SOCKS5 targets). Each
/// costs ~330 bytes of parse RAM.
pub const MAX_ROUTES: usize = 128;

/// SOCKS5 listeners on one node, one per caller identity.
pub const MAX_SOCKS_LISTENERS: usize = 16;

/// Vertices one agent supervises. C0 runs exactly one; C1 adds the mesh vertex.
pub const MAX_VERTICES: usize = 2;

/// QUIC connections one vertex serves at once; one more is refused (close
/// code OVERLOADED). A connection serves one (caller, target) pair, so 256
/// covers 20 users times a handful of services with room to spare.
pub const MAX_CONNECTIONS: usize = 256;

/// Concurrent flows (bidirectional streams) one QUIC connection may carry.
/// At least [`MAX_FLOWS`]: one caller's browser may open many flows to one
/// service, and a lower cap would stall the next flow until an old one ends.
/// Plus a quarter, because quinn announces freed stream credit only once 1/8
/// of the window is free, so up to that many closed streams still count.
/// A stream costs quinn a few hundred bytes until data flows.
pub const MAX_STREAMS_PER_CONNECTION: u32 = (MAX_FLOWS + MAX_FLOWS / 4) as u32;

/// Concurrent flows a vertex forwards, server and client side each. A flow
/// holds one [`FLOW_BUFFER_BYTES`] buffer only while its TCP side has data to
/// read, so 1,024 flows cap copy buffers at 16 MiB when all move bytes at
/// once and cost ~4-5 KiB each when quiet (`agent/tests/flow_memory.rs`);
/// beyond it new flows get "overloaded".
pub const MAX_FLOWS: usize = 1024;

/// Upstream connections the identity side-channel remembers (`callers`): one
/// per served flow, so it is sized to [`MAX_FLOWS`] and is full only if the
/// flow cap and the table ever disagree. An entry is two socket addresses, two
/// shared `Arc`s and a time (~80 bytes with the map's overhead), held only while
/// its flow runs: 1,024 flows cost ~80 KiB. A flow that finds the table full is
/// still served, logged and counted (`flor_caller_table_full_total`), and its
/// upstream is answered `unknown`.
pub const MAX_CALLER_ENTRIES: usize = MAX_FLOWS;

/// Connections the side-channel sockets of one vertex serve at once (every
/// service's together); one more is closed at once. An upstream asks once per
/// accepted connection, in well under a millisecond, so 32 is plenty for a
/// node's handful of services; each costs a task and a 128-byte line buffer.
pub const MAX_CALLER_LOOKUPS: usize = 32;

/// Seconds a side-channel connection may stay silent before the vertex closes
/// it: an upstream may keep one open and ask per connection it accepts.
pub const CALLER_LOOKUP_IDLE_S: u64 = 60;

/// Open files a vertex asks for (its soft RLIMIT_NOFILE, raised at start up to
/// the hard limit): a flow holds a TCP socket on each side it touches — the
/// SOCKS5 client's on the dialing side, the upstream's on the serving side —
/// so [`MAX_FLOWS`] of each, plus the UDP sockets, listeners, status and key
/// files, and the reactor's epoll, timer and event descriptors. The common
/// default soft limit (1,024 under systemd and procd) would stop a busy vertex
/// below [`MAX_FLOWS`] with "too many open files".
pub const OPEN_FILES_WANTED: u64 = (2 * MAX_FLOWS + 256) as u64;

/// Bytes of the buffer a flow's TCP -> QUIC direction reads through, taken
/// while the socket is readable and given back when it would block (QUIC ->
/// TCP writes quinn's own chunks). 16 KiB keeps syscalls per megabyte low on
/// loopback and RAM bounded on a router.
pub const FLOW_BUFFER_BYTES: usize = 16 * 1024;

/// Most bytes the QUIC -> TCP direction of a flow hands the upstream socket in
/// one vectored write. The chunks are quinn's received packets, already in
/// memory under the stream window, so batching costs no RAM: it turns one
/// syscall (and one wake-up of the upstream reader) per ~1.4 KB packet into
/// one per batch. 64 KiB is what a loopback or LAN socket takes in one go.
pub const UPSTREAM_WRITE_BATCH_BYTES: usize = 64 * 1024;

/// Most chunks in one such write (an `iovec` each; far under `IOV_MAX`,
/// 1,024 on Linux). 64 covers [`UPSTREAM_WRITE_BATCH_BYTES`] of 1,200-byte
/// packets, the smallest QUIC allows.
pub const UPSTREAM_WRITE_BATCH_CHUNKS: usize = 64;

/// Kernel queue asked for on each QUIC UDP socket, receive and send. Kernel
/// memory, used only while datagrams wait; 1 MiB holds ~700 full datagrams,
/// a few milliseconds of a fast flow, where Linux's default of ~208 KiB
/// dropped about 1% of a loopback bulk transfer's datagrams (each drop a
/// congestion signal). The kernel caps it at `net.core.rmem_max`.
pub const UDP_SOCKET_BUFFER_BYTES: usize = 1024 * 1024;

/// Largest UDP payload a vertex sends or accepts, and the ceiling of QUIC's
/// path MTU discovery: 8,952 bytes, a 9,000-byte jumbo frame less the IPv6
/// and UDP headers. A path starts at QUIC's 1,200 bytes and probes upward;
/// on an ordinary 1,500-byte link the probes above it are lost and the path
/// settles at 1,452 as before, while loopback (a node's own services, the
/// bench) and jumbo-frame LANs carry 6x fewer packets for the same bytes,
/// and a QUIC connection pays its costs per packet. It costs no RAM: the
/// endpoint's receive buffer is sized by [`GRO_DATAGRAM_BYTES`], not by this.
pub const MAX_UDP_PAYLOAD: u16 = 8952;

/// Most bytes the kernel hands over as one (GRO-coalesced) receive or takes
/// as one segmented (GSO) send: the 16-bit UDP and IPv4 length fields cap
/// both at 64 KiB. quinn sizes its receive slots as payload x segments, so a
/// vertex reports `ceil(GRO_DATAGRAM_BYTES / MAX_UDP_PAYLOAD)` receive segments
/// (8 segments of 8,952 bytes = 70 KiB per slot, 32 slots: 2.2 MiB of which
/// only what the kernel writes becomes resident) and at most as many segments
/// per send as fit in `GRO_DATAGRAM_BYTES` beside the UDP and IPv6 headers (7).
pub const GRO_DATAGRAM_BYTES: usize = 64 * 1024;

/// QUIC receive window of one stream: how much one flow may have in flight.
/// 1 MiB keeps a LAN link full; a router pays it only for flows that fill it.
pub const STREAM_RECEIVE_WINDOW: u32 = 1024 * 1024;

/// QUIC receive window of one connection (all its flows together).
pub const CONNECTION_RECEIVE_WINDOW: u32 = 4 * 1024 * 1024;

/// QUIC send window of one connection.
pub const SEND_WINDOW: u64 = 4 * 1024 * 1024;

/// Seconds a QUIC handshake or a SOCKS5 negotiation may take.
pub const HANDSHAKE_TIMEOUT_S: u64 = 10;

/// Seconds the server waits for an upstream TCP connect.
pub const UPSTREAM_CONNECT_TIMEOUT_S: u64 = 5;

/// Seconds between QUIC keep-alives on a warm connection (keeps NAT bindings).
pub const KEEP_ALIVE_S: u64 = 15;

/// Milliseconds a caller waits, after opening a stream on a pooled QUIC
/// connection, for any datagram from the peer before it calls the connection
/// dead and retries the flow on a fresh one (the floor; see
/// [`PEER_SILENCE_RTTS`]). A live peer acknowledges the stream's first packet
/// within its ACK delay (25 ms in quinn) whatever the verdict takes, so only a
/// peer that is gone (killed, restarted without resetting us, unplugged)
/// stays silent this long. Lower means faster recovery and more false alarms
/// on a congested link; a false alarm costs one handshake and cuts flows that
/// were idle on the connection, never repeats a request (nothing of the
/// application's is sent before the verdict, docs/wire.md).
pub const PEER_SILENCE_FLOOR_MS: u64 = 500;

/// The silence window in round trips: the caller waits
/// `max(PEER_SILENCE_RTTS x RTT, PEER_SILENCE_FLOOR_MS)`, so a slow link
/// (RTT above ~170 ms) gets three round trips, enough for one lost packet and
/// its retransmission to be answered.
pub const PEER_SILENCE_RTTS: u32 = 3;

/// Milliseconds between handshake attempts to a node that has not answered.
/// quinn retransmits a lost Initial after 1 s, 2 s, 4 s... (PTO doubling from
/// its 333 ms initial RTT), so a handshake begun while the peer's vertex was
/// restarting would reach the new process up to seconds after it is up; a
/// new attempt every 500 ms bounds that wait. Each attempt to a silent node
/// costs one 1,200-byte Initial.
pub const HANDSHAKE_ATTEMPT_INTERVAL_MS: u64 = 500;

/// Handshake attempts one dial keeps in flight at once. The first is never
/// abandoned (a slow but live path still completes on it); beyond this the
/// oldest later one is dropped, so a dead node costs at most this many
/// connection states and their retransmissions.
pub const MAX_HANDSHAKE_ATTEMPTS: usize = 4;

/// Milliseconds a stopping vertex waits after closing its connections (close
/// code SHUTDOWN) for the CONNECTION_CLOSE frames to go out and be drained,
/// before it exits. Peers that receive it redial at once instead of finding
/// the connection dead; 300 ms is many loopback/LAN round trips and keeps a
/// restart for a new version quick. The agent's stop grace must exceed it.
pub const SHUTDOWN_GRACE_MS: u64 = 300;

/// A named limit, reported when an input does not fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Limit {
    /// [`MAX_TRUST_DOMAIN_LEN`]
    TrustDomainLen,
    /// [`MAX_NAME_LEN`]
    NameLen,
    /// [`MAX_SPIFFE_ID_LEN`]
    SpiffeIdLen,
    /// [`MAX_HOSTNAME_LEN`]
    HostnameLen,
    /// [`MAX_PATH_LEN`]
    PathLen,
    /// [`MAX_ADDR_LEN`]
    AddrLen,
    /// [`MAX_SHORT_LEN`]
    ShortLen,
    /// [`MAX_ARTIFACT_BYTES`]
    ArtifactBytes,
    /// [`MAX_MGMT_SIGNERS`]
    MgmtSigners,
    /// [`MAX_PRINCIPALS`]
    Principals,
    /// [`MAX_SERVICES`]
    Services,
    /// [`MAX_ACL_ROWS`]
    AclRows,
    /// [`MAX_PINS`]
    Pins,
    /// [`MAX_ROUTES`]
    Routes,
    /// [`MAX_SOCKS_LISTENERS`]
    SocksListeners,
    /// [`MAX_VERTICES`]
    Vertices,
    /// [`MAX_BUNDLE_BYTES`]
    BundleBytes,
    /// [`MAX_PEM_LEN`]
    PemLen,
}

impl Limit {
    /// Every limit, for tables and for mapping a parser message back to its limit.
    pub const ALL: [Limit; 18] = [
        Limit::TrustDomainLen,
        Limit::NameLen,
        Limit::SpiffeIdLen,
        Limit::HostnameLen,
        Limit::PathLen,
        Limit::AddrLen,
        Limit::ShortLen,
        Limit::ArtifactBytes,
        Limit::MgmtSigners,
        Limit::Principals,
        Limit::Services,
        Limit::AclRows,
        Limit::Pins,
        Limit::Routes,
        Limit::SocksListeners,
        Limit::Vertices,
        Limit::BundleBytes,
        Limit::PemLen,
    ];

    /// The constant's name, as written in this module.
    pub const fn name(self) -> &'static str {
        match self {
            Limit::TrustDomainLen => "MAX_TRUST_DOMAIN_LEN",
            Limit::NameLen => "MAX_NAME_LEN",
            Limit::SpiffeIdLen => "MAX_SPIFFE_ID_LEN",
            Limit::HostnameLen => "MAX_HOSTNAME_LEN",
            Limit::PathLen => "MAX_PATH_LEN",
            Limit::AddrLen => "MAX_ADDR_LEN",
            Limit::ShortLen => "MAX_SHORT_LEN",
            Limit::ArtifactBytes => "MAX_ARTIFACT_BYTES",
            Limit::MgmtSigners => "MAX_MGMT_SIGNERS",
            Limit::Principals => "MAX_PRINCIPALS",
            Limit::Services => "MAX_SERVICES",
            Limit::AclRows => "MAX_ACL_ROWS",
            Limit::Pins => "MAX_PINS",
            Limit::Routes => "MAX_ROUTES",
            Limit::SocksListeners => "MAX_SOCKS_LISTENERS",
            Limit::Vertices => "MAX_VERTICES",
            Limit::BundleBytes => "MAX_BUNDLE_BYTES",
            Limit::PemLen => "MAX_PEM_LEN",
        }
    }

    /// The capacity the limit stands for.
    pub const fn value(self) -> usize {
        match self {
            Limit::TrustDomainLen => MAX_TRUST_DOMAIN_LEN,
            Limit::NameLen => MAX_NAME_LEN,
            Limit::SpiffeIdLen => MAX_SPIFFE_ID_LEN,
            Limit::HostnameLen => MAX_HOSTNAME_LEN,
            Limit::PathLen => MAX_PATH_LEN,
            Limit::AddrLen => MAX_ADDR_LEN,
            Limit::ShortLen => MAX_SHORT_LEN,
            Limit::ArtifactBytes => MAX_ARTIFACT_BYTES,
            Limit::MgmtSigners => MAX_MGMT_SIGNERS,
            Limit::Principals => MAX_PRINCIPALS,
            Limit::Services => MAX_SERVICES,
            Limit::AclRows => MAX_ACL_ROWS,
            Limit::Pins => MAX_PINS,
            Limit::Routes => MAX_ROUTES,
            Limit::SocksListeners => MAX_SOCKS_LISTENERS,
            Limit::Vertices => MAX_VERTICES,
            Limit::BundleBytes => MAX_BUNDLE_BYTES,
            Limit::PemLen => MAX_PEM_LEN,
        }
    }

    /// Finds the limit whose name is `name`.
    pub fn from_name(name: &str) -> Option<Limit> {
        Limit::ALL.iter().copied().find(|l| l.name() == name)
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())?;
        f.write_str(" (")?;
        fmt::Display::fmt(&self.value(), f)?;
        f.write_str(")")
    }
}

std::thread_local! {
    static EXCEEDED: core::cell::Cell<Option<Limit>> = const { core::cell::Cell::new(None) };
}

/// Records that a bounded value being parsed on this thread ran past `limit`.
///
/// serde-json-core reduces custom errors to one message-less variant (its
/// message-carrying variant can panic on long serde messages), so bounded
/// types record the limit here and the artifact parser reads it back with
/// [`take_exceeded_limit`] to name the limit in its error.
pub fn record_exceeded(limit: Limit) {
    EXCEEDED.with(|c| c.set(Some(limit)));
}

/// Takes (and clears) the limit recorded by the last failed parse on this thread.
pub fn take_exceeded_limit() -> Option<Limit> {
    EXCEEDED.with(|c| c.take())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for l in Limit::ALL {
            assert_eq!(Limit::from_name(l.name()), Some(l));
        }
        assert_eq!(Limit::from_name("MAX_NOTHING"), None);
    }
}
