//! The one HTTP/1.1 response reader: the agent's artifact fetch and
//! `retectl publish` both read their answer with [`read_response`].
//!
//! The head is parsed by the sans-IO [`crate::http::parse_response`]; this is
//! only the read loop around it and the body's bound. It works over any byte
//! stream: a plain TCP socket or a Florete flow.

use core::fmt;

use smol::io::{AsyncRead, AsyncReadExt};

use crate::http::{self, HttpError, Parsed};

/// Why a response could not be read.
#[derive(Debug)]
#[non_exhaustive]
pub enum ResponseError {
    /// Reading the stream failed (also: it closed inside a `Content-Length` body).
    Io(std::io::Error),
    /// The stream closed before a whole response head arrived.
    Closed,
    /// The response head is not HTTP this reader accepts.
    Http(HttpError),
    /// The body is longer than the caller's limit.
    TooLarge,
}

impl fmt::Display for ResponseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResponseError::Io(e) => {
                f.write_str("reading the HTTP response failed: ")?;
                fmt::Display::fmt(e, f)
            }
            ResponseError::Closed => f.write_str("the connection closed before an HTTP response"),
            ResponseError::Http(e) => fmt::Display::fmt(e, f),
            ResponseError::TooLarge => {
                f.write_str("the HTTP response body is larger than this reader accepts")
            }
        }
    }
}

impl std::error::Error for ResponseError {}

/// Reads one response from `stream`: its status and its body, at most `max` bytes.
///
/// The body is `Content-Length` bytes, or, without that header, everything up
/// to the end of the stream. Memory: one [`http::MAX_HEAD`] buffer for the
/// head, then the body itself (never more than `max`).
///
/// # Errors
/// [`ResponseError::Closed`] before a whole head; [`ResponseError::Http`] for a
/// bad head; [`ResponseError::TooLarge`] when the body is over `max`;
/// [`ResponseError::Io`] when the stream fails or ends inside a declared body.
pub async fn read_response<S: AsyncRead + Unpin>(
    stream: &mut S,
    max: usize,
) -> Result<(u16, Vec<u8>), ResponseError> {
    let mut buf = vec![0u8; http::MAX_HEAD];
    let mut filled = 0;
    let resp = loop {
        let n = stream
            .read(&mut buf[filled..])
            .await
            .map_err(ResponseError::Io)?;
        if n == 0 {
            return Err(ResponseError::Closed);
        }
        filled += n;
        // A full buffer without a blank line is HeadTooLarge, so `buf[filled..]` never runs empty.
        match http::parse_response(&buf[..filled]).map_err(ResponseError::Http)? {
            Parsed::Complete(r) => break r,
            Parsed::Partial => continue,
        }
    };
    if resp.content_length.is_some_and(|l| l > max as u64) {
        return Err(ResponseError::TooLarge);
    }
    let mut body = buf[resp.head_len..filled].to_vec();
    match resp.content_length {
        Some(len) => {
            // At most `max`, checked above.
            let len = len as usize;
            body.truncate(len);
            let have = body.len();
            body.resize(len, 0);
            stream
                .read_exact(&mut body[have..])
                .await
                .map_err(ResponseError::Io)?;
        }
        None => {
            let mut limited = stream.take((max + 1 - body.len().min(max)) as u64);
            limited
                .read_to_end(&mut body)
                .await
                .map_err(ResponseError::Io)?;
            if body.len() > max {
                return Err(ResponseError::TooLarge);
            }
        }
    }
    Ok((resp.status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &[u8], max: usize) -> Result<(u16, Vec<u8>), ResponseError> {
        smol::block_on(read_response(&mut &bytes[..], max))
    }

    #[test]
    fn a_body_with_and_without_content_length() {
        // What the config-server answers (http::write_response), and a python http.server style one.
        let (s, b) = read(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello, and more",
            100,
        )
        .unwrap();
        assert_eq!((s, &b[..]), (200, &b"hello"[..]));
        let (s, b) = read(b"HTTP/1.0 404 Not Found\r\n\r\nno such thing", 100).unwrap();
        assert_eq!((s, &b[..]), (404, &b"no such thing"[..]));
    }

    #[test]
    fn refusals_are_typed() {
        assert!(matches!(read(b"", 10), Err(ResponseError::Closed)));
        assert!(matches!(
            read(b"HTTP/1.1 200 OK\r\n", 10),
            Err(ResponseError::Closed)
        ));
        assert!(matches!(
            read(b"HTTP/2 200 OK\r\n\r\n", 10),
            Err(ResponseError::Http(HttpError::BadVersion))
        ));
        assert!(matches!(
            read(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n", 10),
            Err(ResponseError::TooLarge)
        ));
        assert!(matches!(
            read(b"HTTP/1.1 200 OK\r\n\r\n12345678901", 10),
            Err(ResponseError::TooLarge)
        ));
        assert!(matches!(
            read(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhell", 10),
            Err(ResponseError::Io(_))
        ));
        let endless = vec![b'a'; 2 * http::MAX_HEAD];
        assert!(matches!(
            read(&endless, 10),
            Err(ResponseError::Http(HttpError::HeadTooLarge))
        ));
    }
}
