//! What the fuzz targets share: a chunked reader and a recording service.

use std::cell::RefCell;
use std::fmt::Debug;

use embedded_io::{ErrorType, Read, Write};
use sockserv_core::mock::MockError;
use sockserv_core::{DatagramHandler, ReplyWriter, RequestError, Service, StreamHandler};

/// A stream that hands out `data` in the given chunk sizes (cycled; a 0
/// counts as 1, so that a read never reports EOF early).
pub struct Chunked<'a> {
    data: &'a [u8],
    chunks: &'a [u8],
    next: usize,
}

impl<'a> Chunked<'a> {
    pub fn new(data: &'a [u8], chunks: &'a [u8]) -> Self {
        Self { data, chunks, next: 0 }
    }
}

impl ErrorType for Chunked<'_> {
    type Error = MockError;
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, MockError> {
        let chunk = self.chunks.get(self.next % self.chunks.len().max(1)).copied().unwrap_or(255);
        self.next += 1;
        let n = usize::from(chunk.max(1)).min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// A service that echoes (streams: every byte until EOF, 8 at a time;
/// datagrams: the packet) and records per client what happened.
#[derive(Default)]
pub struct Recorder {
    /// (client, what) in order: "handle", "error: ...".
    pub log: RefCell<Vec<(u32, String)>>,
}

impl Recorder {
    pub fn count(&self, client: u32, prefix: &str) -> usize {
        self.log.borrow().iter().filter(|(c, l)| *c == client && l.starts_with(prefix)).count()
    }
}

impl<'r> Service<u32> for &'r Recorder {
    type Handler = Echo<'r>;
    fn handler(&self, client: &u32) -> Echo<'r> {
        Echo(self, *client)
    }
    fn handle_error(&self, client: &u32, error: &RequestError<'_>) {
        self.log.borrow_mut().push((*client, format!("error: {error}")));
    }
    fn handle_accept_error(&self, _: &dyn embedded_io::Error) {}
}

pub struct Echo<'r>(&'r Recorder, u32);

impl<S: Read + Write> StreamHandler<S> for Echo<'_>
where
    S::Error: Debug,
{
    type Error = S::Error;
    fn handle(&mut self, stream: &mut S) -> Result<(), S::Error> {
        self.0.log.borrow_mut().push((self.1, "handle".into()));
        let mut buf = [0u8; 8];
        loop {
            let n = stream.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            stream.write_all(&buf[..n])?;
        }
    }
}

impl DatagramHandler for Echo<'_> {
    type Error = sockserv_core::ReplyFull;
    fn handle(&mut self, packet: &[u8], reply: &mut ReplyWriter<'_>) -> Result<(), Self::Error> {
        self.0.log.borrow_mut().push((self.1, format!("handle {};", packet.len())));
        reply.write_all(packet)
    }
}
