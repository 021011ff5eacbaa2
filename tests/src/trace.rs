//! The text record of a run: every input, output, log record and peer action, one line each,
//! stamped with simulated time. Two runs of one seed must print the same trace byte for byte.

use crate::clock::Ms;
use std::collections::VecDeque;
use std::fmt::{self, Write as _};
use std::time::Duration;

/// How many lines a failure report shows.
pub const TAIL: usize = 120;

#[derive(Debug)]
pub struct Trace {
    /// Every line, when the whole trace is wanted (determinism test, `SIM_TRACE`).
    all: Option<Vec<String>>,
    /// The last lines, for failure reports.
    tail: VecDeque<String>,
    /// FNV-1a over every line, so that runs can be compared without keeping them.
    digest: u64,
    lines: u64,
}

impl Trace {
    pub fn new(keep_all: bool) -> Self {
        Trace {
            all: keep_all.then(Vec::new),
            tail: VecDeque::with_capacity(TAIL),
            digest: 0xcbf2_9ce4_8422_2325,
            lines: 0,
        }
    }

    pub fn push(&mut self, at: Duration, args: fmt::Arguments<'_>) {
        let mut line = String::with_capacity(64);
        let _ = write!(line, "[{:>12}] {args}", Ms(at).to_string());
        self.digest = fnv(self.digest, line.as_bytes());
        self.digest = fnv(self.digest, b"\n");
        self.lines += 1;
        if let Some(all) = &mut self.all {
            all.push(line.clone());
        }
        if self.tail.len() == TAIL {
            self.tail.pop_front();
        }
        self.tail.push_back(line);
    }

    pub fn digest(&self) -> u64 {
        self.digest
    }

    pub fn len(&self) -> u64 {
        self.lines
    }

    pub fn is_empty(&self) -> bool {
        self.lines == 0
    }

    /// The whole trace, if it was kept.
    pub fn lines(&self) -> Option<&[String]> {
        self.all.as_deref()
    }

    /// The last lines, for a failure message.
    pub fn tail(&self) -> String {
        let mut out = String::new();
        if self.lines > self.tail.len() as u64 {
            let _ = writeln!(
                out,
                "  … {} earlier lines",
                self.lines - self.tail.len() as u64
            );
        }
        for line in &self.tail {
            let _ = writeln!(out, "  {line}");
        }
        out
    }
}

pub fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Bytes as a short printable string: escaped in full when short, else a prefix, the length
/// and a digest of the whole.
pub struct Bytes<'a>(pub &'a [u8]);

impl fmt::Display for Bytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOW: usize = 72;
        let b = self.0;
        if b.len() <= SHOW {
            write!(f, "{}B \"{}\"", b.len(), b.escape_ascii())
        } else {
            write!(
                f,
                "{}B \"{}\"…(fnv {:016x})",
                b.len(),
                b[..48].escape_ascii(),
                fnv(0xcbf2_9ce4_8422_2325, b)
            )
        }
    }
}
