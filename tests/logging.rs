//! The default hooks report through `log` when a logger is installed (one
//! test binary: the logger is global): each report at its level, target
//! `sockserv`; a peer that resets is routine (debug), a handler error a
//! warning.

use std::io::Write;
use std::net::TcpStream;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sockserv::std_adapter::event::EventTcpServer;
use sockserv::std_adapter::{BindAddr, TcpServer};
use sockserv::{EventHandler, Outbox, Step};
use sockserv::{StreamHandler, service_fn};

static RECORDS: Mutex<Vec<(log::Level, String, String)>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        let entry = (record.level(), record.target().to_string(), record.args().to_string());
        RECORDS.lock().unwrap().push(entry);
    }
    fn flush(&self) {}
}

/// Fails every request.
struct Refuse;

impl<S: sockserv::embedded_io::Read + sockserv::embedded_io::Write> StreamHandler<S> for Refuse {
    type Error = &'static str;
    fn handle(&mut self, _: &mut S) -> Result<(), &'static str> {
        Err("refused on purpose")
    }
}

/// Echoes.
struct Echo;

impl EventHandler for Echo {
    type Error = std::convert::Infallible;
    fn received(&mut self, input: &[u8], out: &mut Outbox<'_>) -> Result<Step, Self::Error> {
        Ok(Step::consumed(out.write(input)))
    }
}

fn wait_for(what: &str, pred: impl Fn(&[(log::Level, String, String)]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pred(&RECORDS.lock().unwrap()) {
        assert!(Instant::now() < deadline, "no {what}: {:?}", RECORDS.lock().unwrap());
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn inet(addr: &BindAddr) -> std::net::SocketAddr {
    let BindAddr::Inet(a) = addr else { panic!("{addr:?}") };
    *a
}

#[test]
fn default_hooks_log_each_report_at_its_level() {
    log::set_logger(&Capture).unwrap();
    log::set_max_level(log::LevelFilter::Trace);

    // A handler error: a warning, naming the phase.
    let mut server = TcpServer::bind("127.0.0.1:0", service_fn(|_| Refuse)).unwrap();
    let addr = inet(server.server_address());
    let client = TcpStream::connect(addr).unwrap();
    server.handle_request().unwrap();
    drop(client);
    wait_for("handler warning", |r| {
        r.iter().any(|(level, target, msg)| {
            *level == log::Level::Warn
                && target == "sockserv"
                && msg.contains("handler failed in Handle: \"refused on purpose\"")
        })
    });

    // A peer that resets under the event mode: debug, not a warning.
    let mut server = EventTcpServer::bind("127.0.0.1:0", service_fn(|_| Echo)).unwrap();
    let addr = inet(server.server_address());
    let stop = server.shutdown_handle();
    let t = std::thread::spawn(move || server.serve_forever(Duration::from_millis(50)));
    let mut c = TcpStream::connect(addr).unwrap();
    c.write_all(b"x").unwrap();
    // Unread data at close makes the kernel send RST: the server's next
    // read or write sees ConnectionReset.
    socket2::SockRef::from(&c).set_linger(Some(Duration::ZERO)).unwrap();
    drop(c);
    wait_for("reset report", |r| r.iter().any(|(_, _, m)| m.contains("Connection")));
    stop.shutdown().unwrap();
    t.join().unwrap().unwrap();
    let records = RECORDS.lock().unwrap();
    let reset = records.iter().find(|(_, _, m)| m.contains("connection failed")).unwrap();
    assert_eq!(reset.0, log::Level::Debug, "{reset:?}");
}
