//! Client mode, driven by hand: the relay's own stdio client in front of a scripted remote
//! (Streamable HTTP, HTTP+SSE, TCP), one exact sequence of bytes at a time.

use mcp_relay_core::{
    ChildId, Config, ConnId, Endpoint, Input, Output, RemoteConfig, RemoteTransport, RemoteUrl,
    UpId,
};
use mcp_relay_tests::script::{json_response, sent_in, Script};
use std::time::Duration;

const STDIO: ConnId = ConnId(1);

fn config(url: &str, transport: RemoteTransport) -> Config {
    Config {
        remote: Some(RemoteConfig {
            urls: vec![RemoteUrl::parse(url).unwrap()],
            transport,
            headers: vec![("X-Api-Key".into(), "k".into())],
            ..RemoteConfig::default()
        }),
        ping_interval: None,
        ..Config::default()
    }
}

/// The connections the outputs ask for.
fn connects(out: &[Output]) -> Vec<UpId> {
    out.iter()
        .filter_map(|o| match o {
            Output::Connect { conn, .. } => Some(*conn),
            _ => None,
        })
        .collect()
}

fn chunk(data: &str) -> String {
    format!("{:x}\r\n{data}\r\n", data.len())
}

const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
const INIT_OK: &str = r#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"s","version":"1"}}}"#;

struct Run {
    s: Script,
}

impl Run {
    fn new(url: &str, transport: RemoteTransport) -> (Run, UpId) {
        Run::with(config(url, transport))
    }

    fn with(config: Config) -> (Run, UpId) {
        let mut s = Script::new(config);
        let out = s.input(Input::Attached { conn: STDIO });
        let c = connects(&out);
        assert_eq!(c.len(), 1, "{}", s.show());
        (Run { s }, c[0])
    }

    fn feed(&mut self, from: UpId, data: &str) -> Vec<Output> {
        self.s.input(Input::Data {
            from: Endpoint::Upstream(from),
            data: data.as_bytes(),
        })
    }

    fn client(&mut self, line: &str) -> Vec<Output> {
        self.s.client_data(STDIO.0, format!("{line}\n").as_bytes())
    }

    fn connected(&mut self, conn: UpId) -> Vec<Output> {
        self.s.input(Input::Connected { conn })
    }

    /// Lets up to `within` pass in 100 ms steps, opening (and acknowledging the writes of)
    /// every connection asked for, until what the client got contains `needle`; returns it.
    fn wait_for_answer(&mut self, needle: &str, within: Duration) -> String {
        let mut answered = String::new();
        for _ in 0..within.as_millis() / 100 {
            let out = self.s.advance(Duration::from_millis(100));
            for up in connects(&out) {
                let out = self.connected(up);
                self.written_all(&out, Endpoint::Upstream(up));
            }
            answered = String::from_utf8_lossy(&self.s.sent_to(Endpoint::Conn(STDIO))).into_owned();
            if answered.contains(needle) {
                break;
            }
        }
        answered
    }

    /// Acknowledges every byte sent to `to`.
    fn written_all(&mut self, out: &[Output], to: Endpoint) -> Vec<Output> {
        let n = sent_in(out, to).len();
        self.s.written(to, n)
    }

    /// Initializes over connection `c` (already connected); returns the session id given.
    fn initialize(&mut self, c: UpId) {
        let out = self.client(INIT);
        let post = sent_in(&out, Endpoint::Upstream(c));
        assert!(post.starts_with("POST /mcp HTTP/1.1\r\n"), "{post}");
        assert!(post.contains("\r\nX-Api-Key: k\r\n"), "{post}");
        assert!(
            post.contains("Accept: application/json, text/event-stream"),
            "{post}"
        );
        assert!(!post.contains("Mcp-Session-Id"), "{post}");
        assert!(post.ends_with(INIT), "{post}");
        self.written_all(&out, Endpoint::Upstream(c));
        let out = self.feed(
            c,
            &json_response("200 OK", "Mcp-Session-Id: s1\r\n", INIT_OK),
        );
        assert_eq!(sent_in(&out, Endpoint::Conn(STDIO)), format!("{INIT_OK}\n"));
    }
}

#[test]
fn streamable_http_initialize_then_notification_opens_the_get_stream() {
    let (mut r, c0) = Run::new("http://127.0.0.1:9/mcp", RemoteTransport::Auto);
    r.connected(c0);
    r.initialize(c0);
    let out = r.client(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    let post = sent_in(&out, Endpoint::Upstream(c0));
    assert!(post.contains("\r\nMcp-Session-Id: s1\r\n"), "{post}");
    assert!(
        post.contains("\r\nMCP-Protocol-Version: 2025-06-18\r\n"),
        "{post}"
    );
    r.written_all(&out, Endpoint::Upstream(c0));
    let out = r.feed(c0, "HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n");
    // The GET stream for the remote's own messages.
    let get = connects(&out);
    assert_eq!(get.len(), 1, "{}", r.s.show());
    // A request now waits until the GET stream is set up: what the remote sends outside any
    // request must have a stream to arrive on (the conformance suite's elicitation and
    // sse-retry scenarios depend on it).
    let list = r#"{"jsonrpc":"2.0","id":5,"method":"tools/list"}"#;
    let out = r.client(list);
    assert!(
        sent_in(&out, Endpoint::Upstream(c0)).is_empty(),
        "{}",
        r.s.show()
    );
    let out = r.connected(get[0]);
    let head = sent_in(&out, Endpoint::Upstream(get[0]));
    assert!(head.starts_with("GET /mcp HTTP/1.1\r\n"), "{head}");
    assert!(head.contains("Accept: text/event-stream"), "{head}");
    let out = r.feed(
        get[0],
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    assert!(sent_in(&out, Endpoint::Conn(STDIO)).is_empty());
    assert!(
        sent_in(&out, Endpoint::Upstream(c0)).ends_with(list),
        "{}",
        r.s.show()
    );
    let note = r#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#;
    let out = r.feed(get[0], &chunk(&format!("id: 9\ndata: {note}\n\n")));
    assert_eq!(sent_in(&out, Endpoint::Conn(STDIO)), format!("{note}\n"));
}

#[test]
fn a_broken_post_stream_is_resumed_after_the_retry_delay() {
    let (mut r, c0) = Run::new("http://127.0.0.1:9/mcp", RemoteTransport::StreamableHttp);
    r.connected(c0);
    r.initialize(c0);
    let call = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"x"}}"#;
    let out = r.client(call);
    r.written_all(&out, Endpoint::Upstream(c0));
    let progress = r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":1}}"#;
    let out = r.feed(
        c0,
        &format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n{}",
            chunk(&format!("id: e1\nretry: 300\ndata: {progress}\n\n"))
        ),
    );
    assert_eq!(
        sent_in(&out, Endpoint::Conn(STDIO)),
        format!("{progress}\n")
    );
    // The stream breaks before the answer.
    let out = r.s.input(Input::Eof {
        from: Endpoint::Upstream(c0),
    });
    assert!(connects(&out).is_empty(), "{}", r.s.show());
    let out = r.s.advance(Duration::from_millis(299));
    assert!(
        connects(&out).is_empty(),
        "resumed too early: {}",
        r.s.show()
    );
    let out = r.s.advance(Duration::from_millis(1));
    let c = connects(&out);
    assert_eq!(c.len(), 1, "{}", r.s.show());
    let out = r.connected(c[0]);
    let head = sent_in(&out, Endpoint::Upstream(c[0]));
    assert!(head.starts_with("GET /mcp HTTP/1.1\r\n"), "{head}");
    assert!(head.contains("\r\nLast-Event-ID: e1\r\n"), "{head}");
    assert!(head.contains("\r\nMcp-Session-Id: s1\r\n"), "{head}");
    let answer = r#"{"jsonrpc":"2.0","id":2,"result":{"content":[]}}"#;
    let out = r.feed(
        c[0],
        &format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: {}\r\n\r\nid: e2\ndata: {answer}\n\n",
            answer.len() + 16
        ),
    );
    assert_eq!(sent_in(&out, Endpoint::Conn(STDIO)), format!("{answer}\n"));
}

#[test]
fn a_forgotten_session_is_initialized_again_and_the_request_retried_once() {
    let (mut r, c0) = Run::new("http://127.0.0.1:9/mcp", RemoteTransport::StreamableHttp);
    r.connected(c0);
    r.initialize(c0);
    let call = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
    let out = r.client(call);
    r.written_all(&out, Endpoint::Upstream(c0));
    let out = r.feed(c0, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
    assert!(
        sent_in(&out, Endpoint::Conn(STDIO)).is_empty(),
        "the request is not answered: it is retried"
    );
    // The replacement connects after the restart delay.
    let out = r.s.advance(Duration::from_secs(1));
    let c = connects(&out);
    assert_eq!(c.len(), 1, "{}", r.s.show());
    assert_eq!(c[0].server, ChildId(2));
    let out = r.connected(c[0]);
    let post = sent_in(&out, Endpoint::Upstream(c[0]));
    assert!(post.contains(r#""method":"initialize""#), "{post}");
    assert!(!post.contains("Mcp-Session-Id"), "{post}");
    let own_id = post
        .split(r#""id":"#)
        .nth(1)
        .and_then(|s| s.split([',', '}']).next())
        .unwrap()
        .to_owned();
    r.written_all(&out, Endpoint::Upstream(c[0]));
    let ok = INIT_OK.replace(r#""id":1"#, &format!(r#""id":{own_id}"#));
    let out = r.feed(
        c[0],
        &json_response("200 OK", "Mcp-Session-Id: s2\r\n", &ok),
    );
    let to_client = sent_in(&out, Endpoint::Conn(STDIO));
    assert!(
        !to_client.contains("protocolVersion"),
        "the replayed answer is swallowed: {to_client}"
    );
    let everything = r.s.show();
    // The request goes again, on the new session.
    let all_posts: String =
        r.s.log
            .iter()
            .filter_map(|(_, o)| match o {
                Output::Send {
                    to: Endpoint::Upstream(u),
                    data,
                } if u.server == ChildId(2) => Some(String::from_utf8_lossy(data).into_owned()),
                _ => None,
            })
            .collect();
    assert!(all_posts.contains("Mcp-Session-Id: s2"), "{everything}");
    assert!(
        all_posts.ends_with(call) || all_posts.contains(call),
        "{everything}"
    );
}

#[test]
fn auto_falls_back_to_sse_when_the_initialize_post_is_refused() {
    let (mut r, c0) = Run::new("http://127.0.0.1:9/sse", RemoteTransport::Auto);
    r.connected(c0);
    let out = r.client(INIT);
    r.written_all(&out, Endpoint::Upstream(c0));
    let out = r.feed(
        c0,
        "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n",
    );
    let c = connects(&out);
    assert_eq!(c.len(), 1, "{}", r.s.show());
    let out = r.connected(c[0]);
    let head = sent_in(&out, Endpoint::Upstream(c[0]));
    assert!(head.starts_with("GET /sse HTTP/1.1\r\n"), "{head}");
    r.written_all(&out, Endpoint::Upstream(c[0]));
    let out = r.feed(
        c[0],
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\nevent: endpoint\ndata: /messages?session=7\n\n",
    );
    // The initialize goes to the endpoint, on a pooled connection.
    let post = sent_in(&out, Endpoint::Upstream(c0));
    assert!(
        post.starts_with("POST /messages?session=7 HTTP/1.1\r\n"),
        "{post}\n{}",
        r.s.show()
    );
    assert!(post.ends_with(INIT), "{post}");
    r.written_all(&out, Endpoint::Upstream(c0));
    r.feed(
        c0,
        "HTTP/1.1 202 Accepted\r\nContent-Length: 8\r\n\r\nAccepted",
    );
    let out = r.feed(c[0], &format!("event: message\ndata: {INIT_OK}\n\n"));
    assert_eq!(sent_in(&out, Endpoint::Conn(STDIO)), format!("{INIT_OK}\n"));
}

#[test]
fn tcp_remote_carries_lines_both_ways() {
    let (mut r, c0) = Run::new("tcp://127.0.0.1:9", RemoteTransport::Auto);
    let out = r.client(INIT);
    assert!(
        sent_in(&out, Endpoint::Upstream(c0)).is_empty(),
        "nothing before the connection"
    );
    let out = r.connected(c0);
    assert_eq!(sent_in(&out, Endpoint::Upstream(c0)), format!("{INIT}\n"));
    let out = r.feed(c0, &format!("{INIT_OK}\n"));
    assert_eq!(sent_in(&out, Endpoint::Conn(STDIO)), format!("{INIT_OK}\n"));
}

#[test]
fn an_unreachable_remote_answers_held_requests_after_the_connect_timeout() {
    let (mut r, c0) = Run::new("http://127.0.0.1:9/mcp", RemoteTransport::StreamableHttp);
    r.client(INIT);
    let out = r.s.input(Input::ConnectFailed {
        conn: c0,
        error: "connection refused",
    });
    assert!(
        sent_in(&out, Endpoint::Conn(STDIO)).is_empty(),
        "{}",
        r.s.show()
    );
    // Reconnects with backoff fail too; the request is answered at --connect-timeout (10 s).
    let mut answered = String::new();
    for _ in 0..40 {
        let out = r.s.advance(Duration::from_millis(500));
        for c in connects(&out) {
            r.s.input(Input::ConnectFailed {
                conn: c,
                error: "connection refused",
            });
        }
        answered.push_str(&sent_in(
            &r.s.log.iter().map(|(_, o)| o.clone()).collect::<Vec<_>>(),
            Endpoint::Conn(STDIO),
        ));
        if !answered.is_empty() {
            break;
        }
    }
    assert!(answered.contains(r#""id":1"#), "{}", r.s.show());
    assert!(
        answered.contains("could not be reached within 10s"),
        "{answered}"
    );
    assert!(
        r.s.now() <= Duration::from_millis(10_500),
        "at {:?}",
        r.s.now()
    );
}

#[test]
fn an_unreachable_url_fails_over_to_the_next() {
    let mut config = config("http://127.0.0.1:9/mcp", RemoteTransport::StreamableHttp);
    if let Some(r) = &mut config.remote {
        r.urls
            .push(RemoteUrl::parse("http://127.0.0.2:10/mcp").unwrap());
    }
    let mut s = Script::new(config);
    let out = s.input(Input::Attached { conn: STDIO });
    let first = connects(&out)[0];
    s.input(Input::ConnectFailed {
        conn: first,
        error: "connection refused",
    });
    let out = s.advance(Duration::from_secs(1));
    let hosts: Vec<(String, u16)> = out
        .iter()
        .filter_map(|o| match o {
            Output::Connect { host, port, .. } => Some((host.clone(), *port)),
            _ => None,
        })
        .collect();
    assert_eq!(hosts, vec![("127.0.0.2".to_owned(), 10)], "{}", s.show());
}

#[test]
fn an_initialize_answered_on_an_event_stream_sets_the_protocol_version() {
    let (mut r, c0) = Run::new("http://127.0.0.1:9/mcp", RemoteTransport::Auto);
    r.connected(c0);
    let out = r.client(INIT);
    r.written_all(&out, Endpoint::Upstream(c0));
    let ok = INIT_OK.replace("2025-06-18", "2025-11-25");
    let out = r.feed(
        c0,
        &format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nMcp-Session-Id: s9\r\nTransfer-Encoding: chunked\r\n\r\n{}0\r\n\r\n",
            chunk(&format!("event: message\nid: 1\ndata: {ok}\n\n"))
        ),
    );
    assert_eq!(sent_in(&out, Endpoint::Conn(STDIO)), format!("{ok}\n"));
    let out = r.client(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    let post = sent_in(&out, Endpoint::Upstream(c0));
    assert!(
        post.contains("\r\nMCP-Protocol-Version: 2025-11-25\r\n"),
        "{post}"
    );
    assert!(post.contains("\r\nMcp-Session-Id: s9\r\n"), "{post}");
}

#[test]
fn a_client_that_closes_stdin_still_gets_its_answers_then_the_remote_is_closed() {
    for url in ["tcp://127.0.0.1:9", "http://127.0.0.1:9/mcp"] {
        let (mut r, c0) = Run::new(url, RemoteTransport::Auto);
        // Everything, then end of file, before the connection is even open.
        r.client(INIT);
        r.s.input(Input::Eof {
            from: Endpoint::Conn(STDIO),
        });
        let out = r.connected(c0);
        let sent_up = sent_in(&out, Endpoint::Upstream(c0));
        assert!(sent_up.contains(INIT), "{url}: {}", r.s.show());
        r.written_all(&out, Endpoint::Upstream(c0));
        let answer = if url.starts_with("tcp") {
            format!("{INIT_OK}\n")
        } else {
            json_response("200 OK", "Mcp-Session-Id: s1\r\n", INIT_OK)
        };
        let out = r.feed(c0, &answer);
        assert_eq!(
            sent_in(&out, Endpoint::Conn(STDIO)),
            format!("{INIT_OK}\n"),
            "{url}"
        );
        let closed_up = |out: &[Output]| {
            out.iter().any(|o| {
                matches!(o, Output::Close { endpoint: Endpoint::Upstream(u) } if u.server == c0.server)
            })
        };
        if url.starts_with("http") {
            // The session is deleted, then the connections closed.
            let delete = sent_in(&out, Endpoint::Upstream(c0));
            assert!(
                delete.starts_with("DELETE /mcp HTTP/1.1\r\n"),
                "{}",
                r.s.show()
            );
            assert!(delete.contains("Mcp-Session-Id: s1"), "{delete}");
            r.written_all(&out, Endpoint::Upstream(c0));
            let out = r.feed(c0, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
            assert!(closed_up(&out), "{}", r.s.show());
        } else {
            assert!(closed_up(&out), "{}", r.s.show());
        }
        r.s.written(Endpoint::Conn(STDIO), INIT_OK.len() + 1);
        assert!(r.s.relay.is_finished(), "{url}: {}", r.s.show());
    }
}

/// A 2026-07-28-only server may refuse a session-era `initialize` for its missing
/// `MCP-Protocol-Version` header (-32020, as the conformance suite's mock servers do): that
/// is the modern era too, not a reason to try HTTP+SSE.
#[test]
fn a_missing_header_refusal_is_the_2026_07_28_era_too() {
    let (mut r, c0) = Run::new("http://127.0.0.1:9/mcp", RemoteTransport::Auto);
    r.connected(c0);
    let out = r.client(INIT);
    r.written_all(&out, Endpoint::Upstream(c0));
    let refusal = r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32020,"message":"Missing MCP-Protocol-Version header"}}"#;
    let out = r.feed(c0, &json_response("400 Bad Request", "", refusal));
    let post = sent_in(&out, Endpoint::Upstream(c0));
    assert!(
        post.contains("\r\nMcp-Method: server/discover\r\n"),
        "no discover after -32020: {post}\n{}",
        r.s.show()
    );
    assert!(!post.starts_with("GET "), "{post}");
}

#[test]
fn a_2026_07_28_remote_is_discovered_and_spoken_to_in_its_era() {
    let (mut r, c0) = Run::new("http://127.0.0.1:9/mcp", RemoteTransport::Auto);
    r.connected(c0);
    let out = r.client(INIT);
    r.written_all(&out, Endpoint::Upstream(c0));
    let refusal = r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32022,"message":"Unsupported protocol version","data":{"supported":["2026-07-28"],"requested":""}}}"#;
    let out = r.feed(c0, &json_response("400 Bad Request", "", refusal));
    assert!(
        sent_in(&out, Endpoint::Conn(STDIO)).is_empty(),
        "{}",
        r.s.show()
    );
    let post = sent_in(&out, Endpoint::Upstream(c0));
    assert!(
        post.contains("\r\nMcp-Method: server/discover\r\n"),
        "{post}"
    );
    assert!(
        post.contains("\r\nMCP-Protocol-Version: 2026-07-28\r\n"),
        "{post}"
    );
    assert!(
        post.contains(r#""io.modelcontextprotocol/clientInfo":{"name":"t","version":"1"}"#),
        "{post}"
    );
    r.written_all(&out, Endpoint::Upstream(c0));
    let discovered = r#"{"jsonrpc":"2.0","id":"mcp-relay:discover","result":{"resultType":"complete","supportedVersions":["2026-07-28"],"capabilities":{"tools":{}},"serverInfo":{"name":"modern","version":"2"}}}"#;
    let out = r.feed(c0, &json_response("200 OK", "", discovered));
    let init: serde_json::Value =
        serde_json::from_str(sent_in(&out, Endpoint::Conn(STDIO)).trim()).unwrap();
    assert_eq!(init["id"], 1);
    assert_eq!(init["result"]["protocolVersion"], "2025-06-18");
    assert_eq!(init["result"]["serverInfo"]["name"], "modern");
    // No session: notifications/initialized goes nowhere, ping is answered here.
    let out = r.client(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    assert!(sent_in(&out, Endpoint::Upstream(c0)).is_empty());
    let out = r.client(r#"{"jsonrpc":"2.0","id":3,"method":"ping"}"#);
    assert_eq!(
        sent_in(&out, Endpoint::Conn(STDIO)),
        "{\"id\":3,\"jsonrpc\":\"2.0\",\"result\":{}}\n"
    );
    // A call that needs input: the relay asks the client, then retries with its answer.
    let out = r.client(
        r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"t","arguments":{}}}"#,
    );
    let post = sent_in(&out, Endpoint::Upstream(c0));
    assert!(
        post.contains("\r\nMcp-Method: tools/call\r\nMcp-Name: t\r\n"),
        "{post}"
    );
    assert!(
        post.contains(r#""io.modelcontextprotocol/protocolVersion":"2026-07-28""#),
        "{post}"
    );
    assert!(!post.contains("Mcp-Session-Id"), "{post}");
    r.written_all(&out, Endpoint::Upstream(c0));
    let needs = r#"{"jsonrpc":"2.0","id":4,"result":{"resultType":"input_required","inputRequests":{"who":{"method":"elicitation/create","params":{"message":"name?","requestedSchema":{"type":"object","properties":{}}}}},"requestState":"st"}}"#;
    let out = r.feed(c0, &json_response("200 OK", "", needs));
    let ask: serde_json::Value =
        serde_json::from_str(sent_in(&out, Endpoint::Conn(STDIO)).trim()).unwrap();
    assert_eq!(ask["method"], "elicitation/create");
    assert_eq!(ask["id"], "mcp-relay:input:1");
    let out = r.client(
        r#"{"jsonrpc":"2.0","id":"mcp-relay:input:1","result":{"action":"accept","content":{}}}"#,
    );
    let post = sent_in(&out, Endpoint::Upstream(c0));
    assert!(
        post.contains(r#""inputResponses":{"who":{"action":"accept","content":{}}}"#),
        "{post}"
    );
    assert!(post.contains(r#""requestState":"st""#), "{post}");
    r.written_all(&out, Endpoint::Upstream(c0));
    let done = r#"{"jsonrpc":"2.0","id":4,"result":{"resultType":"complete","content":[]}}"#;
    let out = r.feed(c0, &json_response("200 OK", "", done));
    assert_eq!(sent_in(&out, Endpoint::Conn(STDIO)), format!("{done}\n"));
}

#[test]
fn a_2026_07_28_remote_s_notifications_come_through_a_listen_stream() {
    let (mut r, c0) = Run::new("http://127.0.0.1:9/mcp", RemoteTransport::Stateless);
    r.connected(c0);
    let out = r.client(INIT);
    let post = sent_in(&out, Endpoint::Upstream(c0));
    assert!(
        post.contains("\r\nMcp-Method: server/discover\r\n"),
        "{post}"
    );
    r.written_all(&out, Endpoint::Upstream(c0));
    let discovered = r#"{"jsonrpc":"2.0","id":"mcp-relay:discover","result":{"resultType":"complete","supportedVersions":["2026-07-28"],"capabilities":{"tools":{"listChanged":true},"resources":{"subscribe":true}},"serverInfo":{"name":"modern","version":"2"}}}"#;
    let out = r.feed(c0, &json_response("200 OK", "", discovered));
    assert!(sent_in(&out, Endpoint::Conn(STDIO)).contains(r#""name":"modern""#));
    // The listen stream, for the list changes the server offers.
    let listen = sent_in(&out, Endpoint::Upstream(c0));
    assert!(
        listen.contains("\r\nMcp-Method: subscriptions/listen\r\n"),
        "{}",
        r.s.show()
    );
    assert!(
        listen.contains(r#""notifications":{"toolsListChanged":true}"#),
        "{listen}"
    );
    r.written_all(&out, Endpoint::Upstream(c0));
    let ack = r#"{"jsonrpc":"2.0","method":"notifications/subscriptions/acknowledged","params":{"notifications":{"toolsListChanged":true}}}"#;
    let changed = r#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#;
    let out = r.feed(
        c0,
        &format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n{}{}",
            chunk(&format!("data: {ack}\n\n")),
            chunk(&format!("data: {changed}\n\n"))
        ),
    );
    assert_eq!(sent_in(&out, Endpoint::Conn(STDIO)), format!("{changed}\n"));
    // A subscription is answered here and watched by a new listen stream.
    let out = r.client(
        r#"{"jsonrpc":"2.0","id":9,"method":"resources/subscribe","params":{"uri":"a://b"}}"#,
    );
    assert_eq!(
        sent_in(&out, Endpoint::Conn(STDIO)),
        "{\"id\":9,\"jsonrpc\":\"2.0\",\"result\":{}}\n"
    );
    assert!(
        out.contains(&Output::Close {
            endpoint: Endpoint::Upstream(c0)
        }),
        "{}",
        r.s.show()
    );
    let c = connects(&out);
    assert_eq!(c.len(), 1, "{}", r.s.show());
    let out = r.connected(c[0]);
    let listen = sent_in(&out, Endpoint::Upstream(c[0]));
    assert!(
        listen.contains(r#""resourceSubscriptions":["a://b"]"#),
        "{listen}"
    );
}

/// Found by the `remote` fuzz target (`regressions/remote/stdin-eof-with-nothing-in-flight-
/// never-finishes.bin`): the stop that a client's end of file starts finishes a remote with
/// nothing in flight at once, within the session's settling; the session must notice then,
/// for no later event comes to make it.
#[test]
fn a_client_that_closes_stdin_with_nothing_in_flight_ends_the_relay() {
    for url in ["tcp://127.0.0.1:9", "http://127.0.0.1:9/mcp"] {
        let (mut r, c0) = Run::new(url, RemoteTransport::Auto);
        r.connected(c0);
        let out = r.s.input(Input::Eof {
            from: Endpoint::Conn(STDIO),
        });
        let closed = |e: Endpoint| out.contains(&Output::Close { endpoint: e });
        assert!(closed(Endpoint::Upstream(c0)), "{url}: {}", r.s.show());
        assert!(closed(Endpoint::Conn(STDIO)), "{url}: {}", r.s.show());
        assert!(r.s.relay.is_finished(), "{url}: {}", r.s.show());
    }
}

/// Found by the `remote` fuzz target (`regressions/remote/tcp-close-after-connect-failed.bin`):
/// a TCP remote whose connection failed was sent `Close` for it, which the driver no longer
/// knows.
#[test]
fn a_failed_connection_is_not_closed() {
    for url in ["tcp://127.0.0.1:9", "http://127.0.0.1:9/mcp"] {
        let (mut r, c0) = Run::new(url, RemoteTransport::Auto);
        let out = r.s.input(Input::ConnectFailed {
            conn: c0,
            error: "connection refused",
        });
        assert!(
            !out.contains(&Output::Close {
                endpoint: Endpoint::Upstream(c0)
            }),
            "{url}: {}",
            r.s.show()
        );
    }
}

/// Found by the `remote` fuzz target (`regressions/remote/chunk-size-line-split-hangs.bin`):
/// a read that ended inside a chunk's size line left bytes the decoder could not use yet, and
/// the response reader looped on them for ever (this test hung before the fix).
#[test]
fn a_chunk_size_line_split_between_reads_waits_for_the_rest() {
    let (mut r, c0) = Run::new("http://127.0.0.1:9/mcp", RemoteTransport::StreamableHttp);
    r.connected(c0);
    let out = r.client(INIT);
    r.written_all(&out, Endpoint::Upstream(c0));
    let event = format!("data: {INIT_OK}\n\n");
    let body = chunk(&event);
    let (first, rest) = body.split_at(1);
    let out = r.feed(
        c0,
        &format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n{first}"
        ),
    );
    assert!(
        sent_in(&out, Endpoint::Conn(STDIO)).is_empty(),
        "{}",
        r.s.show()
    );
    let out = r.feed(c0, rest);
    assert_eq!(sent_in(&out, Endpoint::Conn(STDIO)), format!("{INIT_OK}\n"));
}

/// Found by the `remote` fuzz target (`regressions/remote/post-after-eof-on-reused-connection.bin`):
/// an event stream delimited by the connection's close ended at its EOF, and the connection
/// went back to the pool: the next request was sent on it, and waited for ever for an answer
/// from a remote that had closed it.
#[test]
fn a_response_delimited_by_the_close_is_not_followed_by_a_request_on_that_connection() {
    let (mut r, c0) = Run::new("http://127.0.0.1:9/mcp", RemoteTransport::StreamableHttp);
    r.connected(c0);
    let out = r.client(INIT);
    r.written_all(&out, Endpoint::Upstream(c0));
    let out = r.feed(
        c0,
        &format!("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nMcp-Session-Id: s1\r\n\r\ndata: {INIT_OK}\n\n"),
    );
    assert_eq!(sent_in(&out, Endpoint::Conn(STDIO)), format!("{INIT_OK}\n"));
    let out = r.s.input(Input::Eof {
        from: Endpoint::Upstream(c0),
    });
    assert!(
        out.contains(&Output::Close {
            endpoint: Endpoint::Upstream(c0)
        }),
        "{}",
        r.s.show()
    );
    let out = r.client(r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#);
    assert!(
        sent_in(&out, Endpoint::Upstream(c0)).is_empty(),
        "{}",
        r.s.show()
    );
    assert_eq!(connects(&out).len(), 1, "{}", r.s.show());
}

/// Found by the `remote` fuzz target (`regressions/remote/batch-never-answered.bin`): the
/// requests of a batch POSTed to a remote that then closed the connection (or refused the
/// batch, or cut its stream short) were never answered: only a lone request's id was known.
/// The client waited for ever, and past `max_in_flight` of them the session stopped reading.
#[test]
fn a_batch_whose_connection_closes_before_its_answer_is_answered_with_errors() {
    let (mut r, c0) = Run::new("http://127.0.0.1:9/mcp", RemoteTransport::StreamableHttp);
    r.connected(c0);
    let out = r.client(
        r#"[{"jsonrpc":"2.0","id":5,"method":"tools/list"},{"jsonrpc":"2.0","method":"notifications/roots/list_changed"},{"jsonrpc":"2.0","id":"six","method":"ping"}]"#,
    );
    r.written_all(&out, Endpoint::Upstream(c0));
    let out = r.s.input(Input::Eof {
        from: Endpoint::Upstream(c0),
    });
    let answered = sent_in(&out, Endpoint::Conn(STDIO));
    assert!(answered.contains(r#""id":5,"error""#), "{}", r.s.show());
    assert!(answered.contains(r#""id":"six","error""#), "{}", r.s.show());
    assert!(
        answered.contains("closed the connection before answering"),
        "{answered}"
    );
    assert_eq!(r.s.relay.requests_in_flight(), 0, "{}", r.s.show());
    // A batch answered in part (`regressions/remote/batch-answered-in-part.bin`): the answer
    // goes on, the request left out gets the relay's error.
    let out = r.client(
        r#"[{"jsonrpc":"2.0","id":7,"method":"tools/list"},{"jsonrpc":"2.0","id":8,"method":"ping"}]"#,
    );
    let c1 = connects(&out)[0];
    let out = r.connected(c1);
    r.written_all(&out, Endpoint::Upstream(c1));
    let out = r.feed(
        c1,
        &json_response("200 OK", "", r#"[{"jsonrpc":"2.0","id":8,"result":{}}]"#),
    );
    let answered = sent_in(&out, Endpoint::Conn(STDIO));
    assert!(answered.contains(r#""id":8,"result""#), "{answered}");
    assert!(answered.contains(r#""id":7,"error""#), "{answered}");
    assert!(!answered.contains(r#""id":8,"error""#), "{answered}");
    assert_eq!(r.s.relay.requests_in_flight(), 0, "{}", r.s.show());
}

/// A JSON answer cut short by the connection's end was handed on as if whole: the session
/// dropped it (not JSON) and the request was never answered.
#[test]
fn a_json_answer_cut_short_is_answered_with_an_error() {
    let (mut r, c0) = Run::new("http://127.0.0.1:9/mcp", RemoteTransport::StreamableHttp);
    r.connected(c0);
    let out = r.client(r#"{"jsonrpc":"2.0","id":5,"method":"tools/list"}"#);
    r.written_all(&out, Endpoint::Upstream(c0));
    r.feed(
        c0,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"jsonrpc\":\"2.0\",\"id\":5,",
    );
    let out = r.s.input(Input::Eof {
        from: Endpoint::Upstream(c0),
    });
    let answered = sent_in(&out, Endpoint::Conn(STDIO));
    assert!(answered.contains(r#""id":5,"error""#), "{}", r.s.show());
    assert_eq!(r.s.relay.requests_in_flight(), 0, "{}", r.s.show());
}

/// Found by the `remote` fuzz target (`regressions/remote/tcp-eof-never-closed.bin`): a TCP
/// remote that closed its side was never sent `Close`, so the driver kept its socket for ever
/// (one more for each reconnection).
#[test]
fn a_tcp_remote_that_closes_is_closed_in_turn() {
    let (mut r, c0) = Run::new("tcp://127.0.0.1:9", RemoteTransport::Auto);
    r.connected(c0);
    let out = r.s.input(Input::Eof {
        from: Endpoint::Upstream(c0),
    });
    assert!(
        out.contains(&Output::Close {
            endpoint: Endpoint::Upstream(c0)
        }),
        "{}",
        r.s.show()
    );
}

/// Found with the `remote` fuzz target's check that a remote gone away leaves no request
/// waiting (a hand-made input, `regressions/remote/json-answer-with-another-id.bin`): a POST
/// answered with JSON
/// that is not the request's answer (another id, not JSON at all) ended the exchange, and the
/// request waited for ever.
#[test]
fn a_json_body_that_does_not_answer_the_request_is_followed_by_an_error() {
    let (mut r, c0) = Run::new("http://127.0.0.1:9/mcp", RemoteTransport::StreamableHttp);
    r.connected(c0);
    r.initialize(c0);
    for (n, body) in [
        (2, r#"{"jsonrpc":"2.0","id":"other","result":{}}"#),
        (3, "<html>not json</html>"),
    ] {
        let out = r.client(&format!(
            r#"{{"jsonrpc":"2.0","id":{n},"method":"tools/list"}}"#
        ));
        r.written_all(&out, Endpoint::Upstream(c0));
        let out = r.feed(c0, &json_response("200 OK", "", body));
        let answered = sent_in(&out, Endpoint::Conn(STDIO));
        assert!(
            answered.contains(&format!(r#""id":{n},"error""#)),
            "{}",
            r.s.show()
        );
    }
    assert_eq!(r.s.relay.requests_in_flight(), 0, "{}", r.s.show());
}

/// Found by the `remote` fuzz target (`regressions/remote/resume-retried-for-ever.bin`): a POST
/// whose event stream broke before its answer was resumed with `GET` + `Last-Event-ID` every
/// second for as long as the remote kept accepting and closing those connections: the request
/// waited for ever. Five attempts in a row that bring nothing new now end it with an error.
#[test]
fn a_stream_that_cannot_be_resumed_is_given_up_after_five_attempts() {
    let (mut r, c0) = Run::new("http://127.0.0.1:9/mcp", RemoteTransport::StreamableHttp);
    r.connected(c0);
    r.initialize(c0);
    let out = r.client(r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#);
    r.written_all(&out, Endpoint::Upstream(c0));
    r.feed(
        c0,
        &format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n{}",
            chunk("id: e1\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progressToken\":1,\"progress\":1}}\n\n")
        ),
    );
    r.s.input(Input::Eof {
        from: Endpoint::Upstream(c0),
    });
    let mut attempts = 0;
    let mut answered = String::new();
    while answered.is_empty() && r.s.now() < Duration::from_secs(30) {
        let out = r.s.advance(Duration::from_millis(250));
        for c in connects(&out) {
            let out = r.connected(c);
            assert!(sent_in(&out, Endpoint::Upstream(c)).contains("Last-Event-ID: e1"));
            r.written_all(&out, Endpoint::Upstream(c));
            attempts += 1;
            let out = r.s.input(Input::Eof {
                from: Endpoint::Upstream(c),
            });
            answered = sent_in(&out, Endpoint::Conn(STDIO));
        }
    }
    assert_eq!(attempts, 5, "{}", r.s.show());
    assert!(answered.contains(r#""id":2,"error""#), "{answered}");
}

/// Found by the `remote` fuzz target (`regressions/remote/probe-loop-on-closing-remote.bin`):
/// a liveness probe answered by the relay's own error (the remote closed its connection) was
/// followed by the next probe at once, in a loop that opened connections without end at one
/// instant. Probes now come an interval apart.
#[test]
fn probes_of_a_remote_that_closes_connections_come_an_interval_apart() {
    let mut config = config("http://127.0.0.1:9/mcp", RemoteTransport::StreamableHttp);
    config.ping_interval = Some(Duration::from_millis(400));
    let mut s = Script::new(config);
    let c0 = connects(&s.input(Input::Attached { conn: STDIO }))[0];
    s.input(Input::Connected { conn: c0 });
    let mut probes = 0;
    for _ in 0..20 {
        // The remote accepts every connection, reads the probe, and closes.
        let mut work = s.advance(Duration::from_millis(100));
        while !work.is_empty() {
            let mut next = Vec::new();
            for o in &work {
                match o {
                    Output::Connect { conn, .. } => {
                        next.extend(s.input(Input::Connected { conn: *conn }))
                    }
                    Output::Send {
                        to: to @ Endpoint::Upstream(_),
                        data,
                    } => {
                        assert!(String::from_utf8_lossy(data).contains("mcp-relay:probe"));
                        probes += 1;
                        next.extend(s.written(*to, data.len()));
                        next.extend(s.input(Input::Eof { from: *to }));
                    }
                    _ => {}
                }
            }
            assert!(probes < 100, "probes in a loop: {}", s.show());
            work = next;
        }
    }
    // Two seconds: a probe each 400 ms at most.
    assert!((1..=5).contains(&probes), "{probes} probes: {}", s.show());
}

/// Found by the `remote` fuzz target (`regressions/remote/endpoint-event-on-a-post-stream.bin`):
/// an `endpoint` event on a Streamable HTTP POST's event stream switched the session to the
/// legacy transport, whose POSTs are only acknowledged: the request waited for ever for an
/// answer on a legacy stream that did not exist. Only the legacy stream's event counts.
#[test]
fn an_endpoint_event_on_a_post_stream_is_ignored() {
    let (mut r, c0) = Run::new("http://127.0.0.1:9/mcp", RemoteTransport::Auto);
    r.connected(c0);
    r.initialize(c0);
    let out = r.client(r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#);
    r.written_all(&out, Endpoint::Upstream(c0));
    r.feed(
        c0,
        &format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n{}",
            chunk("event: endpoint\ndata: /messages?session=7\n\n")
        ),
    );
    let out = r.s.input(Input::Eof {
        from: Endpoint::Upstream(c0),
    });
    let answered = sent_in(&out, Endpoint::Conn(STDIO));
    assert!(answered.contains(r#""id":2,"error""#), "{}", r.s.show());
    let out = r.client(r#"{"jsonrpc":"2.0","id":3,"method":"tools/list"}"#);
    let c1 = connects(&out)[0];
    let post = sent_in(&r.connected(c1), Endpoint::Upstream(c1));
    assert!(post.starts_with("POST /mcp HTTP/1.1"), "{post}");
}

/// Bug (core/src/remote/machine.rs, `RemoteServer::process`): a chunk-size line split across
/// two reads left `Dechunk` asking for more bytes with some still unread, and `process` went
/// round its loop again on them forever (the relay hung at 100 % CPU). Found by
/// `sim_remote::streamable_http_remote`, seed 0.
#[test]
fn a_chunk_size_line_split_across_reads_does_not_hang_the_relay() {
    let answer = r#"{"jsonrpc":"2.0","id":2,"result":{"content":[]}}"#;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut r, c0) = Run::new("http://127.0.0.1:9/mcp", RemoteTransport::StreamableHttp);
        r.connected(c0);
        r.initialize(c0);
        let out =
            r.client(r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"x"}}"#);
        r.written_all(&out, Endpoint::Upstream(c0));
        r.feed(
            c0,
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        let body = chunk(&format!("data: {answer}\n\n"));
        // The chunk's size line comes in two reads.
        r.feed(c0, &body[..1]);
        let out = r.feed(c0, &body[1..]);
        let _ = tx.send(sent_in(&out, Endpoint::Conn(STDIO)));
    });
    let got = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the relay hung on a chunk-size line split across two reads");
    assert_eq!(got, format!("{answer}\n"));
}

/// Bug (core/src/session.rs, `Session::settle`): a remote whose stop has nothing to wait for
/// (HTTP+SSE: no session to DELETE, nothing in flight) finishes inside `ServerSide::settle`,
/// after the session looked for a finished server; no deadline or input came after it, so the
/// session never ended and the relay never exited after its client closed stdin. Found by
/// `sim_remote::legacy_sse_remote`, seed 0.
#[test]
fn a_legacy_remote_with_nothing_in_flight_lets_the_relay_finish_after_stdin_closes() {
    let (mut r, c0) = Run::new("http://127.0.0.1:9/sse", RemoteTransport::Sse);
    let out = r.connected(c0);
    r.written_all(&out, Endpoint::Upstream(c0));
    r.feed(
        c0,
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\nevent: endpoint\ndata: /messages?session=7\n\n",
    );
    let out = r.s.input(Input::Eof {
        from: Endpoint::Conn(STDIO),
    });
    assert!(
        out.contains(&Output::Close {
            endpoint: Endpoint::Upstream(c0)
        }),
        "{}",
        r.s.show()
    );
    r.s.advance(Duration::from_secs(30));
    assert!(
        r.s.relay.is_finished(),
        "the relay is still running 30 s after its client closed stdin:\n{}",
        r.s.show()
    );
    assert!(r.s.sent_to(Endpoint::Conn(STDIO)).is_empty());
    assert!(r.s.log.iter().any(|(_, o)| *o
        == Output::Close {
            endpoint: Endpoint::Conn(STDIO)
        }));
}

/// Bug (core/src/remote/machine.rs, `RemoteServer::eof`): a TCP remote that closed its side
/// was never closed by the relay (no `Output::Close`), so a driver kept the socket open for
/// good. Found by `sim_remote::tcp_remote`, seed 0.
#[test]
fn a_tcp_remote_that_closes_its_side_is_closed_by_the_relay() {
    let (mut r, c0) = Run::new("tcp://127.0.0.1:9", RemoteTransport::Auto);
    r.connected(c0);
    let out = r.s.input(Input::Eof {
        from: Endpoint::Upstream(c0),
    });
    assert!(
        out.contains(&Output::Close {
            endpoint: Endpoint::Upstream(c0)
        }),
        "{}",
        r.s.show()
    );
}

/// Bug (core/src/remote/wire.rs, `SseParser`): the last event id was taken from an `id:`
/// line as soon as it was read, not when its event was dispatched (the blank line). A stream
/// cut after an event's `id:` line and before its end was resumed after that event, which the
/// remote then never sent again: its message was lost. Found by
/// `sim_remote::streamable_http_remote`, seed 13.
#[test]
fn a_stream_cut_inside_an_event_is_resumed_before_that_event() {
    let (mut r, c0) = Run::new("http://127.0.0.1:9/mcp", RemoteTransport::StreamableHttp);
    r.connected(c0);
    r.initialize(c0);
    let out = r.client(r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"x"}}"#);
    r.written_all(&out, Endpoint::Upstream(c0));
    let answer = r#"{"jsonrpc":"2.0","id":2,"result":{"content":[]}}"#;
    r.feed(
        c0,
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\nid: e1\nretry: 100\ndata: \n\n",
    );
    // The answer's event is cut after its id line.
    r.feed(c0, &format!("id: e2\ndata: {}", &answer[..10]));
    r.s.input(Input::Eof {
        from: Endpoint::Upstream(c0),
    });
    let out = r.s.advance(Duration::from_millis(100));
    let c = connects(&out);
    assert_eq!(c.len(), 1, "{}", r.s.show());
    let out = r.connected(c[0]);
    let head = sent_in(&out, Endpoint::Upstream(c[0]));
    assert!(
        head.contains("\r\nLast-Event-ID: e1\r\n"),
        "event e2 never arrived whole; the stream must be resumed after e1:\n{head}"
    );
}

/// Bug (core/src/remote/machine.rs, `dispatch`; core/src/server.rs, `can_answer`): with every
/// connection to a Streamable HTTP remote held by a call it never answers, the liveness probe
/// waited in the queue for a free connection, and its deadline waited for that queue to empty:
/// a remote that stalled was never found hung, and its requests waited for good. A ping now
/// gets a connection of its own, and a probe's deadline runs once it is written. Found by
/// `sim_remote::streamable_http_remote`, seed 17.
#[test]
fn a_stalled_remote_holding_every_connection_is_found_hung() {
    let mut c = config("http://127.0.0.1:9/mcp", RemoteTransport::StreamableHttp);
    c.ping_interval = Some(Duration::from_secs(1));
    c.ping_timeout = Duration::from_secs(1);
    if let Some(r) = c.remote.as_mut() {
        r.max_connections = 1;
    }
    let (mut r, c0) = Run::with(c);
    r.connected(c0);
    r.initialize(c0);
    // A call the remote never answers holds the only connection; another waits behind it.
    let out = r.client(r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"x"}}"#);
    r.written_all(&out, Endpoint::Upstream(c0));
    r.client(r#"{"jsonrpc":"2.0","id":3,"method":"tools/list"}"#);
    let answered = r.wait_for_answer(r#""id":2"#, Duration::from_secs(5));
    assert!(
        answered.contains(r#""id":2"#) && answered.contains("hung"),
        "the remote answers nothing for 5 s, yet it is not found hung:\n{}",
        r.s.show()
    );
}

/// Bug (core/src/remote/machine.rs, `RemoteServer::connect_failed`): a TCP connection that
/// failed to open was then closed (`Output::Close`), though after `Input::ConnectFailed` the
/// driver holds nothing of it and expects no output about it. Found by `sim_remote::tcp_remote`,
/// seed 13.
#[test]
fn a_tcp_connection_that_failed_to_open_is_not_closed() {
    let (mut r, c0) = Run::new("tcp://127.0.0.1:9", RemoteTransport::Auto);
    let out = r.s.input(Input::ConnectFailed {
        conn: c0,
        error: "connection refused",
    });
    assert!(
        !out.iter().any(
            |o| matches!(o, Output::Close { endpoint } if *endpoint == Endpoint::Upstream(c0))
        ),
        "{}",
        r.s.show()
    );
}

/// Bug (core/src/remote/machine.rs, `dispatch`): after an `initialize` that failed on a
/// response carrying a session id, the client's next `initialize` was POSTed with that
/// `Mcp-Session-Id`: a server refuses to initialize a session twice (the TypeScript SDK
/// answers 400 "Server already initialized"), so the client could never initialize. A new
/// `initialize` opens a new session, without an id. Found by
/// `sim_remote::streamable_http_remote`, seed 31 (there the first answer's stream ended
/// unanswered, which now restarts the remote instead: see
/// `a_replayed_initialize_whose_connection_fails_is_tried_again`).
#[test]
fn a_second_initialize_opens_a_new_session() {
    let (mut r, c0) = Run::new("http://127.0.0.1:9/mcp", RemoteTransport::StreamableHttp);
    r.connected(c0);
    let out = r.client(INIT);
    r.written_all(&out, Endpoint::Upstream(c0));
    // The remote refuses this initialize, in a response that names a session.
    let refusal = r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"unsupported"}}"#;
    let out = r.feed(
        c0,
        &json_response("200 OK", "Mcp-Session-Id: s1\r\n", refusal),
    );
    assert!(sent_in(&out, Endpoint::Conn(STDIO)).contains(r#""id":1,"error""#));
    let out = r.client(&INIT.replace(r#""id":1"#, r#""id":2"#));
    let post = sent_in(&out, Endpoint::Upstream(c0));
    assert!(post.contains(r#""method":"initialize""#), "{}", r.s.show());
    assert!(
        !post.contains("Mcp-Session-Id"),
        "a new initialize carries the old session's id:\n{post}"
    );
}

/// Bug (core/src/remote/machine.rs, `conclude` and `conn_lost` for a resumption): a stream's
/// `retry:` counted for its first resumption only; when the resumed stream ended again
/// without the answer and without a `retry:` of its own (or its connection broke before a
/// response), the next attempt came after the 1 s default. The reconnection time is the
/// stream's (WHATWG: the event source's) until the remote sets another. Found by
/// `sim_remote::streamable_http_remote`, seed 53.
#[test]
fn every_resumption_of_a_stream_waits_its_advertised_retry() {
    let (mut r, c0) = Run::new("http://127.0.0.1:9/mcp", RemoteTransport::StreamableHttp);
    r.connected(c0);
    r.initialize(c0);
    let out = r.client(r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"x"}}"#);
    r.written_all(&out, Endpoint::Upstream(c0));
    r.feed(
        c0,
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\nid: e1\nretry: 300\ndata: \n\n",
    );
    r.s.input(Input::Eof {
        from: Endpoint::Upstream(c0),
    });
    // Each attempt: after exactly 300 ms; the first ends with no event, the second fails
    // before its response.
    for attempt in 0..3 {
        let before = r.s.now();
        let mut c = Vec::new();
        for _ in 0..200 {
            let out = r.s.advance(Duration::from_millis(10));
            c = connects(&out);
            if !c.is_empty() {
                break;
            }
        }
        assert_eq!(c.len(), 1, "attempt {attempt}: {}", r.s.show());
        let waited = r.s.now() - before;
        assert_eq!(
            waited,
            Duration::from_millis(300),
            "attempt {attempt} came {waited:?} after the stream ended, not after its retry: 300"
        );
        let out = r.connected(c[0]);
        r.written_all(&out, Endpoint::Upstream(c[0]));
        if attempt == 0 {
            r.feed(
                c[0],
                "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n",
            );
            r.s.input(Input::Eof {
                from: Endpoint::Upstream(c[0]),
            });
        } else {
            r.s.input(Input::Broken {
                endpoint: Endpoint::Upstream(c[0]),
                reason: "connection reset by peer",
            });
        }
    }
}

/// Bug (core/src/remote/machine.rs, `RemoteServer::poll_timeout`): a stopping remote starts no
/// resumption (nor its GET stream), but still reported their deadlines, which then stayed due:
/// `poll_timeout` returned a time already handled, so a driver would spin until the stop's
/// grace ran out (and the relay logged "a deadline stays due"). Found by
/// `sim_remote::streamable_http_remote`, seed 71.
#[test]
fn a_stopping_remote_reports_no_resumption_deadline() {
    let (mut r, c0) = Run::new("http://127.0.0.1:9/mcp", RemoteTransport::StreamableHttp);
    r.connected(c0);
    r.initialize(c0);
    let out = r.client(r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"x"}}"#);
    r.written_all(&out, Endpoint::Upstream(c0));
    r.feed(
        c0,
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    r.feed(c0, &chunk("id: e1\nretry: 300\ndata: \n\n"));
    r.s.input(Input::Broken {
        endpoint: Endpoint::Upstream(c0),
        reason: "connection reset by peer",
    });
    // Another call is in flight when the client closes stdin: the stop waits for it.
    let out = r.client(r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"y"}}"#);
    let c1 = connects(&out)[0];
    let out = r.connected(c1);
    r.written_all(&out, Endpoint::Upstream(c1));
    r.s.input(Input::Eof {
        from: Endpoint::Conn(STDIO),
    });
    r.s.advance(Duration::from_millis(400));
    let now = r.s.clock.now();
    assert!(
        r.s.relay.poll_timeout().is_none_or(|d| d > now),
        "poll_timeout() is {:?} at {:?}: already handled\n{}",
        r.s.relay.next_deadline(),
        r.s.now(),
        r.s.show()
    );
    assert!(r.s.errors.is_empty(), "{:?}", r.s.errors);
}

/// Bug (core/src/remote/machine.rs, `conn_lost` and `stream_broke`): when the connection of
/// the replayed `initialize` (after a restart) failed before its answer, the relay answered
/// its own request with an error, which the session took for the remote refusing to
/// initialize: "the session cannot go on", and the relay exited. An `initialize` whose fate
/// is unknown now gives the remote up (the session restarts it and replays again). Found by
/// `sim_remote::streamable_http_remote`, seed 91.
#[test]
fn a_replayed_initialize_whose_connection_fails_is_tried_again() {
    let (mut r, c0) = Run::new("http://127.0.0.1:9/mcp", RemoteTransport::StreamableHttp);
    r.connected(c0);
    r.initialize(c0);
    // The remote forgets the session: a restart, then the replayed initialize.
    let out = r.client(r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#);
    r.written_all(&out, Endpoint::Upstream(c0));
    r.feed(c0, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
    let out = r.s.advance(Duration::from_secs(1));
    let c1 = connects(&out)[0];
    let out = r.connected(c1);
    assert!(sent_in(&out, Endpoint::Upstream(c1)).contains("mcp-relay:init:"));
    r.written_all(&out, Endpoint::Upstream(c1));
    // Its connection fails before the answer.
    r.s.input(Input::Broken {
        endpoint: Endpoint::Upstream(c1),
        reason: "connection reset by peer",
    });
    let out = r.s.advance(Duration::from_secs(5));
    assert!(
        !r.s.log.iter().any(|(_, o)| *o
            == Output::Close {
                endpoint: Endpoint::Conn(STDIO)
            }),
        "a lost connection ended the session:\n{}\n{}",
        String::from_utf8_lossy(&r.s.sent_to(Endpoint::Conn(STDIO))),
        r.s.show()
    );
    assert_eq!(connects(&out).len(), 1, "{}", r.s.show());
}

/// Bug (core/src/remote/machine.rs, `conclude`): a JSON answer whose connection ended in the
/// middle of its body was handed on as if whole; the session dropped the truncated line (not
/// JSON) and the request was never answered. Found by `sim_remote::streamable_http_remote`,
/// seed 7.
#[test]
fn a_json_answer_cut_in_its_body_is_answered_with_an_error() {
    let (mut r, c0) = Run::new("http://127.0.0.1:9/mcp", RemoteTransport::StreamableHttp);
    r.connected(c0);
    r.initialize(c0);
    let out = r.client(r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#);
    r.written_all(&out, Endpoint::Upstream(c0));
    r.feed(
        c0,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n{\"jsonrpc\":\"2.0\",\"id\":2,",
    );
    let out = r.s.input(Input::Eof {
        from: Endpoint::Upstream(c0),
    });
    let answer = sent_in(&out, Endpoint::Conn(STDIO));
    assert!(
        answer.contains(r#""id":2,"error""#),
        "request 2 is not answered: {answer:?}\n{}",
        r.s.show()
    );
}

/// Bug (core/src/remote/machine.rs, `dispatch`): the liveness probe waited behind an
/// `initialize` that was out (everything does, for the session id its answer brings), so a
/// remote that stopped answering while the client's `initialize` was pending was never found
/// hung, and the client waited for good. A ping no longer waits for it. Found by
/// `sim_remote::legacy_sse_remote`, seed 595 (with `initialize`'s POST never acknowledged).
#[test]
fn a_remote_that_never_answers_initialize_is_found_hung() {
    let mut c = config("http://127.0.0.1:9/mcp", RemoteTransport::StreamableHttp);
    c.ping_interval = Some(Duration::from_secs(1));
    c.ping_timeout = Duration::from_secs(1);
    let (mut r, c0) = Run::with(c);
    r.connected(c0);
    let out = r.client(INIT);
    r.written_all(&out, Endpoint::Upstream(c0));
    let answered = r.wait_for_answer(r#""id":1"#, Duration::from_secs(5));
    assert!(
        answered.contains(r#""id":1"#) && answered.contains("hung"),
        "the remote answers nothing for 5 s, yet it is not found hung:\n{}",
        r.s.show()
    );
}

/// Bug (core/src/remote/machine.rs, `pause_reading`): a TCP remote's connection that the relay
/// had closed (a stop) still got `Output::Resume` once the client caught up: an output about an
/// endpoint the driver no longer has. Found by `sim_remote::tcp_remote`, seed 1131.
#[test]
fn a_closed_tcp_connection_is_not_resumed() {
    let mut c = config("tcp://127.0.0.1:9", RemoteTransport::Auto);
    c.max_buffered = 64;
    let (mut r, c0) = Run::with(c);
    r.connected(c0);
    // The client does not read: the remote's connection is paused.
    let note = format!(
        r#"{{"jsonrpc":"2.0","method":"notifications/message","params":{{"data":"{}"}}}}"#,
        "x".repeat(150)
    );
    let out = r.feed(c0, &format!("{note}\n"));
    let up = Endpoint::Upstream(c0);
    assert!(
        out.contains(&Output::Pause { endpoint: up }),
        "{}",
        r.s.show()
    );
    // The client closes stdin: the remote's connection is closed.
    let out = r.s.input(Input::Eof {
        from: Endpoint::Conn(STDIO),
    });
    assert!(
        out.contains(&Output::Close { endpoint: up }),
        "{}",
        r.s.show()
    );
    // The client reads what waited for it.
    let n = r.s.sent_to(Endpoint::Conn(STDIO)).len();
    let out = r.s.written(Endpoint::Conn(STDIO), n);
    assert!(
        !out.contains(&Output::Resume { endpoint: up }),
        "{up} was closed and is resumed:\n{}",
        r.s.show()
    );
}

/// Bug (core/src/remote/machine.rs, `can_answer`): while the relay waited out a broken event
/// stream's `retry:` before resuming it, the deadline of the answer it waited for ran: a
/// probe (or a replayed `initialize`) whose stream broke was declared unanswered after
/// `--ping-timeout` although the relay had not asked again yet, and a healthy remote was
/// found hung and restarted. Found by `sim_remote::streamable_http_remote`, seed 168 (the
/// replayed `initialize`).
#[test]
fn a_probe_waiting_for_its_stream_to_resume_is_not_a_hang() {
    let mut c = config("http://127.0.0.1:9/mcp", RemoteTransport::StreamableHttp);
    c.ping_interval = Some(Duration::from_secs(1));
    c.ping_timeout = Duration::from_millis(500);
    let (mut r, c0) = Run::with(c);
    r.connected(c0);
    r.initialize(c0);
    // The probe goes out on the idle connection.
    let out = r.s.advance(Duration::from_secs(1));
    let post = sent_in(&out, Endpoint::Upstream(c0));
    assert!(post.contains(r#""method":"ping""#), "{}", r.s.show());
    r.written_all(&out, Endpoint::Upstream(c0));
    // Its answer's stream breaks after a priming event asking for 2 s before a resumption.
    r.feed(
        c0,
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\nid: p1\nretry: 2000\ndata: \n\n",
    );
    r.s.input(Input::Eof {
        from: Endpoint::Upstream(c0),
    });
    r.s.advance(Duration::from_millis(1900));
    assert_eq!(
        r.s.relay.stats().servers_hung,
        0,
        "the relay waits out the remote's retry: 2000 and finds it hung meanwhile:\n{}",
        r.s.show()
    );
}

/// Bug (core/src/remote/machine.rs, `finish`; core/src/server.rs, `is_finished`): messages a
/// remote had sent, read by the relay and waiting for a slow client, were dropped when the
/// remote ended for another reason (here a connection refused): its inbox was cleared, and a
/// restart replaced it. A child's output read before it exits still reaches its client. Found
/// by `sim_remote::streamable_http_remote`, seed 1927.
#[test]
fn messages_read_from_a_remote_that_ends_still_reach_a_slow_client() {
    let mut c = config("http://127.0.0.1:9/mcp", RemoteTransport::StreamableHttp);
    c.max_buffered = 64;
    let (mut r, c0) = Run::with(c);
    r.connected(c0);
    r.initialize(c0);
    let n = r.s.sent_to(Endpoint::Conn(STDIO)).len();
    r.s.written(Endpoint::Conn(STDIO), n);
    let out = r.client(r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"x","_meta":{"progressToken":"t"}}}"#);
    r.written_all(&out, Endpoint::Upstream(c0));
    let progress = |n: u32| {
        format!(
            r#"{{"jsonrpc":"2.0","method":"notifications/progress","params":{{"progressToken":"t","progress":{n},"message":"{}"}}}}"#,
            "x".repeat(100)
        )
    };
    // Two progress notifications in one read; the client reads nothing for now.
    r.feed(
        c0,
        &format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n{}{}",
            chunk(&format!("data: {}\n\n", progress(1))),
            chunk(&format!("data: {}\n\n", progress(2)))
        ),
    );
    // Another call needs another connection, which is refused: the remote ends.
    let out = r.client(r#"{"jsonrpc":"2.0","id":3,"method":"tools/list"}"#);
    let c1 = connects(&out)[0];
    r.s.input(Input::ConnectFailed {
        conn: c1,
        error: "connection refused",
    });
    // The client reads everything.
    let mut read = n;
    for _ in 0..10 {
        let sent = r.s.sent_to(Endpoint::Conn(STDIO)).len();
        if sent > read {
            r.s.written(Endpoint::Conn(STDIO), sent - read);
            read = sent;
        }
        r.s.advance(Duration::from_millis(10));
    }
    let got = String::from_utf8_lossy(&r.s.sent_to(Endpoint::Conn(STDIO))).into_owned();
    assert!(
        got.contains(r#""progress":2"#),
        "the second progress notification was read from the remote and lost:\n{got}\n{}",
        r.s.show()
    );
}

/// The retry of a request answered `input_required` is a request of its own: 2026-07-28
/// says its JSON-RPC id MUST differ from the first one's (the conformance suite's
/// `sep-2322-client-jsonrpc-id-different`). Its answer goes back to the client under the
/// client's id, and the client's cancellation of its request reaches the retry.
#[test]
fn a_2026_07_28_retry_goes_out_under_an_id_of_its_own() {
    let (mut r, c0) = Run::new("http://127.0.0.1:9/mcp", RemoteTransport::Stateless);
    r.connected(c0);
    let out = r.client(INIT);
    r.written_all(&out, Endpoint::Upstream(c0));
    let discovered = r#"{"jsonrpc":"2.0","id":"mcp-relay:discover","result":{"resultType":"complete","supportedVersions":["2026-07-28"],"capabilities":{"tools":{}},"serverInfo":{"name":"modern","version":"2"}}}"#;
    r.feed(c0, &json_response("200 OK", "", discovered));
    let needs = |id: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"result":{{"resultType":"input_required","inputRequests":{{"k":{{"method":"roots/list"}}}},"requestState":"s"}}}}"#
        )
    };
    let call = |id: u32| {
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"t","arguments":{{}}}}}}"#
        )
    };
    // Round 1 under the client's id; the retry under the relay's, answered as the client's.
    let out = r.client(&call(4));
    assert!(sent_in(&out, Endpoint::Upstream(c0)).contains(r#""id":4,"#));
    r.written_all(&out, Endpoint::Upstream(c0));
    r.feed(c0, &json_response("200 OK", "", &needs("4")));
    let out = r.client(r#"{"jsonrpc":"2.0","id":"mcp-relay:input:1","result":{"roots":[]}}"#);
    let post = sent_in(&out, Endpoint::Upstream(c0));
    assert!(post.contains(r#""id":"mcp-relay:retry:1""#), "{post}");
    assert!(!post.contains(r#""id":4"#), "{post}");
    r.written_all(&out, Endpoint::Upstream(c0));
    let done = r#"{"jsonrpc":"2.0","id":"mcp-relay:retry:1","result":{"resultType":"complete","content":[]}}"#;
    let out = r.feed(c0, &json_response("200 OK", "", done));
    assert_eq!(
        sent_in(&out, Endpoint::Conn(STDIO)),
        "{\"jsonrpc\":\"2.0\",\"id\":4,\"result\":{\"resultType\":\"complete\",\"content\":[]}}\n"
    );
    // Round 2 asks again: the next retry has yet another id; cancelling the client's
    // request closes the stream it is on.
    let out = r.client(&call(5));
    r.written_all(&out, Endpoint::Upstream(c0));
    r.feed(c0, &json_response("200 OK", "", &needs("5")));
    let out = r.client(r#"{"jsonrpc":"2.0","id":"mcp-relay:input:2","result":{"roots":[]}}"#);
    assert!(sent_in(&out, Endpoint::Upstream(c0)).contains(r#""id":"mcp-relay:retry:2""#));
    r.written_all(&out, Endpoint::Upstream(c0));
    r.feed(
        c0,
        &json_response("200 OK", "", &needs(r#""mcp-relay:retry:2""#)),
    );
    let out = r.client(r#"{"jsonrpc":"2.0","id":"mcp-relay:input:3","result":{"roots":[]}}"#);
    assert!(sent_in(&out, Endpoint::Upstream(c0)).contains(r#""id":"mcp-relay:retry:3""#));
    r.written_all(&out, Endpoint::Upstream(c0));
    let out = r
        .client(r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":5}}"#);
    assert!(
        out.contains(&Output::Close {
            endpoint: Endpoint::Upstream(c0)
        }),
        "{}",
        r.s.show()
    );
}

/// An `input_required` answer with state and no input requests (a server shedding load, in
/// SEP-2322's words) is retried at once, with that state and under an id of its own, as the
/// era lets a client do; the official SDKs' clients do the same. A server that keeps doing it
/// gets the client's request answered with an error after 10 such rounds in a row.
#[test]
fn a_2026_07_28_state_only_input_required_is_retried_at_once() {
    let (mut r, c0) = Run::new("http://127.0.0.1:9/mcp", RemoteTransport::Stateless);
    r.connected(c0);
    let out = r.client(INIT);
    r.written_all(&out, Endpoint::Upstream(c0));
    let discovered = r#"{"jsonrpc":"2.0","id":"mcp-relay:discover","result":{"resultType":"complete","supportedVersions":["2026-07-28"],"capabilities":{"tools":{}},"serverInfo":{"name":"modern","version":"2"}}}"#;
    r.feed(c0, &json_response("200 OK", "", discovered));
    let shed = |id: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"result":{{"resultType":"input_required","requestState":"s{}"}}}}"#,
            id.trim_matches('"')
        )
    };
    let out = r.client(
        r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"t","arguments":{}}}"#,
    );
    r.written_all(&out, Endpoint::Upstream(c0));
    let out = r.feed(c0, &json_response("200 OK", "", &shed("4")));
    assert!(
        sent_in(&out, Endpoint::Conn(STDIO)).is_empty(),
        "{}",
        r.s.show()
    );
    let post = sent_in(&out, Endpoint::Upstream(c0));
    assert!(post.contains(r#""id":"mcp-relay:retry:1""#), "{post}");
    assert!(post.contains(r#""requestState":"s4""#), "{post}");
    assert!(!post.contains("inputResponses"), "{post}");
    r.written_all(&out, Endpoint::Upstream(c0));
    let done = r#"{"jsonrpc":"2.0","id":"mcp-relay:retry:1","result":{"resultType":"complete","content":[]}}"#;
    let out = r.feed(c0, &json_response("200 OK", "", done));
    assert_eq!(
        sent_in(&out, Endpoint::Conn(STDIO)),
        "{\"jsonrpc\":\"2.0\",\"id\":4,\"result\":{\"resultType\":\"complete\",\"content\":[]}}\n"
    );
    // A server that never settles: 10 retries, then an error for the client's request.
    let out = r.client(
        r#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"t","arguments":{}}}"#,
    );
    r.written_all(&out, Endpoint::Upstream(c0));
    let mut answered = shed("5");
    for n in 2..=11 {
        let out = r.feed(c0, &json_response("200 OK", "", &answered));
        assert!(
            sent_in(&out, Endpoint::Conn(STDIO)).is_empty(),
            "{}",
            r.s.show()
        );
        let id = format!("\"mcp-relay:retry:{n}\"");
        assert!(
            sent_in(&out, Endpoint::Upstream(c0)).contains(&format!(r#""id":{id}"#)),
            "{}",
            r.s.show()
        );
        r.written_all(&out, Endpoint::Upstream(c0));
        answered = shed(&id);
    }
    let out = r.feed(c0, &json_response("200 OK", "", &answered));
    let err: serde_json::Value =
        serde_json::from_str(sent_in(&out, Endpoint::Conn(STDIO)).trim()).unwrap();
    assert_eq!(err["id"], 5, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no input requests")),
        "{err}"
    );
    assert!(sent_in(&out, Endpoint::Upstream(c0)).is_empty());
}

/// Bug (core/src/remote/machine.rs, `queue_line`): a request's broken event stream was resumed
/// until its answer came, also after the client cancelled the request: a remote that ends the
/// stream of a cancelled call (it will send no answer) was asked again every `retry` until the
/// session ended. Found by `sim_remote::streamable_http_remote`, seed 15 (once the remote
/// judged it).
#[test]
fn the_stream_of_a_cancelled_request_is_not_resumed() {
    let (mut r, c0) = Run::new("http://127.0.0.1:9/mcp", RemoteTransport::StreamableHttp);
    r.connected(c0);
    r.initialize(c0);
    let out = r.client(r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"x"}}"#);
    r.written_all(&out, Endpoint::Upstream(c0));
    // The stream ends before the answer; it is to be resumed after 100 ms.
    r.feed(
        c0,
        &format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n{}0\r\n\r\n",
            chunk("id: e1\nretry: 100\ndata: \n\n")
        ),
    );
    // The client cancels the request.
    let out = r
        .client(r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":2}}"#);
    r.written_all(&out, Endpoint::Upstream(c0));
    r.feed(c0, "HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n");
    let out = r.s.advance(Duration::from_secs(1));
    assert!(
        connects(&out).is_empty(),
        "the stream of a cancelled request is resumed:\n{}",
        r.s.show()
    );
}

/// The same when the cancellation reached the relay before the stream broke (the request and
/// its cancellation were held through a restart and sent together). Found by
/// `sim_remote::streamable_http_remote`, seed 15.
#[test]
fn a_stream_that_breaks_after_its_request_was_cancelled_is_not_resumed() {
    let (mut r, c0) = Run::new("http://127.0.0.1:9/mcp", RemoteTransport::StreamableHttp);
    r.connected(c0);
    r.initialize(c0);
    let out = r.client(r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"x"}}"#);
    r.written_all(&out, Endpoint::Upstream(c0));
    r.feed(
        c0,
        &format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n{}",
            chunk("id: e1\nretry: 100\ndata: \n\n")
        ),
    );
    // The client cancels the request (on another connection); then the stream ends.
    let out = r
        .client(r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":2}}"#);
    let c1 = connects(&out)[0];
    let out = r.connected(c1);
    r.written_all(&out, Endpoint::Upstream(c1));
    r.feed(c1, "HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n");
    r.feed(c0, "0\r\n\r\n");
    let out = r.s.advance(Duration::from_secs(1));
    assert!(
        connects(&out).is_empty(),
        "the stream of a cancelled request is resumed:\n{}",
        r.s.show()
    );
}

/// Bug (core/src/session.rs, `note_client_message`; core/src/requests.rs): a request held for a
/// replacement (here a restarted remote) and then cancelled by the client stayed among the
/// requests waiting for an answer; released to the replacement with its cancellation, it got
/// none, and counted against `--max-in-flight` until the session ended. A cancellation now
/// takes a held request off too. Found by `sim_remote::legacy_sse_remote`, seed 46.
#[test]
fn a_held_request_that_the_client_cancels_no_longer_waits() {
    let (mut r, c0) = Run::new("http://127.0.0.1:9/mcp", RemoteTransport::StreamableHttp);
    r.connected(c0);
    r.initialize(c0);
    // The remote forgets the session: what the client sends now is held for the next one.
    let out = r.client(r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#);
    r.written_all(&out, Endpoint::Upstream(c0));
    r.feed(c0, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
    r.client(r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"x"}}"#);
    assert_eq!(r.s.relay.in_flight(STDIO), Some(2), "{}", r.s.show());
    r.client(r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":3}}"#);
    assert_eq!(
        r.s.relay.in_flight(STDIO),
        Some(1),
        "request 3 was cancelled and still waits:\n{}",
        r.s.show()
    );
}
