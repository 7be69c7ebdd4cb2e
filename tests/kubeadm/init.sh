#!/usr/bin/env bash
# `kubeadm init` on this machine with bosun as the kubelet: kubeadm (built from the pinned
# k8s.io/kubernetes module, tests/kubeadm/build.sh) writes the kubelet's files and the control
# plane's static pods (etcd, kube-apiserver, kube-controller-manager, kube-scheduler); bosun, started
# with exactly the command line of packaging/kubelet's kubeadm drop-in, runs them; kubeadm's own
# preflight, kubelet-start, wait-control-plane, upload-config, mark-control-plane, bootstrap-token
# and kubelet-finalize phases must pass. Then crictl (same socket) and kubectl must agree, and
# everything is torn down (kubeadm reset's work: static pods, /etc/kubernetes, the kubelet's
# files, /var/lib/etcd), even when a step fails.
#
# Not checked here, and why:
#   - the preflight image pull: the control plane images are imported into bosun's store under
#     the names kubeadm expects (built here from the pinned binaries on the busybox test image),
#     but pause and CoreDNS are not, and there is no internet: ImagePull is ignored.
#   - the kube-proxy and CoreDNS addons (skipped phases): kube-proxy would rewrite this shared
#     machine's iptables, and neither image is built here yet.
#
# Bosun runs from the start, as an installed, enabled kubelet.service does: before kubeadm
# writes /var/lib/kubelet/config.yaml it serves only its CRI socket (kubeadm's preflight checks
# it); the loop below restarts it when kubeadm's files change (kubeadm's kubelet-start would
# restart the unit; this machine has no systemd). On a cgroup v1 host the KubeletConfiguration
# says failCgroupV1: false and SystemVerification is skipped, as kubeadm asks.
#
# Status (2026-12-07, run on a cgroup v1 host): preflight passes (CRI socket, container
# runtime, kubelet version; only ImagePull and, on cgroup v1, SystemVerification ignored), then
# certs, kubeconfig, etcd, control-plane, kubelet-start (bosun restarted with kubeadm's
# config.yaml and kubeadm-flags.env). It fails in wait-control-plane: the apiserver never comes
# up because bosun in cluster mode registers the Node before it starts its pod manager, and
# retries the registration until the apiserver answers, so the control plane's static pods are
# never started (a kubelet runs static pods while it registers). Next: register in the
# background and run the static pods at once, without taking the node's other running pods
# for orphans before the apiserver's first list (the kubelet's "sources ready").
#
# Needs root and the fixed addresses of tests/cluster (interface bosun-cp0, 10.250.0.1, ports 6443,
# 2379-2381, 10250, 10257, 10259): run it under the privileged lock:
#   flock /tmp/bosun-priv.lock tests/kubeadm/init.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=env.sh
. "$here/env.sh"
start=$(date +%s)
log() { echo "kubeadm-init: $*" >&2; }
die() { log "FAIL: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root"
IFACE=bosun-cp0
IP=10.250.0.1
# Never touch a host that already has a Kubernetes node's files.
for f in /etc/kubernetes /var/lib/kubelet/config.yaml /var/lib/kubelet/kubeadm-flags.env /var/lib/etcd; do
  [ -e "$f" ] && die "$f exists: this machine is (or was) a node; refusing to overwrite it"
done
ip link show "$IFACE" >/dev/null 2>&1 && die "interface $IFACE exists (a control plane of tests/cluster is up?)"

"$root/tests/cluster/build/build.sh" >&2
"$here/build.sh" kubeadm crictl >&2
KUBEADM=$KUBEADM_BIN/kubeadm
CRICTL=$CRICTL_BIN/crictl
KUBECTL=$K8S_BIN/kubectl
: "${CARGO_TARGET_DIR:=$HOME/.cache/bosun/target}"
BOSUN=${BOSUN_BIN:-$CARGO_TARGET_DIR/debug/bosun}
[ -x "$BOSUN" ] || die "$BOSUN is not built (cargo build -p bosun)"

tmp=$(mktemp -d /tmp/bosun-kubeadm.XXXXXX)
RUN=$tmp/run
SOCK=$RUN/bosun.sock
CG=/bosun-kubeadm-$$
sup_pid=
cleanup() {
  local rc=$?
  set +e
  log "cleaning up (rc=$rc)"
  # kubeadm reset's work, in its order: the static pods first (bosun terminates them when their
  # manifests go), then the agent, then the files kubeadm and the kubelet wrote.
  if [ -n "$sup_pid" ] && kill -0 "$sup_pid" 2>/dev/null; then
    rm -f /etc/kubernetes/manifests/*.yaml
    for _ in $(seq 60); do
      [ -z "$(ls -A "$RUN/pods" 2>/dev/null)" ] && break
      sleep 1
    done
    kill "$sup_pid"; wait "$sup_pid" 2>/dev/null
  fi
  if [ "$rc" != 0 ] && [ -f "$tmp/bosun.log" ]; then
    tail -50 "$tmp/bosun.log" >&2
    cp "$tmp/bosun.log" /tmp/bosun-kubeadm-init.log && log "bosun's log: /tmp/bosun-kubeadm-init.log"
  fi
  # kubeadm reset itself (cleans /etc/kubernetes, /var/lib/etcd, the kubelet's files); its
  # container removal finds no CRI socket once the agent is gone, which it only warns about.
  "$KUBEADM" reset --force --cri-socket "unix://$SOCK" >"$tmp/reset.log" 2>&1 || cat "$tmp/reset.log" >&2
  # Whatever reset left: keepers of pods the agent did not finish, mounts, cgroups.
  for p in $(pgrep -f "__keeper $RUN/" 2>/dev/null); do kill -9 "$p"; done
  grep -E " ($RUN|/var/lib/kubelet)[/ ]" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l
  find "/sys/fs/cgroup$CG" -depth -type d -exec rmdir {} \; 2>/dev/null
  rm -rf /etc/kubernetes /var/lib/etcd /var/lib/kubelet/config.yaml /var/lib/kubelet/kubeadm-flags.env \
    /var/lib/kubelet/instance-config.yaml /var/lib/kubelet/pki /var/lib/kubelet/pods /var/log/pods/kube-system_*
  ip link del "$IFACE" 2>/dev/null
  ip link del bosunkadm0 2>/dev/null
  rm -rf "$tmp"
  log "done in $(( $(date +%s) - start ))s"
}
trap cleanup EXIT

# kubeadm's preflight runs `kubelet --version` (its version-skew check) from PATH: the
# bosun-kubelet package's /usr/bin/kubelet, here a wrapper of the same one line.
mkdir -p "$tmp/bin"
printf '#!/bin/sh\nexec %s "$@"\n' "$BOSUN" >"$tmp/bin/kubelet"
chmod 0755 "$tmp/bin/kubelet"
export PATH="$tmp/bin:$PATH"

ip link add "$IFACE" type bridge
# A /24: the second node (the VM tier's guest, on a tap device in this bridge) is 10.250.0.2.
ip addr add "$IP/24" dev "$IFACE"
ip link set "$IFACE" up

# The control plane images, named as kubeadm expects them, in a private image store.
mkdir -p "$tmp/data" "$tmp/images"
common=(--run-dir "$RUN" --data-dir "$tmp/data" --pod-logs-dir "$tmp/pod-logs"
  --container-logs-dir "$tmp/container-logs" --cgroup-root "$CG" --cni-conf-dir "$tmp/cni")
"$KUBEADM" config images list --kubernetes-version "$K8S_VERSION" >"$tmp/images.txt"
for name in kube-apiserver kube-controller-manager kube-scheduler etcd; do
  ref=$(grep "/$name:" "$tmp/images.txt")
  EXTRA_BINS="$K8S_BIN/$name" "$root/tests/images/build-busybox.sh" "$tmp/images/$name" >&2
  "$BOSUN" image import "$tmp/images/$name" "$ref" "${common[@]}" >&2
done

# What systemd does with packaging/kubelet: the unit's ExecStart as the drop-in rewrites it, with
# the two EnvironmentFiles, started at once (an installed, enabled kubelet.service runs before
# kubeadm: bosun serves its CRI socket while /var/lib/kubelet/config.yaml is missing) and
# restarted when it exits or when kubeadm's files change (kubeadm's kubelet-start phase writes
# them and restarts the unit; this machine has no systemd, so the loop does the restart).
# KUBELET_EXTRA_ARGS (/etc/default/kubelet) carries the test's private folders.
dropin=$root/packaging/kubelet/10-kubeadm.conf
exec_line=$(grep '^ExecStart=.' "$dropin" | sed 's/^ExecStart=//')
# Environment="NAME=a b" as NAME="a b", for eval.
envs=$(sed -n 's/^Environment="\([^=]*\)=\(.*\)"$/\1="\2"/p' "$dropin")
export KUBELET_EXTRA_ARGS="${common[*]}"
stamp() { { stat -c %Y /var/lib/kubelet/kubeadm-flags.env /var/lib/kubelet/config.yaml 2>/dev/null || true; } | tr '\n' ' '; }
(
  set +e
  while :; do
    # shellcheck disable=SC1091
    (set -a; eval "$envs"; KUBELET_KUBEADM_ARGS=
     [ -f /var/lib/kubelet/kubeadm-flags.env ] && . /var/lib/kubelet/kubeadm-flags.env
     cmd=${exec_line/\/usr\/bin\/kubelet/$BOSUN}
     eval "exec $cmd") >>"$tmp/bosun.log" 2>&1 &
    child=$!
    trap 'kill $child 2>/dev/null; wait $child; exit 0' TERM
    seen=$(stamp)
    while kill -0 "$child" 2>/dev/null; do
      sleep 1
      if [ "$(stamp)" != "$seen" ]; then
        echo "supervisor: kubeadm's files changed: restarting the kubelet" >>"$tmp/bosun.log"
        kill "$child" 2>/dev/null; wait "$child" 2>/dev/null || true
        break
      fi
    done
    wait "$child" 2>/dev/null || true
    trap - TERM
    sleep 1
  done
) &
sup_pid=$!
# kubeadm's preflight checks the CRI socket first: it is there before kubeadm runs.
for _ in $(seq 60); do [ -S "$SOCK" ] && break; sleep 1; done
[ -S "$SOCK" ] || die "bosun serves no CRI socket at $SOCK before kubeadm init"

cat >"$tmp/kubeadm.yaml" <<EOF
apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
localAPIEndpoint:
  advertiseAddress: $IP
  bindPort: 6443
nodeRegistration:
  name: kubeadm-node
  criSocket: unix://$SOCK
  kubeletExtraArgs:
  - name: node-ip
    value: $IP
skipPhases:
- addon/kube-proxy
- addon/coredns
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: $K8S_VERSION
networking:
  serviceSubnet: 10.96.0.0/16
  podSubnet: 10.244.0.0/16
---
# kubeadm at the pinned version refuses cgroup v1 hosts (SystemVerification) unless the kubelet
# is told to run on them.
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
EOF
log "kubeadm init"
# On a cgroup v1 host kubeadm also wants its SystemVerification skipped explicitly (with
# failCgroupV1: false above), as its message says.
ignore=ImagePull
[ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ] || ignore=$ignore,SystemVerification
"$KUBEADM" init --config "$tmp/kubeadm.yaml" --ignore-preflight-errors="$ignore" -v=1 2>&1 | tee "$tmp/init.log" >&2
[ "${PIPESTATUS[0]}" = 0 ] || die "kubeadm init failed"
grep -q 'Your Kubernetes control-plane has initialized successfully' "$tmp/init.log" || die "kubeadm init did not finish"

export KUBECONFIG=/etc/kubernetes/admin.conf
# No pod network yet: the node is NotReady with the kubelet's message; the control plane's
# static pods (hostNetwork) run. The admin's network config (what a network add-on's DaemonSet
# writes) on the pod CIDR the controller-manager gave the node makes it Ready.
"$KUBECTL" get node kubeadm-node -o jsonpath='{.status.conditions[?(@.type=="Ready")].message}' >"$tmp/ready.txt"
grep -q 'cni plugin not initialized' "$tmp/ready.txt" || log "note: Ready message: $(cat "$tmp/ready.txt")"
for _ in $(seq 60); do
  cidr=$("$KUBECTL" get node kubeadm-node -o jsonpath='{.spec.podCIDR}' 2>/dev/null) && [ -n "$cidr" ] && break
  sleep 1
done
[ -n "${cidr:-}" ] || die "the node got no pod CIDR"
mkdir -p "$tmp/cni"
cat >"$tmp/cni/10-bridge.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "kubeadm-test", "plugins": [
  {"type": "bridge", "bridge": "bosunkadm0", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$cidr"}]], "dataDir": "$tmp/ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
EOF
# The node and its static pods, as the API sees them.
"$KUBECTL" wait --for=condition=Ready node/kubeadm-node --timeout=120s >&2 || die "node not Ready"
for c in etcd kube-apiserver kube-controller-manager kube-scheduler; do
  "$KUBECTL" -n kube-system wait --for=condition=Ready "pod/$c-kubeadm-node" --timeout=120s >&2 ||
    die "$c is not Ready"
done
"$KUBECTL" -n kube-system get pods -o wide >&2
# hostNetwork pods have the node's address (--node-ip), as the kubelet reports them.
ips=$("$KUBECTL" -n kube-system get pods -o jsonpath='{range .items[*]}{.status.podIP}{"\n"}{end}' | sort -u)
[ "$ips" = "$IP" ] || die "the static pods' podIPs are $ips, not the node's $IP"

# crictl on the node shows the same pods and containers.
crictl() { "$CRICTL" --runtime-endpoint "unix://$SOCK" --image-endpoint "unix://$SOCK" "$@"; }
api=$("$KUBECTL" -n kube-system get pods -o jsonpath='{range .items[*]}{.metadata.name}{"\n"}{end}' | sort)
cri=$(crictl pods -o json | jq -r '.items[] | select(.state=="SANDBOX_READY") | .metadata.name' | sort)
[ "$api" = "$cri" ] || die "kubectl and crictl disagree on pods: $api / $cri"
running=$(crictl ps -o json | jq -r '.containers[].metadata.name' | sort | tr '\n' ' ')
[ "$running" = "etcd kube-apiserver kube-controller-manager kube-scheduler " ] || die "crictl ps: $running"
# The kubelet's files kubeadm wrote and bosun read.
grep -q "containerRuntimeEndpoint: unix://$SOCK" /var/lib/kubelet/config.yaml ||
  grep -q "container-runtime-endpoint=unix://$SOCK" /var/lib/kubelet/kubeadm-flags.env || die "no runtime endpoint"
# Not yet: the kubelet renews the client certificate kubeadm embedded in kubelet.conf at once
# (kubelet-client-current.pem, which kubeadm's kubelet-finalize then points kubelet.conf at);
# bosun keeps using the embedded one until then.
log "PASS: kubeadm init with bosun as the kubelet"
# What runs on this control plane next (the join of a second node): a command run with the
# cluster up, KUBECONFIG the admin's, and the test's tools and addresses in its environment.
if [ -n "${KUBEADM_THEN:-}" ]; then
  export KUBEADM KUBECTL CRICTL IFACE IP SOCK
  log "then: $KUBEADM_THEN"
  $KUBEADM_THEN || die "$KUBEADM_THEN failed"
fi
