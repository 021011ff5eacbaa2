#!/usr/bin/env python3
"""An MCP server on the official Python SDK, serving Streamable HTTP over HTTPS with uvicorn.

Usage: tls_sdk_server.py --certfile CERT.pem --keyfile KEY.pem

The SDK's FastMCP (mcp 1.x, tests/python/.venv-mcp1) with its own Streamable HTTP app
(stateful sessions, at https://127.0.0.1:PORT/mcp), run by uvicorn with its TLS options
(``ssl_certfile``, ``ssl_keyfile``): a third-party HTTPS server for mcp-relay's client mode.
Once its socket listens it prints ``PORT <n>`` on stdout; uvicorn logs to stderr.

Tools: echo(message) answers the message; add(a, b) answers the sum (the names and answers
of mcp-relay's demo server, so that tests/python/stdio_connect_client.py's ``tools`` step
takes it for one).
"""

from __future__ import annotations

import argparse
import socket
import sys

import anyio
import uvicorn
from mcp.server.fastmcp import FastMCP

server = FastMCP("mcp-relay-tls-fixture")


@server.tool()
def echo(message: str) -> str:
    """Answers its message."""
    return message


@server.tool()
def add(a: int, b: int) -> str:
    """Adds two integers."""
    return str(a + b)


async def serve(certfile: str, keyfile: str) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    config = uvicorn.Config(
        server.streamable_http_app(),
        log_level="info",
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
    )
    uv = uvicorn.Server(config)
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    await uv.serve(sockets=[sock])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--certfile", required=True)
    parser.add_argument("--keyfile", required=True)
    opts = parser.parse_args()
    anyio.run(serve, opts.certfile, opts.keyfile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
