//! Request bodies, streamed: a [`BodyDecoder`] hands out the body's data as
//! slices of the caller's input, piece by piece, so a large upload is never
//! held whole.

use httparse::Status;

use crate::{Framing, Refusal};

/// The longest chunk-size line (size, extensions, CRLF) and trailer section
/// the decoder waits for; longer is refused with 400.
pub const MAX_CHUNK_LINE: usize = 1024;

/// The trailer fields a chunked body may end with (read and dropped).
const MAX_TRAILERS: usize = 16;

/// One step of [`BodyDecoder::decode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Body data: a non-empty slice of the input.
    Data(&'a [u8]),
    /// The input ends inside framing (a chunk-size line, a chunk's CRLF,
    /// trailers): keep the unconsumed bytes, append more input, call again.
    NeedMore,
    /// The body is complete; any input after the consumed bytes belongs to
    /// the next request (pipelining).
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// `Content-Length`: bytes left.
    Length(u64),
    /// Chunked: at a chunk-size line.
    Size,
    /// Chunked: inside a chunk's data, bytes left.
    Data(u64),
    /// Chunked: after a chunk's data, the CRLF.
    DataEnd,
    /// Chunked: after the last chunk, trailers up to an empty line.
    Trailers,
    Done,
}

/// The body's framing as a state machine, sans I/O.
///
/// ```
/// use sockserv_http::{BodyDecoder, Framing, Piece};
/// let mut body = BodyDecoder::new(Framing::Chunked, 1 << 20);
/// let input = b"3\r\nabc\r\n0\r\n\r\nGET /next";
/// assert_eq!(body.decode(input), Ok((6, Piece::Data(b"abc"))));
/// assert_eq!(body.decode(&input[6..]), Ok((7, Piece::End)));
/// assert_eq!(&input[13..], b"GET /next");
/// ```
#[derive(Debug, Clone)]
pub struct BodyDecoder {
    state: State,
    /// Data bytes handed out so far.
    seen: u64,
    max_body: u64,
}

impl BodyDecoder {
    /// A decoder for a body framed as `framing`, refusing more than
    /// `max_body` bytes of data (a `Content-Length` was already checked
    /// against it by [`RequestHead::parse`](crate::RequestHead::parse)).
    pub fn new(framing: Framing, max_body: u64) -> Self {
        let state = match framing {
            Framing::None | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Size,
        };
        Self { state, seen: 0, max_body }
    }

    /// Whether the whole body has been decoded.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Data bytes decoded so far.
    pub fn decoded(&self) -> u64 {
        self.seen
    }

    /// Decodes from the start of `input`: returns how many bytes of
    /// `input` were consumed (drop them) and what they held. Never panics,
    /// whatever the input.
    ///
    /// # Errors
    /// [`Refusal::Malformed`] for a bad chunk-size line, a missing CRLF after
    /// a chunk or bad trailers (close the connection: the framing is lost);
    /// [`Refusal::BodyTooLarge`] when the data passes `max_body`.
    pub fn decode<'a>(&mut self, input: &'a [u8]) -> Result<(usize, Piece<'a>), Refusal> {
        self.decode_at_most(input, usize::MAX)
    }

    /// [`decode`](Self::decode), with data pieces of at most `max` bytes
    /// (`max` > 0): for a reader copying into a buffer of that size.
    ///
    /// # Errors
    /// As [`decode`](Self::decode).
    pub fn decode_at_most<'a>(
        &mut self,
        input: &'a [u8],
        max: usize,
    ) -> Result<(usize, Piece<'a>), Refusal> {
        debug_assert!(max > 0);
        let mut used = 0;
        loop {
            let rest = &input[used..];
            match self.state {
                State::Done => return Ok((used, Piece::End)),
                State::Length(left) | State::Data(left) => {
                    if rest.is_empty() {
                        return Ok((used, Piece::NeedMore));
                    }
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(rest.len()).min(max);
                    let left = left - n as u64;
                    self.state = match self.state {
                        State::Length(_) if left == 0 => State::Done,
                        State::Length(_) => State::Length(left),
                        _ if left == 0 => State::DataEnd,
                        _ => State::Data(left),
                    };
                    self.seen += n as u64;
                    return Ok((used + n, Piece::Data(&rest[..n])));
                }
                State::Size => match size_line(rest)? {
                    None => return Ok((used, Piece::NeedMore)),
                    Some((len, 0)) => {
                        used += len;
                        self.state = State::Trailers;
                    }
                    Some((len, size)) => {
                        if size > self.max_body.saturating_sub(self.seen) {
                            return Err(Refusal::BodyTooLarge);
                        }
                        used += len;
                        self.state = State::Data(size);
                    }
                },
                State::DataEnd => match rest {
                    [b'\r', b'\n', ..] => {
                        used += 2;
                        self.state = State::Size;
                    }
                    [] | [b'\r'] => return Ok((used, Piece::NeedMore)),
                    _ => return Err(Refusal::Malformed),
                },
                State::Trailers => {
                    let mut fields = [httparse::EMPTY_HEADER; MAX_TRAILERS];
                    match httparse::parse_headers(rest, &mut fields) {
                        Ok(Status::Complete((len, _))) if len < MAX_CHUNK_LINE => {
                            used += len;
                            self.state = State::Done;
                        }
                        Ok(Status::Partial) if rest.len() < MAX_CHUNK_LINE => {
                            return Ok((used, Piece::NeedMore));
                        }
                        _ => return Err(Refusal::Malformed),
                    }
                }
            }
        }
    }
}

/// A complete chunk-size line: its length and the size. `None` while
/// incomplete and short enough to wait for.
fn size_line(input: &[u8]) -> Result<Option<(usize, u64)>, Refusal> {
    match httparse::parse_chunk_size(input) {
        // httparse takes any octet in an extension, a bare LF too: refuse
        // that one, since a parser that ends lines at LF reads it another way.
        // A line is refused at MAX_CHUNK_LINE whether it came whole or in
        // pieces, so the outcome never depends on how reads split it.
        Ok(Status::Complete((len, size)))
            if len < MAX_CHUNK_LINE && !input[..len - 1].contains(&b'\n') =>
        {
            Ok(Some((len, size)))
        }
        Ok(Status::Partial) if input.len() < MAX_CHUNK_LINE && !input.contains(&b'\n') => Ok(None),
        _ => Err(Refusal::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes, as reads would bring it,
    /// keeping unconsumed bytes; returns the data, the unread rest, or the refusal.
    fn feed(
        framing: Framing,
        max: u64,
        input: &[u8],
        step: usize,
    ) -> Result<(Vec<u8>, Vec<u8>), Refusal> {
        let mut body = BodyDecoder::new(framing, max);
        let (mut data, mut pending, mut offered) = (Vec::new(), Vec::new(), 0);
        loop {
            let (used, piece) = body.decode(&pending)?;
            match piece {
                Piece::Data(d) => {
                    assert!(!d.is_empty());
                    data.extend_from_slice(d);
                }
                Piece::End => {
                    pending.drain(..used);
                    pending.extend_from_slice(&input[offered..]);
                    assert!(body.is_done());
                    assert_eq!(body.decoded(), data.len() as u64);
                    return Ok((data, pending));
                }
                Piece::NeedMore if offered == input.len() => panic!("needs more at the end"),
                Piece::NeedMore => {
                    let n = step.min(input.len() - offered);
                    pending.drain(..used);
                    pending.extend_from_slice(&input[offered..offered + n]);
                    offered += n;
                    continue;
                }
            }
            pending.drain(..used);
        }
    }

    extern crate std;
    use std::vec::Vec;

    const CHUNKED: &[u8] = b"4\r\nWiki\r\n5;name=val\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nExpires: never\r\n\r\nNEXT";

    #[test]
    fn chunked_in_every_split() {
        for step in 1..=CHUNKED.len() {
            let (data, rest) = feed(Framing::Chunked, 1000, CHUNKED, step).unwrap();
            assert_eq!(data, b"Wikipedia in\r\n\r\nchunks.", "step {step}");
            assert_eq!(rest, b"NEXT", "step {step}");
        }
    }

    #[test]
    fn content_length_leaves_the_next_request() {
        for step in 1..10 {
            let (data, rest) = feed(Framing::Length(5), 5, b"helloGET", step).unwrap();
            assert_eq!((&data[..], &rest[..]), (&b"hello"[..], &b"GET"[..]));
        }
        let mut none = BodyDecoder::new(Framing::None, 0);
        assert_eq!(none.decode(b"GET"), Ok((0, Piece::End)));
    }

    #[test]
    fn a_large_body_streams_in_pieces_no_bigger_than_the_input() {
        // 1 GiB announced, fed 4 KiB at a time: each piece is a slice of the input.
        let mut body = BodyDecoder::new(Framing::Length(1 << 30), 1 << 30);
        let buf = [7u8; 4096];
        for _ in 0..(1 << 18) {
            assert_eq!(body.decode(&buf), Ok((4096, Piece::Data(&buf))));
        }
        assert!(body.is_done());
    }

    #[test]
    fn chunked_over_the_limit_is_413() {
        let input = b"8\r\n12345678\r\n8\r\n12345678\r\n0\r\n\r\n";
        assert!(feed(Framing::Chunked, 16, input, 7).is_ok());
        assert_eq!(feed(Framing::Chunked, 15, input, 7), Err(Refusal::BodyTooLarge));
        // A huge size is refused at its line, before any of its data.
        let mut body = BodyDecoder::new(Framing::Chunked, 100);
        assert_eq!(body.decode(b"ffffffffffffffff\r\n"), Err(Refusal::BodyTooLarge));
    }

    #[test]
    fn bad_chunked_framing_is_400() {
        for input in [
            &b"x\r\n"[..],
            b"4\r\nWikiXX",          // no CRLF after the data
            b"4\nWiki\r\n0\r\n\r\n", // bare LF after the size
            b"4;a\nb\r\nWiki\r\n",   // bare LF inside an extension
            b"-4\r\n",
            b"1ffffffffffffffff\r\n", // 17 digits
            b"0\r\nBad Trailer\r\n\r\n",
        ] {
            assert_eq!(
                feed(Framing::Chunked, u64::MAX, input, 64).map(|_| ()),
                Err(Refusal::Malformed),
                "{input:?}"
            );
        }
    }

    #[test]
    fn endless_size_lines_and_trailers_are_refused() {
        let mut body = BodyDecoder::new(Framing::Chunked, u64::MAX);
        let mut line = [b'0'; MAX_CHUNK_LINE];
        line[..2].copy_from_slice(b"1;");
        assert_eq!(body.decode(&line[..MAX_CHUNK_LINE - 1]), Ok((0, Piece::NeedMore)));
        assert_eq!(body.decode(&line), Err(Refusal::Malformed));
        // The same line, complete in one read, is refused too.
        let mut whole = [b'0'; MAX_CHUNK_LINE + 2];
        whole[..2].copy_from_slice(b"1;");
        whole[MAX_CHUNK_LINE..].copy_from_slice(b"\r\n");
        let mut body = BodyDecoder::new(Framing::Chunked, u64::MAX);
        assert_eq!(body.decode(&whole), Err(Refusal::Malformed));
        let mut trailers = [b'a'; MAX_CHUNK_LINE + 8];
        trailers[..3].copy_from_slice(b"0\r\n");
        trailers[MAX_CHUNK_LINE + 4..].copy_from_slice(b"\r\n\r\n");
        trailers[13] = b':';
        let mut body = BodyDecoder::new(Framing::Chunked, u64::MAX);
        assert_eq!(body.decode(&trailers), Err(Refusal::Malformed));
        let mut body = BodyDecoder::new(Framing::Chunked, u64::MAX);
        let mut trailers = [b'a'; MAX_CHUNK_LINE + 3];
        trailers[..3].copy_from_slice(b"0\r\n");
        assert_eq!(body.decode(&trailers), Err(Refusal::Malformed));
    }
}
