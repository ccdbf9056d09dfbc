//! The smoltcp adapter over smoltcp's `Loopback` device: smoltcp peers in
//! the stack's own socket set, a virtual clock (`smoltcp_world`).

use smoltcp::socket::udp;
use smoltcp::wire::IpEndpoint;
use sockserv::driver::{Clock, Datagram, Stream};
use sockserv::std_adapter::event::{GrowSlots, LazyPool};
use sockserv::{EventServer, EventServerConfig};
use sockserv::{Inline, Server};
use sockserv_smoltcp::{Options, Storage, TcpEventSource};

use crate::cases::{
    Case, DGRAM_BUFFER, Differs, End, Fixture, Op, Outcome, POLL, PeerResult, Rec, Run, Serve,
    payload,
};
use crate::smoltcp_world::{Client, PORT, SERVER, TestStack, World, pool};

pub struct Loopback;

/// Shared with the TAP fixture.
pub const ACCEPT_CANNOT_FAIL: &str = "a smoltcp listener's accept takes a socket from its pool \
    and cannot fail: the error type is never produced (a full pool is the backlog policy's \
    business, tested in tests/smoltcp_loopback.rs and tests/smoltcp_tap.rs)";

/// The peers' ports: 41000, 41001, ...
const FIRST: u16 = 41000;
const UDP_PORT: u16 = 7001;
const UDP_PEER: u16 = 5000;

fn connect(world: &World, stack: &TestStack<'_>, run: &Run) {
    for (i, c) in run.clients.iter().enumerate() {
        let mut client = Client::new(&c.send);
        client.close_when_sent = c.end == End::HalfClose;
        client.abort_on_reply = c.end == End::ResetAfterReply;
        world.connect(stack, FIRST + i as u16, client);
    }
    if let Some(after) = run.stop_after {
        world.wake_at.set(Some(world.clock.now() + after));
    }
}

fn peers(world: &World, stack: &TestStack<'_>, run: &Run) -> Vec<PeerResult> {
    world.settle(stack);
    (0..run.clients.len())
        .map(|i| PeerResult {
            addr: format!("{:?}", IpEndpoint::new(SERVER, FIRST + i as u16)),
            received: world.received(i),
            error: None,
        })
        .collect()
}

fn udp_socket() -> udp::Socket<'static> {
    let buffer = || udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 4], vec![0; 4096]);
    udp::Socket::new(buffer(), buffer())
}

impl Fixture for Loopback {
    fn name(&self) -> &'static str {
        "smoltcp loopback"
    }

    fn differs(&self, case: Case) -> Option<Differs> {
        match case {
            Case::AcceptError => Differs::new(ACCEPT_CANNOT_FAIL, None),
            _ => None,
        }
    }

    fn stream(&self, run: &Run, rec: &Rec, serve: &mut dyn FnMut(Serve<'_>)) -> Outcome {
        let world = World::new();
        let mut storage = Storage::new();
        let stack = world.stack(&mut storage);
        let listener = stack.listen(PORT, pool::<4>(), Options::default()).unwrap();
        connect(&world, &stack, run);
        let clock = &world.clock;
        let mut server =
            Server::new(Stream(listener), rec.clone(), clock, &world.flag, Inline::new());
        let start = clock.now();
        serve(&mut |op| match op {
            Op::HandleRequest => server.handle_request().map_err(|e| format!("{e:?}")),
            Op::ServeForever => server.serve_forever(POLL).map_err(|e| format!("{e:?}")),
        });
        let took = clock.now() - start;
        drop(server);
        Outcome { peers: peers(&world, &stack, run), took, ..Outcome::default() }
    }

    fn datagram(&self, run: &Run, rec: &Rec, serve: &mut dyn FnMut(Serve<'_>)) -> Outcome {
        let world = World::new();
        let mut storage = Storage::new();
        let stack = world.stack(&mut storage);
        let socket = stack.bind_udp(UDP_PORT, udp_socket()).unwrap();
        let peer = stack.with_sockets(|set| {
            let h = set.add(udp_socket());
            let s = set.get_mut::<udp::Socket>(h);
            s.bind(UDP_PEER).unwrap();
            for &n in &run.datagrams {
                s.send_slice(&payload(n), (SERVER, UDP_PORT)).unwrap();
            }
            h
        });
        connect(&world, &stack, run);
        let clock = &world.clock;
        let transport = Datagram { socket, buffer: [0u8; DGRAM_BUFFER] };
        let mut server = Server::new(transport, rec.clone(), clock, &world.flag, Inline::new());
        let start = clock.now();
        serve(&mut |op| match op {
            Op::HandleRequest => server.handle_request().map_err(|e| format!("{e:?}")),
            Op::ServeForever => server.serve_forever(POLL).map_err(|e| format!("{e:?}")),
        });
        let took = clock.now() - start;
        world.settle(&stack);
        let replies = stack.with_sockets(|set| {
            let s = set.get_mut::<udp::Socket>(peer);
            let mut out = Vec::new();
            while let Ok((data, _)) = s.recv() {
                out.push(data.to_vec());
            }
            out
        });
        Outcome { replies, took, ..Outcome::default() }
    }

    fn event(&self, run: &Run, rec: &Rec, slots: usize) -> Option<Outcome> {
        let world = World::new();
        let mut storage = Storage::new();
        let stack = world.stack(&mut storage);
        // More sockets than slots, no max_connections: the table refuses.
        let listener = stack.listen(PORT, pool::<5>(), Options::default()).unwrap();
        connect(&world, &stack, run);
        let clock = &world.clock;
        // Each connection may hold two 512-byte buffers, as the fixed
        // 512 + 512 of each slot did.
        let mut server = EventServer::new(
            TcpEventSource::new(listener),
            rec.clone(),
            clock,
            &world.flag,
            GrowSlots::new(slots),
            LazyPool::new(512, 2 * slots, 2 * slots),
            // The full-table case checks refusals (the default waits in the backlog).
            EventServerConfig {
                idle_timeout: None,
                when_full: sockserv::WhenFull::Refuse,
                ..Default::default()
            },
        );
        let start = clock.now();
        server.serve_forever(POLL).unwrap();
        let took = clock.now() - start;
        drop(server);
        Some(Outcome { peers: peers(&world, &stack, run), took, ..Outcome::default() })
    }
}

crate::conformance!(Loopback);
