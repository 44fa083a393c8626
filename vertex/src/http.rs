//! The few bytes of HTTP/1.1 Florete speaks: sans-IO request and response heads.
//!
//! The config-server serves `GET /artifact/<node>/mgmt/...` and accepts
//! `POST /publish`; the agent fetches, `retectl publish` posts. Both ends use
//! this module, over a plain TCP socket on loopback or over a Florete flow.
//!
//! Why hand-written: the maintained HTTP crates either bring tokio (hyper), a
//! whole async client stack (reqwest, ureq with its TLS choices, isahc with
//! libcurl) or are unmaintained on smol (async-h1). A router's flash pays for
//! every one of them, while Florete needs one request line, three headers and
//! a `Content-Length` body. `httparse` would fit, but the forms here are so
//! narrow that the parser below is shorter than the glue around it.
//!
//! The model: the caller reads bytes into its own fixed buffer and calls
//! [`parse_request`] / [`parse_response`] until they return
//! [`Parsed::Complete`]; the head is parsed in place (borrowing the buffer, no
//! allocation per header) and says where the body starts. Writers format a
//! head into a caller-supplied buffer. Bodies are always `Content-Length`
//! framed (chunked transfer coding is refused), and every connection carries
//! one request (`Connection: close`), which keeps both state machines trivial.

use core::fmt;

/// Largest request or response head either end accepts. Florete's heads are
/// under 300 bytes; 8 KiB is what common servers accept and bounds the buffer.
pub const MAX_HEAD: usize = 8 * 1024;

/// Why an HTTP head was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HttpError {
    /// The head did not end within [`MAX_HEAD`] bytes.
    HeadTooLarge,
    /// The request or status line is malformed.
    BadStartLine,
    /// The HTTP version is not 1.0 or 1.1.
    BadVersion,
    /// A header line has no `:` or holds bytes that are not visible ASCII.
    BadHeader,
    /// `Content-Length` is not a decimal number, or appears twice with different values.
    BadContentLength,
    /// The body uses `Transfer-Encoding` (chunked); only `Content-Length` is supported.
    TransferEncoding,
    /// The output buffer is too small for the head.
    BufferTooSmall,
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HttpError::HeadTooLarge => "HTTP head is larger than 8 KiB",
            HttpError::BadStartLine => "HTTP request or status line is malformed",
            HttpError::BadVersion => "HTTP version is not 1.0 or 1.1",
            HttpError::BadHeader => "HTTP header line is malformed",
            HttpError::BadContentLength => "HTTP Content-Length is invalid or repeated",
            HttpError::TransferEncoding => {
                "HTTP Transfer-Encoding is not supported; send Content-Length"
            }
            HttpError::BufferTooSmall => "buffer too small for the HTTP head",
        })
    }
}

impl std::error::Error for HttpError {}

/// The outcome of feeding the bytes read so far to a parser.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed<T> {
    /// The head is not complete yet: read more bytes and call again.
    Partial,
    /// The head is complete.
    Complete(T),
}

/// A parsed request head, borrowing the caller's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// The method (`GET`, `POST`).
    pub method: &'a str,
    /// The request target (`/artifact/alpha/mgmt/agent.json`).
    pub path: &'a str,
    /// The body length; 0 when absent.
    pub content_length: u64,
    /// The client sent `Expect: 100-continue` and waits for an interim response (curl does, for large bodies).
    pub expect_continue: bool,
    /// Bytes of the head, including the blank line: the body starts here.
    pub head_len: usize,
}

/// The interim response a server sends to a client that said `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// A parsed response head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The body length, if the server sent one (else the body runs to EOF).
    pub content_length: Option<u64>,
    /// Bytes of the head, including the blank line: the body starts here.
    pub head_len: usize,
}

/// Finds the end of the head (`\r\n\r\n`, or a bare `\n\n` from lax peers).
fn head_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < buf.len() {
        if buf[i] == b'\n' {
            if buf.get(i + 1) == Some(&b'\n') {
                return Some(i + 2);
            }
            if buf.get(i + 1) == Some(&b'\r') && buf.get(i + 2) == Some(&b'\n') {
                return Some(i + 3);
            }
        }
        i += 1;
    }
    None
}

/// Splits the head into its lines, without the line endings.
fn lines(head: &[u8]) -> impl Iterator<Item = &[u8]> {
    head.split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.is_empty())
}

fn check_version(v: &[u8]) -> Result<(), HttpError> {
    match v {
        b"HTTP/1.1" | b"HTTP/1.0" => Ok(()),
        _ => Err(HttpError::BadVersion),
    }
}

fn parse_u64(v: &[u8]) -> Result<u64, HttpError> {
    if v.is_empty() || v.len() > 19 {
        return Err(HttpError::BadContentLength);
    }
    v.iter().try_fold(0u64, |acc, &b| {
        if b.is_ascii_digit() {
            Ok(acc * 10 + u64::from(b - b'0'))
        } else {
            Err(HttpError::BadContentLength)
        }
    })
}

/// Walks the header lines: returns the content length and whether the
/// client expects `100 Continue`; refuses transfer codings.
fn scan_headers<'a>(
    header_lines: impl Iterator<Item = &'a [u8]>,
) -> Result<(Option<u64>, bool), HttpError> {
    let mut length = None;
    let mut expect_continue = false;
    for line in header_lines {
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or(HttpError::BadHeader)?;
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.is_empty()
            || !line
                .iter()
                .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
        {
            return Err(HttpError::BadHeader);
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_u64(value)?;
            if length.is_some_and(|l| l != n) {
                return Err(HttpError::BadContentLength);
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Err(HttpError::TransferEncoding);
        } else if name.eq_ignore_ascii_case(b"expect") {
            expect_continue = value.eq_ignore_ascii_case(b"100-continue");
        }
    }
    Ok((length, expect_continue))
}

/// Parses a request head from the start of `buf`.
///
/// # Errors
/// A typed [`HttpError`]; `HeadTooLarge` once `buf` holds [`MAX_HEAD`] bytes without a blank line.
pub fn parse_request(buf: &[u8]) -> Result<Parsed<Request<'_>>, HttpError> {
    let Some(end) = head_end(&buf[..buf.len().min(MAX_HEAD)]) else {
        return if buf.len() >= MAX_HEAD {
            Err(HttpError::HeadTooLarge)
        } else {
            Ok(Parsed::Partial)
        };
    };
    let head = &buf[..end];
    let mut it = lines(head);
    let start = it.next().ok_or(HttpError::BadStartLine)?;
    let mut parts = start.split(|&b| b == b' ');
    let (Some(method), Some(path), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::BadStartLine);
    };
    check_version(version)?;
    let visible = |s: &[u8]| !s.is_empty() && s.iter().all(|b| (b'!'..=b'~').contains(b));
    if !visible(method) || !visible(path) || !path.starts_with(b"/") {
        return Err(HttpError::BadStartLine);
    }
    let (content_length, expect_continue) = scan_headers(it)?;
    let content_length = content_length.unwrap_or(0);
    // Visible ASCII was checked above, so these are valid UTF-8.
    let method = core::str::from_utf8(method).map_err(|_| HttpError::BadStartLine)?;
    let path = core::str::from_utf8(path).map_err(|_| HttpError::BadStartLine)?;
    Ok(Parsed::Complete(Request {
        method,
        path,
        content_length,
        expect_continue,
        head_len: end,
    }))
}

/// Parses a response head from the start of `buf`.
///
/// # Errors
/// As [`parse_request`].
pub fn parse_response(buf: &[u8]) -> Result<Parsed<Response>, HttpError> {
    let Some(end) = head_end(&buf[..buf.len().min(MAX_HEAD)]) else {
        return if buf.len() >= MAX_HEAD {
            Err(HttpError::HeadTooLarge)
        } else {
            Ok(Parsed::Partial)
        };
    };
    let mut it = lines(&buf[..end]);
    let start = it.next().ok_or(HttpError::BadStartLine)?;
    let mut parts = start.splitn(3, |&b| b == b' ');
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        return Err(HttpError::BadStartLine);
    };
    check_version(version)?;
    if code.len() != 3 || !code.iter().all(u8::is_ascii_digit) {
        return Err(HttpError::BadStartLine);
    }
    let status = code
        .iter()
        .fold(0u16, |acc, &b| acc * 10 + u16::from(b - b'0'));
    let (content_length, _) = scan_headers(it)?;
    Ok(Parsed::Complete(Response {
        status,
        content_length,
        head_len: end,
    }))
}

/// A cursor that writes into a fixed buffer and reports overflow instead of panicking.
struct Out<'a> {
    buf: &'a mut [u8],
    n: usize,
}

impl Out<'_> {
    fn put(&mut self, s: &[u8]) -> Result<(), HttpError> {
        let end = self.n + s.len();
        let dst = self
            .buf
            .get_mut(self.n..end)
            .ok_or(HttpError::BufferTooSmall)?;
        dst.copy_from_slice(s);
        self.n = end;
        Ok(())
    }

    fn put_u64(&mut self, mut v: u64) -> Result<(), HttpError> {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.put(&digits[i..])
    }
}

/// Writes a request head (`Connection: close`, `Content-Length` when a body follows).
///
/// # Errors
/// [`HttpError::BufferTooSmall`] if `out` cannot hold it; 512 bytes always suffice
/// for a path and host under 200 bytes each.
pub fn write_request(
    method: &str,
    host: &str,
    path: &str,
    content_length: Option<u64>,
    out: &mut [u8],
) -> Result<usize, HttpError> {
    let mut o = Out { buf: out, n: 0 };
    o.put(method.as_bytes())?;
    o.put(b" ")?;
    o.put(path.as_bytes())?;
    o.put(b" HTTP/1.1\r\nHost: ")?;
    o.put(host.as_bytes())?;
    o.put(b"\r\nConnection: close\r\n")?;
    if let Some(n) = content_length {
        o.put(b"Content-Length: ")?;
        o.put_u64(n)?;
        o.put(b"\r\n")?;
    }
    o.put(b"\r\n")?;
    Ok(o.n)
}

/// The reason phrase for the status codes Florete sends.
pub const fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Content Too Large",
        500 => "Internal Server Error",
        _ => "Status",
    }
}

/// Writes a response head with a `Content-Length` body and `Connection: close`.
///
/// # Errors
/// [`HttpError::BufferTooSmall`] if `out` cannot hold it (256 bytes always suffice).
pub fn write_response(
    status: u16,
    content_type: &str,
    content_length: u64,
    out: &mut [u8],
) -> Result<usize, HttpError> {
    let mut o = Out { buf: out, n: 0 };
    o.put(b"HTTP/1.1 ")?;
    o.put_u64(u64::from(status))?;
    o.put(b" ")?;
    o.put(reason(status).as_bytes())?;
    o.put(b"\r\nContent-Type: ")?;
    o.put(content_type.as_bytes())?;
    o.put(b"\r\nContent-Length: ")?;
    o.put_u64(content_length)?;
    o.put(b"\r\nConnection: close\r\n\r\n")?;
    Ok(o.n)
}

/// The publish body: a whole compiled tree in one `POST /publish`.
///
/// ```text
/// florete-tree/1\n
/// file <len> <node>/mgmt/agent.json\n<len bytes>
/// file <len> <node>/mgmt/vertices/flor.json\n<len bytes>
/// ...
/// end\n
/// ```
///
/// Lengths are decimal byte counts; paths are relative, `/`-separated and
/// printable ASCII without spaces. The explicit `end` line makes a truncated
/// upload detectable even when the transport closes cleanly.
pub mod tree {
    use core::fmt;

    /// The first line of every publish body.
    pub const MAGIC: &[u8] = b"florete-tree/1\n";
    /// The last line of every publish body.
    pub const END: &[u8] = b"end\n";
    /// Longest line (an entry head) a reader must accept.
    pub const MAX_LINE: usize = 300;

    /// Why a publish body was refused.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    #[non_exhaustive]
    pub enum TreeError {
        /// The body does not start with `florete-tree/1`.
        BadMagic,
        /// A line is neither `file <len> <path>` nor `end`.
        BadLine,
        /// A path is absolute, empty, has `..`, or holds a space or control byte.
        BadPath,
        /// The body ended before `end`.
        Truncated,
    }

    impl fmt::Display for TreeError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(match self {
                TreeError::BadMagic => "publish body does not start with florete-tree/1",
                TreeError::BadLine => {
                    "publish body has a line that is not 'file <len> <path>' or 'end'"
                }
                TreeError::BadPath => {
                    "publish body names a path that is absolute or leaves the tree"
                }
                TreeError::Truncated => "publish body ended before its 'end' line",
            })
        }
    }

    impl std::error::Error for TreeError {}

    /// One entry head.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Line<'a> {
        /// A file of `len` bytes follows.
        File {
            /// Its length.
            len: u64,
            /// Its relative path.
            path: &'a str,
        },
        /// The tree is complete.
        End,
    }

    /// Parses one line, including its `\n`.
    pub fn parse_line(line: &[u8]) -> Result<Line<'_>, TreeError> {
        let line = line.strip_suffix(b"\n").ok_or(TreeError::Truncated)?;
        if line == b"end" {
            return Ok(Line::End);
        }
        let rest = line.strip_prefix(b"file ").ok_or(TreeError::BadLine)?;
        let sp = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or(TreeError::BadLine)?;
        let len = super::parse_u64(&rest[..sp]).map_err(|_| TreeError::BadLine)?;
        let path = &rest[sp + 1..];
        let ok = !path.is_empty()
            && path[0] != b'/'
            && path
                .iter()
                .all(|b| (b'!'..=b'~').contains(b) && *b != b'\\')
            && path
                .split(|&b| b == b'/')
                .all(|seg| !seg.is_empty() && seg != b".." && seg != b".");
        if !ok {
            return Err(TreeError::BadPath);
        }
        let path = core::str::from_utf8(path).map_err(|_| TreeError::BadPath)?;
        Ok(Line::File { len, path })
    }

    /// What [`Decoder::decode`] found in the bytes fed to it.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Item<'a> {
        /// An entry begins: `len` bytes of the file at `path` follow as [`Item::Data`].
        File {
            /// Its length.
            len: u64,
            /// Its relative path (checked as [`parse_line`] checks it).
            path: &'a str,
        },
        /// The next bytes of the current file. Every file, an empty one too,
        /// ends with exactly one item whose `last` is true.
        Data {
            /// The bytes, in order.
            bytes: &'a [u8],
            /// The file is complete with these bytes.
            last: bool,
        },
        /// The `end` line: the tree is complete. Bytes after it are not read;
        /// every later call answers `End` again.
        End,
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum State {
        Magic,
        Head,
        Data,
        Done,
    }

    /// A sans-IO reader of a publish body, fed as the bytes arrive.
    ///
    /// It holds one line ([`MAX_LINE`] bytes) and never a file's contents:
    /// those come back as slices of the caller's input, so a reader bounds
    /// its own memory by checking `len` on [`Item::File`].
    ///
    /// ```text
    /// loop: (used, item) = decode(&buf[start..end]); start += used
    ///       None  -> read more into buf (end of stream here: TreeError::Truncated)
    ///       File  -> check the path and length; Data -> append, store when last
    ///       End   -> done
    /// ```
    #[derive(Clone, Debug)]
    pub struct Decoder {
        state: State,
        line: [u8; MAX_LINE],
        line_len: usize,
        remaining: u64,
    }

    impl Default for Decoder {
        fn default() -> Self {
            Self::new()
        }
    }

    impl Decoder {
        /// A reader expecting the body's first byte.
        pub const fn new() -> Decoder {
            Decoder {
                state: State::Magic,
                line: [0; MAX_LINE],
                line_len: 0,
                remaining: 0,
            }
        }

        /// Whether the `end` line has been read.
        pub fn is_done(&self) -> bool {
            self.state == State::Done
        }

        /// Reads from `input` up to the next item. Returns how many bytes it
        /// used and the item; `None` means all of `input` was used and more is
        /// needed (if the body has ended, it is [`TreeError::Truncated`]).
        ///
        /// # Errors
        /// [`TreeError::BadMagic`] if the first line is not [`MAGIC`];
        /// [`TreeError::BadLine`] / [`TreeError::BadPath`] for an entry head
        /// that is malformed or longer than [`MAX_LINE`]. After an error the
        /// body is refused; the decoder is not meant to be fed again.
        pub fn decode<'a>(
            &'a mut self,
            input: &'a [u8],
        ) -> Result<(usize, Option<Item<'a>>), TreeError> {
            let mut used = 0;
            loop {
                let rest = &input[used..];
                match self.state {
                    State::Done => return Ok((used, Some(Item::End))),
                    State::Data => {
                        if self.remaining > 0 && rest.is_empty() {
                            return Ok((used, None));
                        }
                        let n = self.remaining.min(rest.len() as u64) as usize;
                        self.remaining -= n as u64;
                        let last = self.remaining == 0;
                        if last {
                            self.state = State::Head;
                        }
                        let bytes = &rest[..n];
                        return Ok((used + n, Some(Item::Data { bytes, last })));
                    }
                    State::Magic | State::Head => {
                        let too_long = if self.state == State::Magic {
                            TreeError::BadMagic
                        } else {
                            TreeError::BadLine
                        };
                        let room = MAX_LINE - self.line_len;
                        let Some(nl) = rest[..rest.len().min(room)]
                            .iter()
                            .position(|&b| b == b'\n')
                        else {
                            if rest.len() >= room {
                                return Err(too_long);
                            }
                            self.line[self.line_len..self.line_len + rest.len()]
                                .copy_from_slice(rest);
                            self.line_len += rest.len();
                            return Ok((input.len(), None));
                        };
                        used += nl + 1;
                        // A line that arrived whole is read in place; else it is completed in `self.line`.
                        let whole = self.line_len == 0;
                        let k = self.line_len + nl + 1;
                        if !whole {
                            self.line[self.line_len..k].copy_from_slice(&rest[..=nl]);
                            self.line_len = 0;
                        }
                        if self.state == State::Magic {
                            let magic = if whole { &rest[..=nl] } else { &self.line[..k] };
                            if magic != MAGIC {
                                return Err(TreeError::BadMagic);
                            }
                            self.state = State::Head;
                            continue;
                        }
                        let line: &'a [u8] = if whole { &rest[..=nl] } else { &self.line[..k] };
                        return match parse_line(line)? {
                            Line::End => {
                                self.state = State::Done;
                                Ok((used, Some(Item::End)))
                            }
                            Line::File { len, path } => {
                                self.state = State::Data;
                                self.remaining = len;
                                Ok((used, Some(Item::File { len, path })))
                            }
                        };
                    }
                }
            }
        }
    }

    /// One file of a tree read whole: (path, contents).
    pub type Entry<'a> = (&'a str, &'a [u8]);

    /// Reads a complete publish body held in memory: its entries, in order,
    /// and how many bytes of `body` the tree took (through `end`).
    ///
    /// # Errors
    /// As [`Decoder::decode`]; [`TreeError::Truncated`] if `body` ends before `end`.
    pub fn read_all(body: &[u8]) -> Result<(std::vec::Vec<Entry<'_>>, usize), TreeError> {
        let mut dec = Decoder::new();
        let mut entries = std::vec::Vec::new();
        let (mut at, mut path, mut start) = (0, "", 0);
        loop {
            let (used, item) = dec.decode(&body[at..])?;
            at += used;
            match item {
                None => return Err(TreeError::Truncated),
                Some(Item::End) => return Ok((entries, at)),
                Some(Item::File { path: p, .. }) => {
                    // `p` borrows the decoder; the same bytes end the line just read, before its `\n`.
                    let end = at - 1;
                    path = core::str::from_utf8(&body[end - p.len()..end])
                        .map_err(|_| TreeError::BadPath)?;
                    start = at;
                }
                Some(Item::Data { last: true, .. }) => entries.push((path, &body[start..at])),
                Some(Item::Data { .. }) => {}
            }
        }
    }

    /// Appends one entry (head and contents) to `out`.
    pub fn push_file(out: &mut std::vec::Vec<u8>, path: &str, contents: &[u8]) {
        out.extend_from_slice(b"file ");
        let mut digits = [0u8; 20];
        let mut o = super::Out {
            buf: &mut digits,
            n: 0,
        };
        // 20 digits hold any u64.
        let _ = o.put_u64(contents.len() as u64);
        let n = o.n;
        out.extend_from_slice(&digits[..n]);
        out.push(b' ');
        out.extend_from_slice(path.as_bytes());
        out.push(b'\n');
        out.extend_from_slice(contents);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The request curl 7.88 sends for `curl http://127.0.0.1:7480/artifact/alpha/mgmt/agent.json`.
    const CURL_GET: &[u8] = b"GET /artifact/alpha/mgmt/agent.json HTTP/1.1\r\nHost: 127.0.0.1:7480\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n";

    #[test]
    fn parses_a_curl_get() {
        let Parsed::Complete(r) = parse_request(CURL_GET).unwrap() else {
            panic!("complete")
        };
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/artifact/alpha/mgmt/agent.json");
        assert_eq!(r.content_length, 0);
        assert!(!r.expect_continue);
        assert_eq!(r.head_len, CURL_GET.len());
        // curl's large POST.
        let post = b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\nExpect: 100-continue\r\n\r\n";
        let Parsed::Complete(r) = parse_request(post).unwrap() else {
            panic!("complete")
        };
        assert!(r.expect_continue);
    }

    #[test]
    fn partial_until_blank_line_at_every_split() {
        for cut in 0..CURL_GET.len() {
            assert_eq!(
                parse_request(&CURL_GET[..cut]),
                Ok(Parsed::Partial),
                "{cut}"
            );
        }
    }

    #[test]
    fn post_with_body_says_where_it_starts() {
        let mut buf = [0u8; 512];
        let n = write_request("POST", "config-publish", "/publish", Some(11), &mut buf).unwrap();
        buf[n..n + 11].copy_from_slice(b"hello world");
        let Parsed::Complete(r) = parse_request(&buf[..n + 11]).unwrap() else {
            panic!("complete")
        };
        assert_eq!(
            (r.method, r.path, r.content_length),
            ("POST", "/publish", 11)
        );
        assert_eq!(&buf[r.head_len..r.head_len + 11], b"hello world");
    }

    #[test]
    fn response_round_trip() {
        let mut buf = [0u8; 256];
        let n = write_response(404, "text/plain", 12345, &mut buf).unwrap();
        assert_eq!(
            &buf[..n],
            &b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 12345\r\nConnection: close\r\n\r\n"[..]
        );
        let Parsed::Complete(r) = parse_response(&buf[..n]).unwrap() else {
            panic!("complete")
        };
        assert_eq!(r.status, 404);
        assert_eq!(r.content_length, Some(12345));
        assert_eq!(r.head_len, n);
        // A python http.server style response without a length.
        let Parsed::Complete(r) =
            parse_response(b"HTTP/1.0 200 OK\r\nServer: SimpleHTTP/0.6\r\n\r\nbody").unwrap()
        else {
            panic!("complete")
        };
        assert_eq!((r.status, r.content_length), (200, None));
    }

    #[test]
    fn refusals_are_typed() {
        let cases: &[(&[u8], HttpError)] = &[
            (b"GET /\r\n\r\n", HttpError::BadStartLine),
            (b"GET / HTTP/2\r\n\r\n", HttpError::BadVersion),
            (b"GET relative HTTP/1.1\r\n\r\n", HttpError::BadStartLine),
            (b"GET / HTTP/1.1\r\nNoColon\r\n\r\n", HttpError::BadHeader),
            (b"GET / HTTP/1.1\r\nX: \x01\r\n\r\n", HttpError::BadHeader),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n",
                HttpError::BadContentLength,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
                HttpError::BadContentLength,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 1\r\ncontent-length: 2\r\n\r\n",
                HttpError::BadContentLength,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                HttpError::TransferEncoding,
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(
                parse_request(bytes),
                Err(*want),
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        assert_eq!(
            parse_response(b"HTTP/1.1 2000 OK\r\n\r\n"),
            Err(HttpError::BadStartLine)
        );
        let big = vec![b'a'; MAX_HEAD];
        assert_eq!(parse_request(&big), Err(HttpError::HeadTooLarge));
        assert_eq!(parse_response(&big), Err(HttpError::HeadTooLarge));
        let mut tiny = [0u8; 10];
        assert_eq!(
            write_response(200, "text/plain", 1, &mut tiny),
            Err(HttpError::BufferTooSmall)
        );
    }

    #[test]
    fn garbage_never_panics() {
        // Every prefix of every test vector, with each byte flipped once.
        let mut seed = CURL_GET.to_vec();
        for i in 0..seed.len() {
            seed[i] ^= 0xa5;
            let _ = parse_request(&seed);
            let _ = parse_response(&seed);
            seed[i] ^= 0xa5;
        }
    }

    /// What `retectl publish` sends for a two-node tree, one of its files empty.
    fn sample_tree() -> std::vec::Vec<u8> {
        let mut body = tree::MAGIC.to_vec();
        tree::push_file(&mut body, "alpha/mgmt/agent.json", b"{\"a\":1}\n");
        tree::push_file(&mut body, "alpha/mgmt/vertices/flor.json", b"");
        tree::push_file(&mut body, "beta/mgmt/agent.json", b"end\nfile 3 x\n");
        body.extend_from_slice(tree::END);
        body
    }

    /// Feeds `body` to a decoder in pieces of `chunk` bytes; collects (path, contents).
    fn decode_in_pieces(
        body: &[u8],
        chunk: usize,
    ) -> Result<std::vec::Vec<(std::string::String, std::vec::Vec<u8>)>, tree::TreeError> {
        let mut dec = tree::Decoder::new();
        let mut out = std::vec::Vec::new();
        for piece in body.chunks(chunk) {
            let mut at = 0;
            loop {
                let (used, item) = dec.decode(&piece[at..])?;
                at += used;
                match item {
                    None => break,
                    Some(tree::Item::End) => return Ok(out),
                    Some(tree::Item::File { path, .. }) => {
                        out.push((path.to_string(), std::vec::Vec::new()))
                    }
                    Some(tree::Item::Data { bytes, .. }) => {
                        out.last_mut().unwrap().1.extend_from_slice(bytes)
                    }
                }
            }
        }
        Err(tree::TreeError::Truncated)
    }

    #[test]
    fn tree_decoder_reads_the_same_at_every_split() {
        let body = sample_tree();
        let (whole, used) = tree::read_all(&body).unwrap();
        assert_eq!(used, body.len());
        let whole: std::vec::Vec<_> = whole
            .iter()
            .map(|(p, b)| (p.to_string(), b.to_vec()))
            .collect();
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[2].1, b"end\nfile 3 x\n");
        for chunk in 1..=body.len() {
            assert_eq!(decode_in_pieces(&body, chunk).unwrap(), whole, "{chunk}");
        }
        // Every proper prefix is a truncated body.
        for cut in 0..body.len() {
            assert_eq!(
                tree::read_all(&body[..cut]).map(|_| ()),
                Err(tree::TreeError::Truncated),
                "{cut}"
            );
        }
    }

    #[test]
    fn tree_decoder_refusals() {
        let long = [b'a'; tree::MAX_LINE];
        let mut over = tree::MAGIC.to_vec();
        over.extend_from_slice(b"file 1 ");
        over.extend_from_slice(&long);
        for (bad, want) in [
            (&b"florete-tree/2\nend\n"[..], tree::TreeError::BadMagic),
            (&long[..], tree::TreeError::BadMagic),
            (&over[..], tree::TreeError::BadLine),
            (
                b"florete-tree/1\nfile 3 ../x\nabcend\n",
                tree::TreeError::BadPath,
            ),
            (
                b"florete-tree/1\nfile 3 a\nabcdend\n",
                tree::TreeError::BadLine,
            ),
        ] {
            assert_eq!(tree::read_all(bad).map(|_| ()), Err(want));
            assert_eq!(decode_in_pieces(bad, 1).map(|_| ()), Err(want));
        }
        // Bytes after `end` are not read.
        let mut trailing = sample_tree();
        let n = trailing.len();
        trailing.extend_from_slice(b"garbage");
        assert_eq!(tree::read_all(&trailing).unwrap().1, n);
    }

    #[test]
    fn tree_framing_round_trip_and_refusals() {
        let mut body = tree::MAGIC.to_vec();
        tree::push_file(&mut body, "alpha/mgmt/agent.json", b"{}\n");
        body.extend_from_slice(tree::END);
        let rest = body.strip_prefix(tree::MAGIC).unwrap();
        let nl = rest.iter().position(|&b| b == b'\n').unwrap();
        assert_eq!(
            tree::parse_line(&rest[..=nl]),
            Ok(tree::Line::File {
                len: 3,
                path: "alpha/mgmt/agent.json"
            })
        );
        assert_eq!(&rest[nl + 1..nl + 4], b"{}\n");
        assert_eq!(tree::parse_line(&rest[nl + 4..]), Ok(tree::Line::End));
        for (bad, want) in [
            (&b"file 3 ../x\n"[..], tree::TreeError::BadPath),
            (b"file 3 /etc/passwd\n", tree::TreeError::BadPath),
            (b"file 3 a//b\n", tree::TreeError::BadPath),
            (b"file 3 a b\n", tree::TreeError::BadPath),
            (b"file x a\n", tree::TreeError::BadLine),
            (b"dir a\n", tree::TreeError::BadLine),
            (b"file 3 a", tree::TreeError::Truncated),
        ] {
            assert_eq!(
                tree::parse_line(bad),
                Err(want),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
