//! A one-way byte stream between a simulated peer and the driver: a socket direction or a
//! child's stdout/stderr. The writer appends; the driver reads it in random chunks.
//!
//! Not modelled: capacity. A pipe never blocks its writer (a real pipe holds 64 KiB and then
//! blocks the child); backpressure in the simulation comes from the relay pausing its reads.

#[derive(Debug, Default)]
pub struct Pipe {
    data: Vec<u8>,
    /// How much of `data` the reader has taken.
    read: usize,
    /// Bytes taken before the last compaction.
    dropped: usize,
    /// The writer closed its end: end of file once the data is read.
    pub closed: bool,
    /// The reader saw the end of file.
    pub eof_seen: bool,
    /// A read event is scheduled for this pipe.
    pub scheduled: bool,
}

impl Pipe {
    pub fn write(&mut self, bytes: &[u8]) {
        assert!(!self.closed, "write after close");
        self.data.extend_from_slice(bytes);
    }

    /// Bytes written and not yet read.
    pub fn pending(&self) -> usize {
        self.data.len() - self.read
    }

    /// Total bytes the reader has taken.
    pub fn taken(&self) -> usize {
        self.dropped + self.read
    }

    /// Total bytes ever written.
    pub fn written(&self) -> usize {
        self.dropped + self.data.len()
    }

    /// Reads up to `n` bytes.
    pub fn take(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.pending());
        let out = self.data[self.read..self.read + n].to_vec();
        self.read += n;
        if self.read > 64 * 1024 && self.read * 2 > self.data.len() {
            self.dropped += self.read;
            self.data.drain(..self.read);
            self.read = 0;
        }
        out
    }

    /// The end of file is the next thing the reader sees.
    pub fn at_eof(&self) -> bool {
        self.closed && self.pending() == 0 && !self.eof_seen
    }

    /// Throws away what was not read (a reset connection).
    pub fn discard(&mut self) {
        self.dropped += self.data.len();
        self.data.clear();
        self.read = 0;
    }
}
