//! The kv, http_hello and udp_len examples as real processes against real
//! clients (Python's `socket`, `curl`, std's sockets) — and the same
//! checks against their Python socketserver twins in `examples/python/`,
//! so that both programs are shown to do the same thing.

mod util;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::process::Command;
use std::thread;
use std::time::Duration;

use util::CLIENT_TIMEOUT;
use util::process::{Lang, Program};

/// The address argument of kv and http_hello: the system picks the port.
const ANY_PORT: &[&str] = &["127.0.0.1:0"];

// ---------------------------------------------------------------------
// kv
// ---------------------------------------------------------------------

/// A session from Python's `socket` module: what the server answered.
fn python_session(server: &Program, script: &str) -> String {
    let code = format!(
        "import socket\n\
         s = socket.create_connection(('{ip}', {port}), timeout=10)\n\
         {script}\n\
         s.shutdown(socket.SHUT_WR)\n\
         print(s.makefile('rb').read().decode(), end='')\n",
        ip = server.addr.ip(),
        port = server.addr.port(),
    );
    let out = Command::new("python3").args(["-c", &code]).output().expect("python3 runs");
    assert!(out.status.success(), "client failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn kv_commands_over_python_sockets(lang: Lang) {
    let mut kv = Program::start(lang, "kv", ANY_PORT);
    let first = python_session(
        &kv,
        "s.sendall(b'SET greeting hello world\\nGET greeting\\nGET nothing\\n')\n\
         s.sendall(b'x' * 1000 + b'\\nDEL nothing\\nFLY away\\n')",
    );
    assert_eq!(
        first,
        "OK\nhello world\nNOT_FOUND\nERR line too long\nNOT_FOUND\n\
         ERR usage: SET key value | GET key | DEL key | QUIT\n"
    );
    // A second connection sees the first one's store.
    let second = python_session(&kv, "s.sendall(b'GET greeting\\nDEL greeting\\nQUIT\\nGET x\\n')");
    assert_eq!(second, "hello world\nOK\nBYE\n", "QUIT ends the session");
    assert_eq!(kv.signal(libc::SIGTERM).code(), Some(0), "{}", kv.stderr());
}

#[test]
fn kv_rust_serves_python_clients() {
    kv_commands_over_python_sockets(Lang::Rust);
}

#[test]
fn kv_python_serves_python_clients() {
    kv_commands_over_python_sockets(Lang::Python);
}

/// One client stays connected and silent; another is served meanwhile,
/// and SIGINT stops the server (exit 0) without waiting for the first.
fn kv_serves_clients_at_once_and_stops_on_sigint(lang: Lang) {
    let mut kv = Program::start(lang, "kv", ANY_PORT);
    let idle = TcpStream::connect(kv.addr).unwrap();
    let mut busy = TcpStream::connect(kv.addr).unwrap();
    busy.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    busy.write_all(b"SET k v\nGET k\n").unwrap();
    let mut answers = BufReader::new(busy);
    let mut line = String::new();
    answers.read_line(&mut line).unwrap();
    answers.read_line(&mut line).unwrap();
    assert_eq!(line, "OK\nv\n");
    assert_eq!(kv.signal(libc::SIGINT).code(), Some(0), "{}", kv.stderr());
    drop(idle);
}

#[test]
fn kv_rust_serves_clients_at_once_and_stops_on_sigint() {
    kv_serves_clients_at_once_and_stops_on_sigint(Lang::Rust);
}

#[test]
fn kv_python_serves_clients_at_once_and_stops_on_sigint() {
    kv_serves_clients_at_once_and_stops_on_sigint(Lang::Python);
}

// ---------------------------------------------------------------------
// http_hello
// ---------------------------------------------------------------------

/// `curl -s -i URL` plus extra arguments: the whole response.
fn curl(server: &Program, path: &str, extra: &[&str]) -> String {
    let url = format!("http://{}{path}", server.addr);
    let out = Command::new("curl")
        .args(["-s", "-i", "--max-time", "10"])
        .args(extra)
        .arg(&url)
        .output()
        .expect("curl is installed (.ci/run installs it)");
    assert!(out.status.success(), "curl {url}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn http_answers_curl(lang: Lang) {
    let mut http = Program::start(lang, "http_hello", ANY_PORT);
    let ok = curl(&http, "/world", &[]);
    assert!(ok.starts_with("HTTP/1.0 200 OK\r\n"), "{ok}");
    assert!(ok.contains("Content-Length: 14\r\n"), "{ok}");
    assert!(ok.ends_with("\r\n\r\nhello, /world\n"), "{ok}");
    // A head over 8 KiB: 431, not served.
    let big = format!("X-Big: {}", "y".repeat(9000));
    let refused = curl(&http, "/big", &["-H", &big]);
    assert!(refused.starts_with("HTTP/1.0 431 "), "{refused}");
    assert!(!refused.contains("hello"), "{refused}");
    assert_eq!(http.signal(libc::SIGINT).code(), Some(0), "{}", http.stderr());
}

#[test]
fn http_rust_answers_curl() {
    http_answers_curl(Lang::Rust);
}

#[test]
fn http_python_answers_curl() {
    http_answers_curl(Lang::Python);
}

/// Sends `pieces` one write each (no Nagle: each leaves as its own
/// segment, with a pause so the server reads them apart), then reads the
/// answer to its end.
fn request_in_pieces(server: &Program, pieces: &[&[u8]]) -> String {
    let mut conn = TcpStream::connect(server.addr).unwrap();
    conn.set_nodelay(true).unwrap();
    conn.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    for piece in pieces {
        conn.write_all(piece).unwrap();
        thread::sleep(Duration::from_millis(20));
    }
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    answer
}

/// A request arriving in pieces is answered once whole, while another
/// client sits on half a head; a bad request line gets 400, a head that
/// grows past 8 KiB without its blank line 431.
fn http_request_in_pieces(lang: Lang) {
    let mut http = Program::start(lang, "http_hello", ANY_PORT);
    let mut stalled = TcpStream::connect(http.addr).unwrap();
    stalled.write_all(b"GET /never HTTP/1.0\r\nHost: x\r\n").unwrap();
    let mut pieces: Vec<&[u8]> = b"GET /pieces HTTP/1.0\r\n".chunks(1).collect();
    pieces.extend([&b"Host: local"[..], b"host\r\n", b"\r", b"\n"]);
    let answer = request_in_pieces(&http, &pieces);
    assert!(answer.starts_with("HTTP/1.0 200 OK\r\n"), "{answer}");
    assert!(answer.ends_with("\r\n\r\nhello, /pieces\n"), "{answer}");
    let bad = request_in_pieces(&http, &[b"nonsense\r\n", b"\r\n"]);
    assert_eq!(bad, "HTTP/1.0 400 Bad Request\r\n\r\n");
    // 9,000 bytes and still no blank line: 431, without waiting for more.
    let endless = format!("GET / HTTP/1.0\r\nX-Big: {}\r\n", "y".repeat(9000));
    let refused = request_in_pieces(&http, &[endless.as_bytes()]);
    assert!(refused.starts_with("HTTP/1.0 431 "), "{refused}");
    // The stalled client got nothing yet.
    stalled.set_nonblocking(true).unwrap();
    let err = stalled.read(&mut [0; 16]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WouldBlock);
    assert_eq!(http.signal(libc::SIGTERM).code(), Some(0), "{}", http.stderr());
}

#[test]
fn http_rust_request_in_pieces() {
    http_request_in_pieces(Lang::Rust);
}

#[test]
fn http_python_request_in_pieces() {
    http_request_in_pieces(Lang::Python);
}

// ---------------------------------------------------------------------
// udp_len
// ---------------------------------------------------------------------

fn udp_client(ip: &str) -> UdpSocket {
    let s = UdpSocket::bind((ip, 0)).unwrap();
    s.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    s
}

fn ask(client: &UdpSocket, server: &Program, packet: &[u8]) -> String {
    client.send_to(packet, server.addr).unwrap();
    let mut buf = [0; 64];
    let (n, from) = client.recv_from(&mut buf).unwrap();
    assert_eq!(from, server.addr);
    String::from_utf8(buf[..n].to_vec()).unwrap()
}

/// Lengths come back; the denied address gets no answer (checked after a
/// later datagram of an allowed client was answered: the server serves
/// datagrams in order) and is named on stderr.
fn udp_lengths_and_denied_client(lang: Lang) {
    let mut udp = Program::start(lang, "udp_len", &["--port", "0", "--deny", "127.0.0.2"]);
    let denied = udp_client("127.0.0.2");
    let client = udp_client("127.0.0.1");
    assert_eq!(ask(&client, &udp, b"hello"), "5\n");
    assert_eq!(ask(&client, &udp, b""), "0\n");
    assert_eq!(ask(&client, &udp, &[7; 1000]), "1000\n");
    denied.send_to(b"let me in", udp.addr).unwrap();
    assert_eq!(ask(&client, &udp, b"after"), "5\n");
    denied.set_nonblocking(true).unwrap();
    let err = denied.recv_from(&mut [0; 64]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WouldBlock, "the denied client got an answer");
    assert_eq!(udp.signal(libc::SIGTERM).code(), Some(0), "{}", udp.stderr());
    let port = denied.local_addr().unwrap().port();
    assert!(udp.stderr().contains(&format!("refused 127.0.0.2:{port}")), "{}", udp.stderr());
}

#[test]
fn udp_rust_lengths_and_denied_client() {
    udp_lengths_and_denied_client(Lang::Rust);
}

#[test]
fn udp_python_lengths_and_denied_client() {
    udp_lengths_and_denied_client(Lang::Python);
}

/// `--seconds 1`: a thread stops the server; it exits 0 by itself.
fn udp_stops_itself_from_another_thread(lang: Lang) {
    let mut udp = Program::start(lang, "udp_len", &["--port", "0", "--seconds", "1"]);
    assert_eq!(udp.wait().code(), Some(0), "{}", udp.stderr());
}

#[test]
fn udp_rust_stops_itself_from_another_thread() {
    udp_stops_itself_from_another_thread(Lang::Rust);
}

#[test]
fn udp_python_stops_itself_from_another_thread() {
    udp_stops_itself_from_another_thread(Lang::Python);
}
