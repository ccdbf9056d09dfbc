//! HTTP/1.1 (`sockserv::http`) without std: an event handler on the mock
//! answers a request head that arrives one byte at a time.

use sockserv::http::{EventRespond, HttpEvents, Reply, ReplyError, RequestHead};
use sockserv::mock::{MockConn, MockNet};
use sockserv::service_fn;

#[derive(Default)]
struct Hello {
    found: bool,
}

impl EventRespond for Hello {
    type Error = ReplyError;
    const MAX_REPLY: usize = 128;

    fn head(&mut self, request: &RequestHead<'_, '_>) -> Result<(), ReplyError> {
        self.found = request.target == "/";
        Ok(())
    }

    fn respond(&mut self, reply: &mut Reply<'_, '_>) -> Result<(), ReplyError> {
        match self.found {
            true => reply.send(200, &[], b"hi\n"),
            false => reply.send(404, &[], b""),
        }
    }
}

/// Serves `GET /` and checks the answer's status line and body.
pub fn serve_one() -> bool {
    let net = MockNet::new();
    net.connect(
        MockConn::new(1, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .one_byte_at_a_time(),
    );
    if net.serve_events(service_fn(|_| HttpEvents::new(Hello::default()))).is_err() {
        return false;
    }
    match net.conn(0) {
        Some(c) => c.output().starts_with(b"HTTP/1.1 200") && c.output().ends_with(b"\r\n\r\nhi\n"),
        None => false,
    }
}
