//! A server that exited with its stdout still open (a grandchild holds it) has its output
//! given up after the grace period. What the pipe still carries after that is dropped: the
//! session may linger (here: a client that half-closed and does not read its last answer),
//! and nothing frames that output any more, so keeping it grew without bound (found by the
//! `relay` fuzz target: `buffered(conn)` past `buffer_bound()`).

use mcp_relay_core::{Config, ConnId, Endpoint, ExitStatus, Input, Output};
use mcp_relay_tests::script::Script;

#[test]
fn output_after_it_was_given_up_is_not_kept() {
    let config = Config::default();
    let grace = config.shutdown_grace;
    let mut s = Script::new(config);
    let child = s.accept(1);
    s.spawned(child);
    let init = br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}"#;
    s.client_data(1, &[&init[..], b"\n"].concat());
    s.input(Input::Eof {
        from: Endpoint::Conn(ConnId(1)),
    });
    s.input(Input::Exited {
        child,
        status: ExitStatus::Code(1),
    });
    // Its output is given up after the grace; the request gets its -32003, which the
    // client does not read, so the session lingers.
    s.advance(grace * 3);
    let answer = String::from_utf8_lossy(&s.sent_to(Endpoint::Conn(ConnId(1)))).into_owned();
    assert!(answer.contains("-32003"), "{answer}");
    let before = s.relay.buffered(ConnId(1)).expect("the session lingers");
    let mut sent = Vec::new();
    for _ in 0..200 {
        sent.extend(s.child_data(child, &[b'x'; 64]));
    }
    assert_eq!(s.relay.buffered(ConnId(1)), Some(before));
    assert!(s.relay.buffered(ConnId(1)) <= Some(s.relay.buffer_bound()));
    assert!(
        !sent.iter().any(|o| matches!(o, Output::Send { .. })),
        "nothing of it reaches anyone"
    );
}
