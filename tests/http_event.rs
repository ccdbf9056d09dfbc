//! `sockserv::http::HttpEvents` on the std event loop (EventTcpServer on
//! 127.0.0.1, epoll), with real clients: curl reusing its connection
//! across URLs, `-T` uploads (Content-Length with 100-continue, chunked),
//! Python's `http.client` on one connection, raw pipelining, refusals
//! while another client is served, and a pipelined flood from a client
//! that reads only at the end (every answer arrives, in order).

mod http_hostile;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use sockserv::service_fn;
use sockserv::std_adapter::ShutdownHandle;
use sockserv::std_adapter::event::EventTcpServer;
use sockserv_http::{BodyLength, EventRespond, HttpEvents, Limits, Reply, ReplyError, RequestHead};

const MAX_BODY: u64 = 8 * 1024 * 1024;

/// `/hello*`: names the target; `/count`: the body's length and checksum,
/// counted piece by piece; `/stream/N` and `/chunked/N`: N bytes of
/// [`pattern`] streamed from `fill` (with `Content-Length`, and chunked),
/// the furthest offset asked for kept in `filled`.
#[derive(Default)]
struct App {
    target: String,
    len: u64,
    sum: u64,
    size: u64,
    filled: Arc<AtomicU64>,
}

/// The byte at `offset` of a streamed body.
fn pattern(offset: u64) -> u8 {
    (offset * 7 % 251 + offset / 251) as u8
}

impl EventRespond for App {
    type Error = ReplyError;

    fn head(&mut self, request: &RequestHead<'_, '_>) -> Result<(), Self::Error> {
        self.target = request.target.to_owned();
        (self.len, self.sum) = (0, 0);
        Ok(())
    }

    fn body(&mut self, data: &[u8]) -> Result<(), Self::Error> {
        self.len += data.len() as u64;
        self.sum =
            data.iter().fold(self.sum, |s, &b| s.wrapping_mul(31).wrapping_add(u64::from(b)));
        Ok(())
    }

    fn respond(&mut self, reply: &mut Reply<'_, '_>) -> Result<(), Self::Error> {
        match self.target.as_str() {
            "/count" => {
                reply.send(200, &[], format!("n={} sum={}\n", self.len, self.sum).as_bytes())
            }
            t if t.starts_with("/hello") => reply.send(
                200,
                &[("Content-Type", b"text/plain")],
                format!("hello {t}\n").as_bytes(),
            ),
            t if t.starts_with("/stream/") || t.starts_with("/chunked/") => {
                let (kind, n) = t[1..].split_once('/').unwrap();
                self.size = n.parse().unwrap();
                let length = match kind {
                    "stream" => BodyLength::Known(self.size),
                    _ => BodyLength::Unknown,
                };
                reply.start(200, &[("Content-Type", b"application/octet-stream")], length)
            }
            _ => reply.send(404, &[], b"not found\n"),
        }
    }

    fn fill(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let n = (self.size.saturating_sub(offset)).min(buf.len() as u64) as usize;
        for (i, b) in buf[..n].iter_mut().enumerate() {
            *b = pattern(offset + i as u64);
        }
        self.filled.fetch_max(offset + n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

fn checksum(data: &[u8]) -> u64 {
    data.iter().fold(0u64, |s, &b| s.wrapping_mul(31).wrapping_add(u64::from(b)))
}

struct Running {
    url: String,
    addr: String,
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
    serve_counting(Arc::default())
}

/// A server whose streamed bodies record how far they were read in `filled`.
fn serve_counting(filled: Arc<AtomicU64>) -> Running {
    let limits = Limits { max_body: MAX_BODY, ..Limits::default() };
    let mut server = EventTcpServer::bind(
        "127.0.0.1:0",
        service_fn(move |_| {
            let app = App { filled: filled.clone(), ..App::default() };
            HttpEvents::with_limits(app, limits)
        }),
    )
    .unwrap();
    let addr = server.server_address().to_string();
    let stop = server.shutdown_handle();
    let thread = thread::spawn(move || server.serve_forever(Duration::from_millis(50)).unwrap());
    Running { url: format!("http://{addr}"), addr, stop, thread: Some(thread) }
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

fn exchange(addr: &str, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).expect("the server closes, no timeout");
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn curl_reuses_the_connection_and_uploads() {
    let server = serve();
    let (body, log) = curl(&[&format!("{}/hello1", server.url), &format!("{}/hello2", server.url)]);
    assert_eq!(body, "hello /hello1\nhello /hello2\n");
    assert!(log.contains("Re-using existing connection"), "{log}");
    assert_eq!(log.matches("Connected to").count(), 1, "{log}");

    let (body, _) = curl(&["-I", &format!("{}/hello", server.url)]);
    assert!(body.contains("Content-Length: 13\r\n"), "{body}");

    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let file = std::env::temp_dir().join(format!("sockserv-http-event-{}.bin", std::process::id()));
    std::fs::write(&file, &data).unwrap();
    let want = format!("n={} sum={}\n", data.len(), checksum(&data));
    let url = format!("{}/count", server.url);
    let path = file.to_str().unwrap();
    let (body, log) = curl(&["-T", path, "-H", "Expect: 100-continue", &url]);
    assert_eq!(body, want);
    assert!(log.contains("HTTP/1.1 100 Continue"), "{log}");
    let (body, _) = curl(&["-T", path, "-H", "Transfer-Encoding: chunked", &url]);
    assert_eq!(body, want);
    std::fs::remove_file(&file).unwrap();
}

#[test]
fn python_http_client_on_one_connection() {
    let server = serve();
    let script = r#"
import http.client, sys
host, port = sys.argv[1].rsplit(":", 1)
c = http.client.HTTPConnection(host, int(port), timeout=10)
out = []
c.request("GET", "/hello/a"); r = c.getresponse(); out.append(r.read().decode()); sock = c.sock
c.request("POST", "/count", body=iter([b"abc", b"defg"]), encode_chunked=True)
r = c.getresponse(); out.append(r.read().decode())
c.request("GET", "/nowhere"); r = c.getresponse(); r.read(); out.append(str(r.status))
out.append("same connection" if c.sock is sock else "reconnected")
print("|".join(out), end="")
"#;
    let out = Command::new("python3").args(["-c", script, &server.addr]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let want = format!("hello /hello/a\n|n=7 sum={}\n|404|same connection", checksum(b"abcdefg"));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), want);
}

#[test]
fn a_pipelined_flood_read_at_the_end_gets_every_answer_in_order() {
    let server = serve();
    let mut s = TcpStream::connect(&server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let count = 5_000;
    let mut flood = Vec::new();
    for i in 0..count {
        flood.extend_from_slice(format!("GET /hello{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    }
    flood.extend_from_slice(b"GET /hello-last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    // Written from a thread while nothing is read: the server must stop
    // reading when its answers cannot leave, not drop them.
    let mut writer = s.try_clone().unwrap();
    let t = thread::spawn(move || writer.write_all(&flood).unwrap());
    thread::sleep(Duration::from_millis(300));
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    t.join().unwrap();
    let bodies: Vec<&str> =
        answer.split("\r\n\r\n").skip(1).map(|b| b.split("HTTP/1.1").next().unwrap()).collect();
    assert_eq!(bodies.len(), count + 1);
    for (i, body) in bodies.iter().take(count).enumerate() {
        assert_eq!(*body, format!("hello /hello{i}\n"));
    }
    assert_eq!(bodies[count], "hello /hello-last\n");
}

#[test]
fn refusals_answer_and_close_while_others_are_served() {
    let server = serve();
    let mut good = TcpStream::connect(&server.addr).unwrap();
    good.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut ask_good = || {
        good.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut buf = [0u8; 256];
        let n = good.read(&mut buf).unwrap();
        assert!(buf[..n].ends_with(b"hello /hello\n"), "{:?}", String::from_utf8_lossy(&buf[..n]));
    };
    ask_good();
    let mut long = b"GET / HTTP/1.1\r\nHost: x\r\nX-Long: ".to_vec();
    long.resize(9000, b'a');
    let cases: [(&[u8], &str); 5] = [
        (b"POST /count HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "400"),
        (b"POST /count HTTP/1.1\r\nHost: x\r\nContent-Length: 9000000\r\n\r\n", "413"),
        (b"POST /count HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "400"),
        (b"GET / HTTP/3.0\r\n\r\n", "505"),
        (&long, "431"),
    ];
    for (request, status) in cases {
        let answer = exchange(&server.addr, request);
        assert!(answer.starts_with(&format!("HTTP/1.1 {status} ")), "{status}: {answer}");
        ask_good();
    }
}

/// Large answers leave as the peer reads: a 1 MiB `Content-Length` body
/// and a chunked one, twice each on one curl connection, byte for byte;
/// HEAD gets the length and no body; HTTP/1.0 gets the unknown-length
/// body as is, then the close.
#[test]
fn streamed_answers_of_any_length_with_keep_alive() {
    let server = serve();
    let want: Vec<u8> = (0..1_048_576u64).map(pattern).collect();
    let urls = [
        format!("{}/stream/1048576", server.url),
        format!("{}/chunked/1048576", server.url),
        format!("{}/stream/1048576", server.url),
        format!("{}/chunked/1048576", server.url),
        format!("{}/hello", server.url),
    ];
    let out =
        Command::new("curl").args(["-sS", "-v", "--max-time", "20"]).args(&urls).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(log.matches("Connected to").count(), 1, "{log}");
    assert_eq!(log.matches("Transfer-Encoding: chunked").count(), 2, "{log}");
    assert_eq!(out.stdout.len(), 4 * want.len() + "hello /hello\n".len());
    for i in 0..4 {
        assert!(out.stdout[i * want.len()..(i + 1) * want.len()] == want[..], "body {i}");
    }

    let (head, _) = curl(&["-I", &format!("{}/stream/1048576", server.url)]);
    assert!(head.contains("Content-Length: 1048576\r\n"), "{head}");
    // The std feature's clock dates every answer (IMF-fixdate, 29 bytes).
    let date = head.lines().find_map(|l| l.strip_prefix("Date: ")).expect("a Date field");
    assert!(date.len() == 29 && date.ends_with(" GMT"), "{date}");
    let out = Command::new("curl")
        .args(["-sS", "--http1.0", "--max-time", "20", &format!("{}/chunked/300000", server.url)])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(out.stdout == want[..300_000]);
}

/// A client that pipelines three requests for large bodies and reads
/// slowly gets them all, in order, and the server reads its source only
/// as far as the connection takes (no body held whole).
#[test]
fn streamed_answers_follow_a_slow_reader_and_keep_pipelined_order() {
    let filled = Arc::new(AtomicU64::new(0));
    let server = serve_counting(filled.clone());
    let mut s = TcpStream::connect(&server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let size: u64 = 64 << 20;
    s.write_all(
        format!(
            "GET /stream/{size} HTTP/1.1\r\nHost: x\r\n\r\n\
             GET /hello HTTP/1.1\r\nHost: x\r\n\r\n\
             GET /chunked/100000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    // Read 1 MiB, then stop: the server must stop asking its source.
    let mut got = vec![0u8; 1 << 20];
    s.read_exact(&mut got).unwrap();
    thread::sleep(Duration::from_millis(500));
    let asked = filled.load(Ordering::Relaxed);
    assert!(asked < 24 << 20, "the source was read to {asked} of {size} for a reader at 1 MiB");
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    got.extend_from_slice(&rest);
    let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&got[..head_end]);
    assert!(head.contains(&format!("Content-Length: {size}")), "{head}");
    let body = &got[head_end..head_end + size as usize];
    assert!(body.iter().enumerate().all(|(i, &b)| b == pattern(i as u64)), "first body");
    let tail = String::from_utf8_lossy(&got[head_end + size as usize..]);
    assert!(tail.starts_with("HTTP/1.1 200 OK\r\n"), "{}", &tail[..100]);
    assert!(tail.contains("hello /hello\n"), "{}", &tail[..200]);
    assert!(tail.contains("Transfer-Encoding: chunked"), "third answer chunked");
    assert!(tail.ends_with("0\r\n\r\n"), "last chunk ends the connection");
}

/// Counts the applications alive (one per open connection).
struct Counted {
    app: App,
    live: Arc<AtomicUsize>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

impl EventRespond for Counted {
    type Error = ReplyError;
    fn head(&mut self, request: &RequestHead<'_, '_>) -> Result<(), Self::Error> {
        self.app.head(request)
    }
    fn body(&mut self, data: &[u8]) -> Result<(), Self::Error> {
        self.app.body(data)
    }
    fn respond(&mut self, reply: &mut Reply<'_, '_>) -> Result<(), Self::Error> {
        self.app.respond(reply)
    }
}

/// Every hostile client at once (tests/http_hostile): slowloris heads get
/// 408 after the head timeout, endless chunked bodies and bodies over the
/// limit 413, smuggling attempts 400, floods from clients that never read
/// are stopped (the server stops reading them); a client on a keep-alive
/// connection is served throughout; nothing spins; afterwards no
/// connection and no buffer is left.
#[test]
fn hostile_clients_get_defined_outcomes_while_others_are_served() {
    let head_timeout = Duration::from_secs(2);
    let limits = Limits { max_body: MAX_BODY, head_timeout, ..Limits::default() };
    let live = Arc::new(AtomicUsize::new(0));
    let count = live.clone();
    let mut server = EventTcpServer::bind(
        "127.0.0.1:0",
        service_fn(move |_| {
            count.fetch_add(1, Ordering::SeqCst);
            HttpEvents::with_limits(Counted { app: App::default(), live: count.clone() }, limits)
        }),
    )
    .unwrap();
    let addr = server.server_address().to_string();
    let stop = server.shutdown_handle();
    let thread = thread::Builder::new()
        .name("hostile-server".into())
        .spawn(move || {
            server.serve_forever(Duration::from_millis(50)).unwrap();
            server
        })
        .unwrap();
    let report = http_hostile::run(&addr, head_timeout, "hostile-server");
    http_hostile::check(&report, head_timeout);
    // Every hostile connection is closed by now (the floods by their
    // clients): the server closes its side and drops each handler.
    let t = std::time::Instant::now();
    while live.load(Ordering::SeqCst) > 0 && t.elapsed() < Duration::from_secs(5) {
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(live.load(Ordering::SeqCst), 0, "connections left open");
    stop.shutdown().unwrap();
    let server = thread.join().unwrap();
    let stats = server.loop_stats();
    assert_eq!((stats[0].connections, stats[0].buffers_lent), (0, 0), "{stats:?}");
}

/// A client that sends its requests, then closes its sending side (as
/// `nc -N` does) gets every answer, the streamed ones whole, then the
/// close. Before, the half-close ended a streamed answer where it stood.
#[test]
fn a_half_closed_peer_gets_every_answer() {
    let server = serve();
    let mut s = TcpStream::connect(&server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(
        b"GET /chunked/3000000 HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /hello HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /stream/2000000 HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).expect("every answer, then the close");
    let text = String::from_utf8_lossy(&got);
    assert_eq!(text.matches("HTTP/1.1 200 OK\r\n").count(), 3);
    assert!(text.contains("hello /hello\n"));
    let last = got.windows(4).rposition(|w| w == b"\r\n\r\n").unwrap() + 4;
    let body = &got[last..];
    assert_eq!(body.len(), 2_000_000);
    assert!(body.iter().enumerate().all(|(i, &b)| b == pattern(i as u64)));
}

/// A client that sends part of a head and then nothing is closed after
/// the head timeout (the connection's own idle timeout while a head is
/// under way), not the table's five minutes; a whole request before it on
/// the same connection is answered, and an idle keep-alive connection
/// (no head begun) is left open.
#[test]
fn a_head_begun_then_silence_is_closed_after_the_head_timeout() {
    let head_timeout = Duration::from_secs(1);
    let limits = Limits { head_timeout, ..Limits::default() };
    let mut server = EventTcpServer::bind(
        "127.0.0.1:0",
        service_fn(move |_| HttpEvents::with_limits(App::default(), limits)),
    )
    .unwrap();
    let addr = server.server_address().to_string();
    let stop = server.shutdown_handle();
    let thread = thread::spawn(move || server.serve_forever(Duration::from_millis(50)).unwrap());
    let mut idle = TcpStream::connect(&addr).unwrap();
    let mut quiet = TcpStream::connect(&addr).unwrap();
    quiet.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\nGET /hello HTTP/1.1\r\nHo").unwrap();
    let start = std::time::Instant::now();
    quiet.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    quiet.read_to_end(&mut got).expect("closed, no read timeout");
    let after = start.elapsed();
    assert!(String::from_utf8_lossy(&got).ends_with("hello /hello\n"), "{got:?}");
    assert!(after >= head_timeout && after < head_timeout * 3, "closed after {after:?}");
    // The idle one (nothing begun) is still served.
    idle.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    idle.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = [0u8; 512];
    let n = idle.read(&mut buf).unwrap();
    assert!(buf[..n].ends_with(b"hello /hello\n"));
    stop.shutdown().unwrap();
    thread.join().unwrap();
}
