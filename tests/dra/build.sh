#!/usr/bin/env bash
# Builds the DRA test driver Kubernetes uses in its own e2e tests, from the pinned
# k8s.io/kubernetes Go module (the module of tests/cluster/build): test/e2e/dra/test-driver
# (a DRA kubelet plugin: registers in <root-dir>/plugins_registry, publishes ResourceSlices,
# answers NodePrepareResources with CDI devices whose spec files put env vars into containers).
# Into $HOME/.cache/bosun/dra/<version>/bin; does nothing when built (the .complete stamp).
# Only the Go module proxy is used.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../cluster/env.sh
. "$here/../cluster/env.sh"
DRA_BIN=${DRA_BIN:-$HOME/.cache/bosun/dra/$K8S_VERSION/bin}
if [ -x "$DRA_BIN/dra-test-driver" ] && [ -f "$DRA_BIN/.complete" ]; then
  echo "DRA test driver $K8S_VERSION present in $DRA_BIN"
  exit 0
fi
command -v go >/dev/null || { echo "go is not installed" >&2; exit 1; }
mkdir -p "$(dirname "$DRA_BIN")"
tmpbin="$DRA_BIN.tmp.$$"
rm -rf "$tmpbin"; mkdir -p "$tmpbin"
trap 'rm -rf "$tmpbin"' EXIT
cd "$here/../cluster/build"
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$tmpbin/dra-test-driver" \
  k8s.io/kubernetes/test/e2e/dra/test-driver
mkdir -p "$DRA_BIN"
mv -f "$tmpbin/dra-test-driver" "$DRA_BIN/"
touch "$DRA_BIN/.complete"
echo "built into $DRA_BIN"
