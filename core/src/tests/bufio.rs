//! `BufStream` (rfile / wfile) and `ReplyWriter` edge cases.

use embedded_io::{ErrorType, Read, Write};

use crate::driver::StreamListener;
use crate::mock::{MockAddr, MockConn, MockNet};
use crate::{BufStream, ReadLineError, ReplyFull, ReplyWriter};

fn read_lines(input: &[u8], line_cap: usize) -> std::vec::Vec<Result<std::vec::Vec<u8>, ()>> {
    let net = MockNet::new();
    net.connect(MockConn::new(1, input).one_byte_at_a_time());
    let (stream, _) = net.listener::<MockAddr>().try_accept().unwrap().unwrap();
    let mut io = BufStream::<_, 4>::new(stream);
    let mut out = std::vec::Vec::new();
    let mut line = std::vec![0u8; line_cap];
    loop {
        match io.read_line(&mut line) {
            Ok(0) => return out,
            Ok(n) => out.push(Ok(line[..n].to_vec())),
            Err(ReadLineError::TooLong { limit }) => {
                assert_eq!(limit, line_cap);
                out.push(Err(()));
                io.discard_line().unwrap();
            }
            Err(ReadLineError::Io(e)) => panic!("{e:?}"),
        }
    }
}

#[test]
fn read_line_splits_lines_and_returns_the_tail_at_eof() {
    let lines = read_lines(b"ab\ncd\nef", 8);
    assert_eq!(lines, [Ok(b"ab\n".to_vec()), Ok(b"cd\n".to_vec()), Ok(b"ef".to_vec())]);
}

#[test]
fn a_line_exactly_the_buffer_size_fits() {
    let lines = read_lines(b"abc\nd\n", 4);
    assert_eq!(lines, [Ok(b"abc\n".to_vec()), Ok(b"d\n".to_vec())]);
}

#[test]
fn an_over_long_line_is_refused_and_can_be_skipped() {
    let lines = read_lines(b"abcd\nok\n", 4);
    assert_eq!(lines, [Err(()), Ok(b"ok\n".to_vec())]);
}

/// A writer that takes at most 3 bytes per call.
struct Trickle(std::vec::Vec<u8>);
impl ErrorType for Trickle {
    type Error = core::convert::Infallible;
}
impl Write for Trickle {
    fn write(&mut self, b: &[u8]) -> Result<usize, Self::Error> {
        let n = b.len().min(3);
        self.0.extend_from_slice(&b[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}
impl Read for Trickle {
    fn read(&mut self, _: &mut [u8]) -> Result<usize, Self::Error> {
        Ok(0)
    }
}

#[test]
fn buf_stream_write_is_never_partial() {
    let mut io = BufStream::<_, 4>::new(Trickle(std::vec::Vec::new()));
    assert_eq!(io.write(b"0123456789").unwrap(), 10);
    assert_eq!(io.get_ref().0, b"0123456789");
}

#[test]
fn reply_writer_refuses_what_does_not_fit_whole() {
    let mut buf = [0u8; 5];
    let mut w = ReplyWriter::new(&mut buf);
    w.write_all(b"abc").unwrap();
    assert_eq!(w.write(b"def"), Err(ReplyFull { capacity: 5 }));
    assert_eq!(w.as_slice(), b"abc");
}

/// A reader that plays a script of chunks and errors.
struct Script(std::collections::VecDeque<Result<&'static [u8], embedded_io::ErrorKind>>, usize);
impl ErrorType for Script {
    type Error = embedded_io::ErrorKind;
}
impl Read for Script {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        self.1 += 1;
        match self.0.pop_front() {
            None => Ok(0),
            Some(Err(e)) => Err(e),
            Some(Ok(chunk)) => {
                buf[..chunk.len()].copy_from_slice(chunk);
                Ok(chunk.len())
            }
        }
    }
}

fn script(items: &[Result<&'static [u8], embedded_io::ErrorKind>]) -> Script {
    Script(items.iter().copied().collect(), 0)
}

#[test]
fn a_failed_read_does_not_replay_old_bytes() {
    let mut io = BufStream::<_, 16>::new(script(&[
        Ok(b"ab\n"),
        Err(embedded_io::ErrorKind::TimedOut),
        Ok(b"cd\n"),
    ]));
    let mut line = [0u8; 8];
    assert_eq!(io.read_line(&mut line), Ok(3));
    assert_eq!(io.read_line(&mut line), Err(ReadLineError::Io(embedded_io::ErrorKind::TimedOut)));
    assert_eq!(io.buffered(), b"");
    assert_eq!(io.read_line(&mut line), Ok(3));
    assert_eq!(&line[..3], b"cd\n");
    assert_eq!(io.read_line(&mut line), Ok(0));
}

#[test]
fn several_lines_in_one_read_are_split() {
    let mut io = BufStream::<_, 32>::new(script(&[Ok(b"a\nbb\nccc\nd")]));
    let mut line = [0u8; 8];
    let mut got = std::vec::Vec::new();
    loop {
        let n = io.read_line(&mut line).unwrap();
        if n == 0 {
            break;
        }
        got.push(line[..n].to_vec());
    }
    assert_eq!(got, [b"a\n".to_vec(), b"bb\n".to_vec(), b"ccc\n".to_vec(), b"d".to_vec()]);
    assert_eq!(io.get_ref().1, 3, "one read for the data; EOF ends the last line, then is the end");
}

#[test]
fn discard_line_says_how_much_it_skipped() {
    let mut io = BufStream::<_, 4>::new(script(&[Ok(b"abcd"), Ok(b"ef\no"), Ok(b"k\n")]));
    assert_eq!(io.discard_line().unwrap(), 7);
    let mut line = [0u8; 8];
    assert_eq!(io.read_line(&mut line), Ok(3));
    assert_eq!(io.discard_line().unwrap(), 0, "EOF");
}

#[test]
fn large_reads_bypass_the_buffer_and_empty_reads_touch_nothing() {
    let mut io = BufStream::<_, 4>::new(script(&[Ok(b"0123456789")]));
    assert_eq!(io.read(&mut []).unwrap(), 0);
    assert_eq!(io.get_ref().1, 0, "an empty read does not reach the stream");
    let mut big = [0u8; 16];
    assert_eq!(io.read(&mut big).unwrap(), 10, "straight into the caller's buffer");
    assert_eq!(&big[..10], b"0123456789");
}
