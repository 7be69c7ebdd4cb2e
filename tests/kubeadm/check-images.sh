#!/usr/bin/env bash
# Runs each image of images.sh for real on bosun standalone (a private node: its own folders,
# cgroup root and image store), as its consumer runs it, and checks what the container printed:
#
#   kube-proxy          privileged + hostNetwork (as kubeadm's DaemonSet): `kube-proxy --version`;
#                       iptables -V / iptables-save / ip6tables-save / iptables-restore --test
#                       (KUBE-style rules with comment, conntrack, statistic, mark and MASQUERADE:
#                       the extensions load and parse; nothing is committed) / nft --version
#   coredns             no command (the image's Entrypoint), args [-version], as the Deployment
#   flannel             `/opt/bin/flanneld --version`; install-conf writing the CNI config into a
#                       hostPath (kube-flannel.yml's install-cni); iptables -V and
#                       `iptables-save -t nat` with only NET_ADMIN and NET_RAW, as kube-flannel runs
#   flannel-cni-plugin  kube-flannel.yml's install-cni-plugin init container (`cp -f /flannel
#                       /opt/cni/bin/flannel`) into a hostPath; the copy must be the built plugin
#                       and answer the CNI VERSION command
#
# Nothing on the host changes (iptables-restore --test commits nothing). Everything is removed
# at the end, also on failure: pods (through bosun), bosun, keepers, mounts, cgroups, the folder.
# Needs root; run it under the privileged lock:
#   flock -w 3600 /tmp/bosun-priv.lock timeout 900 tests/kubeadm/check-images.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=env.sh
. "$here/env.sh"
# shellcheck source=../cluster/lib.sh
. "$here/../cluster/lib.sh"
start=$(date +%s)
log() { echo "check-images: $*" >&2; }
die() { log "FAIL: $*"; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root"
: "${CARGO_TARGET_DIR:=$HOME/.cache/bosun/target}"
BOSUN=${BOSUN_BIN:-$CARGO_TARGET_DIR/debug/bosun}
[ -x "$BOSUN" ] || die "$BOSUN is not built (cargo build -p bosun)"

tmp=$(mktemp -d /tmp/bosun-addons-check.XXXXXX)
RUN=$tmp/run
CG=/bosun-addons-check-$$
NODE=node1
common=(--root-dir "$tmp/root" --run-dir "$RUN" --data-dir "$tmp/data" --pod-logs-dir "$tmp/pod-logs"
  --container-logs-dir "$tmp/container-logs" --cgroup-root "$CG" --hostname-override "$NODE"
  --cni-conf-dir "$tmp/cni")
bosun_pid=
cleanup() {
  local rc=$?
  set +e
  trap - ERR
  log "cleaning up (rc=$rc)"
  if [ -n "$bosun_pid" ] && kill -0 "$bosun_pid" 2>/dev/null; then
    rm -f "$tmp"/manifests/*.yaml
    for _ in $(seq 60); do
      [ -z "$(ls -A "$RUN/pods" 2>/dev/null)" ] && break
      sleep 1
    done
    [ -z "$(ls -A "$RUN/pods" 2>/dev/null)" ] || log "pods still there after 60s: $(ls "$RUN/pods")"
    kill "$bosun_pid"; wait "$bosun_pid" 2>/dev/null
  fi
  if [ "$rc" != 0 ] && [ -f "$tmp/bosun.log" ]; then tail -40 "$tmp/bosun.log" >&2; fi
  reap_node "$tmp" "${CG#/}"
  rm -rf "$tmp"
  log "done in $(( $(date +%s) - start ))s"
}
trap cleanup EXIT
trap 'log "failed at line $LINENO: $BASH_COMMAND"' ERR
set -o errtrace

mkdir -p "$tmp"/{manifests,root,data,pod-logs,container-logs,cni,host/cni-bin,host/net.d,host/kube-flannel}
"$here/images.sh" build >"$tmp/images.txt"
ref() { grep -E "$1" "$tmp/images.txt" | cut -d' ' -f1; }
proxy=$(ref '/kube-proxy:')
dns=$(ref '/coredns:')
flannel=$(ref '/flannel:')
cni=$(ref '/flannel-cni-plugin:')
BOSUN_BIN=$BOSUN "$here/images.sh" import "${common[@]}" >/dev/null
# the CNI config kube-flannel.yml's ConfigMap holds, for install-conf
sed -n '/cni-conf.json: |/,/net-conf.json/p' "$FLANNEL_BIN/kube-flannel.yml" | sed '1d;$d' | sed 's/^    //' \
  >"$tmp/host/kube-flannel/cni-conf.json"
jq -e '.plugins[0].type == "flannel"' "$tmp/host/kube-flannel/cni-conf.json" >/dev/null ||
  die "no flannel CNI config in kube-flannel.yml"

cat >"$tmp/manifests/kube-proxy.yaml" <<EOF
apiVersion: v1
kind: Pod
metadata: {name: kube-proxy, namespace: kube-system}
spec:
  hostNetwork: true
  restartPolicy: Never
  containers:
  - name: version
    image: $proxy
    imagePullPolicy: IfNotPresent
    command: [/usr/local/bin/kube-proxy, --version]
  - name: iptables
    image: $proxy
    imagePullPolicy: IfNotPresent
    securityContext: {privileged: true}
    command:
    - sh
    - -ec
    - |
      iptables -V
      iptables-restore --version
      iptables-save >/tmp/v4
      grep -q '^COMMIT' /tmp/v4
      ip6tables-save >/tmp/v6
      printf '%s\n' '*nat' ':KUBE-BOSUN-CHECK - [0:0]' \\
        '-A KUBE-BOSUN-CHECK -m comment --comment "bosun check" -m conntrack --ctstate NEW -j MASQUERADE --random-fully' \\
        '-A KUBE-BOSUN-CHECK -m statistic --mode random --probability 0.5 -m mark --mark 0x4000/0x4000 -j RETURN' \\
        'COMMIT' | iptables-restore --noflush --test
      nft --version
      echo "iptables-save: \$(wc -l </tmp/v4) lines, ip6tables-save: \$(wc -l </tmp/v6) lines; restore --test ok"
EOF
cat >"$tmp/manifests/coredns.yaml" <<EOF
apiVersion: v1
kind: Pod
metadata: {name: coredns, namespace: kube-system}
spec:
  restartPolicy: Never
  hostNetwork: true
  containers:
  - name: coredns
    image: $dns
    imagePullPolicy: IfNotPresent
    args: [-version]
EOF
cat >"$tmp/manifests/flannel.yaml" <<EOF
apiVersion: v1
kind: Pod
metadata: {name: kube-flannel, namespace: kube-flannel}
spec:
  hostNetwork: true
  restartPolicy: Never
  initContainers:
  - name: install-cni-plugin
    image: $cni
    imagePullPolicy: IfNotPresent
    command: [cp]
    args: [-f, /flannel, /opt/cni/bin/flannel]
    volumeMounts: [{name: cni-plugin, mountPath: /opt/cni/bin}]
  - name: install-cni
    image: $flannel
    imagePullPolicy: IfNotPresent
    command: [/opt/bin/install-conf]
    args: [/etc/kube-flannel/cni-conf.json, /etc/cni/net.d/10-flannel.conflist]
    volumeMounts:
    - {name: cni, mountPath: /etc/cni/net.d}
    - {name: flannel-cfg, mountPath: /etc/kube-flannel/}
  containers:
  - name: version
    image: $flannel
    imagePullPolicy: IfNotPresent
    command: [/opt/bin/flanneld, --version]
  - name: iptables
    image: $flannel
    imagePullPolicy: IfNotPresent
    securityContext:
      privileged: false
      capabilities: {add: [NET_ADMIN, NET_RAW]}
    command: [sh, -ec, 'iptables -V; iptables-save -t nat | grep -q "^COMMIT"; echo iptables-save ok']
    volumeMounts: [{name: xtables-lock, mountPath: /run/xtables.lock}]
  volumes:
  - {name: cni-plugin, hostPath: {path: $tmp/host/cni-bin}}
  - {name: cni, hostPath: {path: $tmp/host/net.d}}
  - {name: flannel-cfg, hostPath: {path: $tmp/host/kube-flannel}}
  - {name: xtables-lock, hostPath: {path: $tmp/host/xtables.lock, type: FileOrCreate}}
EOF

log "bosun standalone: kube-proxy, coredns, kube-flannel pods"
RUST_LOG=info "$BOSUN" standalone --manifests "$tmp/manifests" "${common[@]}" >"$tmp/bosun.log" 2>&1 &
bosun_pid=$!

phase() { # POD: its phase from bosun's status.json
  local f
  for f in "$RUN"/pods/*/status.json; do
    [ -f "$f" ] || continue
    # (a file being replaced reads as nothing)
    jq -r --arg n "$1-$NODE" 'select(.metadata.name == $n) | .status.phase // empty' "$f" 2>/dev/null || true
  done
}
logs() { "$BOSUN" logs "$1-$NODE" "$2" "${common[@]}" 2>&1 || true; } # NAMESPACE/POD CONTAINER
failed=0
check() { # NAMESPACE/POD CONTAINER PATTERN...: the container's log matches every PATTERN (extended regex)
  local pod=$1 c=$2; shift 2
  local out; out=$(logs "$pod" "$c")
  local p
  for p in "$@"; do
    if ! grep -qE -- "$p" <<<"$out"; then
      log "FAIL: $pod/$c: no '$p' in its log:"; awk '{print "    " $0}' <<<"$out" >&2
      failed=$((failed + 1)); return 0
    fi
  done
  log "ok: $pod/$c: $(head -1 <<<"$out")"
}
for pod in kube-proxy coredns kube-flannel; do
  p=
  for _ in $(seq 120); do
    p=$(phase "$pod")
    case $p in Succeeded | Failed) break ;; esac
    sleep 1
  done
  [ "$p" = Succeeded ] || { log "FAIL: pod $pod is ${p:-not there} (want Succeeded)"; failed=$((failed + 1)); }
done

check kube-system/kube-proxy version "^Kubernetes $K8S_VERSION\$"
# the images' iptables use the host's backend
mode=$(iptables -V | grep -oE '\((nf_tables|legacy)\)' | tr -d '()')
check kube-system/kube-proxy iptables "^iptables v[0-9.]+ \\($mode\\)" "restore --test ok"
check kube-system/coredns coredns "^CoreDNS-${COREDNS_VERSION#v}\$"
check kube-flannel/kube-flannel version "^$FLANNEL_VERSION\$"
check kube-flannel/kube-flannel iptables "^iptables v[0-9.]+ \\($mode\\)" "iptables-save ok"
# install-cni: the ConfigMap's CNI config, as a file in the host's net.d
if cmp -s "$tmp/host/kube-flannel/cni-conf.json" "$tmp/host/net.d/10-flannel.conflist"; then
  log "ok: kube-flannel/install-cni wrote 10-flannel.conflist"
else
  log "FAIL: kube-flannel/install-cni: no (or another) $tmp/host/net.d/10-flannel.conflist"; failed=$((failed + 1))
fi
# install-cni-plugin: the plugin in the host's CNI bin folder, runnable there
if cmp -s "$FLANNEL_CNI_BIN/flannel" "$tmp/host/cni-bin/flannel" && [ -x "$tmp/host/cni-bin/flannel" ] &&
  CNI_COMMAND=VERSION "$tmp/host/cni-bin/flannel" </dev/null | jq -e '.supportedVersions | index("1.0.0")' >/dev/null; then
  log "ok: kube-flannel/install-cni-plugin copied the flannel CNI plugin ($("$tmp/host/cni-bin/flannel" --version 2>&1 | awk 'NR == 1'))"
else
  log "FAIL: kube-flannel/install-cni-plugin: $tmp/host/cni-bin/flannel is not the plugin"; failed=$((failed + 1))
fi
# nothing was committed by iptables-restore --test
if iptables-save -t nat | awk '/KUBE-BOSUN-CHECK/ {f = 1} END {exit !f}'; then
  log "FAIL: iptables-restore --test left KUBE-BOSUN-CHECK in the host's nat table"; failed=$((failed + 1))
  iptables -t nat -X KUBE-BOSUN-CHECK 2>/dev/null || true
fi

[ "$failed" = 0 ] || die "$failed check(s) failed"
log "PASS: $proxy, $dns, $flannel, $cni"
