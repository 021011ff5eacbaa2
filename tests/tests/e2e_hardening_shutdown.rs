//! End to end: a second Ctrl-C stops the relay at once, even with many servers still waiting
//! to be started, and says so in its exit status.

mod common;

use common::{Relay, DEADLINE};
use std::fs;
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

/// Connections that fit in the relay's listen backlog (128) while it does not accept.
const BACKLOG: usize = 120;
/// Rounds of them: far more sessions than the spawner starts before the signals come.
const ROUNDS: usize = 6;

/// The live processes whose command line contains `marker` (zombies are dead already).
fn live_with_marker(marker: &str) -> Vec<i32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.windows(marker.len()).any(|w| w == marker.as_bytes()))
        })
        .filter(|pid| common::read_proc(*pid).is_some_and(|p| p.state != 'Z'))
        .collect()
}

#[test]
fn second_sigint_drops_queued_spawns_and_exits_at_once() {
    // Each server is a shell waiting on its stdin; its command line carries a marker so
    // that whatever is left of it can be found after the relay is gone.
    let marker = format!(
        "mcp-relay-e2e-queued-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let mut relay = Relay::builder()
        .command(["sh", "-c", "read x", marker.as_str()])
        .start();

    // The loop accepts much faster than the spawner starts servers, but a 2-core machine
    // shares its time between them. So the relay is stopped (SIGSTOP) while a listen
    // backlog's worth of connections queue in the kernel, then let go: it accepts them in one
    // go, and each asks for a server. Round after round, the spawner falls behind.
    let mut conns = Vec::with_capacity(ROUNDS * BACKLOG);
    for round in 1..=ROUNDS {
        relay.signal(libc::SIGSTOP);
        for _ in 0..BACKLOG {
            conns.push(TcpStream::connect_timeout(&relay.addr, DEADLINE).expect("connect"));
        }
        relay.signal(libc::SIGCONT);
        relay.wait_log_count("accepted from", round * BACKLOG, DEADLINE);
    }

    relay.signal(libc::SIGINT);
    relay.wait_log("shutting down: draining", DEADLINE);
    let queued = relay.log_count("starting child")
        - relay.log_count("server started as")
        - relay.log_count("could not start");
    let start = Instant::now();
    relay.signal(libc::SIGINT);
    let status = relay
        .wait_exit(DEADLINE)
        .unwrap_or_else(|| panic!("still running {DEADLINE:?} after the second SIGINT"));
    let took = start.elapsed();
    let log = relay.log_text();
    assert!(
        queued >= 200,
        "only {queued} spawns were queued at the second SIGINT: the test shows nothing; log:\n{log}"
    );
    assert!(
        took < Duration::from_secs(1),
        "the relay took {took:?} to exit after the second SIGINT with {queued} spawns queued"
    );
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.code(),
        Some(130),
        "a forced stop must not look like success: {status:?} (signal {:?})",
        status.signal()
    );
    // Every server started is killed with its group; none is started afterwards.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let left = live_with_marker(&marker);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} servers outlived the relay: {left:?}",
            left.len()
        );
        thread::sleep(Duration::from_millis(20));
    }
    drop(conns);
}
