//! Client mode, driven by hand: the relay's own stdio client in front of a scripted remote
//! (Streamable HTTP, HTTP+SSE, TCP), one exact sequence of bytes at a time.

use mcp_relay_core::{
    ChildId, Config, ConnId, Endpoint, Input, Output, RemoteConfig, RemoteTransport, RemoteUrl,
    UpId,
};
use mcp_relay_tests::script::Script;
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

/// What was sent to `to` in these outputs, as text.
fn sent(out: &[Output], to: Endpoint) -> String {
    let mut s = Vec::new();
    for o in out {
        if let Output::Send { to: t, data } = o {
            if *t == to {
                s.extend_from_slice(data);
            }
        }
    }
    String::from_utf8(s).unwrap()
}

fn json_response(status: &str, headers: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
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
        let mut s = Script::new(config(url, transport));
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

    /// Acknowledges every byte sent to `to`.
    fn written_all(&mut self, out: &[Output], to: Endpoint) -> Vec<Output> {
        let n = sent(out, to).len();
        self.s.written(to, n)
    }

    /// Initializes over connection `c` (already connected); returns the session id given.
    fn initialize(&mut self, c: UpId) {
        let out = self.client(INIT);
        let post = sent(&out, Endpoint::Upstream(c));
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
        assert_eq!(sent(&out, Endpoint::Conn(STDIO)), format!("{INIT_OK}\n"));
    }
}

#[test]
fn streamable_http_initialize_then_notification_opens_the_get_stream() {
    let (mut r, c0) = Run::new("http://127.0.0.1:9/mcp", RemoteTransport::Auto);
    r.connected(c0);
    r.initialize(c0);
    let out = r.client(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    let post = sent(&out, Endpoint::Upstream(c0));
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
        sent(&out, Endpoint::Upstream(c0)).is_empty(),
        "{}",
        r.s.show()
    );
    let out = r.connected(get[0]);
    let head = sent(&out, Endpoint::Upstream(get[0]));
    assert!(head.starts_with("GET /mcp HTTP/1.1\r\n"), "{head}");
    assert!(head.contains("Accept: text/event-stream"), "{head}");
    let out = r.feed(
        get[0],
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    assert!(sent(&out, Endpoint::Conn(STDIO)).is_empty());
    assert!(
        sent(&out, Endpoint::Upstream(c0)).ends_with(list),
        "{}",
        r.s.show()
    );
    let note = r#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#;
    let out = r.feed(get[0], &chunk(&format!("id: 9\ndata: {note}\n\n")));
    assert_eq!(sent(&out, Endpoint::Conn(STDIO)), format!("{note}\n"));
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
    assert_eq!(sent(&out, Endpoint::Conn(STDIO)), format!("{progress}\n"));
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
    let head = sent(&out, Endpoint::Upstream(c[0]));
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
    assert_eq!(sent(&out, Endpoint::Conn(STDIO)), format!("{answer}\n"));
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
        sent(&out, Endpoint::Conn(STDIO)).is_empty(),
        "the request is not answered: it is retried"
    );
    // The replacement connects after the restart delay.
    let out = r.s.advance(Duration::from_secs(1));
    let c = connects(&out);
    assert_eq!(c.len(), 1, "{}", r.s.show());
    assert_eq!(c[0].server, ChildId(2));
    let out = r.connected(c[0]);
    let post = sent(&out, Endpoint::Upstream(c[0]));
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
    let to_client = sent(&out, Endpoint::Conn(STDIO));
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
    let head = sent(&out, Endpoint::Upstream(c[0]));
    assert!(head.starts_with("GET /sse HTTP/1.1\r\n"), "{head}");
    r.written_all(&out, Endpoint::Upstream(c[0]));
    let out = r.feed(
        c[0],
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\nevent: endpoint\ndata: /messages?session=7\n\n",
    );
    // The initialize goes to the endpoint, on a pooled connection.
    let post = sent(&out, Endpoint::Upstream(c0));
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
    assert_eq!(sent(&out, Endpoint::Conn(STDIO)), format!("{INIT_OK}\n"));
}

#[test]
fn tcp_remote_carries_lines_both_ways() {
    let (mut r, c0) = Run::new("tcp://127.0.0.1:9", RemoteTransport::Auto);
    let out = r.client(INIT);
    assert!(
        sent(&out, Endpoint::Upstream(c0)).is_empty(),
        "nothing before the connection"
    );
    let out = r.connected(c0);
    assert_eq!(sent(&out, Endpoint::Upstream(c0)), format!("{INIT}\n"));
    let out = r.feed(c0, &format!("{INIT_OK}\n"));
    assert_eq!(sent(&out, Endpoint::Conn(STDIO)), format!("{INIT_OK}\n"));
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
        sent(&out, Endpoint::Conn(STDIO)).is_empty(),
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
        answered.push_str(&sent(
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
    assert_eq!(sent(&out, Endpoint::Conn(STDIO)), format!("{ok}\n"));
    let out = r.client(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    let post = sent(&out, Endpoint::Upstream(c0));
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
        let sent_up = sent(&out, Endpoint::Upstream(c0));
        assert!(sent_up.contains(INIT), "{url}: {}", r.s.show());
        r.written_all(&out, Endpoint::Upstream(c0));
        let answer = if url.starts_with("tcp") {
            format!("{INIT_OK}\n")
        } else {
            json_response("200 OK", "Mcp-Session-Id: s1\r\n", INIT_OK)
        };
        let out = r.feed(c0, &answer);
        assert_eq!(
            sent(&out, Endpoint::Conn(STDIO)),
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
            let delete = sent(&out, Endpoint::Upstream(c0));
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

#[test]
fn a_2026_07_28_remote_is_discovered_and_spoken_to_in_its_era() {
    let (mut r, c0) = Run::new("http://127.0.0.1:9/mcp", RemoteTransport::Auto);
    r.connected(c0);
    let out = r.client(INIT);
    r.written_all(&out, Endpoint::Upstream(c0));
    let refusal = r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32022,"message":"Unsupported protocol version","data":{"supported":["2026-07-28"],"requested":""}}}"#;
    let out = r.feed(c0, &json_response("400 Bad Request", "", refusal));
    assert!(
        sent(&out, Endpoint::Conn(STDIO)).is_empty(),
        "{}",
        r.s.show()
    );
    let post = sent(&out, Endpoint::Upstream(c0));
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
        serde_json::from_str(sent(&out, Endpoint::Conn(STDIO)).trim()).unwrap();
    assert_eq!(init["id"], 1);
    assert_eq!(init["result"]["protocolVersion"], "2025-06-18");
    assert_eq!(init["result"]["serverInfo"]["name"], "modern");
    // No session: notifications/initialized goes nowhere, ping is answered here.
    let out = r.client(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    assert!(sent(&out, Endpoint::Upstream(c0)).is_empty());
    let out = r.client(r#"{"jsonrpc":"2.0","id":3,"method":"ping"}"#);
    assert_eq!(
        sent(&out, Endpoint::Conn(STDIO)),
        "{\"id\":3,\"jsonrpc\":\"2.0\",\"result\":{}}\n"
    );
    // A call that needs input: the relay asks the client, then retries with its answer.
    let out = r.client(
        r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"t","arguments":{}}}"#,
    );
    let post = sent(&out, Endpoint::Upstream(c0));
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
        serde_json::from_str(sent(&out, Endpoint::Conn(STDIO)).trim()).unwrap();
    assert_eq!(ask["method"], "elicitation/create");
    assert_eq!(ask["id"], "mcp-relay:input:1");
    let out = r.client(
        r#"{"jsonrpc":"2.0","id":"mcp-relay:input:1","result":{"action":"accept","content":{}}}"#,
    );
    let post = sent(&out, Endpoint::Upstream(c0));
    assert!(
        post.contains(r#""inputResponses":{"who":{"action":"accept","content":{}}}"#),
        "{post}"
    );
    assert!(post.contains(r#""requestState":"st""#), "{post}");
    r.written_all(&out, Endpoint::Upstream(c0));
    let done = r#"{"jsonrpc":"2.0","id":4,"result":{"resultType":"complete","content":[]}}"#;
    let out = r.feed(c0, &json_response("200 OK", "", done));
    assert_eq!(sent(&out, Endpoint::Conn(STDIO)), format!("{done}\n"));
}

#[test]
fn a_2026_07_28_remote_s_notifications_come_through_a_listen_stream() {
    let (mut r, c0) = Run::new("http://127.0.0.1:9/mcp", RemoteTransport::Stateless);
    r.connected(c0);
    let out = r.client(INIT);
    let post = sent(&out, Endpoint::Upstream(c0));
    assert!(
        post.contains("\r\nMcp-Method: server/discover\r\n"),
        "{post}"
    );
    r.written_all(&out, Endpoint::Upstream(c0));
    let discovered = r#"{"jsonrpc":"2.0","id":"mcp-relay:discover","result":{"resultType":"complete","supportedVersions":["2026-07-28"],"capabilities":{"tools":{"listChanged":true},"resources":{"subscribe":true}},"serverInfo":{"name":"modern","version":"2"}}}"#;
    let out = r.feed(c0, &json_response("200 OK", "", discovered));
    assert!(sent(&out, Endpoint::Conn(STDIO)).contains(r#""name":"modern""#));
    // The listen stream, for the list changes the server offers.
    let listen = sent(&out, Endpoint::Upstream(c0));
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
    assert_eq!(sent(&out, Endpoint::Conn(STDIO)), format!("{changed}\n"));
    // A subscription is answered here and watched by a new listen stream.
    let out = r.client(
        r#"{"jsonrpc":"2.0","id":9,"method":"resources/subscribe","params":{"uri":"a://b"}}"#,
    );
    assert_eq!(
        sent(&out, Endpoint::Conn(STDIO)),
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
    let listen = sent(&out, Endpoint::Upstream(c[0]));
    assert!(
        listen.contains(r#""resourceSubscriptions":["a://b"]"#),
        "{listen}"
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
    assert!(sent(&out, Endpoint::Upstream(c0)).contains(r#""id":4,"#));
    r.written_all(&out, Endpoint::Upstream(c0));
    r.feed(c0, &json_response("200 OK", "", &needs("4")));
    let out = r.client(r#"{"jsonrpc":"2.0","id":"mcp-relay:input:1","result":{"roots":[]}}"#);
    let post = sent(&out, Endpoint::Upstream(c0));
    assert!(post.contains(r#""id":"mcp-relay:retry:1""#), "{post}");
    assert!(!post.contains(r#""id":4"#), "{post}");
    r.written_all(&out, Endpoint::Upstream(c0));
    let done = r#"{"jsonrpc":"2.0","id":"mcp-relay:retry:1","result":{"resultType":"complete","content":[]}}"#;
    let out = r.feed(c0, &json_response("200 OK", "", done));
    assert_eq!(
        sent(&out, Endpoint::Conn(STDIO)),
        "{\"jsonrpc\":\"2.0\",\"id\":4,\"result\":{\"resultType\":\"complete\",\"content\":[]}}\n"
    );
    // Round 2 asks again: the next retry has yet another id; cancelling the client's
    // request closes the stream it is on.
    let out = r.client(&call(5));
    r.written_all(&out, Endpoint::Upstream(c0));
    r.feed(c0, &json_response("200 OK", "", &needs("5")));
    let out = r.client(r#"{"jsonrpc":"2.0","id":"mcp-relay:input:2","result":{"roots":[]}}"#);
    assert!(sent(&out, Endpoint::Upstream(c0)).contains(r#""id":"mcp-relay:retry:2""#));
    r.written_all(&out, Endpoint::Upstream(c0));
    r.feed(
        c0,
        &json_response("200 OK", "", &needs(r#""mcp-relay:retry:2""#)),
    );
    let out = r.client(r#"{"jsonrpc":"2.0","id":"mcp-relay:input:3","result":{"roots":[]}}"#);
    assert!(sent(&out, Endpoint::Upstream(c0)).contains(r#""id":"mcp-relay:retry:3""#));
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
        sent(&out, Endpoint::Conn(STDIO)).is_empty(),
        "{}",
        r.s.show()
    );
    let post = sent(&out, Endpoint::Upstream(c0));
    assert!(post.contains(r#""id":"mcp-relay:retry:1""#), "{post}");
    assert!(post.contains(r#""requestState":"s4""#), "{post}");
    assert!(!post.contains("inputResponses"), "{post}");
    r.written_all(&out, Endpoint::Upstream(c0));
    let done = r#"{"jsonrpc":"2.0","id":"mcp-relay:retry:1","result":{"resultType":"complete","content":[]}}"#;
    let out = r.feed(c0, &json_response("200 OK", "", done));
    assert_eq!(
        sent(&out, Endpoint::Conn(STDIO)),
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
            sent(&out, Endpoint::Conn(STDIO)).is_empty(),
            "{}",
            r.s.show()
        );
        let id = format!("\"mcp-relay:retry:{n}\"");
        assert!(
            sent(&out, Endpoint::Upstream(c0)).contains(&format!(r#""id":{id}"#)),
            "{}",
            r.s.show()
        );
        r.written_all(&out, Endpoint::Upstream(c0));
        answered = shed(&id);
    }
    let out = r.feed(c0, &json_response("200 OK", "", &answered));
    let err: serde_json::Value =
        serde_json::from_str(sent(&out, Endpoint::Conn(STDIO)).trim()).unwrap();
    assert_eq!(err["id"], 5, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no input requests")),
        "{err}"
    );
    assert!(sent(&out, Endpoint::Upstream(c0)).is_empty());
}
