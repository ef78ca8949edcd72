#!/usr/bin/env bash
# Acceptance test of the plugin with HashiCorp's own client code: go-plugin launches
# target/debug/execdriver-nomad exactly as a Nomad agent does, go-cty encodes the configs
# against the schemas the plugin returns, and a job's life runs through every RPC.
#
# Needs root (real tasks). Builds offline from Debian's Go packages (GOPATH mode); the Go
# stubs are generated from our own .proto files on every run, never committed. Everything
# it makes (data dir, alloc dir, stubs) is in one temp dir, removed at exit; the Go build
# cache is kept under target/ so reruns are quick.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
proto_dir="$repo/nomad/proto"

if [ "$(id -u)" -ne 0 ]; then
    echo "nomad/acceptance/run.sh: needs root (it starts real tasks)" >&2
    exit 1
fi

packages=(
    golang-go
    golang-github-hashicorp-go-plugin-dev
    golang-github-zclconf-go-cty-dev
    golang-github-hashicorp-hcl-v2-dev
    golang-google-grpc-dev
    golang-goprotobuf-dev
    golang-google-genproto-dev
    protobuf-compiler
)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "== installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 || {
        apt-get update -q >/dev/null
        apt-get install -y -q "${missing[@]}" >/dev/null
    }
fi

echo "== building the plugin"
(cd "$repo" && cargo build -q -p execdriver-nomad)
plugin="$repo/target/debug/execdriver-nomad"

work="$(mktemp -d /tmp/execdriver-acceptance.XXXXXX)"
export EXECDRIVER_ACCEPTANCE_SLICE="execdriver-test-acceptance-$$"
cleanup() {
    local rc=$?
    # The harness's own driver slice: its supervisors cgroup, then the slice, in every
    # hierarchy (empty once every supervisor has exited).
    local d
    for d in /sys/fs/cgroup/"$EXECDRIVER_ACCEPTANCE_SLICE.slice" /sys/fs/cgroup/*/"$EXECDRIVER_ACCEPTANCE_SLICE.slice"; do
        [ -d "$d" ] || continue
        for _ in $(seq 50); do
            rmdir "$d/supervisors" 2>/dev/null; rmdir "$d" 2>/dev/null && break
            sleep 0.1
        done
        if [ -d "$d" ]; then
            echo "FAIL: $d is left behind" >&2
            rc=1
        fi
    done
    # A supervisor still running from our data dir means the harness left a task behind.
    if ps -eo args | grep -F -- "--state-dir $work/" | grep -v grep >/dev/null; then
        echo "FAIL: supervisors of $work are still running:" >&2
        ps -eo pid,args | grep -F -- "--state-dir $work/" | grep -v grep >&2
        rc=1
    fi
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
chmod 0755 "$work"

export GO111MODULE=off
export GOPATH="$work/gopath:/usr/share/gocode"
export GOCACHE="$repo/target/nomad-acceptance/gocache"
export GOPROXY=off
mkdir -p "$GOCACHE"

echo "== generating Go stubs from nomad/proto"
# Debian's protoc-gen-go (APIv1) names each file's package by import_path and writes it by
# source path, so each file is generated alone and moved to its package dir.
gen="$work/gopath/src/execdriver.invalid/gen"
# The well-known types as golang/protobuf 1.3 ships them (protoc's own files name the
# newer module, which Debian's GOPATH tree does not have).
imports="Mnomad/hclspec.proto=execdriver.invalid/gen/hclspec,Mnomad/structs.proto=execdriver.invalid/gen/structs"
imports="$imports,Mgoogle/protobuf/duration.proto=github.com/golang/protobuf/ptypes/duration"
imports="$imports,Mgoogle/protobuf/timestamp.proto=github.com/golang/protobuf/ptypes/timestamp"
for pair in hclspec:hclspec structs:structs base:base driver:drivers; do
    file="${pair%%:*}"
    pkg="${pair##*:}"
    scratch="$work/protoc-$pkg"
    mkdir -p "$scratch" "$gen/$pkg"
    protoc -I "$proto_dir" -I /usr/include \
        --go_out="plugins=grpc,import_path=execdriver.invalid/gen/$pkg,$imports:$scratch" \
        "$proto_dir/nomad/$file.proto"
    mv "$scratch/nomad/$file.pb.go" "$gen/$pkg/"
done

echo "== building the harness"
src="$work/gopath/src/execdriver.invalid/acceptance"
mkdir -p "$src"
cp "$here"/*.go "$src/"
(cd "$src" && go vet . && go build -o "$work/acceptance" .)

echo "== running the harness against $plugin"
"$work/acceptance" -plugin "$plugin" -work "$work"
