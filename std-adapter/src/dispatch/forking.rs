use std::io;
use std::num::NonZeroUsize;

use sockserv_core::driver::{DatagramDispatch, Dispatch, StreamDispatch};
use sockserv_core::{DatagramHandler, RequestError, Service, StreamHandler};

use super::children::Children;
use super::close::Close;
use super::{DatagramRequest, guarded, serve_stream};
use crate::addr::Address;
use crate::conn::Conn;
use crate::socket::SocketDatagram;
use crate::sys;

/// CPython's `ForkingMixIn.max_children`.
const CPYTHON_MAX_CHILDREN: NonZeroUsize = NonZeroUsize::new(40).unwrap();

/// A process per request: the equivalent of `socketserver.ForkingMixIn`.
///
/// * The child first closes the listening sockets (so that the port is
///   free once the server exits, even while children still serve) and
///   gives the stop signals of [`ShutdownHandle::stop_on_signal`](crate::ShutdownHandle::stop_on_signal)
///   their default action back (a SIGTERM ends a child).
/// * The child serves the request, then leaves with `_exit`: status 0 when
///   the handler succeeded, 1 when it failed or panicked. It never returns
///   into the server loop, and runs no destructor of the parent's (a Unix
///   socket path is not removed by a child).
/// * [`max_children`](Self::max_children) (default 40, as CPython): at
///   that many running children `serve_forever` stops accepting until one
///   exits (connections wait in the backlog; a stop request is seen at
///   once). `handle_request` at the cap waits for one to exit.
/// * Finished children are reaped at every `serve_forever` turn
///   (`service_actions`) and when `handle_request` times out.
/// * [`close`](Self::close) (default [`Close::Grace`] of 1 s): with
///   `Grace`, `server_close` gives running children the grace to finish,
///   then sends the ones left SIGTERM, after another grace SIGKILL, and
///   reaps them: once the server is closed, no process of its own is
///   left. [`Close::Wait`] waits for every child however long its client
///   keeps it (CPython's `block_on_close`); [`Close::Leave`] leaves them
///   running (CPython without `block_on_close`).
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
    max_children: NonZeroUsize,
    close: Close,
    children: Children,
}

impl Default for Forking {
    fn default() -> Self {
        Self::new()
    }
}

impl Forking {
    /// CPython's 40 children, and a 1 s grace on close
    /// ([`Close::default`]).
    pub fn new() -> Self {
        Self {
            max_children: CPYTHON_MAX_CHILDREN,
            close: Close::default(),
            children: Children::default(),
        }
    }

    /// Sets `max_children` (CPython's name).
    pub fn max_children(mut self, max: NonZeroUsize) -> Self {
        self.max_children = max;
        self
    }

    /// What closing the server does with running children.
    pub fn close(mut self, close: Close) -> Self {
        self.close = close;
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
    /// and exits with its outcome. Returns in the parent only.
    fn fork_and_run<Svc, F>(&mut self, service: &Svc, client: &Address, run: F) -> io::Result<()>
    where
        Svc: Service<Address>,
        F: FnOnce() -> bool,
    {
        self.children.wait_for_slot(self.max_children.get());
        // The child runs the request and leaves with status 0 or 1.
        let pid = sys::fork_run(|| {
            sys::after_fork_in_child();
            if guarded(service, client, run) { 0 } else { 1 }
        })?;
        self.children.push(pid);
        Ok(())
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
        match self.close {
            Close::Wait => self.children.wait_all(),
            Close::Grace(grace) => self.children.end(grace),
            Close::Leave => self.children.reap_exited(),
        }
    }

    /// Below `max_children`: the loop accepts only then.
    fn has_room(&self) -> bool {
        self.children.len() < self.max_children.get()
    }

    fn cap(&self) -> Option<(&'static str, usize)> {
        Some(("max_children", self.max_children.get()))
    }

    fn wait_for_room(&mut self, timeout: std::time::Duration) {
        self.children.wait_for_exit(self.max_children.get(), timeout);
    }
}

impl<Svc> StreamDispatch<Conn, Address, Svc> for Forking
where
    Svc: Service<Address, Handler: StreamHandler<Conn>>,
{
    fn process_request(&mut self, service: &Svc, stream: Conn, client: Address) {
        let mut stream = Some(stream);
        let forked = self.fork_and_run(service, &client, || {
            stream.take().is_some_and(|s| serve_stream(service, s, &client))
        });
        // The parent closes its copy (CPython's close_request); when the
        // fork failed the connection is shut down and the failure reported.
        match (forked, stream) {
            (Err(e), Some(s)) => {
                service.handle_error(&client, &RequestError::Spawn(&e));
                sockserv_core::driver::shutdown_stream(s);
            }
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
        // The child replies through the socket (a duplicate descriptor of
        // it): it keeps the original open too, only until it exits.
        let request = DatagramRequest::new(socket, packet, truncated);
        let forked = self
            .fork_and_run(service, &client, || request.serve(service, &client, &mut Vec::new()));
        if let Err(e) = forked {
            service.handle_error(&client, &RequestError::Spawn(&e));
        }
    }
}
