//! A line-based key-value store in threading mode: a thread per client,
//! the store shared behind an `Arc<Mutex<..>>`.
//!
//! ```text
//! cargo run --example kv -- [HOST:PORT] [--tls-cert PEM --tls-key PEM]
//! ```
//!
//! (default 127.0.0.1:9998; with `--tls-cert` and `--tls-key`, the same
//! store over TLS: the handler is unchanged, `sockserv::tls` wraps it).
//!
//! One command a line, one answer a line:
//! `SET key value` → `OK` (the value is the rest of the line, spaces kept),
//! `GET key` → the value or `NOT_FOUND`, `DEL key` → `OK` or `NOT_FOUND`,
//! `QUIT` → `BYE` and the connection is closed; anything else → `ERR ...`.
//! A line longer than 256 bytes (newline included) is answered
//! `ERR line too long` and skipped up to its newline; the connection stays
//! open, and memory never grows with the line. Prints `listening on ADDR`
//! first and exits 0 on SIGINT/SIGTERM.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sockserv::embedded_io::{Read, Write};
use sockserv::std_adapter::ThreadingTcpServer;
use sockserv::*;
use sockserv_tls::rustls::ServerConfig;
use sockserv_tls::server_config_from_pem;

/// The longest line served, newline included.
const MAX_LINE: usize = 256;

type Store = Arc<Mutex<HashMap<String, String>>>;

/// One client's handler: a handle on the shared store.
struct Kv(Store);

impl<S: Read + Write> StreamHandler<S> for Kv {
    type Error = StreamError<S::Error>;
    fn handle(&mut self, stream: &mut S) -> Result<(), Self::Error> {
        let mut io = BufStream::<_, 1024>::new(stream);
        let mut line = [0; MAX_LINE];
        loop {
            let answer = match io.read_line(&mut line) {
                Ok(0) => return Ok(()),
                Ok(n) => execute(&self.0, &String::from_utf8_lossy(&line[..n])),
                Err(ReadLineError::TooLong { .. }) => {
                    io.discard_line()?;
                    "ERR line too long".into()
                }
                Err(e) => return Err(e.into()),
            };
            writeln!(io, "{answer}")?;
            if answer == "BYE" {
                return Ok(());
            }
        }
    }
}

/// The answer to one command line.
fn execute(store: &Mutex<HashMap<String, String>>, line: &str) -> String {
    let mut store = store.lock().unwrap();
    let words: Vec<_> = line.trim_end_matches(['\r', '\n']).splitn(3, ' ').collect();
    match words[..] {
        ["SET", key, value] => {
            store.insert(key.into(), value.into());
            "OK".into()
        }
        ["GET", key] => store.get(key).cloned().unwrap_or("NOT_FOUND".into()),
        ["DEL", key] => store.remove(key).map_or("NOT_FOUND", |_| "OK").into(),
        ["QUIT"] => "BYE".into(),
        _ => "ERR usage: SET key value | GET key | DEL key | QUIT".into(),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (addr, tls) = arguments()?;
    let store = Store::default();
    let service = service_fn(move |_| Kv(store.clone()));
    match tls {
        Some(config) => serve(ThreadingTcpServer::bind(addr, sockserv_tls::tls(config, service))?),
        None => serve(ThreadingTcpServer::bind(addr, service)?),
    }
}

/// The address (default 127.0.0.1:9998) and, with `--tls-cert PEM
/// --tls-key PEM`, the TLS configuration.
fn arguments() -> Result<(String, Option<Arc<ServerConfig>>), Failure> {
    let mut addr = "127.0.0.1:9998".to_string();
    let (mut cert, mut key) = (None, None);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--tls-cert" => cert = Some(args.next().ok_or("--tls-cert needs a PEM file")?),
            "--tls-key" => key = Some(args.next().ok_or("--tls-key needs a PEM file")?),
            _ => addr = arg,
        }
    }
    let tls = match (cert, key) {
        (Some(cert), Some(key)) => Some(Arc::new(server_config_from_pem(cert, key)?)),
        (None, None) => None,
        _ => return Err("--tls-cert and --tls-key go together".into()),
    };
    Ok((addr, tls))
}

type Failure = Box<dyn std::error::Error>;

fn serve<S>(mut server: ThreadingTcpServer<S>) -> Result<(), Failure> {
    // A signal stops it within the default 1 s close grace, idle clients
    // or not (their connections are then shut down).
    let stop = server.shutdown_handle();
    stop.stop_on_termination()?;
    println!("listening on {}", server.server_address());
    server.serve_forever(Duration::from_millis(500))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sockserv::driver::Stream;
    use sockserv::mock::{MockConn, MockListener, MockNet};
    use sockserv::std_adapter::Address;
    use sockserv::{Inline, Server, ShutdownFlag};

    /// The mock's listener, handing out std addresses as `main`'s server
    /// does (the service never looks at the address, so nothing else says
    /// which address type the mock should stand in for).
    fn listener<'n, 's>(net: &'n MockNet<'s>) -> Stream<MockListener<'n, 's, Address>> {
        Stream(net.listener())
    }

    #[test]
    fn commands_share_the_store_across_connections() {
        let net = MockNet::new();
        net.connect(MockConn::new(1, b"SET greeting hello world\nGET greeting\n"));
        net.connect(MockConn::new(
            2,
            b"GET greeting\nDEL greeting\nDEL greeting\nGET greeting\nQUIT\nGET x\n",
        ));
        let store = Store::default();
        let flag = ShutdownFlag::new();
        let service = service_fn(move |_| Kv(store.clone()));
        let mut server = Server::new(listener(&net), service, &net, &flag, Inline::new());
        server.handle_request().unwrap();
        server.handle_request().unwrap();
        assert_eq!(net.conn(0).unwrap().output(), b"OK\nhello world\n");
        assert_eq!(net.conn(1).unwrap().output(), b"hello world\nOK\nNOT_FOUND\nNOT_FOUND\nBYE\n");
    }

    #[test]
    fn an_over_long_line_is_refused_and_the_next_one_served() {
        let mut input = vec![b'x'; 3 * MAX_LINE];
        input.extend_from_slice(b"\nSET a 1\nBOGUS\n");
        let net = MockNet::new();
        net.connect(MockConn::new(1, &input).one_byte_at_a_time());
        let flag = ShutdownFlag::new();
        let service = service_fn(|_| Kv(Store::default()));
        let mut server = Server::new(listener(&net), service, &net, &flag, Inline::new());
        server.handle_request().unwrap();
        let out = net.conn(0).unwrap();
        let out = String::from_utf8_lossy(out.output());
        assert_eq!(out.lines().collect::<Vec<_>>()[..2], ["ERR line too long", "OK"]);
        assert!(out.lines().nth(2).unwrap().starts_with("ERR usage"), "{out}");
    }
}
