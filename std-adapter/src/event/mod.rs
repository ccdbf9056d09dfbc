//! Event mode on real sockets: the core's connection table driven by epoll
//! (or poll(2), [`PollSource`]), one thread, many connections.

mod conn;
mod epoll;
mod poll;
mod pool;
mod server;

pub use conn::NbConn;
pub use epoll::EpollSource;
pub use poll::PollSource;
pub use pool::{GrowSlots, LazyPool};
pub use server::{
    EventOptions, EventStreamServer, EventTcpServer, EventUnixStreamServer, FromListener,
    LoopStats, PortSharing, Workers,
};

/// Tokens the sources keep for themselves (connection tokens are table
/// slot indices, far below these).
const LISTENER: u64 = u64::MAX;
const WAKER: u64 = u64::MAX - 1;
