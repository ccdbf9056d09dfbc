use std::io;
use std::os::fd::{AsFd, OwnedFd};

use sockserv_core::{
    DatagramDispatch, DatagramHandler, Dispatch, RequestError, Service, StreamDispatch,
    StreamHandler,
};

use super::{guarded, serve_datagram_apart};
use crate::addr::Address;
use crate::conn::Conn;
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
///   server waits for one to finish before forking again.
/// * Finished children are reaped at every `serve_forever` turn
///   (`service_actions`) and when `handle_request` times out.
/// * `block_on_close` (default `true`): `server_close` waits for every
///   child.
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
    children: Vec<Child>,
    reaped: u64,
    failed: u64,
    last_status: Option<i32>,
}

#[derive(Debug)]
struct Child {
    pid: libc::pid_t,
    /// Readable once the child has exited.
    pidfd: Option<OwnedFd>,
}

impl Default for Forking {
    fn default() -> Self {
        Self::new()
    }
}

impl Forking {
    /// CPython's defaults: 40 children, block on close.
    pub fn new() -> Self {
        Self {
            max_children: 40,
            block_on_close: true,
            children: Vec::new(),
            reaped: 0,
            failed: 0,
            last_status: None,
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

    /// Children not yet reaped.
    pub fn active_children(&self) -> usize {
        self.children.len()
    }

    /// Children reaped so far.
    pub fn children_reaped(&self) -> u64 {
        self.reaped
    }

    /// Of the children reaped, how many did not exit with status 0 (the
    /// handler failed or panicked, or the child was killed).
    pub fn children_failed(&self) -> u64 {
        self.failed
    }

    /// The exit code of the child reaped last (`None` before any, or when
    /// it did not exit normally).
    pub fn last_exit_code(&self) -> Option<i32> {
        self.last_status
    }

    fn record(&mut self, status: Option<i32>) {
        self.reaped += 1;
        self.last_status = status.filter(|&s| libc::WIFEXITED(s)).map(|s| libc::WEXITSTATUS(s));
        let ok = status.is_some_and(|s| libc::WIFEXITED(s) && libc::WEXITSTATUS(s) == 0);
        if !ok {
            self.failed += 1;
        }
    }

    /// CPython's `collect_children`: reap the children that have exited;
    /// while at `max_children`, wait for one to exit first.
    fn collect_children(&mut self) {
        while self.children.len() >= self.max_children {
            let fds: Vec<_> =
                self.children.iter().filter_map(|c| c.pidfd.as_ref().map(AsFd::as_fd)).collect();
            if fds.len() == self.children.len() {
                if sys::poll_any(&fds).is_err() {
                    break;
                }
            } else {
                // No pidfd (old kernel): wait for the oldest child.
                let pid = self.children.remove(0).pid;
                let status = sys::reap(pid, true).ok().flatten();
                self.record(status);
            }
            self.reap_exited();
        }
        self.reap_exited();
    }

    fn reap_exited(&mut self) {
        let mut statuses = Vec::new();
        self.children.retain(|c| match sys::reap(c.pid, false) {
            Ok(None) => true,
            Ok(Some(status)) => {
                statuses.push(Some(status));
                false
            }
            // Not our child any more (someone else reaped it): forget it.
            Err(_) => {
                statuses.push(None);
                false
            }
        });
        for s in statuses {
            self.record(s);
        }
    }

    /// Forks; in the child runs `run` and exits with its outcome. Returns
    /// in the parent only.
    fn fork_and_run<Svc, F>(
        &mut self,
        service: &Svc,
        client: &Address,
        listener: Option<std::os::fd::RawFd>,
        run: F,
    ) -> io::Result<()>
    where
        Svc: Service<Address>,
        F: FnOnce() -> bool,
    {
        self.collect_children();
        // The child runs the request and leaves with status 0 or 1.
        let pid = sys::fork_run(|| {
            sys::after_fork_in_child(listener);
            if guarded(service, client, run) { 0 } else { 1 }
        })?;
        let pidfd = sys::pidfd_open(pid).ok();
        self.children.push(Child { pid, pidfd });
        Ok(())
    }
}

impl Dispatch for Forking {
    fn service_actions(&mut self) {
        self.reap_exited();
    }

    fn handle_timeout(&mut self) {
        self.reap_exited();
    }

    fn server_close(&mut self) {
        if self.block_on_close {
            for c in std::mem::take(&mut self.children) {
                let status = sys::reap(c.pid, true).ok().flatten();
                self.record(status);
            }
        } else {
            self.reap_exited();
        }
    }
}

impl<Svc> StreamDispatch<Conn, Address, Svc> for Forking
where
    Svc: Service<Address, Handler: StreamHandler<Conn>>,
{
    fn process_request(&mut self, service: &Svc, stream: Conn, client: Address) {
        let listener = Some(stream.listener);
        let mut stream = Some(stream);
        let forked = self.fork_and_run(service, &client, listener, || {
            stream.take().is_some_and(|s| sockserv_core::serve_stream(service, s, &client))
        });
        // The parent closes its copy (CPython's close_request); when the
        // fork failed the connection is shut down and the failure reported.
        match (forked, stream) {
            (Err(e), Some(s)) => {
                service.handle_error(&client, &RequestError::Handler(&e));
                sockserv_core::shutdown_stream(s);
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
        let sender = socket.sender();
        let reply_size = socket.max_reply();
        // The child replies through the socket (a duplicate descriptor of
        // it): it keeps the original open too, only until it exits.
        let forked = self.fork_and_run(service, &client, None, || {
            serve_datagram_apart(service, &sender, packet, truncated, &client, reply_size)
        });
        if let Err(e) = forked {
            service.handle_error(&client, &RequestError::Handler(&e));
        }
    }
}
