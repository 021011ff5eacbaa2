//! End to end: a listener survives running out of file descriptors. With a low
//! `RLIMIT_NOFILE`, connections are opened until the relay can take no more (its backlog
//! fills); once they are all closed, a new client must be served within seconds.

mod common;

use common::{Client, Relay, DEADLINE};
use serde_json::json;
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Descriptors the relay may hold: a handful of sessions' worth.
const NOFILE: u64 = 48;

#[test]
fn a_listener_recovers_after_descriptor_exhaustion() {
    // Past the descriptor limit on purpose: this is about what happens when accept() fails
    // (the default --max-connections would refuse connections before that).
    let relay = Relay::builder()
        .demo()
        .args(["--max-connections", "100000"])
        .nofile_limit(NOFILE)
        .start();

    // Open connections until one is not even queued by the kernel: the relay stopped
    // accepting and its backlog (128) is full.
    let mut conns = Vec::new();
    let mut backlog_full = false;
    for _ in 0..2000 {
        match TcpStream::connect_timeout(&relay.addr, Duration::from_millis(300)) {
            Ok(s) => conns.push(s),
            Err(_) => {
                backlog_full = true;
                break;
            }
        }
    }
    assert!(
        backlog_full,
        "{} connections were all queued; the relay's log:\n{}",
        conns.len(),
        relay.log_text()
    );
    relay.wait_log("Too many open files", DEADLINE);

    // Every connection goes away; the relay is left with its own few descriptors and a
    // backlog of connections already closed by their clients.
    drop(conns);

    // While the backlog of closed connections drains, a spawn may still find no descriptor
    // (and say so to its client): the client tries again until it is served.
    let start = Instant::now();
    let served = loop {
        let mut client = Client::connect(relay.addr);
        client.set_read_timeout(Duration::from_secs(10));
        let resp = client.request(
            "initialize",
            json!({
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "mcp-relay-e2e", "version": "0"},
            }),
        );
        if resp.get("result").is_some() {
            break true;
        }
        if start.elapsed() > Duration::from_secs(10) {
            break false;
        }
        // Only the relay's own shortage is a reason to try again.
        assert!(
            resp.to_string().contains("Too many open files"),
            "initialize failed: {resp}"
        );
    };
    let took = start.elapsed();
    assert!(
        served && took < Duration::from_secs(10),
        "no new client served after {took:?}; the relay's log:\n{}",
        relay.log_text()
    );
    let warnings = relay.log_count("cannot accept connections on");
    let recoveries = relay.log_count("accepting connections on");
    assert!(warnings >= 1, "no warning; log:\n{}", relay.log_text());
    assert!(
        warnings <= recoveries + 1,
        "more warnings ({warnings}) than episodes ({recoveries} recovered); log:\n{}",
        relay.log_text()
    );
}
