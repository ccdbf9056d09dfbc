//! The `rfile` / `wfile` of `socketserver.StreamRequestHandler`: a bounded
//! buffered reader with `read_line`, and a writer that never writes partially.

use core::fmt;

use embedded_io::{BufRead, ErrorKind, ErrorType, Read, ReadExactError, Write, WriteFmtError};

/// Why [`BufStream::read_line`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadLineError<E> {
    /// The stream failed.
    Io(E),
    /// The line is longer than the caller's buffer. The buffer holds the
    /// first `limit` bytes of it; the rest of the line is still unread (skip
    /// it with [`BufStream::discard_line`] or close the connection).
    TooLong {
        /// The caller's buffer length.
        limit: usize,
    },
}

impl<E> From<E> for ReadLineError<E> {
    fn from(e: E) -> Self {
        Self::Io(e)
    }
}

impl<E: fmt::Debug> fmt::Display for ReadLineError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "read failed: {e:?}"),
            Self::TooLong { limit } => write!(f, "line longer than {limit} bytes"),
        }
    }
}

impl<E: fmt::Debug> core::error::Error for ReadLineError<E> {}

impl<E: embedded_io::Error> embedded_io::Error for ReadLineError<E> {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Io(e) => e.kind(),
            Self::TooLong { .. } => ErrorKind::InvalidData,
        }
    }
}

/// Every way a stream handler's I/O can fail, in one type: the error to
/// give a handler that reads lines, reads exactly, writes and formats, so
/// that `?` works on each (`read_line`'s [`ReadLineError`], `read_exact`'s
/// `ReadExactError`, `write_all`'s `E`, `write!`'s `WriteFmtError`).
///
/// ```
/// use embedded_io::{Read, Write};
/// use sockserv::{BufStream, StreamError, StreamHandler};
///
/// struct Greeter;
///
/// impl<S: Read + Write> StreamHandler<S> for Greeter {
///     type Error = StreamError<S::Error>;
///     fn handle(&mut self, stream: &mut S) -> Result<(), Self::Error> {
///         let mut io = BufStream::<_, 256>::new(stream);
///         let mut name = [0u8; 64];
///         let n = io.read_line(&mut name)?; // ReadLineError
///         io.write_all(b"hello, ")?; // S::Error
///         write!(io, "{} bytes\n", n)?; // WriteFmtError
///         Ok(())
///     }
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamError<E> {
    /// The stream failed.
    Io(E),
    /// A line was longer than the caller's buffer ([`ReadLineError::TooLong`]).
    LineTooLong {
        /// The caller's buffer length.
        limit: usize,
    },
    /// The stream ended before a `read_exact` was filled.
    UnexpectedEof,
    /// A `Display` implementation failed while formatting (`write!`).
    Format,
}

impl<E> From<E> for StreamError<E> {
    fn from(e: E) -> Self {
        Self::Io(e)
    }
}

impl<E> From<ReadLineError<E>> for StreamError<E> {
    fn from(e: ReadLineError<E>) -> Self {
        match e {
            ReadLineError::Io(e) => Self::Io(e),
            ReadLineError::TooLong { limit } => Self::LineTooLong { limit },
        }
    }
}

impl<E> From<ReadExactError<E>> for StreamError<E> {
    fn from(e: ReadExactError<E>) -> Self {
        match e {
            ReadExactError::Other(e) => Self::Io(e),
            ReadExactError::UnexpectedEof => Self::UnexpectedEof,
        }
    }
}

impl<E> From<WriteFmtError<E>> for StreamError<E> {
    fn from(e: WriteFmtError<E>) -> Self {
        match e {
            WriteFmtError::Other(e) => Self::Io(e),
            _ => Self::Format,
        }
    }
}

impl<E: fmt::Debug> fmt::Display for StreamError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "stream failed: {e:?}"),
            Self::LineTooLong { limit } => write!(f, "line longer than {limit} bytes"),
            Self::UnexpectedEof => f.write_str("stream ended early"),
            Self::Format => f.write_str("formatting failed"),
        }
    }
}

impl<E: fmt::Debug> core::error::Error for StreamError<E> {}

impl<E: embedded_io::Error> embedded_io::Error for StreamError<E> {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Io(e) => e.kind(),
            Self::LineTooLong { .. } => ErrorKind::InvalidData,
            Self::UnexpectedEof => ErrorKind::Other,
            Self::Format => ErrorKind::InvalidInput,
        }
    }
}

/// A stream with a read buffer of `N` bytes: CPython's `rfile` and `wfile`
/// in one value, so that a handler can read lines and write answers without
/// fighting over the borrow.
///
/// * Reads go through the buffer ([`BufRead`], [`read_line`](Self::read_line)).
/// * Writes go straight to the stream, and [`Write::write`] only returns
///   once **all** bytes are written (CPython's `_SocketWriter`): never a
///   partial write.
///
/// ```
/// use embedded_io::{Read, Write};
/// use sockserv::{BufStream, StreamError, StreamHandler};
///
/// /// Answers each line with its length.
/// struct LineLen;
///
/// impl<S: Read + Write> StreamHandler<S> for LineLen {
///     type Error = StreamError<S::Error>;
///     fn handle(&mut self, stream: &mut S) -> Result<(), Self::Error> {
///         let mut io = BufStream::<_, 256>::new(stream);
///         let mut line = [0u8; 128];
///         loop {
///             let n = io.read_line(&mut line)?;
///             if n == 0 {
///                 return Ok(()); // EOF
///             }
///             write!(io, "{n}\n")?;
///         }
///     }
/// }
/// ```
pub struct BufStream<S, const N: usize> {
    inner: S,
    buf: [u8; N],
    start: usize,
    end: usize,
}

impl<S, const N: usize> BufStream<S, N> {
    /// Wraps `inner` with an empty read buffer.
    pub fn new(inner: S) -> Self {
        const { assert!(N > 0, "BufStream needs a buffer of at least one byte") };
        Self { inner, buf: [0; N], start: 0, end: 0 }
    }

    /// The wrapped stream. Bytes still in the read buffer are lost.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped stream. Reading from it directly skips buffered bytes.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The bytes read from the stream but not yet consumed.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }
}

impl<S: Read, const N: usize> BufStream<S, N> {
    /// Reads one line, up to and including `\n`, into `line`; returns its
    /// length. At EOF it returns the last bytes without a newline, then `0`.
    ///
    /// Memory never grows: a line longer than `line` fails with
    /// [`ReadLineError::TooLong`] after filling `line`, and leaves the rest of
    /// the line unread. Blocks until a whole line, EOF or `line.len()` bytes
    /// are there.
    ///
    /// # Errors
    /// [`ReadLineError::Io`] when the stream fails (bytes of the line read
    /// so far are in `line` but not counted), [`ReadLineError::TooLong`].
    pub fn read_line(&mut self, line: &mut [u8]) -> Result<usize, ReadLineError<S::Error>> {
        let mut n = 0;
        loop {
            let avail = self.fill_buf()?;
            if avail.is_empty() {
                return Ok(n);
            }
            let take = match avail.iter().position(|&b| b == b'\n') {
                Some(i) => i + 1,
                None => avail.len(),
            };
            let room = line.len() - n;
            if take > room {
                line[n..].copy_from_slice(&avail[..room]);
                self.consume(room);
                return Err(ReadLineError::TooLong { limit: line.len() });
            }
            line[n..n + take].copy_from_slice(&avail[..take]);
            self.consume(take);
            n += take;
            if line[n - 1] == b'\n' {
                return Ok(n);
            }
        }
    }

    /// Skips input up to and including the next `\n` (or EOF); returns how
    /// many bytes were skipped. Used after [`ReadLineError::TooLong`].
    ///
    /// # Errors
    /// The stream failed.
    pub fn discard_line(&mut self) -> Result<usize, S::Error> {
        let mut skipped = 0;
        loop {
            let avail = self.fill_buf()?;
            if avail.is_empty() {
                return Ok(skipped);
            }
            let (take, done) = match avail.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (avail.len(), false),
            };
            self.consume(take);
            skipped = skipped.saturating_add(take);
            if done {
                return Ok(skipped);
            }
        }
    }
}

impl<S: ErrorType, const N: usize> ErrorType for BufStream<S, N> {
    type Error = S::Error;
}

impl<S: Read, const N: usize> Read for BufStream<S, N> {
    fn read(&mut self, out: &mut [u8]) -> Result<usize, S::Error> {
        if out.is_empty() {
            return Ok(0);
        }
        if self.start == self.end && out.len() >= N {
            // Large reads bypass the buffer.
            return self.inner.read(out);
        }
        let avail = self.fill_buf()?;
        let n = avail.len().min(out.len());
        out[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<S: Read, const N: usize> BufRead for BufStream<S, N> {
    fn fill_buf(&mut self) -> Result<&[u8], S::Error> {
        if self.start == self.end {
            // Only touch the indices once the read succeeded: a failed read
            // (a timeout the caller may retry) must not resurrect old bytes.
            let n = self.inner.read(&mut self.buf)?;
            self.start = 0;
            self.end = n.min(N);
        }
        Ok(&self.buf[self.start..self.end])
    }

    fn consume(&mut self, amt: usize) {
        self.start = self.start.saturating_add(amt).min(self.end);
    }
}

impl<S: Write, const N: usize> Write for BufStream<S, N> {
    /// Writes all of `data` before returning (`Ok(data.len())`).
    fn write(&mut self, data: &[u8]) -> Result<usize, S::Error> {
        // embedded-io forbids `Ok(0)` for a non-empty write (a writer that
        // cannot take more must fail with `WriteZero`), so this cannot spin.
        self.inner.write_all(data)?;
        Ok(data.len())
    }

    fn flush(&mut self) -> Result<(), S::Error> {
        self.inner.flush()
    }
}
