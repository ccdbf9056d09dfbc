use std::io::{self, Read as _};
use std::net::Shutdown;
use std::os::fd::{AsFd, BorrowedFd};

use embedded_io::ErrorType;
use socket2::Socket;
use sockserv_core::driver::NbConnection;

use crate::sys;

/// A non-blocking connected socket: the event mode's connection on std.
/// Interruptions are retried; would-block is `Ok(None)`; writes never raise
/// SIGPIPE (`MSG_NOSIGNAL`).
#[derive(Debug)]
pub struct NbConn(Socket);

impl NbConn {
    pub(crate) fn new(socket: Socket) -> Self {
        Self(socket)
    }

    /// The socket.
    pub fn get_ref(&self) -> &Socket {
        &self.0
    }
}

fn would_block<T>(r: io::Result<T>) -> Option<io::Result<Option<T>>> {
    match r {
        Ok(v) => Some(Ok(Some(v))),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Some(Ok(None)),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => None,
        Err(e) => Some(Err(e)),
    }
}

impl ErrorType for NbConn {
    type Error = io::Error;
}

impl NbConnection for NbConn {
    fn try_read(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        loop {
            if let Some(r) = would_block((&self.0).read(buf)) {
                return r;
            }
        }
    }

    fn try_write(&mut self, buf: &[u8]) -> io::Result<Option<usize>> {
        loop {
            if let Some(r) = would_block(sys::send_nosignal(&self.0, buf)) {
                return r;
            }
        }
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        self.0.shutdown(Shutdown::Write)
    }
}

impl AsFd for NbConn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}
