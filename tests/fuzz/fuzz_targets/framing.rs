//! `LineFramer` (with its id scanner for oversize lines) against a plain reference splitter.
//!
//! Input: byte 0 picks the line limit (1..=32) and the length from which partial lines are
//! handed out (never, 1, 2, or about half the limit), byte 1 seeds how the rest is cut into
//! reads, when the consumer says `Stop` and when it takes a partial line; the rest is the
//! stream. A taken line is put together again from its pieces and its end. Checked: every line within the
//! limit comes out exactly once, in order, unchanged; no line is longer than the limit; every
//! longer line is reported as oversize with its length; an id found in an oversize line is a
//! valid JSON-RPC id; the framer holds at most one line's worth beyond its backlog.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mcp_relay_core::{held_back, Flow, Frame, LineFramer};

#[derive(Debug, PartialEq, Eq)]
enum Out {
    Line(Vec<u8>),
    Oversize(usize),
}

/// What the framer should report for a stream: complete lines only (a tail without a newline
/// is not a line yet); `\r\n` ends a line like `\n`; blank lines are skipped; a line longer
/// than `max` (not counting a final `\r`) is oversize, with its length including that `\r`.
fn reference(max: usize, stream: &[u8]) -> Vec<Out> {
    let mut out = Vec::new();
    let mut lines: Vec<&[u8]> = stream.split(|b| *b == b'\n').collect();
    lines.pop(); // the unfinished tail
    for raw in lines {
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.len() > max {
            out.push(Out::Oversize(raw.len()));
        } else if !line.iter().all(u8::is_ascii_whitespace) {
            out.push(Out::Line(line.to_vec()));
        }
    }
    out
}

/// A tiny deterministic generator for the cuts.
struct Cuts(u32);

impl Cuts {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 17;
        self.0 ^= self.0 << 5;
        self.0
    }
}

fuzz_target!(|data: &[u8]| {
    let [max, seed, stream @ ..] = data else {
        return;
    };
    let early = match max >> 5 {
        0 => usize::MAX,
        1 => 1,
        2 => 2,
        _ => usize::from(max % 32) / 2 + 1,
    };
    let max = usize::from(max % 32) + 1;
    let mut cuts = Cuts(u32::from(*seed).wrapping_mul(2_654_435_761) | 1);
    let mut framer = LineFramer::with_early(max, early);
    let mut got = Vec::new();
    // What the consumer took of the current line.
    let mut taken: Vec<u8> = Vec::new();
    // Stop after a frame with probability 1/4 (none when the seed is even).
    let stops = seed & 1 == 1;
    let consume = |frame: Frame<'_>, cuts: &mut Cuts, got: &mut Vec<Out>, taken: &mut Vec<u8>| {
        match frame {
            Frame::Partial(p) => {
                assert!(!p.is_empty(), "an empty partial line");
                assert!(taken.len() + p.len() <= max + 1, "a partial line past the limit");
                assert!(!p.contains(&b'\n'), "a partial line with a newline");
                if !taken.is_empty() || p.len() >= early {
                    if cuts.next().is_multiple_of(2) {
                        // Take all but what must be held back, as the framer drops.
                        taken.extend_from_slice(&p[..p.len() - held_back(p)]);
                        return Flow::Taken;
                    }
                    return Flow::Continue;
                }
                panic!("a partial line of {} bytes before {early}", p.len());
            }
            Frame::End(rest) => {
                assert!(!taken.is_empty(), "an end without a taken start");
                let mut line = std::mem::take(taken);
                line.extend_from_slice(rest);
                assert!(line.len() <= max, "a line of {} bytes, limit {max}", line.len());
                // Blank lines are the consumer's to skip when it took their start.
                if !line.iter().all(u8::is_ascii_whitespace) {
                    got.push(Out::Line(line));
                }
            }
            Frame::Line(l) => {
                assert!(taken.is_empty(), "a whole line after a taken start");
                assert!(l.len() <= max, "a line of {} bytes, limit {max}", l.len());
                got.push(Out::Line(l.to_vec()));
            }
            Frame::Oversize { len, id } => {
                taken.clear();
                assert!(len > max, "oversize of {len} bytes, limit {max}");
                if let Some(id) = id {
                    let v: serde_json::Value =
                        serde_json::from_str(id.as_str()).unwrap_or_else(|e| {
                            panic!("scanned id {:?} is not JSON: {e}", id.as_str())
                        });
                    assert!(v.is_string() || v.is_number(), "scanned id {v}");
                }
                got.push(Out::Oversize(len));
            }
        }
        if stops && cuts.next().is_multiple_of(4) {
            Flow::Stop
        } else {
            Flow::Continue
        }
    };
    let mut rest = stream;
    while !rest.is_empty() {
        let n = (cuts.next() as usize % (2 * max + 3) + 1).min(rest.len());
        let (read, tail) = rest.split_at(n);
        rest = tail;
        framer.push(read, |f| consume(f, &mut cuts, &mut got, &mut taken));
        // A consumer that stopped comes back before the next read half of the time.
        if framer.has_backlog() && cuts.next().is_multiple_of(2) {
            framer.resume(|f| consume(f, &mut cuts, &mut got, &mut taken));
        }
        if !framer.has_backlog() {
            assert!(
                framer.buffered() <= max + 1,
                "{} bytes held, limit {max}",
                framer.buffered()
            );
        }
    }
    while framer.has_backlog() {
        framer.resume(|f| consume(f, &mut cuts, &mut got, &mut taken));
    }
    assert_eq!(got, reference(max, stream));
});
