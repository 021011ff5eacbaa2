#!/usr/bin/env python3
"""Writes the seed corpora under corpus/<target>/: a handful of meaningful inputs per target
(real MCP lines, real HTTP requests including chunked ones, real relay sessions). Run it from
anywhere; it overwrites only the seed-*.bin files it makes."""

import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

INIT = b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"fuzz","version":"1"}}}'
INITED = b'{"jsonrpc":"2.0","method":"notifications/initialized"}'
CALL = b'{"jsonrpc":"2.0","id":"call-2","method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"}}}'
RESULT = b'{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"s","version":"1"}}}'
ERROR = b'{"jsonrpc":"2.0","id":"call-2","error":{"code":-32601,"message":"no"}}'
PROGRESS = b'{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":1}}'
PING = b'{"jsonrpc":"2.0","id":"ping-1","method":"ping"}'
HEARTBEAT = b'{"type":"heartbeat"}'
BATCH = b'[' + INIT + b',' + INITED + b',{"jsonrpc":"2.0","id":3,"result":{}}]'
LINES = [INIT, INITED, CALL, RESULT, ERROR, PROGRESS, PING, HEARTBEAT, BATCH]


def http(method, target, headers, body=b""):
    head = f"{method} {target} HTTP/1.1\r\n".encode()
    for name, value in headers:
        head += f"{name}: {value}\r\n".encode()
    return head + b"\r\n" + body


def chunked(body, size=16):
    out = b""
    for i in range(0, len(body), size):
        piece = body[i:i + size]
        out += b"%x;ext=1\r\n" % len(piece) + piece + b"\r\n"
    return out + b"0\r\nX-Trailer: t\r\n\r\n"


MCP_HEADERS = [("Host", "localhost:8080"), ("Content-Type", "application/json"),
               ("Accept", "application/json, text/event-stream")]
REQUESTS = [
    http("POST", "/mcp", MCP_HEADERS + [("Content-Length", str(len(INIT)))], INIT),
    http("POST", "/mcp", MCP_HEADERS + [("Transfer-Encoding", "chunked")], chunked(INIT)),
    http("POST", "http://localhost:8080/mcp", MCP_HEADERS + [("Mcp-Session-Id", "abc"),
         ("Mcp-Protocol-Version", "2025-06-18"), ("Content-Length", str(len(CALL)))], CALL),
    http("GET", "/mcp", [("Host", "localhost"), ("Accept", "text/event-stream"),
         ("Mcp-Session-Id", "abc"), ("Last-Event-ID", "1-2")]),
    http("GET", "/sse", [("Host", "127.0.0.1"), ("Accept", "text/event-stream")]),
    http("POST", "/messages?sessionId=abc", MCP_HEADERS + [("Content-Length", str(len(PING)))], PING),
    http("OPTIONS", "*", [("Host", "localhost"), ("Origin", "http://localhost:3000")]),
    http("DELETE", "/mcp", [("Host", "localhost"), ("Mcp-Session-Id", "abc"), ("Connection", "close")]),
    http("GET", "/healthz", [("Host", "localhost")]) + http("GET", "/metrics", [("Host", "localhost"), ("Authorization", "Bearer t0ken")]),
    # Smuggling attempts that must be refused.
    http("POST", "/mcp", MCP_HEADERS + [("Content-Length", "5"), ("Transfer-Encoding", "chunked")], b"0\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n"),
    http("POST", "/mcp", MCP_HEADERS + [("Transfer-Encoding", "gzip, chunked")], chunked(PING)),
    http("POST", "/mcp", MCP_HEADERS + [("Content-Length", "+29")], PING[:29]),
]


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"seed-{name}.bin"), "wb") as f:
        f.write(data)


# framing: limit byte, cut seed byte, stream.
stream = b"\n".join(LINES) + b"\n"
write("framing", "mcp-lines", bytes([63, 7]) + stream)
write("framing", "crlf-small-limit", bytes([15, 3]) + b"\r\n".join(LINES) + b"\r\n  \r\n\n")
write("framing", "oversize-ids", bytes([9, 1]) + INIT + b"\n" + CALL + b"\nshort\n" + ERROR + b"\n")

# classify: one line.
for i, line in enumerate(LINES):
    write("classify", f"line-{i}", line)
write("classify", "escaped", b'{"jsonrpc":"2.0","id":"a\\"b","m\\u0065thod":"x","method":"t\\u00e9st"}')

# stream_check: piece-size seed byte, one line (the seed's high nibble sets the largest piece).
TRICKY = [
    b'{"id":"\\ud83d\\ude00","method":"\\ud83d\\ude00","params":{"a":[-0,1e5,0.5E-3,true,false,null]}}',
    b'{"result":"\\ud800","id":{"x":"\\udc00"},"error":1e400}',
    '{"method":"caf\u00e9 \u20ac","type":"heartbeat","\\u0074ype":"handshake"}'.encode(),
    b'  [{"method":"m"},[[]],"s",1,null]  ',
]
for i, line in enumerate(LINES + TRICKY):
    write("stream_check", f"line-{i}", bytes([(i * 53 + 17) % 256]) + line)

# http_head: cut seed byte, request bytes.
for i, req in enumerate(REQUESTS):
    write("http_head", f"request-{i}", bytes([i * 37 % 256]) + req)

# relay: config byte, then operations (see fuzz_targets/relay.rs).
ACCEPT_TCP, ACCEPT_HTTP, DATA_CONN, DATA_CHILD, WRITTEN_CONN, WRITTEN_CHILD = 0, 1, 2, 3, 4, 5
EOF_CONN, EOF_CHILD, BROKEN_CONN, BROKEN_CHILD, SPAWNED, SPAWN_FAILED, EXITED = 6, 7, 8, 9, 10, 11, 12
STDERR, STDERR_EOF, ADVANCE, NEXT_DEADLINE, ACCEPT_TROUBLE, SHUTDOWN = 13, 14, 15, 16, 17, 18
# Data to a connection with the first "$state" replaced by the last requestState the relay sent.
DATA_CONN_WITH_STATE = 255


def data(op, payload, index=0):
    return bytes([op, index]) + struct.pack("<H", len(payload)) + payload


def tcp_session(config):
    ops = bytes([config, ACCEPT_TCP])
    ops += data(DATA_CONN, INIT + b"\n" + INITED + b"\n")
    ops += bytes([SPAWNED, 0, WRITTEN_CHILD, 0, 255])
    ops += data(DATA_CHILD, RESULT + b"\n")
    ops += bytes([WRITTEN_CONN, 0, 255])
    ops += data(DATA_CONN, CALL + b"\n" + PING + b"\n")
    ops += bytes([WRITTEN_CHILD, 0, 255])
    ops += data(DATA_CHILD, PROGRESS + b"\n" + ERROR + b"\n")
    ops += data(STDERR, b"warning: \x1b[31mred\r\n")
    ops += bytes([WRITTEN_CONN, 0, 255, ADVANCE, 0xe8, 0x03, NEXT_DEADLINE, 0])
    ops += bytes([EOF_CONN, 0, NEXT_DEADLINE, NEXT_DEADLINE, EXITED, 0, 0, EOF_CHILD, 0, STDERR_EOF, 0])
    ops += bytes([SHUTDOWN, NEXT_DEADLINE, SHUTDOWN])
    return ops


def http_session(config):
    ops = bytes([config, ACCEPT_HTTP])
    ops += data(DATA_CONN, REQUESTS[0])
    ops += bytes([SPAWNED, 0, WRITTEN_CHILD, 0, 255])
    ops += data(DATA_CHILD, RESULT + b"\n")
    ops += bytes([WRITTEN_CONN, 0, 255, ACCEPT_HTTP])
    ops += data(DATA_CONN, REQUESTS[1], 1)
    ops += bytes([WRITTEN_CONN, 1, 255, NEXT_DEADLINE])
    ops += data(DATA_CONN, REQUESTS[8])
    ops += bytes([WRITTEN_CONN, 0, 255, ADVANCE, 0x10, 0x27, SHUTDOWN, NEXT_DEADLINE, NEXT_DEADLINE])
    return ops


write("relay", "tcp-session", tcp_session(0b0011_0010))
write("relay", "tcp-session-prespawn", tcp_session(0b1001_0001))
write("relay", "tcp-crash-restart", bytes([0b0010_0000, ACCEPT_TCP]) + data(DATA_CONN, INIT + b"\n")
      + bytes([SPAWNED, 0, EXITED, 0, 200, NEXT_DEADLINE, SPAWNED, 0, WRITTEN_CHILD, 0, 255])
      + data(DATA_CHILD, RESULT + b"\n") + bytes([SPAWN_FAILED, 0, BROKEN_CONN, 0, NEXT_DEADLINE]))
write("relay", "http-session", http_session(0b0000_0011))
write("relay", "http-smuggle", bytes([2, ACCEPT_HTTP]) + data(DATA_CONN, REQUESTS[9])
      + bytes([WRITTEN_CONN, 0, 255]))
write("relay", "http-auth", http_session(0b0100_0110))


# relay, the 2026-07-28 era bridge (stateless POSTs served by a pool of initialized children).
import json

CAPS = {"elicitation": {}, "sampling": {}, "roots": {}}


def modern_body(method, params=None, rid=1, caps=CAPS, meta=None, raw_tail=b""):
    """A 2026-07-28 request body; `raw_tail` is spliced in before the params' closing brace
    (for the "$state" marker and its padding, which json.dumps would not keep)."""
    p = dict(params or {})
    m = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
         "io.modelcontextprotocol/clientCapabilities": caps}
    m.update(meta or {})
    p["_meta"] = m
    body = {"jsonrpc": "2.0", "id": rid, "method": method, "params": p}
    out = json.dumps(body, separators=(",", ":")).encode()
    if raw_tail:
        out = out[:-2] + b"," + raw_tail + b"}}"
    return out


def modern_post(method, params=None, rid=1, name=None, headers=None, body=None, **kw):
    body = body if body is not None else modern_body(method, params, rid, **kw)
    h = MCP_HEADERS + [("MCP-Protocol-Version", "2026-07-28"), ("Mcp-Method", method)]
    if name is not None:
        h.append(("Mcp-Name", name))
    h += headers or []
    return http("POST", "/mcp", h + [("Content-Length", str(len(body)))], body)


def line(obj):
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


CHILD_INIT = line({"jsonrpc": "2.0", "id": "mcp-relay:stateless-init", "result": {
    "protocolVersion": "2025-11-25",
    "capabilities": {"tools": {"listChanged": True}, "logging": {},
                     "resources": {"subscribe": True, "listChanged": True}},
    "serverInfo": {"name": "s", "version": "1"}, "instructions": "be kind"}})
CHILD_INIT_REFUSED = line({"jsonrpc": "2.0", "id": "mcp-relay:stateless-init",
                           "error": {"code": -32602, "message": "unsupported"}})
CHILD_SETTLE = line({"jsonrpc": "2.0", "id": "mcp-relay:stateless-settle", "result": {"tools": [
    {"name": "echo", "inputSchema": {"type": "object", "properties": {
        "text": {"type": "string"}, "region": {"type": "string", "x-mcp-header": "Region"}}}}]}})
CHILD_LOG_LEVEL = line({"jsonrpc": "2.0", "id": "mcp-relay:stateless-log-level", "result": {}})
CHILD_SUBSCRIBED = line({"jsonrpc": "2.0", "id": "mcp-relay:stateless-subscription", "result": {}})


def child_result(n, result):
    return line({"jsonrpc": "2.0", "id": f"mcp-relay:{n}", "result": result})


def child_ask(rid, method, params):
    return line({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})


ECHO = {"name": "echo", "arguments": {"text": "hi", "region": "eu"}}
ECHO_HEADERS = [("Mcp-Param-Region", "eu")]
TEXT = {"content": [{"type": "text", "text": "hi"}]}
ELICIT = {"mode": "form", "message": "sure?", "requestedSchema": {"type": "object", "properties": {}}}
STATE_TAIL = b'"requestState":"$state"' + b" " * 48


def stateless_start(config, first):
    """A POST that needs a child, the child started, initialized and settled."""
    ops = bytes([config, ACCEPT_HTTP]) + data(DATA_CONN, first)
    ops += bytes([SPAWNED, 0, WRITTEN_CHILD, 0, 255]) + data(DATA_CHILD, CHILD_INIT)
    ops += bytes([WRITTEN_CHILD, 0, 255]) + data(DATA_CHILD, CHILD_LOG_LEVEL + CHILD_SETTLE)
    return ops


def stateless_discover_and_call(config):
    # server/discover before any child is ready: it waits for the first initialize answer.
    ops = stateless_start(config, modern_post("server/discover"))
    ops += bytes([WRITTEN_CONN, 0, 255, ACCEPT_HTTP])
    ops += data(DATA_CONN, modern_post("tools/call", ECHO, 2, "echo", ECHO_HEADERS,
                                      meta={"progressToken": "p1",
                                            "io.modelcontextprotocol/logLevel": "info"}), 1)
    ops += bytes([WRITTEN_CHILD, 0, 255])
    ops += data(DATA_CHILD, line({"jsonrpc": "2.0", "method": "notifications/progress",
                                  "params": {"progressToken": "mcp-relay:1", "progress": 1}})
                + line({"jsonrpc": "2.0", "method": "notifications/message",
                        "params": {"level": "debug", "data": "quiet"}})
                + line({"jsonrpc": "2.0", "method": "notifications/message",
                        "params": {"level": "error", "data": "loud"}})
                + child_result(1, TEXT))
    ops += bytes([WRITTEN_CONN, 1, 255])
    # After the child is ready: answered by the relay at once; then a list, cacheable.
    ops += data(DATA_CONN, modern_post("server/discover", rid=3))
    ops += bytes([WRITTEN_CONN, 0, 255])
    ops += data(DATA_CONN, modern_post("tools/list", rid=4), 1)
    ops += bytes([WRITTEN_CHILD, 0, 255]) + data(DATA_CHILD, child_result(2, {"tools": []}))
    ops += bytes([WRITTEN_CONN, 1, 255, SHUTDOWN, NEXT_DEADLINE, NEXT_DEADLINE])
    return ops


def stateless_elicitation(config):
    call = modern_post("tools/call", ECHO, 7, "echo", ECHO_HEADERS)
    ops = stateless_start(config, call) + bytes([WRITTEN_CHILD, 0, 255])
    ops += data(DATA_CHILD, child_ask(5, "elicitation/create", ELICIT)
                + child_ask(6, "roots/list", {}))
    # The round is gathered for 20 ms, then answered input_required.
    ops += bytes([ADVANCE, 25, 0, WRITTEN_CONN, 0, 255, ACCEPT_HTTP])
    retry = modern_body("tools/call", ECHO, 8, raw_tail=b'"inputResponses":{"elicitation-1":'
                        b'{"action":"accept","content":{}}},' + STATE_TAIL)
    ops += data(DATA_CONN_WITH_STATE, modern_post("tools/call", name="echo", headers=ECHO_HEADERS,
                                                  body=retry), 1)
    # roots/list was not answered: asked again; the child got the elicitation's answer.
    ops += bytes([WRITTEN_CHILD, 0, 255, WRITTEN_CONN, 1, 255, ACCEPT_HTTP])
    retry2 = modern_body("tools/call", ECHO, 9, raw_tail=b'"inputResponses":{"roots-2":'
                         b'{"roots":[{"uri":"file:///tmp"}]}},' + STATE_TAIL)
    ops += data(DATA_CONN_WITH_STATE, modern_post("tools/call", name="echo", headers=ECHO_HEADERS,
                                                  body=retry2), 2)
    ops += bytes([WRITTEN_CHILD, 0, 255]) + data(DATA_CHILD, child_result(1, TEXT))
    ops += bytes([WRITTEN_CONN, 2, 255, ACCEPT_HTTP])
    # The same requestState again: used up.
    ops += data(DATA_CONN_WITH_STATE, modern_post("tools/call", name="echo", headers=ECHO_HEADERS,
                                                  body=retry2), 3)
    ops += bytes([WRITTEN_CONN, 3, 255, NEXT_DEADLINE, NEXT_DEADLINE, SHUTDOWN, NEXT_DEADLINE])
    return ops


def stateless_held_expires(config):
    # An input_required answer never retried: cancelled at --session-timeout; a forged state.
    ops = stateless_start(config, modern_post("tools/call", ECHO, 7, "echo", ECHO_HEADERS,
                                              caps={"sampling": {}}))
    ops += bytes([WRITTEN_CHILD, 0, 255])
    ops += data(DATA_CHILD, child_ask(5, "sampling/createMessage", {"messages": [], "maxTokens": 5})
                + child_ask(6, "elicitation/create", ELICIT))
    ops += bytes([NEXT_DEADLINE, WRITTEN_CONN, 0, 255, ACCEPT_HTTP])
    forged = modern_body("tools/call", ECHO, 8, raw_tail=b'"inputResponses":{},"requestState":"1.00"')
    ops += data(DATA_CONN, modern_post("tools/call", name="echo", headers=ECHO_HEADERS, body=forged), 1)
    ops += bytes([WRITTEN_CONN, 1, 255, ADVANCE, 0xb8, 0x0b, WRITTEN_CHILD, 0, 255])
    ops += data(DATA_CHILD, child_result(1, TEXT) + child_ask(9, "roots/list", {}))
    ops += bytes([NEXT_DEADLINE, EXITED, 0, 0, EOF_CHILD, 0, NEXT_DEADLINE])
    return ops


def stateless_listen(config):
    listen = modern_post("subscriptions/listen", {"notifications": {
        "toolsListChanged": True, "promptsListChanged": True,
        "resourceSubscriptions": ["file:///a", "file:///a/b"]}}, 1)
    ops = stateless_start(config, listen)
    ops += bytes([WRITTEN_CONN, 0, 255, WRITTEN_CHILD, 0, 255])
    ops += data(DATA_CHILD, CHILD_SUBSCRIBED
                + line({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
                + line({"jsonrpc": "2.0", "method": "notifications/resources/updated",
                        "params": {"uri": "file:///a/b/c"}})
                + child_ask(3, "elicitation/create", ELICIT))
    ops += bytes([WRITTEN_CONN, 0, 255, WRITTEN_CHILD, 0, 255, ACCEPT_HTTP])
    ops += data(DATA_CONN, modern_post("subscriptions/listen", {"notifications": {}}, 2), 1)
    ops += bytes([ADVANCE, 0x2c, 0x01, EOF_CONN, 0, WRITTEN_CHILD, 0, 255, NEXT_DEADLINE])
    ops += bytes([SHUTDOWN, WRITTEN_CONN, 0, 255, NEXT_DEADLINE])
    return ops


def stateless_refused(config):
    # Removed methods, malformed _meta, mismatched headers, other versions, batches,
    # notifications, GET/DELETE: all answered without a child, on one keep-alive connection.
    bad = [
        modern_post("initialize", {"protocolVersion": "2026-07-28"}),
        modern_post("ping", rid="p"),
        modern_post("resources/subscribe", {"uri": "file:///a"}, name="file:///a"),
        modern_post("tools/list", body=b'{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}'),
        modern_post("tools/list", body=b'{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":[]}}'),
        modern_post("tools/list", caps=None),
        modern_post("tools/list", headers=[], body=modern_body("prompts/list")),
        modern_post("tools/call", ECHO, name="=?base64?ZWNobw=?="),
        modern_post("tools/call", ECHO),
        modern_post("tools/list", meta={"io.modelcontextprotocol/protocolVersion": "2099-01-01"}),
        modern_post("tools/call", dict(ECHO, inputResponses=[1]), name="echo"),
        modern_post("tools/list", body=b"[" + modern_body("tools/list") + b"]"),
        modern_post("notifications/cancelled", body=b'{"jsonrpc":"2.0","method":"notifications/cancelled","params":{}}'),
        http("POST", "/mcp", MCP_HEADERS + [("MCP-Protocol-Version", "2099-01-01"),
             ("Content-Length", str(len(modern_body("tools/list"))))], modern_body("tools/list")),
        http("GET", "/mcp", [("Host", "localhost"), ("MCP-Protocol-Version", "2026-07-28"),
             ("Accept", "text/event-stream")]),
        http("DELETE", "/mcp", [("Host", "localhost"), ("MCP-Protocol-Version", "2026-07-28")]),
    ]
    ops = bytes([config, ACCEPT_HTTP])
    for req in bad:
        ops += data(DATA_CONN, req) + bytes([WRITTEN_CONN, 0, 255])
    # A name in base64 is fine: this one waits for a child that never starts.
    ops += data(DATA_CONN, modern_post("tools/call", ECHO, name="=?base64?ZWNobw==?="))
    return ops + bytes([SPAWN_FAILED, 0, NEXT_DEADLINE, WRITTEN_CONN, 0, 255, NEXT_DEADLINE])


def stateless_cancel(config):
    # The client closes its stream mid-request: the child is told, rests, then serves the next.
    ops = stateless_start(config, modern_post("tools/call", ECHO, 1, "echo", ECHO_HEADERS))
    ops += bytes([WRITTEN_CHILD, 0, 255])
    ops += bytes([ACCEPT_HTTP])
    ops += data(DATA_CONN, modern_post("tools/call", ECHO, 2, "echo", ECHO_HEADERS), 1)
    ops += bytes([BROKEN_CONN, 0, WRITTEN_CHILD, 0, 255])
    ops += data(DATA_CHILD, child_result(1, TEXT))
    ops += bytes([NEXT_DEADLINE, WRITTEN_CHILD, 0, 255]) + data(DATA_CHILD, child_result(2, TEXT))
    ops += bytes([WRITTEN_CONN, 0, 255, ACCEPT_HTTP])
    ops += data(DATA_CONN, modern_post("tools/call", ECHO, 3, "echo", ECHO_HEADERS), 1)
    ops += bytes([EOF_CONN, 1, WRITTEN_CHILD, 0, 255, EXITED, 0, 140, NEXT_DEADLINE, SPAWNED, 0])
    ops += bytes([WRITTEN_CHILD, 0, 255, NEXT_DEADLINE])
    return ops


def stateless_init_refused(config):
    ops = bytes([config, ACCEPT_HTTP]) + data(DATA_CONN, modern_post("server/discover"))
    ops += bytes([SPAWNED, 0, WRITTEN_CHILD, 0, 255]) + data(DATA_CHILD, CHILD_INIT_REFUSED)
    ops += bytes([WRITTEN_CHILD, 0, 255])
    ops += data(DATA_CHILD, line({"jsonrpc": "2.0", "id": "mcp-relay:stateless-settle", "result": {}}))
    ops += bytes([WRITTEN_CONN, 0, 255])
    ops += data(DATA_CONN, modern_post("subscriptions/listen", {"notifications": {"toolsListChanged": True}}, 2))
    ops += bytes([WRITTEN_CONN, 0, 255, SPAWN_FAILED, 0, NEXT_DEADLINE])
    return ops


write("relay", "stateless-discover-and-call", stateless_discover_and_call(0b0000_1111))
write("relay", "stateless-elicitation-retry", stateless_elicitation(0b0000_1111))
write("relay", "stateless-held-expires", stateless_held_expires(0b0000_1111))
write("relay", "stateless-listen", stateless_listen(0b0000_1111))
write("relay", "stateless-refused", stateless_refused(0b0000_1111))
write("relay", "stateless-cancel", stateless_cancel(0b0010_1111))
write("relay", "stateless-init-refused", stateless_init_refused(0b0000_1111))


# remote: two configuration bytes, then operations (see fuzz_targets/remote.rs). Whole client
# mode sessions, one per transport, the driver answering as a remote would.
C_LINE, C_RAW, C_EOF, C_WRITTEN, C_BROKEN, U_CONNECT, U_RESPOND = 0, 1, 2, 3, 4, 5, 6
U_RAW, U_WRITTEN, U_EOF, U_BROKEN, R_ADVANCE, R_NEXT, R_ACCEPT = 8, 9, 10, 11, 12, 13, 14
U_ASK, R_SHUTDOWN, R_ALL = 15, 16, 17
# Client lines (kinds) and response styles (see `client_line` and `Driver::respond`).
K_INIT, K_INITED, K_LIST, K_CALL, K_PING, K_ANSWER, K_CANCEL, K_BATCH, K_SUBSCRIBE, K_RAW = range(10)
TRANSPORT_AUTO, TRANSPORT_HTTP, TRANSPORT_SSE, TRANSPORT_TCP = 0x00, 0x10, 0x20, 0x30
TWO_URLS, PROBES = 0x40, 0x80
GATEWAY, RESTART_ALWAYS, AUTO_TCP, HEADER = 0x01, 0x02, 0x40, 0x80


def c_line(kind, n, conn=0, split=0):
    return bytes([C_LINE, conn, kind, n, split])


def respond(up, style, extra=0, split=0):
    return bytes([U_RESPOND, up, style, extra, split])


def u_raw(up, payload, split=0):
    return bytes([U_RAW, up]) + struct.pack("<H", len(payload)) + payload + bytes([split])


def advance(ms):
    return bytes([R_ADVANCE]) + struct.pack("<H", min(ms * 4, 0xffff))


def connect(index=0, ok=True):
    return bytes([U_CONNECT, index, 0 if ok else 255])


def remote_streamable(conf):
    ops = bytes([conf | TRANSPORT_HTTP, HEADER])
    ops += connect() + c_line(K_INIT, 1, split=7) + bytes([R_ALL])
    # JSON answer with a session id (s0) and protocol 2025-06-18.
    ops += respond(0, 0, 0x10, 13) + bytes([C_WRITTEN, 0, 255])
    ops += c_line(K_INITED, 0) + bytes([R_ALL]) + respond(0, 0)
    # The GET stream: a chunked event stream, a request of the remote's own on it.
    ops += connect() + bytes([R_ALL]) + respond(1, 0, 0, 5) + bytes([U_ASK, 1, 0])
    ops += c_line(K_ANSWER, 0) + bytes([R_ALL]) + respond(0, 0)
    # A call answered on a chunked event stream (progress, then the answer), cut at odd places.
    ops += c_line(K_CALL, 2) + bytes([R_ALL]) + respond(0, 1, 0x0c, 3)
    # A list whose stream breaks after a progress event with an id: resumed after retry.
    ops += c_line(K_LIST, 3) + bytes([R_ALL]) + respond(0, 3, 0x24) + bytes([U_EOF, 0])
    ops += bytes([R_NEXT]) + connect() + bytes([R_ALL]) + respond(1, 0) + respond(1, 0, 0)
    ops += respond(1, 7) + bytes([C_WRITTEN, 0, 255])
    # A notification refused, a ping answered with a JSON-RPC error in a 400.
    # (The POSTs now go on the resumed stream's connection, the second one open.)
    ops += c_line(K_CANCEL, 3) + bytes([R_ALL]) + respond(1, 3, 0)
    ops += c_line(K_PING, 4) + bytes([R_ALL]) + respond(1, 4, 0x08)
    # The end: DELETE, answered.
    ops += bytes([R_ALL, C_EOF, 0, R_ALL]) + respond(1, 0) + bytes([R_NEXT, R_NEXT])
    return ops


def remote_expired(conf):
    # Two URLs: the first refuses the connection; the second serves, forgets the session
    # (404), and a new session is initialized for the request that met the 404.
    ops = bytes([conf | TRANSPORT_HTTP | TWO_URLS, 0])
    ops += c_line(K_INIT, 1) + connect(ok=False) + bytes([R_NEXT]) + connect() + bytes([R_ALL])
    ops += respond(0, 0, 0x02) + bytes([R_ALL]) + c_line(K_INITED, 0) + bytes([R_ALL]) + respond(0, 5)
    ops += c_line(K_LIST, 2) + bytes([R_ALL]) + respond(0, 4, 0x01)
    ops += bytes([R_NEXT]) + connect() + bytes([R_ALL]) + respond(0, 0, 0x04) + bytes([R_ALL])
    ops += respond(0, 0) + bytes([R_ALL, C_WRITTEN, 0, 255])
    # A request left unanswered while time passes; then the remote breaks the connection.
    ops += c_line(K_CALL, 3) + bytes([R_ALL]) + advance(3000) + bytes([U_BROKEN, 0, R_NEXT])
    ops += bytes([R_ALL, C_EOF, 0]) + bytes([R_NEXT, R_ALL, R_NEXT])
    return ops


def remote_auto_to_sse(conf):
    # Auto: the initialize POST is refused with 405, so the legacy transport is tried: a GET
    # stream (until close) whose endpoint event names where to POST; answers come on it.
    ops = bytes([conf | TRANSPORT_AUTO, 0])
    ops += connect() + c_line(K_INIT, 1) + bytes([R_ALL]) + respond(0, 4, 0x02)
    ops += connect() + bytes([R_ALL]) + respond(1, 4, 0x00, 9)
    ops += bytes([R_ALL]) + respond(0, 5) + respond(1, 0, 0x0a)
    ops += c_line(K_INITED, 0) + bytes([R_ALL]) + respond(0, 0)
    ops += c_line(K_CALL, 2) + c_line(K_BATCH, 3) + bytes([R_ALL]) + respond(0, 5)
    ops += respond(1, 0, 0, 4) + bytes([U_ASK, 1, 6]) + c_line(K_ANSWER, 1) + bytes([R_ALL])
    ops += respond(0, 5) + respond(1, 4) + respond(1, 0, 1)
    ops += bytes([C_WRITTEN, 0, 255, C_EOF, 0, R_ALL, U_EOF, 1, R_NEXT])
    return ops


def remote_sse(conf):
    # The legacy transport from the start: the stream is chunked, its endpoint relative; the
    # stream ends (the remote is gone), and the session reconnects.
    ops = bytes([conf | TRANSPORT_SSE, RESTART_ALWAYS])
    ops += c_line(K_INIT, 1) + connect() + bytes([R_ALL]) + respond(0, 1, 0x20, 11)
    ops += bytes([R_ALL]) + respond(1, 5) + respond(0, 0, 0x0a)
    ops += c_line(K_INITED, 0) + c_line(K_SUBSCRIBE, 2) + bytes([R_ALL])
    ops += respond(1, 5) + bytes([R_ALL]) + respond(1, 5) + respond(0, 2) + respond(0, 0)
    ops += respond(0, 4) + respond(0, 6, 0x50) + respond(0, 7) + bytes([R_NEXT, R_ALL])
    ops += connect() + bytes([R_ALL]) + respond(0, 1, 0x40) + bytes([R_ALL, C_EOF, 0, R_NEXT])
    return ops


def remote_tcp(conf):
    # Lines over TCP: the initialize waits for the connection; the remote asks the client
    # something, says something too long, closes; the session reconnects and replays.
    ops = bytes([conf | TRANSPORT_TCP, 0])
    ops += c_line(K_INIT, 1) + connect() + bytes([R_ALL]) + respond(0, 0, 0x11, 5)
    ops += c_line(K_INITED, 0) + c_line(K_CALL, 2) + bytes([R_ALL, U_ASK, 0, 5])
    ops += c_line(K_ANSWER, 1) + bytes([R_ALL]) + respond(0, 3) + respond(0, 5, 0x30)
    ops += respond(0, 0, 0x20) + respond(0, 4) + bytes([R_ALL, U_EOF, 0, R_NEXT])
    ops += connect() + bytes([R_ALL]) + respond(0, 0) + c_line(K_LIST, 3) + bytes([R_ALL])
    ops += bytes([U_BROKEN, 0, R_NEXT, R_NEXT]) + connect(ok=False) + advance(2500)
    ops += bytes([R_ALL, C_EOF, 0, R_NEXT, R_ALL])
    return ops


def remote_gateway(conf):
    # Gateway mode: no stdio, a TCP front and an HTTP front served by one remote (TCP URLs
    # with auto), a shutdown while requests wait.
    ops = bytes([conf | TRANSPORT_AUTO, GATEWAY | AUTO_TCP | RESTART_ALWAYS])
    ops += bytes([R_ACCEPT, 0]) + c_line(K_INIT, 1) + connect() + bytes([R_ALL]) + respond(0, 0)
    ops += bytes([R_ACCEPT, 1]) + c_line(K_INIT, 7, conn=1) + connect() + bytes([R_ALL])
    ops += respond(1, 0, 0, 3) + bytes([R_ALL]) + c_line(K_INITED, 0, conn=1) + c_line(K_LIST, 8, conn=1)
    ops += bytes([R_ALL]) + respond(1, 0) + c_line(K_CALL, 2) + bytes([R_ALL, R_SHUTDOWN, R_ALL])
    ops += respond(0, 0) + bytes([R_NEXT, R_ALL, R_NEXT])
    return ops


def remote_garbage(conf):
    # Heads the relay cannot read, a chunked body that lies, a bad session id on an HTTP/1.0
    # reply, an oversize answer, bytes on an idle connection; and a client that breaks.
    # (R_ALL answers the connects the relay asks for on the way.)
    ops = bytes([conf | TRANSPORT_HTTP, 0])
    ops += c_line(K_INIT, 1) + bytes([R_ALL])
    ops += u_raw(0, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello")
    ops += c_line(K_INIT, 2) + bytes([R_ALL])
    ops += u_raw(0, b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n5\r\ndata: {}\r\n", 3)
    ops += c_line(K_INIT, 3) + bytes([R_ALL])
    ops += u_raw(0, b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nMcp-Session-Id: \x01bad\r\n\r\n"
                 + b'{"jsonrpc":"2.0","id":3,"result":{"protocolVersion":"2025-06-18","capabilities":{},"serverInfo":{"name":"r","version":"1"}}}')
    ops += bytes([U_EOF, 0]) + c_line(K_CALL, 200) + bytes([R_ALL])
    ops += u_raw(0, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 300\r\n\r\n"
                 + b'{"jsonrpc":"2.0","id":"c200","result":{"text":"' + b"z" * 254 + b'"}}')
    ops += u_raw(0, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
    ops += c_line(K_LIST, 4) + bytes([R_ALL]) + u_raw(0, b"HTTP/1.1 99999 Huh\r\n\r\n")
    ops += c_line(K_LIST, 5) + bytes([R_ALL]) + u_raw(0, b"garbage\r\n\r\n")
    ops += bytes([R_NEXT, C_BROKEN, 0, R_NEXT, R_ALL])
    return ops


# Limits: max_message_size by bits 0-1, max_buffered by bits 2-3.
write("remote", "streamable-http", remote_streamable(0b0000_1111))
write("remote", "streamable-http-small", remote_streamable(0b1000_0001))
write("remote", "session-expired-failover", remote_expired(0b0000_1110))
write("remote", "auto-falls-back-to-sse", remote_auto_to_sse(0b0000_1111))
write("remote", "sse", remote_sse(0b0000_1010))
write("remote", "tcp", remote_tcp(0b0000_1111))
write("remote", "tcp-small", remote_tcp(0b1000_0000))
write("remote", "gateway", remote_gateway(0b0000_1111))
write("remote", "garbage", remote_garbage(0b0000_1110))
