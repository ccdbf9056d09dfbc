//! The smoltcp adapter over a TAP device with the Linux kernel as the
//! peer. Each case re-runs itself (this test binary, `--exact`) inside a
//! network namespace it makes (`unshare --net`), with `tap0` at
//! 192.168.69.100/24 and smoltcp at 192.168.69.1: never in the machine's
//! own namespace. Needs root: for other users the cases are skipped with
//! a `SKIPPED (needs root)` line (failed when `SOCKSERV_REQUIRE_ROOT_TESTS=1`,
//! as `.ci/run` sets); as root they fail with the reason when the
//! namespace or the TAP device cannot be made.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use smoltcp::iface::{Config, Interface};
use smoltcp::phy::{Medium, TunTapInterface};
use smoltcp::socket::{tcp, udp};
use smoltcp::wire::{EthernetAddress, IpAddress, IpCidr, IpEndpoint, Ipv4Address};
use sockserv::driver::{Datagram, Stream};
use sockserv::std_adapter::event::{GrowSlots, LazyPool};
use sockserv::{EventServer, EventServerConfig};
use sockserv::{Inline, Server, ShutdownFlag};
use sockserv_core::StdClock;
use sockserv_smoltcp::{Options, Stack, Storage, TapWait, TcpEventSource};

use crate::cases::{Case, DGRAM_BUFFER, Differs, Fixture, Op, Outcome, POLL, Rec, Run, Serve};
use crate::kernel;
use crate::smoltcp_loopback::ACCEPT_CANNOT_FAIL;

pub struct Tap;

const INSIDE: &str = "SOCKSERV_CONFORMANCE_TAP";
pub const HOST: Ipv4Address = Ipv4Address::new(192, 168, 69, 100);
pub const SMOLTCP: Ipv4Address = Ipv4Address::new(192, 168, 69, 1);
pub const PORT: u16 = 7000;

/// Runs `case` inside a fresh network namespace with a TAP device.
fn in_namespace(name: &str, case: impl FnOnce()) {
    in_namespace_of("smoltcp_tap", name, case);
}

/// Runs the case `module::name` of this binary inside a fresh network
/// namespace with `tap0` (the case itself when already inside); as
/// non-root, skips it (`root::can_run`). The firmware fixture's too.
pub fn in_namespace_of(module: &str, name: &str, case: impl FnOnce()) {
    if std::env::var_os(INSIDE).is_some() {
        setup();
        case();
        return;
    }
    if !crate::root::can_run(&format!("conformance {module}::{name}")) {
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let test = format!("{module}::{name}");
    let out = Command::new("timeout")
        .args(["-s", "KILL", "120", "unshare", "--net", "--"])
        .arg(exe)
        .args(["--exact", &test, "--nocapture", "--test-threads=1"])
        .env(INSIDE, "1")
        .output()
        .expect("cannot run timeout/unshare (coreutils, util-linux)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{test} in a network namespace failed (it needs root for unshare --net and ip tuntap):\n\
         {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The namespace's links: loopback up, tap0 with the host's address.
fn setup() {
    for cmd in [
        "ip link set lo up",
        "ip tuntap add dev tap0 mode tap",
        "ip addr add 192.168.69.100/24 dev tap0",
        "ip link set tap0 up",
    ] {
        let args: Vec<&str> = cmd.split(' ').collect();
        let status = Command::new(args[0]).args(&args[1..]).status().expect("ip (iproute2)");
        assert!(status.success(), "`{cmd}` failed");
    }
}

type TapStack<'a, F> = Stack<'a, TunTapInterface, TapWait<F>, StdClock>;

/// A stack on tap0 whose wait wakes the server once `stop` is set, and the
/// flag it requests then.
fn stack<'a>(
    storage: &'a mut Storage<'a, 16>,
    stop: Arc<AtomicBool>,
    flag: Arc<ShutdownFlag>,
) -> TapStack<'a, impl FnMut() -> bool> {
    let mut device = TunTapInterface::new("tap0", Medium::Ethernet).expect("tap0 opens");
    let mut config = Config::new(EthernetAddress([2, 0, 0, 0, 0, 1]).into());
    config.random_seed = u64::from(std::process::id());
    let mut iface = Interface::new(config, &mut device, smoltcp::time::Instant::ZERO);
    iface.update_ip_addrs(|a| a.push(IpCidr::new(SMOLTCP.into(), 24)).unwrap());
    let wait = TapWait::new(Duration::from_millis(20), move || {
        let stopping = stop.load(Ordering::SeqCst);
        if stopping {
            flag.request();
        }
        stopping
    });
    let stack = Stack::new(iface, device, storage, wait, StdClock::new());
    resolve(&stack);
    stack
}

/// Lets the kernel learn smoltcp's link address before a case starts (a
/// datagram to the discard port makes it ask): a first SYN that meets an
/// unresolved neighbour may be lost and come again only a second later.
fn resolve<F: FnMut() -> bool>(stack: &TapStack<'_, F>) {
    let probe = std::net::UdpSocket::bind((HOST, 0)).unwrap();
    let _ = probe.send_to(b"", (SMOLTCP, 9));
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        stack.poll();
        let neigh = Command::new("ip").args(["neigh", "show", "192.168.69.1"]).output();
        if neigh.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("lladdr")) {
            return;
        }
        thread::sleep(Duration::from_millis(2));
    }
    panic!("the kernel never learnt smoltcp's link address on tap0");
}

/// The stop switch (set by [`stop_later`]) and the flag the wait requests
/// when it sees it.
fn stopper() -> (Arc<AtomicBool>, Arc<ShutdownFlag>) {
    (Arc::new(AtomicBool::new(false)), Arc::new(ShutdownFlag::new()))
}

fn pool<const K: usize>() -> [tcp::Socket<'static>; K] {
    std::array::from_fn(|_| {
        tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 16 * 1024]),
            tcp::SocketBuffer::new(vec![0; 16 * 1024]),
        )
    })
}

pub fn format(a: SocketAddr) -> String {
    let ip = match a.ip() {
        std::net::IpAddr::V4(v4) => IpAddress::Ipv4(v4),
        std::net::IpAddr::V6(v6) => panic!("an IPv6 peer on tap0: {v6}"),
    };
    format!("{:?}", IpEndpoint::new(ip, a.port()))
}

fn server_addr(port: u16) -> SocketAddr {
    (SMOLTCP, port).into()
}

impl Fixture for Tap {
    fn name(&self) -> &'static str {
        "smoltcp over TAP"
    }

    fn differs(&self, case: Case) -> Option<Differs> {
        match case {
            Case::AcceptError => Differs::new(ACCEPT_CANNOT_FAIL, None),
            _ => None,
        }
    }

    fn stream(&self, run: &Run, rec: &Rec, serve: &mut dyn FnMut(Serve<'_>)) -> Outcome {
        let (stop, flag) = stopper();
        let mut storage = Storage::new();
        let stack = stack(&mut storage, Arc::clone(&stop), Arc::clone(&flag));
        let listener = stack.listen(PORT, pool::<4>(), Options::default()).unwrap();
        let peers = kernel::start(server_addr(PORT), &run.clients);
        stop_later(&stop, run.stop_after);
        let clock = StdClock::new();
        let mut server = Server::new(Stream(listener), rec.clone(), clock, &*flag, Inline::new());
        let start = Instant::now();
        serve(&mut |op| match op {
            Op::HandleRequest => server.handle_request().map_err(|e| format!("{e:?}")),
            Op::ServeForever => server.serve_forever(POLL).map_err(|e| format!("{e:?}")),
        });
        let took = start.elapsed();
        drop(server);
        // Keep the stack going while the peers finish (the FINs go out).
        let peers = finish(&stack, peers);
        Outcome { peers, took, ..Outcome::default() }
    }

    fn datagram(&self, run: &Run, rec: &Rec, serve: &mut dyn FnMut(Serve<'_>)) -> Outcome {
        let (stop, flag) = stopper();
        let mut storage = Storage::new();
        let stack = stack(&mut storage, Arc::clone(&stop), Arc::clone(&flag));
        let buffer = || udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 8], vec![0; 8192]);
        let socket = stack.bind_udp(PORT + 1, udp::Socket::new(buffer(), buffer())).unwrap();
        let local: SocketAddr = (HOST, 0).into();
        let peer = kernel::datagrams(local, server_addr(PORT + 1), &run.datagrams);
        stop_later(&stop, run.stop_after);
        let transport = Datagram { socket, buffer: [0u8; DGRAM_BUFFER] };
        let mut server =
            Server::new(transport, rec.clone(), StdClock::new(), &*flag, Inline::new());
        let start = Instant::now();
        serve(&mut |op| match op {
            Op::HandleRequest => server.handle_request().map_err(|e| format!("{e:?}")),
            Op::ServeForever => server.serve_forever(POLL).map_err(|e| format!("{e:?}")),
        });
        let took = start.elapsed();
        // The replies leave while the stack is polled.
        let deadline = Instant::now() + Duration::from_millis(300);
        while Instant::now() < deadline {
            stack.poll();
            thread::sleep(Duration::from_millis(5));
        }
        let replies = peer.join().unwrap();
        Outcome { replies, took, ..Outcome::default() }
    }

    fn event(&self, run: &Run, rec: &Rec, slots: usize) -> Option<Outcome> {
        let (stop, flag) = stopper();
        let mut storage = Storage::new();
        let stack = stack(&mut storage, Arc::clone(&stop), Arc::clone(&flag));
        let listener = stack.listen(PORT, pool::<5>(), Options::default()).unwrap();
        let peers = kernel::start(server_addr(PORT), &run.clients);
        stop_later(&stop, run.stop_after);
        // Each connection may hold two 512-byte buffers, as the fixed
        // 512 + 512 of each slot did.
        let mut server = EventServer::new(
            TcpEventSource::new(listener),
            rec.clone(),
            StdClock::new(),
            &*flag,
            GrowSlots::new(slots),
            LazyPool::new(512, 2 * slots, 2 * slots),
            // The full-table case checks refusals (the default waits in the backlog).
            EventServerConfig {
                idle_timeout: None,
                when_full: sockserv::WhenFull::Refuse,
                ..Default::default()
            },
        );
        let start = Instant::now();
        server.serve_forever(POLL).unwrap();
        let took = start.elapsed();
        drop(server);
        let peers = finish(&stack, peers);
        Some(Outcome { peers, took, ..Outcome::default() })
    }
}

fn stop_later(stop: &Arc<AtomicBool>, after: Option<Duration>) {
    if let Some(after) = after {
        let s = Arc::clone(stop);
        thread::spawn(move || {
            thread::sleep(after);
            s.store(true, Ordering::SeqCst);
        });
    }
}

/// Polls the stack until every peer thread is done, then joins them.
fn finish<F: FnMut() -> bool>(
    stack: &TapStack<'_, F>,
    peers: Vec<kernel::Peer>,
) -> Vec<crate::cases::PeerResult> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while peers.iter().any(|p| !p.is_finished()) && Instant::now() < deadline {
        stack.linger(Duration::from_millis(20));
        stack.poll();
        thread::sleep(Duration::from_millis(2));
    }
    peers.into_iter().map(|p| p.join(format)).collect()
}

crate::conformance!(in in_namespace, Tap);
