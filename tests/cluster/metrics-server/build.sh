#!/usr/bin/env bash
# Builds metrics-server (sigs.k8s.io/metrics-server, the version this wrapper module's go.mod pins)
# into $HOME/.cache/bosun/metrics-server/<version>/metrics-server and prints that path on its
# last line. Idempotent: does nothing when the binary already exists. Only the Go module proxy
# is used.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
ver=$(awk '$1=="sigs.k8s.io/metrics-server"{print $2; exit}' "$here/go.mod")
[ -n "$ver" ] || { echo "go.mod does not pin sigs.k8s.io/metrics-server" >&2; exit 1; }
dir=$HOME/.cache/bosun/metrics-server/$ver
bin=$dir/metrics-server
if [ -x "$bin" ]; then echo "$bin"; exit 0; fi
command -v go >/dev/null || { echo "go is not installed" >&2; exit 1; }
mkdir -p "$dir"
tmp="$bin.tmp.$$"
trap 'rm -f "$tmp"' EXIT
start=$(date +%s)
echo "building metrics-server $ver into $dir" >&2
cd "$here"
CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X k8s.io/client-go/pkg/version.gitVersion=$ver" \
  -o "$tmp" sigs.k8s.io/metrics-server/cmd/metrics-server
mv -f "$tmp" "$bin"
echo "built in $(( $(date +%s) - start ))s" >&2
echo "$bin"
