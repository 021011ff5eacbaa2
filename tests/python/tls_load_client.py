#!/usr/bin/env python3
"""Call a tool over HTTPS in a loop, each call on a new TLS connection, until told to stop.

Usage:
    tls_load_client.py --url https://127.0.0.1:PORT/mcp --cafile CA.pem [--timeout 60]

Standard library only (http.client and ssl). Opens one Streamable HTTP session
(``initialize``, ``notifications/initialized``), then calls the demo server's ``echo`` over and
over, each call on a fresh connection (so each makes a handshake and sees the certificate the
server presents then), verified against ``--cafile`` for the URL's host. After
each call it prints::

    CALL n ok CN
    CALL n FAIL reason

where CN is the common name of the certificate the server presented for that call. It stops
when a line ``stop`` arrives on stdin (or stdin ends), or at ``--timeout``, and prints::

    SUMMARY calls=N ok=N failed=N subjects=CN1,CN2

Exit status 0 only if no call failed and it was stopped by the test, not by the timeout.
"""

from __future__ import annotations

import argparse
import http.client
import json
import ssl
import sys
import threading
import time
from urllib.parse import urlparse


def say(line: str) -> None:
    print(line, flush=True)


def messages_of(resp: http.client.HTTPResponse, body: bytes) -> list[dict]:
    """The JSON-RPC messages of a response: its JSON body, or the data of its events."""
    ctype = resp.getheader("Content-Type", "")
    text = body.decode("utf-8")
    if ctype.startswith("text/event-stream"):
        out = []
        for block in text.replace("\r\n", "\n").split("\n\n"):
            data = "\n".join(l[5:].lstrip(" ") for l in block.split("\n") if l.startswith("data:"))
            if data:
                out.append(json.loads(data))
        return out
    if not text.strip():
        return []
    return [json.loads(text)]


class Session:
    def __init__(self, url: str, cafile: str) -> None:
        parsed = urlparse(url)
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or 443
        self.path = parsed.path or "/mcp"
        self.ctx = ssl.create_default_context(cafile=cafile)
        self.session_id: str | None = None

    def post(self, message: dict) -> tuple[list[dict], str]:
        """POSTs on a new connection; returns the messages and the presented CN."""
        conn = http.client.HTTPSConnection(
            self.host, self.port, context=self.ctx, timeout=15
        )
        try:
            conn.connect()
            cert = conn.sock.getpeercert() or {}
            cn = ""
            for rdn in cert.get("subject", ()):
                for key, value in rdn:
                    if key == "commonName":
                        cn = value
            headers = {
                "Content-Type": "application/json",
                "Accept": "application/json, text/event-stream",
                "Connection": "close",
            }
            if self.session_id:
                headers["Mcp-Session-Id"] = self.session_id
            conn.request("POST", self.path, body=json.dumps(message), headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            if resp.status not in (200, 202):
                raise RuntimeError(f"HTTP {resp.status}: {body[:300]!r}")
            sid = resp.getheader("Mcp-Session-Id")
            if sid:
                self.session_id = sid
            return messages_of(resp, body), cn
        finally:
            conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--cafile", required=True)
    parser.add_argument("--timeout", type=float, default=60)
    opts = parser.parse_args()

    stop = threading.Event()

    def watch_stdin() -> None:
        for line in sys.stdin:
            if line.strip() == "stop":
                break
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()

    s = Session(opts.url, opts.cafile)
    init = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "tls_load_client", "version": "0"},
        },
    }
    msgs, cn = s.post(init)
    if not any(m.get("id") == 0 and "result" in m for m in msgs) or not s.session_id:
        say(f"SUMMARY calls=0 ok=0 failed=1 subjects={cn} (initialize: {msgs})")
        return 1
    s.post({"jsonrpc": "2.0", "method": "notifications/initialized"})

    deadline = time.monotonic() + opts.timeout
    calls = ok = failed = 0
    subjects: list[str] = []
    while not stop.is_set():
        if time.monotonic() > deadline:
            say("TIMEOUT")
            break
        calls += 1
        text = f"call {calls}"
        req = {
            "jsonrpc": "2.0",
            "id": calls,
            "method": "tools/call",
            "params": {"name": "echo", "arguments": {"message": text}},
        }
        try:
            msgs, cn = s.post(req)
            answer = next((m for m in msgs if m.get("id") == calls), None)
            if answer is None:
                raise RuntimeError(f"no answer among {msgs}")
            got = answer.get("result", {}).get("content", [{}])[0].get("text")
            if got != text:
                raise RuntimeError(f"answered {answer}")
            ok += 1
            if cn not in subjects:
                subjects.append(cn)
            say(f"CALL {calls} ok {cn}")
        except Exception as exc:  # every failure is counted and shown
            failed += 1
            say(f"CALL {calls} FAIL {type(exc).__name__}: {exc}")
    say(f"SUMMARY calls={calls} ok={ok} failed={failed} subjects={','.join(subjects)}")
    return 0 if failed == 0 and stop.is_set() else 1


if __name__ == "__main__":
    sys.exit(main())
