#!/usr/bin/env node
// Drive an MCP server behind mcp-relay's HTTP listener with the official TypeScript SDK
// (@modelcontextprotocol/sdk): StreamableHTTPClientTransport for .../mcp, SSEClientTransport
// for the legacy HTTP+SSE transport at .../sse.
//
// Usage: node http_ts_client.mjs --url http://127.0.0.1:PORT/mcp [--transport streamable|sse]
//          [--flavour auto|demo|everything] [--timeout 120] [--payload-mib 5]
//
// The same checks as tests/python/http_sdk_client.py, each printed as one `PASS name: detail`
// or `FAIL name: reason` line: initialize, tools/list, echo, add, resources, prompts,
// progress, logging, sampling and elicitation round trips, ping, cancellation (AbortSignal
// after the first progress; the session goes on), 20 concurrent requests on one session, two
// sessions at once without cross-talk, and a --payload-mib MiB echo each way. The server
// behind the relay is mcp-relay's demo server or @modelcontextprotocol/server-everything,
// told apart by their tools. Exit status 0 only if every check passed; every wait is bounded.

import { parseArgs } from "node:util";
import { randomBytes } from "node:crypto";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { SSEClientTransport } from "@modelcontextprotocol/sdk/client/sse.js";
import {
  CreateMessageRequestSchema,
  ElicitRequestSchema,
  LoggingMessageNotificationSchema,
  ToolListChangedNotificationSchema,
} from "@modelcontextprotocol/sdk/types.js";

const MIB = 1024 * 1024;
/** A _meta key that tags a request so that its JSON-RPC id can be found on the wire. */
const TAG = "mcp-relay-test/tag";
/** Progress calls whose last notification the SDK itself dropped (see progressCall). */
let sdkMissedLastProgress = 0;

const { values: opts } = parseArgs({
  options: {
    url: { type: "string" },
    transport: { type: "string" },
    flavour: { type: "string", default: "auto" },
    timeout: { type: "string", default: "120" },
    "payload-mib": { type: "string", default: "5" },
  },
});
if (!opts.url) {
  console.error("usage: http_ts_client.mjs --url http://HOST:PORT/mcp|/sse");
  process.exit(2);
}
const url = new URL(opts.url);
const transportKind =
  opts.transport ?? (url.pathname.replace(/\/+$/, "").endsWith("/sse") ? "sse" : "streamable");
const payloadMib = Number(opts["payload-mib"]);
const totalTimeout = Number(opts.timeout) * 1000;

const log = (msg) => process.stderr.write(`http_ts_client: ${msg}\n`);
const hex = (n) => randomBytes(n).toString("hex");
const short = (v, limit = 300) => {
  const text = typeof v === "string" ? JSON.stringify(v) : JSON.stringify(v) ?? String(v);
  return text.length <= limit ? text : `${text.slice(0, limit)}… (${text.length} chars)`;
};
function check(cond, what) {
  if (!cond) throw new Error(what);
}
const textOf = (result) => {
  const texts = (result.content ?? []).filter((c) => c.type === "text").map((c) => c.text);
  check(texts.length > 0, `no text content in ${short(result)}`);
  return texts.join("\n");
};
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Resolves when `pred()` holds, polling what callbacks collected; rejects after `ms`. */
async function until(pred, ms, what) {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms / 1000} s`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

// The two servers' tools.
const DEMO = {
  name: "demo",
  echoPrefix: "",
  add: ["add", { a: 2, b: 40 }, "42"],
  progressTool: "slow",
  progressArgs: (steps, seconds) => ({
    steps,
    interval_ms: Math.max(1, Math.floor((seconds * 1000) / steps)),
  }),
  sampleTool: "sample",
  sampleArgs: (prompt) => ({ prompt }),
  elicitTool: "elicit",
  elicitArgs: (message) => ({ message }),
};
const EVERYTHING = {
  name: "everything",
  echoPrefix: "Echo: ",
  add: ["get-sum", { a: 2, b: 40 }, "42"],
  progressTool: "trigger-long-running-operation",
  progressArgs: (steps, seconds) => ({ duration: seconds, steps }),
  sampleTool: "trigger-sampling-request",
  sampleArgs: (prompt) => ({ prompt, maxTokens: 20 }),
  elicitTool: "trigger-elicitation-request",
  elicitArgs: () => ({}),
};

/** One client session and what its handlers received. */
class Peer {
  constructor(label) {
    this.label = label;
    this.logs = [];
    this.sampling = [];
    this.elicitations = [];
    this.listChanged = 0;
    this.errors = [];
    this.client = new Client(
      { name: `mcp-relay-http-test-${label}`, version: "0" },
      { capabilities: { sampling: {}, elicitation: { form: {} } } },
    );
    this.client.onerror = (err) => {
      // Informational: e.g. progress for a request the SDK already settled (see progressCall)
      // or the GET stream aborted on close. Not failures by themselves.
      this.errors.push(err);
      if (this.errors.length <= 3) log(`${label}: client error: ${err?.message ?? err}`);
    };
    // Every message as it arrives, in wire order (see progressCall), and the id of each
    // request that carried a test tag in its _meta.
    this.wire = [];
    this.tagIds = new Map();
    this.client.setRequestHandler(CreateMessageRequestSchema, async (request) => {
      this.sampling.push(request.params);
      const last = request.params.messages.at(-1);
      const prompt = last?.content?.text ?? "";
      return {
        role: "assistant",
        content: { type: "text", text: `sampled<${label}>: ${prompt}` },
        model: "mcp-relay-test-model",
        stopReason: "endTurn",
      };
    });
    this.client.setRequestHandler(ElicitRequestSchema, async (request) => {
      this.elicitations.push(request.params);
      return {
        action: "accept",
        content: { answer: `yes from ${label}`, name: `Ada ${label}`, check: true },
      };
    });
    this.client.setNotificationHandler(LoggingMessageNotificationSchema, (n) => {
      this.logs.push(n.params);
    });
    this.client.setNotificationHandler(ToolListChangedNotificationSchema, () => {
      this.listChanged += 1;
    });
  }

  async connect() {
    const transport =
      transportKind === "sse"
        ? new SSEClientTransport(url)
        : new StreamableHTTPClientTransport(url);
    this.transport = transport;
    // Protocol.connect chains the transport's existing onmessage before its own handling.
    transport.onmessage = (message) => this.wire.push(message);
    const send = transport.send.bind(transport);
    transport.send = (message, options) => {
      const tag = message?.params?._meta?.[TAG];
      if (tag !== undefined) this.tagIds.set(tag, message.id);
      return send(message, options);
    };
    await this.client.connect(transport, { timeout: 30_000 });
  }

  async close() {
    try {
      if (this.transport instanceof StreamableHTTPClientTransport) {
        await this.transport.terminateSession();
      }
    } finally {
      await this.client.close();
    }
  }

  call(name, args, options = {}, meta = undefined) {
    const params = meta ? { name, arguments: args, _meta: meta } : { name, arguments: args };
    return this.client.callTool(params, undefined, { timeout: 30_000, ...options });
  }
}

async function listTools(peer, want) {
  // Everything registers its sampling and elicitation tools once `notifications/initialized`
  // is handled, then sends tools/list_changed: list again (bounded) while any is missing.
  const deadline = Date.now() + 5000;
  for (;;) {
    const tools = new Map((await peer.client.listTools()).tools.map((t) => [t.name, t]));
    if (want.every((w) => tools.has(w)) || Date.now() > deadline) return tools;
    await sleep(100);
  }
}

/**
 * Calls the progress-reporting tool and checks its progress twice: on the wire (every
 * notifications/progress for the request's token, in order, all before its response: what
 * the relay is responsible for) and as the SDK's onprogress saw them. Over the legacy SSE
 * transport the SDK can miss the last one: SSEClientTransport dispatches the events of one
 * network read synchronously, and Protocol handles a response at once but a notification in
 * a microtask, so progress that arrives in the same read as the response finds its handler
 * gone ("Received a progress notification for an unknown token"). That is noted, not
 * failed, when the wire was right and the SDK's list is a prefix of it.
 */
async function progressCall(peer, fl, steps, seconds) {
  const seen = [];
  const tag = hex(6);
  const result = await peer.call(
    fl.progressTool,
    fl.progressArgs(steps, seconds),
    { onprogress: (p) => seen.push(p.progress) },
    { [TAG]: tag },
  );
  const id = peer.tagIds.get(tag);
  check(id !== undefined, "the request was not seen going out");
  const wire = [];
  let answered = -1;
  peer.wire.forEach((m, i) => {
    if (m.method === "notifications/progress" && m.params?.progressToken === id) {
      check(answered < 0, `progress ${m.params.progress} of request ${id} arrived after its response`);
      wire.push(m.params.progress);
    } else if (m.method === undefined && m.id === id) {
      answered = i;
    }
  });
  const want = JSON.stringify(Array.from({ length: steps }, (_, i) => i + 1));
  check(JSON.stringify(wire) === want, `session ${peer.label}: progress on the wire ${JSON.stringify(wire)}, wanted ${want}`);
  const prefix = JSON.stringify(seen) === JSON.stringify(wire.slice(0, seen.length));
  if (JSON.stringify(seen) !== want) {
    check(
      transportKind === "sse" && prefix,
      `session ${peer.label}: the SDK delivered progress ${JSON.stringify(seen)}, the wire had ${JSON.stringify(wire)}`,
    );
    sdkMissedLastProgress += 1;
  }
  return { result, seen: wire };
}

async function echo(peer, fl, message) {
  const result = await peer.call("echo", { message });
  check(!result.isError, `echo failed: ${short(result)}`);
  const got = textOf(result);
  const want = fl.echoPrefix + message;
  check(got === want, `echo returned ${short(got)}, wanted ${short(want)}`);
}

const passed = [];
const failed = [];

async function run(name, timeoutMs, body) {
  const start = Date.now();
  try {
    const detail = await withTimeout(Promise.resolve().then(body), timeoutMs, name);
    passed.push(name);
    console.log(`PASS ${name}: ${detail ?? "ok"} (${((Date.now() - start) / 1000).toFixed(2)} s)`);
    return true;
  } catch (err) {
    failed.push(name);
    console.log(`FAIL ${name}: ${err?.message ?? err}`);
    if (err?.stack) log(`${name}: ${err.stack}`);
    return false;
  }
}

async function exercise() {
  const a = new Peer("A");
  let fl;
  const ok = await run("initialize", 30_000, async () => {
    await a.connect();
    const info = a.client.getServerVersion();
    const caps = a.client.getServerCapabilities();
    check(caps?.tools, "no tools capability");
    const version = a.transport.protocolVersion ?? "(not exposed by this transport)";
    return `${info?.name} ${info?.version}, protocol ${version}`;
  });
  if (!ok) return;
  try {
    if (
      !(await run("tools/list", 30_000, async () => {
        let tools = await listTools(a, []);
        fl =
          opts.flavour === "demo" || (opts.flavour === "auto" && tools.has("slow"))
            ? DEMO
            : EVERYTHING;
        const names = ["echo", fl.add[0], fl.progressTool, fl.sampleTool, fl.elicitTool];
        tools = await listTools(a, names);
        const missing = names.filter((n) => !tools.has(n));
        check(missing.length === 0, `missing tools ${missing} among ${[...tools.keys()]}`);
        return `${tools.size} tools, flavour ${fl.name}`;
      }))
    ) {
      return;
    }

    await run("tools/call echo", 30_000, async () => {
      const message = 'héllo through mcp-relay ✓ "quoted" \\ back\\slash';
      await echo(a, fl, message);
      return short(message);
    });

    await run("tools/call add", 30_000, async () => {
      const [name, args, want] = fl.add;
      const got = textOf(await a.call(name, args));
      check(got.includes(want), `${name} returned ${short(got)}`);
      return `${name} → ${short(got)}`;
    });

    await run("resources", 30_000, async () => {
      const { resources } = await a.client.listResources();
      check(resources.length > 0, "resources/list is empty");
      const uri = resources[0].uri;
      const { contents } = await a.client.readResource({ uri });
      check(contents.length > 0, `resources/read ${uri} returned nothing`);
      return `${resources.length} resources; read ${uri}`;
    });

    await run("prompts", 30_000, async () => {
      const { prompts } = await a.client.listPrompts();
      check(prompts.length > 0, "prompts/list is empty");
      const prompt = prompts[0];
      const args = Object.fromEntries(
        (prompt.arguments ?? []).filter((x) => x.required).map((x) => [x.name, "Ada"]),
      );
      const got = await a.client.getPrompt({ name: prompt.name, arguments: args });
      check(got.messages.length > 0, `prompts/get ${prompt.name} returned no messages`);
      return `${prompts.length} prompts; got ${prompt.name}`;
    });

    await run("progress", 30_000, async () => {
      const { result, seen } = await progressCall(a, fl, 3, 0.3);
      check(!result.isError, `${fl.progressTool} failed: ${short(result)}`);
      check(JSON.stringify(seen) === "[1,2,3]", `progress ${JSON.stringify(seen)}, wanted [1,2,3]`);
      return `${fl.progressTool}: progress ${JSON.stringify(seen)}, ${short(textOf(result))}`;
    });

    await run("logging", 30_000, async () => {
      await a.client.setLoggingLevel("debug");
      const before = a.logs.length;
      if (fl === DEMO) {
        const marker = `log-${hex(4)}`;
        const result = await a.call("log", { level: "warning", message: marker });
        check(textOf(result) === "logged", `log returned ${short(result)}`);
        await until(() => a.logs.slice(before).some((m) => m.data === marker), 10_000, marker);
        const got = a.logs.slice(before).filter((m) => m.data === marker);
        check(got.length === 1, `log ${marker} delivered ${got.length} times`);
        check(got[0].level === "warning", `level ${got[0].level}`);
        return `logging/setLevel + notifications/message ${marker} at ${got[0].level}`;
      }
      const result = await a.call("toggle-simulated-logging", {});
      check(!result.isError, `toggle-simulated-logging failed: ${short(result)}`);
      try {
        await until(() => a.logs.length > before, 10_000, "a log message");
      } finally {
        await a.call("toggle-simulated-logging", {});
      }
      const got = a.logs.slice(before);
      return `logging/setLevel + ${got.length} notifications/message, first at ${got[0].level}`;
    });

    await run("sampling", 30_000, async () => {
      const prompt = `prompt-${hex(4)}`;
      const before = a.sampling.length;
      const result = await a.call(fl.sampleTool, fl.sampleArgs(prompt));
      check(!result.isError, `${fl.sampleTool} failed: ${short(result)}`);
      check(a.sampling.length === before + 1, "the sampling handler did not run once");
      const got = textOf(result);
      check(got.includes("sampled<A>:") && got.includes(prompt), `result ${short(got)} lacks the sampled text`);
      return `${fl.sampleTool} → sampling/createMessage → ${short(got, 80)}`;
    });

    await run("elicitation", 30_000, async () => {
      const before = a.elicitations.length;
      const result = await a.call(fl.elicitTool, fl.elicitArgs(`question-${hex(4)}`));
      check(!result.isError, `${fl.elicitTool} failed: ${short(result)}`);
      check(a.elicitations.length === before + 1, "the elicitation handler did not run once");
      const got = textOf(result);
      const want = fl === DEMO ? "yes from A" : "Ada A";
      check(got.includes(want), `result ${short(got)} lacks ${want}`);
      return `${fl.elicitTool} → elicitation/create → ${short(got, 80)}`;
    });

    await run("ping", 15_000, async () => {
      await a.client.ping();
      return "pong";
    });

    await run("cancellation", 40_000, async () => {
      const controller = new AbortController();
      const seen = [];
      const start = Date.now();
      const call = a.call(fl.progressTool, fl.progressArgs(20, 2.0), {
        signal: controller.signal,
        onprogress: (p) => {
          seen.push(p.progress);
          controller.abort("cancelled by the test");
        },
      });
      let outcome;
      try {
        outcome = { result: await call };
      } catch (err) {
        outcome = { error: err };
      }
      const took = (Date.now() - start) / 1000;
      check(outcome.error, `the call finished instead: ${short(outcome.result)}`);
      check(controller.signal.aborted, `the call failed before it was cancelled: ${outcome.error}`);
      check(took < 10, `cancelling took ${took} s`);
      await echo(a, fl, "after cancel");
      const { result, seen: after } = await progressCall(a, fl, 2, 0.1);
      check(!result.isError, `call after the cancellation failed: ${short(result)}`);
      check(JSON.stringify(after) === "[1,2]", `progress after the cancellation: ${JSON.stringify(after)}`);
      return `cancelled ${fl.progressTool} after ${seen.length} progress notification(s) in ${took.toFixed(2)} s; the session answers afterwards`;
    });

    await run("20 concurrent requests", 60_000, async () => {
      const n = 20;
      const jobs = [];
      for (let i = 0; i < n; i++) {
        if (i % 2 === 0) {
          jobs.push(echo(a, fl, `concurrent-${i}-${hex(3)}`).then(() => null));
        } else {
          jobs.push(
            progressCall(a, fl, 3, 0.3).then(({ result, seen }) => {
              check(!result.isError, `call ${i} failed: ${short(result)}`);
              return JSON.stringify(seen) === "[1,2,3]" ? null : `${i}: ${JSON.stringify(seen)}`;
            }),
          );
        }
      }
      const bad = (await Promise.all(jobs)).filter((x) => x !== null);
      check(bad.length === 0, `progress mixed up between concurrent calls: ${bad}`);
      return `${n} requests at once on one session (${n / 2} with 3 progress notifications each)`;
    });

    await run("two sessions", 60_000, async () => {
      const b = new Peer("B");
      await b.connect();
      try {
        await listTools(b, [fl.sampleTool]);
        await b.client.setLoggingLevel("debug");
        const aBefore = a.logs.length;
        const bBefore = b.logs.length;
        const aSampled = a.sampling.length;
        const bSampled = b.sampling.length;
        const tags = {};
        const work = async (peer) => {
          const tag = `${peer.label}-${hex(3)}`;
          await echo(peer, fl, `echo-${tag}`);
          const { seen } = await progressCall(peer, fl, 3, 0.3);
          check(JSON.stringify(seen) === "[1,2,3]", `session ${peer.label}: progress ${JSON.stringify(seen)}`);
          const sampled = textOf(await peer.call(fl.sampleTool, fl.sampleArgs(`p-${tag}`)));
          check(
            sampled.includes(`sampled<${peer.label}>`) && sampled.includes(`p-${tag}`),
            `session ${peer.label}: sampling answered by the wrong client: ${short(sampled)}`,
          );
          if (fl === DEMO) await peer.call("log", { message: `log-${tag}` });
          tags[peer.label] = tag;
        };
        await Promise.all([work(a), work(b)]);
        check(a.sampling.length === aSampled + 1, "A's sampling handler ran a wrong number of times");
        check(b.sampling.length === bSampled + 1, "B's sampling handler ran a wrong number of times");
        if (fl === DEMO) {
          const has = (peer, before, tag) => peer.logs.slice(before).some((m) => m.data === `log-${tag}`);
          await until(() => has(a, aBefore, tags.A) && has(b, bBefore, tags.B), 5000, "both logs");
          check(!has(a, aBefore, tags.B), "A received B's log");
          check(!has(b, bBefore, tags.A), "B received A's log");
        }
      } finally {
        await b.close();
      }
      return "two sessions in parallel, each got only its own answers, progress, sampling and logs";
    });

    await run(`${payloadMib} MiB each way`, 60_000, async () => {
      const size = Math.floor(payloadMib * MIB);
      const head = `big-${hex(4)}-`;
      const pattern = "0123456789abcdefghijklmnopqrstuvwxyz";
      const body = (head + pattern.repeat(Math.ceil(size / pattern.length))).slice(0, size);
      const start = Date.now();
      const result = await a.call("echo", { message: body });
      const took = (Date.now() - start) / 1000;
      check(!result.isError, `echo failed: ${short(result)}`);
      const got = textOf(result);
      const want = fl.echoPrefix + body;
      check(got.length === want.length, `got ${got.length} characters back, wanted ${want.length}`);
      check(got === want, "the echoed payload differs");
      return `${size} bytes up and ${got.length} back in ${took.toFixed(2)} s`;
    });
  } finally {
    await a.close().catch((err) => log(`closing: ${err}`));
  }
}

log(`${transportKind} transport at ${url}, flavour ${opts.flavour}`);
try {
  await withTimeout(exercise(), totalTimeout, "the run");
} catch (err) {
  failed.push("run");
  console.log(`FAIL run: ${err?.message ?? err}`);
}
if (sdkMissedLastProgress > 0) {
  log(
    `NOTE: in ${sdkMissedLastProgress} progress call(s) the SDK's onprogress missed the last ` +
      "notification that the relay delivered before the response (SDK ordering, see progressCall)",
  );
}
console.log(`SUMMARY ${transportKind}: passed=${passed.length} failed=${failed.length}`);
process.exit(failed.length === 0 && passed.length > 0 ? 0 : 1);
