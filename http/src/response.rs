//! Response heads and chunked encoding, written into the caller's buffer.

use core::fmt::{self, Write as _};

use crate::RequestHead;

/// How the response's body is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLength {
    /// `Content-Length: n`.
    Known(u64),
    /// Chunked on HTTP/1.1 (use [`chunk_header`] / [`LAST_CHUNK`]); on
    /// HTTP/1.0, which knows no chunks, the body is sent as is and the
    /// connection closes after it.
    Unknown,
}

/// What the head writer decided, for the code that sends the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Bytes of head written into the buffer.
    pub head_len: usize,
    /// Whether a body follows the head (not for `HEAD`, 1xx, 204, 304).
    pub send_body: bool,
    /// Whether the body goes chunked.
    pub chunked: bool,
    /// Whether the connection stays open after this response.
    pub keep_alive: bool,
}

/// The head did not fit the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadTooLarge;

impl fmt::Display for HeadTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the response head does not fit its buffer")
    }
}

impl core::error::Error for HeadTooLarge {}

/// What the response answers: the request's version, method and
/// keep-alive decision ([`Exchange::of`] a parsed request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exchange {
    /// The request's minor version.
    pub minor_version: u8,
    /// A `HEAD` request: the head says what a `GET` would get, no body follows.
    pub head_only: bool,
    /// The request lets the connection stay open.
    pub keep_alive: bool,
}

impl Exchange {
    /// The exchange a parsed request opens.
    pub fn of(request: &RequestHead<'_, '_>) -> Self {
        Self {
            minor_version: request.minor_version,
            head_only: request.is_head(),
            keep_alive: request.keep_alive,
        }
    }
}

/// Writes a response head into a buffer: the status line, the caller's
/// fields, then the framing and `Connection` fields [`finish`](Self::finish) picks.
///
/// ```
/// use sockserv_http::{BodyLength, Exchange, ResponseHead};
/// let exchange = Exchange { minor_version: 1, head_only: false, keep_alive: true };
/// let mut buf = [0u8; 256];
/// let mut head = ResponseHead::new(&mut buf, 200);
/// head.header("Content-Type", b"text/plain");
/// let plan = head.finish(&exchange, BodyLength::Known(5)).unwrap();
/// assert_eq!(
///     &buf[..plan.head_len],
///     b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n"
/// );
/// assert!(plan.send_body && plan.keep_alive && !plan.chunked);
/// ```
pub struct ResponseHead<'b> {
    buf: &'b mut [u8],
    len: usize,
    status: u16,
    overflow: bool,
    close: bool,
}

impl<'b> ResponseHead<'b> {
    /// Starts a head with the status line `HTTP/1.1 <status> <reason>`.
    pub fn new(buf: &'b mut [u8], status: u16) -> Self {
        let mut head = Self { buf, len: 0, status, overflow: false, close: false };
        let _ = write!(head, "HTTP/1.1 {status} {}\r\n", reason(status));
        head
    }

    /// Adds a field. Framing and `Connection` fields are the head's own:
    /// give `Connection: close` with [`close`](Self::close) instead.
    pub fn header(&mut self, name: &str, value: &[u8]) -> &mut Self {
        debug_assert!(!value.contains(&b'\n') && !value.contains(&b'\r'));
        self.push(name.as_bytes());
        self.push(b": ");
        self.push(value);
        self.push(b"\r\n");
        self
    }

    /// Adds a `Date` field from seconds since the Unix epoch.
    pub fn date(&mut self, unix_seconds: u64) -> &mut Self {
        self.header("Date", &http_date(unix_seconds))
    }

    /// Closes the connection after this response whatever the request asked.
    pub fn close(&mut self) -> &mut Self {
        self.close = true;
        self
    }

    /// Ends the head with its framing (`Content-Length` or
    /// `Transfer-Encoding: chunked`) and `Connection` fields.
    ///
    /// # Errors
    /// [`HeadTooLarge`] when the head did not fit the buffer.
    pub fn finish(mut self, exchange: &Exchange, body: BodyLength) -> Result<Plan, HeadTooLarge> {
        let bodiless = (100..200).contains(&self.status) || matches!(self.status, 204 | 304);
        let chunked = !bodiless && body == BodyLength::Unknown && exchange.minor_version == 1;
        // An HTTP/1.0 peer gets a body of unknown length delimited by the close.
        let close_delimited = !bodiless && body == BodyLength::Unknown && !chunked;
        let keep_alive = exchange.keep_alive && !self.close && !close_delimited;
        match body {
            _ if bodiless => {}
            BodyLength::Known(n) => {
                let _ = write!(self, "Content-Length: {n}\r\n");
            }
            BodyLength::Unknown if chunked => self.push(b"Transfer-Encoding: chunked\r\n"),
            BodyLength::Unknown => {}
        }
        if !keep_alive && (exchange.keep_alive || exchange.minor_version == 1) {
            self.push(b"Connection: close\r\n");
        } else if keep_alive && exchange.minor_version == 0 {
            self.push(b"Connection: keep-alive\r\n");
        }
        self.push(b"\r\n");
        if self.overflow {
            return Err(HeadTooLarge);
        }
        let send_body = !bodiless && !exchange.head_only;
        Ok(Plan { head_len: self.len, send_body, chunked: chunked && send_body, keep_alive })
    }

    fn push(&mut self, bytes: &[u8]) {
        match self.buf.get_mut(self.len..self.len + bytes.len()) {
            Some(room) => {
                room.copy_from_slice(bytes);
                self.len += bytes.len();
            }
            None => self.overflow = true,
        }
    }
}

impl fmt::Write for ResponseHead<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push(s.as_bytes());
        Ok(())
    }
}

/// `HTTP/1.1 100 Continue`, the interim answer to `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// The last chunk of a chunked body (no trailers).
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// What follows each chunk's data.
pub const CHUNK_END: &[u8] = b"\r\n";

/// The size line that goes before a chunk of `len` bytes (`len` must not
/// be 0: that is [`LAST_CHUNK`]), written into `buf`.
///
/// ```
/// let mut buf = [0u8; sockserv_http::CHUNK_HEADER_MAX];
/// assert_eq!(sockserv_http::chunk_header(300, &mut buf), b"12c\r\n");
/// ```
pub fn chunk_header(len: usize, buf: &mut [u8; CHUNK_HEADER_MAX]) -> &[u8] {
    debug_assert!(len > 0);
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1) as usize;
    for (i, digit) in buf[..digits].iter_mut().enumerate() {
        let nibble = (len >> (4 * (digits - 1 - i))) & 0xf;
        *digit = b"0123456789abcdef"[nibble];
    }
    buf[digits..digits + 2].copy_from_slice(b"\r\n");
    &buf[..digits + 2]
}

/// The longest chunk header: 16 hex digits and CRLF.
pub const CHUNK_HEADER_MAX: usize = 18;

/// The reason phrase sent with `status` (empty for codes it does not know).
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`, RFC 9110 5.6.7) from
/// seconds since the Unix epoch.
pub fn http_date(unix_seconds: u64) -> [u8; 29] {
    const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let days = unix_seconds / 86_400;
    let secs = unix_seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    let mut out = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    out[..3].copy_from_slice(DAYS[(days % 7) as usize]);
    two(&mut out[5..7], day);
    out[8..11].copy_from_slice(MONTHS[(month - 1) as usize]);
    two(&mut out[12..14], year / 100 % 100);
    two(&mut out[14..16], year % 100);
    two(&mut out[17..19], secs / 3600);
    two(&mut out[20..22], secs / 60 % 60);
    two(&mut out[23..25], secs % 60);
    out
}

fn two(out: &mut [u8], n: u64) {
    out[0] = b'0' + (n / 10 % 10) as u8;
    out[1] = b'0' + (n % 10) as u8;
}

/// Howard Hinnant's `civil_from_days` for days since 1970-01-01 (no
/// negative days here).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(
        ex: Exchange,
        status: u16,
        body: BodyLength,
        close: bool,
    ) -> (Plan, std::string::String) {
        let mut buf = [0u8; 256];
        let mut head = ResponseHead::new(&mut buf, status);
        if close {
            head.close();
        }
        let plan = head.finish(&ex, body).unwrap();
        (plan, std::string::String::from_utf8(buf[..plan.head_len].to_vec()).unwrap())
    }
    extern crate std;

    const V11: Exchange = Exchange { minor_version: 1, head_only: false, keep_alive: true };
    const V10: Exchange = Exchange { minor_version: 0, head_only: false, keep_alive: false };

    #[test]
    fn keep_alive_and_length() {
        let (plan, head) = write(V11, 404, BodyLength::Known(9), false);
        assert_eq!(head, "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\n");
        assert!(plan.keep_alive && plan.send_body && !plan.chunked);
        let (plan, head) = write(V11, 200, BodyLength::Known(0), true);
        assert_eq!(head, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        assert!(!plan.keep_alive);
    }

    #[test]
    fn unknown_length_is_chunked_on_1_1_and_close_delimited_on_1_0() {
        let (plan, head) = write(V11, 200, BodyLength::Unknown, false);
        assert_eq!(head, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(plan.chunked && plan.keep_alive);
        let ka10 = Exchange { keep_alive: true, ..V10 };
        let (plan, head) = write(ka10, 200, BodyLength::Unknown, false);
        assert_eq!(head, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
        assert!(!plan.chunked && !plan.keep_alive && plan.send_body);
    }

    #[test]
    fn http_1_0_keep_alive_is_said() {
        let (plan, head) =
            write(Exchange { keep_alive: true, ..V10 }, 200, BodyLength::Known(1), false);
        assert_eq!(head, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\n");
        assert!(plan.keep_alive);
        let (plan, head) = write(V10, 200, BodyLength::Known(1), false);
        assert_eq!(head, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n");
        assert!(!plan.keep_alive);
    }

    #[test]
    fn head_and_bodiless_statuses_send_no_body() {
        let (plan, head) =
            write(Exchange { head_only: true, ..V11 }, 200, BodyLength::Known(5), false);
        assert_eq!(head, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
        assert!(!plan.send_body && plan.keep_alive);
        let (plan, head) =
            write(Exchange { head_only: true, ..V11 }, 200, BodyLength::Unknown, false);
        assert!(!plan.send_body && !plan.chunked && head.contains("chunked"));
        let (plan, head) = write(V11, 304, BodyLength::Known(5), false);
        assert_eq!(head, "HTTP/1.1 304 Not Modified\r\n\r\n");
        assert!(!plan.send_body);
    }

    #[test]
    fn a_head_too_large_for_its_buffer() {
        let mut buf = [0u8; 40];
        let mut head = ResponseHead::new(&mut buf, 200);
        head.header("X-Long", &[b'a'; 30]);
        assert_eq!(head.finish(&V11, BodyLength::Known(0)), Err(HeadTooLarge));
    }

    #[test]
    fn chunk_headers() {
        let mut buf = [0u8; CHUNK_HEADER_MAX];
        assert_eq!(chunk_header(1, &mut buf), b"1\r\n");
        assert_eq!(chunk_header(15, &mut buf), b"f\r\n");
        assert_eq!(chunk_header(16, &mut buf), b"10\r\n");
        assert_eq!(chunk_header(65536, &mut buf), b"10000\r\n");
        assert_eq!(chunk_header(usize::MAX, &mut buf), b"ffffffffffffffff\r\n");
    }

    #[test]
    fn chunks_encoded_here_decode_there() {
        use crate::{BodyDecoder, Framing, Piece};
        let mut wire = std::vec::Vec::new();
        let mut buf = [0u8; CHUNK_HEADER_MAX];
        for piece in [&b"hello"[..], &[b'x'; 300], b"!"] {
            wire.extend_from_slice(chunk_header(piece.len(), &mut buf));
            wire.extend_from_slice(piece);
            wire.extend_from_slice(CHUNK_END);
        }
        wire.extend_from_slice(LAST_CHUNK);
        let mut body = BodyDecoder::new(Framing::Chunked, 1000);
        let (mut at, mut data) = (0, std::vec::Vec::new());
        loop {
            let (used, piece) = body.decode(&wire[at..]).unwrap();
            at += used;
            match piece {
                Piece::Data(d) => data.extend_from_slice(d),
                Piece::End => break,
                Piece::NeedMore => panic!("all input was given"),
            }
        }
        assert_eq!((data.len(), at), (306, wire.len()));
    }

    #[test]
    fn dates() {
        assert_eq!(&http_date(0), b"Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(&http_date(784_111_777), b"Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(&http_date(951_782_400), b"Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(&http_date(1_798_761_599), b"Thu, 31 Dec 2026 23:59:59 GMT");
    }
}
