use std::io;
use std::sync::Arc;
use std::time::Duration;

use sockserv_core::driver::{DatagramDispatch, Dispatch, StreamDispatch};
use sockserv_core::{DatagramHandler, RequestError, Service, StreamHandler};

use super::children::Children;
use super::{guarded, serve_datagram_apart};
use crate::addr::Address;
use crate::conn::Conn;
use crate::shutdown::Shared;
use crate::socket::SocketDatagram;
use crate::sys;

/// A process per request: the equivalent of `socketserver.ForkingMixIn`.
///
/// * The child first closes the listening socket (so that the port is free
///   once the server exits, even while children still serve) and gives
///   the stop signals of [`ShutdownHandle::stop_on_signal`](crate::ShutdownHandle::stop_on_signal)
///   their default action back (a SIGTERM ends a child).
/// * The child serves the request, then leaves with `_exit`: status 0 when
///   the handler succeeded, 1 when it failed or panicked. It never returns
///   into the server loop, and runs no destructor of the parent's (a Unix
///   socket path is not removed by a child).
/// * `max_children` (default 40): when that many children are running, the
///   server waits for one to finish before forking again. A stop request
///   (a `shutdown()`, a stop signal) ends that wait at once: the waiting
///   connection is shut down unserved and `serve_forever` returns.
/// * Finished children are reaped at every `serve_forever` turn
///   (`service_actions`) and when `handle_request` times out.
/// * `block_on_close` (default `true`): `server_close` waits for every
///   child, however long its client keeps it (CPython).
/// * Without `block_on_close`, CPython leaves the children running: they
///   keep serving after the server has gone, for as long as their clients
///   stay. Here `server_close` gives them [`close_grace`](Self::close_grace)
///   (default 1 s, as event mode's `shutdown_grace`) to finish, then
///   sends the ones left SIGTERM, after another `close_grace` SIGKILL, and
///   reaps them: once the server is closed, no process of its own is left.
///   `close_grace(None)` keeps CPython's behaviour.
/// * Only our own children are ever waited for (by pid, with a pidfd to
///   sleep on when at the limit; never `waitpid(-1)`, CPython issue
///   1540386), so a program's other children keep their exit status.
///
/// # Precondition: fork in a single-threaded process
/// The child runs the handler, which allocates. In a process with other
/// threads, a lock held by another thread at the moment of the fork (an
/// allocator's, stdio's) stays locked in the child for ever. Run forking
/// servers in a process whose only thread is the server's (CPython 3.12
/// warns about the same). The echo example handles signals without a
/// thread for that reason.
#[derive(Debug)]
pub struct Forking {
    /// CPython's `max_children`.
    pub max_children: usize,
    /// CPython's `block_on_close`.
    pub block_on_close: bool,
    /// Without `block_on_close`: how long `server_close` lets running
    /// children finish before it ends them (see [`Forking`]). `None`
    /// leaves them running, as CPython does.
    pub close_grace: Option<Duration>,
    children: Children,
}

impl Default for Forking {
    fn default() -> Self {
        Self::new()
    }
}

impl Forking {
    /// CPython's defaults (40 children, block on close), and a 1 s
    /// [`close_grace`](Self::close_grace) for when not blocking on close.
    pub fn new() -> Self {
        Self {
            max_children: 40,
            block_on_close: true,
            close_grace: Some(Duration::from_secs(1)),
            children: Children::default(),
        }
    }

    /// Sets `max_children` (at least 1).
    pub fn max_children(mut self, max: usize) -> Self {
        self.max_children = max.max(1);
        self
    }

    /// Sets `block_on_close`.
    pub fn block_on_close(mut self, block: bool) -> Self {
        self.block_on_close = block;
        self
    }

    /// Sets [`close_grace`](Self::close_grace) (`None`: CPython's
    /// behaviour, children outlive the server).
    pub fn close_grace(mut self, grace: Option<Duration>) -> Self {
        self.close_grace = grace;
        self
    }

    /// Children not yet reaped.
    pub fn active_children(&self) -> usize {
        self.children.len()
    }

    /// Children reaped so far.
    pub fn children_reaped(&self) -> u64 {
        self.children.reaped
    }

    /// Of the children reaped, how many did not exit with status 0 (the
    /// handler failed or panicked, or the child was killed).
    pub fn children_failed(&self) -> u64 {
        self.children.failed
    }

    /// The exit code of the child reaped last (`None` before any, or when
    /// it did not exit normally).
    pub fn last_exit_code(&self) -> Option<i32> {
        self.children.last_status
    }

    /// Waits for a free child slot, then forks; in the child runs `run`
    /// and exits with its outcome. Returns in the parent only: `Ok(false)`
    /// when a stop was requested while waiting (nothing forked).
    fn fork_and_run<Svc, F>(
        &mut self,
        service: &Svc,
        client: &Address,
        shared: &Shared,
        listener: Option<std::os::fd::RawFd>,
        run: F,
    ) -> io::Result<bool>
    where
        Svc: Service<Address>,
        F: FnOnce() -> bool,
    {
        if !self.children.wait_for_slot(self.max_children, shared) {
            return Ok(false);
        }
        // The child runs the request and leaves with status 0 or 1.
        let pid = sys::fork_run(|| {
            sys::after_fork_in_child(listener);
            if guarded(service, client, run) { 0 } else { 1 }
        })?;
        self.children.push(pid);
        Ok(true)
    }
}

impl Dispatch for Forking {
    fn service_actions(&mut self) {
        self.children.reap_exited();
    }

    fn handle_timeout(&mut self) {
        self.children.reap_exited();
    }

    fn server_close(&mut self) {
        match (self.block_on_close, self.close_grace) {
            (true, _) => self.children.wait_all(),
            (false, Some(grace)) => self.children.end(grace),
            (false, None) => self.children.reap_exited(),
        }
    }

    /// Below `max_children`: the loop accepts only then.
    fn has_room(&self) -> bool {
        self.children.len() < self.max_children
    }

    fn wait_for_room(&mut self, timeout: Duration) {
        self.children.wait_for_exit(self.max_children, timeout);
    }
}

impl<Svc> StreamDispatch<Conn, Address, Svc> for Forking
where
    Svc: Service<Address, Handler: StreamHandler<Conn>>,
{
    fn process_request(&mut self, service: &Svc, stream: Conn, client: Address) {
        let listener = Some(stream.listener);
        let shared = stream.stop_handle();
        let mut stream = Some(stream);
        let forked = self.fork_and_run(service, &client, &shared, listener, || {
            stream.take().is_some_and(|s| sockserv_core::driver::serve_stream(service, s, &client))
        });
        // The parent closes its copy (CPython's close_request); when the
        // fork failed the connection is shut down and the failure reported;
        // when the server stopped while waiting for a slot, shut down.
        match (forked, stream) {
            (Err(e), Some(s)) => {
                service.handle_error(&client, &RequestError::Spawn(&e));
                sockserv_core::driver::shutdown_stream(s);
            }
            (Ok(false), Some(s)) => sockserv_core::driver::shutdown_stream(s),
            (_, s) => drop(s),
        }
    }
}

impl<Svc> DatagramDispatch<SocketDatagram, Svc> for Forking
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
        let sender = socket.sender();
        let reply_size = socket.max_reply();
        // The child replies through the socket (a duplicate descriptor of
        // it): it keeps the original open too, only until it exits.
        let shared = Arc::clone(socket.shared());
        let forked = self.fork_and_run(service, &client, &shared, None, || {
            serve_datagram_apart(service, &sender, packet, truncated, &client, reply_size)
        });
        if let Err(e) = forked {
            service.handle_error(&client, &RequestError::Spawn(&e));
        }
    }
}
