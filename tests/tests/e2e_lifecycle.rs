//! End to end: server processes are started per connection and always cleaned up — when the
//! client leaves, when the server leaves first, and when it will not leave.

mod common;

use common::{
    error_code, group_members, read_proc, relay_bin, tool_text, wait_group_gone, wait_pid_gone,
    Closed, Relay, DEADLINE,
};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Slack for timings on a loaded 2-core machine running a debug build.
const SLACK: Duration = Duration::from_millis(1500);

#[test]
fn connect_disconnect_cycles_leave_no_children_or_zombies() {
    const CYCLES: usize = 50;
    let relay = Relay::demo();
    for i in 0..CYCLES {
        let mut c = relay.connect();
        match i % 3 {
            // Gone before the server may even have started.
            0 => drop(c),
            // Half-closed after a request: the answer still arrives, then the relay closes.
            1 => {
                c.send(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#);
                c.shutdown_write();
                let line = c.read_line();
                assert!(line.contains(r#""id":1"#), "{line}");
                assert_eq!(c.expect_closed(), Closed::Eof);
            }
            // A full handshake and a call, then a plain close.
            _ => {
                c.initialize();
                let resp = c.call_tool("echo", json!({"message": format!("cycle {i}")}));
                assert_eq!(tool_text(&resp), format!("cycle {i}"));
            }
        }
    }
    relay.wait_log_count("session ended", CYCLES, DEADLINE);
    relay.wait_children(0, DEADLINE);
    assert!(relay.zombies().is_empty());
    // Every client with something to ask got a server; one that was gone before its server
    // started may have had the start cancelled (it then never runs).
    let asked = CYCLES - CYCLES.div_ceil(3);
    let started = relay.log_count("server started as");
    assert!(
        (asked..=CYCLES).contains(&started),
        "{started} servers started for {CYCLES} clients, {asked} of which asked something"
    );
    // Every server left on its own when its stdin closed: no signal was needed.
    assert_eq!(
        relay.log_count("still running: sending"),
        0,
        "{}",
        relay.log_text()
    );
}

#[test]
fn client_disconnect_closes_the_servers_stdin() {
    // A long grace: the server must leave because of end of file, not a signal.
    let relay = Relay::builder()
        .demo()
        .args(["--shutdown-grace", "30s"])
        .start();
    let mut c = relay.connect();
    c.initialize();
    let child = relay.wait_children(1, DEADLINE).remove(0);
    assert_eq!(
        child.pgrp, child.pid,
        "the server leads its own process group"
    );
    drop(c);
    let took = wait_pid_gone(child.pid, DEADLINE).expect("the server exits on stdin EOF");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    relay.wait_log("exited with status 0", DEADLINE);
    relay.wait_log("session ended", DEADLINE);
    relay.wait_children(0, DEADLINE);
    assert_eq!(relay.log_count("still running: sending"), 0);
}

/// Calls `hang` (the demo stops reading stdin and never answers again), disconnects, and
/// returns the server's process group and when the client left.
fn hang_then_disconnect(relay: &Relay) -> (i32, Instant) {
    let mut c = relay.connect();
    c.initialize();
    let child = relay.wait_children(1, DEADLINE).remove(0);
    relay.track_group(child.pgrp);
    // `hang` answers nothing, ever; the relay hands it over before it closes the server's
    // stdin, so the server takes it before it could see end of file.
    c.send(r#"{"jsonrpc":"2.0","id":"h","method":"tools/call","params":{"name":"hang"}}"#);
    let left = Instant::now();
    drop(c);
    (child.pgrp, left)
}

#[test]
fn server_ignoring_stdin_eof_gets_sigterm_after_the_grace() {
    let grace = Duration::from_millis(200);
    let relay = Relay::builder()
        .demo()
        // The client's end of file could be a half-close: without `--drain-timeout 0` its
        // request in flight would keep the server's stdin open (see e2e_drain.rs).
        .args(["--shutdown-grace", "200ms", "--drain-timeout", "0"])
        .start();
    let (pgrp, left) = hang_then_disconnect(&relay);
    wait_group_gone(pgrp, 2 * grace + SLACK)
        .unwrap_or_else(|p| panic!("still there after {:?}: {p:#?}", 2 * grace + SLACK));
    let took = left.elapsed();
    assert!(
        took >= grace,
        "signalled before the grace ran out ({took:?})"
    );
    relay.wait_log("sending Term", DEADLINE);
    relay.wait_log("was killed by signal 15", DEADLINE);
    relay.wait_log("session ended", DEADLINE);
    relay.wait_children(0, DEADLINE);
}

#[test]
fn server_ignoring_sigterm_gets_sigkill_after_twice_the_grace() {
    let grace = Duration::from_millis(200);
    let bin = relay_bin().to_str().expect("UTF-8 path").to_owned();
    // SIGTERM stays ignored across exec: only SIGKILL ends this server.
    let relay = Relay::builder()
        // The client's end of file could be a half-close: without `--drain-timeout 0` its
        // request in flight would keep the server's stdin open (see e2e_drain.rs).
        .args(["--shutdown-grace", "200ms", "--drain-timeout", "0"])
        .command([
            "sh",
            "-c",
            &format!("trap '' TERM; exec '{bin}' demo-server"),
        ])
        .start();
    let (pgrp, left) = hang_then_disconnect(&relay);
    wait_group_gone(pgrp, 2 * grace + SLACK)
        .unwrap_or_else(|p| panic!("still there after {:?}: {p:#?}", 2 * grace + SLACK));
    let took = left.elapsed();
    assert!(
        took >= 2 * grace,
        "killed before two graces ran out ({took:?})"
    );
    relay.wait_log("sending Term", DEADLINE);
    relay.wait_log("sending Kill", DEADLINE);
    relay.wait_log("was killed by signal 9", DEADLINE);
    relay.wait_log("session ended", DEADLINE);
    relay.wait_children(0, DEADLINE);
}

#[test]
fn grandchildren_die_with_the_servers_process_group() {
    let bin = relay_bin().to_str().expect("UTF-8 path").to_owned();
    // The shell leaves grandchildren behind in the server's group: a second demo server
    // fed by a sleep (so it never sees end of file), and the sleep. Neither goes away on
    // its own when the client leaves; both hold the server's stdout and stderr open.
    let relay = Relay::builder()
        .args(["--shutdown-grace", "300ms"])
        .command([
            "sh",
            "-c",
            &format!("sleep 300 | '{bin}' demo-server & exec '{bin}' demo-server"),
        ])
        .start();
    let mut c = relay.connect();
    c.initialize();
    let child = relay.wait_children(1, DEADLINE).remove(0);
    let pgrp = child.pgrp;
    relay.track_group(pgrp);
    let deadline = Instant::now() + DEADLINE;
    let grandchildren = loop {
        let members = group_members(pgrp);
        let others: Vec<_> = members
            .iter()
            .filter(|p| p.pid != child.pid)
            .cloned()
            .collect();
        if others.iter().any(|p| p.comm == "sleep") && others.iter().any(|p| p.comm == "mcp-relay")
        {
            break others;
        }
        assert!(
            Instant::now() < deadline,
            "the grandchildren did not start: {members:#?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let resp = c.call_tool("echo", json!({"message": "with grandchildren"}));
    assert_eq!(tool_text(&resp), "with grandchildren");
    drop(c);
    // The server leaves on stdin EOF; the relay then kills its whole group at once.
    wait_group_gone(pgrp, SLACK)
        .unwrap_or_else(|p| panic!("survivors in process group {pgrp}: {p:#?}"));
    for g in &grandchildren {
        assert!(
            !matches!(read_proc(g.pid), Some(p) if p.pgrp == pgrp && p.state != 'Z'),
            "grandchild {g:?} survived"
        );
    }
    relay.wait_log("session ended", DEADLINE);
    relay.wait_children(0, DEADLINE);
}

/// Sends `lines` in one write, then reads until the relay closes the connection.
fn send_then_read_to_close(relay: &Relay, lines: &[Value]) -> Vec<Value> {
    let mut c = relay.connect();
    c.initialize();
    let mut batch = String::new();
    for l in lines {
        batch.push_str(&l.to_string());
        batch.push('\n');
    }
    c.send_raw(batch.as_bytes());
    let (got, closed) = c.read_to_close();
    assert_eq!(
        closed,
        Closed::Eof,
        "the relay must close cleanly, not reset"
    );
    got.iter()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect()
}

#[test]
fn server_exit_closes_the_connection_after_flushing_its_output() {
    let relay = Relay::demo();
    let got = send_then_read_to_close(
        &relay,
        &[
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                   "params": {"name": "flood", "arguments": {"count": 300, "size": 1000}}}),
            json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                   "params": {"name": "log", "arguments": {"message": "last words"}}}),
            json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                   "params": {"name": "exit"}}),
        ],
    );
    // Everything written before the exit arrives, in order; then the relay answers the
    // request the server left unanswered (the exit itself) and closes.
    assert_eq!(got.len(), 300 + 2 + 1 + 1, "{:?}", got.last());
    for note in &got[..300] {
        assert_eq!(note["method"], "notifications/message");
        assert_eq!(note["params"]["data"].as_str().map(str::len), Some(1000));
    }
    assert_eq!(got[300]["id"], 1);
    assert_eq!(got[301]["params"]["data"], "last words");
    assert_eq!(got[302]["id"], 2);
    assert_eq!(got[303]["id"], 3, "{}", got[303]);
    assert_eq!(error_code(&got[303]), -32003, "{}", got[303]);
    relay.wait_log("exited with status 0", DEADLINE);
    relay.wait_log("session ended", DEADLINE);
    relay.wait_children(0, DEADLINE);
    assert!(relay.zombies().is_empty());
}

#[test]
fn server_crash_closes_the_connection_after_flushing_its_output() {
    let relay = Relay::builder().demo().args(["--restart", "never"]).start();
    let got = send_then_read_to_close(
        &relay,
        &[
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                   "params": {"name": "echo", "arguments": {"message": "before the crash"}}}),
            json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                   "params": {"name": "crash", "arguments": {"code": 3}}}),
        ],
    );
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(tool_text(&got[0]), "before the crash");
    assert_eq!(got[1]["id"], 2, "{}", got[1]);
    assert_eq!(error_code(&got[1]), -32003, "{}", got[1]);
    let message = got[1]["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("exited with status 3"), "{message}");
    relay.wait_log("exited with status 3", DEADLINE);
    relay.wait_log("session ended", DEADLINE);
    relay.wait_children(0, DEADLINE);
    // The relay itself is unaffected.
    let mut c = relay.connect();
    c.initialize();
}

#[test]
fn killed_server_closes_the_connection() {
    let relay = Relay::builder().demo().args(["--restart", "never"]).start();
    let mut c = relay.connect();
    c.initialize();
    let child = relay.wait_children(1, DEADLINE).remove(0);
    common::signal(child.pid, libc::SIGKILL);
    assert_eq!(c.expect_closed(), Closed::Eof);
    relay.wait_log("was killed by signal 9", DEADLINE);
    relay.wait_children(0, DEADLINE);
}

#[test]
fn crashed_server_is_restarted_by_default_and_the_session_goes_on() {
    let relay = Relay::builder()
        .demo()
        .args(["--restart-delay", "100ms"])
        .start();
    let mut c = relay.connect();
    c.initialize();
    let first = relay.wait_children(1, DEADLINE).remove(0);
    c.send(r#"{"jsonrpc":"2.0","id":"boom","method":"tools/call","params":{"name":"crash","arguments":{"code":3}}}"#);
    let resp = c.read_json();
    assert_eq!(resp["id"], "boom", "{resp}");
    assert_eq!(error_code(&resp), -32003, "{resp}");
    let note = c.read_json();
    assert_eq!(note["method"], "$/mcp/serverRestarted", "{note}");
    assert!(
        note["params"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("status 3")),
        "{note}"
    );
    // The replacement was initialized with the client's own initialize: it just works.
    let resp = c.call_tool("echo", json!({"message": "after the restart"}));
    assert_eq!(tool_text(&resp), "after the restart");
    let second = relay.wait_children(1, DEADLINE).remove(0);
    assert_ne!(first.pid, second.pid);
    assert!(
        read_proc(first.pid).is_none(),
        "the crashed server was not reaped"
    );
    relay.wait_log("restarting it in", DEADLINE);
    drop(c);
    relay.wait_log("session ended", DEADLINE);
    relay.wait_children(0, DEADLINE);
}

/// Not even a relay killed with SIGKILL, which stops nothing, leaks its servers: they are
/// set to die with it (PR_SET_PDEATHSIG). This server reads nothing, so the end of its stdin
/// would not end it.
#[test]
fn servers_die_with_a_relay_killed_by_sigkill() {
    let mut relay = Relay::builder().command(["sleep", "300"]).start();
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let mut c = relay.connect();
            c.send(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#);
            c
        })
        .collect();
    let servers = relay.wait_children(3, DEADLINE);
    for s in &servers {
        relay.track_group(s.pgrp);
    }
    relay.signal(libc::SIGKILL);
    assert!(relay.wait_exit(DEADLINE).is_some(), "the relay did not die");
    for s in &servers {
        wait_pid_gone(s.pid, DEADLINE)
            .unwrap_or_else(|p| panic!("a server outlived the SIGKILLed relay: {p:#?}"));
    }
    drop(clients);
}
