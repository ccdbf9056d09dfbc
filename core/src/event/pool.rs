//! The buffers of the event mode: a pool that connections borrow from
//! while they hold unconsumed input or unsent output, and give back as
//! soon as a buffer is empty. An idle connection holds none.

/// The name of a buffer lent by a [`BufferPool`]: an index, stable while
/// the buffer is lent (so a completion-based backend could hand the
/// buffer itself to the kernel and name it by this id).
pub type BufId = u32;

/// Where the event mode's buffers come from: a fixed set
/// ([`FixedPool`], `no_std`, no allocator) or buffers allocated on first
/// use (the std adapter's pool). Every buffer of a pool has the same size.
///
/// The table takes a buffer when a connection has something to read or
/// to queue, and gives it back the moment it is empty. When
/// [`take`](Self::take) finds none, the connection waits (back-pressure:
/// it is not read from) until another connection gives one back; the
/// server tells [`Service::handle_buffers_exhausted`](crate::Service::handle_buffers_exhausted).
pub trait BufferPool {
    /// The size of every buffer, in bytes.
    fn buffer_size(&self) -> usize;

    /// Lends a free buffer, or `None` when every buffer is lent.
    fn take(&mut self) -> Option<BufId>;

    /// Gives back a buffer lent by [`take`](Self::take).
    fn give(&mut self, id: BufId);

    /// How many buffers [`take`](Self::take) would lend now (including
    /// ones not allocated yet).
    fn free(&self) -> usize;

    /// The bytes of a lent buffer ([`buffer_size`](Self::buffer_size) long).
    ///
    /// # Panics
    /// May panic for an id that is not lent (a bug of the caller).
    fn get(&self, id: BufId) -> &[u8];

    /// The bytes of a lent buffer, to fill.
    ///
    /// # Panics
    /// May panic for an id that is not lent.
    fn get_mut(&mut self, id: BufId) -> &mut [u8];

    /// Two distinct lent buffers at once: the input being read and the
    /// output being written.
    ///
    /// # Panics
    /// May panic when `a == b` or either is not lent.
    fn pair_mut(&mut self, a: BufId, b: BufId) -> (&mut [u8], &mut [u8]);
}

/// `N` buffers of `B` bytes each, fixed at compile time: the pool of a
/// `no_std` server (for instance 16 connections sharing 4 buffers).
/// Its memory is the whole `N × B` wherever it is placed; nothing is
/// allocated.
///
/// [`new`](Self::new) is a `const fn` whose value is all zero bytes, so a
/// pool can be a `static` that lands in `.bss` (no flash image, nothing
/// built on the stack first). The server borrows it (a `&mut P` is a pool
/// too): on a microcontroller through `static_cell::ConstStaticCell` or
/// `cortex_m::singleton!`, on a host through a `Mutex`:
///
/// ```
/// use std::sync::Mutex;
/// use sockserv::FixedPool;
/// use sockserv::driver::BufferPool;
///
/// // Four 512-byte buffers in .bss.
/// static POOL: Mutex<FixedPool<512, 4>> = Mutex::new(FixedPool::new());
///
/// let mut guard = POOL.lock().unwrap();
/// let pool: &mut FixedPool<512, 4> = &mut guard;
/// let id = pool.take().unwrap();
/// assert_eq!(pool.get(id).len(), 512);
/// ```
///
/// A pool needs at least two buffers (a connection holding input needs a
/// second one to answer into) of at least one byte; a smaller one does
/// not compile:
///
/// ```compile_fail
/// let pool = sockserv::FixedPool::<512, 1>::new();
/// # let _ = pool;
/// ```
pub struct FixedPool<const B: usize, const N: usize> {
    bufs: [[u8; B]; N],
    /// Buffers given back, most recent last (lent again first).
    given: [BufId; N],
    given_len: usize,
    /// Buffers `fresh..N` have never been lent (lent in order, low ids
    /// first), so that a new pool is all zero bytes.
    fresh: usize,
}

impl<const B: usize, const N: usize> Default for FixedPool<B, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const B: usize, const N: usize> FixedPool<B, N> {
    /// A pool with every buffer free: all zero bytes, evaluated at
    /// compile time in a `static` or `const`.
    ///
    /// # Panics
    /// Never at run time: a pool of fewer than two buffers, of empty
    /// buffers, or of more buffers than a [`BufId`] can name fails to
    /// compile.
    pub const fn new() -> Self {
        const {
            assert!(N >= 2, "a FixedPool needs at least two buffers (input and output)");
            assert!(B > 0, "a FixedPool's buffers need at least one byte");
            assert!(N < BufId::MAX as usize, "too many buffers for a BufId");
            assert!(B <= u32::MAX as usize, "a buffer larger than 4 GiB");
        }
        Self { bufs: [[0; B]; N], given: [0; N], given_len: 0, fresh: 0 }
    }

    /// How many buffers are lent now.
    pub fn lent(&self) -> usize {
        N - BufferPool::free(self)
    }
}

impl<const B: usize, const N: usize> BufferPool for FixedPool<B, N> {
    fn buffer_size(&self) -> usize {
        B
    }

    fn take(&mut self) -> Option<BufId> {
        if self.given_len > 0 {
            self.given_len -= 1;
            return Some(self.given[self.given_len]);
        }
        if self.fresh < N {
            self.fresh += 1;
            return Some((self.fresh - 1) as BufId);
        }
        None
    }

    fn give(&mut self, id: BufId) {
        debug_assert!((id as usize) < self.fresh, "buffer {id} was never lent");
        debug_assert!(!self.given[..self.given_len].contains(&id), "buffer {id} given back twice");
        if let Some(slot) = self.given.get_mut(self.given_len) {
            *slot = id;
            self.given_len += 1;
        }
    }

    fn free(&self) -> usize {
        self.given_len + (N - self.fresh)
    }

    fn get(&self, id: BufId) -> &[u8] {
        &self.bufs[id as usize]
    }

    fn get_mut(&mut self, id: BufId) -> &mut [u8] {
        &mut self.bufs[id as usize]
    }

    fn pair_mut(&mut self, a: BufId, b: BufId) -> (&mut [u8], &mut [u8]) {
        let (a, b) = pair_mut(&mut self.bufs, a as usize, b as usize);
        (a, b)
    }
}

/// A borrowed pool is a pool: the server can use a pool that lives in a
/// `static` (`&'static mut FixedPool<..>`).
impl<P: BufferPool + ?Sized> BufferPool for &mut P {
    fn buffer_size(&self) -> usize {
        (**self).buffer_size()
    }
    fn take(&mut self) -> Option<BufId> {
        (**self).take()
    }
    fn give(&mut self, id: BufId) {
        (**self).give(id);
    }
    fn free(&self) -> usize {
        (**self).free()
    }
    fn get(&self, id: BufId) -> &[u8] {
        (**self).get(id)
    }
    fn get_mut(&mut self, id: BufId) -> &mut [u8] {
        (**self).get_mut(id)
    }
    fn pair_mut(&mut self, a: BufId, b: BufId) -> (&mut [u8], &mut [u8]) {
        (**self).pair_mut(a, b)
    }
}

/// Two distinct elements of a slice, mutably.
///
/// # Panics
/// When `a == b` or either is out of range.
pub fn pair_mut<T>(items: &mut [T], a: usize, b: usize) -> (&mut T, &mut T) {
    assert_ne!(a, b, "one buffer lent twice");
    if a < b {
        let (lo, hi) = items.split_at_mut(b);
        (&mut lo[a], &mut hi[0])
    } else {
        let (lo, hi) = items.split_at_mut(a);
        (&mut hi[0], &mut lo[b])
    }
}

/// A run of bytes (`start..end`) in a buffer borrowed from a pool, or no
/// buffer at all. It is the table's view of a connection's input or
/// output; 12 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Held {
    id: BufId,
    start: u32,
    end: u32,
}

impl Held {
    const NONE: BufId = BufId::MAX;

    pub(crate) const fn none() -> Self {
        Self { id: Self::NONE, start: 0, end: 0 }
    }

    pub(crate) fn id(&self) -> Option<BufId> {
        (self.id != Self::NONE).then_some(self.id)
    }

    pub(crate) fn len(&self) -> usize {
        (self.end - self.start) as usize
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Whether it holds a full buffer.
    pub(crate) fn is_full(&self, pool: &impl BufferPool) -> bool {
        self.id().is_some() && self.len() == pool.buffer_size()
    }

    /// Free bytes in the held buffer (0 without one).
    pub(crate) fn room(&self, pool: &impl BufferPool) -> usize {
        self.id().map_or(0, |_| pool.buffer_size() - self.len())
    }

    /// Borrows a buffer if none is held; `false` when the pool has none.
    pub(crate) fn ensure(&mut self, pool: &mut impl BufferPool) -> bool {
        if self.id().is_some() {
            return true;
        }
        match pool.take() {
            Some(id) => {
                *self = Self { id, start: 0, end: 0 };
                true
            }
            None => false,
        }
    }

    /// Gives the buffer back if it is empty.
    pub(crate) fn release_if_empty(&mut self, pool: &mut impl BufferPool) {
        if self.is_empty() {
            self.clear(pool);
        }
    }

    /// Drops the data and gives the buffer back.
    pub(crate) fn clear(&mut self, pool: &mut impl BufferPool) {
        if let Some(id) = self.id() {
            pool.give(id);
        }
        *self = Self::none();
    }

    /// The data.
    pub(crate) fn data<'p>(&self, pool: &'p impl BufferPool) -> &'p [u8] {
        match self.id() {
            Some(id) => &pool.get(id)[self.start as usize..self.end as usize],
            None => &[],
        }
    }

    /// Moves the data to the front of its buffer (so that all the room is
    /// one run after it).
    pub(crate) fn compact(&mut self, pool: &mut impl BufferPool) {
        if let Some(id) = self.id()
            && self.start > 0
        {
            let (start, end) = (self.start as usize, self.end as usize);
            pool.get_mut(id).copy_within(start..end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }

    /// The free run after the data (compact first), empty without a buffer.
    pub(crate) fn free_mut<'p>(&mut self, pool: &'p mut impl BufferPool) -> &'p mut [u8] {
        self.compact(pool);
        match self.id() {
            Some(id) => &mut pool.get_mut(id)[self.end as usize..],
            None => &mut [],
        }
    }

    /// The data of `self` and the free run of `out` (both compacted), at once.
    pub(crate) fn data_and_free<'p>(
        &mut self,
        out: &mut Held,
        pool: &'p mut impl BufferPool,
    ) -> (&'p mut [u8], &'p mut [u8]) {
        out.compact(pool);
        match (self.id(), out.id()) {
            (Some(a), Some(b)) => {
                let (input, output) = pool.pair_mut(a, b);
                (
                    &mut input[self.start as usize..self.end as usize],
                    &mut output[out.end as usize..],
                )
            }
            (Some(a), None) => {
                (&mut pool.get_mut(a)[self.start as usize..self.end as usize], &mut [])
            }
            (None, Some(b)) => (&mut [], &mut pool.get_mut(b)[out.end as usize..]),
            (None, None) => (&mut [], &mut []),
        }
    }

    /// Marks `n` bytes after the data as filled.
    pub(crate) fn fill(&mut self, n: usize) {
        debug_assert!(self.id().is_some() || n == 0);
        self.end += n as u32;
    }

    /// Drops `n` bytes from the front (at most what it holds); gives the
    /// buffer back once it is empty.
    pub(crate) fn consume(&mut self, n: usize, pool: &mut impl BufferPool) {
        self.start = (self.start + n as u32).min(self.end);
        self.release_if_empty(pool);
    }
}
