#!/bin/busybox sh
# pid 1 of the cgroup v2 guest (prepare.sh puts it in the initramfs as /init).
#
# Stage 1, in the initramfs: load the virtio and 9p modules, mount the host's / (read-only) and the
# run's share, build a tmpfs root from host dirs, switch_root into it. Stage 2, as pid 1 of that
# root: lay the cgroup tree out as systemd would, run the command of the share's cmd.sh in the
# requested placement, write its exit status into the share, power off. Whatever goes wrong ends
# the guest without a status, which the host reports as a failure.
#
# No `set -e`: every step that matters is checked, and pid 1 must never exit on its own (that is a
# kernel panic; it would still end the guest, but with a less clear message).

BB=/bin/busybox
CTL=/v2guest/.v2guest

say() { echo "v2guest: $*"; }
fatal() {
    echo "v2guest: fatal: $*"
    echo "V2GUEST-FATAL"
    sync
    $BB reboot -f
    sleep 5
}

stage1() {
    $BB --install -s /bin
    export PATH=/bin
    mount -t proc proc /proc || fatal "cannot mount /proc"
    mount -t sysfs sysfs /sys || fatal "cannot mount /sys"
    mount -t devtmpfs -o mode=755 devtmpfs /dev || fatal "cannot mount /dev"
    # Plain \n on the serial line: the host log then reads like any other.
    stty -onlcr 2>/dev/null

    for m in /modules/*.ko; do
        [ -e "$m" ] || continue
        insmod "$m" || fatal "insmod $m failed"
    done

    # The 9p channels appear once virtio-pci has probed the devices: give them a few seconds.
    mount9p() {
        n=0
        until mount -t 9p -o "trans=virtio,version=9p2000.L,msize=262144,$3" "$1" "$2" 2>/dev/null; do
            n=$((n + 1))
            [ "$n" -lt 50 ] || fatal "cannot mount the 9p share $1 on $2"
            sleep 0.2
        done
    }
    # Read-only and thrown away after the run: caching it is safe and makes exec much faster.
    mount9p hostroot /host ro,cache=loose
    mount9p share /share rw
    [ -r /share/.v2guest/job.env ] || fatal "the share has no .v2guest/job.env"
    . /share/.v2guest/job.env

    R=/newroot
    mount -t tmpfs -o mode=755 tmpfs $R || fatal "cannot mount the tmpfs root"
    for d in usr etc; do
        mkdir $R/$d && mount --bind /host/$d $R/$d || fatal "cannot bind the host's /$d"
    done
    # Merged-/usr hosts have these as links; older layouts as dirs.
    for d in bin sbin lib lib32 lib64 libx32; do
        if [ -L /host/$d ]; then
            ln -s "$(readlink /host/$d)" $R/$d
        elif [ -d /host/$d ]; then
            mkdir $R/$d && mount --bind /host/$d $R/$d || fatal "cannot bind the host's /$d"
        fi
    done
    mkdir -p $R/proc $R/sys $R/dev $R/tmp $R/run $R/mnt $R/var/lib $R/var/log $R/var/cache \
        $R/var/tmp $R/root $R/v2guest
    chmod 1777 $R/var/tmp
    chmod 700 $R/root
    mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs $R/tmp || fatal "cannot mount /tmp"
    mount -t tmpfs -o mode=755,nosuid,nodev tmpfs $R/run || fatal "cannot mount /run"
    # Rust toolchains and cargo-installed tools, read-only, where the host has them.
    for d in .cargo .rustup; do
        if [ -d /host/root/$d ]; then
            mkdir $R/root/$d && mount --bind /host/root/$d $R/root/$d || fatal "cannot bind /root/$d"
        fi
    done
    # Paths the run needs at the host's own place (the checkout: test binaries have absolute
    # paths such as CARGO_BIN_EXE_* compiled in).
    for p in $V2GUEST_BINDS; do
        [ -e "/host$p" ] || fatal "bind path $p does not exist on the host"
        if [ -d "/host$p" ]; then
            mkdir -p "$R$p"
        else
            mkdir -p "$(dirname "$R$p")" && touch "$R$p"
        fi
        mount --bind "/host$p" "$R$p" || fatal "cannot bind $p"
    done
    # Binds over the binds above, from the share: e.g. the archive's target dir over the checkout's.
    for pair in $V2GUEST_SHARE_BINDS; do
        src="/share/${pair%%=*}"
        dst="$R${pair#*=}"
        [ -d "$src" ] || fatal "share bind source ${pair%%=*} is not a dir in the share"
        mkdir -p "$dst" 2>/dev/null
        mount --bind "$src" "$dst" || fatal "cannot bind the share's ${pair%%=*} on ${pair#*=}"
    done

    mount --move /share $R/v2guest || fatal "cannot move the share"
    mount --move /dev $R/dev || fatal "cannot move /dev"
    mount --move /proc $R/proc || fatal "cannot move /proc"
    mount --move /sys $R/sys || fatal "cannot move /sys"
    mkdir -p $R/dev/pts $R/dev/shm
    mount -t devpts -o nosuid,noexec,gid=5,mode=620,ptmxmode=000 devpts $R/dev/pts ||
        fatal "cannot mount /dev/pts"
    mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs $R/dev/shm || fatal "cannot mount /dev/shm"
    ln -sf /proc/self/fd $R/dev/fd
    ln -sf /proc/self/fd/0 $R/dev/stdin
    ln -sf /proc/self/fd/1 $R/dev/stdout
    ln -sf /proc/self/fd/2 $R/dev/stderr
    # The options systemd mounts the unified hierarchy with.
    mount -t cgroup2 -o nosuid,nodev,noexec,nsdelegate,memory_recursiveprot cgroup2 \
        $R/sys/fs/cgroup || fatal "cannot mount cgroup2"

    mkdir -p $R/run/v2guest/bin
    cp $BB $R/run/v2guest/bin/busybox && cp /init $R/run/v2guest/init || fatal "cannot copy init"
    # shellcheck disable=SC2093 # reached only when the exec fails
    exec switch_root $R /run/v2guest/bin/busybox sh /run/v2guest/init stage2
    fatal "switch_root failed"
}

# Echoes those of the controllers $2... that the space-separated list $1 holds, as "+c +d".
pick() {
    have=" $1 "
    shift
    out=""
    for c in "$@"; do
        case "$have" in *" $c "*) out="$out +$c" ;; esac
    done
    echo "${out# }"
}

stage2() {
    BB=/run/v2guest/bin/busybox
    $BB --install -s /run/v2guest/bin
    export PATH=/run/v2guest/bin
    . $CTL/job.env
    # systemd makes every mount shared; code that forgets to make its own private must show here.
    mount --make-rshared / || fatal "cannot make / shared"
    hostname "${V2GUEST_HOSTNAME:-v2guest}"
    ip link set lo up || fatal "cannot bring loopback up"

    cg=/sys/fs/cgroup
    runner_cg=$cg
    case "${V2GUEST_CGROUP:-service}" in
    service | root)
        # As systemd: controllers on at the root, pid 1 in init.scope, services under
        # system.slice, each service cgroup holding its processes and delegating nothing.
        top="$(pick "$(cat $cg/cgroup.controllers)" cpu memory pids io)"
        echo "$top" >$cg/cgroup.subtree_control || fatal "cannot enable $top at the root"
        mkdir $cg/init.scope && echo $$ >$cg/init.scope/cgroup.procs ||
            fatal "cannot move pid 1 into /init.scope"
        mkdir $cg/system.slice || fatal "cannot create /system.slice"
        slice="$(pick "$(cat $cg/system.slice/cgroup.controllers)" cpu memory pids)"
        echo "$slice" >$cg/system.slice/cgroup.subtree_control ||
            fatal "cannot enable $slice in /system.slice"
        if [ "$V2GUEST_CGROUP" != root ]; then
            runner_cg=$cg/system.slice/x.service
            mkdir $runner_cg || fatal "cannot create $runner_cg"
        fi
        ;;
    bare) ;; # a hierarchy as the kernel leaves it: nothing enabled, everything in the root
    *) fatal "unknown cgroup placement '$V2GUEST_CGROUP'" ;;
    esac

    read -r up _ </proc/uptime
    echo "$up" >$CTL/boot-seconds
    say "booted in ${up}s (kernel $(uname -r), cgroup2 controllers '$(cat $cg/cgroup.controllers)')"
    say "cgroup placement ${V2GUEST_CGROUP:-service}: runner in ${runner_cg#"$cg"}/, root" \
        "subtree_control '$(cat $cg/cgroup.subtree_control)'$([ -d $cg/system.slice ] &&
            echo ", /system.slice subtree_control '$(cat $cg/system.slice/cgroup.subtree_control)'")"

    # The runner shell moves itself first, so everything it starts is born in its cgroup.
    sh -c 'echo $$ >"$1/cgroup.procs" && exec env -i /bin/bash "$2"' runner "$runner_cg" \
        $CTL/cmd.sh </dev/null &
    runner=$!
    # ash reaps every child while it waits, so orphans reparented to pid 1 never linger as
    # zombies (as under systemd).
    wait $runner
    status=$?

    # Report, do not judge: the tests check their own cleanup; this shows what escaped them.
    {
        find $cg -mindepth 1 -type d -name 'execdriver*'
        grep execdriver /proc/self/mountinfo
        # Not pid 1, not its forks (they show its command line), not kernel threads.
        ps -o pid,args | grep -v -e '/run/v2guest/init' -e '^ *PID ' -e '^ *[0-9]* \['
    } >$CTL/leftovers 2>/dev/null
    if [ -s $CTL/leftovers ]; then
        say "left behind in the guest after the command:"
        sed 's/^/v2guest:   /' $CTL/leftovers
    fi

    echo "$status" >$CTL/exit-status.tmp && mv $CTL/exit-status.tmp $CTL/exit-status ||
        fatal "cannot write the exit status"
    sync
    say "command exited with status $status"
    echo "V2GUEST-EXIT $status"
    reboot -f
    sleep 5
}

case "$1" in
stage2) stage2 ;;
*) stage1 ;;
esac
fatal "init fell through"
