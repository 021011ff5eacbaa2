//! Several servers behind one relay (issue 13): each HTTP route reaches its own server, a
//! session is only ever reached on the route that made it, each server's own tokens open it
//! and nothing else, and `GET /servers` lists them.

use mcp_relay_core::{Config, ConnId, Endpoint, NamedServer, Output, ServerId};
use mcp_relay_tests::script::Script;

const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}"#;
const LIST: &str = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;

fn named(name: &str, default: bool, tokens: &[&str]) -> NamedServer {
    let mut config = Config {
        server_label: format!("./{name}-server --secret-arg"),
        ..Config::default()
    };
    config.http.auth_tokens = tokens.iter().map(|t| (*t).to_owned()).collect();
    NamedServer {
        name: name.into(),
        default,
        config,
    }
}

fn relay(servers: Vec<NamedServer>, tokens: &[&str]) -> Script {
    let mut config = Config::default();
    config.http.auth_tokens = tokens.iter().map(|t| (*t).to_owned()).collect();
    config.servers = servers;
    Script::new(config)
}

/// A request on HTTP connection `conn` (accepted first).
fn request(
    s: &mut Script,
    conn: u64,
    method: &str,
    path: &str,
    sid: Option<&str>,
    token: Option<&str>,
    body: &str,
) -> (String, Vec<Output>) {
    s.accept_http(conn);
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
    );
    if let Some(sid) = sid {
        head.push_str(&format!(
            "Mcp-Session-Id: {sid}\r\nMCP-Protocol-Version: 2025-06-18\r\n"
        ));
    }
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    let out = s.client_data(conn, head.as_bytes());
    let sent = String::from_utf8_lossy(&s.sent_to(Endpoint::Conn(ConnId(conn)))).into_owned();
    (sent, out)
}

fn spawned_for(out: &[Output]) -> Option<ServerId> {
    out.iter().find_map(|o| match o {
        Output::Spawn { server, .. } => Some(*server),
        _ => None,
    })
}

#[test]
fn each_route_reaches_its_own_server() {
    let mut s = relay(vec![named("a", true, &[]), named("b", false, &[])], &[]);
    let (_, out) = request(&mut s, 1, "POST", "/servers/b/mcp", None, None, INIT);
    assert_eq!(spawned_for(&out), Some(ServerId(1)), "{out:?}");
    let (_, out) = request(&mut s, 2, "POST", "/servers/a/mcp", None, None, INIT);
    assert_eq!(spawned_for(&out), Some(ServerId(0)), "{out:?}");
    // The bare route is the default server's.
    let (_, out) = request(&mut s, 3, "POST", "/mcp", None, None, INIT);
    assert_eq!(spawned_for(&out), Some(ServerId(0)), "{out:?}");
}

#[test]
fn a_session_is_reached_only_on_its_own_route() {
    let mut s = relay(vec![named("a", true, &[]), named("b", false, &[])], &[]);
    let (sent, out) = request(&mut s, 1, "POST", "/servers/b/mcp", None, None, INIT);
    let child = mcp_relay_tests::script::spawned_in(&out).expect("a child");
    s.spawned(child);
    s.child_data(
        child,
        br#"{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-06-18","capabilities":{},"serverInfo":{"name":"b","version":"0"}}}
"#,
    );
    let sent = format!(
        "{sent}{}",
        String::from_utf8_lossy(&s.sent_to(Endpoint::Conn(ConnId(1))))
    );
    let sid = sent
        .lines()
        .find_map(|l| l.strip_prefix("Mcp-Session-Id: "))
        .expect("a session id")
        .trim()
        .to_owned();
    for (conn, path) in [(2, "/servers/a/mcp"), (3, "/mcp")] {
        let (answer, out) = request(&mut s, conn, "POST", path, Some(&sid), None, LIST);
        assert!(answer.starts_with("HTTP/1.1 404"), "{path}: {answer}");
        assert!(spawned_for(&out).is_none());
    }
    let (answer, _) = request(&mut s, 4, "POST", "/servers/b/mcp", Some(&sid), None, LIST);
    assert!(!answer.starts_with("HTTP/1.1 4"), "{answer}");
    assert!(
        String::from_utf8_lossy(&s.sent_to(Endpoint::Child(child))).contains("tools/list"),
        "the list reached b's child"
    );
}

#[test]
fn unknown_servers_and_a_missing_default_are_named() {
    let mut s = relay(vec![named("a", false, &[]), named("b", false, &[])], &[]);
    let (answer, out) = request(&mut s, 1, "POST", "/servers/zz/mcp", None, None, INIT);
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert!(answer.contains(r#"no server named \"zz\""#), "{answer}");
    assert!(spawned_for(&out).is_none());
    let (answer, _) = request(&mut s, 2, "POST", "/mcp", None, None, INIT);
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert!(answer.contains("no default server"), "{answer}");
    assert!(answer.contains("/servers/NAME/mcp"), "{answer}");
    // One server is the default without saying so.
    let mut s = relay(vec![named("only", false, &[])], &[]);
    let (_, out) = request(&mut s, 1, "POST", "/mcp", None, None, INIT);
    assert_eq!(spawned_for(&out), Some(ServerId(0)));
}

#[test]
fn a_servers_own_tokens_open_it_and_nothing_else() {
    let mut s = relay(
        vec![named("a", true, &[]), named("b", false, &["b-token"])],
        &["relay-token"],
    );
    let (answer, out) = request(
        &mut s,
        1,
        "POST",
        "/servers/b/mcp",
        None,
        Some("b-token"),
        INIT,
    );
    assert_eq!(spawned_for(&out), Some(ServerId(1)), "{answer}");
    let (answer, out) = request(
        &mut s,
        2,
        "POST",
        "/servers/a/mcp",
        None,
        Some("b-token"),
        INIT,
    );
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(spawned_for(&out).is_none());
    let (answer, _) = request(&mut s, 3, "GET", "/servers", None, Some("b-token"), "");
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    // The relay's token opens every server.
    let (_, out) = request(
        &mut s,
        4,
        "POST",
        "/servers/b/mcp",
        None,
        Some("relay-token"),
        INIT,
    );
    assert_eq!(spawned_for(&out), Some(ServerId(1)));
    let (_, out) = request(&mut s, 5, "POST", "/mcp", None, Some("relay-token"), INIT);
    assert_eq!(spawned_for(&out), Some(ServerId(0)));
}

#[test]
fn get_servers_lists_them_without_their_arguments() {
    let mut s = relay(vec![named("a", true, &[]), named("b", false, &[])], &[]);
    request(&mut s, 1, "POST", "/servers/b/mcp", None, None, INIT);
    let (answer, _) = request(&mut s, 2, "GET", "/servers", None, None, "");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let body = answer.split_once("\r\n\r\n").expect("a body").1;
    let v: serde_json::Value = serde_json::from_str(body).expect("JSON");
    let servers = v["servers"].as_array().expect("a list");
    assert_eq!(servers.len(), 2);
    assert_eq!(servers[0]["name"], "a");
    assert_eq!(servers[0]["default"], true);
    assert_eq!(servers[0]["mcp"], "/servers/a/mcp");
    assert_eq!(servers[1]["name"], "b");
    assert_eq!(servers[1]["sessions"], 1);
    assert_eq!(servers[1]["transport"], "stdio");
    assert_eq!(servers[1]["server"], "./b-server");
    assert!(!body.contains("secret-arg"), "{body}");
}

#[test]
fn a_legacy_stream_posts_to_its_own_servers_messages() {
    let mut s = relay(vec![named("a", true, &[]), named("b", false, &[])], &[]);
    let (answer, out) = request(&mut s, 1, "GET", "/servers/b/sse", None, None, "");
    assert_eq!(spawned_for(&out), Some(ServerId(1)), "{answer}");
    assert!(
        answer.contains("data: /servers/b/messages?sessionId="),
        "{answer}"
    );
    let (answer, out) = request(&mut s, 2, "GET", "/sse", None, None, "");
    assert_eq!(spawned_for(&out), Some(ServerId(0)), "{answer}");
    assert!(answer.contains("data: /messages?sessionId="), "{answer}");
}

#[test]
fn each_server_prespawns_its_own() {
    let mut b = named("b", false, &[]);
    b.config.prespawn = 2;
    let mut s = relay(vec![named("a", true, &[]), b], &[]);
    let now = s.clock.now();
    s.relay.start(now);
    let mut started = Vec::new();
    while let Some(o) = s.relay.poll_output() {
        if let Output::Spawn { server, .. } = o {
            started.push(server);
        }
    }
    assert_eq!(started, [ServerId(1), ServerId(1)]);
    // A session of b takes one of them; one of a starts its own.
    let (_, out) = request(&mut s, 1, "POST", "/servers/b/mcp", None, None, INIT);
    assert!(
        out.iter()
            .all(|o| !matches!(o, Output::Spawn { server, .. } if *server == ServerId(0))),
        "{out:?}"
    );
    let (_, out) = request(&mut s, 2, "POST", "/servers/a/mcp", None, None, INIT);
    assert_eq!(spawned_for(&out), Some(ServerId(0)));
}

#[test]
fn a_tcp_listener_serves_the_server_it_names() {
    let mut s = relay(vec![named("a", true, &[]), named("b", false, &[])], &[]);
    for (conn, server, expect) in [(1, Some(ServerId(1)), ServerId(1)), (2, None, ServerId(0))] {
        let out = s.input(mcp_relay_core::Input::Accepted {
            conn: ConnId(conn),
            local: "127.0.0.1:9000".parse().expect("an address"),
            peer: "127.0.0.1:40000".parse().expect("an address"),
            transport: mcp_relay_core::Transport::Tcp,
            server,
        });
        assert_eq!(spawned_for(&out), Some(expect), "{out:?}");
    }
}

#[test]
fn a_reload_keeps_unchanged_servers_retires_removed_ones_and_routes_to_new_ones() {
    let mut b = named("b", false, &[]);
    b.config.prespawn = 1;
    let mut s = relay(vec![named("a", true, &[]), b, named("c", false, &[])], &[]);
    let now = s.clock.now();
    s.relay.start(now);
    while s.relay.poll_output().is_some() {}
    // A session on b, before the reload.
    let (_, out) = request(&mut s, 1, "POST", "/servers/b/mcp", None, None, INIT);
    assert!(
        out.iter().all(|o| !matches!(o, Output::Spawn { .. })),
        "b's session took the prespawned child: {out:?}"
    );
    let sent = String::from_utf8_lossy(&s.sent_to(Endpoint::Conn(ConnId(1)))).into_owned();
    assert!(sent.is_empty() || !sent.starts_with("HTTP/1.1 4"), "{sent}");
    // a is kept (id 0), b changes (id 3), c is removed, d is added (id 4).
    let servers = vec![
        (ServerId(0), named("a", true, &[])),
        (ServerId(3), named("b", false, &[])),
        (ServerId(4), named("d", false, &[])),
    ];
    let out = s.input(mcp_relay_core::Input::Reconfigure { servers: &servers });
    // b's old prespawned replacement is stopped (its stdin closed), nothing new is started
    // for the new b (no prespawn), none for d.
    assert!(
        out.iter().all(|o| !matches!(o, Output::Spawn { .. })),
        "{out:?}"
    );
    let (answer, out) = request(&mut s, 2, "POST", "/servers/c/mcp", None, None, INIT);
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert!(spawned_for(&out).is_none());
    let (_, out) = request(&mut s, 3, "POST", "/servers/b/mcp", None, None, INIT);
    assert_eq!(
        spawned_for(&out),
        Some(ServerId(3)),
        "a new session gets the new b"
    );
    let (_, out) = request(&mut s, 4, "POST", "/servers/d/mcp", None, None, INIT);
    assert_eq!(spawned_for(&out), Some(ServerId(4)));
    let (_, out) = request(&mut s, 5, "POST", "/mcp", None, None, INIT);
    assert_eq!(spawned_for(&out), Some(ServerId(0)), "a is untouched");
    // The retired b is listed as such while its session lives.
    let (answer, _) = request(&mut s, 6, "GET", "/servers", None, None, "");
    let body = answer.split_once("\r\n\r\n").expect("a body").1;
    let v: serde_json::Value = serde_json::from_str(body).expect("JSON");
    let listed: Vec<(String, bool)> = v["servers"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or_default().to_owned(),
                s["retired"].as_bool().unwrap_or_default(),
            )
        })
        .collect();
    assert!(listed.contains(&("b".into(), true)), "{listed:?}");
    assert!(listed.contains(&("b".into(), false)), "{listed:?}");
    assert!(
        !listed.iter().any(|(n, _)| n == "c"),
        "c had nothing left: {listed:?}"
    );
}

#[test]
fn a_tcp_listener_follows_its_servers_name_across_a_reload() {
    let mut s = relay(vec![named("a", true, &[]), named("b", false, &[])], &[]);
    let servers = vec![
        (ServerId(0), named("a", true, &[])),
        (ServerId(2), named("b", false, &[])),
    ];
    s.input(mcp_relay_core::Input::Reconfigure { servers: &servers });
    let out = s.input(mcp_relay_core::Input::Accepted {
        conn: ConnId(1),
        local: "127.0.0.1:9000".parse().expect("an address"),
        peer: "127.0.0.1:40000".parse().expect("an address"),
        transport: mcp_relay_core::Transport::Tcp,
        server: Some(ServerId(1)),
    });
    assert_eq!(spawned_for(&out), Some(ServerId(2)), "{out:?}");
}

#[test]
fn each_server_has_its_health_and_labelled_metrics() {
    let mut s = relay(vec![named("a", true, &[]), named("b", false, &[])], &[]);
    request(&mut s, 1, "POST", "/servers/b/mcp", None, None, INIT);
    request(&mut s, 2, "POST", "/servers/b/mcp", None, None, INIT);
    let (answer, _) = request(&mut s, 3, "GET", "/servers/b/healthz", None, None, "");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let body = answer.split_once("\r\n\r\n").expect("a body").1;
    let v: serde_json::Value = serde_json::from_str(body).expect("JSON");
    assert_eq!(v["server"], "b");
    assert_eq!(v["status"], "ok");
    assert_eq!(v["sessions"], 2);
    let (answer, _) = request(&mut s, 4, "GET", "/servers/zz/healthz", None, None, "");
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    let (answer, _) = request(&mut s, 5, "GET", "/metrics", None, None, "");
    assert!(
        answer.contains("mcp_relay_server_sessions_open{server=\"b\"} 2"),
        "{answer}"
    );
    assert!(
        answer.contains("mcp_relay_server_sessions_created_total{server=\"a\"} 0"),
        "{answer}"
    );
}

/// Scripted children that say which server they are: each answers what the relay wrote to
/// it since the last call (`seen`: bytes of each child's stdin already answered), until
/// nothing new is written. `server_of`: the server each child was started for.
fn serve_children(
    s: &mut Script,
    seen: &mut std::collections::BTreeMap<mcp_relay_core::ChildId, usize>,
    names: &std::collections::BTreeMap<ServerId, &str>,
) {
    use serde_json::{json, Value};
    for _ in 0..100 {
        let children: Vec<(mcp_relay_core::ChildId, ServerId)> = s
            .log
            .iter()
            .filter_map(|(_, o)| match o {
                Output::Spawn { child, server, .. } => Some((*child, *server)),
                _ => None,
            })
            .collect();
        let mut any = false;
        for (child, server) in children {
            if let std::collections::btree_map::Entry::Vacant(e) = seen.entry(child) {
                e.insert(0);
                s.spawned(child);
            }
            let to = Endpoint::Child(child);
            let sent = s.sent_to(to);
            let from = seen[&child];
            if sent.len() == from {
                continue;
            }
            any = true;
            seen.insert(child, sent.len());
            s.written(to, sent.len() - from);
            let name = names.get(&server).copied().unwrap_or("?");
            for line in sent[from..].split(|b| *b == b'\n') {
                let Ok(msg) = serde_json::from_slice::<Value>(line) else {
                    continue;
                };
                let Some(id) = msg.get("id").cloned() else {
                    continue;
                };
                let result = match msg["method"].as_str().unwrap_or("") {
                    "initialize" => json!({
                        "protocolVersion": msg["params"]["protocolVersion"],
                        "capabilities": {"tools": {"listChanged": true}},
                        "serverInfo": {"name": name, "version": "0"},
                    }),
                    "tools/list" => json!({"tools": [
                        {"name": format!("who-{name}"), "inputSchema": {"type": "object"}}
                    ]}),
                    "tools/call" if msg["params"]["name"] == "ask" => {
                        // Asks the client first: the answer waits for its retry.
                        let ask = json!({"jsonrpc": "2.0", "id": "q1", "method": "elicitation/create",
                            "params": {"message": "sure?", "requestedSchema": {"type": "object", "properties": {}}}});
                        s.child_data(child, format!("{ask}\n").as_bytes());
                        continue;
                    }
                    "tools/call" => json!({"content": [{"type": "text", "text": name}]}),
                    _ => json!({}),
                };
                let mut answer = json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string();
                answer.push('\n');
                s.child_data(child, answer.as_bytes());
            }
        }
        if !any {
            return;
        }
    }
    panic!("the children kept being written to:\n{}", s.show());
}

/// A 2026-07-28 (stateless) POST of `method` to `path`.
fn modern(s: &mut Script, conn: u64, path: &str, id: u64, method: &str, params: &str) -> String {
    s.accept_http(conn);
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"{method}","params":{{{params}"_meta":{{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{{"elicitation":{{}}}}}}}}}}"#
    );
    let name = if method == "tools/call" {
        params
            .split('"')
            .nth(3)
            .map(|n| format!("Mcp-Name: {n}\r\n"))
            .unwrap_or_default()
    } else {
        String::new()
    };
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMCP-Protocol-Version: 2026-07-28\r\nMcp-Method: {method}\r\n{name}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.client_data(conn, head.as_bytes());
    String::from_utf8_lossy(&s.sent_to(Endpoint::Conn(ConnId(conn)))).into_owned()
}

#[test]
fn the_stateless_era_reaches_each_servers_own_pool_on_its_route() {
    let mut s = relay(vec![named("a", true, &[]), named("b", false, &[])], &[]);
    let names = [(ServerId(0), "a"), (ServerId(1), "b")]
        .into_iter()
        .collect();
    let mut seen = Default::default();
    let mut conn = 0;
    let mut ask = |s: &mut Script, path: &str, method: &str, params: &str| {
        conn += 1;
        modern(s, conn, path, conn, method, params);
        serve_children(s, &mut seen, &names);
        String::from_utf8_lossy(&s.sent_to(Endpoint::Conn(ConnId(conn)))).into_owned()
    };
    for (path, name) in [
        ("/servers/b/mcp", "b"),
        ("/mcp", "a"),
        ("/servers/a/mcp", "a"),
    ] {
        let discover = ask(&mut s, path, "server/discover", "");
        assert!(discover.starts_with("HTTP/1.1 200"), "{discover}");
        assert!(
            discover.contains(&format!(r#""name":"{name}""#)),
            "{path} discovers {name}: {discover}"
        );
        let call = ask(
            &mut s,
            path,
            "tools/call",
            &format!(r#""name":"who-{name}","arguments":{{}},"#),
        );
        assert!(call.starts_with("HTTP/1.1 200"), "{call}");
        assert!(
            call.contains(&format!(r#""text":"{name}""#)),
            "{path} calls {name}'s tool: {call}"
        );
    }
    // One pool child per server, each started for its own.
    let spawns: Vec<ServerId> = s
        .log
        .iter()
        .filter_map(|(_, o)| match o {
            Output::Spawn { server, .. } => Some(*server),
            _ => None,
        })
        .collect();
    assert_eq!(spawns, vec![ServerId(1), ServerId(0)], "{}", s.show());
}

#[test]
fn a_removed_servers_sessions_are_drained_after_the_retire_timeout() {
    let mut b = named("b", false, &[]);
    b.config.ping_interval = None;
    b.config.retire_timeout = Some(std::time::Duration::from_secs(60));
    let mut s = relay(vec![named("a", true, &[]), b], &[]);
    let (_, out) = request(&mut s, 1, "POST", "/servers/b/mcp", None, None, INIT);
    let child = mcp_relay_tests::script::spawned_in(&out).expect("b's child");
    s.spawned(child);
    let to = Endpoint::Child(child);
    let n = s.sent_to(to).len();
    s.written(to, n);
    s.child_data(
        child,
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"protocolVersion\":\"2025-06-18\",\"capabilities\":{},\"serverInfo\":{\"name\":\"b\",\"version\":\"0\"}}}\n",
    );
    let closed = |s: &Script| {
        s.log.iter().any(
            |(_, o)| matches!(o, Output::Close { endpoint: Endpoint::Child(c) } if *c == child),
        )
    };
    let servers = vec![(ServerId(0), named("a", true, &[]))];
    s.input(mcp_relay_core::Input::Reconfigure { servers: &servers });
    s.advance(std::time::Duration::from_secs(59));
    assert!(
        !closed(&s),
        "b's session goes on within the timeout:\n{}",
        s.show()
    );
    s.advance(std::time::Duration::from_secs(2));
    assert!(closed(&s), "b's session is drained after it:\n{}", s.show());
}

#[test]
fn a_request_state_is_honoured_only_on_the_route_that_issued_it() {
    let mut s = relay(vec![named("a", true, &[]), named("b", false, &[])], &[]);
    let names = [(ServerId(0), "a"), (ServerId(1), "b")]
        .into_iter()
        .collect();
    let mut seen = Default::default();
    let caps = r#""name":"ask","arguments":{},"#;
    modern(&mut s, 1, "/servers/b/mcp", 1, "tools/call", caps);
    serve_children(&mut s, &mut seen, &names);
    // The round of requests to the client is gathered for a moment.
    s.advance(std::time::Duration::from_secs(1));
    let sent = String::from_utf8_lossy(&s.sent_to(Endpoint::Conn(ConnId(1)))).into_owned();
    let state = sent
        .split("\"requestState\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("an input_required answer: {sent}"))
        .to_owned();
    let body = sent.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let asked = body
        .split("\"inputRequests\":{\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("an input request: {body}"));
    let retry = format!(
        r#""name":"ask","arguments":{{}},"requestState":"{state}","inputResponses":{{"{asked}":{{"action":"accept","content":{{}}}}}},"#
    );
    for (conn, path) in [(2, "/servers/a/mcp"), (3, "/mcp")] {
        let answer = modern(&mut s, conn, path, conn, "tools/call", &retry);
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
        assert!(
            answer.contains("requestState is not one this relay issued"),
            "{answer}"
        );
    }
    // On its own route it resumes the request (the child gets the client's answer).
    modern(&mut s, 4, "/servers/b/mcp", 4, "tools/call", &retry);
    let child_in = s
        .log
        .iter()
        .filter_map(|(_, o)| match o {
            Output::Send {
                to: Endpoint::Child(_),
                data,
            } => Some(String::from_utf8_lossy(data).into_owned()),
            _ => None,
        })
        .collect::<String>();
    assert!(child_in.contains(r#""id":"q1""#), "{child_in}");
}
