//! `BufStream::read_line` over arbitrary input in arbitrary chunks, with
//! an arbitrary line buffer: returns exactly the lines, `TooLong` only for
//! a line longer than the buffer (holding its start), `discard_line`
//! skips exactly the rest, then EOF.
#![no_main]

use libfuzzer_sys::{arbitrary, fuzz_target};
use sockserv_core::{BufStream, ReadLineError};
use sockserv_fuzz::Chunked;

#[derive(Debug, arbitrary::Arbitrary)]
struct Input {
    cap: u8,
    chunks: Vec<u8>,
    data: Vec<u8>,
}

/// The lines of `data` as a reader must return them (the last one may
/// lack its newline).
fn expected(data: &[u8]) -> Vec<&[u8]> {
    data.split_inclusive(|&b| b == b'\n').collect()
}

fn check<const N: usize>(input: &Input) {
    let cap = usize::from(input.cap % 64) + 1;
    let mut io = BufStream::<_, N>::new(Chunked::new(&input.data, &input.chunks));
    let mut line = vec![0u8; cap];
    for want in expected(&input.data) {
        match io.read_line(&mut line) {
            Ok(n) => assert_eq!(&line[..n], want, "a line that fits comes back exactly"),
            Err(ReadLineError::TooLong { limit }) => {
                assert_eq!(limit, cap);
                assert!(want.len() > cap, "TooLong for a line of {} <= {cap}", want.len());
                assert_eq!(&line[..], &want[..cap], "the buffer holds the line's start");
                let rest = io.discard_line().unwrap();
                assert_eq!(rest, want.len() - cap, "discard_line skips exactly the rest");
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(io.read_line(&mut line).unwrap(), 0, "EOF after the last line");
    assert!(io.buffered().is_empty());
}

fuzz_target!(|input: Input| {
    check::<1>(&input);
    check::<7>(&input);
    check::<64>(&input);
});
