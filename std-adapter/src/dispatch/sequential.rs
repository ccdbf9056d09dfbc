use sockserv_core::driver::{DatagramDispatch, Dispatch, StreamDispatch};
use sockserv_core::{DatagramHandler, Service, StreamHandler};

use super::{serve_datagram, serve_stream};
use crate::addr::Address;
use crate::conn::Conn;
use crate::socket::SocketDatagram;

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
        stream.cancel_on_stop();
        serve_stream(service, stream, &client);
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
        let reply = &mut reply[..socket.max_reply()];
        serve_datagram(service, socket.replier(), packet, truncated, &client, reply);
    }
}
