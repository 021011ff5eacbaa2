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

# http_head: cut seed byte, request bytes.
for i, req in enumerate(REQUESTS):
    write("http_head", f"request-{i}", bytes([i * 37 % 256]) + req)

# relay: config byte, then operations (see fuzz_targets/relay.rs).
ACCEPT_TCP, ACCEPT_HTTP, DATA_CONN, DATA_CHILD, WRITTEN_CONN, WRITTEN_CHILD = 0, 1, 2, 3, 4, 5
EOF_CONN, EOF_CHILD, BROKEN_CONN, BROKEN_CHILD, SPAWNED, SPAWN_FAILED, EXITED = 6, 7, 8, 9, 10, 11, 12
STDERR, STDERR_EOF, ADVANCE, NEXT_DEADLINE, SHUTDOWN = 13, 14, 15, 16, 17


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
