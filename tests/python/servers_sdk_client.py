#!/usr/bin/env python3
"""Many MCP sessions at once against the routes of one mcp-relay, with the official MCP
Python SDK: each session reports which server answered it and what.

Usage:
    servers_sdk_client.py --plan PLAN_JSON [--timeout 60]

PLAN_JSON is a list of targets:

    [{"label": "demo", "url": "http://127.0.0.1:PORT/servers/demo/mcp",
      "transport": "streamable",            # or "sse" (the legacy HTTP+SSE client), or
                                            # "modern" (a 2026-07-28 client, mcp 2.x only)
      "sessions": 10,                       # default 1
      "calls": [{"name": "echo", "arguments": {"message": "demo-{s}-{c}"}},
                {"name": "slow", "arguments": {...}, "progress": true}],  # counts progress
      "repeat": 3}]                         # each call this many times; default 1

In every string of a call's arguments, ``{s}`` becomes the session's number (from 0) and
``{c}`` the repetition's, so that each answer can be traced to the request it answers.

Every session of every target is opened at once. Each initializes and lists the tools; then
all wait for one another (a barrier, so that the calls of all the sessions overlap), and each
makes its calls, one after the other, with its own arguments. Each session prints one JSON
line on stdout:

    {"label": ..., "session": 0, "server": "<serverInfo.name>", "protocol": "...",
     "tools": ["echo", ...],
     "results": [{"call": 0, "repeat": 0, "text": "...", "is_error": false}, ...]}

or, when something fails, ``{"label": ..., "session": 0, "error": "..."}``. The exit status
is 0 only if no session failed; the whole run is bounded by ``--timeout``.

Works with mcp 2.x and 1.x (field names differ: ``server_info`` / ``serverInfo``).
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
import warnings
from typing import Any

import anyio
from mcp import ClientSession

try:  # mcp 2.x: the wire types live in `mcp_types`.
    import mcp_types as types
except ImportError:  # mcp 1.x
    import mcp.types as types  # type: ignore

warnings.filterwarnings("ignore", category=DeprecationWarning)

import mcp.client.sse as sdk_sse

try:  # mcp 2.x, and mcp 1.x from 1.24 on
    from mcp.client.streamable_http import streamable_http_client as _streamable
except ImportError:  # older mcp 1.x
    from mcp.client.streamable_http import streamablehttp_client as _streamable  # type: ignore


def log(msg: str) -> None:
    print(f"servers_sdk_client: {msg}", file=sys.stderr, flush=True)


def field_of(obj: Any, snake: str, camel: str) -> Any:
    """A field under its 2.x (snake_case) or 1.x (camelCase) name."""
    return getattr(obj, snake) if hasattr(obj, snake) else getattr(obj, camel)


def substitute(value: Any, s: int, c: int) -> Any:
    if isinstance(value, str):
        return value.replace("{s}", str(s)).replace("{c}", str(c))
    if isinstance(value, list):
        return [substitute(v, s, c) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, s, c) for k, v in value.items()}
    return value


class Barrier:
    """Releases every waiter once `n` have arrived (or one has given up)."""

    def __init__(self, n: int) -> None:
        self.left = n
        self.open = anyio.Event()

    def arrive(self) -> None:
        self.left -= 1
        if self.left <= 0:
            self.open.set()


def emit(line: dict[str, Any]) -> None:
    print(json.dumps(line), flush=True)


async def on_sampling(context: Any, params: Any) -> Any:
    """Answers a server's sampling request with the prompt it was given, echoed."""
    prompt = ""
    if params.messages:
        prompt = getattr(params.messages[-1].content, "text", "") or ""
    return types.CreateMessageResult(
        role="assistant",
        content=types.TextContent(type="text", text=f"sampled: {prompt}"),
        model="mcp-relay-test-model",
        stop_reason="endTurn",
    )


async def one_session(target: dict[str, Any], s: int, barrier: Barrier, failures: list[str]) -> None:
    label = target["label"]
    transport = target.get("transport", "streamable")
    arrived = False
    if transport == "modern":
        state = {"arrived": False}
        try:
            await one_modern_session(target, s, barrier, state)
        except Exception as exc:  # noqa: BLE001 - every failure is reported as that session's line
            failures.append(label)
            emit({"label": label, "session": s, "error": f"{type(exc).__name__}: {exc}"})
            log(f"{label} session {s}:\n{traceback.format_exc()}")
        finally:
            if not state["arrived"]:
                barrier.arrive()
        return
    try:
        cm = _streamable(target["url"]) if transport == "streamable" else sdk_sse.sse_client(target["url"])
        async with cm as streams:
            async with ClientSession(streams[0], streams[1], sampling_callback=on_sampling) as session:
                init = await session.initialize()
                info = field_of(init, "server_info", "serverInfo")
                tools = [t.name for t in (await session.list_tools()).tools]
                barrier.arrive()
                arrived = True
                await barrier.open.wait()
                results = []
                for i, call in enumerate(target.get("calls", [])):
                    for c in range(int(target.get("repeat", 1))):
                        progress: list[float] = []

                        async def on_progress(done: float, total: float | None, message: str | None) -> None:
                            progress.append(done)

                        result = await session.call_tool(
                            call["name"],
                            substitute(call.get("arguments", {}), s, c),
                            progress_callback=on_progress if call.get("progress") else None,
                        )
                        texts = [x.text for x in result.content if getattr(x, "type", None) == "text"]
                        results.append(
                            {
                                "call": i,
                                "repeat": c,
                                "text": "\n".join(texts),
                                "is_error": bool(field_of(result, "is_error", "isError")),
                                "progress": len(progress),
                            }
                        )
                emit(
                    {
                        "label": label,
                        "session": s,
                        "server": info.name,
                        "protocol": field_of(init, "protocol_version", "protocolVersion"),
                        "tools": tools,
                        "results": results,
                    }
                )
    except Exception as exc:  # noqa: BLE001 - every failure is reported as that session's line
        failures.append(label)
        emit({"label": label, "session": s, "error": f"{type(exc).__name__}: {exc}"})
        log(f"{label} session {s}:\n{traceback.format_exc()}")
    finally:
        if not arrived:
            barrier.arrive()


async def one_modern_session(target: dict[str, Any], s: int, barrier: Barrier, state: dict[str, bool]) -> None:
    """A 2026-07-28 client (mcp 2.x ``Client`` pinned to the era: no initialize, no session)."""
    from mcp import Client  # mcp 2.x only

    async with Client(_streamable(target["url"]), mode="2026-07-28", read_timeout_seconds=30) as client:
        # Pinned to the era there is no initialize: the server names itself in discover.
        raw = await client.session.send_discover("2026-07-28")
        name = ((raw.get("_meta") or {}).get("io.modelcontextprotocol/serverInfo") or {}).get("name")
        tools = [t.name for t in (await client.list_tools()).tools]
        barrier.arrive()
        state["arrived"] = True
        await barrier.open.wait()
        results = []
        for i, call in enumerate(target.get("calls", [])):
            for c in range(int(target.get("repeat", 1))):
                result = await client.call_tool(call["name"], substitute(call.get("arguments", {}), s, c))
                texts = [x.text for x in result.content if getattr(x, "type", None) == "text"]
                results.append({"call": i, "repeat": c, "text": "\n".join(texts), "is_error": bool(result.is_error)})
        emit(
            {
                "label": target["label"],
                "session": s,
                "server": name,
                "protocol": "2026-07-28",
                "tools": tools,
                "results": results,
            }
        )


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--plan", required=True, help="the targets, as JSON (see the module doc)")
    parser.add_argument("--timeout", type=float, default=60.0)
    opts = parser.parse_args()
    plan = json.loads(opts.plan)
    total = sum(int(t.get("sessions", 1)) for t in plan)
    barrier = Barrier(total)
    failures: list[str] = []
    try:
        with anyio.fail_after(opts.timeout):
            async with anyio.create_task_group() as tg:
                for target in plan:
                    for s in range(int(target.get("sessions", 1))):
                        tg.start_soon(one_session, target, s, barrier, failures)
    except TimeoutError:
        emit({"label": "run", "session": -1, "error": f"timed out after {opts.timeout} s"})
        return 1
    log(f"{total} sessions, {len(failures)} failed")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(anyio.run(main))
