# Shared settings of the cgroup v2 guest scripts; sourced, not run.
# shellcheck shell=bash

# Where the kernel, the initramfs and the per-run share dirs live: outside git, kept between runs.
V2GUEST_CACHE="${V2GUEST_CACHE:-${XDG_CACHE_HOME:-/var/cache}/execdriver-v2guest}"
# shellcheck disable=SC2034 # used by the scripts that source this one
# Written by prepare.sh, read by run.sh: the kernel and initramfs to boot.
V2GUEST_GUEST_ENV="$V2GUEST_CACHE/guest.env"
# shellcheck disable=SC2034
V2GUEST_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

v2g_log() { printf 'v2guest: %s\n' "$*" >&2; }
v2g_die() {
    printf 'v2guest: error: %s\n' "$*" >&2
    exit 1
}

# Seconds since the epoch with a fraction, for phase timings.
v2g_now() { date +%s.%N; }
# The seconds between two v2g_now readings, one decimal.
v2g_elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
