#!/usr/bin/env bash
# Builds every fuzz target and runs each for a bounded time (about 20 s each, 2 minutes in all)
# from its committed corpus and the inputs of past crashes. Exits non-zero on a crash.
#
# Works on a fresh machine: installs cargo-fuzz if it is missing, and builds with the stable
# toolchain (RUSTC_BOOTSTRAP=1 unlocks the nightly flags libFuzzer needs).
#   FUZZ_SECONDS=<n>  seconds per target (default 20)
#   FUZZ_TARGETS="a b" which targets (default: all)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
seconds="${FUZZ_SECONDS:-20}"
targets="${FUZZ_TARGETS:-framing classify stream_check http_head relay remote}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "smoke: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

# No sanitizer: the core forbids unsafe code, and without ASan each target runs several times
# faster. Debug assertions stay on (overflow is a crash).
fuzz=(cargo fuzz)
opts=(--fuzz-dir "$here" -s none)
"${fuzz[@]}" build "${opts[@]}"

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
status=0
for t in $targets; do
    mkdir -p "$scratch/$t"
    dirs=("$scratch/$t" "$here/corpus/$t")
    [ -d "$here/regressions/$t" ] && dirs+=("$here/regressions/$t")
    # A target's dictionary (<target>.dict: header names, methods, _meta keys), if it has one.
    dict=()
    [ -f "$here/$t.dict" ] && dict=(-dict="$here/$t.dict")
    echo "smoke: $t for ${seconds}s" >&2
    # New inputs go to the scratch dir: the committed corpus only changes on purpose. An input
    # that runs for 10 s is a hang (the remote target found one), reported like a crash.
    if ! "${fuzz[@]}" run "${opts[@]}" "$t" "${dirs[@]}" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1 ${dict[@]+"${dict[@]}"} \
        >"$scratch/$t.log" 2>&1; then
        echo "smoke: $t FAILED; the crashing input is under $here/artifacts/$t/" >&2
        tail -n 60 "$scratch/$t.log" >&2
        status=1
        continue
    fi
    grep -E 'Done|stat::(number_of_executed_units|average_exec_per_sec)' "$scratch/$t.log" >&2 || true
done
exit "$status"
