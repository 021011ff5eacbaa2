//! End to end, issue 9 item 3: a server is not started for a client that has already gone.
//! Connect-then-close cycles used to start one server each, and the queue of such starts kept
//! new clients waiting; a start the relay no longer wants is now cancelled.

mod common;

use common::{tool_text, Relay};
use serde_json::json;
use std::net::TcpStream;
use std::time::{Duration, Instant};

#[test]
fn servers_are_not_started_for_clients_that_already_left() {
    const CYCLES: usize = 1000;
    let relay = Relay::demo();
    for _ in 0..CYCLES {
        let s = TcpStream::connect(relay.addr).expect("connect");
        drop(s);
    }
    // A client that stays is served promptly, whatever the queue of starts held.
    let started = Instant::now();
    let mut c = relay.connect();
    c.set_read_timeout(Duration::from_secs(20));
    c.initialize();
    let resp = c.call_tool("echo", json!({"message": "served"}));
    assert_eq!(tool_text(&resp), "served");
    let waited = started.elapsed();
    // Every session that ended has been logged; count the servers that actually ran.
    relay.wait_log_count("session ended", CYCLES, Duration::from_secs(60));
    let ran = relay.log_count("demo server started");
    let cancelled = CYCLES + 1 - ran;
    eprintln!("{CYCLES} clients that left at once: {ran} servers ran, {cancelled} starts cancelled; the next client waited {waited:?}");
    assert!(
        ran < CYCLES / 2,
        "{ran} servers were started for {CYCLES} clients that had already left"
    );
    assert!(
        waited < Duration::from_secs(5),
        "a new client waited {waited:?} behind starts nobody wanted"
    );
    drop(c);
    relay.wait_children(0, Duration::from_secs(20));
    assert!(relay.zombies().is_empty(), "zombies left");
}
