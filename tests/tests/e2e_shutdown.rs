//! End to end: Ctrl-C. The first SIGINT drains the sessions and exits 0; a second one stops at
//! once and exits 130. Either way no server survives the relay.

mod common;

use common::{live_group_members, wait_group_gone, Closed, Relay, DEADLINE};
use std::time::{Duration, Instant};

#[test]
fn sigint_drains_open_sessions_and_exits_zero() {
    let mut relay = Relay::demo();
    let mut clients: Vec<_> = (0..2).map(|_| relay.connect()).collect();
    for c in &mut clients {
        c.initialize();
    }
    let children = relay.wait_children(2, DEADLINE);
    relay.signal(libc::SIGINT);
    let status = relay
        .wait_exit(DEADLINE)
        .unwrap_or_else(|| panic!("the relay did not exit; its log:\n{}", relay.log_text()));
    assert!(status.success(), "{status:?}; log:\n{}", relay.log_text());
    relay.wait_log("shutting down: draining 2 session(s)", DEADLINE);
    relay.wait_log("stopped", DEADLINE);
    assert_eq!(relay.log_count("session ended"), 2);
    for c in &mut clients {
        assert_eq!(c.expect_closed(), Closed::Eof);
    }
    for child in &children {
        let left = live_group_members(child.pgrp);
        assert!(left.is_empty(), "a server survived the relay: {left:#?}");
    }
    // Nothing listens any more.
    assert!(std::net::TcpStream::connect(relay.addr).is_err());
}

#[test]
fn second_sigint_stops_at_once() {
    let mut relay = Relay::builder()
        .demo()
        .args(["--shutdown-grace", "30s"])
        .start();
    let mut polite = relay.connect();
    polite.initialize();
    let mut stubborn = relay.connect();
    stubborn.initialize();
    let children = relay.wait_children(2, DEADLINE);
    for child in &children {
        relay.track_group(child.pgrp);
    }
    // This server will ignore end of file on its stdin: only a signal ends it. `hang` goes
    // in the same write as an echo, so once the echo is answered the relay has read (and
    // handed on) the hang too, before the SIGINT stops it reading from the client.
    stubborn.send_raw(
        concat!(
            r#"{"jsonrpc":"2.0","id":"e","method":"tools/call","params":{"name":"echo","arguments":{"message":"m"}}}"#,
            "\n",
            r#"{"jsonrpc":"2.0","id":"h","method":"tools/call","params":{"name":"hang"}}"#,
            "\n"
        )
        .as_bytes(),
    );
    let resp = stubborn.read_json();
    assert_eq!(resp["id"], "e", "{resp}");

    relay.signal(libc::SIGINT);
    relay.wait_log("shutting down: draining", DEADLINE);
    // The polite server leaves on end of file; the hung one would keep the relay for 30 s.
    relay.wait_log_count("session ended", 1, DEADLINE);
    assert!(
        relay.is_running(),
        "the relay exited while a server was still running"
    );

    let start = Instant::now();
    relay.signal(libc::SIGINT);
    let status = relay.wait_exit(Duration::from_secs(3)).unwrap_or_else(|| {
        panic!(
            "still running 3 s after the second SIGINT; log:\n{}",
            relay.log_text()
        )
    });
    let took = start.elapsed();
    assert!(took < Duration::from_secs(3), "took {took:?}");
    // Sessions were cut off: the status says so (130, as a shell reports Ctrl-C).
    assert_eq!(
        status.code(),
        Some(130),
        "{status:?}; log:\n{}",
        relay.log_text()
    );
    relay.wait_log("shutting down now", DEADLINE);
    for child in &children {
        wait_group_gone(child.pgrp, Duration::from_secs(3))
            .unwrap_or_else(|p| panic!("a server survived the relay: {p:#?}"));
    }
    let closed = stubborn.read_to_close().1;
    assert!(matches!(closed, Closed::Eof | Closed::Reset));
}
