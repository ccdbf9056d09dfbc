//! The embedded-nal transport for real: `std-embedded-nal`'s stack (the
//! host's sockets behind the embedded-nal traits) serving std and Python
//! clients on loopback.

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use embedded_io::{Read, Write};
use sockserv::StdClock;
use sockserv::driver::{Datagram, Stream};
use sockserv::{
    DatagramHandler, Inline, ReplyFull, ReplyWriter, RequestError, Server, Service, ShutdownFlag,
    ShutdownSignal, StreamHandler,
};
use sockserv_nal::NalStack;

const TIMEOUT: Duration = Duration::from_secs(10);

/// A port that was free a moment ago (embedded-nal binds by port only).
fn free_port(udp: bool) -> u16 {
    if udp {
        UdpSocket::bind("[::]:0").unwrap().local_addr().unwrap().port()
    } else {
        std::net::TcpListener::bind("[::]:0").unwrap().local_addr().unwrap().port()
    }
}

#[derive(Clone, Default)]
struct Rec {
    log: Arc<Mutex<Vec<String>>>,
}

impl Rec {
    fn lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

struct Echo;

impl<S: Read + Write> StreamHandler<S> for Echo {
    type Error = S::Error;
    fn handle(&mut self, stream: &mut S) -> Result<(), S::Error> {
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            stream.write_all(&buf[..n])?;
        }
    }
}

impl DatagramHandler for Echo {
    type Error = ReplyFull;
    fn handle(&mut self, packet: &[u8], reply: &mut ReplyWriter<'_>) -> Result<(), ReplyFull> {
        reply.write_all(packet)
    }
}

impl Service<SocketAddr> for Rec {
    type Handler = Echo;
    fn handler(&self, _: &SocketAddr) -> Echo {
        Echo
    }
    fn handle_error(&self, _: &SocketAddr, error: &RequestError<'_>) {
        self.log.lock().unwrap().push(format!("error: {error}"));
    }
}

/// The sleep function: a short nap; wakes the server when a stop was asked.
fn sleeper(flag: &'static ShutdownFlag) -> impl FnMut(Duration) -> bool {
    move |d| {
        thread::sleep(d);
        flag.is_requested()
    }
}

fn echo_client(port: u16, data: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut reader = s.try_clone().unwrap();
    let got = thread::spawn(move || {
        let mut out = Vec::new();
        reader.read_to_end(&mut out).map(|_| out)
    });
    s.write_all(data).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    got.join().unwrap().expect("the echo arrived in time")
}

fn python(code: &str) -> String {
    let out = Command::new("timeout").args(["-s", "KILL", "30", "python3", "-c", code]).output();
    let out = out.expect("python3 is needed for this test");
    assert!(out.status.success(), "python3 failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn tcp_echo_over_std_embedded_nal() {
    static FLAG: ShutdownFlag = ShutdownFlag::new();
    let port = free_port(false);
    let rec = Rec::default();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server_rec = rec.clone();
    let server = thread::spawn(move || {
        let net = NalStack::new(std_embedded_nal::Stack, StdClock::new(), sleeper(&FLAG))
            .with_tick(Duration::from_millis(2));
        let listener = net.listen(port, Some(TIMEOUT)).unwrap();
        ready_tx.send(()).unwrap();
        let mut server =
            Server::new(Stream(listener), server_rec, StdClock::new(), &FLAG, Inline::new());
        server.serve_forever(Duration::from_millis(100))
    });
    ready_rx.recv_timeout(TIMEOUT).unwrap();

    for i in 0..5 {
        let msg = format!("sequential {i}\n");
        assert_eq!(echo_client(port, msg.as_bytes()), msg.as_bytes());
    }
    let big: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    assert_eq!(echo_client(port, &big), big, "1 MiB echo");
    let answer = python(&format!(
        "import socket\n\
         s = socket.create_connection(('127.0.0.1', {port}), timeout=10)\n\
         s.sendall(b'from python'); s.shutdown(socket.SHUT_WR)\n\
         out = b''\n\
         while True:\n    b = s.recv(100)\n    if not b: break\n    out += b\n\
         print(out.decode())"
    ));
    assert_eq!(answer, "from python");

    FLAG.request();
    server.join().unwrap().unwrap();
    assert!(rec.lines().is_empty(), "{:?}", rec.lines());
}

#[test]
fn udp_echo_and_truncation_over_std_embedded_nal() {
    static FLAG: ShutdownFlag = ShutdownFlag::new();
    let port = free_port(true);
    let rec = Rec::default();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server_rec = rec.clone();
    let server = thread::spawn(move || {
        let net = NalStack::new(std_embedded_nal::Stack, StdClock::new(), sleeper(&FLAG))
            .with_tick(Duration::from_millis(2));
        // 64-byte datagrams served whole: the stash is one byte larger.
        let socket = net.bind_udp(port, [0u8; 65]).unwrap();
        ready_tx.send(()).unwrap();
        let transport = Datagram { socket, buffer: [0u8; 64] };
        let mut server = Server::new(transport, server_rec, StdClock::new(), &FLAG, Inline::new());
        server.serve_forever(Duration::from_millis(100))
    });
    ready_rx.recv_timeout(TIMEOUT).unwrap();

    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut buf = [0u8; 200];
    client.send_to(&[7u8; 100], ("127.0.0.1", port)).unwrap();
    client.send_to(&[9u8; 64], ("127.0.0.1", port)).unwrap();
    let n = client.recv(&mut buf).expect("the 64-byte datagram came back");
    assert_eq!(&buf[..n], &[9u8; 64], "the truncated datagram got no reply");
    let answer = python(&format!(
        "import socket\n\
         u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(10)\n\
         u.sendto(b'python datagram', ('127.0.0.1', {port}))\n\
         print(u.recvfrom(100)[0].decode())"
    ));
    assert_eq!(answer, "python datagram");

    FLAG.request();
    server.join().unwrap().unwrap();
    let lines = rec.lines();
    assert_eq!(
        lines,
        ["error: datagram of 66 bytes does not fit the 64-byte buffer; dropped"],
        "a datagram that filled the stash is reported (size unknown: stash + 1)"
    );
}

/// A scripted embedded-nal stack on a virtual clock: a peer that never
/// sends nor reads (every receive and send would block), accepts and UDP
/// receives that fail once when told to.
mod scripted {
    use std::cell::Cell;
    use std::net::SocketAddr;
    use std::time::Duration;

    use embedded_nal::{
        TcpClientStack, TcpError, TcpErrorKind, TcpFullStack, UdpClientStack, UdpFullStack, nb,
    };
    use sockserv::driver::Clock;

    #[derive(Debug, PartialEq)]
    pub struct Broken;

    impl TcpError for Broken {
        fn kind(&self) -> TcpErrorKind {
            TcpErrorKind::Other
        }
    }

    #[derive(Default)]
    pub struct Script {
        pub now: Cell<Duration>,
        /// The sleep function says "wake for shutdown" from now on.
        pub woken: Cell<bool>,
        /// A client waits to be accepted.
        pub client: Cell<bool>,
        /// The next accept, or UDP receive, fails.
        pub fail_once: Cell<bool>,
    }

    impl Clock for &Script {
        fn now(&self) -> Duration {
            self.now.get()
        }
    }

    impl Script {
        /// The sleep function: moves the clock, reports `woken`.
        pub fn sleeper(&self) -> impl FnMut(Duration) -> bool + '_ {
            |d| {
                self.now.set(self.now.get() + d);
                self.woken.get()
            }
        }

        fn fail(&self) -> bool {
            self.fail_once.replace(false)
        }
    }

    pub struct Stack<'s>(pub &'s Script);

    fn peer() -> SocketAddr {
        "127.0.0.1:4000".parse().unwrap()
    }

    impl TcpClientStack for Stack<'_> {
        type TcpSocket = ();
        type Error = Broken;
        fn socket(&mut self) -> Result<(), Broken> {
            Ok(())
        }
        fn connect(&mut self, _: &mut (), _: SocketAddr) -> nb::Result<(), Broken> {
            Err(nb::Error::Other(Broken))
        }
        fn send(&mut self, _: &mut (), _: &[u8]) -> nb::Result<usize, Broken> {
            Err(nb::Error::WouldBlock)
        }
        fn receive(&mut self, _: &mut (), _: &mut [u8]) -> nb::Result<usize, Broken> {
            Err(nb::Error::WouldBlock)
        }
        fn close(&mut self, _: ()) -> Result<(), Broken> {
            Ok(())
        }
    }

    impl TcpFullStack for Stack<'_> {
        fn bind(&mut self, _: &mut (), _: u16) -> Result<(), Broken> {
            Ok(())
        }
        fn listen(&mut self, _: &mut ()) -> Result<(), Broken> {
            Ok(())
        }
        fn accept(&mut self, _: &mut ()) -> nb::Result<((), SocketAddr), Broken> {
            if self.0.fail() {
                Err(nb::Error::Other(Broken))
            } else if self.0.client.replace(false) {
                Ok(((), peer()))
            } else {
                Err(nb::Error::WouldBlock)
            }
        }
    }

    impl UdpClientStack for Stack<'_> {
        type UdpSocket = ();
        type Error = Broken;
        fn socket(&mut self) -> Result<(), Broken> {
            Ok(())
        }
        fn connect(&mut self, _: &mut (), _: SocketAddr) -> Result<(), Broken> {
            Ok(())
        }
        fn send(&mut self, _: &mut (), _: &[u8]) -> nb::Result<(), Broken> {
            Err(nb::Error::WouldBlock)
        }
        fn receive(&mut self, _: &mut (), _: &mut [u8]) -> nb::Result<(usize, SocketAddr), Broken> {
            if self.0.fail() { Err(nb::Error::Other(Broken)) } else { Err(nb::Error::WouldBlock) }
        }
        fn close(&mut self, _: ()) -> Result<(), Broken> {
            Ok(())
        }
    }

    impl UdpFullStack for Stack<'_> {
        fn bind(&mut self, _: &mut (), _: u16) -> Result<(), Broken> {
            Ok(())
        }
        fn send_to(&mut self, _: &mut (), _: SocketAddr, _: &[u8]) -> nb::Result<(), Broken> {
            Err(nb::Error::WouldBlock)
        }
    }
}

#[test]
fn a_stop_interrupts_a_nal_read_and_write_that_must_wait() {
    use embedded_io::{Error as _, ErrorKind};
    use sockserv::driver::StreamListener;
    let script = scripted::Script::default();
    let net = NalStack::new(scripted::Stack(&script), &script, script.sleeper());
    let mut listener = net.listen(7000, Some(Duration::from_secs(30))).unwrap();
    script.client.set(true);
    let (mut conn, _) = listener.try_accept().unwrap().expect("the client");
    // The stop comes while the read waits on a silent peer (the stream
    // timeout alone would end it only after 30 s).
    script.woken.set(true);
    let mut buf = [0u8; 8];
    assert_eq!(conn.read(&mut buf).unwrap_err().kind(), ErrorKind::Interrupted);
    assert_eq!(conn.write(b"x").unwrap_err().kind(), ErrorKind::Interrupted);
    assert!(script.now.get() < Duration::from_secs(1), "{:?}", script.now.get());
}

#[test]
fn a_stop_interrupts_a_nal_datagram_send_that_must_wait() {
    use embedded_io::{Error as _, ErrorKind};
    use sockserv::driver::DatagramSocket;
    let script = scripted::Script::default();
    let net = NalStack::new(scripted::Stack(&script), &script, script.sleeper());
    let mut socket = net.bind_udp(7000, [0u8; 65]).unwrap();
    socket.set_send_timeout(Some(Duration::from_secs(30)));
    script.woken.set(true);
    let to = "127.0.0.1:4000".parse().unwrap();
    assert_eq!(socket.send_to(b"x", &to).unwrap_err().kind(), ErrorKind::Interrupted);
    assert!(script.now.get() < Duration::from_secs(1), "{:?}", script.now.get());
}

#[test]
fn an_accept_error_met_by_wait_reaches_try_accept() {
    use sockserv::driver::{Readiness, StreamListener, Wait};
    let script = scripted::Script::default();
    let net = NalStack::new(scripted::Stack(&script), &script, script.sleeper());
    let mut listener = net.listen(7000, None).unwrap();
    script.fail_once.set(true);
    assert_eq!(listener.wait(Some(Duration::from_secs(1))).unwrap(), Readiness::Ready);
    let err = listener.try_accept().err().expect("the accept error");
    assert_eq!(err.source, Some(scripted::Broken));
    // Reported once; then nothing waits.
    assert!(listener.try_accept().unwrap().is_none());
}

#[test]
fn a_receive_error_met_by_wait_reaches_try_recv_from() {
    use sockserv::driver::{DatagramSocket, Readiness, Wait};
    let script = scripted::Script::default();
    let net = NalStack::new(scripted::Stack(&script), &script, script.sleeper());
    let mut socket = net.bind_udp(7000, [0u8; 65]).unwrap();
    script.fail_once.set(true);
    assert_eq!(socket.wait(Some(Duration::from_secs(1))).unwrap(), Readiness::Ready);
    let mut buf = [0u8; 64];
    let err = socket.try_recv_from(&mut buf).expect_err("the receive error");
    assert_eq!(err.source, Some(scripted::Broken));
    assert!(socket.try_recv_from(&mut buf).unwrap().is_none());
}
