#!/usr/bin/env bash
# Boots the cgroup v2 guest under qemu, runs one command in it as root with CI=true, streams the
# guest's console, and exits with the command's exit status.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"

usage() {
    cat <<'EOF'
usage: run.sh [OPTIONS] -- COMMAND [ARG]...

Boots the cgroup v2 guest, runs COMMAND in it (as root, clean environment plus CI=true) from
the working dir, and exits with COMMAND's exit status. The host's / is visible read-only only
where the guest binds it: /usr, /etc, /root/.cargo, /root/.rustup, the working dir and --bind
paths, each at its host path. The share dir is writable, at /v2guest in the guest.

  --cgroup service|root|bare  where the runner sits (default service):
                              service: /system.slice/x.service of a systemd-like tree
                              root:    the root cgroup of the same tree
                              bare:    the root cgroup, no controller enabled anywhere
  --timeout SECS              hard limit for the whole guest, boot included (default 1200)
  --stall SECS                end the guest when its console has printed nothing for SECS
                              (a frozen guest kernel; default: never)
  --workdir DIR               host dir to run COMMAND from (default: the current dir)
  --bind PATH                 another host path to show read-only at its place (repeatable)
  --share DIR                 host dir to share writable at /v2guest (default: a temp dir,
                              removed afterwards)
  --share-bind SUB=PATH       bind the share's SUB over PATH in the guest (repeatable)
  --env NAME=VALUE            set in COMMAND's environment (repeatable)
  --memory MIB                guest memory (default 4096)
  --cpus N                    guest vCPUs (default 2)
  --log FILE                  also write the console to FILE (default: <share>/.v2guest/console.log)

Exit status: COMMAND's; 124 when the guest outlived --timeout; 125 when the guest ended without
reporting a status (kernel panic, init failure, qemu error), was ended for --stall, or on bad
usage.
EOF
}

cgroup=service
timeout="${V2GUEST_TIMEOUT:-1200}"
stall=""
workdir="$(pwd -P)"
binds=()
share=""
share_binds=()
envs=()
memory="${V2GUEST_MEMORY:-4096}"
cpus="${V2GUEST_CPUS:-2}"
log=""

bad_usage() {
    printf 'v2guest: %s\n' "$*" >&2
    usage >&2
    exit 125
}

while (($#)); do
    case "$1" in
    --cgroup) cgroup="${2:-}" && shift 2 ;;
    --timeout) timeout="${2:-}" && shift 2 ;;
    --stall) stall="${2:-}" && shift 2 ;;
    --workdir) workdir="${2:-}" && shift 2 ;;
    --bind) binds+=("${2:-}") && shift 2 ;;
    --share) share="${2:-}" && shift 2 ;;
    --share-bind) share_binds+=("${2:-}") && shift 2 ;;
    --env) envs+=("${2:-}") && shift 2 ;;
    --memory) memory="${2:-}" && shift 2 ;;
    --cpus) cpus="${2:-}" && shift 2 ;;
    --log) log="${2:-}" && shift 2 ;;
    -h | --help) usage && exit 0 ;;
    --) shift && break ;;
    *) bad_usage "unknown option '$1'" ;;
    esac
done
(($#)) || bad_usage "no command given (put it after --)"
case "$cgroup" in service | root | bare) ;; *) bad_usage "--cgroup must be service, root or bare" ;; esac
[[ "$timeout" =~ ^[1-9][0-9]*$ ]] || bad_usage "--timeout must be a positive number of seconds"
[[ -z "$stall" || "$stall" =~ ^[1-9][0-9]*$ ]] || bad_usage "--stall must be a positive number of seconds"
[[ "$memory" =~ ^[1-9][0-9]*$ ]] || bad_usage "--memory must be a number of MiB"
[[ "$cpus" =~ ^[1-9][0-9]*$ ]] || bad_usage "--cpus must be a positive number"
[[ -d "$workdir" ]] || bad_usage "--workdir $workdir is not a dir"
workdir="$(cd "$workdir" && pwd -P)"
[[ "$workdir" == / ]] || binds+=("$workdir")
for p in "${binds[@]}"; do
    [[ "$p" == /* && "$p" != *[[:space:]]* ]] ||
        bad_usage "bind path '$p' must be absolute and without whitespace"
    [[ -e "$p" ]] || bad_usage "bind path $p does not exist"
done
for sb in "${share_binds[@]}"; do
    [[ "$sb" =~ ^[^/=[:space:]][^=[:space:]]*=/[^[:space:]]*$ && "$sb" != *..* ]] ||
        bad_usage "--share-bind '$sb' must be SUB=/PATH (SUB relative, no .., no whitespace)"
done
for e in "${envs[@]}"; do
    [[ "$e" =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || bad_usage "--env '$e' must be NAME=VALUE"
done

"$V2GUEST_DIR/prepare.sh"
# shellcheck source=/dev/null
source "$V2GUEST_GUEST_ENV"

own_share=false
if [[ -z "$share" ]]; then
    mkdir -p "$V2GUEST_CACHE/runs"
    share="$(mktemp -d "$V2GUEST_CACHE/runs/share.XXXXXX")"
    own_share=true
fi
[[ -d "$share" ]] || bad_usage "--share $share is not a dir"
share="$(cd "$share" && pwd -P)"
for sb in "${share_binds[@]}"; do
    [[ -d "$share/${sb%%=*}" ]] || bad_usage "--share-bind source $share/${sb%%=*} is not a dir"
done
ctl="$share/.v2guest"
rm -rf "$ctl"
mkdir -p "$ctl"
[[ -n "$log" ]] || log="$ctl/console.log"

{
    printf 'V2GUEST_CGROUP=%q\n' "$cgroup"
    printf 'V2GUEST_BINDS=%q\n' "${binds[*]}"
    printf 'V2GUEST_SHARE_BINDS=%q\n' "${share_binds[*]}"
} >"$ctl/job.env"
{
    echo '#!/bin/bash'
    echo 'export PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
    echo 'export HOME=/root USER=root LOGNAME=root SHELL=/bin/bash LANG=C.UTF-8 TERM=dumb CI=true'
    printf 'export V2GUEST_SHARE=/v2guest V2GUEST_CGROUP=%q\n' "$cgroup"
    for e in "${envs[@]}"; do printf 'export %s=%q\n' "${e%%=*}" "${e#*=}"; done
    echo 'echo "v2guest: runner $$ in cgroup $(cut -d: -f3 /proc/self/cgroup)"'
    printf 'cd -- %q || exit 125\n' "$workdir"
    printf '%q ' "$@"
    echo
    # Not the last command of the script, so bash keeps waiting in its cgroup, holding it.
    echo 'status=$?'
    echo 'exit $status'
} >"$ctl/cmd.sh"

qemu_pid=""
cleanup() {
    local rc=$?
    if [[ -n "$qemu_pid" ]]; then
        stop_qemu
    fi
    if $own_share; then
        rm -rf "$share"
    fi
    exit "$rc"
}
# Ends qemu (our own child, not yet reaped, so its pid cannot have been reused): TERM, then KILL.
stop_qemu() {
    if kill -0 "$qemu_pid" 2>/dev/null; then
        kill -TERM "$qemu_pid" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$qemu_pid" 2>/dev/null || break
            # A zombie answers kill -0 too; it is gone once waited for.
            [[ "$(ps -o stat= -p "$qemu_pid" 2>/dev/null)" != Z* ]] || break
            sleep 0.1
        done
        kill -KILL "$qemu_pid" 2>/dev/null || true
    fi
    wait "$qemu_pid" 2>/dev/null || true
    qemu_pid=""
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

v2g_log "booting (kernel $V2GUEST_KVER, cgroup placement $cgroup, ${cpus} vCPUs, ${memory} MiB," \
    "timeout ${timeout}s) to run: $*"
start="$(v2g_now)"
# tcg: a KVM guest hangs at boot on these machines. panic=-1 with -no-reboot turns a guest
# panic into qemu's exit instead of a hang; softlockup_panic makes a kernel stuck on a CPU
# for 20 s one (once, both emulated CPUs locked up in the kernel and the guest sat out its
# whole timeout), with every CPU's backtrace on the console first (loglevel=5 lets the
# register and stack dumps through `quiet`). The guest has no network device, only loopback.
qemu-system-x86_64 \
    -accel tcg,thread=multi -cpu max -smp "$cpus" -m "$memory" \
    -nodefaults -no-user-config -display none -no-reboot \
    -kernel "$V2GUEST_KERNEL" -initrd "$V2GUEST_INITRD" \
    -append "console=ttyS0 quiet loglevel=5 panic=-1 softlockup_panic=1 softlockup_all_cpu_backtrace=1 cgroup_no_v1=all mitigations=off" \
    -chardev "stdio,id=con,signal=off,logfile=$log" -serial chardev:con \
    -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
    -virtfs "local,path=$share,mount_tag=share,security_model=none,multidevs=remap" \
    </dev/null &
qemu_pid=$!

deadline=$((SECONDS + timeout))
timed_out=false
stalled=false
reported_at=""
printed=-1
printed_at=$SECONDS
while kill -0 "$qemu_pid" 2>/dev/null && [[ "$(ps -o stat= -p "$qemu_pid" 2>/dev/null)" != Z* ]]; do
    if ((SECONDS >= deadline)); then
        timed_out=true
        break
    fi
    size="$(stat -c %s "$log" 2>/dev/null || echo 0)"
    if ((size != printed)); then
        printed=$size
        printed_at=$SECONDS
    elif [[ -n "$stall" ]] && ((SECONDS - printed_at >= stall)); then
        stalled=true
        break
    fi
    # The guest powers off right after reporting; one that reported but hangs on the way out
    # has still reported.
    if [[ -e "$ctl/exit-status" ]]; then
        reported_at="${reported_at:-$SECONDS}"
        ((SECONDS - reported_at < 20)) || break
    fi
    sleep 1
done
stop_qemu
total="$(v2g_elapsed "$start" "$(v2g_now)")"

if [[ -s "$ctl/exit-status" ]]; then
    status="$(cat "$ctl/exit-status")"
    [[ "$status" =~ ^[0-9]+$ ]] || v2g_die "the guest reported a malformed exit status '$status'"
    boot="$(cat "$ctl/boot-seconds" 2>/dev/null || echo '?')"
    v2g_log "guest booted in ${boot}s; command exited with status $status; the guest ran ${total}s"
    exit "$status"
fi
if $stalled; then
    why="the guest printed nothing for ${stall}s (its kernel froze); qemu was killed after ${total}s"
    # In the console log too, where test.sh looks for how a guest died.
    printf 'v2guest: error: %s\n' "$why" >>"$log"
    v2g_log "error: $why; console log above"
    exit 125
fi
if $timed_out; then
    v2g_log "error: the guest did not finish within ${timeout}s (hung or too slow); qemu was" \
        "killed after ${total}s; console log above"
    exit 124
fi
why="$(grep -a -m1 'v2guest: fatal:' "$log" 2>/dev/null | tr -d '\r' || true)"
[[ -n "$why" ]] || why="$(grep -a -m1 -E 'Kernel panic|BUG:|Oops' "$log" 2>/dev/null | tr -d '\r' || true)"
v2g_log "error: the guest ended after ${total}s without reporting an exit status${why:+: $why}" \
    "(console log above)"
exit 125
