//! Event mode: socketserver's "explicit table of partially finished
//! requests", driven by readiness instead of threads.
//!
//! An [`EventHandler`] never blocks: the table calls it with the bytes that
//! arrived and a place ([`Outbox`]) to put its answer. The
//! [`ConnTable`] holds a fixed number of connections, each with fixed
//! receive and send buffers, and moves bytes between the transport, the
//! buffers and the handlers. [`EventServer`] is the loop around it, over
//! any [`EventSource`](crate::EventSource).
//!
//! ```
//! use core::convert::Infallible;
//! use sockserv_core::event::{EventHandler, Outbox, Step};
//!
//! /// The echo handler of the event mode.
//! struct Echo;
//!
//! impl EventHandler for Echo {
//!     type Error = Infallible;
//!     fn received(&mut self, input: &[u8], out: &mut Outbox<'_>) -> Result<Step, Infallible> {
//!         // Take what fits; the rest stays buffered until the peer reads.
//!         Ok(Step::consumed(out.write(input)))
//!     }
//! }
//! ```

mod buf;
mod server;
mod table;

use core::fmt;

pub use buf::Buf;
pub use server::{EventServer, EventServerConfig, ServerSlot};
pub use table::{ConnTable, Outcome, Slot};

use crate::Hooks;

/// What a connection does next, as its handler decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Keep the connection.
    Continue,
    /// Send what is buffered, then close.
    Close,
}

/// What [`EventHandler::received`] did with the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// How many input bytes it consumed (the rest is offered again, with
    /// more, next time).
    pub consumed: usize,
    /// Whether to keep the connection.
    pub next: Next,
}

impl Step {
    /// Consumed `n` bytes; keep going.
    pub const fn consumed(n: usize) -> Self {
        Self { consumed: n, next: Next::Continue }
    }

    /// Consumed `n` bytes; then send what is buffered and close.
    pub const fn close(n: usize) -> Self {
        Self { consumed: n, next: Next::Close }
    }
}

/// The free part of a connection's send buffer, where a handler writes
/// its answer. Bytes written here are sent as the peer reads them.
#[derive(Debug)]
pub struct Outbox<'a> {
    free: &'a mut [u8],
    written: usize,
}

impl<'a> Outbox<'a> {
    pub(crate) fn new(free: &'a mut [u8]) -> Self {
        Self { free, written: 0 }
    }

    /// How many more bytes fit now.
    pub fn room(&self) -> usize {
        self.free.len() - self.written
    }

    /// Writes as much of `data` as fits; returns how much that was.
    pub fn write(&mut self, data: &[u8]) -> usize {
        let n = data.len().min(self.room());
        self.free[self.written..self.written + n].copy_from_slice(&data[..n]);
        self.written += n;
        n
    }

    /// Writes all of `data`, or nothing when it does not fit.
    ///
    /// # Errors
    /// [`crate::ReplyFull`] when `data` is longer than [`room`](Self::room).
    pub fn write_all(&mut self, data: &[u8]) -> Result<(), crate::ReplyFull> {
        if data.len() > self.room() {
            return Err(crate::ReplyFull { capacity: self.room() });
        }
        self.write(data);
        Ok(())
    }

    pub(crate) fn written(&self) -> usize {
        self.written
    }
}

/// A handler for a connection that must not block: the event mode's
/// equivalent of [`StreamHandler`](crate::StreamHandler).
///
/// Every method gets an [`Outbox`] to answer into. An error is reported to
/// [`Hooks::handle_error`] and the connection is closed at once.
pub trait EventHandler {
    /// What the handler fails with.
    type Error: fmt::Debug;

    /// The connection opened (before any byte arrived). Default: nothing.
    ///
    /// # Errors
    /// Whatever the handler decides.
    fn opened(&mut self, _out: &mut Outbox<'_>) -> Result<Next, Self::Error> {
        Ok(Next::Continue)
    }

    /// Bytes arrived: `input` is everything received and not yet consumed.
    /// Return how much was consumed. Consuming nothing means "wait for
    /// more"; when the receive buffer is full and the handler still
    /// consumes nothing, the connection is closed with
    /// [`RequestError::Stalled`](crate::RequestError::Stalled) (for
    /// instance, a line longer than the buffer).
    ///
    /// # Errors
    /// Whatever the handler decides.
    fn received(&mut self, input: &[u8], out: &mut Outbox<'_>) -> Result<Step, Self::Error>;

    /// The peer closed its sending side and every byte it sent was offered.
    /// Default: close (after what is buffered has been sent).
    ///
    /// # Errors
    /// Whatever the handler decides.
    fn peer_closed(&mut self, _out: &mut Outbox<'_>) -> Result<Next, Self::Error> {
        Ok(Next::Close)
    }

    /// The connection closed (for whatever reason). Default: nothing.
    fn closed(&mut self) {}
}

/// An event server's service: hooks plus a factory of one handler per
/// connection.
pub trait EventService<A: fmt::Debug>: Hooks<A> {
    /// The handler made for each connection.
    type Handler: EventHandler;

    /// Makes the handler for a connection from `client`.
    fn handler(&self, client: &A) -> Self::Handler;
}

impl<F, H, A> EventService<A> for crate::FnService<F>
where
    F: Fn(&A) -> H,
    H: EventHandler,
    A: fmt::Debug,
{
    type Handler = H;
    fn handler(&self, client: &A) -> H {
        (self.0)(client)
    }
}
