#!/usr/bin/env python3
"""Drive server-everything behind mcp-relay with the MCP Python SDK 2.x in the 2026-07-28 era.

Usage:
    v2_client.py --url http://127.0.0.1:PORT/mcp [--timeout 120]

The server behind the relay is @modelcontextprotocol/server-everything, a session-era stdio
server; the relay is the era bridge. The client connects as a Python SDK user would by default
(``Client(url, mode="auto")``: a ``server/discover`` probe, and the legacy ``initialize`` only
as a fallback) and the first check demands that the probe succeeded, i.e. that the connection
is 2026-07-28 and no initialize went out. When it did not, the remaining checks run on a
connection pinned to 2026-07-28 (``mode="2026-07-28"``, no probe), so that each reports for
itself.

Checks, one ``PASS name: detail`` or ``FAIL name: reason`` line each, then ``SUMMARY``:
connect, server/discover, tools/list, tools/call, resources (list/read/templates), prompts
(list/get), progress, logging (the ``_meta`` logLevel opt-in and its filter), sampling,
elicitation and roots (each through an ``input_required`` result that the SDK fulfils with the
callbacks given here and retries), subscriptions/listen, cancellation (a long call cancelled;
it ends and the next calls work), 20 concurrent calls, two clients at once without
cross-talk, and 1 MiB and 5 MiB echoes. Every POST's headers are recorded (an httpx event
hook) to check that each one is a 2026-07-28 request. Needs mcp 2.x. Exit status 0 only if
every check passed; every wait is bounded.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
import traceback
import warnings
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import anyio
import httpx2
import mcp_types as types
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPDeprecationWarning
from pydantic import ValidationError

warnings.filterwarnings("ignore", category=DeprecationWarning)
warnings.filterwarnings("ignore", category=MCPDeprecationWarning)

VERSION = "2026-07-28"
MIB = 1024 * 1024
LOG_LEVEL = "io.modelcontextprotocol/logLevel"
SERVER_INFO = "io.modelcontextprotocol/serverInfo"
LEVELS = ["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"]
EVERYTHING_TOOLS = [
    "echo",
    "get-sum",
    "trigger-long-running-operation",
    "trigger-sampling-request",
    "trigger-elicitation-request",
    "get-roots-list",
    "toggle-simulated-logging",
]


def log(msg: str) -> None:
    print(f"v2_client.py: {msg}", file=sys.stderr, flush=True)


def short(value: Any, limit: int = 300) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} chars)"


def check(cond: bool, what: str) -> None:
    if not cond:
        raise AssertionError(what)


def text_of(result: Any) -> str:
    texts = [c.text for c in result.content if getattr(c, "type", None) == "text"]
    check(bool(texts), f"no text content in {short(result)}")
    return "\n".join(texts)


def describe(exc: BaseException | None) -> str:
    inner = getattr(exc, "exceptions", None)
    if inner:
        return "; ".join(describe(e) for e in inner)
    if isinstance(exc, ValidationError):
        # pydantic's text repeats the whole input per error: name the fields instead.
        errors = ", ".join(f"{'.'.join(map(str, e['loc']))} {e['type']}" for e in exc.errors())
        return f"ValidationError for {exc.title}: {errors}"
    code = getattr(getattr(exc, "error", None), "code", None)
    tail = f" (code {code})" if code is not None else ""
    return f"{type(exc).__name__}{tail}: {exc}".replace("\n", " ")


@dataclass
class Peer:
    """One Client, what its callbacks received, and the headers of every POST it made."""

    label: str
    url: str
    client: Client | None = None
    root: str = ""
    logs: list[Any] = field(default_factory=list)
    sampling: list[Any] = field(default_factory=list)
    elicitations: list[Any] = field(default_factory=list)
    roots_asked: int = 0
    posts: list[dict[str, Any]] = field(default_factory=list)
    errors: list[Exception] = field(default_factory=list)
    gen: int = 0

    def __post_init__(self) -> None:
        self.root = f"file:///tmp/mcp-relay-v2-py-{self.label}-{secrets.token_hex(4)}"

    @property
    def c(self) -> Client:
        assert self.client is not None
        return self.client

    async def on_request(self, request: httpx2.Request, gen: int) -> None:
        if request.method != "POST" or gen != self.gen:
            return  # only the current connection's POSTs
        try:
            body = json.loads(request.content or b"{}")
        except ValueError:
            body = {}
        self.posts.append(
            {
                "method": body.get("method") if isinstance(body, dict) else None,
                "body": body,
                "version": request.headers.get("mcp-protocol-version"),
                "mcp-method": request.headers.get("mcp-method"),
            }
        )

    async def on_log(self, params: Any) -> None:
        self.logs.append(params)

    async def on_message(self, message: Any) -> None:
        if isinstance(message, Exception):
            self.errors.append(message)
            log(f"{self.label}: transport error surfaced to the client: {message!r}")

    async def on_sampling(self, context: Any, params: Any) -> Any:
        self.sampling.append(params)
        prompt = ""
        if params.messages:
            prompt = getattr(params.messages[-1].content, "text", "") or ""
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text=f"sampled<{self.label}>: {prompt}"),
            model="mcp-relay-test-model",
            stop_reason="endTurn",
        )

    async def on_elicitation(self, context: Any, params: Any) -> Any:
        self.elicitations.append(params)
        return types.ElicitResult(action="accept", content={"name": f"Ada {self.label}", "check": True})

    async def on_roots(self, context: Any) -> Any:
        self.roots_asked += 1
        return types.ListRootsResult(roots=[types.Root(uri=self.root, name=f"root of {self.label}")])

    async def open(self, stack: AsyncExitStack, mode: str) -> Client:
        self.gen += 1
        gen = self.gen

        async def hook(request: httpx2.Request) -> None:
            await self.on_request(request, gen)

        http = await stack.enter_async_context(
            httpx2.AsyncClient(timeout=httpx2.Timeout(60.0), event_hooks={"request": [hook]})
        )
        # The SDK caps one SSE event at 1 MiB by default: raised for the 5 MiB echo (a
        # client-side limit, not relay behaviour).
        transport = streamable_http_client(self.url, http_client=http, max_sse_event_size=16 * MIB)
        client = Client(
            transport,
            mode=mode,
            read_timeout_seconds=30,
            sampling_callback=self.on_sampling,
            elicitation_callback=self.on_elicitation,
            list_roots_callback=self.on_roots,
            logging_callback=self.on_log,
            message_handler=self.on_message,
            client_info=types.Implementation(name=f"mcp-relay-v2-py-test-{self.label}", version="0"),
            cache=None,
        )
        self.client = await stack.enter_async_context(client)
        return self.client


class Runner:
    def __init__(self) -> None:
        self.passed: list[str] = []
        self.failed: list[str] = []

    async def run(self, name: str, timeout: float, body: Callable[[], Awaitable[str | None]]) -> bool:
        start = time.monotonic()
        try:
            with anyio.fail_after(timeout):
                detail = await body()
        except TimeoutError:
            self.fail(name, f"timed out after {timeout} s")
            return False
        except Exception as exc:  # noqa: BLE001 - every failure is reported, then the next check runs
            self.fail(name, describe(exc))
            log(f"{name} traceback:\n{traceback.format_exc()}")
            return False
        self.passed.append(name)
        print(f"PASS {name}: {detail or 'ok'} ({time.monotonic() - start:.2f} s)", flush=True)
        return True

    def fail(self, name: str, why: str) -> None:
        self.failed.append(name)
        print(f"FAIL {name}: {why}", flush=True)


async def echo(peer: Peer, message: str) -> None:
    result = await peer.c.call_tool("echo", {"message": message})
    check(not result.is_error, f"echo failed: {short(result)}")
    got = text_of(result)
    check(got == f"Echo: {message}", f"echo returned {short(got)}, wanted {short('Echo: ' + message)}")


async def progress_call(peer: Peer, steps: int, seconds: float) -> tuple[Any, list[float]]:
    """trigger-long-running-operation with a progress callback: every progress, in order,
    delivered before the call returned."""
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    result = await peer.c.call_tool(
        "trigger-long-running-operation",
        {"duration": seconds, "steps": steps},
        progress_callback=on_progress,
    )
    at_return = list(seen)
    want = [float(i) for i in range(1, steps + 1)]
    check(at_return == want, f"client {peer.label}: progress {at_return} by the response, wanted {want}")
    return result, at_return


async def toggle_logging(peer: Peer, level: str | None) -> tuple[str, list[Any]]:
    before = len(peer.logs)
    posts = len(peer.posts)
    meta: dict[str, Any] = {LOG_LEVEL: level} if level is not None else {}
    result = await peer.c.call_tool("toggle-simulated-logging", {}, meta=meta or None)
    check(not result.is_error, f"toggle-simulated-logging failed: {short(result)}")
    sent = [p for p in peer.posts[posts:] if p["method"] == "tools/call"]
    check(bool(sent), "the call was not seen going out")
    sent_level = ((sent[0]["body"].get("params") or {}).get("_meta") or {}).get(LOG_LEVEL)
    check(sent_level == level, f"the SDK sent logLevel {sent_level!r}, not {level!r}")
    return text_of(result), peer.logs[before:]


async def exercise(r: Runner, url: str) -> None:
    async with AsyncExitStack() as stack:
        a = Peer("A", url)

        # Connecting happens outside the checks' cancel scopes: the client's task group lives
        # on in the exit stack.
        connect_error: BaseException | None = None
        try:
            await a.open(stack, "auto")
        except Exception as exc:  # noqa: BLE001 - reported by the connect check
            connect_error = exc
        auto_version = a.client.protocol_version if a.client is not None else None
        initialized = any(p["method"] == "initialize" for p in a.posts)
        probed = any(p["method"] == "server/discover" for p in a.posts)
        mode = "auto"
        if connect_error is None and (auto_version != VERSION or initialized):
            log(f"the auto connect settled on {auto_version}; going on with a connection pinned to {VERSION}")
            mode = VERSION
            a.posts.clear()
            await a.open(stack, mode)

        async def connect() -> str:
            if connect_error is not None:
                raise AssertionError(f"the auto connect failed: {describe(connect_error)}")
            check(probed, "no server/discover probe went out")
            check(
                auto_version == VERSION and not initialized,
                f"server/discover did not establish {VERSION}: negotiated {auto_version}"
                f"{' after falling back to initialize' if initialized else ''}",
            )
            info = a.c.server_info
            check(info is not None, "no server info from server/discover")
            assert info is not None
            return f"{auto_version} via server/discover; server {info.name} {info.version}"

        await r.run("connect", 40, connect)
        if a.client is None:
            r.fail("run", "no connection at all")
            return

        async def discover() -> str:
            raw = await a.c.session.send_discover(VERSION)
            result = types.DiscoverResult.model_validate(raw)
            check(VERSION in result.supported_versions, f"supportedVersions {result.supported_versions}")
            caps = result.capabilities
            check(caps.tools is not None and caps.resources is not None and caps.prompts is not None, f"capabilities {short(caps)}")
            check(raw.get("resultType") == "complete", f"resultType {raw.get('resultType')!r}")
            check(raw.get("cacheScope") in ("public", "private"), f"cacheScope {raw.get('cacheScope')!r}")
            info = (raw.get("_meta") or {}).get(SERVER_INFO) or {}
            check(info.get("name") == "mcp-servers/everything", f"_meta serverInfo {short(info)}")
            check(bool(result.instructions), "no instructions")
            return f"{info.get('name')} {info.get('version')}; versions {result.supported_versions}"

        await r.run("server/discover", 30, discover)

        async def tools_list() -> str:
            tools = {t.name for t in (await a.c.list_tools()).tools}
            missing = [n for n in EVERYTHING_TOOLS if n not in tools]
            check(not missing, f"missing tools {missing} among {sorted(tools)}")
            return f"{len(tools)} tools, including the sampling, elicitation and roots ones"

        await r.run("tools/list", 30, tools_list)

        async def tools_call() -> str:
            message = 'héllo through mcp-relay ✓ "quoted" \\ back\\slash'
            await echo(a, message)
            got = text_of(await a.c.call_tool("get-sum", {"a": 2, "b": 40}))
            check("42" in got, f"get-sum returned {short(got)}")
            return f"echo {short(message)}; get-sum → {short(got)}"

        await r.run("tools/call", 30, tools_call)

        async def resources() -> str:
            listed = (await a.c.list_resources()).resources
            check(bool(listed), "resources/list is empty")
            uri = str(listed[0].uri)
            contents = (await a.c.read_resource(uri)).contents
            check(bool(contents) and str(contents[0].uri) == uri, f"resources/read {uri} returned {short(contents)}")
            templates = (await a.c.list_resource_templates()).resource_templates
            text_template = next((t for t in templates if "/text/" in t.uri_template), None)
            check(text_template is not None, f"no text template among {[t.uri_template for t in templates]}")
            assert text_template is not None
            dynamic = text_template.uri_template.split("{")[0] + "7"
            got = (await a.c.read_resource(dynamic)).contents
            check(bool(got) and bool(getattr(got[0], "text", "")), f"resources/read {dynamic} returned {short(got)}")
            return f"{len(listed)} resources, read {uri}; {len(templates)} templates, read {dynamic}"

        await r.run("resources", 30, resources)

        async def prompts() -> str:
            listed = (await a.c.list_prompts()).prompts
            check(bool(listed), "prompts/list is empty")
            chosen = next((p for p in listed if any(x.required for x in (p.arguments or []))), listed[0])
            args = {x.name: "Ada" for x in (chosen.arguments or []) if x.required}
            got = await a.c.get_prompt(chosen.name, args)
            check(bool(got.messages), f"prompts/get {chosen.name} returned no messages")
            if args:
                check("Ada" in got.model_dump_json(), f"prompts/get {chosen.name} ignored its arguments")
            return f"{len(listed)} prompts; got {chosen.name} {args}"

        await r.run("prompts", 30, prompts)

        async def progress() -> str:
            result, seen = await progress_call(a, 3, 0.3)
            check(not result.is_error, f"the call failed: {short(result)}")
            return f"progress {seen}, {short(text_of(result), 80)}"

        await r.run("progress", 30, progress)

        async def logging() -> str:
            # toggle-simulated-logging logs one message at once when it starts logging (and
            # every 5 s after, unrelated to any request); each child of the relay keeps its own
            # toggle. Judged on the calls that started it: with the opt-in at debug that message
            # comes with the answer; without an opt-in nothing does; at "emergency" nothing below.
            async def started_with(level: str | None) -> list[Any]:
                for _ in range(2):
                    text, logs = await toggle_logging(a, level)
                    if text.startswith("Started"):
                        return logs
                    check(text.startswith("Stopped"), f"unexpected answer {short(text, 120)}")
                raise AssertionError("two toggles in a row did not start logging")

            on = await started_with("debug")
            quiet = await started_with(None)
            loud = await started_with("emergency")
            # Best effort: leave logging off where the next toggle lands.
            if (await toggle_logging(a, None))[0].startswith("Started"):
                await toggle_logging(a, None)
            check(len(on) >= 1, "no notifications/message came with the call that started logging (logLevel debug)")
            check(all(m.level in LEVELS for m in on), f"bad levels {short(on)}")
            check(not quiet, f"{len(quiet)} log message(s) without a logLevel opt-in: {short(quiet)}")
            below = [m for m in loud if m.level != "emergency"]
            check(not below, f"messages below the logLevel emergency: {short(below)}")
            return f"{len(on)} message(s) at debug, none without opt-in, {len(loud)} at emergency"

        await r.run("logging", 30, logging)

        async def sampling() -> str:
            prompt = f"prompt-{secrets.token_hex(4)}"
            before = len(a.sampling)
            result = await a.c.call_tool("trigger-sampling-request", {"prompt": prompt, "maxTokens": 20})
            check(not result.is_error, f"trigger-sampling-request failed: {short(result)}")
            check(len(a.sampling) == before + 1, f"the sampling callback ran {len(a.sampling) - before} times")
            got = text_of(result)
            check("sampled<A>:" in got and prompt in got, f"result {short(got)} lacks the sampled text")
            return f"sampling/createMessage fulfilled through input_required → {short(got, 80)}"

        await r.run("sampling (input_required)", 30, sampling)

        async def elicitation() -> str:
            before = len(a.elicitations)
            result = await a.c.call_tool("trigger-elicitation-request", {})
            check(not result.is_error, f"trigger-elicitation-request failed: {short(result)}")
            check(len(a.elicitations) == before + 1, f"the elicitation callback ran {len(a.elicitations) - before} times")
            got = text_of(result)
            check("Ada A" in got, f"result {short(got)} lacks the answer")
            return f"elicitation/create fulfilled through input_required → {short(got, 80)}"

        await r.run("elicitation (input_required)", 30, elicitation)

        async def roots() -> str:
            result = await a.c.call_tool("get-roots-list", {})
            check(not result.is_error, f"get-roots-list failed: {short(result)}")
            got = text_of(result)
            check(a.root in got, f"result {short(got)} lacks this client's root {a.root}")
            return f"roots/list fulfilled through input_required (asked {a.roots_asked} time(s)) → {a.root}"

        await r.run("roots (input_required)", 30, roots)

        async def listen() -> str:
            async with a.c.listen(tools_list_changed=True, resources_list_changed=True) as sub:
                honored = getattr(sub, "honored", None)
            await echo(a, "after listen")
            return f"acknowledged (honored {short(honored, 120)}), closed; calls go on"

        await r.run("subscriptions/listen", 30, listen)

        async def cancellation() -> str:
            first = anyio.Event()
            seen: list[float] = []
            outcome: dict[str, Any] = {}

            async def on_progress(progress: float, total: float | None, message: str | None) -> None:
                seen.append(progress)
                first.set()

            async def long_call() -> None:
                try:
                    outcome["result"] = await a.c.call_tool(
                        "trigger-long-running-operation", {"duration": 20, "steps": 20}, progress_callback=on_progress
                    )
                except anyio.get_cancelled_exc_class():
                    outcome["cancelled"] = True
                    raise
                except Exception as exc:  # noqa: BLE001
                    outcome["error"] = exc

            start = time.monotonic()
            async with anyio.create_task_group() as tg:
                tg.start_soon(long_call)
                with anyio.fail_after(10):
                    await first.wait()
                tg.cancel_scope.cancel()
            took = time.monotonic() - start
            check("error" not in outcome, f"the call failed before it was cancelled: {describe(outcome.get('error'))}")
            check("result" not in outcome, f"the call finished instead: {short(outcome.get('result'))}")
            check(outcome.get("cancelled") is True, "the call was not cancelled")
            check(took < 10, f"cancelling took {took:.1f} s")
            count = len(seen)
            await echo(a, "after cancel")
            result, _ = await progress_call(a, 2, 0.1)
            check(not result.is_error, f"call after the cancellation failed: {short(result)}")
            return f"cancelled after {count} progress notification(s) in {took:.2f} s; the next calls work"

        await r.run("cancellation", 40, cancellation)

        async def concurrent() -> str:
            n = 20
            bad: list[str] = []

            async def one(i: int) -> None:
                try:
                    if i % 2 == 0:
                        await echo(a, f"concurrent-{i}-{secrets.token_hex(3)}")
                    else:
                        result, _ = await progress_call(a, 3, 0.3)
                        check(not result.is_error, f"call {i} failed: {short(result)}")
                except Exception as exc:  # noqa: BLE001 - collected, reported together
                    bad.append(f"{i}: {describe(exc)}")

            async with anyio.create_task_group() as tg:
                for i in range(n):
                    tg.start_soon(one, i)
            check(not bad, f"{len(bad)} of {n} calls went wrong: {'; '.join(bad[:3])}")
            return f"{n} calls at once ({n // 2} with 3 progress notifications each), all answered correctly"

        await r.run("20 concurrent calls", 60, concurrent)

        async def two_clients() -> str:
            async with AsyncExitStack() as inner:
                b = Peer("B", url)
                await b.open(inner, mode)
                check(b.c.protocol_version == VERSION, f"client B negotiated {b.c.protocol_version}")
                counts = {p.label: (len(p.sampling), len(p.elicitations)) for p in (a, b)}

                async def work(peer: Peer) -> None:
                    tag = f"{peer.label}-{secrets.token_hex(3)}"
                    await echo(peer, f"echo-{tag}")
                    await progress_call(peer, 3, 0.3)
                    sampled = text_of(
                        await peer.c.call_tool("trigger-sampling-request", {"prompt": f"p-{tag}", "maxTokens": 20})
                    )
                    check(
                        f"sampled<{peer.label}>" in sampled and f"p-{tag}" in sampled,
                        f"client {peer.label}: sampling answered by the wrong client: {short(sampled)}",
                    )
                    elicited = text_of(await peer.c.call_tool("trigger-elicitation-request", {}))
                    check(f"Ada {peer.label}" in elicited, f"client {peer.label}: elicitation answered by the wrong client: {short(elicited)}")

                async with anyio.create_task_group() as tg:
                    tg.start_soon(work, a)
                    tg.start_soon(work, b)
                for p in (a, b):
                    s, e = counts[p.label]
                    check(
                        len(p.sampling) == s + 1 and len(p.elicitations) == e + 1,
                        f"{p.label}'s callbacks ran a wrong number of times",
                    )
            return "two clients in parallel, each got only its own answers, progress and input requests"

        await r.run("two clients", 60, two_clients)

        for mib in (1, 5):

            async def big(mib: int = mib) -> str:
                size = mib * MIB
                pattern = "0123456789abcdefghijklmnopqrstuvwxyz"
                body = (f"big-{secrets.token_hex(4)}-" + pattern * (size // len(pattern) + 1))[:size]
                start = time.monotonic()
                result = await a.c.call_tool("echo", {"message": body})
                took = time.monotonic() - start
                check(not result.is_error, f"echo failed: {short(result)}")
                got = text_of(result)
                check(len(got) == size + 6, f"got {len(got)} characters back, wanted {size + 6}")
                check(got == f"Echo: {body}", "the echoed payload differs")
                return f"{size} bytes up and {len(got)} back in {took:.2f} s"

            await r.run(f"{mib} MiB each way", 60, big)

        async def every_post_modern() -> str:
            bad = [p for p in a.posts if p["version"] != VERSION or p["method"] == "initialize"]
            check(bool(a.posts), "no POST recorded")
            check(
                not bad,
                f"{len(bad)} of {len(a.posts)} POSTs not 2026-07-28: "
                + ", ".join(f"{p['method']} ({p['version']})" for p in bad[:5]),
            )
            mismatched = [p for p in a.posts if p["method"] and p["mcp-method"] != p["method"]]
            check(not mismatched, f"Mcp-Method differs from the body in {len(mismatched)} POSTs")
            return f"{len(a.posts)} POSTs, each with MCP-Protocol-Version {VERSION} and a matching Mcp-Method"

        await r.run("2026-07-28 on the wire", 5, every_post_modern)

        if a.errors:
            r.fail("transport", f"{len(a.errors)} transport error(s): {short(a.errors[:3])}")


async def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--url", required=True, help="http://HOST:PORT/mcp")
    parser.add_argument("--timeout", type=float, default=120.0)
    opts = parser.parse_args()
    log(f"2026-07-28 client at {opts.url}")
    r = Runner()
    try:
        with anyio.fail_after(opts.timeout):
            await exercise(r, opts.url)
    except TimeoutError:
        r.fail("run", f"timed out after {opts.timeout} s")
    except Exception as exc:  # noqa: BLE001 - includes exception groups from task groups
        r.fail("run", describe(exc))
        log(traceback.format_exc())
    print(f"SUMMARY python-v2: passed={len(r.passed)} failed={len(r.failed)}", flush=True)
    return 0 if not r.failed and r.passed else 1


if __name__ == "__main__":
    sys.exit(anyio.run(main))
