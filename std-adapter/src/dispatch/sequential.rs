use sockserv_core::driver::{DatagramDispatch, Dispatch, StreamDispatch};
use sockserv_core::{DatagramHandler, Service, StreamHandler};

use super::guarded;
use crate::addr::Address;
use crate::conn::Conn;
use crate::socket::{SocketDatagram, send_reply};

/// One request at a time on the server's thread: plain `TCPServer` /
/// `UDPServer`. A handler panic is caught and reported, like an error. A
/// stop request interrupts a handler waiting in a read (see [`Conn`]).
#[derive(Debug, Default)]
pub struct Sequential {
    reply: Vec<u8>,
}

impl Sequential {
    /// The strategy.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Dispatch for Sequential {}

impl<Svc> StreamDispatch<Conn, Address, Svc> for Sequential
where
    Svc: Service<Address, Handler: StreamHandler<Conn>>,
{
    fn process_request(&mut self, service: &Svc, mut stream: Conn, client: Address) {
        // One request at a time: a stop request must not wait for this
        // client to leave.
        stream.cancellable = true;
        guarded(service, &client, || sockserv_core::driver::serve_stream(service, stream, &client));
    }
}

impl<Svc> DatagramDispatch<SocketDatagram, Svc> for Sequential
where
    Svc: Service<Address, Handler: DatagramHandler>,
{
    fn process_request(
        &mut self,
        service: &Svc,
        socket: &mut SocketDatagram,
        packet: &[u8],
        truncated: Option<usize>,
        client: Address,
    ) {
        let reply = &mut self.reply;
        if reply.len() < socket.max_reply() {
            reply.resize(socket.max_reply(), 0);
        }
        let sender = socket.socket();
        guarded(service, &client, || {
            let send = |data: &[u8], to: &Address| send_reply(sender, data, to);
            sockserv_core::driver::serve_datagram(service, packet, truncated, &client, reply, send)
        });
    }
}
