//! One request served by the embedded-nal transport (through the
//! facade's `nal` feature) over a scripted `TcpFullStack` of fixed
//! buffers, without std and without an allocator: the message arrives in
//! pieces with a `WouldBlock` between them, then EOF.

use core::cell::Cell;
use core::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use core::time::Duration;

use embedded_nal::{TcpClientStack, TcpError, TcpErrorKind, TcpFullStack, nb};
use sockserv::driver::Stream;
use sockserv::nal_adapter::NalStack;
use sockserv::{Inline, Server, ShutdownFlag, service_fn};

use crate::Echo;
use crate::smoltcp_check::Ticks;

const MESSAGE: &[u8] = b"hello embedded-nal\n";

/// The only error: the script has no failures.
#[derive(Debug)]
struct Never;

impl TcpError for Never {
    fn kind(&self) -> TcpErrorKind {
        TcpErrorKind::Other
    }
}

/// A stack with one listening socket (0) that accepts one connection (1).
struct Script {
    accepted: bool,
    fed: usize,
    /// The next `receive` says `WouldBlock` (every other call does).
    block: bool,
    out: [u8; 64],
    out_len: usize,
    closed: usize,
}

impl TcpClientStack for Script {
    type TcpSocket = u8;
    type Error = Never;

    fn socket(&mut self) -> Result<u8, Never> {
        Ok(0)
    }

    fn connect(&mut self, _: &mut u8, _: SocketAddr) -> nb::Result<(), Never> {
        Err(nb::Error::Other(Never))
    }

    fn send(&mut self, _: &mut u8, data: &[u8]) -> nb::Result<usize, Never> {
        let n = data.len().min(self.out.len() - self.out_len);
        self.out[self.out_len..self.out_len + n].copy_from_slice(&data[..n]);
        self.out_len += n;
        Ok(n)
    }

    fn receive(&mut self, _: &mut u8, buf: &mut [u8]) -> nb::Result<usize, Never> {
        self.block = !self.block;
        if !self.block {
            return Err(nb::Error::WouldBlock);
        }
        let n = (MESSAGE.len() - self.fed).min(buf.len()).min(5);
        buf[..n].copy_from_slice(&MESSAGE[self.fed..self.fed + n]);
        self.fed += n;
        Ok(n)
    }

    fn close(&mut self, _: u8) -> Result<(), Never> {
        self.closed += 1;
        Ok(())
    }
}

impl TcpFullStack for Script {
    fn bind(&mut self, _: &mut u8, _: u16) -> Result<(), Never> {
        Ok(())
    }

    fn listen(&mut self, _: &mut u8) -> Result<(), Never> {
        Ok(())
    }

    fn accept(&mut self, _: &mut u8) -> nb::Result<(u8, SocketAddr), Never> {
        if core::mem::replace(&mut self.accepted, true) {
            return Err(nb::Error::WouldBlock);
        }
        Ok((1, SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 40000))))
    }
}

static FLAG: ShutdownFlag = ShutdownFlag::new();

/// `true` when the script got its message back and both sockets closed.
pub fn serve_one() -> bool {
    let clock = Ticks(Cell::new(Duration::ZERO));
    let script =
        Script { accepted: false, fed: 0, block: false, out: [0; 64], out_len: 0, closed: 0 };
    let net = NalStack::new(script, &clock, |d| {
        clock.0.set(clock.0.get() + d);
        false
    });
    {
        let Ok(listener) = net.listen(7, None) else { return false };
        let mut server =
            Server::new(Stream(listener), service_fn(|_| Echo), &clock, &FLAG, Inline::new());
        server.set_timeout(Some(Duration::from_secs(5)));
        if server.handle_request().is_err() {
            return false;
        }
    }
    net.with_stack(|s| &s.out[..s.out_len] == MESSAGE && s.fed == MESSAGE.len() && s.closed == 2)
}
