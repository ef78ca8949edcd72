#!/usr/bin/env bash
# Prepares the cgroup v2 guest: installs qemu and a static busybox if missing, fetches Debian's
# 6.1 kernel into the cache, and builds the initramfs whose init is guest-init.sh. Idempotent:
# when everything is in place it only checks and returns (well under a second).
#
# Environment:
#   V2GUEST_CACHE        cache dir (default ${XDG_CACHE_HOME:-/var/cache}/execdriver-v2guest)
#   V2GUEST_KERNEL_PKG   kernel package to use (default: the newest
#                        linux-image-6.1.0-*-amd64-unsigned apt knows)
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "$0")/common.sh"

# Modules the init loads, by name; their dependencies come along from modules.dep. Missing ones
# are an error unless built in, except these which only some kernel versions split out.
WANTED_MODULES=(virtio virtio_ring virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci
    netfs fscache 9pnet 9pnet_virtio 9p)
OPTIONAL_MODULES=" virtio_pci_legacy_dev virtio_pci_modern_dev netfs fscache "

apt_updated=false
apt_update_once() {
    if ! $apt_updated; then
        v2g_log "apt-get update"
        apt-get update -qq >&2
        apt_updated=true
    fi
}

install_missing() {
    local missing=()
    command -v qemu-system-x86_64 >/dev/null 2>&1 || missing+=(qemu-system-x86)
    # The initramfs needs a busybox that runs without any library: only busybox-static is one.
    [[ "$(dpkg-query -W -f='${db:Status-Status}' busybox-static 2>/dev/null)" == installed ]] ||
        missing+=(busybox-static)
    ((${#missing[@]})) || return 0
    [[ $EUID -eq 0 ]] || v2g_die "missing packages ${missing[*]}; run as root to install them"
    v2g_log "installing ${missing[*]}"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >&2; then
        apt_update_once
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >&2
    fi
}

newest_kernel_pkg() {
    apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$' 2>/dev/null |
        awk '{ print $1 }' | sort -V | tail -n 1
}

candidate_version() {
    apt-cache policy "$1" 2>/dev/null | awk '$1 == "Candidate:" && $2 != "(none)" { print $2 }'
}

# Echoes the unpacked kernel dir, downloading and unpacking it on first use.
ensure_kernel() {
    local pkg="${V2GUEST_KERNEL_PKG:-}" ver dir tmp
    if [[ -z "$pkg" ]]; then
        pkg="$(newest_kernel_pkg)"
        if [[ -z "$pkg" ]]; then
            apt_update_once
            pkg="$(newest_kernel_pkg)"
        fi
    fi
    ver=""
    [[ -z "$pkg" ]] || ver="$(candidate_version "$pkg")"
    if [[ -z "$ver" ]]; then
        # Offline or no apt lists: a kernel unpacked before still does the job.
        dir="$(find "$V2GUEST_CACHE/kernel" -mindepth 2 -maxdepth 2 -name .complete \
            -printf '%h\n' 2>/dev/null | sort -V | tail -n 1)"
        [[ -n "$dir" ]] || v2g_die "apt knows no linux-image-6.1.0-*-amd64-unsigned package" \
            "(${pkg:-none found}) and no kernel is cached in $V2GUEST_CACHE/kernel"
        v2g_log "warning: cannot resolve a kernel package with apt; using the cached $dir"
        echo "$dir"
        return
    fi
    dir="$V2GUEST_CACHE/kernel/${pkg}_${ver}"
    if [[ ! -e "$dir/.complete" ]]; then
        v2g_log "fetching $pkg $ver"
        rm -rf "$dir" "$dir.tmp"
        tmp="$(mktemp -d "$V2GUEST_CACHE/download.XXXXXX")"
        # The sandbox user cannot write into a root-owned temp dir; the download is ours anyway.
        (cd "$tmp" && apt-get -qq -o APT::Sandbox::User=root download "$pkg=$ver") >&2 || {
            rm -rf "$tmp"
            v2g_die "apt-get download $pkg=$ver failed"
        }
        dpkg -x "$tmp"/*.deb "$dir.tmp"
        rm -rf "$tmp"
        mv "$dir.tmp" "$dir"
        touch "$dir/.complete"
        # Older kernels only take disk space; the one just unpacked replaces them.
        find "$V2GUEST_CACHE/kernel" -mindepth 1 -maxdepth 1 -type d ! -path "$dir" \
            -exec rm -rf {} +
    fi
    echo "$dir"
}

# Echoes the modules.dep path of kernel version $2 under root $1, generating it when the package
# does not ship one (Debian's postinst runs depmod; dpkg -x does not).
ensure_modules_dep() {
    local root="$1" kver="$2" dep="$1/lib/modules/$2/modules.dep"
    if [[ ! -s "$dep" ]]; then
        if command -v depmod >/dev/null 2>&1; then
            depmod -b "$root" "$kver" >&2
        else
            busybox depmod -b "$root" "$kver" >&2
        fi
    fi
    [[ -s "$dep" ]] || v2g_die "no modules.dep for $kver under $root"
    echo "$dep"
}

# Prints the module files (paths relative to the modules dir) to load, dependencies first.
resolve_modules() {
    local moddir="$1" dep="$2"
    awk -v wanted="${WANTED_MODULES[*]}" -v optional="$OPTIONAL_MODULES" \
        -v builtin="$moddir/modules.builtin" '
        function base(p) { sub(/.*\//, "", p); sub(/\.ko(\.xz|\.zst|\.gz)?$/, "", p); gsub(/-/, "_", p); return p }
        function visit(m,   n, i, parts) {
            if (m in done) return
            if (m in visiting) { print "dependency loop at " m > "/dev/stderr"; exit 2 }
            visiting[m] = 1
            n = split(deps[m], parts, " ")
            for (i = 1; i <= n; i++) visit(base(parts[i]))
            done[m] = 1
            print file[m]
        }
        BEGIN {
            while ((getline line < builtin) > 0) built[base(line)] = 1
        }
        {
            sub(/:$/, "", $1); m = base($1)
            file[m] = $1
            $1 = ""; deps[m] = $0
        }
        END {
            n = split(wanted, w, " ")
            for (i = 1; i <= n; i++) {
                m = w[i]
                if (m in file) visit(m)
                else if (m in built) continue
                else if (index(optional, " " m " ")) continue
                else { print "module " m " is neither in modules.dep nor built in" > "/dev/stderr"; exit 2 }
            }
        }' "$dep"
}

build_initramfs() {
    local kdir="$1" kver="$2" moddir dep mods stamp out tmp i f name
    moddir="$kdir/lib/modules/$kver"
    dep="$(ensure_modules_dep "$kdir" "$kver")"
    mods="$(resolve_modules "$moddir" "$dep")" || v2g_die "cannot resolve the guest's modules"
    stamp="$({
        echo "$kver"
        echo "$mods"
        sha256sum "$V2GUEST_DIR/guest-init.sh" /bin/busybox
    } | sha256sum | cut -c1-16)"
    out="$V2GUEST_CACHE/initramfs-$stamp.cpio"
    if [[ ! -s "$out" ]]; then
        v2g_log "building the initramfs ($kver)"
        tmp="$(mktemp -d "$V2GUEST_CACHE/initramfs.XXXXXX")"
        mkdir -p "$tmp"/{bin,dev,proc,sys,host,share,newroot,modules}
        cp /bin/busybox "$tmp/bin/busybox"
        cp "$V2GUEST_DIR/guest-init.sh" "$tmp/init"
        chmod 755 "$tmp/init" "$tmp/bin/busybox"
        # The kernel opens it for init's stdio before anything is mounted.
        mknod -m 600 "$tmp/dev/console" c 5 1
        i=10
        while read -r f; do
            [[ -n "$f" ]] || continue
            name="$i-$(basename "$f")"
            case "$f" in
            *.ko.xz) name="${name%.xz}" && xz -dc "$moddir/$f" >"$tmp/modules/$name" ;;
            *.ko.zst) name="${name%.zst}" && zstd -qdc "$moddir/$f" >"$tmp/modules/$name" ;;
            *.ko.gz) name="${name%.gz}" && gzip -dc "$moddir/$f" >"$tmp/modules/$name" ;;
            *) cp "$moddir/$f" "$tmp/modules/$name" ;;
            esac
            i=$((i + 1))
        done <<<"$mods"
        (cd "$tmp" && find . -mindepth 1 | LC_ALL=C sort | busybox cpio -o -H newc 2>/dev/null) \
            >"$out.tmp"
        rm -rf "$tmp"
        mv "$out.tmp" "$out"
        find "$V2GUEST_CACHE" -maxdepth 1 -name 'initramfs-*.cpio' ! -path "$out" -delete
    fi
    echo "$out"
}

main() {
    mkdir -p "$V2GUEST_CACHE/kernel"
    # Two CI jobs on one machine must not unpack into the same dirs at once.
    exec 9>"$V2GUEST_CACHE/.lock"
    flock 9
    install_missing
    local kdir kver kernel initrd
    kdir="$(ensure_kernel)"
    kernel="$(find "$kdir/boot" -maxdepth 1 -name 'vmlinuz-*' | sort -V | tail -n 1)"
    [[ -n "$kernel" ]] || v2g_die "no vmlinuz in $kdir/boot"
    kver="${kernel##*/vmlinuz-}"
    initrd="$(build_initramfs "$kdir" "$kver")"
    local new
    new="$(printf 'V2GUEST_KERNEL=%q\nV2GUEST_INITRD=%q\nV2GUEST_KVER=%q\n' \
        "$kernel" "$initrd" "$kver")"
    if [[ ! -e "$V2GUEST_GUEST_ENV" ]] || [[ "$(cat "$V2GUEST_GUEST_ENV")" != "$new" ]]; then
        echo "$new" >"$V2GUEST_GUEST_ENV"
    fi
    v2g_log "guest ready: kernel $kver, initramfs ${initrd##*/}"
}

main "$@"
