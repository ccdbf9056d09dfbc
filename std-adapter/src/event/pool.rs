//! Storage that follows use: buffers allocated the first time they are
//! lent, and connection slots made the first time they are needed.

use std::collections::VecDeque;

use sockserv_core::driver::{BufId, BufferPool, SlotStorage, pair_mut};

/// The std event mode's buffer pool: up to `max_buffers` buffers of
/// `buffer_size` bytes, each allocated the first time it is lent. A
/// buffer given back is kept for the next connection while fewer than
/// `keep` are free; beyond that it is freed, so that memory shrinks back
/// after a burst. Nothing is allocated for buffers never lent.
#[derive(Debug)]
pub struct LazyPool {
    bufs: Vec<Option<Box<[u8]>>>,
    /// Ids free to lend (their buffer may have been freed: allocated again
    /// when lent).
    free: VecDeque<BufId>,
    /// How many free ids still hold their buffer.
    kept: usize,
    keep: usize,
    size: usize,
    max: usize,
}

impl LazyPool {
    /// A pool of at most `max_buffers` buffers of `buffer_size` bytes,
    /// keeping at most `keep` free buffers allocated.
    pub fn new(buffer_size: usize, max_buffers: usize, keep: usize) -> Self {
        let max = max_buffers.min(BufId::MAX as usize - 1);
        Self { bufs: Vec::new(), free: VecDeque::new(), kept: 0, keep, size: buffer_size, max }
    }

    /// How many buffers are lent now.
    pub fn lent(&self) -> usize {
        self.bufs.len() - self.free.len()
    }

    /// How many buffers are allocated now (lent or kept).
    pub fn allocated(&self) -> usize {
        self.lent() + self.kept
    }

    fn buf(&self, id: BufId) -> &[u8] {
        self.bufs[id as usize].as_deref().expect("a lent buffer is allocated")
    }
}

impl BufferPool for LazyPool {
    fn buffer_size(&self) -> usize {
        self.size
    }

    fn take(&mut self) -> Option<BufId> {
        let id = match self.free.pop_back() {
            Some(id) => id,
            None if self.bufs.len() < self.max => {
                self.bufs.push(None);
                (self.bufs.len() - 1) as BufId
            }
            None => return None,
        };
        let slot = &mut self.bufs[id as usize];
        if slot.is_some() {
            self.kept -= 1;
        } else {
            *slot = Some(vec![0; self.size].into_boxed_slice());
        }
        Some(id)
    }

    fn give(&mut self, id: BufId) {
        debug_assert!(self.bufs[id as usize].is_some(), "buffer {id} given back twice");
        if self.kept < self.keep {
            self.kept += 1;
            // Kept ones are lent first (the back of `free` is taken first).
            self.free.push_back(id);
        } else {
            self.bufs[id as usize] = None;
            self.free.push_front(id);
        }
    }

    fn free(&self) -> usize {
        self.free.len() + (self.max - self.bufs.len())
    }

    fn get(&self, id: BufId) -> &[u8] {
        self.buf(id)
    }

    fn get_mut(&mut self, id: BufId) -> &mut [u8] {
        self.bufs[id as usize].as_deref_mut().expect("a lent buffer is allocated")
    }

    fn pair_mut(&mut self, a: BufId, b: BufId) -> (&mut [u8], &mut [u8]) {
        let (a, b) = pair_mut(&mut self.bufs, a as usize, b as usize);
        let lent = "a lent buffer is allocated";
        (a.as_deref_mut().expect(lent), b.as_deref_mut().expect(lent))
    }
}

/// Slot storage for the std event mode: a vector that grows as
/// connections arrive, up to the table's capacity (a slot is small; the
/// buffers are in the pool).
#[derive(Debug)]
pub struct GrowSlots<T> {
    slots: Vec<T>,
    max: usize,
}

impl<T> GrowSlots<T> {
    /// Storage for at most `max` slots, none made yet.
    pub fn new(max: usize) -> Self {
        Self { slots: Vec::new(), max }
    }
}

impl<T> SlotStorage<T> for GrowSlots<T> {
    fn slots(&self) -> &[T] {
        &self.slots
    }
    fn slots_mut(&mut self) -> &mut [T] {
        &mut self.slots
    }
    fn max_slots(&self) -> usize {
        self.max
    }
    fn push(&mut self, item: T) -> Result<(), T> {
        if self.slots.len() >= self.max {
            return Err(item);
        }
        self.slots.push(item);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_allocated_when_lent_and_freed_beyond_keep() {
        let mut pool = LazyPool::new(1024, 3, 1);
        assert_eq!(pool.allocated(), 0, "nothing before the first use");
        let a = pool.take().unwrap();
        let b = pool.take().unwrap();
        let c = pool.take().unwrap();
        assert!(pool.take().is_none() && pool.free() == 0, "at most 3");
        assert_eq!(pool.allocated(), 3);
        pool.get_mut(a)[0] = 7;
        pool.give(a);
        pool.give(b);
        pool.give(c);
        assert_eq!((pool.lent(), pool.allocated()), (0, 1), "one kept, two freed");
        let again = pool.take().unwrap();
        assert_eq!(again, a, "the kept buffer is lent first");
        assert_eq!(pool.get(again)[0], 7);
        let (x, y) = (pool.take().unwrap(), pool.take().unwrap());
        assert_eq!(pool.allocated(), 3);
        let (bx, by) = pool.pair_mut(x, y);
        assert_eq!((bx.len(), by.len()), (1024, 1024));
    }
}
