//! The stop sequence of a server: its stdin is closed, SIGTERM follows exactly
//! `shutdown_grace` later, SIGKILL exactly `shutdown_grace` after that, unless it exited
//! meanwhile; after its exit its process group gets SIGKILL. To the nanosecond of simulated
//! time.

use mcp_relay_core::{Config, ConnId, Endpoint, ExitStatus, Input, Output, Signal};
use mcp_relay_tests::{run_seeds, test_name, Profile, Script, Sim};
use std::cell::Cell;
use std::time::Duration;

/// Random runs where most servers ignore the end of their stdin and SIGTERM: the timing of
/// every signal is checked as it is sent (see `Sim::perform_signal`).
#[test]
fn stubborn_servers_get_term_then_kill_on_time() {
    let full = Cell::new(0usize);
    let default = 80;
    run_seeds(
        test_name!("stubborn_servers_get_term_then_kill_on_time"),
        default,
        |seed, keep| Sim::new(seed, Profile::stubborn(), keep),
        |sim| {
            let n = sim
                .children
                .values()
                .filter(|c| c.stop.term_at.is_some() && c.stop.kill_at.is_some())
                .count();
            full.set(full.get() + n);
            Ok(())
        },
    );
    if mcp_relay_tests::runner::seeds(default).len() as u64 >= default {
        assert!(
            full.get() > 0,
            "no server went through the whole sequence: vacuous"
        );
    }
}

fn script(grace: Duration) -> Script {
    Script::new(Config {
        shutdown_grace: grace,
        ping_interval: None,
        ..Config::default()
    })
}

/// A server that ignores the end of its stdin and SIGTERM.
#[test]
fn a_stubborn_server_gets_term_then_kill_exactly_on_time() {
    let grace = Duration::from_millis(2500);
    let mut s = script(grace);
    let child = s.accept(1);
    s.spawned(child);
    s.advance(Duration::from_millis(7));
    let out = s.input(Input::Eof {
        from: Endpoint::Conn(ConnId(1)),
    });
    assert!(out.contains(&Output::Close {
        endpoint: Endpoint::Child(child)
    }));
    let closed = s.now();
    s.advance(Duration::from_secs(60));
    assert_eq!(
        s.signals(),
        [
            (closed + grace, child, Signal::Term),
            (closed + 2 * grace, child, Signal::Kill)
        ],
        "{}",
        s.show()
    );
    // Its exit is reported: the group gets SIGKILL, the session ends once its output ends.
    let out = s.input(Input::Exited {
        child,
        status: ExitStatus::Signal(9),
    });
    assert!(out.contains(&Output::Signal {
        child,
        signal: Signal::Kill
    }));
    s.input(Input::StderrEof { child });
    let out = s.input(Input::Eof {
        from: Endpoint::Child(child),
    });
    assert!(out.contains(&Output::Release { child }), "{}", s.show());
}

/// A server that leaves on SIGTERM gets no SIGKILL before its exit.
#[test]
fn a_server_that_leaves_on_term_gets_no_kill() {
    let grace = Duration::from_millis(300);
    let mut s = script(grace);
    let child = s.accept(1);
    s.spawned(child);
    s.input(Input::Eof {
        from: Endpoint::Conn(ConnId(1)),
    });
    s.advance(grace);
    assert_eq!(s.signals(), [(grace, child, Signal::Term)]);
    s.advance(Duration::from_millis(299));
    s.input(Input::Exited {
        child,
        status: ExitStatus::Signal(15),
    });
    s.advance(Duration::from_secs(5));
    let kills: Vec<_> = s
        .signals()
        .into_iter()
        .filter(|(_, _, sig)| *sig == Signal::Kill)
        .collect();
    assert_eq!(
        kills,
        [(2 * grace - Duration::from_millis(1), child, Signal::Kill)]
    );
}

/// Regression test (fixed) for `term-before-stdin-closed` (core/src/session.rs, `Link::client_gone` calls
/// `child.stop(now)` at once while `to_child.close_when_flushed` closes stdin only once the
/// queue is written; core/src/child.rs, `Child::stop` starts the SIGTERM timer): a server
/// still reading the client's last requests gets SIGTERM `shutdown_grace` after the client
/// left, before its stdin was even closed.
#[test]
fn term_comes_a_grace_after_stdin_is_closed_not_before() {
    let grace = Duration::from_millis(100);
    let mut s = script(grace);
    let child = s.accept(1);
    s.spawned(child);
    // A notification: a request would keep stdin open until answered (--drain-timeout).
    let request = format!(
        "{{\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{{\"blob\":\"{}\"}}}}\n",
        "q".repeat(1000)
    );
    s.client_data(1, request.as_bytes());
    s.input(Input::Eof {
        from: Endpoint::Conn(ConnId(1)),
    });
    // The server reads 10 bytes every 20 ms.
    let mut left = request.len();
    let mut closed = None;
    while left > 0 {
        s.advance(Duration::from_millis(20));
        let n = left.min(10);
        left -= n;
        let out = s.written(Endpoint::Child(child), n);
        if out.contains(&Output::Close {
            endpoint: Endpoint::Child(child),
        }) {
            closed = Some(s.now());
        }
    }
    let closed = closed.expect("stdin is closed once the queue is written");
    s.advance(Duration::from_secs(5));
    let term = s
        .signals()
        .into_iter()
        .find(|(_, _, sig)| *sig == Signal::Term)
        .map(|(t, _, _)| t);
    assert_eq!(
        term,
        Some(closed + grace),
        "stdin was closed at {closed:?}; SIGTERM must follow exactly shutdown_grace later\n{}",
        s.show()
    );
}

/// Regression test (fixed) for `zero-grace-deadline-not-after-now` (core/src/child.rs, `Child::handle_timeout`
/// fires one stage per call and sets the next deadline to `now + grace`): with
/// `--shutdown-grace 0`, after `handle_timeout(now)` sent SIGTERM, `poll_timeout()` is `now`
/// itself, a deadline that is not after the one just handled.
#[test]
fn with_no_grace_the_deadline_after_a_timeout_is_later_than_now() {
    let mut s = script(Duration::ZERO);
    let child = s.accept(1);
    s.spawned(child);
    s.input(Input::Eof {
        from: Endpoint::Conn(ConnId(1)),
    });
    let out = s.timeout_now();
    assert!(out.contains(&Output::Signal {
        child,
        signal: Signal::Term
    }));
    let now = s.clock.now();
    let next = s.relay.poll_timeout();
    assert!(
        next.is_none_or(|d| d > now),
        "after handle_timeout(now), poll_timeout() must be None or later than now; it is now \
         ({:?})",
        s.relay.next_deadline().map(|(_, why)| why)
    );
}
