#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy, kubectl (from the
# k8s.io/kubernetes Go module) and etcd (go.etcd.io/etcd/server/v3, the version Kubernetes pins)
# into $HOME/.cache/bosun/k8s/<version>/bin. Idempotent: does nothing when they already exist.
# Only the Go module proxy is used; the Go build and module caches make rebuilds cheap.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../env.sh
. "$here/../env.sh"

missing=0
for b in $K8S_BINARIES; do [ -x "$K8S_BIN/$b" ] || missing=1; done
if [ "$missing" = 0 ] && [ -f "$K8S_BIN/.complete" ]; then
  echo "k8s $K8S_VERSION binaries present in $K8S_BIN"
  exit 0
fi

want=$(awk '$1=="k8s.io/kubernetes"&&$2~/^v/{print $2} $1=="require"&&$2=="k8s.io/kubernetes"{print $3}' "$here/go.mod" | head -1)
if [ "$want" != "$K8S_VERSION" ]; then
  echo "build/go.mod pins k8s.io/kubernetes $want, env.sh wants $K8S_VERSION: run build/gen-gomod.sh $K8S_VERSION && (cd build && go mod tidy)" >&2
  exit 1
fi

command -v go >/dev/null || { echo "go is not installed" >&2; exit 1; }
mkdir -p "$K8S_BIN"
tmpbin="$K8S_BIN.tmp.$$"
rm -rf "$tmpbin"; mkdir -p "$tmpbin"
trap 'rm -rf "$tmpbin"' EXIT

ver=${K8S_VERSION#v}
major=${ver%%.*}; rest=${ver#*.}; minor=${rest%%.*}
ld=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ld+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
ld+=" -s -w"

start=$(date +%s)
echo "building k8s $K8S_VERSION and etcd into $K8S_BIN (cold: tens of minutes on 2 cores)"
cd "$here"
CGO_ENABLED=0 go build -trimpath -tags selinux,notest -ldflags "$ld" -o "$tmpbin/" \
  k8s.io/kubernetes/cmd/kube-apiserver \
  k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler \
  k8s.io/kubernetes/cmd/kube-proxy \
  k8s.io/kubernetes/cmd/kubectl
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$tmpbin/etcd" go.etcd.io/etcd/server/v3
for b in $K8S_BINARIES; do mv -f "$tmpbin/$b" "$K8S_BIN/$b"; done
touch "$K8S_BIN/.complete"
echo "built in $(( $(date +%s) - start ))s: $("$K8S_BIN/kubectl" version --client 2>/dev/null | head -1); $("$K8S_BIN/etcd" --version | head -1)"
