//! MCP 2026-07-28 has no batches: a stateless POST whose body is a JSON array is refused, even
//! an array of one request (found while writing the fuzz seeds: it was served as if it were
//! the request alone, so the array reached a pool server with the client's own id, the
//! server's answer, an array too, was dropped, and the client waited for the session timeout).

use mcp_relay_core::{Config, ConnId, Endpoint, Output};
use mcp_relay_tests::script::{spawned_in, Script};

fn modern_post(body: &str) -> String {
    format!(
        "POST /mcp HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2026-07-28\r\n\
         Mcp-Method: tools/list\r\nContent-Length: {}\r\n\r\n{body}",
        mcp_relay_tests::http_client::LOCAL,
        body.len()
    )
}

#[test]
fn a_batch_of_one_stateless_request_is_refused_without_a_server() {
    let mut s = Script::new(Config::default());
    s.accept_http(1);
    let request = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#;
    let out = s.client_data(1, modern_post(&format!("[{request}]")).as_bytes());
    assert_eq!(spawned_in(&out), None, "no server is started for it");
    assert!(!out.iter().any(|o| matches!(
        o,
        Output::Send {
            to: Endpoint::Child(_),
            ..
        }
    )));
    let answer = String::from_utf8_lossy(&s.sent_to(Endpoint::Conn(ConnId(1)))).into_owned();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("-32600"), "{answer}");
    assert!(
        answer.contains("batches are not part of MCP 2026-07-28"),
        "{answer}"
    );

    // The same request alone is served: a server is started for it.
    s.accept_http(2);
    let out = s.client_data(2, modern_post(request).as_bytes());
    assert!(
        spawned_in(&out).is_some(),
        "a server is started for the request"
    );
}
