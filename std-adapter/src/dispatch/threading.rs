use std::num::NonZeroUsize;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use sockserv_core::driver::{DatagramDispatch, Dispatch, StreamDispatch};
use sockserv_core::{DatagramHandler, RequestError, Service, StreamHandler};

use super::close::{Close, Ends, Running, Watch};
use super::{DatagramRequest, serve_stream};
use crate::addr::Address;
use crate::conn::Conn;
use crate::socket::SocketDatagram;

/// A thread per request: the equivalent of `socketserver.ThreadingMixIn`.
///
/// * [`close`](Self::close) (default [`Close::Grace`] of 1 s): what
///   closing the server does with handler threads still running (CPython's
///   `block_on_close` / `daemon_threads`).
/// * Finished threads are reaped as they end — at each request and each
///   `serve_forever` turn — so memory does not grow per request (CPython
///   bpo-37193 kept every thread).
/// * [`max_threads`](Self::max_threads) (default: no cap, as CPython):
///   with a cap, `serve_forever` stops accepting at the cap, so a burst
///   cannot exhaust the machine.
///
/// The service is cloned into each thread (`Svc: Clone + Send + 'static`):
/// keep shared state behind an `Arc`.
///
/// ```
/// # use sockserv::{service_fn, StreamHandler};
/// # use sockserv_std::Builder;
/// # use sockserv_std::dispatch::{Close, Threading};
/// # use std::num::NonZeroUsize;
/// # use std::time::Duration;
/// # struct Nop;
/// # impl<S: embedded_io::Read + embedded_io::Write> StreamHandler<S> for Nop {
/// #     type Error = S::Error;
/// #     fn handle(&mut self, _: &mut S) -> Result<(), S::Error> { Ok(()) }
/// # }
/// let threading = Threading::new()
///     .max_threads(NonZeroUsize::new(100).unwrap())
///     .close(Close::Grace(Duration::from_secs(5)));
/// let server = Builder::new().dispatch(threading).stream("127.0.0.1:0", service_fn(|_| Nop))?;
/// # Ok::<(), sockserv_std::BindError>(())
/// ```
#[derive(Debug, Default)]
pub struct Threading {
    close: Close,
    max_threads: Option<NonZeroUsize>,
    running: Arc<Running>,
    /// Handles of threads to join (none with [`Close::Leave`]).
    threads: Vec<JoinHandle<()>>,
}

impl Threading {
    /// No cap, and a 1 s grace on close ([`Close::default`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// Caps the number of live handler threads. At the cap
    /// `serve_forever` stops accepting until a thread ends: new
    /// connections wait in the kernel's backlog, not accepted (and the
    /// listener is not polled, so nothing spins). `handle_request` at the
    /// cap waits for a thread to end.
    pub fn max_threads(mut self, cap: NonZeroUsize) -> Self {
        self.max_threads = Some(cap);
        self
    }

    /// What closing the server does with running handler threads.
    pub fn close(mut self, close: Close) -> Self {
        self.close = close;
        self
    }

    /// Handler threads running now.
    pub fn live_threads(&self) -> usize {
        self.running.count()
    }

    /// Threads whose handles are kept for joining (finished ones are
    /// reaped at each request and loop turn).
    pub fn tracked_threads(&self) -> usize {
        self.threads.len()
    }

    fn reap(&mut self) {
        let (done, running): (Vec<_>, Vec<_>) =
            self.threads.drain(..).partition(|t| t.is_finished());
        self.threads = running;
        for t in done {
            let _ = t.join();
        }
    }

    /// Runs `run` on a new thread, once below the cap (`serve_forever`
    /// only comes here then; `handle_request` may wait).
    fn spawn<Svc, F>(&mut self, service: &Svc, client: Address, conn: Option<Watch>, run: F)
    where
        Svc: Service<Address> + Clone + Send + 'static,
        F: FnOnce(&Svc, &Address) + Send + 'static,
    {
        self.reap();
        if let Some(cap) = self.max_threads {
            self.running.wait_below(cap.get(), None);
        }
        let ends = self.running.start(conn);
        let svc = service.clone();
        let who = client.clone();
        let spawned = thread::Builder::new().name("sockserv-request".into()).spawn(move || {
            let _ends: Ends = ends;
            run(&svc, &client);
        });
        match spawned {
            Ok(handle) if self.close != Close::Leave => self.threads.push(handle),
            Ok(_) => {}
            Err(e) => service.handle_error(&who, &RequestError::Spawn(&e)),
        }
    }
}

impl Dispatch for Threading {
    fn service_actions(&mut self) {
        self.reap();
    }

    /// As [`close`](Self::close) says; threads still running after it are
    /// left (their handles dropped).
    fn server_close(&mut self) {
        self.running.close(self.close);
        self.reap();
        if self.close == Close::Wait {
            for t in self.threads.drain(..) {
                let _ = t.join();
            }
        }
        self.threads.clear();
    }

    /// Below `max_threads`: the loop accepts only then (the backlog holds
    /// the rest).
    fn has_room(&self) -> bool {
        self.max_threads.is_none_or(|cap| self.live_threads() < cap.get())
    }

    fn cap(&self) -> Option<(&'static str, usize)> {
        self.max_threads.map(|cap| ("max_threads", cap.get()))
    }

    fn wait_for_room(&mut self, timeout: Duration) {
        if let Some(cap) = self.max_threads {
            self.running.wait_below(cap.get(), Some(timeout));
        }
    }
}

impl<Svc> StreamDispatch<Conn, Address, Svc> for Threading
where
    Svc: Service<Address, Handler: StreamHandler<Conn>> + Clone + Send + 'static,
{
    fn process_request(&mut self, service: &Svc, stream: Conn, client: Address) {
        let watch = stream.watch();
        self.spawn(service, client, Some(watch), move |svc, client| {
            serve_stream(svc, stream, client);
        });
    }
}

impl<Svc> DatagramDispatch<SocketDatagram, Svc> for Threading
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
        let request = DatagramRequest::new(socket, packet, truncated);
        self.spawn(service, client, None, move |svc, client| {
            request.serve(svc, client, &mut Vec::new());
        });
    }
}
