#!/usr/bin/env bash
# Builds the tools of the kubeadm test at their pinned versions (tests/kubeadm/env.sh), each into
# its own folder under $TOOLS_CACHE, through a temporary folder and a `.complete` stamp, so a
# finished tool is never built again and an interrupted build leaves nothing half done:
#
#   kubeadm     k8s.io/kubernetes/cmd/kubeadm, from the wrapper module of tests/cluster/build with
#               the same flags as the control plane (so Go's build cache is shared)
#   kube-proxy  k8s.io/kubernetes/cmd/kube-proxy, the same way (the addon's image, images.sh)
#   crictl      sigs.k8s.io/cri-tools/cmd/crictl (Go module proxy)
#   coredns     github.com/coredns/coredns (Go module proxy)
#   flanneld    github.com/flannel-io/flannel and its cmd/install_conf (Go module proxy; without
#               the tencentvpc backend, whose SDK the proxy refuses), with upstream's
#               Documentation/kube-flannel.yml
#   flannel-cni flannel's CNI plugin (github.com/flannel-io/cni-plugin), from its released source
#               in $BOSUN_THIRD_PARTY/flannel-io (default <repo>/../shared/third_party; checked
#               against SHA256SUMS there); its dependencies come from the Go module proxy
#
# Usage: build.sh [kubeadm|kube-proxy|crictl|coredns|flannel|flannel-cni]...   (default: all)
# Only the Go module proxy (and the one source archive above) is used.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
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
  # not under `if`, which would switch errexit off inside the builder
  local rc=0
  set +e; (set -e; "$@"); rc=$?; set -e
  if [ "$rc" != 0 ]; then chmod -R u+w "$out"; rm -rf "$out"; echo "$0: building $name failed" >&2; return 1; fi
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

b_k8s() { # CMD: k8s.io/kubernetes/cmd/CMD as tests/cluster/build/build.sh builds the control plane
  (cd "$here/../cluster/build" &&
    CGO_ENABLED=0 go build -trimpath -tags selinux,notest -ldflags "$k8s_ld" -o "$out/" \
      "k8s.io/kubernetes/cmd/$1")
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
# flanneld and install-conf as upstream's images/Dockerfile and Makefile build them (flanneld with
# cgo, linked static, on amd64, where its UDP backend needs it; without elsewhere; upstream links
# musl, here glibc, so net and os/user stay pure Go: netgo, osusergo), from the module's source in
# its own go.mod, minus one import: the Go module proxy refuses the Tencent Cloud SDK, the only dependency of the
# tencentvpc backend, so main.go's blank import of that backend is dropped (checked to be there).
b_flannel() {
  local dir; dir=$(cd "$out" && go mod download -json "github.com/flannel-io/flannel@$FLANNEL_VERSION" | jq -r .Dir)
  [ -f "$dir/main.go" ]
  cp -r "$dir" "$out/src"
  chmod -R u+w "$out/src"
  grep -q '^\s*_ "github.com/flannel-io/flannel/pkg/backend/tencentvpc"$' "$out/src/main.go"
  sed -i '/^\s*_ "github.com\/flannel-io\/flannel\/pkg\/backend\/tencentvpc"$/d' "$out/src/main.go"
  local cgo=0; [ "$(go env GOARCH)" = amd64 ] && cgo=1
  (cd "$out/src" &&
    CGO_ENABLED=$cgo go build -trimpath -tags netgo,osusergo -ldflags "-s -w \
      -X github.com/flannel-io/flannel/pkg/version.Version=$FLANNEL_VERSION -extldflags -static" \
      -o "$out/flanneld" . &&
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/install-conf" ./cmd/install_conf)
  # upstream's DaemonSet, as a kubeadm user applies it
  install -m 0644 "$dir/Documentation/kube-flannel.yml" "$out/kube-flannel.yml"
  rm -rf "$out/src"
}
# The plugin as its scripts/build_flannel.sh builds it (static, same tags and version variables),
# without cgo (the upstream script enables it on amd64 only for its static link).
b_flannel_cni() {
  local third=${BOSUN_THIRD_PARTY:-$root/../shared/third_party}/flannel-io
  local tgz=$third/cni-plugin-$FLANNEL_CNI_VERSION.tar.gz
  (cd "$third" && sha256sum --quiet -c SHA256SUMS) || { echo "$0: $tgz does not match its SHA256SUMS" >&2; return 1; }
  # git archive records the tag's commit in the tar's header (read, gzip gets SIGPIPE)
  local commit; commit=$( (gzip -dc "$tgz" || true) | git get-tar-commit-id)
  [ -n "$commit" ] || { echo "$0: no commit id in $tgz" >&2; return 1; }
  mkdir -p "$out/src"
  tar xzf "$tgz" -C "$out/src"
  (cd "$out/src/cni-plugin-$FLANNEL_CNI_VERSION" &&
    CGO_ENABLED=0 go build -trimpath -tags "netgo osusergo no_stage static_build" \
      -ldflags "-s -w -X main.Version=$FLANNEL_CNI_VERSION -X main.Commit=${commit:0:8} -X main.Program=flannel" \
      -o "$out/flannel" .)
  rm -rf "$out/src"
}
want=${*:-kubeadm kube-proxy crictl coredns flannel flannel-cni}
for t in $want; do
  case $t in
    kubeadm) build kubeadm "$KUBEADM_BIN" b_k8s kubeadm ;;
    kube-proxy) build kube-proxy "$KUBE_PROXY_BIN" b_k8s kube-proxy ;;
    crictl) build crictl "$CRICTL_BIN" b_crictl ;;
    coredns) build coredns "$COREDNS_BIN" b_coredns ;;
    flannel) build flanneld "$FLANNEL_BIN" b_flannel ;;
    flannel-cni) build flannel-cni "$FLANNEL_CNI_BIN" b_flannel_cni ;;
    *) echo "$0: unknown tool $t" >&2; exit 2 ;;
  esac
done
