use std::num::NonZeroUsize;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use sockserv_core::driver::{DatagramDispatch, Dispatch, StreamDispatch};
use sockserv_core::{DatagramHandler, RequestError, Service, StreamHandler};

use super::{guarded, serve_datagram_apart};
use crate::addr::Address;
use crate::conn::Conn;
use crate::socket::SocketDatagram;

/// A thread per request: the equivalent of `socketserver.ThreadingMixIn`.
///
/// * `daemon_threads` (default `false`): when `true`, closing the server
///   does not wait for handler threads.
/// * `block_on_close` (default `true`): `server_close` joins the
///   non-daemon handler threads still running.
/// * Finished threads are reaped as they end — at each request and each
///   `serve_forever` turn — so memory does not grow per request (CPython
///   bpo-37193 kept every thread).
/// * [`max_threads`](Self::max_threads) (default: no cap, as CPython):
///   with a cap, a new request waits in the server loop for a free slot,
///   so a burst cannot exhaust the machine.
/// * [`close_grace`](Self::close_grace) (default `None`): without
///   `block_on_close`, how long `server_close` still waits for running
///   handler threads to finish (a restart's drain), then leaves them.
///
/// The service is cloned into each thread (`Svc: Clone + Send + 'static`):
/// keep shared state behind an `Arc`.
#[derive(Debug)]
pub struct Threading {
    /// CPython's `daemon_threads`.
    pub daemon_threads: bool,
    /// CPython's `block_on_close`.
    pub block_on_close: bool,
    max_threads: Option<NonZeroUsize>,
    close_grace: Option<Duration>,
    slots: Arc<Slots>,
    threads: Vec<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct Slots {
    live: Mutex<usize>,
    freed: Condvar,
}

/// Frees a slot when a handler thread ends, even by panic.
struct SlotGuard(Arc<Slots>);

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let mut live = self.0.live.lock().unwrap_or_else(PoisonError::into_inner);
        *live -= 1;
        self.0.freed.notify_all();
    }
}

impl Default for Threading {
    fn default() -> Self {
        Self::new()
    }
}

impl Threading {
    /// CPython's defaults: non-daemon threads, block on close, no cap.
    pub fn new() -> Self {
        Self {
            daemon_threads: false,
            block_on_close: true,
            max_threads: None,
            close_grace: None,
            slots: Arc::default(),
            threads: Vec::new(),
        }
    }

    /// Caps the number of live handler threads. At the cap
    /// `serve_forever` stops accepting until a thread ends: new
    /// connections wait in the kernel's backlog, not accepted (and the
    /// listener is not polled, so nothing spins).
    pub fn max_threads(mut self, cap: NonZeroUsize) -> Self {
        self.max_threads = Some(cap);
        self
    }

    /// Sets `daemon_threads`.
    pub fn daemon_threads(mut self, daemon: bool) -> Self {
        self.daemon_threads = daemon;
        self
    }

    /// Sets `block_on_close`.
    pub fn block_on_close(mut self, block: bool) -> Self {
        self.block_on_close = block;
        self
    }

    /// Without `block_on_close`: how long closing still waits for running
    /// handler threads to finish before leaving them (`None`, the default:
    /// not at all, as CPython). With `block_on_close` closing waits for
    /// them however long.
    pub fn close_grace(mut self, grace: Option<Duration>) -> Self {
        self.close_grace = grace;
        self
    }

    /// Waits until no handler thread runs, or `grace` has passed.
    fn wait_idle(&self, grace: Duration) {
        let deadline = std::time::Instant::now() + grace;
        let mut live = self.slots.live.lock().unwrap_or_else(PoisonError::into_inner);
        while *live > 0 {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return;
            }
            let (guard, _) =
                self.slots.freed.wait_timeout(live, left).unwrap_or_else(PoisonError::into_inner);
            live = guard;
        }
    }

    /// Handler threads running now.
    pub fn live_threads(&self) -> usize {
        *self.slots.live.lock().unwrap_or_else(PoisonError::into_inner)
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

    /// Waits for a free slot (with a cap) and takes it; `None` when the
    /// server is asked to stop meanwhile (so that `shutdown()` cannot hang
    /// behind a full cap, not even when a handler thread calls it).
    fn take_slot(&self, stop: &dyn Fn() -> bool) -> Option<SlotGuard> {
        let mut live = self.slots.live.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(cap) = self.max_threads {
            while *live >= cap.get() {
                if stop() {
                    return None;
                }
                let (guard, _) = self
                    .slots
                    .freed
                    .wait_timeout(live, Duration::from_millis(50))
                    .unwrap_or_else(PoisonError::into_inner);
                live = guard;
            }
        }
        *live += 1;
        Some(SlotGuard(Arc::clone(&self.slots)))
    }

    /// Runs `run` on a new thread once a slot is free; runs nothing (and
    /// drops `run`, closing what it owns) when the server was asked to stop
    /// while waiting.
    fn spawn<Svc, F>(&mut self, service: &Svc, client: Address, stop: &dyn Fn() -> bool, run: F)
    where
        Svc: Service<Address> + Clone + Send + 'static,
        F: FnOnce(&Svc, &Address) + Send + 'static,
    {
        self.reap();
        let Some(slot) = self.take_slot(stop) else { return };
        let svc = service.clone();
        let who = client.clone();
        let spawned = thread::Builder::new().name("sockserv-request".into()).spawn(move || {
            let _slot = slot;
            run(&svc, &client);
        });
        match spawned {
            Ok(handle) if !self.daemon_threads && self.block_on_close => self.threads.push(handle),
            Ok(_) => {}
            Err(e) => service.handle_error(&who, &RequestError::Spawn(&e)),
        }
    }
}

impl Dispatch for Threading {
    fn service_actions(&mut self) {
        self.reap();
    }

    fn server_close(&mut self) {
        if self.block_on_close {
            for t in self.threads.drain(..) {
                let _ = t.join();
            }
        } else if let Some(grace) = self.close_grace {
            self.wait_idle(grace);
        }
    }

    /// Below `max_threads`: the loop accepts only then (the backlog holds
    /// the rest).
    fn has_room(&self) -> bool {
        self.max_threads.is_none_or(|cap| self.live_threads() < cap.get())
    }

    fn wait_for_room(&mut self, timeout: Duration) {
        let Some(cap) = self.max_threads else { return };
        let live = self.slots.live.lock().unwrap_or_else(PoisonError::into_inner);
        if *live >= cap.get() {
            let _ = self.slots.freed.wait_timeout(live, timeout);
        }
    }
}

impl<Svc> StreamDispatch<Conn, Address, Svc> for Threading
where
    Svc: Service<Address, Handler: StreamHandler<Conn>> + Clone + Send + 'static,
{
    fn process_request(&mut self, service: &Svc, stream: Conn, client: Address) {
        // The stream moves into the thread; a second handle on its stop
        // flag lets the wait for a slot give up on shutdown (the connection
        // is then closed, as the closure that owns it is dropped).
        let stop = stream.stop_handle();
        self.spawn(service, client, &move || stop.is_requested(), move |svc, client| {
            guarded(svc, client, || sockserv_core::driver::serve_stream(svc, stream, client));
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
        let sender = socket.sender();
        let packet = packet.to_vec();
        let reply_size = socket.max_reply();
        let stop = || socket.stop_requested();
        self.spawn(service, client, &stop, move |svc, client| {
            serve_datagram_apart(svc, &sender, &packet, truncated, client, reply_size);
        });
    }
}
