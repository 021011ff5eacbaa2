//! End to end, issue 17's logs: `--log-messages` (a line per JSON-RPC message, over TCP and
//! HTTP, with method, id, size and the answer's latency; payloads at trace only), the HTTP
//! access log (a line per request with status, bytes, duration, the client's address, the
//! session; never the query), client addresses on HTTP session lines, `--log-format json`,
//! no timestamps when stderr is the journal (`JOURNAL_STREAM`), and no secret in any of it.

mod http_support;

use http_support::{open_session, tool_call, tool_text, HttpRelay, DEADLINE, MCP_POST};
use mcp_relay_tests::process::{relay_bin, Log};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::Arc;

/// `--listen http://127.0.0.1:0 --listen 127.0.0.1:0 --demo` plus `args`, at `RUST_LOG`
/// `level`; returns the relay and its TCP address.
fn start(args: &[&str], level: &'static str) -> (HttpRelay, SocketAddr) {
    let relay = HttpRelay::builder()
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .demo()
        .log_level(level)
        .start();
    let line = relay.wait_log("listening on tcp://", DEADLINE);
    let tcp = line
        .split("listening on tcp://")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|a| a.trim().parse().ok())
        .unwrap_or_else(|| panic!("no TCP address in {line:?}"));
    (relay, tcp)
}

/// A TCP client that has initialized; the lines it sent, in order.
struct TcpClient {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl TcpClient {
    fn connect(addr: SocketAddr) -> TcpClient {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
        let reader = BufReader::new(stream.try_clone().expect("clone"));
        TcpClient { stream, reader }
    }

    fn send(&mut self, msg: &Value) -> usize {
        let line = msg.to_string();
        self.stream
            .write_all(format!("{line}\n").as_bytes())
            .expect("write");
        line.len()
    }

    /// The answer to request `id`, and its size on the wire (without its newline).
    fn answer(&mut self, id: i64) -> (Value, usize) {
        loop {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).expect("read");
            assert!(n > 0, "the relay closed the connection");
            let v: Value = serde_json::from_str(&line).expect("JSON");
            if v["id"] == json!(id) {
                return (v, line.trim_end().len());
            }
        }
    }
}

fn initialize(id: i64) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "e2e-logs", "version": "0"}}})
}

/// The number before ` ms` in a message or access line.
fn millis(line: &str) -> f64 {
    let before = line
        .rsplit_once(" ms")
        .map(|(b, _)| b)
        .unwrap_or_else(|| panic!("no latency in {line:?}"));
    before
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number before ms in {line:?}"))
}

#[test]
fn message_lines_over_tcp_and_http_name_method_id_size_and_latency() {
    let (relay, tcp) = start(&["--log-messages"], "info");

    // TCP.
    let mut c = TcpClient::connect(tcp);
    let local = c.stream.local_addr().expect("local address");
    let init_len = c.send(&initialize(1));
    c.answer(1);
    c.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    let call_len = c.send(&tool_call(2, "echo", json!({"message": "over tcp"})));
    let (answer, answer_len) = c.answer(2);
    assert_eq!(tool_text(&answer), "over tcp");
    let label = format!(" {local}: ");
    let line = relay.wait_log(&format!("{label}client→server initialize id 1"), DEADLINE);
    assert!(line.contains(&format!(", {init_len} bytes")), "{line}");
    let line = relay.wait_log(&format!("{label}client→server tools/call id 2"), DEADLINE);
    assert!(line.contains(&format!(", {call_len} bytes")), "{line}");
    relay.wait_log(
        &format!("{label}client→server notifications/initialized,"),
        DEADLINE,
    );
    let line = relay.wait_log(&format!("{label}server→client response id 2,"), DEADLINE);
    assert!(line.contains(" bytes, "), "{line}");
    assert!(millis(&line) >= 0.0, "{line}");
    assert!(
        line.contains(&format!(", {answer_len} bytes")),
        "{line} (answer of {answer_len} bytes)"
    );
    // An error answer says so, with its code.
    c.send(&json!({"jsonrpc": "2.0", "id": 3, "method": "no/such/method"}));
    assert!(c.answer(3).0.get("error").is_some());
    let line = relay.wait_log(
        &format!("{label}server→client error -32601 id 3,"),
        DEADLINE,
    );
    millis(&line);

    // HTTP.
    let mut h = relay.connect();
    let local = h.stream().local_addr().expect("local address");
    let session = open_session(&mut h, "2025-06-18");
    let resp = h.post_mcp(
        Some(&session),
        &tool_call(7, "echo", json!({"message": "over http"})),
    );
    assert_eq!(resp.status(), 200, "{resp:?}");
    let label = format!("session {}… {local}: ", short(&session));
    relay.wait_log(&format!("{label}client→server initialize id 1,"), DEADLINE);
    let line = relay.wait_log(&format!("{label}client→server tools/call id 7,"), DEADLINE);
    let sent = tool_call(7, "echo", json!({"message": "over http"})).to_string();
    assert!(line.contains(&format!(", {} bytes", sent.len())), "{line}");
    let line = relay.wait_log(&format!("{label}server→client response id 7,"), DEADLINE);
    millis(&line);
    // The session's own lines name the client's address too.
    relay.wait_log(&format!("{label}starting "), DEADLINE);
    // Payloads are for trace only.
    assert_eq!(relay.log_count("payload:"), 0, "{}", relay.log_text());
}

#[test]
fn access_log_has_a_line_per_request_and_message_lines_are_off_by_default() {
    let (relay, _) = start(&[], "info");
    let mut h = relay.connect();
    let local = h.stream().local_addr().expect("local address");
    let prefix = |method: &str, path: &str| format!("{local} \"{method} {path}\" ");

    let resp = h.request("GET", "/healthz?secret=query-value-9d2e", &[], b"");
    assert_eq!(resp.status(), 200);
    let line = relay.wait_log(&prefix("GET", "/healthz"), DEADLINE);
    assert!(line.contains("\" 200 "), "{line}");
    let bytes: usize = line
        .split("\" 200 ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no byte count in {line:?}"));
    assert!(bytes > resp.body.len(), "{line}: head and body are counted");
    millis(&line);

    let session = open_session(&mut h, "2025-06-18");
    let line = relay.wait_log(&prefix("POST", "/mcp"), DEADLINE);
    assert!(line.contains("\" 200 "), "{line}");
    assert!(
        line.ends_with(&format!("session={}…", short(&session))),
        "{line}"
    );
    // The notification's 202 names the session it came with.
    let line = relay.wait_log("\"POST /mcp\" 202 ", DEADLINE);
    assert!(
        line.ends_with(&format!("session={}…", short(&session))),
        "{line}"
    );

    // An unknown session: 404, and no session named.
    let resp = h.post_mcp(
        Some("0123456789abcdef0123456789abcdef"),
        &json!({
        "jsonrpc": "2.0", "id": 5, "method": "tools/list"}),
    );
    assert_eq!(resp.status(), 404);
    let line = relay.wait_log(
        &format!("{} 404 ", prefix("POST", "/mcp").trim_end()),
        DEADLINE,
    );
    assert!(!line.contains("session="), "{line}");

    // The GET stream is logged when it ends (here: the client closes it).
    let mut g = relay.connect();
    let g_local = g.stream().local_addr().expect("local address");
    let mut headers = vec![("Accept", "text/event-stream")];
    headers.push(("Mcp-Session-Id", session.as_str()));
    g.send("GET", "/mcp", &headers, b"");
    let head = g.read_head();
    assert_eq!(head.status, 200);
    assert_eq!(
        relay.log_count(&format!("{g_local} \"GET /mcp\"")),
        0,
        "a stream is logged when it ends"
    );
    drop(g);
    let line = relay.wait_log(&format!("{g_local} \"GET /mcp\" 200 "), DEADLINE);
    assert!(
        line.ends_with(&format!("session={}…", short(&session))),
        "{line}"
    );

    // A client that leaves before any answer: 499. (It leaves in the middle of its body,
    // once `100 Continue` says the relay has its head.)
    let mut gone = relay.connect();
    let gone_local = gone.stream().local_addr().expect("local address");
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nMcp-Session-Id: {session}\r\n\
         Expect: 100-continue\r\nContent-Length: 50\r\n\r\n{{\"jsonrpc\"",
        relay.addr
    );
    gone.send_raw(head.as_bytes());
    assert_eq!(gone.read_head().status, 100);
    drop(gone);
    let line = relay.wait_log(&format!("{gone_local} \"POST /mcp\" 499 "), DEADLINE);
    assert!(
        line.ends_with(&format!("session={}…", short(&session))),
        "{line}"
    );

    // A head the relay cannot read.
    let mut bad = relay.connect();
    let bad_local = bad.stream().local_addr().expect("local address");
    bad.send_raw(b"NOT HTTP\r\n\r\n");
    let resp = bad.read_response();
    assert_eq!(resp.status(), 400);
    relay.wait_log(&format!("{bad_local} \"- -\" 400 "), DEADLINE);

    assert_eq!(
        relay.log_count("query-value-9d2e"),
        0,
        "{}",
        relay.log_text()
    );
    assert_eq!(relay.log_count("client→server"), 0, "{}", relay.log_text());
    // Silenced by name.
    drop(relay);
    let (quiet, _) = start(&[], "info,mcp_relay::access=off");
    let mut h = quiet.connect();
    assert_eq!(h.request("GET", "/healthz", &[], b"").status(), 200);
    let local = h.stream().local_addr().expect("local address");
    // The relay logs the session of a later request; by then the health check's line would
    // have been written.
    let _session = open_session(&mut h, "2025-06-18");
    quiet.wait_log("starting ", DEADLINE);
    assert_eq!(
        quiet.log_count(&format!("{local} \"")),
        0,
        "{}",
        quiet.log_text()
    );
}

#[test]
fn json_format_lines_parse_with_their_fields() {
    let (relay, tcp) = start(&["--log-format", "json", "--log-messages"], "info");
    let mut c = TcpClient::connect(tcp);
    c.send(&initialize(1));
    c.answer(1);
    let mut h = relay.connect();
    let local = h.stream().local_addr().expect("local address");
    let session = open_session(&mut h, "2025-06-18");
    relay.wait_log("\"status\":202", DEADLINE);
    relay.wait_log("server→client response id 1", DEADLINE);
    let lines: Vec<Value> = relay
        .log_text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    for v in &lines {
        let ts = v["timestamp"].as_str().unwrap_or_else(|| panic!("{v}"));
        // 2026-11-30T21:35:07.123Z
        assert_eq!(ts.len(), 24, "{ts}");
        assert!(ts.ends_with('Z') && &ts[10..11] == "T", "{ts}");
        assert!(v["level"].is_string() && v["target"].is_string() && v["message"].is_string());
    }
    let answer = lines
        .iter()
        .find(|v| {
            v["target"] == "mcp_relay::messages"
                && v["direction"] == "server→client"
                && v["session"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("conn#"))
        })
        .unwrap_or_else(|| panic!("no message line: {}", relay.log_text()));
    assert_eq!(answer["method"], "response");
    assert_eq!(answer["id"], "1");
    assert!(answer["bytes"].as_u64().is_some_and(|b| b > 0), "{answer}");
    assert!(answer["latency_ms"].as_f64().is_some(), "{answer}");
    assert_eq!(answer["level"], "INFO");
    let access = lines
        .iter()
        .find(|v| v["target"] == "mcp_relay::access" && v["status"] == 200)
        .unwrap_or_else(|| panic!("no access line: {}", relay.log_text()));
    assert_eq!(access["method"], "POST");
    assert_eq!(access["path"], "/mcp");
    assert_eq!(access["client"], local.to_string());
    assert_eq!(access["session"], format!("{}…", short(&session)));
    assert!(access["bytes"].as_u64().is_some_and(|b| b > 0), "{access}");
    assert!(access["duration_ms"].as_f64().is_some(), "{access}");
}

/// The relay with its stderr on a pipe of the test's own, so that `JOURNAL_STREAM` can
/// name it (or not): `matching` says whether it names that pipe.
fn relay_on_pipe(matching: bool) -> (std::process::Child, Arc<Log>) {
    let mut fds = [0; 2];
    // Close-on-exec: other tests' processes started meanwhile must not inherit it (the
    // relay gets its write end as its stderr, which clears the flag for it alone).
    // SAFETY: pipe2(2) fills the two descriptors on success.
    assert_eq!(
        unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) },
        0,
        "pipe2"
    );
    // SAFETY: both descriptors were just created and are owned here only.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat(2) writes the stat buffer; it is read only on success.
    assert_eq!(unsafe { libc::fstat(fds[1], st.as_mut_ptr()) }, 0, "fstat");
    // SAFETY: fstat succeeded.
    let st = unsafe { st.assume_init() };
    let ino = if matching { st.st_ino } else { st.st_ino + 1 };
    let child = Command::new(relay_bin())
        .args(["--listen", "127.0.0.1:0", "--demo"])
        .env("RUST_LOG", "info")
        .env("JOURNAL_STREAM", format!("{}:{ino}", st.st_dev))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(write))
        .spawn()
        .expect("spawning mcp-relay");
    let log = Log::collect(std::fs::File::from(read), "relay-journal".into());
    (child, log)
}

#[test]
fn no_timestamps_when_stderr_is_the_journal() {
    for matching in [true, false] {
        let (mut child, log) = relay_on_pipe(matching);
        let found = log.wait(DEADLINE, |lines| {
            lines.iter().any(|l| l.contains("listening on tcp://"))
        });
        let _ = child.kill();
        let _ = child.wait();
        assert!(found, "no listening line: {:?}", log.lines());
        let line = log
            .lines()
            .into_iter()
            .find(|l| l.contains("listening on tcp://"))
            .unwrap_or_default();
        let has_timestamp = has_timestamp(&line);
        if matching {
            assert!(line.starts_with("<6>[INFO ] listening on"), "{line}");
            assert!(!has_timestamp, "{line}");
        } else {
            // Another file than stderr (stderr was redirected since systemd set it).
            assert!(line.starts_with("[20") && has_timestamp, "{line}");
        }
    }
}

/// `line` has a date and time such as `2026-11-30T21:35:07`.
fn has_timestamp(line: &str) -> bool {
    let shape = b"dddd-dd-ddTdd:dd:dd";
    line.as_bytes().windows(shape.len()).any(|w| {
        w.iter().zip(shape).all(|(c, s)| match s {
            b'd' => c.is_ascii_digit(),
            s => c == s,
        })
    })
}

const SECRET: &str = "e2e-logs-secret-7c41";

#[test]
fn no_secret_in_the_logs_even_at_trace() {
    let relay = HttpRelay::builder()
        .demo()
        .args(["--log-messages", "--log-level", "trace"])
        .env("MCP_RELAY_AUTH_TOKEN", SECRET)
        .start();
    let mut h = relay.connect();
    let bearer = format!("Bearer {SECRET}");
    let mut headers = MCP_POST.to_vec();
    headers.push(("Authorization", bearer.as_str()));
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "e2e-logs", "version": "0"}}});
    let resp = h.request("POST", "/mcp", &headers, body.to_string().as_bytes());
    assert_eq!(resp.status(), 200, "{resp:?}");
    let session = resp.header("mcp-session-id").expect("session").to_owned();
    headers.push(("Mcp-Session-Id", session.as_str()));
    let call = tool_call(2, "echo", json!({"message": "trace me"}));
    let resp = h.request("POST", "/mcp", &headers, call.to_string().as_bytes());
    assert_eq!(resp.status(), 200, "{resp:?}");
    // A wrong token (and one in the query) is not logged either.
    let wrong = format!("Bearer {SECRET}-wrong");
    let resp = h.request(
        "POST",
        &format!("/mcp?access_token={SECRET}"),
        &[MCP_POST[0], MCP_POST[1], ("Authorization", wrong.as_str())],
        call.to_string().as_bytes(),
    );
    assert_eq!(resp.status(), 401);
    relay.wait_log("\" 401 ", DEADLINE);
    // At trace the payloads are there ...
    let line = relay.wait_log("client→server payload:", DEADLINE);
    assert!(line.contains("\"protocolVersion\""), "{line}");
    relay.wait_log("trace me", DEADLINE);
    // ... and the token nowhere.
    assert_eq!(relay.log_count(SECRET), 0, "{}", relay.log_text());
}

/// The session id as the relay's logs name it: the first 8 digits of its random part (after
/// the `--instance-id` prefix).
fn short(id: &str) -> &str {
    let random = id.rsplit('.').next().unwrap_or(id);
    &random[..8]
}
