#!/usr/bin/env bash
# Builds bosun and the busybox test image, imports the image, and runs bosun standalone on the
# example manifests (copied to /etc/bosun/manifests). bosun keeps running in the background;
# `make down` stops it and removes the pods.
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/setup.sh
source hack/env.sh
# The debug build is the one the tests use (shared, quick to rebuild); packaging/build.sh makes
# the release binary.
cargo build -p bosun
BOSUN="$CARGO_TARGET_DIR/debug/bosun"
install -m 0755 "$BOSUN" /usr/local/bin/bosun
bash tests/images/build-busybox.sh "$BOSUN_CACHE/images/busybox-oci" >/dev/null
bosun image import "$BOSUN_CACHE/images/busybox-oci" busybox
mkdir -p /etc/bosun/manifests
cp examples/*.yaml /etc/bosun/manifests/
if pgrep -f "bosun standalone" >/dev/null; then
  echo "bosun is already running"
else
  nohup bosun standalone --manifests /etc/bosun/manifests >/var/log/bosun.log 2>&1 &
  echo "bosun started (pid $!), log in /var/log/bosun.log"
fi
for _ in $(seq 1 100); do
  running=$(bosun pods --json | jq '[.[] | select(.status.phase == "Running")] | length')
  [ "$running" -ge 2 ] && break
  sleep 0.2
done
bosun pods
echo
node=$(hostname | tr 'A-Z' 'a-z')
echo "--- bosun logs hello-$node"
bosun logs "hello-$node" --tail 5
cat <<MSG

Static pods are named <manifest name>-<node name>, as with the kubelet. Try:
  bosun pods                        # pods, containers, states, restarts, exit codes
  bosun logs hello-$node -f         # follow a container's log (Ctrl-C to stop)
  bosun logs web-$node web --tail 20
  cp examples/hello.yaml /etc/bosun/manifests/hello2.yaml   # and edit: pods follow the folder
  make down                         # remove the pods and stop bosun
MSG
