//! Dropped event streams resume with `GET /mcp` and `Last-Event-ID`: the rest of the stream,
//! no gap, no repeat — also when the stream's end was handed to the driver and not written.

use mcp_relay_core::{Config, ConnId, Endpoint, Input};
use mcp_relay_tests::http_client::LOCAL;
use mcp_relay_tests::script::http_post;
use mcp_relay_tests::{run_seeds, test_name, HttpProfile, HttpSim, Script};

/// The client drops most slow calls' streams mid-way (end of file or reset), then resumes each
/// with `GET /mcp` and `Last-Event-ID` (sometimes twice); it also drops streams whose last
/// event the relay handed to the driver and the driver has not written (formerly the separate
/// family `dropped_streams_resume_even_when_their_end_was_not_written`).
#[test]
fn dropped_streams_resume_with_last_event_id() {
    run_seeds(
        test_name!("dropped_streams_resume_with_last_event_id"),
        60,
        |seed, keep| HttpSim::new(seed, HttpProfile::resumption(), keep),
        |_| Ok(()),
    );
}

fn conn(n: u64) -> Endpoint {
    Endpoint::Conn(ConnId(n))
}

/// Bug (core/src/http/mod.rs, `http_stream_send` → `http_end_stream` → `http_finish_stream`):
/// a POST stream is dropped from `streams` (with its replay buffer) as soon as its last event
/// is *staged* on an attached connection, before the driver reports it `Written`. If the
/// connection then breaks with those bytes unwritten, the answer provably never left, yet
/// `GET /mcp` with `Last-Event-ID: <stream>-<last seen>` finds no stream: `http_get` logs
/// "names no stream of this session to resume" and silently opens a fresh GET stream. The
/// client never gets the answer (README: a client whose connection dropped "gets the rest of
/// that stream"). Fixed in 066a813; seeded form: `dropped_streams_resume_with_last_event_id`.
#[test]
fn a_stream_dropped_before_its_end_was_written_can_be_resumed() {
    let mut s = Script::new(Config::default());
    let (sid, child) = s.open_http_session();
    // A call with progress on conn 2: one progress event reaches the client.
    s.accept_http(2);
    let call = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"slow","_meta":{"progressToken":"t"}}}"#;
    s.client_data(2, http_post(Some(&sid), call).as_bytes());
    s.child_data(
        child,
        br#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"t","progress":1}}
"#,
    );
    let seen = String::from_utf8_lossy(&s.sent_to(conn(2))).into_owned();
    let last_id = seen
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .expect("an event id")
        .to_owned();
    s.written(conn(2), seen.len());
    // The answer is handed to the driver; before it is written, the connection breaks.
    s.child_data(
        child,
        br#"{"jsonrpc":"2.0","id":2,"result":{"content":[],"tag":"the-answer"}}
"#,
    );
    s.input(Input::Broken {
        endpoint: conn(2),
        reason: "connection reset by peer",
    });
    // The client resumes after the last event it saw.
    s.accept_http(3);
    let get = format!(
        "GET /mcp HTTP/1.1\r\nHost: {LOCAL}\r\nAccept: text/event-stream\r\nMcp-Session-Id: {sid}\r\nMCP-Protocol-Version: 2025-06-18\r\nLast-Event-ID: {last_id}\r\n\r\n"
    );
    s.client_data(3, get.as_bytes());
    let resumed = String::from_utf8_lossy(&s.sent_to(conn(3))).into_owned();
    assert!(
        resumed.contains("the-answer"),
        "the answer to request 2 was never written to conn 2 (it broke first), and resuming \
         after event {last_id} does not deliver it; conn 3 got:\n{resumed}\noutputs:\n{}",
        s.show()
    );
}

/// An event larger than the whole replay buffer goes out whole on its connection but is not
/// kept for resuming (that would be a second copy of the message): a client that lost it and
/// resumes gets the stream from the next event on, as it would for an event the buffer dropped
/// to make room.
#[test]
fn an_event_larger_than_the_replay_buffer_is_sent_but_not_kept() {
    let mut config = Config::default();
    config.http.replay_buffer = 4096;
    let mut s = Script::new(config);
    let (sid, child) = s.open_http_session();
    s.accept_http(2);
    let call = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"slow","_meta":{"progressToken":"t"}}}"#;
    s.client_data(2, http_post(Some(&sid), call).as_bytes());
    s.child_data(
        child,
        br#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"t","progress":1}}
"#,
    );
    let seen = s.sent_to(conn(2));
    let text = String::from_utf8_lossy(&seen).into_owned();
    let first_id = text
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .expect("an event id")
        .to_owned();
    s.written(conn(2), seen.len());
    // A progress notification of 8 KiB: twice the replay buffer.
    let pad = "p".repeat(8192);
    let big = format!(
        r#"{{"jsonrpc":"2.0","method":"notifications/progress","params":{{"progressToken":"t","progress":2,"message":"{pad}"}}}}"#
    );
    s.child_data(child, format!("{big}\n").as_bytes());
    let stream = first_id.split('-').next().expect("a stream number");
    let event = format!("id: {stream}-2\ndata: {big}\n\n");
    let expected = format!("{:x}\r\n{event}\r\n", event.len());
    let all = s.sent_to(conn(2));
    assert_eq!(
        String::from_utf8_lossy(&all[seen.len()..]),
        expected,
        "the large event goes out as one chunk"
    );
    s.input(Input::Broken {
        endpoint: conn(2),
        reason: "connection reset by peer",
    });
    s.accept_http(3);
    let get = format!(
        "GET /mcp HTTP/1.1\r\nHost: {LOCAL}\r\nAccept: text/event-stream\r\nMcp-Session-Id: {sid}\r\nMCP-Protocol-Version: 2025-06-18\r\nLast-Event-ID: {first_id}\r\n\r\n"
    );
    s.client_data(3, get.as_bytes());
    s.child_data(
        child,
        br#"{"jsonrpc":"2.0","id":2,"result":{"content":[],"tag":"the-answer"}}
"#,
    );
    let resumed = String::from_utf8_lossy(&s.sent_to(conn(3))).into_owned();
    assert!(
        resumed.starts_with("HTTP/1.1 200") && !resumed.contains(&pad),
        "the resumed stream does not replay the event too large to keep; got:\n{resumed}"
    );
    assert!(
        resumed.contains(&format!("id: {stream}-3\n")) && resumed.contains("the-answer"),
        "the stream goes on after it; got:\n{resumed}\noutputs:\n{}",
        s.show()
    );
}
