//! A fixed set of pre-spawned worker threads fed through a bounded queue.

use std::collections::VecDeque;
use std::num::NonZeroUsize;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use sockserv_core::driver::{DatagramDispatch, Dispatch, StreamDispatch};
use sockserv_core::{DatagramHandler, RequestError, Service, StreamHandler};

use super::{guarded, serve_datagram_into};
use crate::addr::Address;
use crate::conn::Conn;
use crate::socket::SocketDatagram;

use sockserv_core::WhenFull;

/// A thread pool: at most `size` worker threads, each started the first
/// time a request finds no idle one and then kept, take requests from a
/// queue of at most `queue` waiting ones.
/// CPython has no pool (`ThreadingMixIn` starts a thread per request, as
/// [`Threading`](super::Threading) does); this is what its users build
/// with `concurrent.futures.ThreadPoolExecutor`.
///
/// * A request is handed over to a waiting worker instead of a new
///   thread: no thread is started or ended per request.
/// * Each worker serves one request at a time, a connection until it
///   closes: at most `size` connections are served at once, so size the
///   pool for the connections you expect to stay open.
/// * A full queue meets [`WhenFull`] (default: wait).
/// * A handler's panic is caught in the worker and reported
///   ([`RequestError::Panic`]); the worker goes on with the next request,
///   so the pool never shrinks.
/// * `shutdown()` stops the server loop only; workers finish what they
///   hold and what is queued (it can serve again). `server_close` closes
///   the queue; with `block_on_close` (default `true`) and not
///   `daemon_threads` (default `false`) it waits until every queued and
///   running request is done and the workers have ended, as Threading
///   joins its threads. Otherwise the workers finish the queue on their
///   own and end.
///
/// The service is cloned per request (`Svc: Clone + Send + 'static`), as
/// Threading does: keep shared state behind an `Arc`.
///
/// ```
/// # use sockserv_core::{service_fn, StreamHandler};
/// # use sockserv_std::Builder;
/// # use sockserv_core::WhenFull;
/// # use sockserv_std::dispatch::Pool;
/// # use std::num::NonZeroUsize;
/// # struct Nop;
/// # impl<S: embedded_io::Read + embedded_io::Write> StreamHandler<S> for Nop {
/// #     type Error = S::Error;
/// #     fn handle(&mut self, _: &mut S) -> Result<(), S::Error> { Ok(()) }
/// # }
/// let pool = Pool::new(NonZeroUsize::new(16).unwrap()).queue(64).when_full(WhenFull::Refuse);
/// let server = Builder::new().dispatch(pool).stream("127.0.0.1:0", service_fn(|_| Nop))?;
/// # Ok::<(), sockserv_std::BindError>(())
/// ```
#[derive(Debug)]
pub struct Pool {
    /// CPython's `daemon_threads`: when `true`, closing the server does
    /// not wait for the workers.
    pub daemon_threads: bool,
    /// CPython's `block_on_close`: `server_close` waits for queued and
    /// running requests and joins the workers.
    pub block_on_close: bool,
    size: NonZeroUsize,
    queue_limit: usize,
    when_full: WhenFull,
    queue: Arc<Queue>,
    workers: Vec<JoinHandle<()>>,
}

type Job = Box<dyn FnOnce() + Send>;

thread_local! {
    /// A worker's datagram reply buffer, kept between datagrams.
    static REPLY: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[derive(Default)]
struct Queue {
    state: Mutex<State>,
    /// A job was queued, or the queue closed.
    work: Condvar,
    /// A job was taken off the queue.
    room: Condvar,
    refused: AtomicU64,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.lock();
        f.debug_struct("Queue").field("queued", &st.jobs.len()).field("busy", &st.busy).finish()
    }
}

#[derive(Default)]
struct State {
    jobs: VecDeque<Job>,
    closed: bool,
    busy: usize,
    alive: usize,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A worker's life: take a job, run it (a panic stays in the job), until
    /// the queue is closed and empty.
    fn work(&self) {
        let mut st = self.lock();
        loop {
            if let Some(job) = st.jobs.pop_front() {
                st.busy += 1;
                drop(st);
                self.room.notify_one();
                // The job reports its own panics (guarded); this keeps the
                // worker alive if a report itself panics.
                let _ = catch_unwind(AssertUnwindSafe(job));
                st = self.lock();
                st.busy -= 1;
            } else if st.closed {
                st.alive -= 1;
                return;
            } else {
                st = self.work.wait(st).unwrap_or_else(PoisonError::into_inner);
            }
        }
    }
}

/// Ends a worker's count if its thread unwinds anyway.
struct Alive<'a>(&'a Queue);

impl Drop for Alive<'_> {
    fn drop(&mut self) {
        if thread::panicking() {
            self.0.lock().alive -= 1;
        }
    }
}

impl Pool {
    /// A pool of `size` workers, a queue of `size` waiting requests, that
    /// waits when full; non-daemon workers, block on close.
    pub fn new(size: NonZeroUsize) -> Self {
        Self {
            daemon_threads: false,
            block_on_close: true,
            size,
            queue_limit: size.get(),
            when_full: WhenFull::Wait,
            queue: Arc::default(),
            workers: Vec::new(),
        }
    }

    /// How many requests may wait for a worker (default: the pool's
    /// size; `0`: a request is handed over only to an idle worker).
    pub fn queue(mut self, limit: usize) -> Self {
        self.queue_limit = limit;
        self
    }

    /// What a request that finds the queue full meets.
    pub fn when_full(mut self, when_full: WhenFull) -> Self {
        self.when_full = when_full;
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

    /// The number of workers asked for.
    pub fn size(&self) -> usize {
        self.size.get()
    }

    /// Workers running now (started as requests needed them).
    pub fn live_workers(&self) -> usize {
        self.queue.lock().alive
    }

    /// Workers serving a request now.
    pub fn busy_workers(&self) -> usize {
        self.queue.lock().busy
    }

    /// Requests waiting for a worker now.
    pub fn queued(&self) -> usize {
        self.queue.lock().jobs.len()
    }

    /// Requests refused because the queue was full ([`WhenFull::Refuse`]).
    pub fn refused(&self) -> u64 {
        self.queue.refused.load(Ordering::Relaxed)
    }

    /// Starts a worker when none would be idle for the next request and
    /// fewer than `size` have been started.
    fn grow(&mut self) -> std::io::Result<()> {
        let st = self.queue.lock();
        let idle = st.alive.saturating_sub(st.busy + st.jobs.len());
        let wanted = idle == 0 && self.workers.len() < self.size.get();
        drop(st);
        if !wanted {
            return Ok(());
        }
        let queue = Arc::clone(&self.queue);
        let name = format!("sockserv-pool-{}", self.workers.len());
        queue.lock().alive += 1;
        let spawned = thread::Builder::new().name(name).spawn(move || {
            let _alive = Alive(&queue);
            queue.work();
        });
        match spawned {
            Ok(handle) => {
                self.workers.push(handle);
                Ok(())
            }
            Err(e) => {
                self.queue.lock().alive -= 1;
                Err(e)
            }
        }
    }

    /// Queues `job` (a request from `client`): waits for room or refuses,
    /// as `when_full` says; drops it (closing what it owns) when refused,
    /// when no worker can run, or when a stop is asked for while waiting.
    fn submit<Svc>(&mut self, service: &Svc, client: &Address, stop: &dyn Fn() -> bool, job: Job)
    where
        Svc: Service<Address>,
    {
        if let Err(e) = self.grow()
            && self.live_workers() == 0
        {
            service.handle_error(client, &RequestError::Spawn(&e));
            return;
        }
        let mut st = self.queue.lock();
        // Room: a worker that will take it at once, or a place in the queue.
        while st.jobs.len() >= self.queue_limit + st.alive.saturating_sub(st.busy) {
            if self.when_full == WhenFull::Refuse {
                drop(st);
                self.queue.refused.fetch_add(1, Ordering::Relaxed);
                service.handle_table_full(client);
                return;
            }
            if stop() {
                return;
            }
            let wait = Duration::from_millis(50);
            st = self.queue.room.wait_timeout(st, wait).unwrap_or_else(PoisonError::into_inner).0;
        }
        st.jobs.push_back(job);
        drop(st);
        self.queue.work.notify_one();
    }
}

impl Dispatch for Pool {
    fn server_close(&mut self) {
        self.queue.lock().closed = true;
        self.queue.work.notify_all();
        if self.block_on_close && !self.daemon_threads {
            for w in self.workers.drain(..) {
                let _ = w.join();
            }
        }
    }
}

impl<Svc> StreamDispatch<Conn, Address, Svc> for Pool
where
    Svc: Service<Address, Handler: StreamHandler<Conn>> + Clone + Send + 'static,
{
    fn process_request(&mut self, service: &Svc, stream: Conn, client: Address) {
        let stop = stream.stop_handle();
        let svc = service.clone();
        let who = client.clone();
        let job: Job = Box::new(move || {
            guarded(&svc, &who, || sockserv_core::driver::serve_stream(&svc, stream, &who));
        });
        self.submit(service, &client, &move || stop.is_requested(), job);
    }
}

impl<Svc> DatagramDispatch<SocketDatagram, Svc> for Pool
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
        let svc = service.clone();
        let who = client.clone();
        let job: Job = Box::new(move || {
            REPLY.with_borrow_mut(|reply| {
                reply.resize(reply_size, 0);
                serve_datagram_into(&svc, &sender, &packet, truncated, &who, reply);
            });
        });
        let stop = || socket.stop_requested();
        self.submit(service, &client, &stop, job);
    }
}
