#!/usr/bin/env bash
# Builds the benchmark's peer node (issue 6 item 4): the kubelet and containerd, from their Go
# modules, through the Go module proxy only. Cached by version; does nothing when present.
#
#   bench/peer-build.sh            build what is missing, print the two bin folders
#   bench/peer-build.sh --check    exit 0 if everything is built, 1 otherwise (builds nothing)
#
# - kubelet: k8s.io/kubernetes/cmd/kubelet from the control plane's own wrapper module
#   (tests/cluster/build: the same go.mod, k8s.io/kubernetes $K8S_VERSION and its 33 staging
#   replaces; `tool k8s.io/kubernetes/cmd/kubelet` is listed there so go.sum covers it), the same
#   flags as the control plane (CGO_ENABLED=0, -tags selinux,notest, version ldflags), into
#   $K8S_BIN/kubelet, beside the control plane's binaries. tests/cluster/build/build.sh does
#   not build it, so the control plane build (CI) does not get slower.
# - containerd $CONTAINERD_VERSION: containerd, ctr and containerd-shim-runc-v2, built inside
#   the module as the proxy serves it (its own go.mod and go.sum, read-only), with upstream's
#   static tags (osusergo netgo; no btrfs/devmapper/zfs snapshotters, the shim with no_grpc),
#   CGO_ENABLED=0, into ~/.cache/bosun/containerd/<version>/bin. runc is Debian's (/usr/sbin/runc).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=../tests/cluster/env.sh
. "$root/tests/cluster/env.sh"
CONTAINERD_VERSION=${CONTAINERD_VERSION:-v2.4.2}
CONTAINERD_BIN=${CONTAINERD_BIN:-$HOME/.cache/bosun/containerd/$CONTAINERD_VERSION/bin}

kubelet_ok() { [ -x "$K8S_BIN/kubelet" ]; }
containerd_ok() {
    local b
    for b in containerd ctr containerd-shim-runc-v2; do [ -x "$CONTAINERD_BIN/$b" ] || return 1; done
    [ -f "$CONTAINERD_BIN/.complete" ]
}
if [ "${1:-}" = --check ]; then kubelet_ok && containerd_ok; exit; fi
command -v go >/dev/null || { echo "peer-build: go is not installed" >&2; exit 1; }

if ! kubelet_ok; then
    ver=${K8S_VERSION#v}
    major=${ver%%.*}; rest=${ver#*.}; minor=${rest%%.*}
    ld=""
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ld+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
        ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
    done
    ld+=" -s -w"
    mkdir -p "$K8S_BIN"
    start=$(date +%s)
    echo "peer-build: kubelet $K8S_VERSION into $K8S_BIN (shares the control plane's Go build cache)" >&2
    (cd "$root/tests/cluster/build" &&
        CGO_ENABLED=0 GOFLAGS=-mod=readonly go build -trimpath -tags selinux,notest -ldflags "$ld" \
            -o "$K8S_BIN/kubelet.tmp.$$" k8s.io/kubernetes/cmd/kubelet)
    mv -f "$K8S_BIN/kubelet.tmp.$$" "$K8S_BIN/kubelet"
    echo "peer-build: kubelet built in $(($(date +%s) - start)) s: $("$K8S_BIN/kubelet" --version)" >&2
fi

if ! containerd_ok; then
    start=$(date +%s)
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    (cd "$tmp" && go mod init peer >/dev/null 2>&1)
    dir=$(cd "$tmp" && GOFLAGS=-mod=mod go mod download -json "github.com/containerd/containerd/v2@$CONTAINERD_VERSION" | jq -r .Dir)
    [ -d "$dir" ] || { echo "peer-build: go mod download of containerd $CONTAINERD_VERSION failed" >&2; exit 1; }
    echo "peer-build: containerd $CONTAINERD_VERSION from $dir into $CONTAINERD_BIN" >&2
    P=github.com/containerd/containerd/v2
    ld="-s -w -X $P/version.Version=$CONTAINERD_VERSION -X $P/version.Package=$P"
    out=$CONTAINERD_BIN.tmp.$$
    rm -rf "$out"; mkdir -p "$out"
    (cd "$dir" &&
        CGO_ENABLED=0 GOFLAGS=-mod=readonly go build -trimpath \
            -tags "urfave_cli_no_docs no_btrfs no_devmapper no_zfs osusergo netgo" -ldflags "$ld" \
            -o "$out/" ./cmd/containerd ./cmd/ctr &&
        CGO_ENABLED=0 GOFLAGS=-mod=readonly go build -trimpath \
            -tags "urfave_cli_no_docs osusergo netgo no_grpc" -ldflags "$ld" \
            -o "$out/" ./cmd/containerd-shim-runc-v2)
    mkdir -p "$CONTAINERD_BIN"
    for b in containerd ctr containerd-shim-runc-v2; do mv -f "$out/$b" "$CONTAINERD_BIN/$b"; done
    rm -rf "$out"
    touch "$CONTAINERD_BIN/.complete"
    echo "peer-build: containerd built in $(($(date +%s) - start)) s: $("$CONTAINERD_BIN/containerd" --version)" >&2
fi
echo "$K8S_BIN"
echo "$CONTAINERD_BIN"
