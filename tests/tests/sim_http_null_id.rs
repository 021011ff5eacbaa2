//! A server that answers `"id": null` (it could not read the request's id) still ends the
//! HTTP request it answered when that request is the only one in flight (issue 9 item 9:
//! such a POST used to wait forever).

use mcp_relay_core::{Config, ConnId, Endpoint};
use mcp_relay_tests::script::{http_post, Script};

#[test]
fn an_answer_with_a_null_id_ends_the_only_request_in_flight() {
    let mut s = Script::new(Config::default());
    let (sid, child) = s.open_http_session();
    s.accept_http(2);
    let call = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x"}}"#;
    s.client_data(2, http_post(Some(&sid), call).as_bytes());
    s.child_data(
        child,
        b"{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32600,\"message\":\"bad\"}}\n",
    );
    let answer = String::from_utf8_lossy(&s.sent_to(Endpoint::Conn(ConnId(2)))).into_owned();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""id":null"#), "{answer}");
    // It was the answer: the relay does not wait for another one (no -32003 later).
    assert_eq!(s.relay.requests_in_flight(), 0);
}
