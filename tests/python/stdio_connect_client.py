#!/usr/bin/env python3
"""Drive ``mcp-relay --connect URL`` as a local stdio MCP server with the official MCP Python SDK.

Usage:
    stdio_connect_client.py --relay BIN [--timeout 90] [--step-timeout 30] [--step STEP]...
                            [--elicit-name NAME] -- RELAY_ARGS...

The SDK's ``stdio_client`` spawns ``BIN RELAY_ARGS...`` (for example ``--connect
http://127.0.0.1:PORT/mcp --transport sse``): the relay is, to this client, an ordinary stdio
server, and carries the session to the remote server it names. The relay inherits this
process's environment (``RUST_LOG``) and writes its log to this process's stderr.

After ``initialize`` the steps run in order (default: ``tools``):

  tools            tools/list, then echo and add (mcp-relay's demo server) or get-sum
                   (server-everything; which server it is comes from the tool list)
  payload:MIB      an echo of a MIB MiB string, whose answer must carry it back whole
  call             one echo call, which must succeed
  call-eventually  echo calls until one succeeds, each error from the relay (a remote still
                   unreachable) retried after 200 ms, within the step's bound
  call-fails       one echo call, which must be answered with a JSON-RPC error; prints
                   ``RESULT call-fails {"elapsed": s, "code": c, "message": m}``
  pause:NAME       prints ``PAUSE NAME`` and waits for a line on stdin (meanwhile the test
                   kills or restarts the remote)
  announce:NAME    prints ``STEP NAME`` and goes on at once (the test learns that the next
                   step has begun)
  ask-name         calls ``ask_name`` (tests/fixtures/modern_server.py), which asks this
                   client for a name by elicitation; answered with ``--elicit-name NAME``
                   (without it the client declares no elicitation), the result must greet
                   NAME
  ask-name-refused calls ``ask_name``, which must fail (a JSON-RPC error or a tool error);
                   prints ``RESULT ask-name-refused {"code": c, "message": m}``
  settle           calls ``settle`` (the same fixture), whose first round asks for no input,
                   only a retry with its request state: the result must say it settled
  list-changed     calls ``grow`` (the same fixture), waits for the server's
                   tools/list_changed notification, and lists the tools again: ``extra``
                   must be among them
  read:URI         resources/read of URI, whose text the PASS line shows
  subscribe:URI    resources/subscribe to URI, then calls ``touch`` (the same fixture) with
                   it: notifications/resources/updated for URI must come

Each step prints ``PASS step: detail`` or ``FAIL step: reason`` on stdout; the first failure
ends the run (later steps build on earlier ones). The last line is ``SUMMARY passed=N
failed=M``. Exit status 0 only if every step passed. Every wait is bounded: each step by
``--step-timeout``, the whole run by ``--timeout``.

Works with mcp 1.x (the tests run it from tests/python/.venv-mcp1) and 2.x.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
import warnings
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import anyio
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

warnings.filterwarnings("ignore", category=DeprecationWarning)

MIB = 1024 * 1024


def log(msg: str) -> None:
    print(f"stdio_connect_client: {msg}", file=sys.stderr, flush=True)


def say(line: str) -> None:
    print(line, flush=True)


def field_of(obj: Any, snake: str, camel: str) -> Any:
    """A field under its 2.x (snake_case) or 1.x (camelCase) name."""
    return getattr(obj, snake) if hasattr(obj, snake) else getattr(obj, camel)


def text_of(result: Any) -> str:
    texts = [c.text for c in result.content if getattr(c, "type", None) == "text"]
    if not texts:
        raise AssertionError(f"no text content in {short(result)}")
    return "\n".join(texts)


def is_error(result: Any) -> bool:
    return bool(field_of(result, "is_error", "isError"))


def short(value: Any, limit: int = 300) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} chars)"


def check(cond: bool, what: str) -> None:
    if not cond:
        raise AssertionError(what)


def error_of(exc: BaseException) -> tuple[Any, str]:
    """The JSON-RPC error code and message an SDK exception carries (McpError in 1.x,
    MCPError in 2.x: both keep the ErrorData as ``error``)."""
    data = getattr(exc, "error", None)
    code = getattr(data, "code", None)
    message = getattr(data, "message", None) or str(exc)
    return code, message


def relay_parameters(relay: str, args: list[str]) -> StdioServerParameters:
    """How ``stdio_client`` starts the relay: with this process's whole environment (the SDK
    passes only a few variables by default, and the relay's log level is one of ours)."""
    return StdioServerParameters(command=relay, args=args, env=dict(os.environ))


@asynccontextmanager
async def relay_session(relay: str, args: list[str], **callbacks: Any) -> AsyncIterator[Any]:
    """A ClientSession on the relay's stdio, initialized; yields (session, initialize result)."""
    async with stdio_client(relay_parameters(relay, args), errlog=sys.stderr) as streams:
        read_stream, write_stream = streams[0], streams[1]
        async with ClientSession(read_stream, write_stream, **callbacks) as session:
            init = await session.initialize()
            yield session, init


class Driver:
    def __init__(self, session: Any, step_timeout: float, elicit_name: str | None, listened: Listened) -> None:
        self.session = session
        self.step_timeout = step_timeout
        self.flavour = "unknown"
        self.counter = 0
        self.elicit_name = elicit_name
        self.listened = listened

    async def discover(self) -> list[str]:
        tools = await self.session.list_tools()
        names = [t.name for t in tools.tools]
        if "get-sum" in names:
            self.flavour = "everything"
        elif "add" in names:
            self.flavour = "demo"
        return names

    def echo_prefix(self) -> str:
        return "Echo: " if self.flavour == "everything" else ""

    async def echo(self, message: str) -> None:
        result = await self.session.call_tool("echo", {"message": message})
        check(not is_error(result), f"echo answered a tool error: {short(result)}")
        want = self.echo_prefix() + message
        got = text_of(result)
        check(got == want, f"echo answered {short(got)}, expected {short(want)}")

    def next_message(self) -> str:
        self.counter += 1
        return f"hello through the relay #{self.counter}"

    async def step(self, step: str) -> str:
        name, _, arg = step.partition(":")
        if name == "tools":
            names = await self.discover()
            check("echo" in names, f"no echo tool among {names}")
            await self.echo(self.next_message())
            if self.flavour == "everything":
                result = await self.session.call_tool("get-sum", {"a": 2, "b": 40})
            elif self.flavour == "demo":
                result = await self.session.call_tool("add", {"a": 2, "b": 40})
            else:
                raise AssertionError(f"neither the demo server nor server-everything: {names}")
            check("42" in text_of(result), f"2 + 40 answered {short(result)}")
            return f"{len(names)} tools ({self.flavour}); echo and add answered"
        if name == "payload":
            if self.flavour == "unknown":
                await self.discover()
            size = int(float(arg or "5") * MIB)
            message = ("0123456789abcdef" * (size // 16 + 1))[:size]
            start = time.monotonic()
            await self.echo(message)
            return f"{size} bytes each way in {time.monotonic() - start:.2f} s"
        if name == "call":
            if self.flavour == "unknown":
                await self.discover()
            await self.echo(self.next_message())
            return "echo answered"
        if name == "call-eventually":
            if self.flavour == "unknown":
                await self.discover()
            start = time.monotonic()
            errors: list[str] = []
            while True:
                try:
                    await self.echo(self.next_message())
                    break
                except AssertionError:
                    raise
                except Exception as exc:  # the relay's error while the remote is away
                    code, message = error_of(exc)
                    errors.append(f"{code}: {message}")
                    await anyio.sleep(0.2)
            took = time.monotonic() - start
            return f"echo answered after {took:.2f} s and {len(errors)} error(s) {errors[-3:]}"
        if name == "call-fails":
            start = time.monotonic()
            try:
                result = await self.session.call_tool("echo", {"message": self.next_message()})
            except AssertionError:
                raise
            except Exception as exc:
                elapsed = time.monotonic() - start
                code, message = error_of(exc)
                say("RESULT call-fails " + json.dumps({"elapsed": elapsed, "code": code, "message": message}))
                return f"error {code} after {elapsed:.2f} s: {message}"
            raise AssertionError(f"the call succeeded: {short(result)}")
        if name == "pause":
            say(f"PAUSE {arg}")
            line = await anyio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
            check(line != "", f"stdin ended while paused at {arg}")
            return f"resumed after {arg}"
        if name == "announce":
            say(f"STEP {arg}")
            return arg
        if name == "ask-name":
            result = await self.session.call_tool("ask_name", {})
            check(not is_error(result), f"ask_name answered a tool error: {short(result)}")
            text = text_of(result)
            check(
                self.elicit_name is not None and self.elicit_name in text,
                f"ask_name answered {short(text)}, without the name {self.elicit_name!r}",
            )
            return f"ask_name answered {text!r} after {self.listened.elicitations} elicitation(s)"
        if name == "ask-name-refused":
            try:
                result = await self.session.call_tool("ask_name", {})
            except AssertionError:
                raise
            except Exception as exc:
                code, message = error_of(exc)
            else:
                check(is_error(result), f"ask_name answered: {short(result)}")
                code, message = None, text_of(result)
            say("RESULT ask-name-refused " + json.dumps({"code": code, "message": message}))
            return f"refused ({code}): {message}"
        if name == "settle":
            result = await self.session.call_tool("settle", {})
            check(not is_error(result), f"settle answered a tool error: {short(result)}")
            text = text_of(result)
            check("settled" in text, f"settle answered {short(text)}")
            return f"settle answered {text!r}"
        if name == "list-changed":
            self.listened.tools_changed = anyio.Event()
            result = await self.session.call_tool("grow", {})
            check(not is_error(result), f"grow answered a tool error: {short(result)}")
            await self.listened.tools_changed.wait()
            names = [t.name for t in (await self.session.list_tools()).tools]
            check("extra" in names, f"no tool extra after the list changed: {names}")
            return f"tools/list_changed came; {len(names)} tools now"
        if name == "subscribe":
            self.listened.updated = anyio.Event()
            await self.session.subscribe_resource(arg)
            result = await self.session.call_tool("touch", {"uri": arg})
            check(not is_error(result), f"touch answered a tool error: {short(result)}")
            await self.listened.updated.wait()
            return f"subscribed to {arg}; its update came"
        if name == "read":
            result = await self.session.read_resource(arg)
            texts = [c.text for c in result.contents if hasattr(c, "text")]
            check(bool(texts), f"no text in {short(result)}")
            return f"{arg} read: {texts[0]!r}"
        raise AssertionError(f"unknown step {step!r}")


class Listened:
    """What the client heard from the server besides answers."""

    def __init__(self) -> None:
        self.tools_changed = anyio.Event()
        self.updated = anyio.Event()
        self.elicitations = 0


def callbacks_for(opts: argparse.Namespace, listened: Listened) -> dict[str, Any]:
    """The session's callbacks: notifications are noted; elicitation (and with it the
    capability) only with ``--elicit-name``, accepted with that name."""

    async def on_message(message: Any) -> None:
        root = getattr(message, "root", message)
        if getattr(root, "method", None) == "notifications/tools/list_changed":
            listened.tools_changed.set()
        if getattr(root, "method", None) == "notifications/resources/updated":
            listened.updated.set()

    callbacks: dict[str, Any] = {"message_handler": on_message}
    if opts.elicit_name is not None:
        from mcp import types

        async def on_elicit(context: Any, params: Any) -> Any:
            listened.elicitations += 1
            log(f"elicitation: {short(params)}")
            return types.ElicitResult(action="accept", content={"name": opts.elicit_name})

        callbacks["elicitation_callback"] = on_elicit
    return callbacks


async def run(opts: argparse.Namespace) -> int:
    passed = failed = 0
    listened = Listened()
    try:
        with anyio.fail_after(opts.timeout):
            async with relay_session(opts.relay, opts.relay_args, **callbacks_for(opts, listened)) as (session, init):
                info = field_of(init, "server_info", "serverInfo")
                say(f"PASS initialize: {info.name} {info.version}, protocol {field_of(init, 'protocol_version', 'protocolVersion')}")
                passed += 1
                driver = Driver(session, opts.step_timeout, opts.elicit_name, listened)
                for step in opts.step or ["tools"]:
                    try:
                        with anyio.fail_after(opts.step_timeout):
                            detail = await driver.step(step)
                    except TimeoutError:
                        say(f"FAIL {step}: no answer within {opts.step_timeout} s")
                        failed += 1
                        break
                    except Exception as exc:
                        log(f"{step}:\n" + traceback.format_exc())
                        say(f"FAIL {step}: {exc!r}"[:2000])
                        failed += 1
                        break
                    say(f"PASS {step}: {detail}")
                    passed += 1
    except TimeoutError:
        say(f"FAIL run: not done within {opts.timeout} s")
        failed += 1
    except BaseException as exc:  # the session itself failed (initialize, the relay exited)
        log("the session failed:\n" + traceback.format_exc())
        say(f"FAIL session: {exc!r}"[:2000])
        failed += 1
    say(f"SUMMARY passed={passed} failed={failed}")
    return 0 if failed == 0 else 1


def main() -> int:
    argv = sys.argv[1:]
    relay_args: list[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, relay_args = argv[:split], argv[split + 1 :]
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--relay", required=True, help="the mcp-relay binary")
    parser.add_argument("--timeout", type=float, default=90.0)
    parser.add_argument("--step-timeout", type=float, default=30.0)
    parser.add_argument("--step", action="append", help="a step (repeatable; see the usage)")
    parser.add_argument("--elicit-name", help="accept elicitations with this name")
    opts = parser.parse_args(argv)
    opts.relay_args = relay_args
    return anyio.run(run, opts)


if __name__ == "__main__":
    sys.exit(main())
