//! Micro-benchmark of the core's framing: `LineFramer` (and `classify`) on randomly
//! fragmented input, in GB/s.

use mcp_relay_core::message::classify;
use mcp_relay_core::stream_check::StreamCheck;
use mcp_relay_core::{Flow, Frame, LineFramer};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// A small deterministic PRNG (splitmix64), so every run fragments the same way.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Newline-delimited JSON-RPC requests whose payloads average about `avg` bytes.
fn corpus(rng: &mut Rng, total: usize, avg: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(total + avg * 2);
    let mut id = 0u64;
    while out.len() < total {
        id += 1;
        let len = 1 + rng.below(avg * 2);
        let text: String = (0..len).map(|i| (b'a' + (i % 26) as u8) as char).collect();
        out.extend_from_slice(
            format!(
                r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"echo","arguments":{{"message":"{text}"}}}}}}"#
            )
            .as_bytes(),
        );
        out.push(b'\n');
    }
    out
}

/// Cuts `data` into chunks of random size up to `max_chunk`.
fn fragments(rng: &mut Rng, data: &[u8], max_chunk: usize) -> Vec<(usize, usize)> {
    let mut cuts = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let n = (1 + rng.below(max_chunk)).min(data.len() - at);
        cuts.push((at, at + n));
        at += n;
    }
    cuts
}

/// Runs `f` repeatedly for about `budget` and returns the median seconds per run.
fn median_secs(budget: Duration, mut f: impl FnMut()) -> f64 {
    let mut times = Vec::new();
    let start = Instant::now();
    while start.elapsed() < budget || times.len() < 5 {
        let t = Instant::now();
        f();
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

pub fn run(budget: Duration) -> String {
    let mut out = String::from("| benchmark | payload | median throughput |\n|---|---|---|\n");
    for (avg, max_chunk) in [(64, 4096), (1024, 65536), (65536, 65536)] {
        let mut rng = Rng(42);
        let data = corpus(&mut rng, 32 << 20, avg);
        let cuts = fragments(&mut rng, &data, max_chunk);
        let secs = median_secs(budget, || {
            let mut framer = LineFramer::new(16 << 20);
            let mut lines = 0usize;
            for &(a, b) in &cuts {
                framer.push(&data[a..b], |f| {
                    if let Frame::Line(l) = f {
                        lines += l.len();
                    }
                    Flow::Continue
                });
            }
            black_box(lines);
        });
        out += &format!(
            "| framing, chunks ≤ {max_chunk} B | ~{avg} B messages | {:.2} GB/s |\n",
            data.len() as f64 / secs / 1e9
        );
        let secs = median_secs(budget, || {
            let mut framer = LineFramer::new(16 << 20);
            let mut n = 0usize;
            for &(a, b) in &cuts {
                framer.push(&data[a..b], |f| {
                    if let Frame::Line(l) = f {
                        n += usize::from(classify(l).is_ok());
                    }
                    Flow::Continue
                });
            }
            black_box(n);
        });
        out += &format!(
            "| framing + classification | ~{avg} B messages | {:.2} GB/s |\n",
            data.len() as f64 / secs / 1e9
        );
    }
    out += &long_lines(budget);
    out
}

/// `StreamCheck` (pieces of 64 KiB) against `classify` on two 10 MiB lines: one long string,
/// and many small objects.
fn long_lines(budget: Duration) -> String {
    let size = 10 << 20;
    let blob: String = (0..size).map(|i| (b'A' + (i % 26) as u8) as char).collect();
    let mut items = String::from("[");
    while items.len() < size {
        items.push_str(r#"{"name":"file \u00e9 name","size":12345,"tags":["a","b"],"ok":true},"#);
    }
    items.push_str("null]");
    let lines = [
        (
            "one 10 MiB string",
            format!(r#"{{"jsonrpc":"2.0","id":1,"result":{{"data":"{blob}"}}}}"#),
        ),
        (
            "10 MiB of small objects",
            format!(r#"{{"jsonrpc":"2.0","id":1,"result":{items}}}"#),
        ),
    ];
    let mut out = String::new();
    for (what, line) in &lines {
        let line = line.as_bytes();
        let secs = median_secs(budget, || {
            black_box(classify(black_box(line)).is_ok());
        });
        out += &format!(
            "| classify, whole line | {what} | {:.2} GB/s |\n",
            line.len() as f64 / secs / 1e9
        );
        let secs = median_secs(budget, || {
            let mut check = StreamCheck::new();
            for piece in line.chunks(64 << 10) {
                check.feed(black_box(piece));
            }
            black_box(check.finish().is_ok());
        });
        out += &format!(
            "| StreamCheck, 64 KiB pieces | {what} | {:.2} GB/s |\n",
            line.len() as f64 / secs / 1e9
        );
    }
    out
}
