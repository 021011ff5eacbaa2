#!/usr/bin/env python3
"""Drive an MCP server behind mcp-relay's HTTP listener with the official MCP Python SDK.

Usage:
    http_sdk_client.py --url http://127.0.0.1:PORT/mcp [--transport streamable|sse]
                       [--flavour auto|demo|everything] [--timeout 120] [--payload-mib 5]

``--url`` is the endpoint: ``.../mcp`` for Streamable HTTP (``streamable_http_client``) or
``.../sse`` for the legacy HTTP+SSE transport (``sse_client``); the transport is taken from
the path unless ``--transport`` says otherwise. The server behind the relay is mcp-relay's
demo server or the reference "everything" server (@modelcontextprotocol/server-everything);
which one is found from its tool list (``--flavour`` forces it), since their tool names
differ.

Checks, each printed as one ``PASS name: detail`` or ``FAIL name: reason`` line on stdout:
initialize, tools/list, a tool call, a second tool (add/get-sum), resources (list + read),
prompts (list + get), progress notifications, logging (logging/setLevel and a log message
delivered to the logging callback), a sampling round trip (server → client
sampling/createMessage → answer → tool result), an elicitation round trip, ping,
cancellation (a long call cancelled after its first progress; the session goes on), 20
concurrent requests on one session (echoes and progress-reporting calls mixed, each answer
and each progress matched to its request), two sessions at once without cross-talk, and a
payload of ``--payload-mib`` MiB each way (echo of a string that large).

Exit status 0 only if every check passed; every wait is bounded (each check by its own
deadline, the whole run by ``--timeout``).

Client-side limits adjusted here, not relay behaviour: the SDK caps one SSE event at 1 MiB
by default (``max_sse_event_size`` of ``streamable_http_client``; hard-coded in
``sse_client``), so the large-payload check raises it to fit the payload.
"""

from __future__ import annotations

import argparse
import inspect
import secrets
import sys
import time
import traceback
import warnings
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Awaitable, Callable
from urllib.parse import urlparse

import anyio
from mcp import ClientSession

warnings.filterwarnings("ignore", category=DeprecationWarning)
try:  # mcp 2.x
    from mcp.shared.exceptions import MCPDeprecationWarning

    warnings.filterwarnings("ignore", category=MCPDeprecationWarning)
except ImportError:  # pragma: no cover
    pass

try:  # mcp 2.x: the wire types live in `mcp_types`.
    import mcp_types as types
except ImportError:  # mcp 1.x
    import mcp.types as types  # type: ignore[no-redef]

import mcp.client.sse as sdk_sse

try:  # mcp 2.x, and mcp 1.x from 1.24 on
    from mcp.client.streamable_http import streamable_http_client as _streamable
except ImportError:  # older mcp 1.x
    from mcp.client.streamable_http import streamablehttp_client as _streamable  # type: ignore

# Only mcp 2.x limits the size of one SSE event (and takes this argument to raise it).
_STREAMABLE_V2 = "max_sse_event_size" in inspect.signature(_streamable).parameters

MIB = 1024 * 1024


def log(msg: str) -> None:
    print(f"http_sdk_client: {msg}", file=sys.stderr, flush=True)


def field_of(obj: Any, snake: str, camel: str) -> Any:
    """A field under its 2.x (snake_case) or 1.x (camelCase) name."""
    return getattr(obj, snake) if hasattr(obj, snake) else getattr(obj, camel)


def texts_of(result: Any) -> list[str]:
    return [c.text for c in result.content if getattr(c, "type", None) == "text"]


def text_of(result: Any) -> str:
    texts = texts_of(result)
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


# ---------------------------------------------------------------------------------------
# The two servers' tools
# ---------------------------------------------------------------------------------------


@dataclass
class Flavour:
    name: str
    echo_prefix: str
    add: tuple[str, dict[str, Any], str]
    progress_tool: str
    progress_args: Callable[[int, float], dict[str, Any]]
    sample_tool: str
    sample_args: Callable[[str], dict[str, Any]]
    elicit_tool: str
    elicit_args: Callable[[str], dict[str, Any]]


DEMO = Flavour(
    name="demo",
    echo_prefix="",
    add=("add", {"a": 2, "b": 40}, "42"),
    progress_tool="slow",
    progress_args=lambda steps, seconds: {
        "steps": steps,
        "interval_ms": max(1, int(seconds * 1000 / steps)),
    },
    sample_tool="sample",
    sample_args=lambda prompt: {"prompt": prompt},
    elicit_tool="elicit",
    elicit_args=lambda message: {"message": message},
)

EVERYTHING = Flavour(
    name="everything",
    echo_prefix="Echo: ",
    add=("get-sum", {"a": 2, "b": 40}, "42"),
    progress_tool="trigger-long-running-operation",
    progress_args=lambda steps, seconds: {"duration": seconds, "steps": steps},
    sample_tool="trigger-sampling-request",
    sample_args=lambda prompt: {"prompt": prompt, "maxTokens": 20},
    elicit_tool="trigger-elicitation-request",
    elicit_args=lambda message: {},
)


# ---------------------------------------------------------------------------------------
# Sessions and what their callbacks saw
# ---------------------------------------------------------------------------------------


@dataclass
class Peer:
    """One ClientSession and everything its callbacks received."""

    label: str
    session: ClientSession | None = None
    logs: list[Any] = field(default_factory=list)
    log_arrived: anyio.Event = field(default_factory=anyio.Event)
    list_changed: anyio.Event = field(default_factory=anyio.Event)
    sampling_requests: list[Any] = field(default_factory=list)
    elicitation_requests: list[Any] = field(default_factory=list)
    transport_errors: list[Exception] = field(default_factory=list)

    @property
    def s(self) -> ClientSession:
        assert self.session is not None
        return self.session

    async def on_log(self, params: Any) -> None:
        self.logs.append(params)
        self.log_arrived.set()
        self.log_arrived = anyio.Event()

    async def on_message(self, message: Any) -> None:
        if isinstance(message, Exception):
            text = str(message)
            if "unknown request ID" in text and "Steps: 40" in text:
                # The answer to the long call the cancellation check abandoned. SDK 1.x does
                # not send notifications/cancelled when a call's task is cancelled (it only
                # forgets the id), so the server rightly answers it and the relay rightly
                # delivers that answer; SDK 1.x then reports it as an unknown id. Not an error
                # of the transport.
                log(f"{self.label}: NOTE: the abandoned long call's answer arrived: {message!r}")
                return
            self.transport_errors.append(message)
            log(f"{self.label}: transport error surfaced to the session: {message!r}")
            return
        root = getattr(message, "root", message)
        if getattr(root, "method", "") == "notifications/tools/list_changed":
            self.list_changed.set()

    async def on_sampling(self, context: Any, params: Any) -> Any:
        self.sampling_requests.append(params)
        messages = params.messages
        prompt = ""
        if messages:
            content = messages[-1].content
            prompt = getattr(content, "text", "") or ""
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text=f"sampled<{self.label}>: {prompt}"),
            model="mcp-relay-test-model",
            stop_reason="endTurn",
        )

    async def on_elicitation(self, context: Any, params: Any) -> Any:
        self.elicitation_requests.append(params)
        return types.ElicitResult(
            action="accept",
            content={"answer": f"yes from {self.label}", "name": f"Ada {self.label}", "check": True},
        )


_SSE_WITHIN_ORIGIN = getattr(sdk_sse, "sse_within_origin", None)
if _SSE_WITHIN_ORIGIN is not None and "max_event_size" not in inspect.signature(_SSE_WITHIN_ORIGIN).parameters:
    _SSE_WITHIN_ORIGIN = None  # mcp 1.x: no event size limit to raise


def sse_client_with_event_limit(limit: int | None):
    """``sse_client`` with the SSE event size limit raised: the SDK hard-codes 1 MiB."""
    original = _SSE_WITHIN_ORIGIN
    if original is not None:

        @asynccontextmanager
        async def patched(client: Any, url: Any, *, headers: Any = None, max_event_size: Any = None):
            async with original(client, url, headers=headers, max_event_size=limit) as source:
                yield source

        sdk_sse.sse_within_origin = patched  # sse_client looks it up at call time
    return sdk_sse.sse_client


@asynccontextmanager
async def open_peer(url: str, transport: str, label: str, event_limit: int) -> AsyncIterator[Peer]:
    peer = Peer(label)
    if transport == "streamable":
        if _STREAMABLE_V2:
            cm = _streamable(url, max_sse_event_size=event_limit)
        else:  # pragma: no cover - 1.x
            cm = _streamable(url)
    else:
        cm = sse_client_with_event_limit(event_limit)(url, sse_read_timeout=120)
    async with cm as streams:
        read_stream, write_stream = streams[0], streams[1]
        async with ClientSession(
            read_stream,
            write_stream,
            sampling_callback=peer.on_sampling,
            elicitation_callback=peer.on_elicitation,
            logging_callback=peer.on_log,
            message_handler=peer.on_message,
            client_info=types.Implementation(name=f"mcp-relay-http-test-{label}", version="0"),
        ) as session:
            peer.session = session
            yield peer


# ---------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------


class Runner:
    def __init__(self) -> None:
        self.passed: list[str] = []
        self.failed: list[str] = []
        # Every check ran; what is left is closing the sessions.
        self.closing = False

    async def run(self, name: str, timeout: float, body: Callable[[], Awaitable[str | None]]) -> bool:
        start = time.monotonic()
        try:
            with anyio.fail_after(timeout):
                detail = await body()
        except TimeoutError:
            self.fail(name, f"timed out after {timeout} s")
            return False
        except Exception as exc:  # noqa: BLE001 - every failure is reported, then the next check runs
            self.fail(name, f"{type(exc).__name__}: {exc}")
            log(f"{name} traceback:\n{traceback.format_exc()}")
            return False
        elapsed = time.monotonic() - start
        self.passed.append(name)
        print(f"PASS {name}: {detail or 'ok'} ({elapsed:.2f} s)", flush=True)
        return True

    def fail(self, name: str, why: str) -> None:
        self.failed.append(name)
        print(f"FAIL {name}: {why}", flush=True)


async def list_tool_names(peer: Peer, want: list[str]) -> dict[str, Any]:
    """tools/list; waits (bounded) for `notifications/tools/list_changed` while tools that
    servers register after `notifications/initialized` (everything's sampling and elicitation
    tools) are still missing."""
    deadline = time.monotonic() + 5
    while True:
        tools = {t.name: t for t in (await peer.s.list_tools()).tools}
        missing = [w for w in want if w not in tools]
        if not missing or time.monotonic() >= deadline:
            return tools
        with anyio.move_on_after(0.5):
            await peer.list_changed.wait()
        peer.list_changed = anyio.Event()


async def progress_call(peer: Peer, fl: Flavour, steps: int, seconds: float) -> tuple[Any, list[float]]:
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    result = await peer.s.call_tool(
        fl.progress_tool, fl.progress_args(steps, seconds), progress_callback=on_progress
    )
    return result, seen


async def echo(peer: Peer, fl: Flavour, message: str) -> None:
    result = await peer.s.call_tool("echo", {"message": message})
    check(not is_error(result), f"echo failed: {short(result)}")
    got = text_of(result)
    want = fl.echo_prefix + message
    check(got == want, f"echo returned {short(got)}, wanted {short(want)}")


async def exercise(r: Runner, url: str, transport: str, flavour: str, payload_mib: float) -> None:
    event_limit = int(payload_mib * MIB) + MIB
    async with open_peer(url, transport, "A", event_limit) as a:
        state: dict[str, Any] = {}

        async def initialize() -> str:
            init = await a.s.initialize()
            info = field_of(init, "server_info", "serverInfo")
            version = field_of(init, "protocol_version", "protocolVersion")
            state["init"] = init
            check(init.capabilities.tools is not None, "no tools capability")
            return f"{info.name} {info.version}, protocol {version}"

        if not await r.run("initialize", 30, initialize):
            return

        async def tools_list() -> str:
            tools = await list_tool_names(a, [])
            if flavour == "auto":
                fl = DEMO if "slow" in tools else EVERYTHING
            else:
                fl = DEMO if flavour == "demo" else EVERYTHING
            names = ["echo", fl.add[0], fl.progress_tool, fl.sample_tool, fl.elicit_tool]
            tools = await list_tool_names(a, names)
            state["fl"] = fl
            missing = [n for n in names if n not in tools]
            check(not missing, f"missing tools {missing} among {sorted(tools)}")
            return f"{len(tools)} tools, flavour {fl.name}"

        if not await r.run("tools/list", 30, tools_list):
            return
        fl: Flavour = state["fl"]

        async def tool_echo() -> str:
            message = 'héllo through mcp-relay ✓ "quoted" \\ back\\slash'
            await echo(a, fl, message)
            return f"{message!r}"

        await r.run("tools/call echo", 30, tool_echo)

        async def tool_add() -> str:
            name, args, want = fl.add
            got = text_of(await a.s.call_tool(name, args))
            check(want in got, f"{name} returned {got!r}")
            return f"{name} → {got!r}"

        await r.run("tools/call add", 30, tool_add)

        async def resources() -> str:
            listed = (await a.s.list_resources()).resources
            check(len(listed) > 0, "resources/list is empty")
            uri = str(listed[0].uri)
            contents = (await a.s.read_resource(uri)).contents
            check(len(contents) > 0, f"resources/read {uri} returned nothing")
            return f"{len(listed)} resources; read {uri}"

        await r.run("resources", 30, resources)

        async def prompts() -> str:
            listed = (await a.s.list_prompts()).prompts
            check(len(listed) > 0, "prompts/list is empty")
            prompt = listed[0]
            args = {arg.name: "Ada" for arg in (prompt.arguments or []) if arg.required}
            got = await a.s.get_prompt(prompt.name, args)
            check(len(got.messages) > 0, f"prompts/get {prompt.name} returned no messages")
            return f"{len(listed)} prompts; got {prompt.name}"

        await r.run("prompts", 30, prompts)

        async def progress() -> str:
            result, seen = await progress_call(a, fl, 3, 0.3)
            check(not is_error(result), f"{fl.progress_tool} failed: {short(result)}")
            check(seen == [1, 2, 3], f"progress {seen}, wanted [1, 2, 3]")
            return f"{fl.progress_tool}: progress {seen}, {text_of(result)!r}"

        await r.run("progress", 30, progress)

        async def logging() -> str:
            await a.s.set_logging_level("debug")
            before = len(a.logs)
            if fl is DEMO:
                marker = f"log-{secrets.token_hex(4)}"
                arrived = a.log_arrived
                result = await a.s.call_tool("log", {"level": "warning", "message": marker})
                check(text_of(result) == "logged", f"log returned {short(result)}")
                with anyio.fail_after(10):
                    await arrived.wait()
                got = [m for m in a.logs[before:] if m.data == marker]
                check(len(got) == 1, f"log {marker} not delivered once: {a.logs[before:]}")
                check(got[0].level == "warning", f"level {got[0].level}")
                return f"logging/setLevel + notifications/message {marker!r} at {got[0].level}"
            # everything: toggling simulated logging sends one message at once, then every 5 s.
            arrived = a.log_arrived
            result = await a.s.call_tool("toggle-simulated-logging", {})
            check(not is_error(result), f"toggle-simulated-logging failed: {short(result)}")
            try:
                with anyio.fail_after(10):
                    await arrived.wait()
            finally:
                await a.s.call_tool("toggle-simulated-logging", {})
            got = a.logs[before:]
            check(len(got) >= 1, "no notifications/message arrived")
            return f"logging/setLevel + {len(got)} notifications/message, first at {got[0].level}"

        await r.run("logging", 30, logging)

        async def sampling() -> str:
            prompt = f"prompt-{secrets.token_hex(4)}"
            before = len(a.sampling_requests)
            result = await a.s.call_tool(fl.sample_tool, fl.sample_args(prompt))
            check(not is_error(result), f"{fl.sample_tool} failed: {short(result)}")
            check(len(a.sampling_requests) == before + 1, "the sampling callback did not run once")
            got = text_of(result)
            check(f"sampled<A>:" in got and prompt in got, f"tool result {short(got)} lacks the sampled text")
            return f"{fl.sample_tool} → sampling/createMessage → {short(got, 80)}"

        await r.run("sampling", 30, sampling)

        async def elicitation() -> str:
            message = f"question-{secrets.token_hex(4)}"
            before = len(a.elicitation_requests)
            result = await a.s.call_tool(fl.elicit_tool, fl.elicit_args(message))
            check(not is_error(result), f"{fl.elicit_tool} failed: {short(result)}")
            check(len(a.elicitation_requests) == before + 1, "the elicitation callback did not run once")
            got = text_of(result)
            want = "yes from A" if fl is DEMO else "Ada A"
            check(want in got, f"tool result {short(got)} lacks {want!r}")
            return f"{fl.elicit_tool} → elicitation/create → {short(got, 80)}"

        await r.run("elicitation", 30, elicitation)

        async def ping() -> str:
            await a.s.send_ping()
            return "pong"

        await r.run("ping", 15, ping)

        async def cancellation() -> str:
            first = anyio.Event()
            seen: list[float] = []
            outcome: dict[str, Any] = {}

            async def on_progress(progress: float, total: float | None, message: str | None) -> None:
                seen.append(progress)
                first.set()

            async def long_call() -> None:
                try:
                    outcome["result"] = await a.s.call_tool(
                        fl.progress_tool, fl.progress_args(40, 4.0), progress_callback=on_progress
                    )
                except anyio.get_cancelled_exc_class():
                    outcome["cancelled"] = True
                    raise

            start = time.monotonic()
            async with anyio.create_task_group() as tg:
                tg.start_soon(long_call)
                with anyio.fail_after(10):
                    await first.wait()
                tg.cancel_scope.cancel()
            took = time.monotonic() - start
            check("result" not in outcome, f"the call finished instead: {short(outcome.get('result'))}")
            check(outcome.get("cancelled") is True, "the call was not cancelled")
            check(took < 10, f"cancelling took {took:.1f} s")
            # The session goes on: a new request is answered, and the cancelled call's
            # progress stops (no late progress reaches the dropped callback: counted below).
            count = len(seen)
            await echo(a, fl, "after cancel")
            result, after = await progress_call(a, fl, 2, 0.1)
            check(after == [1, 2], f"progress after the cancellation: {after}")
            check(not is_error(result), f"call after the cancellation failed: {short(result)}")
            return (
                f"cancelled {fl.progress_tool} after {count} progress notification(s) in "
                f"{took:.2f} s; the session answers afterwards"
            )

        await r.run("cancellation", 40, cancellation)

        async def concurrent() -> str:
            n = 20
            results: dict[int, Any] = {}
            progresses: dict[int, list[float]] = {}

            async def one(i: int) -> None:
                if i % 2 == 0:
                    message = f"concurrent-{i}-{secrets.token_hex(3)}"
                    await echo(a, fl, message)
                    results[i] = message
                else:
                    result, seen = await progress_call(a, fl, 3, 0.3)
                    check(not is_error(result), f"call {i} failed: {short(result)}")
                    progresses[i] = seen
                    results[i] = text_of(result)

            async with anyio.create_task_group() as tg:
                for i in range(n):
                    tg.start_soon(one, i)
            check(len(results) == n, f"{len(results)} of {n} answered")
            bad = {i: p for i, p in progresses.items() if p != [1, 2, 3]}
            check(not bad, f"progress mixed up between concurrent calls: {bad}")
            return f"{n} requests at once on one session ({n // 2} with 3 progress notifications each)"

        await r.run("20 concurrent requests", 60, concurrent)

        async def two_sessions() -> str:
            async with open_peer(url, transport, "B", event_limit) as b:
                await b.s.initialize()
                await list_tool_names(b, [fl.sample_tool])
                await b.s.set_logging_level("debug")
                a_before, b_before = len(a.logs), len(b.logs)
                a_sampled, b_sampled = len(a.sampling_requests), len(b.sampling_requests)
                got: dict[str, Any] = {}

                async def work(peer: Peer, other: str) -> None:
                    tag = f"{peer.label}-{secrets.token_hex(3)}"
                    await echo(peer, fl, f"echo-{tag}")
                    result, seen = await progress_call(peer, fl, 3, 0.3)
                    check(seen == [1, 2, 3], f"session {peer.label}: progress {seen}")
                    sampled = text_of(await peer.s.call_tool(fl.sample_tool, fl.sample_args(f"p-{tag}")))
                    check(
                        f"sampled<{peer.label}>" in sampled and f"p-{tag}" in sampled,
                        f"session {peer.label}: sampling answered by the wrong client: {short(sampled)}",
                    )
                    if fl is DEMO:
                        await peer.s.call_tool("log", {"message": f"log-{tag}"})
                    got[peer.label] = tag

                async with anyio.create_task_group() as tg:
                    tg.start_soon(work, a, "B")
                    tg.start_soon(work, b, "A")
                check(len(a.sampling_requests) == a_sampled + 1, "A's sampling callback ran a wrong number of times")
                check(len(b.sampling_requests) == b_sampled + 1, "B's sampling callback ran a wrong number of times")
                if fl is DEMO:
                    with anyio.fail_after(5):
                        while not (
                            any(m.data == f"log-{got['A']}" for m in a.logs[a_before:])
                            and any(m.data == f"log-{got['B']}" for m in b.logs[b_before:])
                        ):
                            await anyio.sleep(0.02)  # polling what the callbacks collected
                    a_logs = [m.data for m in a.logs[a_before:]]
                    b_logs = [m.data for m in b.logs[b_before:]]
                    check(f"log-{got['B']}" not in a_logs, f"A received B's log: {a_logs}")
                    check(f"log-{got['A']}" not in b_logs, f"B received A's log: {b_logs}")
            return "two sessions in parallel, each got only its own answers, progress, sampling and logs"

        await r.run("two sessions", 60, two_sessions)

        async def big_payload() -> str:
            size = int(payload_mib * MIB)
            head = f"big-{secrets.token_hex(4)}-"
            pattern = "0123456789abcdefghijklmnopqrstuvwxyz"
            body = head + (pattern * (size // len(pattern) + 1))[: size - len(head)]
            start = time.monotonic()
            result = await a.s.call_tool("echo", {"message": body})
            took = time.monotonic() - start
            check(not is_error(result), f"echo failed: {short(result)}")
            got = text_of(result)
            want = fl.echo_prefix + body
            check(len(got) == len(want), f"got {len(got)} characters back, wanted {len(want)}")
            check(got == want, "the echoed payload differs")
            return f"{size} bytes up and {len(got)} back in {took:.2f} s"

        await r.run(f"{payload_mib:g} MiB each way", 60, big_payload)

        if a.transport_errors:
            r.fail("transport", f"{len(a.transport_errors)} transport error(s): {a.transport_errors[:3]}")
        r.closing = True


def only_broken_streams(exc: BaseException) -> bool:
    """Whether an exception (group) is nothing but anyio's BrokenResourceError."""
    inner = getattr(exc, "exceptions", None)  # an exception group (Python 3.11+ or backport)
    if isinstance(inner, (list, tuple)) and inner:
        return all(only_broken_streams(e) for e in inner)
    return isinstance(exc, (anyio.BrokenResourceError, anyio.ClosedResourceError))


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True, help="http://HOST:PORT/mcp or http://HOST:PORT/sse")
    parser.add_argument("--transport", choices=["streamable", "sse"], default=None)
    parser.add_argument("--flavour", choices=["auto", "demo", "everything"], default="auto")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--payload-mib", type=float, default=5.0)
    opts = parser.parse_args()
    transport = opts.transport or ("sse" if urlparse(opts.url).path.rstrip("/").endswith("/sse") else "streamable")
    log(f"{transport} transport at {opts.url}, flavour {opts.flavour}")
    r = Runner()
    try:
        with anyio.fail_after(opts.timeout):
            await exercise(r, opts.url, transport, opts.flavour, opts.payload_mib)
    except TimeoutError:
        r.fail("run", f"timed out after {opts.timeout} s")
    except Exception as exc:  # noqa: BLE001 - includes exception groups from task groups
        if r.closing and only_broken_streams(exc):
            # The SDK's sse_client races with its own teardown: a server message arriving
            # after ClientSession closed its read stream raises BrokenResourceError in the
            # SSE reader task (everything's long-running tool ignores cancellation and keeps
            # sending progress). Not the relay's doing; every check already ran.
            log(f"NOTE: the SDK transport failed while closing: {exc!r}")
        else:
            r.fail("run", f"{type(exc).__name__}: {exc}")
            log(traceback.format_exc())
    print(f"SUMMARY {transport}: passed={len(r.passed)} failed={len(r.failed)}", flush=True)
    return 0 if not r.failed and r.passed else 1


if __name__ == "__main__":
    sys.exit(anyio.run(main))
