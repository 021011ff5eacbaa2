//! Shutdown. The first request drains: no new connections, no more client input, each
//! server gets the end of its stdin and what it still says reaches its client; the relay is
//! finished once every session is. A second request stops at once: every server gets SIGKILL
//! (one still being spawned as soon as it is), every connection is closed.

use mcp_relay_core::{ConnId, Endpoint, Input, Output, Signal};
use mcp_relay_tests::{run_seeds, test_name, Profile, Script, Sim};

#[test]
fn shutdowns_at_any_moment_leave_nothing_behind() {
    run_seeds(
        test_name!("shutdowns_at_any_moment_leave_nothing_behind"),
        80,
        |seed, keep| Sim::new(seed, Profile::shutdowns(), keep),
        |_| Ok(()),
    );
}

#[test]
fn a_graceful_shutdown_waits_for_the_servers() {
    let mut s = Script::new(Default::default());
    let child = s.accept(1);
    s.spawned(child);
    let out = s.input(Input::Shutdown);
    assert!(out.contains(&Output::StopAccepting));
    assert!(out.contains(&Output::Close {
        endpoint: Endpoint::Child(child)
    }));
    assert!(out.contains(&Output::Pause {
        endpoint: Endpoint::Conn(ConnId(1))
    }));
    assert!(!s.relay.is_finished());
    // A connection accepted in the same instant is closed at once.
    let out = s.input(Input::Accepted {
        conn: ConnId(2),
        local: "127.0.0.1:7000".parse().unwrap(),
        peer: "127.0.0.1:40002".parse().unwrap(),
        transport: mcp_relay_core::Transport::Tcp,
        server: None,
    });
    assert_eq!(
        out,
        [Output::Close {
            endpoint: Endpoint::Conn(ConnId(2))
        }]
    );
    s.input(Input::Exited {
        child,
        status: mcp_relay_core::ExitStatus::Code(0),
    });
    s.input(Input::StderrEof { child });
    let out = s.input(Input::Eof {
        from: Endpoint::Child(child),
    });
    assert!(out.contains(&Output::Release { child }), "{}", s.show());
    assert!(s.relay.is_finished());
}

#[test]
fn a_second_shutdown_kills_every_server_at_once() {
    let mut s = Script::new(Default::default());
    let a = s.accept(1);
    let b = s.accept(2);
    s.spawned(a);
    s.spawned(b);
    s.input(Input::Shutdown);
    let out = s.input(Input::Shutdown);
    for child in [a, b] {
        assert!(out.contains(&Output::Signal {
            child,
            signal: Signal::Kill
        }));
    }
    for conn in [1, 2] {
        assert!(out.contains(&Output::Close {
            endpoint: Endpoint::Conn(ConnId(conn))
        }));
    }
    assert!(s.relay.is_finished());
}

/// Regression test (fixed) for `no-kill-for-child-spawned-after-immediate-shutdown` (core/src/session.rs,
/// `Session::spawned`: a stop requested while spawning starts the graceful sequence;
/// core/src/child.rs, `Child::kill` only records `stop_requested` for a child being
/// spawned): a server whose spawn completes after a second shutdown gets SIGTERM one grace
/// later (without its stdin being closed) instead of SIGKILL at once — and the runtime has
/// already left its loop (`is_finished` is true).
///
/// A client that asked nothing has its server's start cancelled by the first shutdown (the
/// driver must then not start it, or kill it if the start raced); one with a request waiting
/// keeps the start, and then the second shutdown must kill it the moment it is up.
#[test]
fn a_server_spawned_after_an_immediate_shutdown_is_killed_at_once() {
    let mut s = Script::new(Default::default());
    let idle = s.accept(1);
    let out = s.input(Input::Shutdown);
    assert!(
        out.contains(&Output::Cancel { child: idle }),
        "a server nobody waits for is not started:\n{}",
        s.show()
    );
    let mut s = Script::new(Default::default());
    let child = s.accept(1);
    s.client_data(1, b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\n");
    s.input(Input::Shutdown);
    s.input(Input::Shutdown);
    let out = s.spawned(child);
    assert!(
        out.contains(&Output::Signal {
            child,
            signal: Signal::Kill
        }),
        "after an immediate shutdown a server that finishes spawning must get SIGKILL at once; \
         the relay did:\n{}",
        s.show()
    );
}

/// Random runs that shut down with requests in flight, under drain timeouts from none to
/// longer than the run: every invariant holds (each request gets exactly one answer, no
/// restart once draining, the stop sequence on time, nothing left behind).
#[test]
fn drains_with_requests_in_flight_keep_every_invariant() {
    run_seeds(
        test_name!("drains_with_requests_in_flight_keep_every_invariant"),
        80,
        |seed, keep| Sim::new(seed, Profile::drains(), keep),
        |_| Ok(()),
    );
}

/// A request in flight when the drain begins gets its server's answer; only then is the
/// server's stdin closed.
#[test]
fn a_drain_waits_for_the_answer_before_closing_stdin() {
    let mut s = Script::new(Default::default());
    let child = s.accept(1);
    s.spawned(child);
    s.client_data(
        1,
        b"{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"tools/call\"}\n",
    );
    s.written(Endpoint::Child(child), 47);
    let out = s.input(Input::Shutdown);
    assert!(out.contains(&Output::StopAccepting));
    let close = Output::Close {
        endpoint: Endpoint::Child(child),
    };
    assert!(
        !out.contains(&close),
        "stdin closed with a request in flight"
    );
    let out = s.advance(std::time::Duration::from_secs(3));
    assert!(!out.contains(&close), "{}", s.show());
    let out = s.child_data(child, b"{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{}}\n");
    assert!(out.contains(&close), "{}", s.show());
    let to_client = String::from_utf8(s.sent_to(Endpoint::Conn(ConnId(1)))).unwrap();
    assert!(to_client.contains(r#""id":7,"result""#), "{to_client}");
}

/// Past `drain_timeout` the server's stdin is closed; the request it then fails to answer
/// gets an error saying the relay is shutting down.
#[test]
fn past_the_drain_timeout_the_error_says_the_relay_is_shutting_down() {
    let mut s = Script::new(mcp_relay_core::Config {
        drain_timeout: std::time::Duration::from_secs(2),
        ..Default::default()
    });
    let child = s.accept(1);
    s.spawned(child);
    s.client_data(
        1,
        b"{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"tools/call\"}\n",
    );
    s.written(Endpoint::Child(child), 47);
    s.input(Input::Shutdown);
    let out = s.advance(std::time::Duration::from_secs(2));
    assert!(
        out.contains(&Output::Close {
            endpoint: Endpoint::Child(child)
        }),
        "{}",
        s.show()
    );
    s.input(Input::Exited {
        child,
        status: mcp_relay_core::ExitStatus::Code(0),
    });
    s.input(Input::StderrEof { child });
    s.input(Input::Eof {
        from: Endpoint::Child(child),
    });
    let to_client = String::from_utf8(s.sent_to(Endpoint::Conn(ConnId(1)))).unwrap();
    assert!(
        to_client.contains("the relay is shutting down (the server exited with status 0"),
        "{to_client}"
    );
}

/// `request_timeout`: the client gets an error, the server a cancellation; progress for the
/// request restarts its clock.
#[test]
fn a_request_unanswered_in_time_is_answered_and_cancelled() {
    let limit = std::time::Duration::from_secs(1);
    let mut s = Script::new(mcp_relay_core::Config {
        request_timeout: Some(limit),
        ..Default::default()
    });
    let child = s.accept(1);
    s.spawned(child);
    s.client_data(
        1,
        b"{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"tools/call\",\"params\":{\"_meta\":{\"progressToken\":\"t\"}}}\n",
    );
    s.advance(std::time::Duration::from_millis(800));
    s.child_data(
        child,
        b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progressToken\":\"t\",\"progress\":1}}\n",
    );
    s.advance(std::time::Duration::from_millis(800));
    let to_client = String::from_utf8(s.sent_to(Endpoint::Conn(ConnId(1)))).unwrap();
    assert!(
        !to_client.contains("--request-timeout"),
        "cut off despite progress: {to_client}"
    );
    s.advance(std::time::Duration::from_millis(200));
    let to_client = String::from_utf8(s.sent_to(Endpoint::Conn(ConnId(1)))).unwrap();
    assert!(
        to_client.contains(r#""id":7,"error":{"code":-32001"#)
            && to_client.contains("--request-timeout"),
        "{to_client}"
    );
    let to_server = String::from_utf8(s.sent_to(Endpoint::Child(child))).unwrap();
    assert!(
        to_server.contains(r#""method":"notifications/cancelled","params":{"requestId":7"#),
        "{to_server}"
    );
    // The server's late answer is dropped: one answer per request.
    s.child_data(child, b"{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{}}\n");
    let to_client = String::from_utf8(s.sent_to(Endpoint::Conn(ConnId(1)))).unwrap();
    assert_eq!(to_client.matches(r#""id":7"#).count(), 1, "{to_client}");
}
