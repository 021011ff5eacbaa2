//! End to end: what an HTTP client or server can make the relay hold is bounded per session,
//! as README's formulas say. A client that never reads its answers, and a server that never
//! reads its stdin, both meet a relay whose memory stays flat, and nothing is lost.

mod http_support;

use http_support::{head_of, open_session, rss_kib, tool_call, Conn, HttpRelay, MCP_POST};
use serde_json::json;
use std::thread;
use std::time::{Duration, Instant};

/// What the relay may grow to here. README's formula for one session with the flags below
/// (`--max-buffered 1MiB`, `--max-message-size 4MiB`) gives about 24 MiB on top of the
/// relay's own few MiB; the test build is unoptimised and its allocator keeps some slack.
const RSS_LIMIT_KIB: u64 = 48 * 1024;

const FLAGS: [&str; 4] = ["--max-buffered", "1MiB", "--max-message-size", "4MiB"];

/// Samples the relay's RSS for `period`; the highest value seen.
fn peak_rss(pid: i32, period: Duration) -> u64 {
    let end = Instant::now() + period;
    let mut peak = 0;
    while Instant::now() < end {
        peak = peak.max(rss_kib(pid));
        thread::sleep(Duration::from_millis(20));
    }
    peak
}

#[test]
fn unread_answers_are_bounded_per_session_and_all_arrive_once_read() {
    // 48 answers of 2 MiB: 96 MiB if the relay buffered them (the same shape as 80 of
    // 8 MiB with default flags, at a size an unoptimised build moves quickly).
    const CALLS: usize = 48;
    const SIZE: usize = 2 << 20;
    let relay = HttpRelay::builder().demo().args(FLAGS).start();
    let mut setup = relay.connect();
    let session = open_session(&mut setup, "2025-06-18");
    let mut conns: Vec<Conn> = Vec::new();
    for i in 0..CALLS {
        let mut c = relay.connect();
        let body = tool_call(100 + i as i64, "bytes", json!({"n": SIZE})).to_string();
        let mut headers: Vec<(&str, &str)> = MCP_POST.to_vec();
        headers.push(("Mcp-Session-Id", &session));
        c.send("POST", "/mcp", &headers, body.as_bytes());
        conns.push(c);
    }
    // Nobody reads: the relay holds one answer's worth and leaves the rest in the server.
    let peak = peak_rss(relay.pid(), Duration::from_secs(3));
    eprintln!("unread answers: relay RSS peaked at {peak} KiB");
    assert!(
        peak < RSS_LIMIT_KIB,
        "the relay grew to {peak} KiB holding answers nobody reads"
    );
    // Now every client reads: every answer arrives whole.
    let readers: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            thread::spawn(move || {
                c.set_read_timeout(Duration::from_secs(90));
                let resp = c.read_response();
                assert_eq!(resp.status(), 200, "call {i}");
                let msg = resp.messages().pop().expect("an answer");
                let text = msg["result"]["content"][0]["text"]
                    .as_str()
                    .map_or(0, str::len);
                (msg["id"].as_i64(), text)
            })
        })
        .collect();
    let mut ids = Vec::new();
    for r in readers {
        let (id, len) = r.join().expect("a reader");
        assert!(len >= SIZE, "an answer of {len} bytes");
        ids.push(id.expect("an id"));
    }
    ids.sort_unstable();
    let want: Vec<i64> = (100..100 + CALLS as i64).collect();
    assert_eq!(ids, want, "every call answered once");
}

#[test]
fn a_server_that_never_reads_gets_no_more_than_the_bound_and_the_rest_is_refused() {
    const POSTS: usize = 300;
    let relay = HttpRelay::builder().demo().args(FLAGS).start();
    let mut setup = relay.connect();
    let session = open_session(&mut setup, "2025-06-18");
    // The server stops reading stdin and never answers anything again.
    let mut hang = relay.connect();
    let mut headers: Vec<(&str, &str)> = MCP_POST.to_vec();
    headers.push(("Mcp-Session-Id", &session));
    hang.send(
        "POST",
        "/mcp",
        &headers,
        tool_call(2, "hang", json!({})).to_string().as_bytes(),
    );
    thread::sleep(Duration::from_millis(300));
    let payload = "x".repeat(256 << 10);
    let note = json!({"jsonrpc": "2.0", "method": "notifications/message",
                      "params": {"level": "info", "data": payload}})
    .to_string();
    let mut accepted = 0;
    let mut refused = 0;
    let mut waiting = 0;
    let mut peak = 0;
    let base = rss_kib(relay.pid());
    for _ in 0..POSTS {
        let mut c = relay.connect();
        c.send("POST", "/mcp", &headers, note.as_bytes());
        match head_of(c.stream(), Duration::from_millis(250)) {
            Some(head) if head.starts_with("HTTP/1.1 202") => accepted += 1,
            Some(head) if head.starts_with("HTTP/1.1 503") => {
                assert!(
                    head.to_ascii_lowercase().contains("\r\nretry-after:"),
                    "503 without Retry-After: {head}"
                );
                refused += 1;
            }
            Some(head) => panic!("unexpected answer {head}"),
            // Parked: its 202 waits until the server takes input.
            None => waiting += 1,
        }
        peak = peak.max(rss_kib(relay.pid()));
    }
    eprintln!(
        "deaf server: {accepted} accepted, {waiting} waiting, {refused} refused; RSS {base} -> peak {peak} KiB"
    );
    assert!(refused > 0, "nothing was refused");
    assert!(
        accepted + waiting < 12,
        "{accepted} accepted and {waiting} parked: more than --max-buffered allows"
    );
    assert!(
        peak < RSS_LIMIT_KIB,
        "the relay grew to {peak} KiB for a server that reads nothing"
    );
}
