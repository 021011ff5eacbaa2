#!/usr/bin/env python3
"""Drive an MCP server behind mcp-relay with the official MCP Python SDK, over TCP.

The SDK has no TCP transport, so this builds one the way the SDK's own stdio client does:
newline-delimited JSON-RPC on a byte stream (here from ``anyio.connect_tcp``), each line
parsed into a JSON-RPC message and wrapped in ``SessionMessage``, bridged to the
``ClientSession`` through anyio memory object streams.

Usage: sdk_tcp_client.py --port PORT [--host 127.0.0.1] [--timeout 60]

It runs initialize, tools/list, an echo call, resources/list + resources/read,
prompts/list + prompts/get, and a long-running tool with a progress callback, against
whichever server is behind the relay (mcp-relay's demo server or the reference
"everything" server; tool names are discovered, not assumed), and prints ``OK`` last.
Any failure exits non-zero with the reason on stderr. Everything is bounded by --timeout.

Works with mcp 1.x (``mcp.types.JSONRPCMessage`` is a pydantic root model) and 2.x
(``mcp_types.jsonrpc_message_adapter``).
"""

from __future__ import annotations

import argparse
import sys
import traceback
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import anyio
from mcp import ClientSession
from mcp.shared.message import SessionMessage

try:  # mcp 2.x: the wire types live in `mcp_types`; JSONRPCMessage is a plain union.
    from mcp_types import jsonrpc_message_adapter as _adapter

    def parse_message(line: bytes) -> Any:
        # Exactly what mcp.client.stdio._parse_line does in 2.x.
        return _adapter.validate_json(line, by_name=False)

    def dump_message(message: Any) -> str:
        # Exactly what mcp.client.stdio's stdin_writer does in 2.x.
        return message.model_dump_json(by_alias=True, exclude_unset=True)

except ImportError:  # mcp 1.x
    from mcp.types import JSONRPCMessage

    def parse_message(line: bytes) -> Any:
        return JSONRPCMessage.model_validate_json(line)

    def dump_message(message: Any) -> str:
        return message.model_dump_json(by_alias=True, exclude_none=True)


def log(msg: str) -> None:
    print(f"sdk_tcp_client: {msg}", file=sys.stderr, flush=True)


@asynccontextmanager
async def tcp_client(host: str, port: int) -> AsyncIterator[tuple[Any, Any]]:
    """The TCP twin of ``mcp.client.stdio.stdio_client``: yields (read_stream, write_stream)."""
    stream = await anyio.connect_tcp(host, port)
    read_writer, read_stream = anyio.create_memory_object_stream(0)
    write_stream, write_reader = anyio.create_memory_object_stream(0)

    async def reader() -> None:
        buffer = b""
        async with read_writer:
            try:
                while True:
                    chunk = await stream.receive(65536)
                    lines = (buffer + chunk).split(b"\n")
                    buffer = lines.pop()
                    for line in lines:
                        if not line.strip():
                            continue
                        try:
                            item: Any = SessionMessage(parse_message(line))
                        except Exception as exc:  # surfaced to the session, as stdio does
                            item = exc
                        await read_writer.send(item)
            except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
                pass

    async def writer() -> None:
        async with write_reader:
            try:
                async for session_message in write_reader:
                    data = (dump_message(session_message.message) + "\n").encode("utf-8")
                    await stream.send(data)
            except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
                await read_writer.aclose()

    async with anyio.create_task_group() as tg:
        tg.start_soon(reader)
        tg.start_soon(writer)
        try:
            yield read_stream, write_stream
        finally:
            await stream.aclose()
            tg.cancel_scope.cancel()


def text_of(result: Any) -> str:
    texts = [c.text for c in result.content if getattr(c, "type", None) == "text"]
    if not texts:
        raise AssertionError(f"no text content in {result!r}")
    return texts[0]


def field(obj: Any, snake: str, camel: str) -> Any:
    """A result field under its 2.x (snake_case) or 1.x (camelCase) name."""
    return getattr(obj, snake) if hasattr(obj, snake) else getattr(obj, camel)


def check(cond: bool, what: str) -> None:
    if not cond:
        raise AssertionError(what)


# Long-running tools with progress, by name, and the arguments that keep them short.
PROGRESS_TOOLS = {
    "slow": {"steps": 3, "interval_ms": 50},  # mcp-relay demo server
    "trigger-long-running-operation": {"duration": 0.3, "steps": 3},  # everything, 2026
    "longRunningOperation": {"duration": 0.3, "steps": 3},  # everything, 2025
}


async def exercise(session: ClientSession) -> None:
    init = await session.initialize()
    info = field(init, "server_info", "serverInfo")
    log(f"initialized: {info.name} {info.version}, protocol {field(init, 'protocol_version', 'protocolVersion')}")
    caps = init.capabilities
    check(caps.tools is not None, "the server has no tools capability")

    tools = {t.name: t for t in (await session.list_tools()).tools}
    log(f"{len(tools)} tools: {', '.join(sorted(tools))}")
    check("echo" in tools, "no echo tool")

    message = "héllo through mcp-relay ✓ \"quoted\""
    echoed = text_of(await session.call_tool("echo", {"message": message}))
    check(message in echoed, f"echo returned {echoed!r}")
    log(f"echo: {echoed!r}")

    if caps.resources is not None:
        resources = (await session.list_resources()).resources
        check(len(resources) > 0, "resources/list is empty")
        uri = str(resources[0].uri)
        contents = (await session.read_resource(uri)).contents
        check(len(contents) > 0, f"resources/read {uri} returned nothing")
        log(f"{len(resources)} resources; read {uri}")
    else:
        log("no resources capability: resources skipped")

    if caps.prompts is not None:
        prompts = (await session.list_prompts()).prompts
        check(len(prompts) > 0, "prompts/list is empty")
        prompt = prompts[0]
        args = {a.name: "Ada" for a in (prompt.arguments or []) if a.required}
        got = await session.get_prompt(prompt.name, args)
        check(len(got.messages) > 0, f"prompts/get {prompt.name} returned no messages")
        log(f"{len(prompts)} prompts; got {prompt.name}")
    else:
        log("no prompts capability: prompts skipped")

    name = next((n for n in PROGRESS_TOOLS if n in tools), None)
    check(name is not None, f"no long-running tool among {sorted(tools)}")
    assert name is not None
    progress: list[float] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append(value)

    result = await session.call_tool(name, PROGRESS_TOOLS[name], progress_callback=on_progress)
    check(not field(result, "is_error", "isError"), f"{name} failed: {result!r}")
    check(len(progress) == 3, f"{name}: expected 3 progress notifications, got {progress}")
    check(progress == sorted(progress), f"{name}: progress out of order: {progress}")
    log(f"{name}: progress {progress}, result {text_of(result)!r}")

    pong = await session.send_ping()
    check(pong is not None, "no ping answer")


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--timeout", type=float, default=60.0)
    opts = parser.parse_args()
    try:
        with anyio.fail_after(opts.timeout):
            async with tcp_client(opts.host, opts.port) as (read_stream, write_stream):
                async with ClientSession(read_stream, write_stream) as session:
                    await exercise(session)
    except TimeoutError:
        log(f"FAILED: timed out after {opts.timeout} s")
        return 1
    except Exception:
        log("FAILED:\n" + traceback.format_exc())
        return 1
    print("OK", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(anyio.run(main))
