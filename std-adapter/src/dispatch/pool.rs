//! A fixed set of pre-spawned worker threads fed through a bounded queue.

use std::collections::VecDeque;
use std::num::NonZeroUsize;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use sockserv_core::driver::{DatagramDispatch, Dispatch, StreamDispatch};
use sockserv_core::{DatagramHandler, Request, RequestError, Service, StreamHandler};

use super::acceptor::{Acceptor, Took};
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
/// * Streams: idle workers also accept for themselves (up to four wait on
///   the listener at once, through a duplicate of it), as a pre-fork
///   server's processes do, and the pool keeps one worker free for that
///   while it may start more: accepting does not depend on the server
///   loop's one thread getting the CPU among hundreds of busy workers.
///   They accept only while `serve_forever` runs and no stop is asked for,
///   and run `verify_request` as the loop does.
/// * Each worker serves one request at a time, a connection until it
///   closes: at most `size` connections are served at once, so size the
///   pool for the connections you expect to stay open.
/// * A full queue meets [`WhenFull`] (default: wait).
/// * A handler's panic is caught in the worker and reported
///   ([`RequestError::Panic`]); the worker goes on with the next request,
///   so the pool never shrinks.
/// * `shutdown()` stops the server loop only; workers finish what they
///   hold and what is queued (it can serve again). `server_close` closes
///   the queue, stops the workers' accepting, and does what
///   [`close`](Self::close) says (default [`Close::Grace`] of 1 s) with
///   the queued and running requests (those the workers accepted too), as
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
}

type Job = Box<dyn FnOnce() + Send>;

/// How an idle worker accepts for itself: waits up to the given time for
/// a connection and returns the job that serves it (set at the pool's
/// first stream request, which knows the listener and the service).
type AcceptFn = Box<dyn Fn(Duration) -> Taken + Send + Sync>;

/// What an [`AcceptFn`] got.
enum Taken {
    Job(Job),
    Nothing,
    NotServing,
}

/// At most this many idle workers wait on the listener at once (each
/// connection wakes them all: poll(2) is not exclusive); the others wait
/// for a job.
const MAX_ACCEPTORS: usize = 4;

/// How long an accepting worker waits on the listener before it looks at
/// the queue and the pool's state again (and how long it sleeps while the
/// server is not serving).
const ACCEPT_WAIT: Duration = Duration::from_millis(50);

thread_local! {
    /// A worker's datagram reply buffer, kept between datagrams.
    static REPLY: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[derive(Default)]
struct Queue {
    state: Mutex<State>,
    /// A job was queued, an acceptor's place came free, or the queue closed.
    work: Condvar,
    /// A job was taken off the queue, or a worker came free.
    room: Condvar,
    refused: AtomicU64,
    /// Set at the first stream request: idle workers accept for themselves.
    /// Taken away when the pool closes, so that the listener's duplicate
    /// closes with the server's listener (within [`ACCEPT_WAIT`]), not when
    /// the last busy worker ends.
    accept: Mutex<Option<Arc<AcceptFn>>>,
    /// The workers started (at most `size`).
    handles: Mutex<Vec<JoinHandle<()>>>,
    size: usize,
    /// Queued and running requests (those the workers accepted too), and
    /// their connections.
    running: Arc<Running>,
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
    /// Workers waiting on the listener now.
    accepting: usize,
    /// Workers started so far (at most the pool's size).
    started: usize,
}

impl State {
    /// Workers waiting for a job on the condvar (neither busy nor
    /// accepting).
    fn waiting(&self) -> usize {
        self.alive.saturating_sub(self.busy + self.accepting)
    }
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A worker's life: take a job and run it (a panic stays in the job);
    /// with none queued, wait on the listener for a connection and serve
    /// it (while fewer than [`MAX_ACCEPTORS`] do), or for a job; until the
    /// queue is closed and empty.
    fn work(self: &Arc<Self>) {
        let mut st = self.lock();
        loop {
            if let Some(job) = st.jobs.pop_front() {
                st.busy += 1;
                // Keep one worker free to accept (when workers accept).
                let spare = st.waiting() == 0 && st.accepting == 0;
                drop(st);
                self.room.notify_one();
                if spare && self.acceptor().is_some() {
                    let _ = self.start_worker();
                }
                st = self.run_taken(job);
            } else if st.closed {
                st.alive -= 1;
                return;
            } else if st.accepting < MAX_ACCEPTORS
                && let Some(accept) = self.acceptor()
            {
                st.accepting += 1;
                drop(st);
                let taken = accept(ACCEPT_WAIT);
                st = self.lock();
                st.accepting -= 1;
                match taken {
                    Taken::Job(job) => {
                        // A request the loop queued while this worker waited
                        // on the listener came first: it is served first, the
                        // new one takes its place in the queue (served in
                        // order; the queue's length does not change).
                        let job = match st.jobs.pop_front() {
                            Some(first) => {
                                st.jobs.push_back(job);
                                first
                            }
                            None => job,
                        };
                        st.busy += 1;
                        // Someone takes this worker's place on the listener:
                        // a worker waiting for a job, or a new one.
                        let waiting = st.waiting();
                        drop(st);
                        if waiting > 0 {
                            self.work.notify_one();
                        } else {
                            let _ = self.start_worker();
                        }
                        st = self.run_taken(job);
                    }
                    Taken::Nothing => {}
                    Taken::NotServing => {
                        st = self
                            .work
                            .wait_timeout(st, ACCEPT_WAIT)
                            .unwrap_or_else(PoisonError::into_inner)
                            .0;
                    }
                }
            } else {
                st = self.work.wait(st).unwrap_or_else(PoisonError::into_inner);
            }
        }
    }

    /// Runs a job already counted busy; counts it done.
    fn run_taken(&self, job: Job) -> MutexGuard<'_, State> {
        // The job reports its own panics (guarded); this keeps the worker
        // alive if a report itself panics.
        let _ = catch_unwind(AssertUnwindSafe(job));
        let mut st = self.lock();
        st.busy -= 1;
        // An idle worker is room too.
        self.room.notify_all();
        st
    }

    /// Starts a worker if fewer than `size` were started.
    fn start_worker(self: &Arc<Self>) -> std::io::Result<()> {
        let n = {
            let mut st = self.lock();
            if st.started >= self.size {
                return Ok(());
            }
            st.started += 1;
            st.alive += 1;
            st.started
        };
        let queue = Arc::clone(self);
        let spawned =
            thread::Builder::new().name(format!("sockserv-pool-{}", n - 1)).spawn(move || {
                let _alive = Alive(&queue);
                queue.work();
            });
        match spawned {
            Ok(handle) => {
                self.handles.lock().unwrap_or_else(PoisonError::into_inner).push(handle);
                Ok(())
            }
            Err(e) => {
                let mut st = self.lock();
                st.started -= 1;
                st.alive -= 1;
                Err(e)
            }
        }
    }

    fn acceptor(&self) -> Option<Arc<AcceptFn>> {
        self.accept.lock().unwrap_or_else(PoisonError::into_inner).clone()
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
            queue: Arc::new(Queue { size: size.get(), ..Queue::default() }),
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

    /// Starts a worker when none would take the next request at once (none
    /// waits for a job) and fewer than `size` have been started.
    fn grow(&mut self) -> std::io::Result<()> {
        let st = self.queue.lock();
        let wanted = st.waiting() <= st.jobs.len();
        drop(st);
        if wanted { self.queue.start_worker() } else { Ok(()) }
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
        let ends = self.queue.running.start(conn);
        st.jobs.push_back(Box::new(move || {
            let _ends = ends;
            job();
        }));
        drop(st);
        self.queue.work.notify_one();
    }
}

impl Pool {
    /// From now on idle workers accept for themselves from the listener
    /// that accepted `stream` (if it can be duplicated; otherwise the
    /// server loop goes on accepting alone).
    fn accept_in_workers<Svc>(&self, service: &Svc, stream: &Conn)
    where
        Svc: Service<Address, Handler: StreamHandler<Conn>> + Clone + Send + 'static,
    {
        let Ok(acceptor) = Acceptor::from_conn(stream) else { return };
        let running = Arc::clone(&self.queue.running);
        // Shared by the workers: `Svc` need not be `Sync`, a clone is taken
        // per connection (as Threading clones it per request).
        let svc = Mutex::new(service.clone());
        let clone = move || svc.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let accept: AcceptFn = Box::new(move |wait| match acceptor.take(wait) {
            Took::Conn(conn, client) => {
                let svc = clone();
                if !svc.verify_request(&Request::Connection { client: &client }) {
                    sockserv_core::driver::shutdown_stream(conn);
                    return Taken::Nothing;
                }
                let ends = running.start(Some(conn.watch()));
                Taken::Job(Box::new(move || {
                    let _ends = ends;
                    serve_stream(&svc, conn, &client);
                }))
            }
            Took::Nothing => Taken::Nothing,
            Took::NotServing => Taken::NotServing,
            Took::Failed(e) => {
                clone().handle_accept_error(&e);
                Taken::Nothing
            }
        });
        *self.queue.accept.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(accept));
    }

    /// Whether a request would find room now: an idle worker, a worker
    /// still to be started, or a place in the queue.
    fn room(&self, st: &State) -> bool {
        let unstarted = self.size.get().saturating_sub(st.started);
        st.jobs.len() < self.queue_limit + st.alive.saturating_sub(st.busy) + unstarted
    }
}

impl Dispatch for Pool {
    /// With [`WhenFull::Wait`]: whether a request would find room (the
    /// loop stops accepting meanwhile, and says so once per episode).
    /// With [`WhenFull::Refuse`]: always (each refused request is told).
    fn has_room(&self) -> bool {
        self.when_full == WhenFull::Refuse || self.room(&self.queue.lock())
    }

    fn wait_for_room(&mut self, timeout: Duration) {
        if self.when_full == WhenFull::Refuse {
            return;
        }
        let st = self.queue.lock();
        if !self.room(&st) {
            let _ = self.queue.room.wait_timeout(st, timeout);
        }
    }

    fn cap(&self) -> Option<(&'static str, usize)> {
        Some(("the pool's workers and queue", self.size.get() + self.queue_limit))
    }

    /// Closes the queue and stops the workers' accepting, then does what
    /// [`close`](Pool::close) says; workers that ended are joined, busy
    /// ones left.
    fn server_close(&mut self) {
        self.queue.lock().closed = true;
        // Workers stop accepting; the listener's duplicate closes as soon
        // as the last accepting worker's wait ends.
        self.queue.accept.lock().unwrap_or_else(PoisonError::into_inner).take();
        self.queue.work.notify_all();
        let workers =
            std::mem::take(&mut *self.queue.handles.lock().unwrap_or_else(PoisonError::into_inner));
        if self.queue.running.close(self.close) {
            // Nothing queued or running: the workers are ending.
            for w in workers {
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
        if self.queue.acceptor().is_none() && !self.queue.lock().closed {
            self.accept_in_workers(service, &stream);
        }
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
