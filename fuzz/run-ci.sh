#!/usr/bin/env bash
# Runs every fuzz target for a bounded time, from the workspace root. New inputs go to a
# scratch dir listed first (libFuzzer writes only there), so the committed seeds stay as
# they are. Usage: bash fuzz/run-ci.sh [seconds per target]
set -euo pipefail
seconds=${1:-30}
for target in handle_id task_config lifecycle; do
    scratch=$(mktemp -d)
    trap 'rm -rf "$scratch"' EXIT
    echo "fuzzing $target for ${seconds}s"
    status=0
    cargo +nightly fuzz run "$target" "$scratch" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -max_len=20000 >"$scratch.log" 2>&1 || status=$?
    # -max_len above the handle id bound, so the size check itself gets fuzzed.
    # The full log is long; keep the summary, and everything when it failed.
    if [ "$status" -ne 0 ]; then tail -n 60 "$scratch.log"; else grep -E 'DONE' "$scratch.log" || true; fi
    rm -f "$scratch.log"
    rm -rf "$scratch"
    trap - EXIT
    if [ "$status" -ne 0 ]; then
        echo "fuzz target $target failed (exit $status); the crash input is in fuzz/artifacts/$target/" >&2
        exit 1
    fi
done
