//! The HTTP request parser and the chunked decoder over arbitrary bytes.
//! The first two bytes pick a read size (how the input is split) and a
//! body limit; the rest is what a client sent. Invariants: nothing panics;
//! a parsed head lies inside the input and the limits and never has two
//! framings; every prefix of the input parses as "incomplete", the same
//! head, or a refusal the whole input also gets; a body decodes to the same
//! data and the same end (or the same refusal) however reads split it,
//! never over the limit; any data, chunk-encoded in pieces, decodes back to
//! itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sockserv_http::{
    BodyDecoder, CHUNK_END, CHUNK_HEADER_MAX, Framing, LAST_CHUNK, Limits, Piece, Refusal,
    RequestHead, chunk_header, httparse,
};

type Head = (usize, Framing, bool, bool);

fn parse(input: &[u8], limits: &Limits) -> Result<Option<Head>, Refusal> {
    let mut fields = [httparse::EMPTY_HEADER; 16];
    RequestHead::parse(input, &mut fields, limits)
        .map(|h| h.map(|h| (h.head_len, h.framing, h.keep_alive, h.expect_continue)))
}

/// Decodes `input` fed `step` bytes at a time, keeping what is unconsumed,
/// as a connection would: the data, and where the body ended in `input`
/// (`None`: the input ended first).
fn decode(
    framing: Framing,
    max: u64,
    input: &[u8],
    step: usize,
) -> Result<(Vec<u8>, Option<usize>), Refusal> {
    let mut body = BodyDecoder::new(framing, max);
    let (mut data, mut start, mut end) = (Vec::new(), 0, 0);
    loop {
        let window = &input[start..end];
        // Whole-input runs use decode, stepped runs decode_at_most(step).
        let (used, piece) = if step >= input.len().max(1) {
            body.decode(window)?
        } else {
            body.decode_at_most(window, step)?
        };
        assert!(used <= window.len());
        start += used;
        match piece {
            Piece::Data(d) => {
                assert!(!d.is_empty(), "an empty data piece would spin a caller");
                assert!(
                    d.len() <= step || step >= input.len().max(1),
                    "a piece over decode_at_most's bound"
                );
                data.extend_from_slice(d);
                assert!(data.len() as u64 <= max, "more data than the limit");
            }
            Piece::End => {
                assert!(body.is_done());
                return Ok((data, Some(start)));
            }
            Piece::NeedMore if end == input.len() => return Ok((data, None)),
            Piece::NeedMore => end = (end + step).min(input.len()),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [step, limit, input @ ..] = data else { return };
    let step = usize::from(*step).max(1);
    let limits = Limits { max_head: 512, max_body: u64::from(*limit) * 16, ..Limits::default() };

    let whole = parse(input, &limits);
    if let Ok(Some((head_len, framing, _, _))) = whole {
        assert!(head_len <= input.len() && head_len <= limits.max_head);
        if let Framing::Length(n) = framing {
            assert!(n <= limits.max_body);
        }
    }
    let mut cut = 0;
    while cut < input.len() {
        match parse(&input[..cut], &limits) {
            Ok(None) => {}
            Ok(Some(head)) => assert_eq!(whole, Ok(Some(head)), "a prefix parsed another head"),
            Err(_) => assert!(whole.is_err(), "a prefix was refused, the whole input was not"),
        }
        cut += step;
    }

    // The body after a parsed head, and the whole input as a chunked body.
    let mut bodies = vec![(Framing::Chunked, input)];
    if let Ok(Some((head_len, framing, _, _))) = whole {
        bodies.push((framing, &input[head_len..]));
    }
    for (framing, body) in bodies {
        let at_once = decode(framing, limits.max_body, body, body.len().max(1));
        let in_steps = decode(framing, limits.max_body, body, step);
        match (&at_once, &in_steps) {
            // Fed whole, a body may end where steps ran out of input.
            (Ok((a, Some(end))), Ok((b, None))) => {
                panic!("whole ended at {end} ({} bytes), steps did not ({})", a.len(), b.len())
            }
            _ => assert_eq!(at_once, in_steps, "the split changed the outcome"),
        }
    }

    // Round trip: the input, chunk-encoded in pieces of `step`, decodes back.
    let mut wire = Vec::new();
    let mut line = [0u8; CHUNK_HEADER_MAX];
    for piece in input.chunks(step) {
        wire.extend_from_slice(chunk_header(piece.len(), &mut line));
        wire.extend_from_slice(piece);
        wire.extend_from_slice(CHUNK_END);
    }
    wire.extend_from_slice(LAST_CHUNK);
    let (back, end) =
        decode(Framing::Chunked, u64::MAX, &wire, 7).expect("our own encoding decodes");
    assert_eq!((&back[..], end), (input, Some(wire.len())));
});
