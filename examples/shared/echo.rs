//! The echo handler's code in all three forms, without `std`: included
//! (`#[path]`) by `mod.rs` for the host examples and by the mps2-an386
//! firmware (`examples/mps2-an386`), so that both serve the same code.
//! Each includer gives the stream form its read buffer.

use embedded_io::{Read, Write};
use sockserv::{DatagramHandler, ReplyFull, ReplyWriter};
use sockserv::{EventHandler, Outbox, Step};

/// Sends every byte back until the client closes its side; each datagram
/// back whole.
pub struct Echo;

/// The blocking stream echo over `buf`: each read takes at most
/// `buf.len()` bytes, and each write sends what one read got.
pub fn echo_stream<S: Read + Write>(stream: &mut S, buf: &mut [u8]) -> Result<(), S::Error> {
    loop {
        let n = stream.read(buf)?;
        if n == 0 {
            return Ok(());
        }
        stream.write_all(&buf[..n])?;
    }
}

impl EventHandler for Echo {
    type Error = core::convert::Infallible;
    fn received(&mut self, input: &[u8], out: &mut Outbox<'_>) -> Result<Step, Self::Error> {
        // What does not fit stays buffered until the client reads.
        Ok(Step::consumed(out.write(input)))
    }
}

impl DatagramHandler for Echo {
    type Error = ReplyFull;
    fn handle(&mut self, packet: &[u8], reply: &mut ReplyWriter<'_>) -> Result<(), ReplyFull> {
        reply.write_all(packet)
    }
}
