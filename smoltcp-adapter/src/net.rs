//! What listeners, sockets and connections need from a stack, with the
//! device, waiter and clock types erased: the leaf every socket module
//! depends on, so that dependencies go one way (this module ← the socket
//! modules ← `stack` ← the public API).

use core::cell::RefMut;
use core::time::Duration;

use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use sockserv_core::driver::Readiness;

use crate::loss::Losses;
use crate::millis::{Micros, micros, millis};
use crate::pool::Pool;

/// The socket set, its capacity and the listeners' pools.
#[derive(Debug)]
pub(crate) struct Sockets<'a> {
    pub(crate) set: SocketSet<'a>,
    pub(crate) capacity: usize,
    pub(crate) pool: Pool<'a>,
    pub(crate) losses: Losses,
    /// How many UDP sockets are bound (the gate notes UDP datagrams only
    /// when there is one).
    pub(crate) udp: usize,
}

impl Sockets<'_> {
    /// Room for `n` more sockets? (`SocketSet::add` panics when full.)
    pub(crate) fn has_room(&self, n: usize) -> bool {
        self.set.iter().count().saturating_add(n) <= self.capacity
    }
}

/// The stack as its listeners, sockets and connections see it (through
/// `&dyn Net`, so that their types carry only lifetimes).
pub(crate) trait Net<'a> {
    /// The clock's time.
    fn now(&self) -> Duration;
    /// Polls the interface once (all ingress, then egress), re-arming
    /// listeners after every socket state change. Returns whether any
    /// socket's state may have changed.
    fn poll(&self) -> bool;
    /// Sleeps until the device may have a frame (`Ready`), `deadline`
    /// (clock time in [`Micros`]) or smoltcp's next timer passes (`TimedOut`, or
    /// `Ready`: the caller polls again either way), or the stack is woken
    /// for shutdown (`Woken`).
    fn idle(&self, deadline: Option<Micros>) -> Readiness;
    /// The sockets.
    fn sockets(&self) -> RefMut<'_, Sockets<'a>>;
    /// The largest IP packet the device carries.
    fn ip_mtu(&self) -> usize;

    /// The clock's time in [`Micros`].
    fn now_micros(&self) -> Micros {
        micros(self.now())
    }

    /// The clock time `timeout` from now (`None`: no deadline). One copy
    /// of the time arithmetic for every wait loop (a provided method of a
    /// trait used as `dyn`).
    fn deadline(&self, timeout: Option<Duration>) -> Option<Micros> {
        timeout.map(|t| self.now_micros().saturating_add(micros(t)))
    }

    /// Whether `deadline` (if any) has passed.
    fn passed(&self, deadline: Option<Micros>) -> bool {
        deadline.is_some_and(|d| self.now_micros() >= d)
    }

    /// Closes an accepted connection's socket (a FIN after what is queued),
    /// gives it back to the listener's pool, and polls so the FIN leaves
    /// now rather than at the next wait. What both kinds of connection do
    /// when dropped.
    fn close_conn(&self, handle: SocketHandle) {
        let now = millis(self.now());
        {
            let mut socks = self.sockets();
            socks.set.get_mut::<tcp::Socket>(handle).close();
            socks.pool.release(handle, now);
        }
        self.poll();
    }
}

/// A time on the stack's clock as smoltcp's `Instant`.
pub(crate) fn instant(t: Micros) -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_micros(t as i64)
}
