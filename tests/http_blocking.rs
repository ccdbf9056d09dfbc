//! `sockserv::http::Http` (here by its crate name, so that a plain
//! `cargo test` runs it) as a blocking handler on real sockets
//! (ThreadingTcpServer on 127.0.0.1), with real clients: curl (keep-alive
//! reuse across URLs, HEAD, `--http1.0`, `-T` uploads with
//! `Expect: 100-continue`, chunked uploads), Python's `http.client`
//! (requests on one connection, a chunked upload), and raw sockets for
//! pipelining and the refusals (smuggling, over-long heads, bodies over the
//! limit) while another client keeps being served.

mod http_hostile;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use sockserv::embedded_io;
use sockserv::std_adapter::{ShutdownHandle, ThreadingTcpServer};
use sockserv::{ServiceExt, service_fn};
use sockserv_http::{BodyLength, Error, Http, Limits, RequestHead, Respond, Sent, Transaction};

const MAX_BODY: u64 = 8 * 1024 * 1024;

/// `/hello*`: a fixed answer naming the target; `/chunked`: a body of
/// unknown length; `/count`: reads the body in 1 KiB pieces and answers
/// its length and a checksum (the body is never held).
struct App;

impl Respond for App {
    fn respond<S: embedded_io::Read + embedded_io::Write>(
        &mut self,
        request: &RequestHead<'_, '_>,
        tx: &mut Transaction<'_, S>,
    ) -> Result<Sent, Error<S::Error>> {
        match request.target {
            "/chunked" => {
                let mut body =
                    tx.start(200, &[("Content-Type", b"text/plain")], BodyLength::Unknown)?;
                body.write_all(b"part1 ")?;
                body.write_all(b"part2\n")?;
                body.finish()
            }
            "/count" => {
                let (mut len, mut sum, mut buf) = (0u64, 0u64, [0u8; 1024]);
                loop {
                    let n = embedded_io::Read::read(tx, &mut buf)?;
                    if n == 0 {
                        break;
                    }
                    len += n as u64;
                    sum = buf[..n]
                        .iter()
                        .fold(sum, |s, &b| s.wrapping_mul(31).wrapping_add(u64::from(b)));
                }
                let answer = format!("n={len} sum={sum}\n");
                tx.send(200, &[], answer.as_bytes())
            }
            t if t.starts_with("/hello") => {
                let answer = format!("hello {t}\n");
                tx.send(200, &[("Content-Type", b"text/plain")], answer.as_bytes())
            }
            _ => tx.send(404, &[], b"not found\n"),
        }
    }
}

use embedded_io::Write as _;

fn checksum(data: &[u8]) -> u64 {
    data.iter().fold(0u64, |s, &b| s.wrapping_mul(31).wrapping_add(u64::from(b)))
}

struct Running {
    url: String,
    addr: String,
    /// What the server reported (handle_error), one line per failed connection.
    errors: Arc<Mutex<Vec<String>>>,
    stop: ShutdownHandle,
    thread: Option<thread::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.shutdown().unwrap();
        self.thread.take().unwrap().join().unwrap();
    }
}

fn serve() -> Running {
    let limits = Limits { max_body: MAX_BODY, ..Limits::default() };
    let errors = Arc::new(Mutex::new(Vec::new()));
    let log = errors.clone();
    let service = service_fn(move |_| Http::<App>::with_limits(App, limits))
        .on_error(move |_, e| log.lock().unwrap().push(e.to_string()));
    let mut server = ThreadingTcpServer::bind("127.0.0.1:0", service).unwrap();
    let addr = server.server_address().to_string();
    let stop = server.shutdown_handle();
    let thread = thread::spawn(move || server.serve_forever(Duration::from_millis(50)).unwrap());
    Running { url: format!("http://{addr}"), addr, errors, stop, thread: Some(thread) }
}

fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["-sS", "-v", "--max-time", "20"])
        .args(args)
        .output()
        .expect("curl runs");
    assert!(out.status.success(), "curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    (String::from_utf8(out.stdout).unwrap(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn python(script: &str, arg: &str) -> String {
    let out = Command::new("python3").args(["-c", script, arg]).output().expect("python3 runs");
    assert!(out.status.success(), "python: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Everything the server sends until it closes.
fn exchange(addr: &str, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).expect("the server closes, no timeout");
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn curl_reuses_the_connection_across_urls() {
    let server = serve();
    let (body, log) = curl(&[&format!("{}/hello1", server.url), &format!("{}/hello2", server.url)]);
    assert_eq!(body, "hello /hello1\nhello /hello2\n");
    assert!(log.contains("Re-using existing connection"), "{log}");
    assert_eq!(log.matches("Connected to").count(), 1, "{log}");
}

#[test]
fn curl_head_chunked_and_http_1_0() {
    let server = serve();
    let (body, log) = curl(&["-I", &format!("{}/hello", server.url)]);
    assert!(body.starts_with("HTTP/1.1 200 OK\r\n"), "{body}");
    assert!(body.contains("Content-Length: 13\r\n"), "HEAD says what GET gets: {body}");
    assert!(!log.contains("Excess found"), "{log}");

    let (body, log) = curl(&[&format!("{}/chunked", server.url), &format!("{}/hello", server.url)]);
    assert_eq!(body, "part1 part2\nhello /hello\n");
    assert!(log.contains("Transfer-Encoding: chunked"), "{log}");
    assert!(log.contains("Re-using existing connection"), "{log}");

    let (body, log) = curl(&["--http1.0", &format!("{}/chunked", server.url)]);
    assert_eq!(body, "part1 part2\n", "close-delimited for HTTP/1.0");
    assert!(!log.contains("Transfer-Encoding"), "{log}");
}

#[test]
fn curl_uploads_with_100_continue_and_chunked() {
    let server = serve();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let dir = std::env::temp_dir().join(format!("sockserv-http-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("upload.bin");
    std::fs::write(&file, &data).unwrap();
    let want = format!("n={} sum={}\n", data.len(), checksum(&data));
    let url = format!("{}/count", server.url);
    let path = file.to_str().unwrap();

    let (body, log) = curl(&["-T", path, "-H", "Expect: 100-continue", &url]);
    assert_eq!(body, want);
    assert!(log.contains("HTTP/1.1 100 Continue"), "{log}");

    let (body, log) = curl(&[
        "-T",
        path,
        "-H",
        "Transfer-Encoding: chunked",
        &url,
        &format!("{}/hello", server.url),
    ]);
    assert_eq!(body, format!("{want}hello /hello\n"));
    assert!(log.contains("Re-using existing connection"), "{log}");
    std::fs::remove_dir_all(&dir).unwrap();
    // curl stops sending the body /hello did not read once it has its
    // answer: a quiet close, not a failure.
    thread::sleep(Duration::from_millis(200));
    assert_eq!(*server.errors.lock().unwrap(), Vec::<String>::new());
}

const PY_CLIENT: &str = r#"
import http.client, sys
host, port = sys.argv[1].rsplit(":", 1)
c = http.client.HTTPConnection(host, int(port), timeout=10)
out = []
c.request("GET", "/hello/a"); r = c.getresponse(); out.append(r.read().decode()); sock = c.sock
c.request("POST", "/count", body=iter([b"abc", b"defg"]), encode_chunked=True)
r = c.getresponse(); out.append(r.read().decode())
c.request("GET", "/chunked"); r = c.getresponse(); out.append(r.read().decode())
c.request("HEAD", "/hello/b"); r = c.getresponse(); out.append(r.getheader("Content-Length") + ":" + repr(r.read()))
c.request("GET", "/nowhere"); r = c.getresponse(); out.append(str(r.status))
out.append("same connection" if c.sock is sock else "reconnected")
print("|".join(out), end="")
"#;

#[test]
fn python_http_client_on_one_connection() {
    let server = serve();
    let got = python(PY_CLIENT, &server.addr);
    let want = format!(
        "hello /hello/a\n|n=7 sum={}\n|part1 part2\n|15:b''|404|same connection",
        checksum(b"abcdefg")
    );
    assert_eq!(got, want);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let server = serve();
    let answer = exchange(
        &server.addr,
        b"GET /hello1 HTTP/1.1\r\nHost: x\r\n\r\n\
          POST /count HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
          HEAD /hello2 HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /hello3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let bodies: Vec<&str> =
        answer.split("\r\n\r\n").skip(1).map(|b| b.split("HTTP/1.1").next().unwrap()).collect();
    assert_eq!(
        bodies,
        ["hello /hello1\n", &format!("n=5 sum={}\n", checksum(b"hello")), "", "hello /hello3\n"],
        "{answer}"
    );
    assert_eq!(answer.matches("HTTP/1.1 200 OK").count(), 4, "{answer}");
    assert!(answer.ends_with("hello /hello3\n"), "closed after Connection: close: {answer}");
}

#[test]
fn refusals_answer_and_close_while_others_are_served() {
    let server = serve();
    // A client that keeps its connection between the hostile ones.
    let mut good = TcpStream::connect(&server.addr).unwrap();
    good.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut ask_good = || {
        good.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut buf = [0u8; 256];
        let n = good.read(&mut buf).unwrap();
        assert!(buf[..n].ends_with(b"hello /hello\n"), "{:?}", String::from_utf8_lossy(&buf[..n]));
    };
    ask_good();
    let cases: [(&[u8], &str); 5] = [
        (b"POST /count HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "400"),
        (b"POST /count HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", "400"),
        (b"POST /count HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", "400"),
        (b"POST /count HTTP/1.1\r\nHost: x\r\nContent-Length: 9000000\r\n\r\n", "413"),
        (b"garbage\r\n\r\n", "400"),
    ];
    for (request, status) in cases {
        let answer = exchange(&server.addr, request);
        assert!(answer.starts_with(&format!("HTTP/1.1 {status} ")), "{answer}");
        assert!(answer.contains("Connection: close"), "{answer}");
        ask_good();
    }
    // A head over 4 KiB (the handler's buffer) while it is still arriving.
    let mut long = b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: ".to_vec();
    long.resize(5000, b'a');
    let answer = exchange(&server.addr, &long);
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
    // A chunked body that passes the limit: 413 from inside the handler's reads.
    let mut s = TcpStream::connect(&server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"POST /count HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
    let chunk = vec![b'z'; 1 << 20];
    let mut refused = String::new();
    for _ in 0..(MAX_BODY >> 20) + 2 {
        if s.write_all(b"100000\r\n")
            .and_then(|_| s.write_all(&chunk))
            .and_then(|_| s.write_all(b"\r\n"))
            .is_err()
        {
            break;
        }
    }
    let _ = s.shutdown(Shutdown::Write);
    let _ = s.read_to_string(&mut refused);
    assert!(refused.starts_with("HTTP/1.1 413 "), "{refused:?}");
    ask_good();
    // The server said what happened, once per refused connection.
    thread::sleep(Duration::from_millis(200));
    let errors = server.errors.lock().unwrap().clone();
    let refused: Vec<_> = errors.iter().filter(|e| e.contains("Refused(")).collect();
    assert_eq!(refused.len(), 7, "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("Refused(Smuggling)")), "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("Refused(HeadTooLarge)")), "{errors:?}");
}

/// Counts the handlers alive (one per open connection).
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Respond for Counted {
    fn respond<S: embedded_io::Read + embedded_io::Write>(
        &mut self,
        request: &RequestHead<'_, '_>,
        tx: &mut Transaction<'_, S>,
    ) -> Result<Sent, Error<S::Error>> {
        App.respond(request, tx)
    }
}

/// Every hostile client at once (tests/http_hostile), a thread each:
/// slowloris heads get 408 after the head timeout, endless chunked bodies
/// and bodies over the limit 413, smuggling attempts 400, floods from
/// clients that never read are stopped; a client on a keep-alive
/// connection is served throughout; nothing spins; afterwards every
/// connection's handler is gone.
#[test]
fn hostile_clients_get_defined_outcomes_while_others_are_served() {
    let head_timeout = Duration::from_secs(2);
    let limits = Limits { max_body: MAX_BODY, head_timeout, ..Limits::default() };
    let live = Arc::new(AtomicUsize::new(0));
    let count = live.clone();
    let service = service_fn(move |_| {
        count.fetch_add(1, Ordering::SeqCst);
        Http::<Counted>::with_limits(Counted(count.clone()), limits)
    });
    let mut server = ThreadingTcpServer::bind("127.0.0.1:0", service).unwrap();
    let addr = server.server_address().to_string();
    let stop = server.shutdown_handle();
    let thread = thread::spawn(move || server.serve_forever(Duration::from_millis(50)).unwrap());
    // The server's threads: its accept loop and a thread per connection
    // (other tests' connection threads share the name: a loose bound).
    let report = http_hostile::run(&addr, head_timeout, "sockserv-reques");
    http_hostile::check(&report, head_timeout);
    let t = std::time::Instant::now();
    while live.load(Ordering::SeqCst) > 0 && t.elapsed() < Duration::from_secs(5) {
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(live.load(Ordering::SeqCst), 0, "connections left open");
    stop.shutdown().unwrap();
    thread.join().unwrap();
}
