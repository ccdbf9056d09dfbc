//! A writer a connection hands out for others to write to it: how a
//! handler reaches other connections (a chat room's broadcast).

use embedded_io::{ErrorType, Write};

/// A stream that can hand out a writer of its own, to be kept in shared
/// state (a room, a registry) and written from other requests: how one
/// handler reaches the other connections. CPython's handlers do the same
/// with a reference to another handler's `wfile`.
///
/// Each transport says what its writer is: on the std adapter
/// (`sockserv::std_adapter::Conn`) a `ConnWriter` over a duplicate of the
/// socket, `Send + 'static`, so threads share it; on the mock
/// (`MockStream`, feature `mock`) a `MockWriter` that records into the same
/// connection, so the handler runs in unit tests unchanged.
///
/// The writer stays usable while its connection is served; once the
/// connection is closed (the handler returned), its writes fail, so a
/// registry drops a member whose write fails. Writes are not ordered with
/// the connection's own writes: a handler that writes to its own stream
/// while others broadcast to it interleaves whole `write_all` calls on
/// std only if it serializes them (a lock around the room does).
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use sockserv::embedded_io::{Read, Write};
/// use sockserv::{ShareWriter, StreamError, StreamHandler};
///
/// /// Every byte a client sends goes to every other client.
/// struct Relay<W>(Arc<Mutex<Vec<W>>>);
///
/// impl<S: Read + Write + ShareWriter<Writer = W>, W: Write> StreamHandler<S> for Relay<W> {
///     type Error = StreamError<S::Error>;
///     fn handle(&mut self, stream: &mut S) -> Result<(), Self::Error> {
///         let mut buf = [0; 512];
///         let n = stream.read(&mut buf)?;
///         for other in self.0.lock().unwrap().iter_mut() {
///             let _ = other.write_all(&buf[..n]); // a member that left fails
///         }
///         self.0.lock().unwrap().push(stream.share_writer()?);
///         Ok(())
///     }
/// }
/// ```
pub trait ShareWriter: ErrorType {
    /// The writer handed out; it writes whole buffers, as the stream does.
    type Writer: Write<Error = Self::Error>;

    /// A new writer to this connection.
    ///
    /// # Errors
    /// What the transport answers when it cannot make one (std: `dup(2)`
    /// failing with `EMFILE`).
    fn share_writer(&self) -> Result<Self::Writer, Self::Error>;
}
