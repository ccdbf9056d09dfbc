/// A fixed buffer of `N` bytes holding a run of data (`start..end`),
/// compacted when the free tail runs out.
#[derive(Debug)]
pub struct Buf<const N: usize> {
    bytes: [u8; N],
    start: usize,
    end: usize,
}

impl<const N: usize> Default for Buf<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Buf<N> {
    /// An empty buffer.
    pub const fn new() -> Self {
        Self { bytes: [0; N], start: 0, end: 0 }
    }

    /// The data.
    pub fn data(&self) -> &[u8] {
        &self.bytes[self.start..self.end]
    }

    /// How many bytes it holds.
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// How many more bytes fit.
    pub fn room(&self) -> usize {
        N - self.len()
    }

    /// The free space after the data: all of [`room`](Self::room) (the
    /// data is moved to the front first when it does not start there).
    pub fn free_mut(&mut self) -> &mut [u8] {
        if self.start > 0 {
            self.bytes.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.bytes[self.end..]
    }

    /// Marks `n` bytes of [`free_mut`](Self::free_mut) as filled.
    pub fn fill(&mut self, n: usize) {
        self.end = (self.end + n).min(N);
    }

    /// Drops `n` bytes from the front.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Empties the buffer.
    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }
}
