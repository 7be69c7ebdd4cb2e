#!/usr/bin/env bash
# Builds the test images the [NodeConformance] specs use, as OCI layouts under $CONF_IMAGES, with
# the names and tags of test/utils/image/manifest.go, from the module's sources and Debian's
# packages (no other download):
#
#   busybox:1.37.0-1   Debian's busybox 1.35 built from its source package (apt-get source) with
#                      Debian's FEATURE_DI_ENV_HACK, so `sh -c env` keeps names like `data-1` as
#                      upstream's busybox 1.37 does, and without Debian's FEATURE_SH_STANDALONE
#                      and FEATURE_PREFER_APPLETS (off in busybox's defconfig: programs come from
#                      PATH); every applet a symlink in /bin, the passwd and group of the docker
#                      library image, Cmd sh
#   agnhost:2.66.1     test/images/agnhost built from the module (also tagged 2.55 for AgnhostPrev)
#                      on the busybox tree, with bash and curl (and their libraries) from the host,
#                      Debian's netcat-openbsd as /usr/bin/nc (alpine's agnhost has it: its UDP
#                      `nc -w 1 -u` waits for the answer, busybox's does not), porter's
#                      certificate, the image's user and group; Entrypoint /agnhost
#   pause:3.10.2       build/pause/linux/pause.c, static, user 65535
#   nginx:1.15-4       Debian's nginx (apt-get download, not installed) with its libraries on the
#   nginx:1.27-0         busybox tree, serving the default page on port 80 in the foreground
#   nonewprivs:1.4     test/images/nonewprivs (nnp) setuid root on the busybox tree
#   nonroot:1.5        the busybox tree with user 1234
#   glibc-dns-testing:2.0.0  the busybox tree with glibc's `hostname` (Debian's, with its
#                      libraries) and an nsswitch.conf, so `hostname -f` resolves through
#                      /etc/hosts as on upstream's debian:bookworm-slim (no dig, no coredns)
#
# Each layout is rebuilt when this script changes (the stamp holds its hash). `images.sh push`
# copies them to the local registry $CONF_REGISTRY under the upstream paths (needs it running).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=env.sh
. "$here/env.sh"
stamp="$CONF_IMAGES/.complete"
want=$(cat "$0" "$here/env.sh" | sha256sum | cut -d' ' -f1)

# name:tag, the registry path of the upstream image (the registry list's prefix) and the layout.
IMAGES="e2e-test-images/busybox:1.37.0-1 e2e-test-images/agnhost:2.66.1 e2e-test-images/agnhost:2.55
pause:3.10.2 e2e-test-images/nginx:1.15-4 e2e-test-images/nginx:1.27-0
e2e-test-images/nonewprivs:1.4 e2e-test-images/nonroot:1.5 e2e-test-images/glibc-dns-testing:2.0.0"
layout() { local n=${1%:*}; echo "$CONF_IMAGES/${n//\//_}"; }

push() {
  for ref in $IMAGES; do
    skopeo copy --quiet --dest-tls-verify=false "oci:$(layout "$ref"):${ref##*:}" \
      "docker://$CONF_REGISTRY/$ref"
  done
  echo "pushed $(wc -w <<<"$IMAGES") images to $CONF_REGISTRY"
}
if [ "${1:-}" = push ]; then push; exit 0; fi

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "test images present in $CONF_IMAGES"; exit 0
fi
for tool in tar gzip sha256sum jq gcc make skopeo apt-get dpkg-source ldd; do
  command -v "$tool" >/dev/null || { echo "$0: $tool is required" >&2; exit 1; }
done
case "$(dpkg --print-architecture)" in
  amd64) arch=amd64 ;; arm64) arch=arm64 ;; ppc64el) arch=ppc64le ;; s390x) arch=s390x ;;
  *) echo "$0: no test images for $(dpkg --print-architecture)" >&2; exit 1 ;;
esac
start=$(date +%s)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
umask 022
rm -rf "$CONF_IMAGES"; mkdir -p "$CONF_IMAGES"

# --- OCI layout from a root folder (deterministic tar: sorted, owner 0, mtime 0) -----------------
# oci ROOTFS REF CONFIG: CONFIG is the image config's `config` object (Env, Cmd, User...).
oci() {
  local root=$1 ref=$2 cfg=$3 out tag layer diff lhex lsize chex csize mhex msize
  out=$(layout "$ref"); tag=${ref##*:}
  layer=$work/layer.tar
  (cd "$root" && LC_ALL=C find . -mindepth 1 -maxdepth 1 -printf '%P\n' | LC_ALL=C sort >"$work/top" &&
    tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 --format=gnu -cf "$layer" -T "$work/top")
  diff=$(sha256sum "$layer" | cut -d' ' -f1)
  gzip -n -6 -c "$layer" >"$layer.gz"
  mkdir -p "$out/blobs/sha256"
  put() { local h; h=$(sha256sum "$1" | cut -d' ' -f1); cp "$1" "$out/blobs/sha256/$h"; echo "$h"; }
  lhex=$(put "$layer.gz"); lsize=$(stat -c %s "$layer.gz")
  jq -cjn --arg arch "$arch" --arg diff "sha256:$diff" --argjson cfg "$cfg" --arg by "$ref" '{
    created: "1970-01-01T00:00:00Z", architecture: $arch, os: "linux", config: $cfg,
    rootfs: {type: "layers", diff_ids: [$diff]},
    history: [{created: "1970-01-01T00:00:00Z", created_by: ("tests/conformance/images.sh " + $by)}]
  }' >"$work/config.json"
  chex=$(put "$work/config.json"); csize=$(stat -c %s "$work/config.json")
  jq -cjn --arg c "sha256:$chex" --argjson cs "$csize" --arg l "sha256:$lhex" --argjson ls "$lsize" '{
    schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
    config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $c, size: $cs},
    layers: [{mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: $l, size: $ls}]
  }' >"$work/manifest.json"
  mhex=$(put "$work/manifest.json"); msize=$(stat -c %s "$work/manifest.json")
  printf '{"imageLayoutVersion":"1.0.0"}' >"$out/oci-layout"
  [ -f "$out/index.json" ] || printf '{"schemaVersion":2,"manifests":[]}' >"$out/index.json"
  jq -cj --arg m "sha256:$mhex" --argjson ms "$msize" --arg tag "$tag" '{
    schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json",
    manifests: ([.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] != $tag)]
      + [{mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $m, size: $ms,
          annotations: {"org.opencontainers.image.ref.name": $tag}}])
  }' "$out/index.json" >"$work/index.json"
  mv "$work/index.json" "$out/index.json"
  rm -f "$layer" "$layer.gz"
  echo "  $ref $(du -sh "$out" | cut -f1)"
}

# Copies host binaries with the shared libraries ldd lists (and the loader) into ROOTFS.
with_libs() {
  local root=$1; shift
  local f lib
  for f in "$@"; do
    mkdir -p "$root$(dirname "$f")"; cp -L "$f" "$root$f"
    for lib in $(ldd "$f" | awk '/=> \//{print $3} /^\t\/[^ ]+ \(/{print $1}'); do
      [ -e "$root$lib" ] && continue
      mkdir -p "$root$(dirname "$lib")"; cp -L "$lib" "$root$lib"
    done
  done
}

PATH_ENV='PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
gobuild() { # PKG OUT: static, with the flags (and so the build cache) of the other builds
  (cd "$here/../cluster/build" &&
    CGO_ENABLED=0 go build -trimpath -tags selinux,notest -ldflags "-s -w" -o "$2" "$1")
}

# --- busybox from Debian's source package --------------------------------------------------------
echo "busybox: Debian's source package, static, FEATURE_DI_ENV_HACK"
apt=$work/apt
mkdir -p "$apt/parts" "$apt/lists/partial" "$work/bbsrc"
awk '/^Types:/{print "Types: deb-src"; next} {print}' /etc/apt/sources.list.d/debian.sources \
  >"$apt/parts/debian-src.sources" 2>/dev/null || true
[ -s "$apt/parts/debian-src.sources" ] || { echo "$0: no /etc/apt/sources.list.d/debian.sources" >&2; exit 1; }
A=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$apt/parts"
   -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache" -o APT::Sandbox::User=root)
apt-get "${A[@]}" update -qq
# apt checked the files against the signed Release; dpkg-source has no keyring to check the .dsc.
(cd "$work/bbsrc" && apt-get "${A[@]}" source -qq --download-only busybox &&
  dpkg-source -x ./busybox_*.dsc bb >/dev/null 2>&1)
bb=$work/bbsrc/bb
cp "$bb/debian/config/pkg/static" "$bb/.config"
# Debian's rescue-shell settings off, as in busybox's defconfig (the docker library image's):
# ash runs programs from PATH (agnhost's /usr/bin/nc), not its own applets first.
sed -i -e 's/^# CONFIG_FEATURE_DI_ENV_HACK is not set/CONFIG_FEATURE_DI_ENV_HACK=y/' \
  -e 's/^CONFIG_FEATURE_SH_STANDALONE=y/# CONFIG_FEATURE_SH_STANDALONE is not set/' \
  -e 's/^CONFIG_FEATURE_PREFER_APPLETS=y/# CONFIG_FEATURE_PREFER_APPLETS is not set/' "$bb/.config"
(cd "$bb" && { yes "" | make oldconfig >"$work/bb.log" 2>&1 || true; } &&
  make -j"$(nproc)" busybox >>"$work/bb.log" 2>&1) || { tail -20 "$work/bb.log" >&2; exit 1; }
[ "$(env 'data-1=ok' "$bb/busybox" sh -c env | grep -c '^data-1=ok$')" = 1 ] ||
  { echo "$0: the built busybox drops data-1 from the environment" >&2; exit 1; }

base() { # ROOTFS: the busybox tree of the docker library image
  local r=$1 a
  mkdir -p "$r"/{bin,dev,etc,home,proc,root,sys,tmp,usr/sbin,usr/local/bin,var/spool/mail,var/www}
  chmod 1777 "$r/tmp"; chmod 0700 "$r/root"
  install -m 0755 "$bb/busybox" "$r/bin/busybox"
  for a in $("$bb/busybox" --list); do [ "$a" = busybox ] || ln -sf busybox "$r/bin/$a"; done
  cat >"$r/etc/passwd" <<'PW'
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
PW
  cat >"$r/etc/group" <<'GR'
root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
lp:x:7:
mail:x:8:
kmem:x:9:
wheel:x:10:root
cdrom:x:11:
dialout:x:18:
floppy:x:19:
video:x:28:
audio:x:29:
tape:x:32:
www-data:x:33:
operator:x:37:
utmp:x:43:
plugdev:x:46:
staff:x:50:
lock:x:54:
netdev:x:82:
users:x:100:
nogroup:x:65534:
GR
}

echo "building images into $CONF_IMAGES"
base "$work/busybox"
oci "$work/busybox" e2e-test-images/busybox:1.37.0-1 "{\"Env\":[\"$PATH_ENV\"],\"Cmd\":[\"sh\"]}"

# --- agnhost ------------------------------------------------------------------------------------
r=$work/agnhost
base "$r"
gobuild k8s.io/kubernetes/test/images/agnhost "$r/agnhost"
ln -s agnhost "$r/agnhost-2"
mkdir -p "$r/uploads"
cp "$K8S_SRC/test/images/agnhost/porter/localhost.crt" "$K8S_SRC/test/images/agnhost/porter/localhost.key" "$r/"
chmod 0644 "$r/localhost.crt" "$r/localhost.key"
with_libs "$r" "$(command -v bash)" "$(command -v curl)"
# The specs run /bin/bash (alpine's path); on a merged-/usr host `command -v` finds /usr/bin/bash.
[ -e "$r/bin/bash" ] || ln -s "$(command -v bash)" "$r/bin/bash"
(cd "$work" && apt-get download -qq -o APT::Sandbox::User=root netcat-openbsd &&
  dpkg-deb -x netcat-openbsd_*.deb nc-deb)
with_libs "$r" "$work/nc-deb/bin/nc.openbsd"
rm -rf "$r$work"; install -D -m 0755 "$work/nc-deb/bin/nc.openbsd" "$r/usr/bin/nc"
echo 'user-defined-in-image:x:1000:1000::/home/user-defined-in-image:/bin/sh' >>"$r/etc/passwd"
printf '%s\n' 'user-defined-in-image:x:1000:' 'group-defined-in-image:x:50000:user-defined-in-image' >>"$r/etc/group"
mkdir -p "$r/home/user-defined-in-image"
cfg="{\"Env\":[\"$PATH_ENV\"],\"Entrypoint\":[\"/agnhost\"],\"Cmd\":[\"pause\"],\"ExposedPorts\":{\"80/tcp\":{},\"8080/tcp\":{},\"8081/tcp\":{},\"9376/tcp\":{},\"5000/tcp\":{}}}"
oci "$r" e2e-test-images/agnhost:2.66.1 "$cfg"
oci "$r" e2e-test-images/agnhost:2.55 "$cfg"

# --- pause ----------------------------------------------------------------------------------------
mkdir -p "$work/pause"
gcc -Os -Wall -Werror -static -DVERSION=v3.10.2-0 -o "$work/pause/pause" "$K8S_SRC/build/pause/linux/pause.c"
strip "$work/pause/pause"
oci "$work/pause" pause:3.10.2 '{"User":"65535:65535","Entrypoint":["/pause"]}'

# --- nginx ----------------------------------------------------------------------------------------
echo "nginx: Debian's package, unpacked (not installed)"
(cd "$work" && apt-get download -qq -o APT::Sandbox::User=root nginx && dpkg-deb -x nginx_*.deb nginx-deb)
r=$work/nginx
base "$r"
with_libs "$r" "$work/nginx-deb/usr/sbin/nginx"
rm -rf "$r$work"; install -D -m 0755 "$work/nginx-deb/usr/sbin/nginx" "$r/usr/sbin/nginx"
mkdir -p "$r/etc/nginx" "$r/var/log/nginx" "$r/var/cache/nginx" "$r/run" "$r/usr/share/nginx/html"
ln -sf /dev/stdout "$r/var/log/nginx/access.log"; ln -sf /dev/stderr "$r/var/log/nginx/error.log"
echo 'nginx:x:101:101:nginx:/var/cache/nginx:/sbin/nologin' >>"$r/etc/passwd"
echo 'nginx:x:101:nginx' >>"$r/etc/group"
cat >"$r/etc/nginx/nginx.conf" <<'CONF'
user nginx;
worker_processes auto;
error_log /var/log/nginx/error.log notice;
pid /run/nginx.pid;
events { worker_connections 1024; }
http {
    types { text/html html htm; text/css css; application/javascript js; image/jpeg jpg jpeg; }
    default_type application/octet-stream;
    access_log /var/log/nginx/access.log;
    sendfile on;
    keepalive_timeout 65;
    client_body_temp_path /var/cache/nginx/client_temp;
    proxy_temp_path /var/cache/nginx/proxy_temp;
    fastcgi_temp_path /var/cache/nginx/fastcgi_temp;
    uwsgi_temp_path /var/cache/nginx/uwsgi_temp;
    scgi_temp_path /var/cache/nginx/scgi_temp;
    server {
        listen 80;
        listen [::]:80;
        server_name localhost;
        location / { root /usr/share/nginx/html; index index.html index.htm; }
    }
}
CONF
cat >"$r/usr/share/nginx/html/index.html" <<'HTML'
<!DOCTYPE html>
<html>
<head>
<title>Welcome to nginx!</title>
</head>
<body>
<h1>Welcome to nginx!</h1>
</body>
</html>
HTML
cfg="{\"Env\":[\"$PATH_ENV\"],\"Cmd\":[\"nginx\",\"-g\",\"daemon off;\"],\"ExposedPorts\":{\"80/tcp\":{}},\"StopSignal\":\"SIGQUIT\"}"
oci "$r" e2e-test-images/nginx:1.15-4 "$cfg"
oci "$r" e2e-test-images/nginx:1.27-0 "$cfg"

# --- nonewprivs, nonroot ---------------------------------------------------------------------------
r=$work/nonewprivs
base "$r"
gobuild k8s.io/kubernetes/test/images/nonewprivs "$r/usr/local/bin/nnp"
chmod 4755 "$r/usr/local/bin/nnp"
oci "$r" e2e-test-images/nonewprivs:1.4 "{\"Env\":[\"$PATH_ENV\"],\"Cmd\":[\"nnp\"]}"
oci "$work/busybox" e2e-test-images/nonroot:1.5 "{\"Env\":[\"$PATH_ENV\"],\"Cmd\":[\"sh\"],\"User\":\"1234\"}"

# --- glibc-dns-testing ----------------------------------------------------------------------------
r=$work/glibc
base "$r"
rm -f "$r/bin/hostname"
with_libs "$r" /bin/hostname
printf 'passwd: files\ngroup: files\nhosts: files dns\n' >"$r/etc/nsswitch.conf"
oci "$r" e2e-test-images/glibc-dns-testing:2.0.0 "{\"Env\":[\"$PATH_ENV\"],\"Cmd\":[\"sh\"]}"

echo "$want" >"$stamp"
echo "built $(wc -w <<<"$IMAGES") images in $(( $(date +%s) - start ))s"
