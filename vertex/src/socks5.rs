//! SOCKS5 (RFC 1928) ingress, sans-IO: parse the greeting and the CONNECT
//! request from bytes, encode replies into a fixed buffer.
//!
//! Florete needs only the no-authentication method and CONNECT to a domain
//! name (`wiki.demo.flor.rete`); the listener's port already says which
//! identity is calling. IP literals are answered "address type not
//! supported": a flow goes to a named service, never to an address.
//!
//! Each parser returns `Ok(None)` while it needs more bytes, so the caller
//! reads into one [`MAX_MESSAGE`] buffer and calls again.

use core::fmt;

/// Largest SOCKS5 client message: a request with a 255-byte domain name
/// (4 + 1 + 255 + 2 = 262 bytes); a greeting is at most 2 + 255.
pub const MAX_MESSAGE: usize = 262;

/// Length of every reply this module encodes (IPv4 bound address).
pub const REPLY_LEN: usize = 10;

const VERSION: u8 = 5;
const METHOD_NO_AUTH: u8 = 0x00;
/// Method byte meaning "no acceptable methods".
pub const METHOD_NONE_ACCEPTABLE: u8 = 0xff;
const CMD_CONNECT: u8 = 0x01;
const ATYP_V4: u8 = 0x01;
const ATYP_DOMAIN: u8 = 0x03;
const ATYP_V6: u8 = 0x04;

/// Why a client message was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Socks5Error {
    /// The version byte is not 5.
    BadVersion,
    /// The greeting offers no method.
    NoMethods,
    /// The reserved byte of a request is not zero.
    BadReserved,
    /// The address type is not IPv4, domain or IPv6.
    BadAddressType,
    /// The domain name is empty or not UTF-8.
    BadDomain,
}

impl fmt::Display for Socks5Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Socks5Error::BadVersion => "not SOCKS version 5",
            Socks5Error::NoMethods => "SOCKS5 greeting offers no authentication method",
            Socks5Error::BadReserved => "SOCKS5 request reserved byte is not zero",
            Socks5Error::BadAddressType => "SOCKS5 request has an unknown address type",
            Socks5Error::BadDomain => "SOCKS5 domain name is empty or not UTF-8",
        })
    }
}

impl std::error::Error for Socks5Error {}

/// A parsed greeting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Greeting {
    /// Bytes the greeting took.
    pub len: usize,
    /// Whether the client offered "no authentication", the only method served.
    pub no_auth_offered: bool,
}

/// Parses the method-selection greeting: `VER NMETHODS METHODS...`.
pub fn parse_greeting(buf: &[u8]) -> Result<Option<Greeting>, Socks5Error> {
    let (Some(&ver), Some(&n)) = (buf.first(), buf.get(1)) else {
        return Ok(None);
    };
    if ver != VERSION {
        return Err(Socks5Error::BadVersion);
    }
    if n == 0 {
        return Err(Socks5Error::NoMethods);
    }
    let len = 2 + usize::from(n);
    let Some(methods) = buf.get(2..len) else {
        return Ok(None);
    };
    Ok(Some(Greeting {
        len,
        no_auth_offered: methods.contains(&METHOD_NO_AUTH),
    }))
}

/// The method-selection answer: `VER METHOD`.
pub fn method_reply(no_auth_offered: bool) -> [u8; 2] {
    [
        VERSION,
        if no_auth_offered {
            METHOD_NO_AUTH
        } else {
            METHOD_NONE_ACCEPTABLE
        },
    ]
}

/// Where a request wants to go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination<'a> {
    /// A domain name (what Florete serves).
    Domain(&'a str),
    /// An IPv4 literal.
    V4([u8; 4]),
    /// An IPv6 literal.
    V6([u8; 16]),
}

/// A parsed request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// Bytes the request took.
    pub len: usize,
    /// The command byte (1 = CONNECT).
    pub command: u8,
    /// The destination.
    pub destination: Destination<'a>,
    /// The destination port.
    pub port: u16,
}

impl Request<'_> {
    /// Whether the command is CONNECT (the only one served).
    pub fn is_connect(&self) -> bool {
        self.command == CMD_CONNECT
    }
}

/// Parses a request: `VER CMD RSV ATYP DST.ADDR DST.PORT`.
pub fn parse_request(buf: &[u8]) -> Result<Option<Request<'_>>, Socks5Error> {
    let Some(head) = buf.get(..4) else {
        return Ok(None);
    };
    if head[0] != VERSION {
        return Err(Socks5Error::BadVersion);
    }
    if head[2] != 0 {
        return Err(Socks5Error::BadReserved);
    }
    let (addr_len, addr_start) = match head[3] {
        ATYP_V4 => (4, 4),
        ATYP_V6 => (16, 4),
        ATYP_DOMAIN => match buf.get(4) {
            None => return Ok(None),
            Some(0) => return Err(Socks5Error::BadDomain),
            Some(&n) => (usize::from(n), 5),
        },
        _ => return Err(Socks5Error::BadAddressType),
    };
    let len = addr_start + addr_len + 2;
    let Some(msg) = buf.get(..len) else {
        return Ok(None);
    };
    let addr = &msg[addr_start..addr_start + addr_len];
    let destination = match head[3] {
        ATYP_V4 => Destination::V4([addr[0], addr[1], addr[2], addr[3]]),
        ATYP_V6 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(addr);
            Destination::V6(a)
        }
        _ => Destination::Domain(core::str::from_utf8(addr).map_err(|_| Socks5Error::BadDomain)?),
    };
    let port = u16::from_be_bytes([msg[len - 2], msg[len - 1]]);
    Ok(Some(Request {
        len,
        command: head[1],
        destination,
        port,
    }))
}

/// A reply code (RFC 1928, section 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Reply {
    /// The flow is open.
    Succeeded = 0x00,
    /// Anything not covered below.
    GeneralFailure = 0x01,
    /// The caller's roles do not grant the service (ACL denial).
    NotAllowed = 0x02,
    /// The hosting node's address cannot be reached.
    NetworkUnreachable = 0x03,
    /// Unknown service, or its node is down.
    HostUnreachable = 0x04,
    /// The service's upstream refused the TCP connection.
    ConnectionRefused = 0x05,
    /// The hosting node did not answer in time.
    TtlExpired = 0x06,
    /// Not CONNECT.
    CommandNotSupported = 0x07,
    /// An IP literal instead of a `.rete` name.
    AddressTypeNotSupported = 0x08,
}

/// Encodes a reply with bound address 0.0.0.0:0 (clients of a proxy ignore it).
pub fn encode_reply(reply: Reply) -> [u8; REPLY_LEN] {
    [VERSION, reply as u8, 0, ATYP_V4, 0, 0, 0, 0, 0, 0]
}

#[cfg(test)]
mod tests {
    use super::*;

    // Byte layouts from RFC 1928 sections 3-6.
    #[test]
    fn greeting_vectors() {
        assert_eq!(parse_greeting(&[]), Ok(None));
        assert_eq!(parse_greeting(&[5]), Ok(None));
        assert_eq!(parse_greeting(&[5, 2, 0]), Ok(None));
        assert_eq!(
            parse_greeting(&[5, 2, 2, 0]),
            Ok(Some(Greeting {
                len: 4,
                no_auth_offered: true
            }))
        );
        assert_eq!(
            parse_greeting(&[5, 1, 2]),
            Ok(Some(Greeting {
                len: 3,
                no_auth_offered: false
            }))
        );
        assert_eq!(parse_greeting(&[4, 1, 0]), Err(Socks5Error::BadVersion));
        assert_eq!(parse_greeting(&[5, 0]), Err(Socks5Error::NoMethods));
        assert_eq!(method_reply(true), [5, 0]);
        assert_eq!(method_reply(false), [5, 0xff]);
    }

    #[test]
    fn domain_request_as_curl_sends_it() {
        // curl --socks5-hostname: CONNECT wiki.demo.flor.rete:80
        let host = b"wiki.demo.flor.rete";
        let mut msg = vec![5, 1, 0, 3, host.len() as u8];
        msg.extend_from_slice(host);
        msg.extend_from_slice(&80u16.to_be_bytes());
        for cut in 0..msg.len() {
            assert_eq!(parse_request(&msg[..cut]), Ok(None), "cut at {cut}");
        }
        let r = parse_request(&msg).unwrap().unwrap();
        assert_eq!(r.len, msg.len());
        assert!(r.is_connect());
        assert_eq!(r.destination, Destination::Domain("wiki.demo.flor.rete"));
        assert_eq!(r.port, 80);
        // Trailing bytes (pipelined data) are not consumed.
        msg.push(b'G');
        assert_eq!(parse_request(&msg).unwrap().unwrap().len, msg.len() - 1);
    }

    #[test]
    fn ip_literals_and_other_commands() {
        let r = parse_request(&[5, 1, 0, 1, 127, 0, 0, 1, 0, 80])
            .unwrap()
            .unwrap();
        assert_eq!(r.destination, Destination::V4([127, 0, 0, 1]));
        let mut v6 = vec![5, 1, 0, 4];
        v6.extend_from_slice(&[0; 15]);
        v6.push(1);
        v6.extend_from_slice(&443u16.to_be_bytes());
        let r = parse_request(&v6).unwrap().unwrap();
        assert!(matches!(r.destination, Destination::V6(_)));
        assert_eq!(r.port, 443);
        let bind = parse_request(&[5, 2, 0, 1, 127, 0, 0, 1, 0, 80])
            .unwrap()
            .unwrap();
        assert!(!bind.is_connect());
    }

    #[test]
    fn malformed_requests_are_typed() {
        assert_eq!(parse_request(&[4, 1, 0, 1]), Err(Socks5Error::BadVersion));
        assert_eq!(parse_request(&[5, 1, 1, 1]), Err(Socks5Error::BadReserved));
        assert_eq!(
            parse_request(&[5, 1, 0, 9]),
            Err(Socks5Error::BadAddressType)
        );
        assert_eq!(
            parse_request(&[5, 1, 0, 3, 0, 0, 80]),
            Err(Socks5Error::BadDomain)
        );
        assert_eq!(
            parse_request(&[5, 1, 0, 3, 2, 0xff, 0xfe, 0, 80]),
            Err(Socks5Error::BadDomain)
        );
    }

    #[test]
    fn longest_request_fits_the_buffer() {
        let mut msg = vec![5, 1, 0, 3, 255];
        msg.extend_from_slice(&[b'a'; 255]);
        msg.extend_from_slice(&[0, 80]);
        assert_eq!(msg.len(), MAX_MESSAGE);
        assert_eq!(parse_request(&msg).unwrap().unwrap().len, MAX_MESSAGE);
    }

    #[test]
    fn replies() {
        assert_eq!(
            encode_reply(Reply::Succeeded),
            [5, 0, 0, 1, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(encode_reply(Reply::NotAllowed)[1], 2);
        assert_eq!(encode_reply(Reply::HostUnreachable)[1], 4);
        assert_eq!(encode_reply(Reply::ConnectionRefused)[1], 5);
        assert_eq!(encode_reply(Reply::AddressTypeNotSupported)[1], 8);
    }
}
