#!/usr/bin/env python3
"""Counts the instructions a relay binary spends on a fixed workload, under valgrind's
callgrind: a measure that does not move with what else the machine is doing, for comparing
two builds (a branch against main, a release against the last one) on a shared machine.

The workload, over TCP in front of the demo server: initialize, then SMALL sequential echo
calls of ~10 bytes, then BIG echo calls of 10 MiB each way. Only the relay is counted (not
the demo server, not this driver).

    benches/scripts/instructions.py RELAY_BINARY [--small 2000] [--big 3]

Prints one line: instructions, and instructions per small call or per MiB (each minus the
cost of a run with neither, measured too). Needs valgrind and python3.
"""
import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time


def run(relay, small, big):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = tempfile.NamedTemporaryFile(prefix="callgrind-", delete=False).name
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", relay,
         "--listen", f"127.0.0.1:{port}", "--demo", "--max-message-size", "32MiB",
         "--ping-interval", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while True:
        try:
            s = socket.create_connection(("127.0.0.1", port))
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                sys.exit("the relay did not start under valgrind")
            time.sleep(0.1)
    f = s.makefile("rwb", buffering=0)

    def call(i, method, params):
        f.write((json.dumps({"jsonrpc": "2.0", "id": i, "method": method, "params": params}) + "\n").encode())
        line = f.readline()
        if not line:
            sys.exit(f"no answer to call {i}")
        return line

    call(0, "initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                           "clientInfo": {"name": "instructions", "version": "0"}})
    f.write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
    for i in range(1, small + 1):
        call(i, "tools/call", {"name": "echo", "arguments": {"message": f"hello {i}"}})
    payload = "x" * (10 * 1024 * 1024)
    for i in range(big):
        line = call(10_000_000 + i, "tools/call", {"name": "echo", "arguments": {"message": payload}})
        if len(line) < len(payload):
            sys.exit("a big answer came back short")
    s.close()
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    os.unlink(out)
    m = re.search(r"Collected : (\d+)", err)
    if not m:
        sys.exit("valgrind printed no instruction count:\n" + err[-2000:])
    return int(m.group(1))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("relay")
    p.add_argument("--small", type=int, default=2000)
    p.add_argument("--big", type=int, default=3)
    a = p.parse_args()
    base = run(a.relay, 0, 0)
    small = run(a.relay, a.small, 0)
    big = run(a.relay, 0, a.big)
    print(f"{a.relay}: start+initialize {base:,}; "
          f"{(small - base) / a.small:,.0f} instructions per small call; "
          f"{(big - base) / (a.big * 10):,.0f} per MiB of a 10 MiB call (each way)")


if __name__ == "__main__":
    main()
