//! A connection's shared writer: how a handler writes to other
//! connections (a broadcast).

use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use embedded_io::{ErrorType, Write};
use socket2::Socket;
use sockserv_core::ShareWriter;

use crate::conn::Conn;
use crate::shutdown::{Shared, Waited};
use crate::sys::{self, Wants};

/// A writer to a connection that other threads keep: what
/// [`Conn::share_writer`](ShareWriter::share_writer) hands out, over a
/// duplicate of the socket (`Send + 'static`: put it in an
/// `Arc<Mutex<..>>` beside the other members of a room).
///
/// * A write writes all of the buffer or fails, as [`Conn`]'s does; it
///   never raises `SIGPIPE` (`MSG_NOSIGNAL`).
/// * A write that must wait for the peer to read waits at most the
///   server's `stream_timeout` (for ever without one), then fails with
///   `TimedOut`, and fails with `Interrupted` when the server is asked
///   to stop meanwhile. Give a server whose members may stop reading a
///   `stream_timeout`, so one of them cannot hold a broadcast for ever.
/// * Once the connection's handler has returned, the server shuts the
///   socket down and writes fail (`BrokenPipe`): drop the writer then.
/// * Across processes (the forking strategy) a writer reaches only the
///   connections of its own process: broadcast needs threads.
#[derive(Debug)]
pub struct ConnWriter {
    socket: Socket,
    shared: Arc<Shared>,
    timeout: Option<Duration>,
}

impl ShareWriter for Conn {
    type Writer = ConnWriter;

    fn share_writer(&self) -> io::Result<ConnWriter> {
        let (shared, timeout) = self.writer_waits();
        Ok(ConnWriter { socket: self.get_ref().try_clone()?, shared, timeout })
    }
}

impl ErrorType for ConnWriter {
    type Error = io::Error;
}

impl Write for ConnWriter {
    fn write(&mut self, mut buf: &[u8]) -> io::Result<usize> {
        let len = buf.len();
        while !buf.is_empty() {
            match sys::send_dontwait(&self.socket, buf) {
                Ok(n) => buf = &buf[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.wait_for_room()?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(len)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ConnWriter {
    /// Waits until the socket takes more, the timeout passes or a stop.
    fn wait_for_room(&self) -> io::Result<()> {
        let fd = Some((self.socket.as_fd(), Wants { read: false, write: true }));
        match self.shared.wait(fd, self.timeout, false)? {
            Waited::Stop => {
                Err(io::Error::new(io::ErrorKind::Interrupted, "the server is shutting down"))
            }
            Waited::TimedOut => {
                Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out (stream_timeout)"))
            }
            Waited::Ready => Ok(()),
        }
    }
}
