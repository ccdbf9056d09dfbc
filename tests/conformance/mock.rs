//! The core's mock transport: scripted peers, a virtual clock.

use embedded_io::ErrorKind;
use sockserv::driver::{Datagram, Stream};
use sockserv::mock::{MockAddr, MockConn, MockNet};
use sockserv::std_adapter::event::{GrowSlots, LazyPool};
use sockserv::{EventServer, EventServerConfig};
use sockserv::{Inline, Server, ShutdownFlag};

use crate::cases::{
    Case, DGRAM_BUFFER, Differs, End, Fixture, Op, Outcome, POLL, PeerResult, Rec, Run, Serve,
    payload,
};

pub struct Mock;

/// The peers' addresses: 100, 101, ...
const FIRST: u32 = 100;

fn script<'s>(i: usize, send: &'s [u8], end: End) -> MockConn<'s> {
    let conn = MockConn::new(FIRST + i as u32, send);
    match end {
        End::HalfClose => conn,
        End::ResetAfterReply => conn.reset_after(send.len()),
        End::HoldOpen => conn.hold_open(),
    }
}

fn setup<'s>(net: &MockNet<'s>, run: &'s Run, flag: &'s ShutdownFlag) {
    if run.accept_error {
        net.fail(ErrorKind::Other);
    }
    for (i, c) in run.clients.iter().enumerate() {
        net.connect(script(i, &c.send, c.end));
    }
    if let Some(after) = run.stop_after {
        net.request_stop_at(net.now() + after, flag);
    }
}

fn peers(net: &MockNet<'_>, run: &Run) -> Vec<PeerResult> {
    (0..run.clients.len())
        .map(|i| PeerResult {
            addr: format!("{:?}", FIRST + i as u32),
            received: net.conn(i).map(|c| c.output().to_vec()).unwrap_or_default(),
            error: None,
        })
        .collect()
}

impl Fixture for Mock {
    fn name(&self) -> &'static str {
        "mock"
    }

    fn differs(&self, case: Case) -> Option<Differs> {
        match case {
            Case::StopWakesAnIdleRead => Differs::new(
                "the mock cannot block: a read with nothing to read fails TimedOut at once \
                 (as a read timeout would), before any stop",
                Some("error: handler failed in Handle: TimedOut"),
            ),
            _ => None,
        }
    }

    fn stream(&self, run: &Run, rec: &Rec, serve: &mut dyn FnMut(Serve<'_>)) -> Outcome {
        let flag = ShutdownFlag::new();
        let net = MockNet::default();
        setup(&net, run, &flag);
        let mut server = Server::new(
            Stream(net.listener::<MockAddr>()),
            rec.clone(),
            &net,
            &flag,
            Inline::new(),
        );
        let start = net.now();
        serve(&mut |op| match op {
            Op::HandleRequest => server.handle_request().map_err(|e| format!("{e:?}")),
            Op::ServeForever => server.serve_forever(POLL).map_err(|e| format!("{e:?}")),
        });
        let took = net.now() - start;
        Outcome { peers: peers(&net, run), took, ..Outcome::default() }
    }

    fn datagram(&self, run: &Run, rec: &Rec, serve: &mut dyn FnMut(Serve<'_>)) -> Outcome {
        let data: Vec<Vec<u8>> = run.datagrams.iter().map(|&n| payload(n)).collect();
        let flag = ShutdownFlag::new();
        let net = MockNet::default();
        setup(&net, run, &flag);
        for d in &data {
            net.datagram(FIRST, d);
        }
        let transport = Datagram { socket: net.socket::<MockAddr>(), buffer: [0u8; DGRAM_BUFFER] };
        let mut server = Server::new(transport, rec.clone(), &net, &flag, Inline::new());
        let start = net.now();
        serve(&mut |op| match op {
            Op::HandleRequest => server.handle_request().map_err(|e| format!("{e:?}")),
            Op::ServeForever => server.serve_forever(POLL).map_err(|e| format!("{e:?}")),
        });
        let took = net.now() - start;
        let replies = (0..net.sent_count()).filter_map(|i| net.sent(i)).map(|(_, d)| d.to_vec());
        Outcome { replies: replies.collect(), took, ..Outcome::default() }
    }

    fn event(&self, run: &Run, rec: &Rec, slots: usize) -> Option<Outcome> {
        let flag = ShutdownFlag::new();
        let net = MockNet::default();
        setup(&net, run, &flag);
        // Each connection may hold two 512-byte buffers, as the fixed
        // 512 + 512 of each slot did.
        let mut server = EventServer::new(
            net.event_source::<MockAddr>(),
            rec.clone(),
            &net,
            &flag,
            GrowSlots::new(slots),
            LazyPool::new(512, 2 * slots, 2 * slots),
            // The full-table case checks refusals (the default waits in the backlog).
            EventServerConfig {
                idle_timeout: None,
                when_full: sockserv::WhenFull::Refuse,
                ..Default::default()
            },
        );
        let start = net.now();
        server.serve_forever(POLL).unwrap();
        let took = net.now() - start;
        drop(server);
        Some(Outcome { peers: peers(&net, run), took, ..Outcome::default() })
    }
}

crate::conformance!(Mock);
