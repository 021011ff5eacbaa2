//! Slow and stalled readers on both sides, tiny queues and few requests in flight: the relay
//! pauses the side that feeds a loaded queue, resumes it when the queue drains, and never
//! holds more than `buffer_bound()` for a session (invariant 3).

use mcp_relay_core::{ChildId, Config, ConnId, Endpoint, ExitStatus, Input, Output};
use mcp_relay_tests::{run_seeds, test_name, Profile, Script, Sim};
use std::time::Duration;

#[test]
fn slow_readers_keep_every_queue_bounded() {
    run_seeds(
        test_name!("slow_readers_keep_every_queue_bounded"),
        80,
        |seed, keep| Sim::new(seed, Profile::backpressure(), keep),
        |_| Ok(()),
    );
}

fn paused_conn(out: &[Output]) -> bool {
    out.iter().any(|o| {
        matches!(
            o,
            Output::Pause {
                endpoint: Endpoint::Conn(_)
            }
        )
    })
}

/// Regression test (fixed) for `relay-errors-exceed-bound` (core/src/session.rs, `Link::update_pauses`): the
/// relay's own answers to malformed lines go to the client queue, but a loaded client queue
/// only pauses the *server*. A client that writes malformed lines and reads nothing makes the
/// relay hold its errors without limit.
#[test]
fn a_client_that_writes_garbage_and_never_reads_stays_bounded() {
    let mut s = Script::new(Config {
        max_message_size: 256,
        max_buffered: 1024,
        ..Config::default()
    });
    let child = s.accept(1);
    s.spawned(child);
    let bound = s.relay.buffer_bound();
    for i in 0..2000 {
        let out = s.client_data(1, b"not json at all\n");
        let held = s.relay.buffered(ConnId(1)).expect("the session exists");
        assert!(
            held <= bound,
            "after {} malformed lines from a client that reads nothing, the relay holds {held} \
             bytes for it; buffer_bound() is {bound}",
            i + 1
        );
        if paused_conn(&out) {
            // The driver stops reading: the relay kept its bound.
            return;
        }
    }
}

/// Regression test (fixed) for `multi-line-read-exceeds-bound` (core/src/outbound.rs, module doc and
/// `relay.rs`, `buffer_bound`): a queue under its mark takes a whole read, which may hold
/// many lines, not "one message". With `--max-message-size 128` and the runtime's 64 KiB
/// reads, one read of a chatty server's output is held whole for a client that does not read.
#[test]
fn one_read_of_many_lines_stays_within_the_bound() {
    let mut s = Script::new(Config {
        max_message_size: 128,
        max_buffered: 128,
        ..Config::default()
    });
    let child = s.accept(1);
    s.spawned(child);
    let mut read = Vec::new();
    for i in 0..40 {
        read.extend_from_slice(
            format!(r#"{{"jsonrpc":"2.0","method":"notifications/message","params":{{"n":{i}}}}}"#)
                .as_bytes(),
        );
        read.push(b'\n');
    }
    s.child_data(child, &read);
    let held = s.relay.buffered(ConnId(1)).expect("the session exists");
    let bound = s.relay.buffer_bound();
    assert!(
        held <= bound,
        "one {}-byte read of 40 short lines: the relay holds {held} bytes for a client that \
         reads nothing; buffer_bound() is {bound}",
        read.len()
    );
}

/// Regression test (fixed) for `drain-deadline-ignores-own-pause` (core/src/child.rs, `Child::exited` sets
/// `drain_deadline` whatever the pause; `handle_timeout` gives up on the output): after a
/// server exits, the relay waits `shutdown_grace` for the rest of its stdout, even when the
/// relay itself paused that stdout because the client reads slowly. The server's answers,
/// written before it exited, are then thrown away and the client gets -32003 instead.
#[test]
fn answers_in_a_paused_pipe_survive_the_exit_of_their_server() {
    let mut s = Script::new(Config {
        max_buffered: 64,
        shutdown_grace: Duration::from_millis(100),
        ping_interval: None,
        ..Config::default()
    });
    let conn = Endpoint::Conn(ConnId(1));
    let child: ChildId = s.accept(1);
    s.spawned(child);
    let requests = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"a\"}\n{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"b\"}\n";
    s.client_data(1, requests);
    s.written(Endpoint::Child(child), requests.len());
    // The answer to 1 fills the client's queue: the relay pauses the server's stdout, where
    // the answer to 2 now waits.
    let answer1 = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{{\"text\":\"{}\"}}}}\n",
        "x".repeat(100)
    );
    let out = s.child_data(child, answer1.as_bytes());
    assert!(
        out.contains(&Output::Pause {
            endpoint: Endpoint::Child(child)
        }),
        "the loaded client queue pauses the server: {out:?}"
    );
    // The server exits; its stderr ends. Its stdout still holds the answer to 2.
    s.input(Input::Exited {
        child,
        status: ExitStatus::Code(0),
    });
    s.input(Input::StderrEof { child });
    s.advance(Duration::from_secs(1));
    let to_client = String::from_utf8_lossy(&s.sent_to(conn)).into_owned();
    assert!(
        !to_client.contains("\"id\":2,\"error\""),
        "the answer to request 2 waits in a pipe the relay paused; the relay must not give up \
         on it and answer -32003 instead:\n{to_client}\n{}",
        s.show()
    );
    // Once the client reads, the relay reads the server's stdout again.
    let out = s.written(conn, answer1.len());
    assert!(
        out.contains(&Output::Resume {
            endpoint: Endpoint::Child(child)
        }),
        "{}",
        s.show()
    );
}

/// Regression test (fixed) for `backlog-answers-dropped-at-session-end` (core/src/session.rs, `Session::settle`:
/// in `Phase::Ended` the client queue is set to `close_when_flushed` *before* the client
/// backlog is resumed "so that what the client sent still gets its answers"; the -32000
/// answers are then staged into a closing queue and dropped). Requests the relay read but held
/// back while the server's queue was loaded never get an answer when the session ends.
#[test]
fn requests_held_back_by_backpressure_are_answered_when_the_session_ends() {
    let mut s = Script::new(Config {
        max_buffered: 16,
        restart: mcp_relay_core::RestartPolicy::Never,
        ping_interval: None,
        ..Config::default()
    });
    let conn = Endpoint::Conn(ConnId(1));
    let child = s.accept(1);
    s.spawned(child);
    // Three requests in one read: the first loads the server's queue, the others wait.
    let mut read = Vec::new();
    for id in 1..=3 {
        read.extend_from_slice(
            format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"tools/list\"}}\n").as_bytes(),
        );
    }
    s.client_data(1, &read);
    // The server exits without reading anything; the session ends (--restart never).
    s.input(Input::Exited {
        child,
        status: ExitStatus::Code(0),
    });
    s.input(Input::StderrEof { child });
    s.input(Input::Eof {
        from: Endpoint::Child(child),
    });
    let told = String::from_utf8_lossy(&s.sent_to(conn)).into_owned();
    for id in 1..=3 {
        assert!(
            told.contains(&format!("\"id\":{id},\"error\"")),
            "request {id} was read by the relay and must get exactly one answer when the \
             session ends; the client got:\n{told}\n{}",
            s.show()
        );
    }
}
