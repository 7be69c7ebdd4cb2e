#!/usr/bin/env bash
# Builds the tools of the kubeadm test at their pinned versions (tests/kubeadm/env.sh), each into
# its own folder under $TOOLS_CACHE, through a temporary folder and a `.complete` stamp, so a
# finished tool is never built again and an interrupted build leaves nothing half done:
#
#   kubeadm   k8s.io/kubernetes/cmd/kubeadm, from the wrapper module of tests/cluster/build with
#             the same flags as the control plane (so Go's build cache is shared)
#   crictl    sigs.k8s.io/cri-tools/cmd/crictl (Go module proxy)
#   coredns   github.com/coredns/coredns (Go module proxy)
#   flanneld  github.com/flannel-io/flannel (Go module proxy)
#
# Usage: build.sh [kubeadm|crictl|coredns|flannel]...   (default: all)
# Only the Go module proxy is used.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=env.sh
. "$here/env.sh"
command -v go >/dev/null || { echo "$0: go is not installed" >&2; exit 1; }

# build NAME DEST CMD...: runs CMD with $out a temporary folder, then moves it to DEST.
build() {
  local name=$1 dest=$2; shift 2
  if [ -f "$dest/.complete" ]; then echo "$name present in $dest"; return 0; fi
  mkdir -p "$(dirname "$dest")"
  out="$dest.tmp.$$"
  rm -rf "$out"; mkdir -p "$out"
  local start; start=$(date +%s)
  echo "building $name into $dest"
  if ! "$@"; then rm -rf "$out"; echo "$0: building $name failed" >&2; return 1; fi
  touch "$out/.complete"
  rm -rf "$dest"; mv "$out" "$dest"
  echo "$name built in $(( $(date +%s) - start ))s"
}

ver=${K8S_VERSION#v}; major=${ver%%.*}; rest=${ver#*.}; minor=${rest%%.*}
k8s_ld=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  k8s_ld+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  k8s_ld+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
k8s_ld+=" -s -w"

b_kubeadm() {
  (cd "$here/../cluster/build" &&
    CGO_ENABLED=0 go build -trimpath -tags selinux,notest -ldflags "$k8s_ld" -o "$out/" \
      k8s.io/kubernetes/cmd/kubeadm)
}
# go install PKG@VERSION builds in the module's own go.mod, as its release does.
b_install() { # PKG VERSION LDFLAGS
  GOBIN=$out CGO_ENABLED=0 go install -trimpath -ldflags "$3 -s -w" "$1@$2"
}
b_crictl() {
  b_install sigs.k8s.io/cri-tools/cmd/crictl "$CRICTL_VERSION" \
    "-X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION"
}
b_coredns() {
  b_install github.com/coredns/coredns "$COREDNS_VERSION" \
    "-X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION"
}
b_flannel() {
  b_install github.com/flannel-io/flannel "$FLANNEL_VERSION" \
    "-X github.com/flannel-io/flannel/pkg/version.Version=$FLANNEL_VERSION"
  mv "$out/flannel" "$out/flanneld"
  # upstream's DaemonSet, as a kubeadm user applies it
  local dir; dir=$(go mod download -json "github.com/flannel-io/flannel@$FLANNEL_VERSION" | jq -r .Dir)
  cp "$dir/Documentation/kube-flannel.yml" "$out/kube-flannel.yml"
  chmod 0644 "$out/kube-flannel.yml"
}
want=${*:-kubeadm crictl coredns flannel}
for t in $want; do
  case $t in
    kubeadm) build kubeadm "$KUBEADM_BIN" b_kubeadm ;;
    crictl) build crictl "$CRICTL_BIN" b_crictl ;;
    coredns) build coredns "$COREDNS_BIN" b_coredns ;;
    flannel) build flanneld "$FLANNEL_BIN" b_flannel ;;
    *) echo "$0: unknown tool $t" >&2; exit 2 ;;
  esac
done
