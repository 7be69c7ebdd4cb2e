#!/usr/bin/env bash
# Builds the CSI test peers into $HOME/.cache/bosun/csi/<version>/bin and prints that folder:
#   csi-testdriver   (testdriver/: "driver" mode stands in for csi-driver-host-path's
#                     hostpathplugin, "registrar" mode for node-driver-registrar)
# <version> is a hash of testdriver/'s go.mod, go.sum and sources, so an edit rebuilds and an
# unchanged tree is a cache hit. Idempotent; only the Go module proxy is used.
#
# Why not the real hostpathplugin and csi-node-driver-registrar: the Go module proxy this
# project may use refuses github.com/kubernetes-csi/csi-driver-host-path and
# github.com/kubernetes-csi/node-driver-registrar ("403 Forbidden: This module version is not
# available", every version). When they become available, build them here the same way
# (go build of .../cmd/hostpathplugin and .../cmd/csi-node-driver-registrar into the same
# folder); the test looks for them first.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
command -v go >/dev/null || { echo "go is not installed" >&2; exit 2; }

src="$here/testdriver"
version=$(cat "$src/go.mod" "$src/go.sum" "$src"/*.go | sha256sum | cut -c1-16)
bin="$HOME/.cache/bosun/csi/$version/bin"
if [ -x "$bin/csi-testdriver" ] && [ -f "$bin/.complete" ]; then
  echo "$bin"
  exit 0
fi
mkdir -p "$bin"
tmp="$bin.tmp.$$"
rm -rf "$tmp"; mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
echo "building csi-testdriver $version into $bin" >&2
(cd "$src" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$tmp/csi-testdriver" .)
mv -f "$tmp/csi-testdriver" "$bin/csi-testdriver"
touch "$bin/.complete"
echo "built in $(( $(date +%s) - start ))s" >&2
echo "$bin"
