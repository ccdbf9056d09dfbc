//! `sockserv::http::HttpEvents` on the std event loop (EventTcpServer on
//! 127.0.0.1, epoll), with real clients: curl reusing its connection
//! across URLs, `-T` uploads (Content-Length with 100-continue, chunked),
//! Python's `http.client` on one connection, raw pipelining, refusals
//! while another client is served, and a pipelined flood from a client
//! that reads only at the end (every answer arrives, in order).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::thread;
use std::time::Duration;

use sockserv::service_fn;
use sockserv::std_adapter::ShutdownHandle;
use sockserv::std_adapter::event::EventTcpServer;
use sockserv_http::{EventRespond, HttpEvents, Limits, Reply, ReplyError, RequestHead};

const MAX_BODY: u64 = 8 * 1024 * 1024;

/// `/hello*`: names the target; `/count`: the body's length and checksum,
/// counted piece by piece.
#[derive(Default)]
struct App {
    target: String,
    len: u64,
    sum: u64,
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
            _ => reply.send(404, &[], b"not found\n"),
        }
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
    let limits = Limits { max_body: MAX_BODY, ..Limits::default() };
    let mut server = EventTcpServer::bind(
        "127.0.0.1:0",
        service_fn(move |_| HttpEvents::with_limits(App::default(), limits)),
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
