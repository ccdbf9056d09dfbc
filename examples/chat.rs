//! A chat room in threading mode: every line a client sends goes to every
//! other client connected at that moment.
//!
//! ```text
//! cargo run --example chat -- [HOST:PORT]      (default 127.0.0.1:9996)
//! nc 127.0.0.1 9996          (in two terminals; type in one, read in the other)
//! ```
//!
//! Each handler joins the room with a writer of its own connection
//! ([`ShareWriter::share_writer`]) and leaves when its client closes. A
//! member whose write fails (it left, or reset) is dropped from the room.
//! A line longer than 1 KiB ends that client's connection. Prints
//! `listening on ADDR` first and exits 0 on SIGINT/SIGTERM.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sockserv::embedded_io::{Read, Write};
use sockserv::std_adapter::ThreadingTcpServer;
use sockserv::*;

/// The longest line relayed, newline included.
const MAX_LINE: usize = 1024;

/// The members' writers by member number.
type Room<W> = Arc<Mutex<HashMap<usize, W>>>;

/// The next member number.
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// One client's handler: a handle on the room.
struct Chat<W>(Room<W>);

impl<S: Read + Write + ShareWriter<Writer = W>, W: Write> StreamHandler<S> for Chat<W> {
    type Error = StreamError<S::Error>;
    fn handle(&mut self, stream: &mut S) -> Result<(), Self::Error> {
        let me = NEXT.fetch_add(1, Ordering::Relaxed);
        self.0.lock().unwrap().insert(me, stream.share_writer()?);
        let mut io = BufStream::<_, MAX_LINE>::new(stream);
        let mut line = [0; MAX_LINE];
        let result = loop {
            match io.read_line(&mut line) {
                Ok(0) => break Ok(()),
                Ok(n) => self.broadcast(me, &line[..n]),
                Err(e) => break Err(e.into()),
            }
        };
        self.0.lock().unwrap().remove(&me);
        result
    }
}

impl<W: Write> Chat<W> {
    /// Sends `line` to every member but `from`, dropping those that fail.
    fn broadcast(&self, from: usize, line: &[u8]) {
        let mut members = self.0.lock().unwrap();
        members.retain(|&id, w| id == from || w.write_all(line).is_ok());
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args().nth(1).unwrap_or("127.0.0.1:9996".into());
    let room = Room::default();
    let mut server = ThreadingTcpServer::bind(addr, service_fn(move |_| Chat(room.clone())))?;
    let stop = server.shutdown_handle();
    stop.stop_on_termination()?;
    println!("listening on {}", server.server_address());
    server.serve_forever(Duration::from_millis(500))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sockserv::driver::{Stream, StreamListener};
    use sockserv::mock::{MockConn, MockListener, MockNet};
    use sockserv::std_adapter::Address;

    fn listener<'n, 's>(net: &'n MockNet<'s>) -> MockListener<'n, 's, Address> {
        net.listener()
    }

    /// Two members already in the room (accepted from the same mock net);
    /// a third client's lines reach both, not itself, and a member that
    /// left is dropped at the first line it cannot take.
    #[test]
    fn a_line_reaches_every_other_member_and_a_leaver_is_dropped() {
        let net = MockNet::new();
        net.connect(MockConn::new(1, b"").hold_open());
        net.connect(MockConn::new(2, b"").hold_open());
        net.connect(MockConn::new(3, b"hello\nhow are you\n"));
        let (mut members, room) = (listener(&net), Room::default());
        let chat = Chat(room.clone());
        let (first, _) = members.try_accept().unwrap().unwrap();
        let (second, _) = members.try_accept().unwrap().unwrap();
        chat.0.lock().unwrap().insert(usize::MAX, first.share_writer().unwrap());
        chat.0.lock().unwrap().insert(usize::MAX - 1, second.share_writer().unwrap());
        drop(second); // the second member's connection closes
        let flag = ShutdownFlag::new();
        let service = service_fn(move |_| Chat(room.clone()));
        let mut server = Server::new(Stream(listener(&net)), service, &net, &flag, Inline::new());
        server.handle_request().unwrap();
        assert_eq!(net.conn(0).unwrap().output(), b"hello\nhow are you\n");
        assert_eq!(net.conn(1).unwrap().output(), b"", "closed: nothing recorded");
        assert_eq!(net.conn(2).unwrap().output(), b"", "not sent back to the speaker");
        assert_eq!(chat.0.lock().unwrap().len(), 1, "the leaver dropped, the speaker left");
        drop(first);
    }
}
