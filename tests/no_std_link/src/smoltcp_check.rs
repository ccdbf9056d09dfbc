//! One request served by the smoltcp adapter (through the facade's
//! `smoltcp` feature) over a loopback device of
//! fixed frames ([`Ring`]), without std and without an allocator, in sync mode (`Server`) and in event mode (the core's
//! `EventServer` over a `TcpEventSource`): the client is a smoltcp socket
//! in the same set, driven by the stack's `Wait`, which also moves a
//! virtual clock.

use core::cell::Cell;
use core::time::Duration;

use core::convert::Infallible;

use sockserv::driver::{Clock, Readiness};
use sockserv::smoltcp_adapter::smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use sockserv::smoltcp_adapter::smoltcp::socket::tcp;
use sockserv::smoltcp_adapter::smoltcp::wire::{EthernetAddress, IpAddress, IpCidr, IpEndpoint};
use sockserv::smoltcp_adapter::{
    EventTcpServer, Options, Stack, Storage, TcpServer, Wait, smoltcp,
};
use sockserv::{EventHandler, EventServerConfig, FixedPool, Outbox, Step};
use sockserv::{Service, ShutdownFlag, service_fn};

use crate::Echo;
use crate::ring::Ring;

const MESSAGE: &[u8] = b"hello smoltcp\n";

/// A virtual clock, moved by the waits.
pub struct Ticks(pub Cell<Duration>);

impl Clock for Ticks {
    fn now(&self) -> Duration {
        self.0.get()
    }
}

/// Sends the message once connected, then half-closes.
struct Peer<'c> {
    clock: &'c Ticks,
    client: Cell<Option<SocketHandle>>,
    sent: Cell<bool>,
}

impl<D> Wait<D> for &Peer<'_> {
    fn wait(&mut self, _: &mut D, set: &mut SocketSet<'_>, timeout: Option<Duration>) -> Readiness {
        if let Some(h) = self.client.get() {
            let s = set.get_mut::<tcp::Socket>(h);
            if !self.sent.get() && s.may_send() && s.send_slice(MESSAGE) == Ok(MESSAGE.len()) {
                s.close();
                self.sent.set(true);
                return Readiness::Ready;
            }
        }
        let step = timeout.unwrap_or(Duration::from_millis(10));
        self.clock.0.set(self.clock.0.get() + step);
        Readiness::TimedOut
    }
}

static FLAG: ShutdownFlag = ShutdownFlag::new();

/// How a request is served.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Sync,
    Event,
}

/// The event mode's echo; stops the server once its connection closed.
struct EventEcho<'f>(&'f ShutdownFlag);

impl EventHandler for EventEcho<'_> {
    type Error = Infallible;
    fn received(&mut self, input: &[u8], out: &mut Outbox<'_>) -> Result<Step, Infallible> {
        Ok(Step::consumed(out.write(input)))
    }
    fn closed(&mut self) {
        self.0.request();
    }
}

/// Makes an [`EventEcho`] per connection.
struct EventEchoService<'f>(&'f ShutdownFlag);

impl<'f> Service<IpEndpoint> for EventEchoService<'f> {
    type Handler = EventEcho<'f>;
    fn handler(&self, _: &IpEndpoint) -> EventEcho<'f> {
        EventEcho(self.0)
    }
}

static EVENT_FLAG: ShutdownFlag = ShutdownFlag::new();

/// The event server's buffers, as a firmware places them: a `static`
/// built at compile time (all zero bytes: it lands in `.bss`, which
/// `.ci/run` checks), never on the stack.
static mut POOL: FixedPool<64, 2> = FixedPool::new();

/// The event server as a firmware names it: two connections sharing the
/// static pool.
type EchoEventServer<'s, 'a> =
    EventTcpServer<'s, 'a, EventEchoService<'static>, &'static mut FixedPool<64, 2>, 2>;

/// `true` when the client got its message back and the server's FIN.
pub fn serve_one(mode: Mode) -> bool {
    let clock = Ticks(Cell::new(Duration::ZERO));
    let peer = Peer { clock: &clock, client: Cell::new(None), sent: Cell::new(false) };
    let mut device = Ring::new();
    let config = Config::new(EthernetAddress([2, 0, 0, 0, 0, 1]).into());
    let mut iface = Interface::new(config, &mut device, smoltcp::time::Instant::ZERO);
    let addr = IpAddress::v4(127, 0, 0, 1);
    iface.update_ip_addrs(|a| {
        let _ = a.push(IpCidr::new(addr, 8));
    });
    let mut bufs = [[0u8; 512]; 6];
    let [b0, b1, b2, b3, b4, b5] = &mut bufs;
    let pool = [
        tcp::Socket::new(tcp::SocketBuffer::new(&mut b0[..]), tcp::SocketBuffer::new(&mut b1[..])),
        tcp::Socket::new(tcp::SocketBuffer::new(&mut b2[..]), tcp::SocketBuffer::new(&mut b3[..])),
    ];
    let client =
        tcp::Socket::new(tcp::SocketBuffer::new(&mut b4[..]), tcp::SocketBuffer::new(&mut b5[..]));
    let mut storage = Storage::<4>::new();
    let stack = Stack::new(iface, device, &mut storage, &peer, &clock);
    let Ok(listener) = stack.listen(7000, pool, Options::default()) else { return false };
    let handle = stack.with_parts(|iface, set| {
        let h = set.add(client);
        let ok = set.get_mut::<tcp::Socket>(h).connect(iface.context(), (addr, 7000), 40000);
        ok.map(|()| h)
    });
    let Ok(handle) = handle else { return false };
    peer.client.set(Some(handle));
    let served = match mode {
        Mode::Sync => {
            // On the stack's clock (given once, to `Stack::new`).
            let mut server: TcpServer<'_, '_, _> =
                listener.into_server(service_fn(|_| Echo), &FLAG);
            server.set_timeout(Some(Duration::from_secs(5)));
            server.handle_request().is_ok()
        }
        Mode::Event => {
            // A table of two connections sharing two 64-byte buffers in a
            // static, no heap.
            let config = EventServerConfig {
                idle_timeout: Some(Duration::from_secs(5)),
                ..EventServerConfig::default()
            };
            // SAFETY: the only reference to POOL, made once (event mode is
            // served once per run), as `cortex_m::singleton!` would.
            let pool = unsafe { &mut *core::ptr::addr_of_mut!(POOL) };
            let mut server: EchoEventServer<'_, '_> = listener.into_event_server(
                EventEchoService(&EVENT_FLAG),
                &EVENT_FLAG,
                pool,
                config,
            );
            server.serve_forever(Duration::from_millis(100)).is_ok()
                && clock.now() < Duration::from_secs(5)
        }
    };
    if !served {
        return false;
    }
    for _ in 0..20 {
        stack.poll();
    }
    stack.with_sockets(|set| {
        let s = set.get_mut::<tcp::Socket>(handle);
        let mut got = [0u8; 64];
        let n = s.recv_slice(&mut got).unwrap_or(0);
        // Everything echoed, then the server's FIN.
        &got[..n] == MESSAGE && s.recv_slice(&mut got) == Err(tcp::RecvError::Finished)
    })
}
