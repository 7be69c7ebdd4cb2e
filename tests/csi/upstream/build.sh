#!/usr/bin/env bash
# Builds the Kubernetes CSI reference components from their released sources, once per tag:
#   hostpathplugin             csi-driver-host-path
#   csi-node-driver-registrar  node-driver-registrar
#   csi-provisioner            external-provisioner
#   csi-attacher               external-attacher
#   csi-resizer                external-resizer
# Each archive (a `git archive` of the release tag, vendor/ included) is unpacked in a temporary
# folder and built with GOFLAGS=-mod=vendor, so no network is used. Output, per archive:
#   $BOSUN_CACHE/csi/<archive>/bin/<binary>   (static, CGO_ENABLED=0, -trimpath, main.version=<tag>)
#   $BOSUN_CACHE/csi/<archive>/rbac.yaml      (the sidecars' deploy/kubernetes/rbac.yaml)
#   $BOSUN_CACHE/csi/<archive>/.complete      (stamp: the archive's sha256)
#   $BOSUN_CACHE/csi/<archive>/oci/           an OCI image layout, tag <tag>: the binary as
#                                             /usr/local/bin/<binary> on the busybox test image
#                                             (tests/images/build-busybox.sh: sh, mount, umount,
#                                             losetup, fallocate... what hostpathplugin runs)
# A component whose stamp matches its archive is not rebuilt; a build goes to a temporary folder
# that replaces the output only when it is complete. Prints the cache folder (stdout, last line).
#
# Exits 2 when Go is needed and missing.
# Where the archives are: $BOSUN_THIRD_PARTY/kubernetes-csi, else <repo>/../shared/third_party,
# else /work/shared/third_party (the machine's copy, for clones that live elsewhere).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../../.." && pwd)
cache=${BOSUN_CACHE:-$HOME/.cache/bosun}/csi

find_third_party() {
    local d
    for d in ${BOSUN_THIRD_PARTY:+"$BOSUN_THIRD_PARTY"} "$repo/../shared/third_party" /work/shared/third_party; do
        if [ -f "$d/kubernetes-csi/SHA256SUMS" ]; then (cd "$d/kubernetes-csi" && pwd); return 0; fi
    done
    echo "$0: the CSI reference sources are missing: set BOSUN_THIRD_PARTY to the folder that holds" >&2
    echo "  kubernetes-csi/{SHA256SUMS,csi-driver-host-path-*.tar.gz,...} (looked in ${BOSUN_THIRD_PARTY:-<unset>}," >&2
    echo "  $repo/../shared/third_party and /work/shared/third_party)" >&2
    return 1
}
src=$(find_third_party)

# archive stem, main package, binary, rbac (yes/no)
COMPONENTS="
csi-driver-host-path-v1.18.0 ./cmd/hostpathplugin hostpathplugin no
node-driver-registrar-v2.17.0 ./cmd/csi-node-driver-registrar csi-node-driver-registrar no
external-provisioner-v6.2.1 ./cmd/csi-provisioner csi-provisioner yes
external-attacher-v4.12.0 ./cmd/csi-attacher csi-attacher yes
external-resizer-v2.2.1 ./cmd/csi-resizer csi-resizer yes
"
mkdir -p "$cache"
tmp=$(mktemp -d "$cache/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
built=0
while read -r stem pkg bin rbac; do
    [ -n "$stem" ] || continue
    archive="$src/$stem.tar.gz"
    [ -f "$archive" ] || { echo "$0: $archive is missing" >&2; exit 1; }
    want=$(awk -v f="$stem.tar.gz" '$2 == f || $2 == "*" f {print $1}' "$src/SHA256SUMS")
    have=$(sha256sum "$archive" | cut -d' ' -f1)
    [ -n "$want" ] && [ "$want" = "$have" ] || { echo "$0: $archive does not match SHA256SUMS" >&2; exit 1; }
    out="$cache/$stem"
    if [ -x "$out/bin/$bin" ] && [ "$(cat "$out/.complete" 2>/dev/null)" = "$have" ]; then
        continue
    fi
    command -v go >/dev/null || { echo "$0: go is not installed" >&2; exit 2; }
    echo "building $bin from $stem" >&2
    t0=$(date +%s)
    tar xzf "$archive" -C "$tmp"
    next="$tmp/out-$stem"
    mkdir -p "$next/bin"
    (cd "$tmp/$stem" && CGO_ENABLED=0 GOFLAGS=-mod=vendor go build -trimpath \
        -ldflags "-s -w -X main.version=${stem##*-}" -o "$next/bin/$bin" "$pkg")
    [ "$rbac" = yes ] && cp "$tmp/$stem/deploy/kubernetes/rbac.yaml" "$next/rbac.yaml"
    echo "$have" >"$next/.complete"
    rm -rf "$out" "$tmp/$stem"
    mv "$next" "$out"
    built=$((built + 1))
    echo "  $bin: $(( $(date +%s) - t0 ))s" >&2
done <<<"$COMPONENTS"
[ "$built" = 0 ] || echo "built $built component(s) in $(( $(date +%s) - start ))s" >&2

# The images: rebuilt when the binary, the busybox image recipe or busybox itself changed.
recipe="$repo/tests/images/build-busybox.sh"
while read -r stem pkg bin rbac; do
    [ -n "$stem" ] || continue
    out="$cache/$stem"
    stamp=$(cat "$out/bin/$bin" "$recipe" "${BUSYBOX:-/bin/busybox}" | sha256sum | cut -d' ' -f1)
    [ -f "$out/oci/index.json" ] && [ "$(cat "$out/.image" 2>/dev/null)" = "$stamp" ] && continue
    rm -rf "$tmp/oci" "$out/oci" "$out/.image"
    EXTRA_BINS="$out/bin/$bin" bash "$recipe" "$tmp/oci" "${stem##*-}" >/dev/null
    mv "$tmp/oci" "$out/oci"
    echo "$stamp" >"$out/.image"
done <<<"$COMPONENTS"
echo "$cache"
