#!/usr/bin/env bash
# The peer node's sandbox image, built locally (nothing may be pulled from outside): an OCI image
# layout with one deterministic layer holding /pause (bench/peer/pause.c, `cc -Os -static`),
# Entrypoint ["/pause"], user 65535:65535 like registry.k8s.io/pause.
#
#   bench/peer/build-pause-image.sh OUTDIR [TAG]      (prints the manifest digest)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: $0 OUTDIR [TAG]}
tag=${2:-latest}
cc=${CC:-cc}
command -v "$cc" >/dev/null || { echo "$0: a C compiler is required ($cc)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/rootfs"
"$cc" -Os -static -s -o "$work/rootfs/pause" "$here/pause.c"
chmod 0755 "$work/rootfs" "$work/rootfs/pause"
tar -C "$work/rootfs" --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 --format=gnu \
    -cf "$work/layer.tar" pause
gzip -n -9 -c "$work/layer.tar" >"$work/layer.tar.gz"
sha() { sha256sum "$1" | cut -d' ' -f1; }
mkdir -p "$out/blobs/sha256"
put() { local h; h=$(sha "$1"); cp "$1" "$out/blobs/sha256/$h"; echo "$h"; }
arch=$(go env GOARCH 2>/dev/null || dpkg --print-architecture)
diff_id=$(sha "$work/layer.tar")
layer=$(put "$work/layer.tar.gz")
jq -cjn --arg arch "$arch" --arg diff "sha256:$diff_id" '{
    created: "1970-01-01T00:00:00Z", architecture: $arch, os: "linux",
    config: { Entrypoint: ["/pause"], User: "65535:65535" },
    rootfs: { type: "layers", diff_ids: [$diff] },
    history: [{ created: "1970-01-01T00:00:00Z", created_by: "bench/peer/build-pause-image.sh" }]
}' >"$work/config.json"
config=$(put "$work/config.json")
jq -cjn --arg c "sha256:$config" --argjson cs "$(stat -c %s "$work/config.json")" \
    --arg l "sha256:$layer" --argjson ls "$(stat -c %s "$work/layer.tar.gz")" '{
    schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
    config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: $c, size: $cs },
    layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: $l, size: $ls }]
}' >"$work/manifest.json"
manifest=$(put "$work/manifest.json")
printf '{"imageLayoutVersion":"1.0.0"}' >"$out/oci-layout"
jq -cjn --arg m "sha256:$manifest" --argjson ms "$(stat -c %s "$work/manifest.json")" --arg tag "$tag" '{
    schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json",
    manifests: [{ mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $m, size: $ms,
                  annotations: { "org.opencontainers.image.ref.name": $tag } }]
}' >"$out/index.json"
echo "sha256:$manifest"
