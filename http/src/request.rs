//! The request head: parsed by `httparse`, then checked for what HTTP/1.1
//! servers must refuse (RFC 9112): framing that two parsers could read two
//! ways, a missing or repeated `Host`, an expectation we cannot meet.

use httparse::{Header, Status};

use crate::Refusal;

/// What the parser accepts: the head's size (the header *count* is the
/// length of the `headers` array given to [`RequestHead::parse`]) and the
/// body's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The longest head (request line, header fields, the empty line) in
    /// bytes: a longer one is refused with 431.
    pub max_head: usize,
    /// The largest body in bytes: a larger `Content-Length` is refused with
    /// 413 before any body byte is read, a chunked body when its data passes
    /// the limit.
    pub max_body: u64,
    /// The longest a head may take from its first byte to its last: a
    /// slower one (a slowloris client sending a byte a second) is answered
    /// 408 and closed. Checked as bytes arrive, with the `std` feature's
    /// clock (without it there is none: the server's idle or stream
    /// timeout bounds a client that stops sending).
    pub head_timeout: core::time::Duration,
}

impl Default for Limits {
    /// 8 KiB heads (nginx's `large_client_header_buffers` size), 1 MiB
    /// bodies (nginx's `client_max_body_size`), 20 s for a head (Apache's
    /// `RequestReadTimeout header=20`; nginx's `client_header_timeout` is 60 s).
    fn default() -> Self {
        Self {
            max_head: 8 * 1024,
            max_body: 1024 * 1024,
            head_timeout: core::time::Duration::from_secs(20),
        }
    }
}

/// How the request's body is delimited (RFC 9112 section 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: neither `Content-Length` nor `Transfer-Encoding`.
    None,
    /// `Content-Length: n`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A parsed, checked request head. Borrows the bytes it was parsed from.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'h, 'b> {
    /// The method, e.g. `GET`.
    pub method: &'b str,
    /// The request target as sent, e.g. `/index.html?x=1`.
    pub target: &'b str,
    /// The minor version: `1` for HTTP/1.1, `0` for HTTP/1.0.
    pub minor_version: u8,
    /// Every header field, in order.
    pub headers: &'h [Header<'b>],
    /// The head's length in bytes: the body (or the next request) starts here.
    pub head_len: usize,
    /// How the body is delimited.
    pub framing: Framing,
    /// Whether the connection stays open after this exchange as far as the
    /// request is concerned (HTTP/1.1: unless `Connection: close`; HTTP/1.0:
    /// only with `Connection: keep-alive`).
    pub keep_alive: bool,
    /// `Expect: 100-continue` on an HTTP/1.1 request (ignored on 1.0, as
    /// RFC 9110 section 10.1.1 requires): send [`CONTINUE`](crate::CONTINUE)
    /// before reading the body, or answer without reading it (and close).
    pub expect_continue: bool,
}

impl<'h, 'b> RequestHead<'h, 'b> {
    /// Parses the head at the start of `buf`.
    ///
    /// Returns `Ok(None)` while the head is incomplete and shorter than
    /// `limits.max_head` (read more and call again with the longer buffer).
    ///
    /// # Errors
    /// A [`Refusal`]: answer it with [`Refusal::response`] and close.
    /// 431 for a head over `max_head` or with more fields than `headers`
    /// holds, 400 for malformed input and smuggling attempts (both
    /// `Content-Length` and `Transfer-Encoding`, several `Content-Length`
    /// fields or values, a transfer coding other than `chunked`, a
    /// `Transfer-Encoding` on HTTP/1.0, no or several `Host` on HTTP/1.1),
    /// 413 for a `Content-Length` over `max_body`, 417 for an expectation
    /// other than `100-continue`, 505 for a version other than 1.0 and 1.1.
    ///
    /// ```
    /// use sockserv_http::{Framing, Limits, RequestHead, httparse};
    /// let mut headers = [httparse::EMPTY_HEADER; 16];
    /// let buf = b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc";
    /// let head = RequestHead::parse(buf, &mut headers, &Limits::default()).unwrap().unwrap();
    /// assert_eq!((head.method, head.target), ("POST", "/up"));
    /// assert_eq!(head.framing, Framing::Length(3));
    /// assert_eq!(&buf[head.head_len..], b"abc");
    /// assert!(head.keep_alive);
    /// ```
    pub fn parse(
        buf: &'b [u8],
        headers: &'h mut [Header<'b>],
        limits: &Limits,
    ) -> Result<Option<Self>, Refusal> {
        let mut req = httparse::Request::new(headers);
        let head_len = match req.parse(buf) {
            Ok(Status::Complete(n)) => n,
            Ok(Status::Partial) if buf.len() >= limits.max_head => {
                return Err(Refusal::HeadTooLarge);
            }
            Ok(Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(Refusal::TooManyHeaders),
            Err(httparse::Error::Version) => return Err(Refusal::Version),
            Err(_) => return Err(Refusal::Malformed),
        };
        if head_len > limits.max_head {
            return Err(Refusal::HeadTooLarge);
        }
        let (Some(method), Some(target), Some(minor_version)) = (req.method, req.path, req.version)
        else {
            return Err(Refusal::Malformed);
        };
        if minor_version > 1 {
            return Err(Refusal::Version);
        }
        let headers: &'h [Header<'b>] = req.headers;
        let framing = framing(headers, minor_version, limits)?;
        check_host(headers, minor_version)?;
        let expect_continue = expectation(headers, minor_version)?;
        let keep_alive = keep_alive(headers, minor_version);
        Ok(Some(Self {
            method,
            target,
            minor_version,
            headers,
            head_len,
            framing,
            keep_alive,
            expect_continue,
        }))
    }

    /// Whether this is a `HEAD` request (answered with a head only).
    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }

    /// The value of the first field named `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'b [u8]> {
        self.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value)
    }
}

fn named<'a, 'b>(headers: &'a [Header<'b>], name: &'a str) -> impl Iterator<Item = &'b [u8]> + 'a {
    headers.iter().filter(move |h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value)
}

/// Comma-separated list elements, trimmed of optional white space, empty
/// elements skipped (RFC 9110 section 5.6.1).
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(|t| t.trim_ascii()).filter(|t| !t.is_empty())
}

fn framing(headers: &[Header<'_>], minor: u8, limits: &Limits) -> Result<Framing, Refusal> {
    let mut lengths = named(headers, "content-length");
    let mut codings = named(headers, "transfer-encoding");
    match (lengths.next(), codings.next()) {
        (None, None) => Ok(Framing::None),
        (Some(_), Some(_)) => Err(Refusal::Smuggling),
        (Some(value), None) => {
            // One field with one value: a list ("5, 5") or a second field is
            // refused even when the values agree (RFC 9112 6.3 allows
            // accepting equal ones; a proxy in front may not).
            if lengths.next().is_some() {
                return Err(Refusal::Smuggling);
            }
            let n = content_length(value).ok_or(Refusal::Smuggling)?;
            if n > limits.max_body { Err(Refusal::BodyTooLarge) } else { Ok(Framing::Length(n)) }
        }
        (None, Some(value)) => {
            // HTTP/1.0 knows no transfer codings (RFC 9112 6.1: treat as
            // faulty framing); only one field holding exactly `chunked`.
            if minor == 0 || codings.next().is_some() {
                return Err(Refusal::Smuggling);
            }
            let mut list = tokens(value);
            match (list.next(), list.next()) {
                (Some(c), None) if c.eq_ignore_ascii_case(b"chunked") => Ok(Framing::Chunked),
                _ => Err(Refusal::Smuggling),
            }
        }
    }
}

/// `1*DIGIT`, nothing else (no sign, no white space inside, no list), no
/// overflow.
fn content_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |n, &b| {
        let digit = b.checked_sub(b'0').filter(|d| *d < 10)?;
        n.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

fn check_host(headers: &[Header<'_>], minor: u8) -> Result<(), Refusal> {
    let count = named(headers, "host").take(2).count();
    match (minor, count) {
        (_, 2) | (1, 0) => Err(Refusal::Malformed),
        _ => Ok(()),
    }
}

fn expectation(headers: &[Header<'_>], minor: u8) -> Result<bool, Refusal> {
    let mut continue_ = false;
    for value in named(headers, "expect") {
        for t in tokens(value) {
            if t.eq_ignore_ascii_case(b"100-continue") {
                continue_ = true;
            } else {
                return Err(Refusal::ExpectationFailed);
            }
        }
    }
    Ok(continue_ && minor == 1)
}

fn keep_alive(headers: &[Header<'_>], minor: u8) -> bool {
    let has = |token: &[u8]| {
        named(headers, "connection").flat_map(tokens).any(|t| t.eq_ignore_ascii_case(token))
    };
    if has(b"close") { false } else { minor == 1 || has(b"keep-alive") }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: Header<'static> = httparse::EMPTY_HEADER;

    fn parse(buf: &[u8]) -> Result<Option<(Framing, bool, bool, usize)>, Refusal> {
        let mut headers = [EMPTY; 8];
        let limits = Limits { max_head: 256, max_body: 1000, ..Limits::default() };
        RequestHead::parse(buf, &mut headers, &limits)
            .map(|h| h.map(|h| (h.framing, h.keep_alive, h.expect_continue, h.head_len)))
    }

    #[test]
    fn a_complete_get() {
        let buf = b"GET /a?b HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\nGET /next";
        let mut headers = [EMPTY; 8];
        let head = RequestHead::parse(buf, &mut headers, &Limits::default()).unwrap().unwrap();
        assert_eq!((head.method, head.target, head.minor_version), ("GET", "/a?b", 1));
        assert_eq!(head.headers.len(), 2);
        assert_eq!(head.header("accept"), Some(&b"*/*"[..]));
        assert_eq!(&buf[head.head_len..], b"GET /next");
        assert_eq!(head.framing, Framing::None);
        assert!(head.keep_alive && !head.expect_continue && !head.is_head());
    }

    #[test]
    fn an_incomplete_head_asks_for_more_until_the_limit() {
        let full = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        for cut in 0..full.len() {
            assert_eq!(parse(&full[..cut]), Ok(None), "cut at {cut}");
        }
        assert!(matches!(parse(full), Ok(Some(_))));
        let mut long = [b'a'; 256];
        long[..16].copy_from_slice(b"GET / HTTP/1.1\r\n");
        long[16..24].copy_from_slice(b"X-Long: ");
        assert_eq!(parse(&long[..255]), Ok(None));
        assert_eq!(parse(&long), Err(Refusal::HeadTooLarge));
    }

    #[test]
    fn a_complete_head_over_the_limit_is_431() {
        let mut buf = [b'a'; 300];
        buf[..24].copy_from_slice(b"GET / HTTP/1.1\r\nHost: x\r");
        buf[24] = b'\n';
        buf[25..33].copy_from_slice(b"X-Long: ");
        buf[296..].copy_from_slice(b"\r\n\r\n");
        assert_eq!(parse(&buf), Err(Refusal::HeadTooLarge));
        assert_eq!(Refusal::HeadTooLarge.status(), 431);
    }

    #[test]
    fn more_fields_than_the_array_is_431() {
        let buf = b"GET / HTTP/1.1\r\nHost: x\r\na: 1\r\nb: 1\r\nc: 1\r\nd: 1\r\ne: 1\r\nf: 1\r\ng: 1\r\nh: 1\r\n\r\n";
        assert_eq!(parse(buf), Err(Refusal::TooManyHeaders));
        assert_eq!(Refusal::TooManyHeaders.status(), 431);
    }

    #[test]
    fn malformed_heads_are_400() {
        for buf in [
            &b"GET / HTTP/1.1\r\nHost: x\r\nBad Name: 1\r\n\r\n"[..],
            b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
            b"\x00GET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n", // no Host on 1.1
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", // two Hosts
        ] {
            assert_eq!(parse(buf), Err(Refusal::Malformed), "{:?}", core::str::from_utf8(buf));
        }
        assert_eq!(parse(b"GET / HTTP/2.0\r\n\r\n"), Err(Refusal::Version));
        assert_eq!(parse(b"GET / HTTP/1.0\r\n\r\n").map(|h| h.is_some()), Ok(true));
    }

    #[test]
    fn framing_by_content_length_and_chunked() {
        let ok = |b: &[u8]| parse(b).unwrap().unwrap().0;
        assert_eq!(
            ok(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 42\r\n\r\n"),
            Framing::Length(42)
        );
        assert_eq!(
            ok(b"POST / HTTP/1.1\r\nHost: x\r\ncontent-length: 0\r\n\r\n"),
            Framing::Length(0)
        );
        assert_eq!(
            ok(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked \r\n\r\n"),
            Framing::Chunked
        );
        assert_eq!(
            parse(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n"),
            Err(Refusal::BodyTooLarge)
        );
        assert_eq!(Refusal::BodyTooLarge.status(), 413);
    }

    #[test]
    fn smuggling_attempts_are_400() {
        for buf in [
            &b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x3\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: \r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert_eq!(parse(buf), Err(Refusal::Smuggling), "{:?}", core::str::from_utf8(buf));
        }
        assert_eq!(Refusal::Smuggling.status(), 400);
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection() {
        let ka = |b: &[u8]| parse(b).unwrap().unwrap().1;
        assert!(ka(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(!ka(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
        assert!(!ka(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, CLOSE\r\n\r\n"));
        assert!(!ka(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: te\r\nConnection: close\r\n\r\n"));
        assert!(!ka(b"GET / HTTP/1.0\r\n\r\n"));
        assert!(ka(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
        assert!(!ka(b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n"));
    }

    #[test]
    fn expect_100_continue() {
        let ec = |b: &[u8]| parse(b).map(|h| h.unwrap().2);
        assert_eq!(
            ec(b"PUT / HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\nContent-Length: 5\r\n\r\n"),
            Ok(true)
        );
        assert_eq!(ec(b"PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n"), Ok(false));
        assert_eq!(
            ec(b"PUT / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"),
            Ok(false)
        );
        assert_eq!(
            ec(b"PUT / HTTP/1.1\r\nHost: x\r\nExpect: something\r\n\r\n"),
            Err(Refusal::ExpectationFailed)
        );
    }

    #[test]
    fn head_requests() {
        let mut headers = [EMPTY; 8];
        let head = RequestHead::parse(
            b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n",
            &mut headers,
            &Limits::default(),
        );
        assert!(head.unwrap().unwrap().is_head());
    }
}
