//! Newline-delimited framing: one JSON-RPC message per line.
//!
//! The framer never holds more than `max` bytes of one line. A longer line is not buffered: it
//! is skipped up to its newline while a streaming scanner looks for its top-level `"id"`, so
//! that the sender can still be answered.

use crate::message::{IdScanner, RawId};
use memchr::memchr;

/// What the framer found in the bytes it was given.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A complete line, without its `\n` or `\r\n`. Never blank.
    Line(&'a [u8]),
    /// The bytes so far of a line that is not complete yet and holds at least the framer's
    /// `early` bytes ([`EARLY`] unless set): the whole partial line from its start, or from
    /// where the consumer last took it ([`Flow::Taken`]), each time more arrives. Its last
    /// byte may be the `\r` of the line's end. The consumer may forward them ahead of the
    /// line's end (cut-through); a [`Frame::Line`] (nothing taken), [`Frame::End`] (taken)
    /// or [`Frame::Oversize`] ends the line.
    Partial(&'a [u8]),
    /// The end of a line whose start the consumer took ([`Flow::Taken`]): the bytes after
    /// what it took, without the newline or a final `\r` (possibly empty). Never skipped.
    End(&'a [u8]),
    /// A line longer than the limit was discarded. `len` is its length; `id` is the top-level
    /// JSON-RPC id it carried, when one could be found.
    Oversize {
        /// Bytes in the line, without its newline.
        len: usize,
        /// Its top-level `"id"`, when the scanner found one.
        id: Option<RawId>,
    },
}

/// What the consumer of a frame wants next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Hand out the next frame.
    Continue,
    /// Stop here: keep the rest for [`LineFramer::resume`] (the consumer is loaded).
    Stop,
    /// Answering a [`Frame::Partial`]: the consumer has used its bytes but the last
    /// [`held_back`] ones and the framer drops them; what comes next of the line is handed
    /// out from those on, and its end as [`Frame::End`].
    Taken,
}

/// Splits a byte stream into lines, with a bound on the length of one line.
///
/// A consumer that is loaded can stop the framer between two lines; the bytes not yet framed
/// wait in a backlog (at most what was pushed since) until [`LineFramer::resume`].
#[derive(Debug)]
pub struct LineFramer {
    buf: Vec<u8>,
    max: usize,
    early: usize,
    /// Bytes of the current line the consumer took (no longer held).
    taken: usize,
    discard: Option<Discard>,
    backlog: Vec<u8>,
}

#[derive(Debug)]
struct Discard {
    len: usize,
    scanner: IdScanner,
}

/// Length from which, by default, the bytes of an incomplete line are handed out as
/// [`Frame::Partial`] ([`crate::Config::cut_through_from`]).
pub const EARLY: usize = 64 * 1024;

/// Capacity above which the partial-line buffer is released once it is empty again, so that one
/// large message does not pin memory for the rest of the session.
const KEEP_CAPACITY: usize = 64 * 1024;

impl LineFramer {
    /// A framer that accepts lines of at most `max` bytes (at least 1).
    pub fn new(max: usize) -> Self {
        Self::with_early(max, EARLY)
    }

    /// A framer that also hands out incomplete lines once they hold `early` bytes
    /// ([`Frame::Partial`]; `usize::MAX`: never).
    pub fn with_early(max: usize, early: usize) -> Self {
        LineFramer {
            buf: Vec::new(),
            max: max.max(1),
            early: early.max(1),
            taken: 0,
            discard: None,
            backlog: Vec::new(),
        }
    }

    /// Bytes held: an incomplete line and the backlog.
    pub fn buffered(&self) -> usize {
        self.buf.len() + self.backlog.len()
    }

    /// Bytes pushed but not framed yet because the consumer stopped.
    pub fn has_backlog(&self) -> bool {
        !self.backlog.is_empty()
    }

    /// Frames the backlog, until done or the consumer stops again.
    pub fn resume(&mut self, f: impl FnMut(Frame<'_>) -> Flow) {
        let backlog = std::mem::take(&mut self.backlog);
        self.push(&backlog, f);
        if self.backlog.capacity() < backlog.capacity() && self.backlog.is_empty() {
            // Keep nothing large around once it is framed.
            self.backlog = Vec::new();
        }
    }

    /// The bytes of a line not yet ended by a newline, if any (what end of file cut off).
    pub fn has_partial(&self) -> bool {
        !self.buf.is_empty() || self.discard.is_some() || self.taken > 0
    }

    /// Feeds bytes in; calls `f` for every line they complete, in order, until it says stop.
    pub fn push(&mut self, mut data: &[u8], mut f: impl FnMut(Frame<'_>) -> Flow) {
        if !self.backlog.is_empty() {
            // Order: what waits is framed first.
            self.backlog.extend_from_slice(data);
            return;
        }
        let mut flow = Flow::Continue;
        while !data.is_empty() {
            if flow == Flow::Stop {
                self.backlog.extend_from_slice(data);
                return;
            }
            let newline = memchr(b'\n', data);
            if let Some(d) = &mut self.discard {
                let end = newline.unwrap_or(data.len());
                d.scanner.feed(&data[..end]);
                d.len += end;
                match newline {
                    None => return,
                    Some(i) => {
                        data = &data[i + 1..];
                        if let Some(d) = self.discard.take() {
                            flow = f(Frame::Oversize {
                                len: d.len,
                                id: d.scanner.finish(),
                            });
                        }
                        continue;
                    }
                }
            }
            let Some(i) = newline else {
                // A `\r` may be the first half of the line's `\r\n`: it does not count.
                let cr = usize::from(data.last() == Some(&b'\r'));
                if self.taken + self.buf.len() + data.len() > self.max + cr {
                    self.start_discard(data);
                } else {
                    self.buf.extend_from_slice(data);
                    if (self.taken > 0 || self.buf.len() >= self.early)
                        && f(Frame::Partial(&self.buf)) == Flow::Taken
                    {
                        self.take();
                    }
                }
                return;
            };
            let part = &data[..i];
            data = &data[i + 1..];
            let ends_in_cr = match part.last() {
                Some(b) => *b == b'\r',
                None => self.buf.last() == Some(&b'\r'),
            };
            if self.taken + self.buf.len() + part.len() > self.max + usize::from(ends_in_cr) {
                self.start_discard(part);
                if let Some(d) = self.discard.take() {
                    flow = f(Frame::Oversize {
                        len: d.len,
                        id: d.scanner.finish(),
                    });
                }
            } else if self.taken > 0 {
                self.buf.extend_from_slice(part);
                let rest = self.buf.strip_suffix(b"\r").unwrap_or(&self.buf);
                flow = f(Frame::End(rest));
                self.taken = 0;
                self.clear();
            } else if self.buf.is_empty() {
                flow = emit(part, &mut f);
            } else {
                self.buf.extend_from_slice(part);
                flow = emit(&self.buf, &mut f);
                self.clear();
            }
        }
    }

    fn start_discard(&mut self, data: &[u8]) {
        let mut scanner = IdScanner::default();
        scanner.feed(&self.buf);
        scanner.feed(data);
        self.discard = Some(Discard {
            len: self.taken + self.buf.len() + data.len(),
            scanner,
        });
        self.taken = 0;
        self.clear();
    }

    /// The consumer took the partial line: drop it, but for what it held back.
    fn take(&mut self) {
        let keep = held_back(&self.buf);
        let start = self.buf.len() - keep;
        self.taken += start;
        self.buf.drain(..start);
    }

    fn clear(&mut self) {
        self.buf.clear();
        if self.buf.capacity() > KEEP_CAPACITY {
            self.buf = Vec::new();
        }
    }
}

/// How many bytes at the end of a partial line a consumer must not forward yet: the last
/// (the line's last byte may be the one that makes the line whole, and a line refused at
/// its end must reach the receiver cut short, never whole), and the one before it too when
/// the last is a `\r` (which may be half of the line's `\r\n`, not part of the line).
pub fn held_back(partial: &[u8]) -> usize {
    match partial {
        [] => 0,
        [.., b'\r'] => partial.len().min(2),
        _ => 1,
    }
}

fn emit(line: &[u8], f: &mut impl FnMut(Frame<'_>) -> Flow) -> Flow {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        Flow::Continue
    } else {
        f(Frame::Line(line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `chunks` through a framer with limit `max` and renders what came out.
    fn check(max: usize, chunks: &[&str], expect: &[&str]) {
        let mut framer = LineFramer::new(max);
        let mut got = Vec::new();
        for chunk in chunks {
            framer.push(chunk.as_bytes(), |frame| {
                got.push(match frame {
                    Frame::Partial(p) => format!("partial {}", p.len()),
                    Frame::End(r) => format!("end {}", String::from_utf8_lossy(r)),
                    Frame::Line(l) => String::from_utf8_lossy(l).into_owned(),
                    Frame::Oversize { len, id } => {
                        format!("oversize {len} {}", id.as_ref().map_or("-", |i| i.as_str()))
                    }
                });
                Flow::Continue
            });
        }
        assert_eq!(got, expect);
    }

    #[test]
    fn hands_out_long_partial_lines_from_their_start() {
        let mut framer = LineFramer::new(4 * EARLY);
        let mut got = Vec::new();
        let piece = vec![b'x'; EARLY / 2];
        let mut record = |frame: Frame<'_>| {
            got.push(match frame {
                Frame::Partial(p) => {
                    format!("partial {} {}", p.len(), p.iter().all(|b| *b == b'x'))
                }
                Frame::Line(l) => format!("line {}", l.len()),
                Frame::End(r) => format!("end {}", r.len()),
                Frame::Oversize { len, .. } => format!("oversize {len}"),
            });
            Flow::Continue
        };
        framer.push(&piece, &mut record);
        framer.push(&piece, &mut record);
        framer.push(b"xx\r", &mut record);
        framer.push(b"\n", &mut record);
        // Past the limit: partials stop there, the line is discarded.
        for _ in 0..9 {
            framer.push(&piece, &mut record);
        }
        framer.push(b"\n", &mut record);
        let early = EARLY;
        assert_eq!(
            got,
            [
                format!("partial {early} true"),
                format!("partial {} false", early + 3),
                format!("line {}", early + 2),
                format!("partial {early} true"),
                format!("partial {} true", early + early / 2),
                format!("partial {} true", 2 * early),
                format!("partial {} true", 2 * early + early / 2),
                format!("partial {} true", 3 * early),
                format!("partial {} true", 3 * early + early / 2),
                format!("partial {} true", 4 * early),
                format!("oversize {}", 4 * early + early / 2),
            ]
        );
    }

    #[test]
    fn a_taken_line_goes_on_from_its_last_byte_and_ends_with_its_rest() {
        let mut framer = LineFramer::with_early(20, 4);
        let mut got = Vec::new();
        let mut take = |frame: Frame<'_>| {
            let (text, flow) = match frame {
                Frame::Partial(p) => (
                    format!("partial {}", String::from_utf8_lossy(p)),
                    Flow::Taken,
                ),
                Frame::End(r) => (
                    format!("end {}", String::from_utf8_lossy(r)),
                    Flow::Continue,
                ),
                Frame::Line(l) => (
                    format!("line {}", String::from_utf8_lossy(l)),
                    Flow::Continue,
                ),
                Frame::Oversize { len, .. } => (format!("oversize {len}"), Flow::Continue),
            };
            got.push(text);
            flow
        };
        framer.push(b"ab", &mut take);
        framer.push(b"cd", &mut take);
        framer.push(b"ef\r", &mut take);
        framer.push(b"\ngh\n", &mut take);
        // 20 bytes in all (12 taken, then 8 more): the limit, and the line ends there.
        framer.push(b"0123456789ab", &mut take);
        framer.push(b"cdefghij\r\n", &mut take);
        framer.push(b"0123456789abcdefghijk\n", &mut take);
        assert_eq!(
            got,
            [
                "partial abcd",
                "partial def\r",
                // "abc" and "de" were taken ("f\r" held back): the line ends with "f".
                "end f",
                "line gh",
                "partial 0123456789ab",
                "end bcdefghij",
                "oversize 21",
            ]
        );
        assert!(!framer.has_partial());
    }

    #[test]
    fn splits_lines() {
        check(100, &["a\nb\n"], &["a", "b"]);
        check(100, &["a", "b\n", "c"], &["ab"]);
        check(100, &["a\r\n\r\n  \nb\r", "\n"], &["a", "b"]);
        check(100, &["", "\n", "x\n"], &["x"]);
    }

    #[test]
    fn limit_is_inclusive() {
        check(3, &["abc\n"], &["abc"]);
        check(3, &["abc\r\n"], &["abc"]);
        check(3, &["ab", "c\n"], &["abc"]);
        check(3, &["abc\r", "\n"], &["abc"]);
        check(3, &["ab", "c\r", "\n"], &["abc"]);
        check(3, &["abcd\r", "\n"], &["oversize 5 -"]);
        check(3, &["abcd\n"], &["oversize 4 -"]);
        check(3, &["ab", "cd", "ef\nok\n"], &["oversize 6 -", "ok"]);
    }

    #[test]
    fn oversize_keeps_the_id() {
        check(
            10,
            &[
                r#"{"method":"x","params":{"id":7,"#,
                r#""a":"}\""},"id":"q\"1"}"#,
                "\n{}\n",
            ],
            &[r#"oversize 54 "q\"1""#, "{}"],
        );
        check(5, &[r#"[{"id":1}]"#, "\n"], &["oversize 10 -"]);
        check(
            5,
            &[r#"{"id":12345"#, r#"6,"x":1}"#, "\n"],
            &["oversize 19 123456"],
        );
    }

    /// A consumer that takes one line, then stops.
    fn take_one(got: &mut Vec<String>) -> impl FnMut(Frame<'_>) -> Flow + '_ {
        let mut first = true;
        move |f: Frame<'_>| {
            if let Frame::Line(l) = f {
                got.push(String::from_utf8_lossy(l).into_owned());
            }
            if std::mem::take(&mut first) {
                Flow::Stop
            } else {
                Flow::Continue
            }
        }
    }

    #[test]
    fn a_stopped_consumer_resumes_where_it_stopped() {
        let mut framer = LineFramer::new(100);
        let mut got = Vec::new();
        framer.push(b"a\nb\nc", take_one(&mut got));
        assert_eq!(got, ["a"]);
        assert!(framer.has_backlog());
        framer.push(b"\nd\n", |_| Flow::Continue);
        assert_eq!(got, ["a"], "nothing overtakes the backlog");
        framer.resume(take_one(&mut got));
        assert_eq!(got, ["a", "b"]);
        framer.resume(|f| {
            if let Frame::Line(l) = f {
                got.push(String::from_utf8_lossy(l).into_owned());
            }
            Flow::Continue
        });
        assert_eq!(got, ["a", "b", "c", "d"]);
        assert!(!framer.has_backlog());
        assert_eq!(framer.buffered(), 0);
    }

    #[test]
    fn releases_large_buffers() {
        let mut framer = LineFramer::new(1 << 20);
        let big = vec![b'x'; 200_000];
        framer.push(&big, |_| Flow::Continue);
        assert_eq!(framer.buffered(), 200_000);
        framer.push(b"\n", |_| Flow::Continue);
        assert_eq!(framer.buffered(), 0);
        assert!(framer.buf.capacity() <= KEEP_CAPACITY);
    }
}
