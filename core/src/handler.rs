//! Handler traits (what users write) and the server hooks.
//!
//! Python splits a server into the server (connection-level work) and a
//! request handler (data-level work). Here the server-level part is a
//! *service*: a [`Hooks`] implementation that also makes a fresh handler per
//! request ([`StreamService`], [`DatagramService`]). The service is Python's
//! `self.server`: a handler reaches shared state through what the service put
//! into it when it made the handler.

use core::fmt;

use embedded_io::{ErrorKind, ErrorType, Read, Write};

/// The equivalent of `socketserver.BaseRequestHandler` for stream
/// connections (`StreamRequestHandler`).
///
/// The server calls [`setup`](Self::setup); if it succeeded,
/// [`handle`](Self::handle) and then [`finish`](Self::finish) — even when
/// `handle` failed — as `BaseRequestHandler.__init__` does with
/// `setup(); try: handle() finally: finish()`. Each error goes to
/// [`Hooks::handle_error`] (both, when `handle` and `finish` fail).
///
/// Implement it generically over the stream, so that the same handler runs
/// on every transport:
///
/// ```
/// use embedded_io::{Read, Write};
/// use sockserv_core::StreamHandler;
///
/// /// Sends every byte back until the client closes its side.
/// struct Echo;
///
/// impl<S: Read + Write> StreamHandler<S> for Echo {
///     type Error = S::Error;
///     fn handle(&mut self, stream: &mut S) -> Result<(), S::Error> {
///         let mut buf = [0u8; 512];
///         loop {
///             let n = stream.read(&mut buf)?;
///             if n == 0 {
///                 return Ok(());
///             }
///             stream.write_all(&buf[..n])?;
///         }
///     }
/// }
/// ```
pub trait StreamHandler<S: Read + Write> {
    /// What this handler's methods fail with; it reaches
    /// [`Hooks::handle_error`] as [`RequestError::Handler`].
    type Error: fmt::Debug;

    /// Runs before [`handle`](Self::handle). Default: nothing.
    ///
    /// # Errors
    /// Whatever the handler decides; `handle` is then skipped.
    fn setup(&mut self, _stream: &mut S) -> Result<(), Self::Error> {
        Ok(())
    }

    /// Serves the request.
    ///
    /// # Errors
    /// Whatever the handler decides.
    fn handle(&mut self, stream: &mut S) -> Result<(), Self::Error>;

    /// Runs after [`handle`](Self::handle), even when it failed. Default:
    /// flushes the stream and ignores a peer that went away while flushing
    /// (CPython bpo-14574).
    ///
    /// # Errors
    /// Whatever the handler decides.
    fn finish(&mut self, stream: &mut S) -> Result<(), Self::Error> {
        // A reset or broken pipe on the final flush is not the handler's fault.
        let _ = stream.flush();
        Ok(())
    }
}

/// The equivalent of `socketserver.DatagramRequestHandler`.
///
/// The handler gets the datagram as `&[u8]` and writes its answer into a
/// [`ReplyWriter`], a bounded buffer. After [`finish`](Self::finish) the
/// server sends what was written as one datagram to the sender — **an empty
/// datagram when nothing was written**, as CPython does — unless the handler
/// called [`ReplyWriter::suppress`]. As in CPython, the reply is sent even
/// when `handle` failed (the error still goes to [`Hooks::handle_error`]);
/// call `suppress` first if a failed request must not answer. When `setup`
/// fails, nothing else runs and nothing is sent (CPython's `finish`, which
/// sends, is skipped then too).
///
/// ```
/// use sockserv_core::{DatagramHandler, ReplyWriter};
/// use embedded_io::Write;
///
/// struct Echo;
///
/// impl DatagramHandler for Echo {
///     type Error = sockserv_core::ReplyFull;
///     fn handle(&mut self, packet: &[u8], reply: &mut ReplyWriter<'_>) -> Result<(), Self::Error> {
///         reply.write_all(packet)
///     }
/// }
/// ```
pub trait DatagramHandler {
    /// What this handler's methods fail with.
    type Error: fmt::Debug;

    /// Runs before [`handle`](Self::handle). Default: nothing.
    ///
    /// # Errors
    /// Whatever the handler decides; `handle` is then skipped.
    fn setup(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }

    /// Serves one datagram.
    ///
    /// # Errors
    /// Whatever the handler decides.
    fn handle(&mut self, packet: &[u8], reply: &mut ReplyWriter<'_>) -> Result<(), Self::Error>;

    /// Runs after `handle`, even when it failed. Default: nothing.
    ///
    /// # Errors
    /// Whatever the handler decides.
    fn finish(&mut self, _reply: &mut ReplyWriter<'_>) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// Why a request did not complete, as [`Hooks::handle_error`] receives it.
#[derive(Clone, Copy)]
#[non_exhaustive]
pub enum RequestError<'a> {
    /// The handler's `setup`, `handle` or `finish` returned an error.
    Handler(&'a dyn fmt::Debug),
    /// The handler panicked (only adapters that catch panics report this).
    Panic(&'a str),
    /// A datagram did not fit the receive buffer. It was not passed to the
    /// handler.
    Truncated {
        /// The datagram's size as far as the stack could tell.
        size: usize,
        /// The receive buffer's size (`max_packet_size`).
        capacity: usize,
    },
    /// Sending a datagram reply failed.
    Reply(ErrorKind),
    /// A datagram reply could not leave without waiting (on std: `sendto`
    /// failed with `EAGAIN`, as it does for a Unix-datagram peer whose
    /// receive queue is full). It was dropped, as a congested UDP path
    /// drops, so that no client can make the server wait or spin.
    ReplyDropped {
        /// The reply's size.
        len: usize,
    },
    /// The connection failed under an event-mode handler (reset, broken
    /// pipe, ...); it was closed.
    Io(ErrorKind),
    /// Event mode: nothing was read or written for the idle timeout; the
    /// connection was closed.
    IdleTimeout,
    /// Event mode: the receive buffer is full and the handler consumed
    /// none of it (a line or message longer than the buffer); the
    /// connection was closed.
    Stalled {
        /// The receive buffer's size.
        capacity: usize,
    },
}

impl fmt::Debug for RequestError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for RequestError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Handler(e) => write!(f, "handler failed: {e:?}"),
            Self::Panic(msg) => write!(f, "handler panicked: {msg}"),
            Self::Truncated { size, capacity } => write!(
                f,
                "datagram of {size} bytes does not fit the {capacity}-byte buffer; dropped"
            ),
            Self::Reply(kind) => write!(f, "sending the reply failed: {kind:?}"),
            Self::ReplyDropped { len } => write!(
                f,
                "the {len}-byte reply could not leave without waiting (the peer's queue is full); dropped"
            ),
            Self::Io(kind) => write!(f, "connection failed: {kind:?}"),
            Self::IdleTimeout => f.write_str("idle for too long; closed"),
            Self::Stalled { capacity } => {
                write!(
                    f,
                    "the {capacity}-byte receive buffer is full and the handler took none of it; closed"
                )
            }
        }
    }
}

/// The server-level hooks of `socketserver.BaseServer`, with its defaults.
///
/// Every method takes `&self`: with the threading strategy hooks run on
/// handler threads, as CPython's do.
pub trait Hooks<A: fmt::Debug> {
    /// Returns whether to serve a request from `client` (CPython's
    /// `verify_request`). A refused connection is shut down and closed
    /// without making a handler. Default: `true`.
    fn verify_request(&self, _client: &A) -> bool {
        true
    }

    /// Told when a request failed (CPython's `handle_error`). The server
    /// keeps serving. Default: with the `std` feature, one line on stderr,
    /// written with one `write(2)` (at most 1,024 bytes: concurrent
    /// threads' and children's lines never splice); without it, nothing.
    fn handle_error(&self, client: &A, error: &RequestError<'_>) {
        #[cfg(feature = "std")]
        crate::report::line(format_args!("sockserv: request from {client:?} failed: {error}"));
        #[cfg(not(feature = "std"))]
        let _ = (client, error);
    }

    /// Told when an accept or receive failed (for instance, out of file
    /// descriptors: `error` displays the system's message, `error.kind()`
    /// gives the portable kind). CPython drops these silently; the server still drops
    /// the attempt and backs off, but says so here. Default: with the `std`
    /// feature, one line on stderr; without it, nothing.
    fn handle_accept_error(&self, error: &dyn embedded_io::Error) {
        #[cfg(feature = "std")]
        crate::report::line(format_args!(
            "sockserv: accept failed: {error} ({:?}); backing off",
            error.kind()
        ));
        #[cfg(not(feature = "std"))]
        let _ = error;
    }

    /// Told when a connection was refused because the event mode's table
    /// is full (the connection is closed at once; the others keep being
    /// served). Default: with the `std` feature, one line on stderr;
    /// without it, nothing.
    fn handle_table_full(&self, client: &A) {
        #[cfg(feature = "std")]
        crate::report::line(format_args!("sockserv: connection table full; refused {client:?}"));
        #[cfg(not(feature = "std"))]
        let _ = client;
    }

    /// Called when [`crate::Server::handle_request`]'s timeout passes
    /// (CPython's `handle_timeout`). Default: nothing.
    fn handle_timeout(&self) {}

    /// Called once per turn of [`crate::Server::serve_forever`] (CPython's
    /// `service_actions`). Default: nothing.
    fn service_actions(&self) {}
}

/// A stream server's service: the hooks plus a factory that makes a fresh
/// handler for each connection (CPython's `RequestHandlerClass`).
pub trait StreamService<S: Read + Write, A: fmt::Debug>: Hooks<A> {
    /// The handler made for each connection.
    type Handler: StreamHandler<S>;

    /// Makes the handler for a connection from `client`.
    fn handler(&self, client: &A) -> Self::Handler;
}

/// A datagram server's service: the hooks plus a handler factory.
pub trait DatagramService<A: fmt::Debug>: Hooks<A> {
    /// The handler made for each datagram.
    type Handler: DatagramHandler;

    /// Makes the handler for a datagram from `client`.
    fn handler(&self, client: &A) -> Self::Handler;
}

/// A service with the default hooks around a handler-making function, for
/// servers that need no hooks of their own.
///
/// ```
/// # use sockserv_core::{FnService, StreamService, StreamHandler};
/// # struct Echo;
/// # impl<S: embedded_io::Read + embedded_io::Write> StreamHandler<S> for Echo {
/// #     type Error = S::Error;
/// #     fn handle(&mut self, _: &mut S) -> Result<(), S::Error> { Ok(()) }
/// # }
/// let service = FnService(|_client: &u32| Echo);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct FnService<F>(pub F);

impl<F, A: fmt::Debug> Hooks<A> for FnService<F> {}

impl<F, H, S, A> StreamService<S, A> for FnService<F>
where
    F: Fn(&A) -> H,
    H: StreamHandler<S>,
    S: Read + Write,
    A: fmt::Debug,
{
    type Handler = H;
    fn handler(&self, client: &A) -> H {
        (self.0)(client)
    }
}

impl<F, H, A> DatagramService<A> for FnService<F>
where
    F: Fn(&A) -> H,
    H: DatagramHandler,
    A: fmt::Debug,
{
    type Handler = H;
    fn handler(&self, client: &A) -> H {
        (self.0)(client)
    }
}

/// A write that did not fit a [`ReplyWriter`]'s buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplyFull {
    /// The buffer's capacity in bytes.
    pub capacity: usize,
}

impl fmt::Display for ReplyFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "reply does not fit the {}-byte buffer", self.capacity)
    }
}

impl core::error::Error for ReplyFull {}

impl embedded_io::Error for ReplyFull {
    fn kind(&self) -> ErrorKind {
        ErrorKind::OutOfMemory
    }
}

/// The reply buffer of a datagram handler (CPython's `wfile` of
/// `DatagramRequestHandler`), bounded by the slice it writes into.
///
/// A write that does not fit whole writes nothing and fails with
/// [`ReplyFull`]: never a partial write.
#[derive(Debug)]
pub struct ReplyWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
    suppressed: bool,
}

impl<'a> ReplyWriter<'a> {
    /// A writer into `buf`, empty.
    pub fn new(buf: &'a mut [u8]) -> Self {
        Self { buf, len: 0, suppressed: false }
    }

    /// The bytes written so far.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// The buffer's capacity.
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Asks the server not to send any reply for this datagram (not even an
    /// empty one).
    pub fn suppress(&mut self) {
        self.suppressed = true;
    }

    /// Whether [`suppress`](Self::suppress) was called.
    pub fn is_suppressed(&self) -> bool {
        self.suppressed
    }

    /// Discards what was written.
    pub fn clear(&mut self) {
        self.len = 0;
    }
}

impl ErrorType for ReplyWriter<'_> {
    type Error = ReplyFull;
}

impl Write for ReplyWriter<'_> {
    fn write(&mut self, data: &[u8]) -> Result<usize, ReplyFull> {
        let end = self
            .len
            .checked_add(data.len())
            .filter(|&end| end <= self.buf.len())
            .ok_or(ReplyFull { capacity: self.buf.len() })?;
        self.buf[self.len..end].copy_from_slice(data);
        self.len = end;
        Ok(data.len())
    }

    fn flush(&mut self) -> Result<(), ReplyFull> {
        Ok(())
    }
}
