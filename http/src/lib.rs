#![doc = include_str!("../README.md")]
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "std")]
extern crate std;

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
    /// 408: the head did not arrive whole within
    /// [`Limits::head_timeout`] of its first byte (a slowloris client).
    HeadTimeout,
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
            Self::HeadTimeout => 408,
        }
    }

    /// A complete response (no body, `Connection: close`).
    pub fn response(self) -> &'static [u8] {
        match self.status() {
            408 => b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
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
            Self::HeadTimeout => "request head too slow",
        })
    }
}

impl core::error::Error for Refusal {}

/// The adapters' clock: the `std` feature's, or none (then no head
/// timeout and no automatic `Date`).
pub(crate) mod clock {
    use core::time::Duration;

    use crate::ResponseHead;

    /// A point in time, for the head timeout.
    #[cfg(feature = "std")]
    pub(crate) type Instant = std::time::Instant;
    /// No clock: nothing to hold.
    #[cfg(not(feature = "std"))]
    #[derive(Debug, Clone, Copy)]
    pub(crate) struct Instant;

    /// Now, when there is a clock.
    #[cfg(feature = "std")]
    pub(crate) fn now() -> Option<Instant> {
        Some(Instant::now())
    }

    /// Now, when there is a clock.
    #[cfg(not(feature = "std"))]
    pub(crate) fn now() -> Option<Instant> {
        None
    }

    /// Starts `since` at the first call, then says whether more than
    /// `limit` has passed since (never without a clock).
    pub(crate) fn overdue(since: &mut Option<Instant>, limit: Duration) -> bool {
        let Some(now) = now() else { return false };
        #[cfg(feature = "std")]
        {
            let start = *since.get_or_insert(now);
            now.duration_since(start) > limit
        }
        #[cfg(not(feature = "std"))]
        {
            let _ = (since, limit, now);
            false
        }
    }

    /// Adds `Date` with the current time, when there is a clock (the
    /// field is formatted once a second per thread).
    #[cfg(feature = "std")]
    pub(crate) fn date(head: &mut ResponseHead<'_>) {
        use std::cell::Cell;
        std::thread_local! {
            static LAST: Cell<(u64, [u8; 29])> = const { Cell::new((u64::MAX, [0; 29])) };
        }
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let value = LAST.with(|last| {
            let (at, value) = last.get();
            if at == secs {
                return value;
            }
            let value = crate::http_date(secs);
            last.set((secs, value));
            value
        });
        head.header("Date", &value);
    }

    /// Adds `Date` with the current time, when there is a clock.
    #[cfg(not(feature = "std"))]
    pub(crate) fn date(_head: &mut ResponseHead<'_>) {}
}

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
            HeadTimeout,
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
