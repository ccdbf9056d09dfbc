//! `disable_nagle_algorithm`: on by default for the blocking modes
//! (`TCP_NODELAY` on every accepted TCP connection), off when asked.
//! See `Options::disable_nagle_algorithm` for why.

use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

use sockserv::StreamHandler;
use sockserv::driver::{Dispatch, StreamDispatch};
use sockserv::std_adapter::{
    Address, BindAddr, Builder, Conn, Sequential, StreamServer, Threading,
};
use sockserv::{ServiceFn, service_fn};

/// Answers one byte: whether the connection it got has `TCP_NODELAY`.
struct ReportNodelay;

impl StreamHandler<Conn> for ReportNodelay {
    type Error = std::io::Error;
    fn handle(&mut self, conn: &mut Conn) -> std::io::Result<()> {
        use embedded_io::Write as _;
        let on = conn.get_ref().tcp_nodelay()?;
        conn.write_all(&[u8::from(on)])
    }
}

type Svc = ServiceFn<fn(&Address) -> ReportNodelay, Address>;

/// Serves one connection with `builder` and returns what the handler saw.
fn nodelay_seen<D>(builder: Builder<D>) -> bool
where
    D: Dispatch + StreamDispatch<Conn, Address, Svc>,
{
    let service: Svc = service_fn(|_| ReportNodelay);
    let mut server: StreamServer<Svc, D> = builder.stream("127.0.0.1:0", service).unwrap();
    let BindAddr::Inet(a) = server.server_address().clone() else { unreachable!() };
    let mut client = TcpStream::connect(a).unwrap();
    client.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    server.handle_request().unwrap();
    let mut answer = [0u8; 1];
    client.read_exact(&mut answer).unwrap();
    server.server_close();
    answer[0] == 1
}

#[test]
fn a_sequential_server_turns_nagle_off_by_default() {
    assert!(nodelay_seen(Builder::new().dispatch(Sequential::new())));
}

#[test]
fn a_threading_server_turns_nagle_off_by_default() {
    assert!(nodelay_seen(Builder::new().dispatch(Threading::new())));
}

#[test]
fn disable_nagle_algorithm_false_leaves_nagle_on() {
    let builder = Builder::new().dispatch(Threading::new()).disable_nagle_algorithm(false);
    assert!(!nodelay_seen(builder));
}
