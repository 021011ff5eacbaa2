//! Two runtimes bound with the core's default configuration (an all-zero seed) must not
//! hand out the same HTTP session ids: `Runtime::bind` seeds the generator from the OS.

use mcp_relay_core::{Config, Transport};
use mcp_relay_runtime::{CommandSpec, Listen, Runtime, RuntimeConfig};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

/// Starts a runtime serving HTTP on a free port, opens a legacy SSE session (its `endpoint`
/// event carries the session id at once, before any server answers), stops the runtime, and
/// returns the id.
fn first_session_id() -> String {
    let runtime = Runtime::bind(RuntimeConfig {
        listen: vec![Listen::plain(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            Transport::Http,
        )],
        command: CommandSpec {
            program: "cat".into(),
            ..CommandSpec::default()
        },
        core: Config::default(),
        stdio: false,
        commands: Vec::new(),
        tls_client: None,
    })
    .expect("bind");
    let addr = runtime.local_addrs()[0].0;
    let handle = runtime.shutdown_handle();
    let loop_thread = thread::spawn(move || runtime.run());

    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET /sse HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .expect("write");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let id = loop {
        let n = s.read(&mut buf).expect("read the endpoint event");
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some(rest) = text.split("sessionId=").nth(1) {
            if let Some(end) = rest.find(['\r', '\n']) {
                break rest[..end].to_owned();
            }
        }
    };
    drop(s);
    // The first request drains, the second stops at once.
    handle.shutdown();
    handle.shutdown();
    loop_thread
        .join()
        .expect("the loop thread")
        .expect("the loop");
    id
}

#[test]
fn default_config_gets_os_seeded_session_ids() {
    let a = first_session_id();
    let b = first_session_id();
    assert!(a.len() >= 16, "{a}");
    assert_ne!(
        a, b,
        "two relays with the default config issued the same id"
    );
}
