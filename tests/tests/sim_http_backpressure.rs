//! Streamable HTTP under backpressure: marks (`max_buffered`) from below one answer up, slow
//! readers; no session stalls, every call is answered.

use mcp_relay_core::{Config, ConnId, Endpoint};
use mcp_relay_tests::script::http_post;
use mcp_relay_tests::{run_seeds, test_name, HttpProfile, HttpSim, Script};
use std::time::Duration;

/// `max_buffered` of 1 KiB or 8 KiB, answers up to 2 KB, slow readers: every session's calls
/// complete.
#[test]
fn small_max_buffered_does_not_stall_sessions() {
    run_seeds(
        test_name!("small_max_buffered_does_not_stall_sessions"),
        200,
        |seed, keep| HttpSim::new(seed, HttpProfile::small_buffers(), keep),
        |_| Ok(()),
    );
}

fn conn(n: u64) -> Endpoint {
    Endpoint::Conn(ConnId(n))
}

/// Bug (core/src/relay.rs, `Relay::with_session`, with core/src/session.rs,
/// `Link::child_frame` and `Session::settle`): an answer that brings the HTTP outbox above
/// `max_buffered` stops the child framer (`Flow::Stop`), leaving the rest of that read (here
/// the answer to request 3) in its backlog, and `settle` pauses the child's stdout.
/// `with_session` runs `settle` *before* `http_deliver` empties the outbox, and nothing
/// settles the session again: a plain JSON reply leaves its connection in `Head` state with
/// its stream forgotten, so `http_written` does not touch the session. The backlog and the
/// pause stay for good: request 3 is never answered, and the session stalls until some new
/// request happens to settle it (the default mark is 4 MiB: one tool result above it does
/// this). Fix: in `with_session`, settle again after `http_deliver` while it moved messages
/// out (loop until the outbox stays empty), or have `http_written` re-settle the session of
/// any connection that carried one of its responses. Fixed in 066a813; seeded
/// form: `small_max_buffered_does_not_stall_sessions`.
#[test]
fn an_answer_above_max_buffered_does_not_stall_its_session() {
    let mut s = Script::new(Config {
        max_buffered: 1024,
        ..Config::default()
    });
    let (sid, child) = s.open_http_session();
    // Two calls, on two connections; the server gets both.
    s.accept_http(2);
    let call = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"big"}}"#;
    s.client_data(2, http_post(Some(&sid), call).as_bytes());
    s.accept_http(3);
    let call = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"small"}}"#;
    s.client_data(3, http_post(Some(&sid), call).as_bytes());
    let to_child = s.sent_to(Endpoint::Child(child)).len();
    s.written(Endpoint::Child(child), to_child);
    // One read of the server's stdout: the answer to 2, above the mark, then the answer to 3.
    let read = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{{\"text\":\"{}\"}}}}\n{}\n",
        "x".repeat(2000),
        r#"{"jsonrpc":"2.0","id":3,"result":{"text":"small"}}"#
    );
    s.child_data(child, read.as_bytes());
    let sent = s.sent_to(conn(2));
    assert!(
        String::from_utf8_lossy(&sent).starts_with("HTTP/1.1 200"),
        "the answer to 2 goes out as JSON"
    );
    // The client reads all of it; time passes.
    s.written(conn(2), sent.len());
    s.advance(Duration::from_secs(60));
    let to3 = String::from_utf8_lossy(&s.sent_to(conn(3))).into_owned();
    assert!(
        to3.contains(r#""text":"small""#),
        "the 2000-byte answer to 2 was delivered and written in full a minute ago, yet the \
         answer to 3, read from the server in the same read, never reached conn 3 (the relay \
         keeps it and the server's stdout paused)\nconn 3 got: {to3:?}\noutputs:\n{}",
        s.show()
    );
}

/// Regression (issue 8, "Bounded, everywhere"): POSTed messages wait for the server's queue
/// as TCP lines do. A server that reads nothing more after `initialize`; the client POSTs
/// notifications of 8 KiB, one after another on one keep-alive connection, each after the
/// answer to the previous one. Once the server's queue is full, a notification waits (its
/// 202 with it) and the next connection's would be refused with 503: what the relay
/// accepted stays within `buffer_bound()`. (It used to answer all 100 with 202 and hold
/// about 820 KiB against a bound of 211 KiB.)
#[test]
fn posted_notifications_wait_for_a_server_that_does_not_read() {
    let mut s = Script::new(Config {
        max_buffered: 1024,
        max_message_size: 16 * 1024,
        ..Config::default()
    });
    let bound = s.relay.buffer_bound();
    let (sid, child) = s.open_http_session();
    // The server read `initialize`; from now on it reads nothing.
    let to_child = s.sent_to(Endpoint::Child(child)).len();
    s.written(Endpoint::Child(child), to_child);
    s.accept_http(2);
    let note = format!(
        r#"{{"jsonrpc":"2.0","method":"notifications/message","params":{{"data":"{}"}}}}"#,
        "x".repeat(8 * 1024)
    );
    let mut accepted = 0usize;
    for _ in 0..100 {
        let before = s.sent_to(conn(2)).len();
        s.client_data(2, http_post(Some(&sid), &note).as_bytes());
        let answer = s.sent_to(conn(2))[before..].to_vec();
        s.written(conn(2), answer.len());
        if !answer.starts_with(b"HTTP/1.1 202") {
            break;
        }
        accepted += note.len() + 1;
    }
    // Nothing of them was written to the server: the relay holds everything it accepted.
    assert!(
        accepted <= bound,
        "the relay accepted {accepted} bytes of notifications (202) for a server that reads \
         nothing: it holds them, more than buffer_bound() = {bound}"
    );
}
