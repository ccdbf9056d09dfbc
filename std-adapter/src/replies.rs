//! Unix-datagram replies that could not leave at once.
//!
//! A reply to a Unix-datagram peer whose receive queue is full (Linux:
//! `net.unix.max_dgram_qlen` + 1 datagrams) fails with `EAGAIN`. Instead of
//! dropping it, the sender hands it to the [`Keeper`]: a queue per peer, in
//! order, that the server loop retries (1 ms, then doubling up to 64 ms)
//! until the peer reads or the reply's deadline ([`REPLY_DEADLINE`])
//! passes. Memory is bounded ([`PEER_BYTES`] per peer, [`TOTAL_BYTES`] in
//! all). Every reply dropped anyway is counted ([`ReplyStats`]) and
//! reported once per peer and episode through the logging shim (an
//! episode ends when a reply reaches that peer again).
//!
//! Who hands off: the server loop itself (sync, event) and the handler
//! threads of the threading and pool strategies push into the shared store;
//! a forked child cannot, so it sends the reply over a datagram socket pair
//! to the server process, whose loop reads it like a reply of its own (one
//! the server does not take within 200 ms is dropped: counted in memory
//! shared with the children, reported by the server once per episode). The
//! retries run on the server loop's thread (no thread of their own, so the
//! forking strategy's process stays single-threaded).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use socket2::{Domain, SockAddr, Socket, Type};
use sockserv_core::driver::ReplySendError;
use sockserv_core::logging::{Level, report};

use crate::addr::Address;
use crate::sys;

/// How long a reply waits for its peer to read before it is dropped.
pub const REPLY_DEADLINE: Duration = Duration::from_secs(2);
/// Bytes of replies that may wait for one peer (each counted with 64 bytes
/// more, for its allocation); past it a new reply to that peer is dropped.
pub const PEER_BYTES: usize = 512 * 1024;
/// Bytes of replies that may wait for all peers together.
pub const TOTAL_BYTES: usize = 16 * 1024 * 1024;
/// What a waiting reply costs besides its bytes (its allocation and entry).
const OVERHEAD: usize = 64;
const FIRST_RETRY: Duration = Duration::from_millis(1);
const LAST_RETRY: Duration = Duration::from_millis(64);
/// How long a forked child waits for the server process to take a reply
/// it hands over (the server loop reads them between requests).
const HANDOFF_WAIT: Duration = Duration::from_millis(200);
/// Peers remembered with an open drop episode and nothing waiting, before
/// the oldest are forgotten.
const MAX_QUIET_PEERS: usize = 1024;

/// What happened to Unix-datagram replies that could not leave at once
/// ([`SocketDatagram::reply_stats`](crate::SocketDatagram::reply_stats)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplyStats {
    /// Replies that found the peer's queue (or the send buffer) full, waited
    /// and then left.
    pub delayed: u64,
    /// Replies dropped: their peer did not read within [`REPLY_DEADLINE`],
    /// too much already waited for it, or it went away.
    pub dropped: u64,
    /// Replies waiting now.
    pub waiting: usize,
}

/// One peer's waiting replies.
#[derive(Debug)]
struct Peer {
    replies: VecDeque<(Vec<u8>, Instant)>,
    bytes: usize,
    next_try: Instant,
    backoff: Duration,
    /// Replies dropped since one last reached this peer (the episode).
    dropped: u64,
}

impl Peer {
    fn new(now: Instant) -> Self {
        Self {
            replies: VecDeque::new(),
            bytes: 0,
            next_try: now + FIRST_RETRY,
            backoff: FIRST_RETRY,
            dropped: 0,
        }
    }

    fn due(&self) -> Option<Instant> {
        let (_, deadline) = self.replies.front()?;
        Some(self.next_try.min(*deadline))
    }
}

/// The replies waiting, by peer path.
#[derive(Debug, Default)]
struct Store {
    peers: HashMap<PathBuf, Peer>,
    bytes: usize,
    stats: ReplyStats,
}

impl Store {
    fn is_waiting_for(&self, path: &Path) -> bool {
        self.peers.get(path).is_some_and(|p| !p.replies.is_empty())
    }

    /// Queues a reply that could not leave, or drops it past a bound. When
    /// all peers together have [`TOTAL_BYTES`] waiting, the peer with the
    /// most waiting loses its oldest: a client that never reads cannot take
    /// the room that readers need for a moment.
    fn push(&mut self, path: &Path, data: &[u8], now: Instant) {
        let cost = data.len() + OVERHEAD;
        let mine = self.peers.get(path).map_or(0, |p| p.bytes);
        if mine + cost > PEER_BYTES {
            let why = format!("{PEER_BYTES} bytes of replies already wait for it");
            self.drop_new(path, now, &why);
            return;
        }
        while self.bytes + cost > TOTAL_BYTES {
            let hog = self.peers.iter().max_by_key(|(_, p)| p.bytes).map(|(k, p)| (k, p.bytes));
            let Some((hog, bytes)) = hog.filter(|&(_, bytes)| bytes > mine + cost) else {
                let why = format!("{TOTAL_BYTES} bytes of replies already wait for slow peers");
                self.drop_new(path, now, &why);
                return;
            };
            let hog = hog.clone();
            let peer = self.peers.get_mut(&hog).expect("the hog is a peer");
            pop(&mut self.stats, peer);
            self.bytes -= bytes - peer.bytes;
            let why = format!("{TOTAL_BYTES} bytes of replies wait, the most for it");
            dropped(&mut self.stats, &hog, peer, &why);
        }
        let peer = self.peers.entry(path.to_path_buf()).or_insert_with(|| Peer::new(now));
        if peer.replies.is_empty() {
            peer.next_try = now + FIRST_RETRY;
            peer.backoff = FIRST_RETRY;
        }
        peer.replies.push_back((data.to_vec(), now + REPLY_DEADLINE));
        peer.bytes += cost;
        self.bytes += cost;
        self.stats.waiting += 1;
    }

    fn drop_new(&mut self, path: &Path, now: Instant, why: &str) {
        let peer = self.peers.entry(path.to_path_buf()).or_insert_with(|| Peer::new(now));
        dropped(&mut self.stats, path, peer, why);
    }

    /// The earliest time a retry or a deadline is due.
    fn next_due(&self) -> Option<Instant> {
        self.peers.values().filter_map(Peer::due).min()
    }

    /// Retries every peer that is due, drops what passed its deadline.
    fn run(&mut self, socket: &Socket, now: Instant) {
        let mut freed = 0;
        for (path, peer) in &mut self.peers {
            if peer.due().is_some_and(|due| due <= now) {
                let before = peer.bytes;
                retry(&mut self.stats, socket, path, peer, now);
                freed += before - peer.bytes;
            }
        }
        self.bytes -= freed;
        self.forget_quiet();
    }

    /// Forgets peers with nothing waiting and no open episode, and (past
    /// [`MAX_QUIET_PEERS`]) the ones whose episode is open but quiet.
    fn forget_quiet(&mut self) {
        self.peers.retain(|_, p| !p.replies.is_empty() || p.dropped > 0);
        if self.peers.len() > MAX_QUIET_PEERS {
            self.peers.retain(|_, p| !p.replies.is_empty());
        }
    }

    /// At close: whatever still waits is dropped (and said so).
    fn close(&mut self) {
        let waiting = self.stats.waiting;
        if waiting > 0 {
            self.stats.dropped += waiting as u64;
            self.stats.waiting = 0;
            report(
                Level::Warn,
                format_args!("{waiting} datagram replies still waiting were dropped at close"),
            );
        }
        self.peers.clear();
        self.bytes = 0;
    }
}

/// Sends `peer`'s waiting replies in order until one meets a full queue.
fn retry(stats: &mut ReplyStats, socket: &Socket, path: &Path, peer: &mut Peer, now: Instant) {
    while let Some((_, deadline)) = peer.replies.front()
        && *deadline <= now
    {
        pop(stats, peer);
        let why = format!(
            "it could not leave for {REPLY_DEADLINE:?}: the client's receive queue (or the \
             server's send buffer) stayed full"
        );
        dropped(stats, path, peer, &why);
    }
    let to = match SockAddr::unix(path) {
        Ok(to) => to,
        Err(e) => return drop_all(stats, path, peer, &e),
    };
    while let Some((data, _)) = peer.replies.front() {
        match send_to(socket, data, &to) {
            Ok(()) => {
                pop(stats, peer);
                stats.delayed += 1;
                peer.backoff = FIRST_RETRY;
                if peer.dropped > 0 {
                    report(
                        Level::Info,
                        format_args!(
                            "replies reach {} again; {} were dropped meanwhile",
                            path.display(),
                            peer.dropped
                        ),
                    );
                    peer.dropped = 0;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                peer.backoff = (peer.backoff * 2).min(LAST_RETRY);
                peer.next_try = now + peer.backoff;
                return;
            }
            // The peer went away (its socket closed or its path removed).
            Err(e) => drop_all(stats, path, peer, &e),
        }
    }
}

fn drop_all(stats: &mut ReplyStats, path: &Path, peer: &mut Peer, e: &io::Error) {
    while !peer.replies.is_empty() {
        pop(stats, peer);
        dropped(stats, path, peer, &format!("sending failed: {e}"));
    }
}

fn pop(stats: &mut ReplyStats, peer: &mut Peer) {
    if let Some((data, _)) = peer.replies.pop_front() {
        peer.bytes -= data.len() + OVERHEAD;
        stats.waiting -= 1;
    }
}

/// Counts a dropped reply; the first of an episode is reported.
fn dropped(stats: &mut ReplyStats, path: &Path, peer: &mut Peer, why: &str) {
    stats.dropped += 1;
    peer.dropped += 1;
    if peer.dropped == 1 {
        report(
            Level::Warn,
            format_args!(
                "a datagram reply to {} was dropped ({why}); further drops to it are only \
                 counted until it reads again",
                path.display()
            ),
        );
    }
}

/// One `sendto(MSG_DONTWAIT)`, retrying interruptions only. A full queue is
/// `WouldBlock`, never a wait: for an unconnected Unix datagram socket,
/// poll(2) cannot tell when one *peer's* receive queue has room, and a peer
/// that never reads would hold the server (or a thread, or a child) for
/// ever.
pub(crate) fn send_to(socket: &Socket, data: &[u8], to: &SockAddr) -> io::Result<()> {
    loop {
        match sys::send_to_dontwait(socket, data, to) {
            Ok(n) if n == data.len() => return Ok(()),
            Ok(_) => {
                return Err(io::Error::new(io::ErrorKind::WriteZero, "datagram sent partially"));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// What every sender of the server's replies holds (the loop, a handler
/// thread, a forked child): the socket, and for Unix datagrams the way to
/// hand a reply that cannot leave to the [`Keeper`].
#[derive(Clone)]
pub(crate) struct Replier {
    socket: Arc<Socket>,
    keep: Option<Arc<Handoff>>,
}

struct Handoff {
    /// The server process (a forked child is another).
    owner: u32,
    /// Replies forked children dropped because the server process did not
    /// take them within [`HANDOFF_WAIT`].
    lost_by_children: sys::SharedCounter,
    store: Arc<Mutex<Store>>,
    /// The sending end of the pair: blocking, with [`HANDOFF_WAIT`].
    tx: Socket,
}

impl fmt::Debug for Replier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Replier").field("keeps", &self.keep.is_some()).finish()
    }
}

impl Replier {
    /// Sends one reply. UDP (no keeper): a reply that cannot leave at once
    /// is dropped ([`ReplySendError::WouldBlock`]). Unix datagrams: it waits
    /// with the keeper (a forked child's hand-over that the server does not
    /// take in time is counted and reported by the server, not here).
    pub(crate) fn send(&self, data: &[u8], to: &Address) -> Result<(), ReplySendError> {
        let failed = |e: io::Error| match e.kind() {
            io::ErrorKind::WouldBlock => ReplySendError::WouldBlock,
            kind => ReplySendError::Failed(kind.into()),
        };
        let addr = to.to_sockaddr().map_err(failed)?;
        let (Some(keep), Address::Unix(Some(path))) = (&self.keep, to) else {
            return send_to(&self.socket, data, &addr).map_err(failed);
        };
        if std::process::id() != keep.owner {
            // A forked child: the store is the server's, not ours.
            return match send_to(&self.socket, data, &addr) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if keep.hand_over(path, data).is_err() {
                        // Counted here, reported by the server process.
                        keep.lost_by_children.get().fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(())
                }
                other => other.map_err(failed),
            };
        }
        // Behind replies already waiting for this peer: keep the order.
        if !keep.lock().is_waiting_for(path) {
            match send_to(&self.socket, data, &addr) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => return other.map_err(failed),
            }
        }
        keep.lock().push(path, data, Instant::now());
        // Wake the server loop if it sleeps (a full pair means it is awake).
        let _ = self.keep_poke();
        Ok(())
    }

    fn keep_poke(&self) -> io::Result<usize> {
        match &self.keep {
            Some(keep) => sys::send_dontwait(&keep.tx, &[]),
            None => Ok(0),
        }
    }
}

impl Handoff {
    fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A forked child's reply for the server process: the path's length
    /// (2 bytes), the path, the reply, as one datagram.
    fn hand_over(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let path = path.as_os_str().as_bytes();
        let len = u16::try_from(path.len()).map_err(|_| io::ErrorKind::InvalidInput)?;
        let mut msg = Vec::with_capacity(2 + path.len() + data.len());
        msg.extend_from_slice(&len.to_le_bytes());
        msg.extend_from_slice(path);
        msg.extend_from_slice(data);
        loop {
            match self.tx.send(&msg) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// The server loop's side: the store, the receiving end of the pair, and
/// when to look at them next.
pub(crate) struct Keeper {
    handoff: Arc<Handoff>,
    rx: Socket,
    buf: Vec<u8>,
    next_look: Instant,
    /// `lost_by_children` as last seen, and whether that episode was
    /// reported (it ends when a hand-over arrives again).
    children_lost: u64,
    children_episode: bool,
}

impl fmt::Debug for Keeper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keeper").field("stats", &self.stats()).finish()
    }
}

impl Keeper {
    /// A keeper for replies of up to `max_reply` bytes sent through
    /// `socket`, and the replier that feeds it.
    pub(crate) fn new(socket: Arc<Socket>, max_reply: usize) -> io::Result<(Self, Replier)> {
        let (rx, tx) = Socket::pair(Domain::UNIX, Type::DGRAM, None)?;
        rx.set_nonblocking(true)?;
        tx.set_write_timeout(Some(HANDOFF_WAIT))?;
        tx.set_send_buffer_size(sys::wmem_max())?;
        let store = Arc::new(Mutex::new(Store::default()));
        let lost_by_children = sys::SharedCounter::new()?;
        let handoff = Arc::new(Handoff { owner: std::process::id(), lost_by_children, store, tx });
        let replier = Replier { socket, keep: Some(Arc::clone(&handoff)) };
        // Room for the largest hand-over: a path of up to 108 bytes.
        let buf = vec![0; max_reply + 2 + 128];
        let keeper = Self {
            handoff,
            rx,
            buf,
            next_look: Instant::now(),
            children_lost: 0,
            children_episode: false,
        };
        Ok((keeper, replier))
    }

    /// A replier without a keeper (UDP).
    pub(crate) fn none(socket: Arc<Socket>) -> Replier {
        Replier { socket, keep: None }
    }

    /// Readable when a child handed a reply over or a thread queued one.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.rx.as_fd()
    }

    /// When [`work`](Self::work) is due next (a retry or a deadline).
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.handoff.lock().next_due()
    }

    /// Between requests: at most every millisecond, takes what was handed
    /// over and retries what is due.
    pub(crate) fn look(&mut self, socket: &Socket) {
        let now = Instant::now();
        if now >= self.next_look {
            self.work(socket, now);
        }
    }

    /// Takes what was handed over, retries what is due.
    pub(crate) fn work(&mut self, socket: &Socket, now: Instant) {
        self.next_look = now + FIRST_RETRY;
        loop {
            match sys::recv_dontwait(&self.rx, &mut self.buf) {
                Ok(n) => self.take(n, now),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        self.handoff.lock().run(socket, now);
        self.children_lost();
    }

    /// Reports replies forked children dropped, once per episode.
    fn children_lost(&mut self) {
        let lost = self.handoff.lost_by_children.get().load(Ordering::Relaxed);
        if lost > self.children_lost && !self.children_episode {
            self.children_episode = true;
            report(
                Level::Warn,
                format_args!(
                    "forked children dropped {} datagram replies: the server process took none \
                     within {HANDOFF_WAIT:?} (further drops are only counted until it takes one)",
                    lost - self.children_lost
                ),
            );
        }
        self.children_lost = lost;
    }

    /// One datagram from the pair: a poke (empty), or a child's reply.
    fn take(&mut self, n: usize, now: Instant) {
        let msg = &self.buf[..n.min(self.buf.len())];
        let Some((len, rest)) = msg.split_first_chunk::<2>() else { return };
        let len = usize::from(u16::from_le_bytes(*len));
        if len == 0 || len > rest.len() {
            return;
        }
        let (path, data) = rest.split_at(len);
        let path = Path::new(std::ffi::OsStr::from_bytes(path));
        self.handoff.lock().push(path, data, now);
        self.children_episode = false;
    }

    pub(crate) fn stats(&self) -> ReplyStats {
        let mut stats = self.handoff.lock().stats;
        stats.dropped += self.handoff.lost_by_children.get().load(Ordering::Relaxed);
        stats
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        if std::process::id() == self.handoff.owner {
            self.handoff.lock().close();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixDatagram;

    use super::*;

    /// A reply that costs exactly `PEER_BYTES / 8` in the store.
    fn eighth() -> Vec<u8> {
        vec![0; PEER_BYTES / 8 - OVERHEAD]
    }

    #[test]
    fn a_peer_past_its_bound_loses_the_new_reply_not_the_waiting_ones() {
        let (mut s, now, a) = (Store::default(), Instant::now(), Path::new("/a"));
        for _ in 0..8 {
            s.push(a, &eighth(), now);
        }
        assert_eq!(s.stats, ReplyStats { delayed: 0, dropped: 0, waiting: 8 });
        s.push(a, b"one more", now);
        assert_eq!(s.stats, ReplyStats { delayed: 0, dropped: 1, waiting: 8 });
        assert_eq!(s.bytes, PEER_BYTES);
    }

    #[test]
    fn when_all_is_full_the_peer_with_the_most_waiting_loses_its_oldest() {
        let (mut s, now) = (Store::default(), Instant::now());
        let hogs = TOTAL_BYTES / PEER_BYTES;
        for i in 0..hogs {
            for _ in 0..8 {
                s.push(Path::new(&format!("/hog-{i}")), &eighth(), now);
            }
        }
        s.push(Path::new("/small"), b"a reply", now);
        assert_eq!(s.stats.dropped, 1, "one reply of a hog made room");
        assert!(s.is_waiting_for(Path::new("/small")));
        let hogged: usize =
            s.peers.values().map(|p| p.bytes).sum::<usize>() - s.peers[Path::new("/small")].bytes;
        assert_eq!(hogged, TOTAL_BYTES - PEER_BYTES / 8);
        // The one that lost is now the smallest hog: the next loss is another's.
        s.push(Path::new("/small"), &eighth(), now);
        assert_eq!(s.stats.dropped, 2);
        let losers = s.peers.values().filter(|p| p.dropped > 0).count();
        assert_eq!(losers, 2, "two hogs lost one each");
        assert!(s.bytes <= TOTAL_BYTES);
    }

    #[test]
    fn replies_wait_for_a_full_queue_then_leave_or_expire_once_reported() {
        let dir = std::env::temp_dir().join(format!("sockserv-replies-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let path = dir.join("peer");
        let peer = UnixDatagram::bind(&path).unwrap();
        let server = Socket::new(Domain::UNIX, Type::DGRAM, None).unwrap();
        let to = SockAddr::unix(&path).unwrap();
        let mut queued = 0;
        while send_to(&server, b"q", &to).is_ok() {
            queued += 1;
        }
        let (mut s, now) = (Store::default(), Instant::now());
        s.push(&path, b"w1", now);
        s.push(&path, b"w2", now);
        s.run(&server, now + LAST_RETRY);
        assert_eq!(s.stats, ReplyStats { delayed: 0, dropped: 0, waiting: 2 }, "the queue is full");
        // The peer reads one: one waiting reply leaves, in order.
        let mut buf = [0u8; 8];
        peer.recv(&mut buf).unwrap();
        s.run(&server, now + 2 * LAST_RETRY);
        assert_eq!(s.stats, ReplyStats { delayed: 1, dropped: 0, waiting: 1 });
        // It reads no more: the other one expires, reported as an episode.
        s.push(&path, b"w3", now + 2 * LAST_RETRY);
        s.run(&server, now + 2 * LAST_RETRY + REPLY_DEADLINE);
        assert_eq!(s.stats, ReplyStats { delayed: 1, dropped: 2, waiting: 0 });
        assert_eq!(s.peers[&path].dropped, 2, "one episode, still open");
        // It reads everything: the next reply leaves and ends the episode.
        let mut last = Vec::new();
        for _ in 0..queued {
            let n = peer.recv(&mut buf).unwrap();
            last = buf[..n].to_vec();
        }
        assert_eq!(last, b"w1", "the first waiting reply left first");
        let later = now + 3 * REPLY_DEADLINE;
        s.push(&path, b"w4", later);
        s.run(&server, later + LAST_RETRY);
        assert_eq!(s.stats, ReplyStats { delayed: 2, dropped: 2, waiting: 0 });
        assert!(s.peers.is_empty(), "nothing waits, no episode: forgotten");
        let n = peer.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"w4");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
