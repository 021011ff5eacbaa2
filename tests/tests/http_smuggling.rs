//! Request smuggling at the HTTP layer, through the public `Relay` API: a request whose body
//! framing is ambiguous (RFC 9112 §6.3) gets a 400 and the connection is closed, so bytes a
//! proxy in front took for body are never run as a second request.

use mcp_relay_core::{Config, ConnId, Endpoint, Input, Output, Relay, Transport};
use std::time::Instant;

const CONN: ConnId = ConnId(1);

/// What the relay wrote to the connection, and whether it then closed it, after `wire` arrived
/// in one read. Every byte sent is reported written at once.
fn exchange(wire: &[u8]) -> (String, bool) {
    let now = Instant::now();
    let mut relay = Relay::new(Config::default(), now).expect("the default configuration is valid");
    relay.start(now);
    let mut sent = Vec::new();
    let mut closed = false;
    let drain = |relay: &mut Relay, sent: &mut Vec<u8>, closed: &mut bool| {
        while let Some(out) = relay.poll_output() {
            match out {
                Output::Send {
                    to: Endpoint::Conn(c),
                    data,
                } => {
                    assert_eq!(c, CONN);
                    assert!(!*closed, "sent after close");
                    sent.extend_from_slice(&data);
                    relay.handle_input(
                        now,
                        Input::Written {
                            to: Endpoint::Conn(c),
                            n: data.len(),
                        },
                    );
                }
                Output::Close {
                    endpoint: Endpoint::Conn(c),
                } => {
                    assert_eq!(c, CONN);
                    *closed = true;
                }
                Output::Spawn { .. } => panic!("no request should reach a server: {out:?}"),
                _ => {}
            }
        }
    };
    drain(&mut relay, &mut sent, &mut closed);
    relay.handle_input(
        now,
        Input::Accepted {
            conn: CONN,
            local: "127.0.0.1:8080".parse().unwrap(),
            peer: "127.0.0.1:50000".parse().unwrap(),
            transport: Transport::Http,
            server: None,
        },
    );
    drain(&mut relay, &mut sent, &mut closed);
    relay.handle_input(
        now,
        Input::Data {
            from: Endpoint::Conn(CONN),
            data: wire,
        },
    );
    drain(&mut relay, &mut sent, &mut closed);
    (String::from_utf8(sent).unwrap(), closed)
}

/// The request a proxy that reads `Content-Length` would take for part of the body.
const SMUGGLED: &str = "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";

fn responses(text: &str) -> usize {
    text.matches("HTTP/1.1 ").count()
}

#[test]
fn content_length_with_chunked_gets_400_and_close_and_the_smuggled_request_is_never_answered() {
    let body = format!("0\r\n\r\n{SMUGGLED}");
    let wire = format!(
        "POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nContent-Length: {}\r\n\
         Transfer-Encoding: chunked\r\n\r\n{body}",
        body.len()
    );
    let (text, closed) = exchange(wire.as_bytes());
    assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
    assert!(text.contains("Connection: close\r\n"), "{text}");
    assert_eq!(responses(&text), 1, "{text}");
    assert!(
        !text.contains("200 OK"),
        "the smuggled request was answered: {text}"
    );
    assert!(closed, "the connection was kept open");
}

#[test]
fn different_content_lengths_get_400_and_close() {
    let wire = format!(
        "POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nContent-Length: {}\r\n\r\n{SMUGGLED}",
        SMUGGLED.len()
    );
    let (text, closed) = exchange(wire.as_bytes());
    assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
    assert_eq!(responses(&text), 1, "{text}");
    assert!(closed);
}

/// The control: the same second request pipelined after an unambiguous chunked body is
/// answered, so the tests above would see it if it ran.
#[test]
fn a_pipelined_request_after_an_unambiguous_body_is_answered() {
    let wire = format!("GET /healthz HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}");
    let (text, closed) = exchange(wire.as_bytes());
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "{text}");
    assert!(!closed);
}
