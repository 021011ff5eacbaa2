//! Sessions that survive their server. A server that crashes, exits or hangs is replaced as
//! the restart policy says, after the backoff (`restart_delay` doubling, at most
//! `max_restart_delay`), at most `max_restarts` times within `restart_window`; one child per
//! session at a time; the replacement gets the client's `initialize` and setup again, what the
//! client sent meanwhile, and the client gets `$/mcp/serverRestarted`. Every request still
//! gets exactly one answer.

use mcp_relay_core::{Config, ConnId, Endpoint, ExitStatus, Input, Output, RestartPolicy};
use mcp_relay_tests::{run_seeds, test_name, Profile, Script, Sim};
use std::cell::Cell;
use std::time::Duration;

#[test]
fn crashed_servers_are_replaced_as_the_policy_says() {
    let restarts = Cell::new(0usize);
    let notices = Cell::new(0usize);
    let default = 80;
    run_seeds(
        test_name!("crashed_servers_are_replaced_as_the_policy_says"),
        default,
        |seed, keep| Sim::new(seed, Profile::restarts(), keep),
        |sim| {
            for side in sim.conns.values() {
                restarts.set(restarts.get() + side.children.len().saturating_sub(1));
                notices.set(notices.get() + side.model.restarted_notices.len());
            }
            Ok(())
        },
    );
    if mcp_relay_tests::runner::seeds(default).len() as u64 >= default {
        assert!(
            restarts.get() > 0 && notices.get() > 0,
            "no restart happened: vacuous"
        );
    }
}

fn crash(s: &mut Script, child: mcp_relay_core::ChildId) -> Vec<Output> {
    let mut out = s.input(Input::Exited {
        child,
        status: ExitStatus::Signal(11),
    });
    out.extend(s.input(Input::StderrEof { child }));
    out.extend(s.input(Input::Eof {
        from: Endpoint::Child(child),
    }));
    out
}

fn spawn_of(out: &[Output]) -> Option<mcp_relay_core::ChildId> {
    out.iter().find_map(|o| match o {
        Output::Spawn { child, .. } => Some(*child),
        _ => None,
    })
}

#[test]
fn backoff_doubles_until_the_budget_is_spent() {
    let delay = Duration::from_millis(100);
    let mut s = Script::new(Config {
        restart: RestartPolicy::OnFailure,
        restart_delay: delay,
        max_restart_delay: Duration::from_secs(10),
        max_restarts: 2,
        restart_window: Duration::from_secs(60),
        ping_interval: None,
        ..Config::default()
    });
    let mut child = s.accept(1);
    s.spawned(child);
    for n in 0..2u32 {
        let out = crash(&mut s, child);
        assert_eq!(spawn_of(&out), None, "no restart before the delay");
        let wait = delay * 2u32.pow(n);
        let out = s.advance(wait - Duration::from_nanos(1));
        assert_eq!(spawn_of(&out), None, "restart {} waits {wait:?}", n + 1);
        let out = s.advance(Duration::from_nanos(1));
        assert!(out.contains(&Output::Release { child }), "{}", s.show());
        child = spawn_of(&out).expect("restarted after the delay");
        s.spawned(child);
    }
    // The budget is spent: the session ends and the connection closes once the client has
    // read what it was told (two restart notices).
    let out = crash(&mut s, child);
    let conn = Endpoint::Conn(ConnId(1));
    let told = s.sent_to(conn).len();
    let out: Vec<_> = out
        .into_iter()
        .chain(s.written(conn, told))
        .chain(s.advance(Duration::from_secs(5)))
        .collect();
    assert_eq!(spawn_of(&out), None);
    assert!(
        out.contains(&Output::Close {
            endpoint: Endpoint::Conn(ConnId(1))
        }),
        "{}",
        s.show()
    );
}

#[test]
fn a_replacement_is_initialized_again_and_gets_what_waited() {
    let mut s = Script::new(Config {
        restart: RestartPolicy::OnFailure,
        restart_delay: Duration::ZERO,
        ping_interval: None,
        ..Config::default()
    });
    let conn = Endpoint::Conn(ConnId(1));
    let first = s.accept(1);
    s.spawned(first);
    let init = br#"{"jsonrpc":"2.0","id":"i","method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{}}}"#;
    let mut lines = init.to_vec();
    lines.extend_from_slice(b"\n{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n");
    s.client_data(1, &lines);
    s.written(Endpoint::Child(first), lines.len());
    s.child_data(
        first,
        b"{\"jsonrpc\":\"2.0\",\"id\":\"i\",\"result\":{\"protocolVersion\":\"2025-06-18\"}}\n",
    );
    let out = crash(&mut s, first);
    let second = spawn_of(&out).expect("restarted at once");
    // While the replacement starts, the client's request waits.
    s.client_data(
        1,
        b"{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"tools/list\"}\n",
    );
    let out = s.spawned(second);
    let replay = s.sent_to(Endpoint::Child(second));
    let replay = String::from_utf8_lossy(&replay);
    assert!(
        replay.contains("\"method\":\"initialize\"") && !replay.contains("tools/list"),
        "the replacement gets initialize first, and the request only after: {replay}\n{out:?}"
    );
    let id = replay
        .split("\"id\":")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .expect("an id")
        .to_owned();
    s.written(Endpoint::Child(second), replay.len());
    s.child_data(
        second,
        format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"result\":{{\"protocolVersion\":\"2025-06-18\"}}}}\n")
            .as_bytes(),
    );
    let all = String::from_utf8_lossy(&s.sent_to(Endpoint::Child(second))).into_owned();
    assert!(
        all.contains("notifications/initialized")
            && all.contains("\"id\":5,\"method\":\"tools/list\""),
        "then initialized and the request that waited: {all}"
    );
    let told = String::from_utf8_lossy(&s.sent_to(conn)).into_owned();
    assert!(told.contains("$/mcp/serverRestarted"), "{told}");
    assert!(
        !told.contains(&id),
        "the answer to the relay's own initialize is not forwarded: {told}"
    );
}
