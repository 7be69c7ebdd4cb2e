#!/usr/bin/env bash
# Builds a small OCI image layout from the host's busybox-static, without network.
#
#   tests/images/build-busybox.sh OUTDIR [TAG]
#
# One gzip layer: /bin/busybox, a relative symlink for every applet of `busybox --list-full`,
# /etc/passwd (root, app 1000:1000, nobody 65534), /etc/group, /tmp (1777), /root, /dev, /proc,
# /sys. Config: Cmd ["sh"], a default PATH, os linux, the host's architecture. The tar and gzip
# streams are deterministic (sorted names, owner 0, mtime 0, no gzip name or time), so the same
# busybox binary always gives the same digests. Running it again on the same OUTDIR adds or
# replaces TAG (default `latest`) in index.json. EXTRA_BINS (space-separated host paths of static
# binaries) are added as /usr/local/bin/<name> (the cluster tests put kubectl in an image).
# EXTRA_ROOT (a host folder) is copied over the root filesystem last, as it is (its files, modes
# and symlinks; tests/kubeadm/images.sh puts iptables and its libraries there). IMAGE_ENTRYPOINT
# and IMAGE_CMD (JSON arrays) set the config's Entrypoint and Cmd; with IMAGE_ENTRYPOINT alone
# there is no Cmd, as in a Dockerfile with only ENTRYPOINT.
set -euo pipefail

usage() { echo "usage: $0 OUTDIR [TAG]" >&2; exit 2; }
[[ $# -ge 1 && $# -le 2 ]] || usage
out=$1
tag=${2:-latest}
busybox=${BUSYBOX:-/bin/busybox}

for tool in tar gzip sha256sum jq dpkg; do
    command -v "$tool" >/dev/null || { echo "$0: $tool is required" >&2; exit 1; }
done
[[ -x $busybox ]] || { echo "$0: $busybox not found (apt-get install busybox-static)" >&2; exit 1; }

case "$(dpkg --print-architecture)" in
    amd64) arch=amd64 variant= ;;
    arm64) arch=arm64 variant=v8 ;;
    armhf) arch=arm variant=v7 ;;
    armel) arch=arm variant=v5 ;;
    i386) arch=386 variant= ;;
    ppc64el) arch=ppc64le variant= ;;
    s390x) arch=s390x variant= ;;
    riscv64) arch=riscv64 variant= ;;
    mips64el) arch=mips64le variant= ;;
    loong64) arch=loong64 variant= ;;
    *) echo "$0: unknown architecture $(dpkg --print-architecture)" >&2; exit 1 ;;
esac

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
umask 022

mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,dev,proc,sys,tmp,root}
chmod 0755 "$root" "$root"/{bin,sbin,usr,usr/bin,usr/sbin,etc,dev,proc,sys}
chmod 1777 "$root/tmp"
chmod 0700 "$root/root"
install -m 0755 "$busybox" "$root/bin/busybox"
for extra in ${EXTRA_BINS:-}; do
    mkdir -p "$root/usr/local/bin"
    chmod 0755 "$root/usr/local" "$root/usr/local/bin"
    install -m 0755 "$extra" "$root/usr/local/bin/$(basename "$extra")"
done

# A relative symlink per applet: bin/sh -> busybox, usr/bin/env -> ../../bin/busybox.
while IFS= read -r applet; do
    [[ -n $applet && $applet != bin/busybox ]] || continue
    dir=$(dirname "$applet")
    mkdir -p "$root/$dir"
    up=""
    if [[ $dir == . ]]; then
        target=bin/busybox
    elif [[ $dir != bin ]]; then
        depth=$(awk -F/ '{print NF}' <<<"$dir")
        for ((i = 0; i < depth; i++)); do up+="../"; done
        target="${up}bin/busybox"
    else
        target=busybox
    fi
    ln -sfn "$target" "$root/$applet"
done < <("$busybox" --list-full)

if [[ -n ${EXTRA_ROOT:-} ]]; then
    [[ -d $EXTRA_ROOT ]] || { echo "$0: EXTRA_ROOT $EXTRA_ROOT is not a folder" >&2; exit 1; }
    cp -a --no-preserve=ownership "$EXTRA_ROOT/." "$root/"
fi

cat >"$root/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
app:x:1000:1000:app:/tmp:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat >"$root/etc/group" <<'GROUP'
root:x:0:
app:x:1000:
nogroup:x:65534:
GROUP
chmod 0644 "$root/etc/passwd" "$root/etc/group"

# Deterministic layer.
(
    cd "$root"
    LC_ALL=C find . -mindepth 1 -maxdepth 1 -printf '%P\n' | LC_ALL=C sort >"$work/top"
    tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 --format=gnu \
        -cf "$work/layer.tar" -T "$work/top"
)
gzip -n -9 -c "$work/layer.tar" >"$work/layer.tar.gz"

sha() { sha256sum "$1" | cut -d' ' -f1; }
size() { stat -c %s "$1"; }

mkdir -p "$out/blobs/sha256"
put_blob() { # FILE -> prints its hex digest after copying it into the layout
    local hex
    hex=$(sha "$1")
    cp "$1" "$out/blobs/sha256/$hex"
    echo "$hex"
}

diff_id=$(sha "$work/layer.tar")
layer_hex=$(put_blob "$work/layer.tar.gz")
layer_size=$(size "$work/layer.tar.gz")

entrypoint=${IMAGE_ENTRYPOINT:-null}
cmd=${IMAGE_CMD:-}
[[ -n $cmd ]] || { [[ $entrypoint == null ]] && cmd='["sh"]' || cmd=null; }
jq -cjn --arg arch "$arch" --arg variant "$variant" --arg diff "sha256:$diff_id" \
    --argjson entrypoint "$entrypoint" --argjson cmd "$cmd" '{
    created: "1970-01-01T00:00:00Z",
    architecture: $arch,
    os: "linux",
    config: ({
        Env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    } + (if $entrypoint == null then {} else { Entrypoint: $entrypoint } end)
      + (if $cmd == null then {} else { Cmd: $cmd } end)),
    rootfs: { type: "layers", diff_ids: [$diff] },
    history: [{ created: "1970-01-01T00:00:00Z", created_by: "tests/images/build-busybox.sh" }]
} + (if $variant == "" then {} else { variant: $variant } end)' >"$work/config.json"
config_hex=$(put_blob "$work/config.json")
config_size=$(size "$work/config.json")

jq -cjn --arg c "sha256:$config_hex" --argjson cs "$config_size" \
    --arg l "sha256:$layer_hex" --argjson ls "$layer_size" '{
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.manifest.v1+json",
    config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: $c, size: $cs },
    layers: [{ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: $l, size: $ls }]
}' >"$work/manifest.json"
manifest_hex=$(put_blob "$work/manifest.json")
manifest_size=$(size "$work/manifest.json")

printf '{"imageLayoutVersion":"1.0.0"}' >"$out/oci-layout"

# index.json: keep other tags already in OUTDIR, replace this one.
if [[ -f $out/index.json ]]; then
    cp "$out/index.json" "$work/index.old"
else
    printf '{"schemaVersion":2,"manifests":[]}' >"$work/index.old"
fi
jq -cj --arg m "sha256:$manifest_hex" --argjson ms "$manifest_size" --arg tag "$tag" '{
    schemaVersion: 2,
    mediaType: "application/vnd.oci.image.index.v1+json",
    manifests: ([.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] != $tag)]
        + [{
            mediaType: "application/vnd.oci.image.manifest.v1+json",
            digest: $m,
            size: $ms,
            annotations: { "org.opencontainers.image.ref.name": $tag }
        }])
}' "$work/index.old" >"$work/index.json"
mv "$work/index.json" "$out/index.json"

echo "sha256:$manifest_hex"
