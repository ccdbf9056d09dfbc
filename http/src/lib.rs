#![doc = include_str!("../README.md")]
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod blocking;
mod body;
mod event;
mod request;
mod response;

use core::fmt;

pub use blocking::{
    DRAIN_LIMIT, Error, Http, MAX_FIELDS, Respond, ResponseBody, Sent, Transaction,
};
pub use body::{BodyDecoder, MAX_CHUNK_LINE, Piece};
pub use event::{EventError, EventRespond, HttpEvents, Reply, ReplyError};
pub use httparse;
pub use request::{Framing, Limits, RequestHead};
pub use response::{
    BodyLength, CHUNK_END, CHUNK_HEADER_MAX, CONTINUE, Exchange, HeadTooLarge, LAST_CHUNK, Plan,
    ResponseHead, chunk_header, http_date, reason,
};

/// A request the server refuses: answer [`response`](Self::response) and
/// close the connection (after a refusal the framing of what follows is
/// unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Refusal {
    /// 400: not HTTP/1.x syntax, a missing or repeated `Host`, broken chunked framing.
    Malformed,
    /// 400: framing two parsers could read two ways (both `Content-Length`
    /// and `Transfer-Encoding`, several lengths, an unknown transfer coding,
    /// `Transfer-Encoding` on HTTP/1.0).
    Smuggling,
    /// 413: a body over the limit.
    BodyTooLarge,
    /// 417: an `Expect` other than `100-continue`.
    ExpectationFailed,
    /// 431: a head longer than the limit.
    HeadTooLarge,
    /// 431: more header fields than the parser has room for.
    TooManyHeaders,
    /// 505: a version other than HTTP/1.0 and HTTP/1.1.
    Version,
}

impl Refusal {
    /// The status code to answer with.
    pub fn status(self) -> u16 {
        match self {
            Self::Malformed | Self::Smuggling => 400,
            Self::BodyTooLarge => 413,
            Self::ExpectationFailed => 417,
            Self::HeadTooLarge | Self::TooManyHeaders => 431,
            Self::Version => 505,
        }
    }

    /// A complete response (no body, `Connection: close`).
    pub fn response(self) -> &'static [u8] {
        match self.status() {
            400 => b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            413 => b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            417 => b"HTTP/1.1 417 Expectation Failed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            431 => b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            _ => b"HTTP/1.1 505 HTTP Version Not Supported\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Malformed => "malformed request",
            Self::Smuggling => "ambiguous body framing (request smuggling?)",
            Self::BodyTooLarge => "request body over the limit",
            Self::ExpectationFailed => "unsupported expectation",
            Self::HeadTooLarge => "request head over the limit",
            Self::TooManyHeaders => "too many header fields",
            Self::Version => "unsupported HTTP version",
        })
    }
}

impl core::error::Error for Refusal {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_answers_its_status_and_closes() {
        use Refusal::*;
        for r in [
            Malformed,
            Smuggling,
            BodyTooLarge,
            ExpectationFailed,
            HeadTooLarge,
            TooManyHeaders,
            Version,
        ] {
            let mut fields = [httparse::EMPTY_HEADER; 4];
            let mut resp = httparse::Response::new(&mut fields);
            let n = resp.parse(r.response()).unwrap().unwrap();
            assert_eq!((resp.code, n), (Some(r.status()), r.response().len()));
            assert_eq!(resp.reason, Some(reason(r.status())));
            assert!(resp.headers.iter().any(|h| h.name == "Connection" && h.value == b"close"));
        }
    }
}
