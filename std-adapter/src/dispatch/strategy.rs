//! A strategy chosen at run time (tokio picks its runtime flavour with a
//! value the same way): one server type whatever the mode.

use sockserv_core::driver::{DatagramDispatch, Dispatch, StreamDispatch};
use sockserv_core::{DatagramHandler, Service, StreamHandler};

use super::{Forking, Pool, Sequential, Threading};
use crate::addr::Address;
use crate::conn::Conn;
use crate::socket::SocketDatagram;

/// One of the strategies, picked by a value instead of a type, for
/// a program that chooses its mode at run time (a command-line flag):
/// `Builder::new().dispatch(Strategy::from(Threading::new()))`. The
/// service must suit every strategy (`Clone + Send + 'static`, as
/// threading needs).
#[derive(Debug)]
pub enum Strategy {
    /// One request at a time.
    Sequential(Sequential),
    /// A thread per request.
    Threading(Threading),
    /// A process per request.
    Forking(Forking),
    /// Pre-spawned worker threads fed through a bounded queue.
    Pool(Pool),
}

impl Default for Strategy {
    fn default() -> Self {
        Self::Sequential(Sequential::new())
    }
}

impl From<Sequential> for Strategy {
    fn from(s: Sequential) -> Self {
        Self::Sequential(s)
    }
}

impl From<Threading> for Strategy {
    fn from(t: Threading) -> Self {
        Self::Threading(t)
    }
}

impl From<Pool> for Strategy {
    fn from(p: Pool) -> Self {
        Self::Pool(p)
    }
}

impl From<Forking> for Strategy {
    fn from(f: Forking) -> Self {
        Self::Forking(f)
    }
}

/// Runs `$call` on whichever strategy `$self` holds.
macro_rules! each {
    ($self:expr, $d:ident => $call:expr) => {
        match $self {
            Strategy::Sequential($d) => $call,
            Strategy::Threading($d) => $call,
            Strategy::Forking($d) => $call,
            Strategy::Pool($d) => $call,
        }
    };
}

impl Dispatch for Strategy {
    fn service_actions(&mut self) {
        each!(self, d => d.service_actions());
    }
    fn handle_timeout(&mut self) {
        each!(self, d => d.handle_timeout());
    }
    fn has_room(&self) -> bool {
        each!(self, d => d.has_room())
    }
    fn wait_for_room(&mut self, timeout: std::time::Duration) {
        each!(self, d => d.wait_for_room(timeout));
    }
    fn cap(&self) -> Option<(&'static str, usize)> {
        each!(self, d => d.cap())
    }
    fn server_close(&mut self) {
        each!(self, d => d.server_close());
    }
}

impl<Svc> StreamDispatch<Conn, Address, Svc> for Strategy
where
    Svc: Service<Address, Handler: StreamHandler<Conn>> + Clone + Send + 'static,
{
    fn process_request(&mut self, service: &Svc, stream: Conn, client: Address) {
        each!(self, d => StreamDispatch::process_request(d, service, stream, client));
    }
}

impl<Svc> DatagramDispatch<SocketDatagram, Svc> for Strategy
where
    Svc: Service<Address, Handler: DatagramHandler> + Clone + Send + 'static,
{
    fn process_request(
        &mut self,
        service: &Svc,
        socket: &mut SocketDatagram,
        packet: &[u8],
        truncated: Option<usize>,
        client: Address,
    ) {
        each!(self, d => {
            DatagramDispatch::process_request(d, service, socket, packet, truncated, client)
        });
    }
}
