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

use super::close::{Close, Running, Watch};
use super::{DatagramRequest, serve_stream};
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
///   the queue and does what [`close`](Self::close) says (default
///   [`Close::Grace`] of 1 s) with the queued and running requests, as
///   Threading does with its threads; workers still busy after it are
///   left to finish the queue on their own and end.
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
    close: Close,
    size: NonZeroUsize,
    queue_limit: usize,
    when_full: WhenFull,
    queue: Arc<Queue>,
    /// Queued and running requests, and their connections.
    running: Arc<Running>,
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
    /// A job was taken off the queue, or a worker became idle.
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
                // An idle worker is room for the next request.
                self.room.notify_all();
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
    /// waits when full; a 1 s grace on close ([`Close::default`]).
    pub fn new(size: NonZeroUsize) -> Self {
        Self {
            close: Close::default(),
            size,
            queue_limit: size.get(),
            when_full: WhenFull::Wait,
            queue: Arc::default(),
            running: Arc::default(),
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

    /// What closing the server does with queued and running requests.
    pub fn close(mut self, close: Close) -> Self {
        self.close = close;
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

    /// Whether a request would find room now: an idle worker, one more
    /// worker to start, or a place in the queue.
    fn room(&self, st: &State) -> bool {
        self.workers.len() < self.size.get()
            || st.jobs.len() < self.queue_limit + st.alive.saturating_sub(st.busy)
    }

    /// Queues `job` (a request from `client`, its connection `conn`):
    /// refuses it when full and `when_full` says so (dropping it closes
    /// what it owns); else waits for room (`serve_forever` comes here
    /// only with room; `handle_request` may wait).
    fn submit<Svc, F>(&mut self, service: &Svc, client: &Address, conn: Option<Watch>, job: F)
    where
        Svc: Service<Address>,
        F: FnOnce() + Send + 'static,
    {
        if self.when_full == WhenFull::Refuse && !self.room(&self.queue.lock()) {
            self.queue.refused.fetch_add(1, Ordering::Relaxed);
            service.handle_table_full(client);
            return;
        }
        if let Err(e) = self.grow()
            && self.live_workers() == 0
        {
            service.handle_error(client, &RequestError::Spawn(&e));
            return;
        }
        let mut st = self.queue.lock();
        while !self.room(&st) {
            st = self.queue.room.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
        let ends = self.running.start(conn);
        st.jobs.push_back(Box::new(move || {
            let _ends = ends;
            job();
        }));
        drop(st);
        self.queue.work.notify_one();
    }
}

impl Dispatch for Pool {
    /// Closes the queue, then does what [`close`](Pool::close) says;
    /// workers that ended are joined, busy ones left.
    fn server_close(&mut self) {
        self.queue.lock().closed = true;
        self.queue.work.notify_all();
        if self.running.close(self.close) {
            // Nothing queued or running: the workers are ending.
            for w in self.workers.drain(..) {
                let _ = w.join();
            }
        }
        self.workers.retain(|w| !w.is_finished());
        self.workers.clear();
    }

    /// With [`WhenFull::Wait`]: room for one more request (the loop
    /// accepts only then). A refusing pool always takes the request, to
    /// refuse it.
    fn has_room(&self) -> bool {
        self.when_full == WhenFull::Refuse || self.room(&self.queue.lock())
    }

    fn wait_for_room(&mut self, timeout: Duration) {
        let st = self.queue.lock();
        if !self.room(&st) {
            let _ = self.queue.room.wait_timeout(st, timeout);
        }
    }
}

impl<Svc> StreamDispatch<Conn, Address, Svc> for Pool
where
    Svc: Service<Address, Handler: StreamHandler<Conn>> + Clone + Send + 'static,
{
    fn process_request(&mut self, service: &Svc, stream: Conn, client: Address) {
        let watch = stream.watch();
        let svc = service.clone();
        let who = client.clone();
        self.submit(service, &client, Some(watch), move || {
            serve_stream(&svc, stream, &who);
        });
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
        let request = DatagramRequest::new(socket, packet, truncated);
        let svc = service.clone();
        let who = client.clone();
        self.submit(service, &client, None, move || {
            REPLY.with_borrow_mut(|reply| request.serve(&svc, &who, reply));
        });
    }
}
