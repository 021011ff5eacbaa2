#!/usr/bin/env node
// Drive @modelcontextprotocol/server-everything behind mcp-relay's HTTP listener with the
// TypeScript SDK 2.x (@modelcontextprotocol/client) in the stateless 2026-07-28 era: the
// client pins the version (`versionNegotiation: { mode: { pin: "2026-07-28" } }`), so it
// probes with server/discover, never sends initialize, and puts the per-request _meta
// envelope on every request. The server behind the relay is a session-era stdio server; the
// relay is the era bridge.
//
// Usage: node v2_client.mjs --url http://127.0.0.1:PORT/mcp [--timeout 120]
//
// One `PASS name: detail` or `FAIL name: reason` line per check, then `SUMMARY`:
// connect (the pinned probe), server/discover, tools/list, tools/call, resources
// (list/read/templates), prompts (list/get), progress, logging (the _meta logLevel opt-in and
// its filter), sampling, elicitation and roots (each through an input_required result that
// the SDK fulfils with the handler registered here and retries), subscriptions/listen,
// cancellation (abort a long call; it ends and the next calls work), 20 concurrent calls,
// two clients at once without cross-talk, 1 MiB and 5 MiB echoes, and the shape of every
// result seen on the wire (resultType, cacheScope on list results). When the pinned connect
// fails, the rest still runs on a connection adopted from a stand-in discover result, so that
// every check reports for itself. Needs Node >= 20; every wait is bounded. Exit status 0
// only if every check passed.

import { parseArgs } from "node:util";
import { randomBytes } from "node:crypto";
import { Client, StreamableHTTPClientTransport } from "@modelcontextprotocol/client";

const VERSION = "2026-07-28";
const MIB = 1024 * 1024;
const LOG_LEVEL = "io.modelcontextprotocol/logLevel";
const SERVER_INFO = "io.modelcontextprotocol/serverInfo";
const LEVELS = ["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"];
const LIST_METHODS = new Set([
  "tools/list",
  "resources/list",
  "resources/templates/list",
  "prompts/list",
  "server/discover",
]);

const { values: opts } = parseArgs({
  options: {
    url: { type: "string" },
    timeout: { type: "string", default: "120" },
  },
});
if (!opts.url) {
  console.error("usage: v2_client.mjs --url http://HOST:PORT/mcp [--timeout SECONDS]");
  process.exit(2);
}
const url = new URL(opts.url);
const totalTimeout = Number(opts.timeout) * 1000;

const log = (msg) => process.stderr.write(`v2_client: ${msg}\n`);
const hex = (n) => randomBytes(n).toString("hex");
const short = (v, limit = 300) => {
  const text = typeof v === "string" ? JSON.stringify(v) : (JSON.stringify(v) ?? String(v));
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
const errText = (err) => {
  const code = err?.code !== undefined ? ` (code ${err.code})` : "";
  return `${err?.name ?? "Error"}${code}: ${err?.message ?? err}`;
};

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

/** What a relay in front of server-everything has to offer, as a stand-in discover result. */
const STAND_IN_DISCOVER = {
  resultType: "complete",
  cacheScope: "public",
  ttlMs: 0,
  supportedVersions: [VERSION],
  capabilities: { tools: {}, resources: {}, prompts: {}, logging: {} },
};

/** One client, what its handlers received, and every message on its wire. */
class Peer {
  constructor(label) {
    this.label = label;
    this.root = `file:///tmp/mcp-relay-v2-${label}-${hex(4)}`;
    this.logs = [];
    this.sampling = [];
    this.elicitations = [];
    this.rootsAsked = 0;
    this.errors = [];
    this.sent = new Map(); // JSON-RPC id → the request as sent
    this.wire = []; // every incoming message, in arrival order
    this.client = this.makeClient();
  }

  /** A Client with this peer's handlers (a Client cannot connect twice). */
  makeClient() {
    const client = new Client(
      { name: `mcp-relay-v2-test-${this.label}`, version: "0" },
      {
        capabilities: { sampling: {}, elicitation: { form: {} }, roots: {} },
        versionNegotiation: { mode: { pin: VERSION } },
      },
    );
    client.onerror = (err) => {
      this.errors.push(err);
      if (this.errors.length <= 5) log(`${this.label}: client error: ${err?.message ?? err}`);
    };
    client.setRequestHandler("sampling/createMessage", async (request) => {
      this.sampling.push(request.params);
      const prompt = request.params.messages.at(-1)?.content?.text ?? "";
      return {
        role: "assistant",
        content: { type: "text", text: `sampled<${this.label}>: ${prompt}` },
        model: "mcp-relay-test-model",
        stopReason: "endTurn",
      };
    });
    client.setRequestHandler("elicitation/create", async (request) => {
      this.elicitations.push(request.params);
      return { action: "accept", content: { name: `Ada ${this.label}`, check: true } };
    });
    client.setRequestHandler("roots/list", async () => {
      this.rootsAsked += 1;
      return { roots: [{ uri: this.root, name: `root of ${this.label}` }] };
    });
    client.setNotificationHandler("notifications/message", (n) => {
      this.logs.push(n.params);
    });
    return client;
  }

  transport() {
    const transport = new StreamableHTTPClientTransport(url);
    // The client chains an onmessage set before connect: a tap on everything that arrives.
    transport.onmessage = (message) => this.wire.push(message);
    const send = transport.send.bind(transport);
    transport.send = (message, options) => {
      if (message?.method !== undefined && message.id !== undefined) this.sent.set(message.id, message);
      return send(message, options);
    };
    return transport;
  }

  /** The pinned connect (server/discover probe); on failure, adopt a stand-in result. */
  async connect() {
    try {
      await this.client.connect(this.transport(), { timeout: 30_000 });
      return { pinned: true };
    } catch (err) {
      log(`${this.label}: the pinned connect failed (${errText(err)}); going on with a stand-in discover result`);
      this.client = this.makeClient();
      await this.client.connect(this.transport(), {
        prior: { kind: "modern", discover: STAND_IN_DISCOVER },
      });
      return { pinned: false, error: err };
    }
  }

  async close() {
    await this.client.close();
  }

  call(name, args, options = {}, meta = undefined) {
    const params = meta ? { name, arguments: args, _meta: meta } : { name, arguments: args };
    return this.client.callTool(params, { timeout: 30_000, ...options });
  }

  /** The ids of the requests sent (so far) whose params are tagged with `tag`. */
  idsTagged(tag) {
    return [...this.sent.values()]
      .filter((m) => m.params?._meta?.["mcp-relay-test/tag"] === tag)
      .map((m) => m.id);
  }
}

const EVERYTHING_TOOLS = [
  "echo",
  "get-sum",
  "trigger-long-running-operation",
  "trigger-sampling-request",
  "trigger-elicitation-request",
  "get-roots-list",
  "toggle-simulated-logging",
];

async function echo(peer, message) {
  const result = await peer.call("echo", { message });
  check(!result.isError, `echo failed: ${short(result)}`);
  const got = textOf(result);
  const want = `Echo: ${message}`;
  check(got === want, `echo returned ${short(got)}, wanted ${short(want)}`);
}

/**
 * Calls trigger-long-running-operation with a progress callback and checks progress on the
 * wire (every notifications/progress for the request's token, in order, before the response
 * to that request) and as the SDK delivered it.
 */
async function progressCall(peer, steps, seconds, options = {}) {
  const seen = [];
  const tag = hex(6);
  const result = await peer.call(
    "trigger-long-running-operation",
    { duration: seconds, steps },
    { onprogress: (p) => seen.push(p.progress), ...options },
    { "mcp-relay-test/tag": tag },
  );
  // In 2026-07-28 one call may take several requests: each earlier one must have been
  // answered with input_required (the SDK then retries). Behind the bridge that happens when
  // the server asks the client something while the call runs (server-everything asks a new
  // process for its roots 350 ms after initialize, whatever it is doing).
  const ids = peer.idsTagged(tag);
  check(ids.length >= 1, "the request never went out");
  for (const earlier of ids.slice(0, -1)) {
    const answer = peer.wire.find((m) => m.method === undefined && m.id === earlier);
    check(
      answer?.result?.resultType === "input_required",
      `the request went out ${ids.length} times, and ${earlier} was answered ${short(answer)}`,
    );
  }
  const tokens = new Map();
  for (const id of ids) {
    const token = peer.sent.get(id).params?._meta?.progressToken;
    check(token !== undefined, `the SDK sent no progressToken: ${short(peer.sent.get(id).params?._meta)}`);
    tokens.set(token, id);
  }
  const wire = [];
  const answered = new Set();
  for (const m of peer.wire) {
    if (m.method === "notifications/progress" && tokens.has(m.params?.progressToken)) {
      const id = tokens.get(m.params.progressToken);
      check(!answered.has(id), `progress ${m.params.progress} arrived after the response to ${id}`);
      wire.push(m.params.progress);
    } else if (m.method === undefined && ids.includes(m.id)) {
      answered.add(m.id);
    }
  }
  const want = JSON.stringify(Array.from({ length: steps }, (_, i) => i + 1));
  check(JSON.stringify(wire) === want, `client ${peer.label}: progress on the wire ${JSON.stringify(wire)}, wanted ${want}`);
  // The SDK repeats an earlier progress value when it retries a call (seen: [1,1,2,3] and
  // [1,2,1,3], with [1,2,3] on the wire); repeats aside, the steps must all come in order.
  let highest = -Infinity;
  const delivered =
    ids.length > 1 ? seen.filter((p) => (p > highest ? ((highest = p), true) : false)) : seen;
  check(JSON.stringify(delivered) === want, `client ${peer.label}: the SDK delivered progress ${JSON.stringify(seen)}, wanted ${want}`);
  return { result, seen: delivered };
}

/** Calls toggle-simulated-logging with `level` as the opt-in; the logs that came with it. */
async function toggleLogging(peer, level) {
  const tag = hex(6);
  const meta = { "mcp-relay-test/tag": tag };
  if (level !== undefined) meta[LOG_LEVEL] = level;
  const before = peer.logs.length;
  const result = await peer.call("toggle-simulated-logging", {}, {}, meta);
  check(!result.isError, `toggle-simulated-logging failed: ${short(result)}`);
  const [id] = peer.idsTagged(tag);
  const sentMeta = peer.sent.get(id)?.params?._meta ?? {};
  check(sentMeta[LOG_LEVEL] === level, `the SDK sent logLevel ${sentMeta[LOG_LEVEL]}, not ${level}`);
  return { text: textOf(result), logs: peer.logs.slice(before) };
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
    console.log(`FAIL ${name}: ${errText(err).replace(/\s*\n\s*/g, " ")}`);
    if (err?.stack) log(`${name}: ${err.stack}`);
    return false;
  }
}

async function exercise() {
  const a = new Peer("A");
  let connected = null;
  await run("connect", 40_000, async () => {
    connected = await a.connect();
    if (!connected.pinned) throw connected.error;
    const version = a.client.getNegotiatedProtocolVersion();
    check(version === VERSION, `negotiated ${version}`);
    check(a.client.getProtocolEra() === "modern", `era ${a.client.getProtocolEra()}`);
    const probe = [...a.sent.values()].find((m) => m.method === "server/discover");
    check(probe, "no server/discover probe went out");
    check(![...a.sent.values()].some((m) => m.method === "initialize"), "the client sent initialize");
    const info = a.client.getServerVersion();
    check(info?.name, `no server info from the probe: ${short(a.client.getDiscoverResult())}`);
    return `pinned ${version} via server/discover; server ${info.name} ${info.version}`;
  });
  if (connected === null) {
    // Not even the stand-in connection came up: nothing else can run.
    failed.push("run");
    console.log("FAIL run: no connection at all");
    return;
  }
  try {
    await run("server/discover", 30_000, async () => {
      const result = await a.client.discover({ timeout: 20_000 });
      check(result.supportedVersions?.includes(VERSION), `supportedVersions ${short(result.supportedVersions)}`);
      const caps = result.capabilities ?? {};
      for (const c of ["tools", "resources", "prompts"]) check(caps[c], `no ${c} capability in ${short(caps)}`);
      const info = result._meta?.[SERVER_INFO];
      check(info?.name === "mcp-servers/everything", `_meta serverInfo ${short(info)}`);
      check(typeof result.instructions === "string" && result.instructions.length > 0, "no instructions");
      const raw = a.wire.find((m) => m.id !== undefined && a.sent.get(m.id)?.method === "server/discover" && m.result);
      check(raw?.result?.resultType === "complete", `resultType ${short(raw?.result?.resultType)}`);
      check(["public", "private"].includes(raw?.result?.cacheScope), `cacheScope ${short(raw?.result?.cacheScope)}`);
      return `${info.name} ${info.version}; versions ${result.supportedVersions}; capabilities ${Object.keys(caps)}`;
    });

    await run("tools/list", 30_000, async () => {
      const { tools } = await a.client.listTools(undefined, { cacheMode: "bypass" });
      const names = new Set(tools.map((t) => t.name));
      const missing = EVERYTHING_TOOLS.filter((n) => !names.has(n));
      check(missing.length === 0, `missing tools ${missing} among ${[...names]}`);
      return `${tools.length} tools, including the sampling, elicitation and roots ones`;
    });

    await run("tools/call", 30_000, async () => {
      const message = 'héllo through mcp-relay ✓ "quoted" \\ back\\slash';
      await echo(a, message);
      const sum = textOf(await a.call("get-sum", { a: 2, b: 40 }));
      check(sum.includes("42"), `get-sum returned ${short(sum)}`);
      return `echo ${short(message)}; get-sum → ${short(sum)}`;
    });

    await run("resources", 30_000, async () => {
      const { resources } = await a.client.listResources(undefined, { cacheMode: "bypass" });
      check(resources.length > 0, "resources/list is empty");
      const uri = resources[0].uri;
      const { contents } = await a.client.readResource({ uri }, { cacheMode: "bypass" });
      check(contents.length > 0 && contents[0].uri === uri, `resources/read ${uri} returned ${short(contents)}`);
      const { resourceTemplates } = await a.client.listResourceTemplates(undefined, { cacheMode: "bypass" });
      check(resourceTemplates.length > 0, "resources/templates/list is empty");
      const template = resourceTemplates.find((t) => t.uriTemplate.includes("/text/"));
      check(template, `no text template among ${short(resourceTemplates.map((t) => t.uriTemplate))}`);
      const dynamic = template.uriTemplate.replace(/\{[^}]+\}/, "7");
      const got = await a.client.readResource({ uri: dynamic }, { cacheMode: "bypass" });
      check(got.contents[0]?.text?.length > 0, `resources/read ${dynamic} returned ${short(got)}`);
      return `${resources.length} resources, read ${uri}; ${resourceTemplates.length} templates, read ${dynamic}`;
    });

    await run("prompts", 30_000, async () => {
      const { prompts } = await a.client.listPrompts(undefined, { cacheMode: "bypass" });
      check(prompts.length > 0, "prompts/list is empty");
      const withArgs = prompts.find((p) => (p.arguments ?? []).some((x) => x.required)) ?? prompts[0];
      const args = Object.fromEntries(
        (withArgs.arguments ?? []).filter((x) => x.required).map((x) => [x.name, "Ada"]),
      );
      const got = await a.client.getPrompt({ name: withArgs.name, arguments: args });
      check(got.messages.length > 0, `prompts/get ${withArgs.name} returned no messages`);
      if (Object.keys(args).length > 0) {
        check(JSON.stringify(got.messages).includes("Ada"), `prompts/get ${withArgs.name} ignored its arguments: ${short(got)}`);
      }
      return `${prompts.length} prompts; got ${withArgs.name} ${short(args)}`;
    });

    await run("progress", 30_000, async () => {
      const { result, seen } = await progressCall(a, 3, 0.3);
      check(!result.isError, `the call failed: ${short(result)}`);
      return `progress ${JSON.stringify(seen)}, ${short(textOf(result), 80)}`;
    });

    await run("logging", 30_000, async () => {
      // toggle-simulated-logging logs one message at once when it starts logging (and every
      // 5 s after, unrelated to any request); each child of the relay keeps its own toggle.
      // Judged on the calls that started it: with the opt-in at debug that message comes
      // with the answer; without an opt-in nothing does; at "emergency" nothing below it.
      const startedWith = async (level) => {
        for (let attempt = 0; attempt < 2; attempt++) {
          const got = await toggleLogging(a, level);
          if (got.text.startsWith("Started")) return got;
          check(got.text.startsWith("Stopped"), `unexpected answer ${short(got.text, 120)}`);
        }
        throw new Error("two toggles in a row did not start logging");
      };
      const on = await startedWith("debug");
      const quiet = await startedWith(undefined);
      const loud = await startedWith("emergency");
      // Best effort: leave logging off where the next toggle lands.
      if ((await toggleLogging(a, undefined)).text.startsWith("Started")) await toggleLogging(a, undefined);
      check(on.logs.length >= 1, "no notifications/message came with the call that started logging (logLevel debug)");
      check(on.logs.every((m) => LEVELS.includes(m.level)), `bad levels ${short(on.logs)}`);
      check(quiet.logs.length === 0, `${quiet.logs.length} log message(s) without a logLevel opt-in: ${short(quiet.logs)}`);
      const below = loud.logs.filter((m) => m.level !== "emergency");
      check(below.length === 0, `messages below the logLevel emergency: ${short(below)}`);
      return `${on.logs.length} message(s) at debug (first ${on.logs[0].level}), none without opt-in, ${loud.logs.length} at emergency`;
    });

    await run("sampling (input_required)", 30_000, async () => {
      const prompt = `prompt-${hex(4)}`;
      const before = a.sampling.length;
      const result = await a.call("trigger-sampling-request", { prompt, maxTokens: 20 });
      check(!result.isError, `trigger-sampling-request failed: ${short(result)}`);
      check(a.sampling.length === before + 1, `the sampling handler ran ${a.sampling.length - before} times`);
      const got = textOf(result);
      check(got.includes("sampled<A>:") && got.includes(prompt), `result ${short(got)} lacks the sampled text`);
      return `sampling/createMessage fulfilled through input_required → ${short(got, 80)}`;
    });

    await run("elicitation (input_required)", 30_000, async () => {
      const before = a.elicitations.length;
      const result = await a.call("trigger-elicitation-request", {});
      check(!result.isError, `trigger-elicitation-request failed: ${short(result)}`);
      check(a.elicitations.length === before + 1, `the elicitation handler ran ${a.elicitations.length - before} times`);
      const got = textOf(result);
      check(got.includes("Ada A"), `result ${short(got)} lacks the answer`);
      return `elicitation/create fulfilled through input_required → ${short(got, 80)}`;
    });

    await run("roots (input_required)", 30_000, async () => {
      const result = await a.call("get-roots-list", {});
      check(!result.isError, `get-roots-list failed: ${short(result)}`);
      const got = textOf(result);
      check(got.includes(a.root), `result ${short(got)} lacks this client's root ${a.root}`);
      return `roots/list fulfilled through input_required (asked ${a.rootsAsked} time(s)) → ${a.root}`;
    });

    await run("subscriptions/listen", 30_000, async () => {
      const sub = await a.client.listen({ toolsListChanged: true, resourcesListChanged: true }, { timeout: 20_000 });
      await sub.close();
      await echo(a, "after listen");
      return "acknowledged, closed; calls go on";
    });

    await run("cancellation", 40_000, async () => {
      const controller = new AbortController();
      const seen = [];
      const start = Date.now();
      const call = a.call(
        "trigger-long-running-operation",
        { duration: 20, steps: 20 },
        {
          signal: controller.signal,
          onprogress: (p) => {
            seen.push(p.progress);
            controller.abort("cancelled by the test");
          },
        },
      );
      let outcome;
      try {
        outcome = { result: await call };
      } catch (err) {
        outcome = { error: err };
      }
      const took = (Date.now() - start) / 1000;
      check(outcome.error, `the call finished instead: ${short(outcome.result)}`);
      check(controller.signal.aborted, `the call failed before it was cancelled: ${errText(outcome.error)}`);
      check(took < 10, `cancelling took ${took} s`);
      await echo(a, "after cancel");
      const { result } = await progressCall(a, 2, 0.1);
      check(!result.isError, `call after the cancellation failed: ${short(result)}`);
      return `aborted after ${seen.length} progress notification(s) in ${took.toFixed(2)} s; the next calls work`;
    });

    await run("20 concurrent calls", 60_000, async () => {
      const n = 20;
      const jobs = [];
      for (let i = 0; i < n; i++) {
        if (i % 2 === 0) {
          jobs.push(echo(a, `concurrent-${i}-${hex(3)}`).then(() => null));
        } else {
          jobs.push(
            progressCall(a, 3, 0.3).then(({ result, seen }) => {
              check(!result.isError, `call ${i} failed: ${short(result)}`);
              return JSON.stringify(seen) === "[1,2,3]" ? null : `${i}: ${JSON.stringify(seen)}`;
            }),
          );
        }
      }
      const bad = (await Promise.all(jobs)).filter((x) => x !== null);
      check(bad.length === 0, `progress mixed up between concurrent calls: ${bad}`);
      return `${n} calls at once (${n / 2} with 3 progress notifications each), all answered correctly`;
    });

    await run("two clients", 60_000, async () => {
      const b = new Peer("B");
      const how = await b.connect();
      check(how.pinned, `client B's pinned connect failed: ${errText(how.error)}`);
      try {
        const counts = (p) => [p.sampling.length, p.elicitations.length];
        const [aS, aE] = counts(a);
        const [bS, bE] = counts(b);
        const work = async (peer) => {
          const tag = `${peer.label}-${hex(3)}`;
          await echo(peer, `echo-${tag}`);
          const { seen } = await progressCall(peer, 3, 0.3);
          check(JSON.stringify(seen) === "[1,2,3]", `client ${peer.label}: progress ${JSON.stringify(seen)}`);
          const sampled = textOf(await peer.call("trigger-sampling-request", { prompt: `p-${tag}`, maxTokens: 20 }));
          check(
            sampled.includes(`sampled<${peer.label}>`) && sampled.includes(`p-${tag}`),
            `client ${peer.label}: sampling answered by the wrong client: ${short(sampled)}`,
          );
          const elicited = textOf(await peer.call("trigger-elicitation-request", {}));
          check(elicited.includes(`Ada ${peer.label}`), `client ${peer.label}: elicitation answered by the wrong client: ${short(elicited)}`);
        };
        await Promise.all([work(a), work(b)]);
        check(a.sampling.length === aS + 1 && a.elicitations.length === aE + 1, "A's handlers ran a wrong number of times");
        check(b.sampling.length === bS + 1 && b.elicitations.length === bE + 1, "B's handlers ran a wrong number of times");
      } finally {
        await b.close();
      }
      return "two clients in parallel, each got only its own answers, progress and input requests";
    });

    for (const mib of [1, 5]) {
      await run(`${mib} MiB each way`, 60_000, async () => {
        const size = mib * MIB;
        const head = `big-${hex(4)}-`;
        const pattern = "0123456789abcdefghijklmnopqrstuvwxyz";
        const body = (head + pattern.repeat(Math.ceil(size / pattern.length))).slice(0, size);
        const start = Date.now();
        const result = await a.call("echo", { message: body });
        const took = (Date.now() - start) / 1000;
        check(!result.isError, `echo failed: ${short(result)}`);
        const got = textOf(result);
        check(got.length === body.length + 6, `got ${got.length} characters back, wanted ${body.length + 6}`);
        check(got === `Echo: ${body}`, "the echoed payload differs");
        return `${size} bytes up and ${got.length} back in ${took.toFixed(2)} s`;
      });
    }

    await run("result shapes", 5_000, async () => {
      // Every response the client received: a result says resultType (complete here, the
      // SDK having fulfilled any input_required), a list result says cacheScope.
      const bad = [];
      let results = 0;
      for (const m of a.wire) {
        if (m.method !== undefined || m.result === undefined) continue;
        results += 1;
        const method = a.sent.get(m.id)?.method ?? "?";
        const wrong = [];
        if (!["complete", "input_required"].includes(m.result.resultType)) {
          wrong.push(`resultType ${short(m.result.resultType)}`);
        }
        if (LIST_METHODS.has(method) && !["public", "private"].includes(m.result.cacheScope)) {
          wrong.push(`cacheScope ${short(m.result.cacheScope)}`);
        }
        if (wrong.length > 0) bad.push(`${method} #${m.id}: ${wrong.join(", ")}`);
      }
      check(results > 0, "no results on the wire");
      check(bad.length === 0, `${bad.length} of ${results} results malformed: ${bad.slice(0, 5).join("; ")}`);
      return `${results} results, each with resultType; list results with cacheScope`;
    });
  } finally {
    await a.close().catch((err) => log(`closing: ${err}`));
  }
}

log(`2026-07-28 client at ${url}`);
try {
  await withTimeout(exercise(), totalTimeout, "the run");
} catch (err) {
  failed.push("run");
  console.log(`FAIL run: ${errText(err)}`);
}
console.log(`SUMMARY typescript-v2: passed=${passed.length} failed=${failed.length}`);
process.exit(failed.length === 0 && passed.length > 0 ? 0 : 1);
