#!/usr/bin/env bash
# Builds the device plugin API's drivers Kubernetes uses in its own e2e tests, from the pinned
# k8s.io/kubernetes Go module (the module of tests/cluster/build): the sample device plugin
# (test/images/sample-device-plugin: resource example.com/resource, devices Dev-1 and Dev-2,
# CDI devices with CDI_ENABLED). Into $HOME/.cache/bosun/devices/<version>/bin; does nothing
# when built (the .complete stamp). Only the Go module proxy is used; warm Go caches make it
# ~40 s, a cold build a few minutes on 2 cores.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../cluster/env.sh
. "$here/../cluster/env.sh"
DEV_BIN=${DEV_BIN:-$HOME/.cache/bosun/devices/$K8S_VERSION/bin}
if [ -x "$DEV_BIN/sample-device-plugin" ] && [ -f "$DEV_BIN/.complete" ]; then
  echo "device plugin test drivers $K8S_VERSION present in $DEV_BIN"
  exit 0
fi
command -v go >/dev/null || { echo "go is not installed" >&2; exit 1; }
mkdir -p "$(dirname "$DEV_BIN")"
tmpbin="$DEV_BIN.tmp.$$"
rm -rf "$tmpbin"; mkdir -p "$tmpbin"
trap 'rm -rf "$tmpbin"' EXIT
cd "$here/../cluster/build"
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$tmpbin/sample-device-plugin" \
  k8s.io/kubernetes/test/images/sample-device-plugin
mkdir -p "$DEV_BIN"
mv -f "$tmpbin/sample-device-plugin" "$DEV_BIN/"
touch "$DEV_BIN/.complete"
echo "built into $DEV_BIN"
