//! The chat, counter and log_sink examples as real processes against real
//! clients (std's sockets), and the same checks against their Python
//! socketserver twins in `examples/python/`.

mod util;

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use util::CLIENT_TIMEOUT;
use util::process::{Lang, Program};

/// The address argument of chat and counter: the system picks the port.
const ANY_PORT: &[&str] = &["127.0.0.1:0"];

// ---------------------------------------------------------------------
// chat
// ---------------------------------------------------------------------

/// A chat client: a connection and its lines.
struct Member {
    writer: TcpStream,
    lines: BufReader<TcpStream>,
}

impl Member {
    fn join(server: &Program) -> Self {
        let writer = TcpStream::connect(server.addr).unwrap();
        let lines = BufReader::new(writer.try_clone().unwrap());
        Self { writer, lines }
    }

    fn say(&mut self, line: &str) {
        self.writer.write_all(line.as_bytes()).unwrap();
    }

    /// The next line, or `None` after `wait` with nothing.
    fn hear(&mut self, wait: Duration) -> Option<String> {
        self.lines.get_ref().set_read_timeout(Some(wait)).unwrap();
        let mut line = String::new();
        match self.lines.read_line(&mut line) {
            Ok(0) => panic!("the server closed a member's connection"),
            Ok(_) => Some(line),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
            Err(e) => panic!("read: {e}"),
        }
    }

    /// Reads lines until `want` (failing after [`CLIENT_TIMEOUT`]);
    /// returns the lines before it.
    fn hear_until(&mut self, want: &str) -> Vec<String> {
        let deadline = Instant::now() + CLIENT_TIMEOUT;
        let mut before = Vec::new();
        while Instant::now() < deadline {
            match self.hear(Duration::from_millis(200)) {
                Some(line) if line == want => return before,
                Some(line) => before.push(line),
                None => {}
            }
        }
        panic!("{want:?} never arrived; heard {before:?}");
    }
}

/// `speaker` says `line` every 100 ms until every one of `listeners`
/// heard it once: then all of them are in the room (a member joins when
/// its handler starts, a moment after connecting).
fn until_heard(speaker: &mut Member, listeners: &mut [&mut Member], line: &str) {
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    let mut heard = vec![false; listeners.len()];
    while !heard.iter().all(|h| *h) {
        assert!(Instant::now() < deadline, "{line:?} never reached everyone: {heard:?}");
        speaker.say(line);
        for (l, h) in listeners.iter_mut().zip(&mut heard) {
            *h |= l.hear(Duration::from_millis(100)).is_some_and(|got| got == line);
        }
    }
}

fn chat_broadcasts_to_every_other_member(lang: Lang) {
    let mut chat = Program::start(lang, "chat", ANY_PORT);
    let (mut a, mut b) = (Member::join(&chat), Member::join(&chat));
    until_heard(&mut b, &mut [&mut a], "b is here\n");
    let mut c = Member::join(&chat);
    until_heard(&mut c, &mut [&mut a, &mut b], "c is here\n");
    a.say("hello from a\n");
    b.hear_until("hello from a\n");
    c.hear_until("hello from a\n");
    c.say("end\n");
    let before = a.hear_until("end\n");
    assert!(!before.contains(&"hello from a\n".into()), "a heard itself: {before:?}");
    // A member leaves; the others go on.
    drop(b);
    c.say("after b left\n");
    a.hear_until("after b left\n");
    a.say("still here\n");
    c.hear_until("still here\n");
    assert_eq!(chat.signal(libc::SIGTERM).code(), Some(0), "{}", chat.stderr());
}

#[test]
fn chat_rust_broadcasts_to_every_other_member() {
    chat_broadcasts_to_every_other_member(Lang::Rust);
}

#[test]
fn chat_python_broadcasts_to_every_other_member() {
    chat_broadcasts_to_every_other_member(Lang::Python);
}

// ---------------------------------------------------------------------
// counter
// ---------------------------------------------------------------------

/// One client pipelines 20,000 commands from a thread and starts reading
/// only half a second later (a slow reader: the server must hold back,
/// not drop); every answer arrives, in order. A second client shares the
/// count.
fn counter_answers_every_pipelined_command(lang: Lang) {
    const N: u64 = 20_000;
    let mut counter = Program::start(lang, "counter", ANY_PORT);
    let client = TcpStream::connect(counter.addr).unwrap();
    client.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    let mut writer = client.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        writer.write_all(("INCR\n".repeat(N as usize) + "GET\n").as_bytes()).unwrap();
        writer.shutdown(std::net::Shutdown::Write).unwrap();
    });
    std::thread::sleep(Duration::from_millis(500));
    let answers: Vec<String> = BufReader::new(client).lines().map(Result::unwrap).collect();
    sender.join().unwrap();
    let want: Vec<String> = (1..=N).chain([N]).map(|n| n.to_string()).collect();
    assert_eq!(answers.len(), want.len(), "{}", counter.stderr());
    assert!(answers == want, "answers out of order or wrong");
    let mut other = TcpStream::connect(counter.addr).unwrap();
    other.set_read_timeout(Some(CLIENT_TIMEOUT)).unwrap();
    other.write_all(b"GET\nFLY\nINCR\n").unwrap();
    other.shutdown(std::net::Shutdown::Write).unwrap();
    let answers: Vec<String> = BufReader::new(other).lines().map(Result::unwrap).collect();
    assert_eq!(answers, [N.to_string(), "ERR unknown command".into(), (N + 1).to_string()]);
    assert_eq!(counter.signal(libc::SIGTERM).code(), Some(0), "{}", counter.stderr());
}

#[test]
fn counter_rust_answers_every_pipelined_command() {
    counter_answers_every_pipelined_command(Lang::Rust);
}

#[test]
fn counter_python_answers_every_pipelined_command() {
    counter_answers_every_pipelined_command(Lang::Python);
}

// ---------------------------------------------------------------------
// log_sink
// ---------------------------------------------------------------------

/// Datagrams from two unbound clients become lines of the log file, in
/// order, one per datagram (a trailing newline not doubled); an oversized
/// one is reported and not written; the socket path is removed on
/// SIGTERM.
fn log_sink_writes_each_datagram_as_a_line(lang: Lang) {
    let dir = std::env::temp_dir();
    let tag = format!("sockserv-log-sink-{}-{lang:?}", std::process::id());
    let (sock, log) = (dir.join(format!("{tag}.sock")), dir.join(format!("{tag}.log")));
    let _ = std::fs::remove_file(&sock);
    let _ = std::fs::remove_file(&log);
    let args = [sock.to_str().unwrap(), log.to_str().unwrap()];
    let mut sink = Program::start(lang, "log_sink", &args);
    assert_eq!(sink.path.as_deref(), Some(sock.as_path()));
    let (a, b) = (UnixDatagram::unbound().unwrap(), UnixDatagram::unbound().unwrap());
    a.send_to(b"first", &sock).unwrap();
    b.send_to(b"second\n", &sock).unwrap();
    a.send_to(&vec![b'x'; 70_000], &sock).unwrap_or_default();
    b.send_to(b"third", &sock).unwrap();
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    let want = "first\nsecond\nthird\n";
    while std::fs::read_to_string(&log).unwrap_or_default() != want {
        let got = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(Instant::now() < deadline, "log of {} bytes: {:.80?}", got.len(), got);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(sink.signal(libc::SIGTERM).code(), Some(0), "{}", sink.stderr());
    assert!(!sock.exists(), "the socket path is removed");
    std::fs::remove_file(&log).unwrap();
}

#[test]
fn log_sink_rust_writes_each_datagram_as_a_line() {
    log_sink_writes_each_datagram_as_a_line(Lang::Rust);
}

#[test]
fn log_sink_python_writes_each_datagram_as_a_line() {
    log_sink_writes_each_datagram_as_a_line(Lang::Python);
}
