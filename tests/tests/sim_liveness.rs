//! Servers that hang, read slowly or go quiet. The relay probes a quiet server and declares
//! it hung only when it really is: a hung server is stopped at once (SIGTERM, SIGKILL after
//! the grace), its requests get -32003, and nothing it says afterwards reaches the client.

use mcp_relay_core::{Config, Endpoint, Output};
use mcp_relay_tests::{run_seeds, test_name, Profile, Script, Sim};
use std::cell::Cell;
use std::time::Duration;

#[test]
fn hung_servers_are_found_and_others_are_left_alone() {
    let hung = Cell::new(0);
    run_seeds(
        test_name!("hung_servers_are_found_and_others_are_left_alone"),
        80,
        |seed, keep| Sim::new(seed, Profile::liveness(), keep),
        |sim| {
            hung.set(
                hung.get()
                    + sim
                        .children
                        .values()
                        .filter(|c| c.drv.declared_hung)
                        .count(),
            );
            Ok(())
        },
    );
    if mcp_relay_tests::runner::seeds(80).len() > 20 {
        assert!(
            hung.get() > 0,
            "no run found a hung server: the test is vacuous"
        );
    }
}

fn term_or_kill(out: &[Output]) -> bool {
    out.iter().any(|o| matches!(o, Output::Signal { .. }))
}

/// Regression (`hang-verdict-ignores-own-pause`): no hang verdict while the relay itself has
/// paused the server's stdout (its client reads slowly): an answer to a probe would wait in
/// the paused pipe, so a healthy server would be killed and its requests failed.
#[test]
fn a_server_whose_stdout_the_relay_paused_is_not_declared_hung() {
    let mut s = Script::new(Config {
        max_buffered: 64,
        ping_interval: Some(Duration::from_millis(100)),
        ping_timeout: Duration::from_millis(300),
        ..Config::default()
    });
    let child = s.accept(1);
    s.spawned(child);
    // A notification fills the client's queue (the client does not read): the relay pauses
    // the server's stdout.
    let note = format!(
        "{{\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{{\"text\":\"{}\"}}}}\n",
        "x".repeat(150)
    );
    let out = s.child_data(child, note.as_bytes());
    assert!(out.contains(&Output::Pause {
        endpoint: Endpoint::Child(child)
    }));
    // Time passes with the server's stdout paused.
    let out = s.advance(Duration::from_millis(100));
    let probe: usize = out
        .iter()
        .filter_map(|o| match o {
            Output::Send {
                to: Endpoint::Child(_),
                data,
            } => Some(data.len()),
            _ => None,
        })
        .sum();
    // The relay may probe it, or (as it does) not judge a server it is not reading at all.
    if probe > 0 {
        s.written(Endpoint::Child(child), probe);
    }
    let out = s.advance(Duration::from_secs(2));
    assert!(
        !term_or_kill(&out),
        "the server answered the probe; its answer waits in the stdout the relay paused. It \
         must not be declared hung:\n{}",
        s.show()
    );
}

/// Regression test (fixed) for `hang-verdict-while-probe-queued` (core/src/session.rs, `liveness_timeout`: the
/// probe's deadline starts when it is staged): a server busy reading a large request, slowly
/// but steadily, is probed; the probe waits behind the request in its stdin, and the relay
/// declares it hung `ping_timeout` later, before the server could even read the probe.
#[test]
fn a_server_still_reading_its_input_is_not_declared_hung() {
    let mut s = Script::new(Config {
        ping_interval: Some(Duration::from_millis(100)),
        ping_timeout: Duration::from_millis(300),
        ..Config::default()
    });
    let child = s.accept(1);
    s.spawned(child);
    let request = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{{\"blob\":\"{}\"}}}}\n",
        "y".repeat(4000)
    );
    s.client_data(1, request.as_bytes());
    let mut queued = request.len();
    // The server reads 100 bytes every 50 ms: it makes progress all along.
    for _ in 0..40 {
        let out = s.advance(Duration::from_millis(50));
        queued += out
            .iter()
            .filter_map(|o| match o {
                Output::Send {
                    to: Endpoint::Child(_),
                    data,
                } => Some(data.len()),
                _ => None,
            })
            .sum::<usize>();
        assert!(
            !term_or_kill(&out),
            "the server is still reading its input (and the probe behind it) steadily; it \
             must not be declared hung:\n{}",
            s.show()
        );
        let n = queued.min(100);
        if n == 0 {
            break;
        }
        queued -= n;
        s.written(Endpoint::Child(child), n);
    }
}
