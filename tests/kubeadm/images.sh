#!/usr/bin/env bash
# The images of kubeadm's addons and of flannel, built here (no registry) from the binaries of
# build.sh on the busybox test image (tests/images/build-busybox.sh), each named exactly as its
# consumer asks for it:
#
#   kube-apiserver, kube-controller-manager, kube-scheduler, etcd
#                       kubeadm's static pods               kubeadm config images list
#   kube-proxy          kubeadm's kube-proxy DaemonSet      kubeadm config images list
#   coredns             kubeadm's CoreDNS Deployment        the same, with dns.imageTag: $COREDNS_VERSION
#   flannel             kube-flannel.yml's flanneld and install-cni containers   its image: lines
#   flannel-cni-plugin  kube-flannel.yml's install-cni-plugin init container      its image: lines
#
# CoreDNS: kubeadm at the pinned version wants an older CoreDNS tag than the one built here; the
# image carries the tag of what is in it ($COREDNS_VERSION), so the kubeadm configuration must
# say so (ClusterConfiguration `dns: {imageTag: $COREDNS_VERSION}`; `images.sh refs` prints the
# name kubeadm then asks for). flannel-cni-plugin: kube-flannel.yml names a later build tag of the
# plugin release built here (the binary's --version says which); the name is the manifest's.
#
# What the containers run, from their manifests and sources:
#   kube-proxy  /usr/local/bin/kube-proxy (kubeadm's command); in iptables mode (kubeadm's default)
#               it execs iptables, iptables-save, iptables-restore and the ip6tables ones; its
#               cleanup of another mode's rules execs nft.
#   coredns     /coredns (the Deployment gives only args: the image's Entrypoint), static.
#   flannel     /opt/bin/flanneld (Entrypoint too) and /opt/bin/install-conf (init container);
#               flanneld execs iptables, iptables-restore (ip6tables* with IPv6) or, with
#               EnableNFTables in its net-conf, nft.
#   flannel-cni-plugin  `cp -f /flannel /opt/cni/bin/flannel` (busybox's cp).
# The iptables of kube-proxy and flannel are the host's (Debian's xtables-<backend>-multi with its
# iptables*/ip6tables* names, its extensions, nft, every library ldd lists and the loader), with the
# backend the host's iptables uses (`iptables -V`: nf_tables -> nft, else legacy; IPTABLES_BACKEND
# overrides): the rules the pods write must land in the tables the host's other users read.
#
# Each layout lives in $IMAGES_CACHE/<name>-<version>[-<backend>]/oci with its name in `ref`,
# built through a temporary folder and stamped `.complete` with a hash of everything that went into
# it (binaries, libraries, these scripts, busybox), so it is rebuilt only when one of them changed.
#
# Usage:
#   images.sh [build]        build what is missing; print "<ref> <layout>" per image
#   images.sh refs           the same, the refs only
#   images.sh import ARGS... build what is missing, then `bosun image import <layout> <ref> ARGS...`
#                            for each (ARGS: bosun's --data-dir/--run-dir/... as init.sh passes
#                            them; bosun is $BOSUN_BIN, default $CARGO_TARGET_DIR/debug/bosun)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=env.sh
. "$here/env.sh"
IMAGES_CACHE=${IMAGES_CACHE:-$HOME/.cache/bosun/images/kubeadm}
recipe=$root/tests/images/build-busybox.sh
log() { echo "images.sh: $*" >&2; }
die() { log "$*"; exit 1; }

mode=${1:-build}
[ $# -gt 0 ] && shift
case $mode in build | refs | import) ;; *) die "usage: $0 [build|refs|import BOSUN_ARGS...]" ;; esac

# (the control plane's binaries too: its images are built here)
"$root/tests/cluster/build/build.sh" >&2
"$here/build.sh" kubeadm kube-proxy coredns flannel flannel-cni >&2

# The iptables backend: the host's (decide first, then act).
backend_of() { # `iptables -V` output -> nft|legacy
  case $1 in *"(nf_tables)"*) echo nft ;; *) echo legacy ;; esac
}
if [ -z "${IPTABLES_BACKEND:-}" ]; then
  command -v iptables >/dev/null || die "iptables is not installed on this host (apt-get install iptables)"
  IPTABLES_BACKEND=$(backend_of "$(iptables -V)")
fi
case $IPTABLES_BACKEND in nft | legacy) ;; *) die "IPTABLES_BACKEND must be nft or legacy" ;; esac

# The refs, from their consumers.
work=$(mktemp -d /tmp/bosun-images.XXXXXX)
trap 'rm -rf "$work"' EXIT
cat >"$work/kubeadm.yaml" <<EOF
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: $K8S_VERSION
dns:
  imageTag: $COREDNS_VERSION
EOF
"$KUBEADM_BIN/kubeadm" config images list --config "$work/kubeadm.yaml" >"$work/kubeadm-images.txt" 2>"$work/kubeadm.err" ||
  die "kubeadm config images list failed: $(cat "$work/kubeadm.err")"
one() { # FILE PATTERN: the one line of FILE matching PATTERN
  local hits; hits=$(grep -E "$2" "$1" | sort -u)
  [ "$(printf '%s\n' "$hits" | grep -c .)" = 1 ] || die "expected one image matching $2 in $1, got: $hits"
  echo "$hits"
}
ref_apiserver=$(one "$work/kubeadm-images.txt" '/kube-apiserver:')
ref_cm=$(one "$work/kubeadm-images.txt" '/kube-controller-manager:')
ref_scheduler=$(one "$work/kubeadm-images.txt" '/kube-scheduler:')
ref_etcd=$(one "$work/kubeadm-images.txt" '/etcd:')
ref_proxy=$(one "$work/kubeadm-images.txt" '/kube-proxy:')
ref_dns=$(one "$work/kubeadm-images.txt" '/coredns:')
[ "${ref_proxy##*:}" = "$K8S_VERSION" ] || die "kubeadm wants $ref_proxy, built is $K8S_VERSION"
[ "${ref_dns##*:}" = "$COREDNS_VERSION" ] || die "kubeadm wants $ref_dns, built is $COREDNS_VERSION"
sed -n 's/^ *image: *//p' "$FLANNEL_BIN/kube-flannel.yml" | tr -d '"'"'" >"$work/flannel-images.txt"
ref_flannel=$(one "$work/flannel-images.txt" '/flannel:')
ref_cni=$(one "$work/flannel-images.txt" '/flannel-cni-plugin:')
[ "${ref_flannel##*:}" = "$FLANNEL_VERSION" ] || die "kube-flannel.yml wants $ref_flannel, built is $FLANNEL_VERSION"
case ${ref_cni##*:} in
  "${FLANNEL_CNI_VERSION%-flannel*}"-flannel*) ;;
  *) die "kube-flannel.yml wants $ref_cni, built is the $FLANNEL_CNI_VERSION release" ;;
esac

# netfilter DIR: the host's iptables (backend $IPTABLES_BACKEND) and nft, with what they load.
netfilter() {
  local dir=$1 multi=xtables-$IPTABLES_BACKEND-multi name
  local src; src=$(command -v "$multi" || true)
  [ -n "$src" ] || die "$multi is not installed on this host (apt-get install iptables)"
  mkdir -p "$dir/usr/sbin"
  install -m 0755 "$src" "$dir/usr/sbin/$multi"
  for name in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
    ln -sfn "$multi" "$dir/usr/sbin/$name"
    ln -sfn "$multi" "$dir/usr/sbin/${name/tables/tables-$IPTABLES_BACKEND}"
  done
  local bins=("$src")
  local nft; nft=$(command -v nft || true)
  if [ -n "$nft" ]; then
    install -m 0755 "$nft" "$dir/usr/sbin/nft"
    bins+=("$nft")
  else
    log "note: nft is not installed on this host; the images have none (kube-proxy's cleanup of nftables rules and flannel's EnableNFTables need it)"
  fi
  # the extensions libxtables loads (-m comment, -j MASQUERADE, ...), from where it looks for them
  local libxt; libxt=$(ldd "$src" | awk '$1 ~ /^libxtables\.so/ {print $3}')
  local extdir; extdir=$(strings -n 8 "$libxt" | awk '/^\/.*\/xtables$/ && !n++')
  [ -d "$extdir" ] || die "no xtables extension folder ($extdir) for $libxt"
  mkdir -p "$dir$extdir"
  cp -L "$extdir"/*.so "$dir$extdir/"
  bins+=("$extdir"/*.so)
  # every library ldd lists, at the path it lists, and the loader
  local lib
  for lib in $(ldd "${bins[@]}" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// && $2 ~ /^\(/ {print $1}' | sort -u); do
    mkdir -p "$dir$(dirname "$lib")"
    cp -L "$lib" "$dir$lib"
  done
  chmod -R u+rwX,go+rX,go-w "$dir"
}

# image NAME VERSION REF ENTRYPOINT TREE-FUNCTION: the layout of NAME in the cache, built when
# missing or stale; prints "REF LAYOUT".
image() {
  local name=$1 version=$2 ref=$3 entrypoint=$4 fill=$5
  local dest=$IMAGES_CACHE/$name-$version
  local tree=$work/$name
  mkdir -p "$tree"
  # (FILL may carry arguments before the folder: "fill_control_plane etcd")
  # shellcheck disable=SC2086
  $fill "$tree"
  [ -d "$tree/usr/sbin" ] && dest=$dest-$IPTABLES_BACKEND
  local stamp
  stamp=$({
    echo "$ref $entrypoint"
    (cd "$tree" && tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -cf - .)
    cat "$recipe" "$0" "${BUSYBOX:-/bin/busybox}"
  } | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$dest/.complete" 2>/dev/null)" = "$stamp" ]; then
    rm -rf "$tree"
    echo "$ref $dest/oci"
    return 0
  fi
  local t0; t0=$(date +%s)
  local next=$dest.tmp.$$
  rm -rf "$next"; mkdir -p "$next"
  EXTRA_ROOT=$tree IMAGE_ENTRYPOINT=$entrypoint bash "$recipe" "$next/oci" "$version" >/dev/null ||
    { rm -rf "$next"; die "building the $name image failed"; }
  echo "$ref" >"$next/ref"
  echo "$stamp" >"$next/.complete"
  rm -rf "$dest" "$tree"
  mv "$next" "$dest"
  log "$name image ($ref) built in $(( $(date +%s) - t0 ))s into $dest/oci"
  echo "$ref $dest/oci"
}

# The control plane's static pods (kubeadm's manifests run the binary by name, from PATH):
# the pinned binaries of tests/cluster/build on the busybox base.
fill_control_plane() {
  mkdir -p "$2/usr/local/bin"
  install -m 0755 "$K8S_BIN/$1" "$2/usr/local/bin/$1"
}
fill_proxy() {
  netfilter "$1"
  mkdir -p "$1/usr/local/bin"
  install -m 0755 "$KUBE_PROXY_BIN/kube-proxy" "$1/usr/local/bin/kube-proxy"
}
fill_dns() { install -m 0755 "$COREDNS_BIN/coredns" "$1/coredns"; }
fill_flannel() {
  netfilter "$1"
  mkdir -p "$1/opt/bin"
  install -m 0755 "$FLANNEL_BIN/flanneld" "$FLANNEL_BIN/install-conf" "$1/opt/bin/"
}
fill_cni() { install -m 0755 "$FLANNEL_CNI_BIN/flannel" "$1/flannel"; }

umask 022
mkdir -p "$IMAGES_CACHE"
{
  image kube-apiserver "$K8S_VERSION" "$ref_apiserver" null "fill_control_plane kube-apiserver"
  image kube-controller-manager "$K8S_VERSION" "$ref_cm" null "fill_control_plane kube-controller-manager"
  image kube-scheduler "$K8S_VERSION" "$ref_scheduler" null "fill_control_plane kube-scheduler"
  image etcd "${ref_etcd##*:}" "$ref_etcd" null "fill_control_plane etcd"
  image kube-proxy "$K8S_VERSION" "$ref_proxy" null fill_proxy
  image coredns "$COREDNS_VERSION" "$ref_dns" '["/coredns"]' fill_dns
  image flannel "$FLANNEL_VERSION" "$ref_flannel" '["/opt/bin/flanneld"]' fill_flannel
  image flannel-cni-plugin "$FLANNEL_CNI_VERSION" "$ref_cni" null fill_cni
} >"$work/images.txt"

case $mode in
  build) cat "$work/images.txt" ;;
  refs) cut -d' ' -f1 "$work/images.txt" ;;
  import)
    : "${CARGO_TARGET_DIR:=$HOME/.cache/bosun/target}"
    BOSUN=${BOSUN_BIN:-$CARGO_TARGET_DIR/debug/bosun}
    [ -x "$BOSUN" ] || die "$BOSUN is not built (cargo build -p bosun)"
    while read -r ref layout; do
      "$BOSUN" image import "$layout" "$ref" "$@" >&2 || die "importing $ref failed"
      echo "$ref"
    done <"$work/images.txt"
    ;;
esac
