//! The Florete stream preamble and close codes, sans-IO (see docs/wire.md).
//!
//! A QUIC connection serves one (caller, target) pair: the SNI is
//! `sni_for(target)` and the server presents the target's SVID. Each TCP flow
//! is one bidirectional stream on it. The caller opens the stream with one
//! hello byte (a stream is invisible to the peer until it carries data); the
//! server answers with one [`Verdict`] byte once it has checked the ACL and
//! connected the upstream, and forwards nothing of the caller's before that.
//!
//! Two preamble versions exist, chosen per connection by ALPN ([`Preamble`]):
//! version 1 (`florete/1`), where the caller sends nothing but the hello before
//! the verdict, and version 2 (`florete/2`), where the caller may send the
//! application's first bytes right behind the hello, in the same packet. Both
//! sides offer both, so nodes upgrade one at a time.

/// ALPN of preamble version 1: the caller sends only the hello before the verdict.
pub const ALPN_V1: &[u8] = b"florete/1";

/// ALPN of preamble version 2: the hello may carry the application's first bytes.
pub const ALPN_V2: &[u8] = b"florete/2";

/// Hello byte of preamble version 1 (the first byte of every stream).
pub const STREAM_HELLO: u8 = 0x01;

/// Hello byte of preamble version 2.
pub const STREAM_HELLO_V2: u8 = 0x02;

/// A preamble version, fixed per connection by the negotiated ALPN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preamble {
    /// `florete/1`: hello, verdict, then bytes.
    V1,
    /// `florete/2`: hello and the caller's first bytes at once, verdict, then bytes.
    V2,
}

impl Preamble {
    /// Every version this build speaks, most preferred first: the ALPN list
    /// both sides offer. A peer that knows only `florete/1` still connects.
    pub const ALL: [Preamble; 2] = [Preamble::V2, Preamble::V1];

    /// The ALPN protocol id of this version.
    pub fn alpn(self) -> &'static [u8] {
        match self {
            Preamble::V1 => ALPN_V1,
            Preamble::V2 => ALPN_V2,
        }
    }

    /// The version a negotiated ALPN protocol names; `None` for anything else
    /// (no ALPN at all never happens: rustls refuses a peer without a common one).
    pub fn from_alpn(alpn: &[u8]) -> Option<Preamble> {
        Preamble::ALL.into_iter().find(|p| p.alpn() == alpn)
    }

    /// The first byte of every stream of this version.
    pub fn hello(self) -> u8 {
        match self {
            Preamble::V1 => STREAM_HELLO,
            Preamble::V2 => STREAM_HELLO_V2,
        }
    }

    /// Whether the caller may put application bytes behind the hello before
    /// the verdict. Only version 2 servers are told to expect them (a version
    /// 1 peer was promised a lone hello).
    pub fn early_data(self) -> bool {
        self == Preamble::V2
    }
}

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
    /// A stream did not start with its version's hello byte ([`super::Preamble::hello`]).
    pub const BAD_PREAMBLE: u32 = 0x105;
    /// The vertex is shutting down (artifact change, restart).
    pub const SHUTDOWN: u32 = 0x106;
    /// A flow was idle for longer than the artifact's idle timeout.
    pub const IDLE: u32 = 0x107;
    /// The caller heard nothing from the server after opening a stream
    /// (`limits::PEER_SILENCE_FLOOR_MS`) and dials a fresh connection.
    pub const UNRESPONSIVE: u32 = 0x108;
    /// The caller's SPIFFE ID is granted, but its certificate is not one the
    /// artifact pins for it (issued outside retectl, or replaced longer than
    /// the rete's `pin_overlap_days` ago). Closes the connection at its first
    /// check, or on a later flow once a new ACL or the clock ends the pin.
    pub const NOT_PINNED: u32 = 0x109;
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

    #[test]
    fn preambles_are_named_by_their_alpn_and_differ_in_their_hello() {
        for p in Preamble::ALL {
            assert_eq!(Preamble::from_alpn(p.alpn()), Some(p));
        }
        assert_eq!(Preamble::from_alpn(b"florete/3"), None);
        assert_eq!(Preamble::from_alpn(b"h3"), None);
        assert_ne!(Preamble::V1.hello(), Preamble::V2.hello());
        assert_eq!(Preamble::V1.hello(), STREAM_HELLO);
        assert!(!Preamble::V1.early_data());
        assert!(Preamble::V2.early_data());
        // The newest first: a peer offering both gets version 2.
        assert_eq!(Preamble::ALL[0], Preamble::V2);
    }
}
