//! The Florete stream preamble and close codes, sans-IO (see docs/wire.md).
//!
//! A QUIC connection serves one (caller, target) pair: the SNI is
//! `sni_for(target)` and the server presents the target's SVID. Each TCP flow
//! is one bidirectional stream on it. The caller opens the stream with one
//! [`STREAM_HELLO`] byte (a stream is invisible to the peer until it carries
//! data); the server answers with one [`Verdict`] byte once it has checked the
//! ACL and connected the upstream. Only after [`Verdict::Allowed`] do the
//! caller's bytes flow.

/// ALPN protocol of the Florete data plane; a peer without it is refused.
pub const ALPN: &[u8] = b"florete/1";

/// The first byte of every stream: the preamble version.
pub const STREAM_HELLO: u8 = 0x01;

/// The server's answer on a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Verdict {
    /// The upstream is connected; bytes flow.
    Allowed = 0x00,
    /// No role of the caller grants the target.
    Denied = 0x01,
    /// The target is not published on this node.
    UnknownService = 0x02,
    /// The upstream refused the TCP connection.
    UpstreamRefused = 0x03,
    /// The upstream did not answer in time or is unreachable.
    UpstreamUnreachable = 0x04,
    /// The server is at a flow limit.
    Overloaded = 0x05,
}

impl Verdict {
    /// Decodes a verdict byte; `None` for an unknown value.
    pub fn from_byte(b: u8) -> Option<Verdict> {
        Some(match b {
            0x00 => Verdict::Allowed,
            0x01 => Verdict::Denied,
            0x02 => Verdict::UnknownService,
            0x03 => Verdict::UpstreamRefused,
            0x04 => Verdict::UpstreamUnreachable,
            0x05 => Verdict::Overloaded,
            _ => return None,
        })
    }

    /// A short reason for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allowed => "allowed",
            Verdict::Denied => "denied by ACL",
            Verdict::UnknownService => "service not published here",
            Verdict::UpstreamRefused => "upstream refused the connection",
            Verdict::UpstreamUnreachable => "upstream unreachable",
            Verdict::Overloaded => "vertex at its flow limit",
        }
    }
}

/// QUIC application close codes a vertex uses, each a distinct refusal.
pub mod close {
    /// Normal shutdown.
    pub const DONE: u32 = 0x0;
    /// The caller's certificate has no single SPIFFE URI SAN in this rete.
    pub const BAD_IDENTITY: u32 = 0x101;
    /// No role of the caller grants the target.
    pub const DENIED: u32 = 0x102;
    /// The SNI names nothing published here.
    pub const UNKNOWN_SERVICE: u32 = 0x103;
    /// The vertex is at its connection limit.
    pub const OVERLOADED: u32 = 0x104;
    /// A stream did not start with [`super::STREAM_HELLO`].
    pub const BAD_PREAMBLE: u32 = 0x105;
    /// The vertex is shutting down (artifact change, restart).
    pub const SHUTDOWN: u32 = 0x106;
    /// A flow was idle for longer than the artifact's idle timeout.
    pub const IDLE: u32 = 0x107;
    /// The caller heard nothing from the server after opening a stream
    /// (`limits::PEER_SILENCE_FLOOR_MS`) and dials a fresh connection.
    pub const UNRESPONSIVE: u32 = 0x108;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_bytes_round_trip() {
        for v in [
            Verdict::Allowed,
            Verdict::Denied,
            Verdict::UnknownService,
            Verdict::UpstreamRefused,
            Verdict::UpstreamUnreachable,
            Verdict::Overloaded,
        ] {
            assert_eq!(Verdict::from_byte(v as u8), Some(v));
        }
        assert_eq!(Verdict::from_byte(0x42), None);
    }
}
