#!/usr/bin/env bash
# CI stage: the Linux end-to-end tests on a cgroup v2 kernel. Builds a nextest archive of the
# workspace on the host, then runs the Linux tests from it inside the v2 guest, once per cgroup
# placement of the runner. Fails when any test fails in any placement, or a guest fails.
#
# Environment:
#   V2GUEST_FILTER      nextest filterset of the tests to run in the guest (default: the tests of
#                       execdriver-linux and the linux_driver tests of execdriver-tests)
#   V2GUEST_PLACEMENTS  placements to run, in order (default "service root"; also: bare)
#   V2GUEST_TIMEOUT     hard limit per guest in seconds, boot included (default 720: a healthy
#                       run takes 250-320 s on a 2-core VM, and a neighbour's load has made it
#                       take over 540; two guests that both hang stay under 25 minutes)
#   V2GUEST_NEXTEST_ARGS  extra arguments for `nextest run` in the guest, split on spaces
#                       (e.g. "--test-threads 1" or "--retries 1")
#   V2GUEST_OUT         dir for the archive, the share and the console logs
#                       (default <checkout>/target/v2guest)
#   plus those of prepare.sh (V2GUEST_CACHE, V2GUEST_KERNEL_PKG)
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"
cd "$V2GUEST_DIR/../.."
checkout="$(pwd -P)"
export CARGO_TERM_COLOR=never

filter="${V2GUEST_FILTER:-package(execdriver-linux) | (package(execdriver-tests) & binary(linux_driver))}"
placements="${V2GUEST_PLACEMENTS:-service root}"
timeout="${V2GUEST_TIMEOUT:-720}"
out="${V2GUEST_OUT:-$checkout/target/v2guest}"

phases=()
phase_start=""
begin() {
    phase_start="$(v2g_now)"
    echo "== v2 guest: $1"
}
# Records the phase just ended as "$1 took Ns".
end() { phases+=("$(printf '%-22s %6ss' "$1" "$(v2g_elapsed "$phase_start" "$(v2g_now)")")"); }

stage_start="$(v2g_now)"
begin "prepare (qemu, kernel, initramfs)"
"$V2GUEST_DIR/prepare.sh"
end prepare

begin "nextest archive of the workspace"
mkdir -p "$out"
rm -f "$out"/console-*.log
cargo nextest archive --workspace --archive-file "$out/archive.tar.zst"
end archive

# In the guest: extract into its tmpfs (exec from 9p is slower), run the filtered tests, all of
# them even after a failure. The compiled-in CARGO_BIN_EXE_* paths resolve through the checkout,
# which the guest sees read-only at its host path, built by the archive step above.
guest_cmd='mkdir -p /tmp/nextest &&
cargo-nextest nextest run --archive-file /v2guest/archive.tar.zst --extract-to /tmp/nextest \
    --workspace-remap "$PWD" --no-fail-fast -E "$V2GUEST_FILTER" $V2GUEST_NEXTEST_ARGS'

# The guest's kernel froze twice today, both times around the cpuset tests: once with a
# soft lockup on both emulated CPUs, once silently with qemu spinning. Such a guest now
# panics at once (softlockup_panic, see run.sh) or is ended when its console stays silent
# for 180 s (nextest prints a SLOW line every 60 s for a test that runs long, so a live
# guest is never silent that long); a placement whose guest died either way runs once more,
# and the summary says so. A test that fails, or a guest that dies any other way, fails the
# stage as before.
stall=180
locked_up() { grep -a -q -E 'soft lockup|Kernel panic|printed nothing for' "$1" 2>/dev/null; }
declare -A status
declare -A reruns
for p in $placements; do
    for attempt in 1 2; do
        again=""
        ((attempt == 1)) || again=" (again: the guest kernel locked up)"
        begin "tests in the guest, cgroup placement '$p'$again"
        rc=0
        "$V2GUEST_DIR/run.sh" --cgroup "$p" --timeout "$timeout" --stall "$stall" --workdir "$checkout" \
            --share "$out" --log "$out/console-$p.log" --env "V2GUEST_FILTER=$filter" \
            --env "V2GUEST_NEXTEST_ARGS=${V2GUEST_NEXTEST_ARGS:-}" \
            --env CARGO_TERM_COLOR=never --env RUST_BACKTRACE=1 \
            -- bash -c "$guest_cmd" || rc=$?
        status[$p]=$rc
        end "guest ($p)"
        if ((rc == 125 && attempt == 1)) && locked_up "$out/console-$p.log"; then
            cp "$out/console-$p.log" "$out/console-$p-lockup.log"
            reruns[$p]="the first guest's kernel locked up (console: $out/console-$p-lockup.log)"
            continue
        fi
        break
    done
done
rm -rf "$out/.v2guest"

echo "== v2 guest: summary"
printf '  %s\n' "${phases[@]}"
printf '  %-22s %6ss\n' "whole stage" "$(v2g_elapsed "$stage_start" "$(v2g_now)")"
failed=()
for p in $placements; do
    log="$out/console-$p.log"
    summary="$(grep -a -E '^ *Summary \[' "$log" 2>/dev/null | tail -n 1 | sed 's/^ *//' || true)"
    boot="$(grep -a -o -E 'v2guest: booted in [0-9.]+s' "$log" 2>/dev/null | head -n 1 |
        grep -o -E '[0-9.]+s' || true)"
    echo "  placement $p: exit status ${status[$p]}, boot ${boot:-?}, ${summary:-no nextest summary}"
    [[ -z "${reruns[$p]:-}" ]] || echo "    ran twice: ${reruns[$p]}"
    # nextest's final list after its summary line: one "FAIL [ time] (n/m) binary test" line
    # per test that did not pass (FAIL, TIMEOUT, SIGSEGV, LEAK-FAIL, ...), each with the first
    # line of its panic message, taken from the output nextest printed under that test.
    awk '
        /^ *Summary \[/ { list = 1; next }
        !list && /^ +[A-Z-]+ +\[/ { cur = $(NF - 1) " " $NF; next }
        !list && /panicked at/ && cur != "" && !(cur in msg) {
            if ((getline line) > 0) { sub(/^ */, "", line); msg[cur] = substr(line, 1, 240) }
            next
        }
        list && /^ +[A-Z-]+ +\[/ {
            key = $(NF - 1) " " $NF
            sub(/^ */, "    "); print
            if (key in msg) print "        " msg[key]
        }' "$log" 2>/dev/null || true
    ((status[$p] == 0)) || failed+=("$p")
done
echo "  console logs: $out/console-<placement>.log"
if ((${#failed[@]})); then
    echo "v2 guest: FAILED in placement(s): ${failed[*]}" >&2
    exit 1
fi
echo "v2 guest: all tests passed in placement(s): $placements"
