#!/usr/bin/env bash
# Builds the upstream e2e suite's test binary (e2e.test, `go test -c k8s.io/kubernetes/test/e2e`)
# and its runner (ginkgo, the version k8s.io/kubernetes requires) from the Go modules of
# tests/cluster/build, into $CONF_BIN (~/.cache/bosun/conformance/<version>/bin). Same Go flags as
# the control plane (CGO_ENABLED=0 -trimpath -tags selinux,notest and the version -X flags), so
# the Go build cache is shared with tests/cluster/build/build.sh. Does nothing when built; builds
# into a temporary folder and moves the binaries in at the end, then writes the .complete stamp.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=env.sh
. "$here/env.sh"
if [ -x "$CONF_BIN/e2e.test" ] && [ -x "$CONF_BIN/ginkgo" ] && [ -f "$CONF_BIN/.complete" ]; then
  echo "e2e.test and ginkgo $K8S_VERSION present in $CONF_BIN"
  exit 0
fi
command -v go >/dev/null || { echo "go is not installed" >&2; exit 1; }
mkdir -p "$CONF_CACHE"
tmpbin="$CONF_BIN.tmp.$$"
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
echo "building e2e.test and ginkgo $K8S_VERSION into $CONF_BIN (cold: tens of minutes on 2 cores)"
cd "$here/../cluster/build"
export CGO_ENABLED=0
go test -c -trimpath -tags selinux,notest -ldflags "$ld" -o "$tmpbin/e2e.test" \
  k8s.io/kubernetes/test/e2e
go build -trimpath -ldflags "-s -w" -o "$tmpbin/ginkgo" github.com/onsi/ginkgo/v2/ginkgo
mkdir -p "$CONF_BIN"
mv -f "$tmpbin/e2e.test" "$tmpbin/ginkgo" "$CONF_BIN/"
touch "$CONF_BIN/.complete"
echo "built in $(( $(date +%s) - start ))s: $("$CONF_BIN/ginkgo" version)"
