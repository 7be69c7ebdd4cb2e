#!/usr/bin/env bash
# End-to-end: bosun joins the real test control plane as its node (TLS bootstrap from a
# bootstrap token only), turns Ready with a Lease, runs a 3-replica Deployment with pod IPs, and
# removes the pods gracefully when it is scaled to 0. Starts and stops its own control plane and
# leaves nothing running. Prints `N passed, M failed`. Needs root.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
source "$here/env.sh"
D=${1:-/tmp/bosun-e2e-cluster}
W=$(mktemp -d /tmp/bosun-e2e-node-XXXXXX)
BOSUN=${BOSUN_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/bosun/target}/debug/bosun}
KUBECTL="$K8S_BIN/kubectl"
NODE=e2e-node
passed=0; failed=0
check() { # name, command...
    local name=$1; shift
    if "$@"; then passed=$((passed+1)); echo "ok   $name"; else failed=$((failed+1)); echo "FAIL $name"; fi
}
wait_for() { # seconds, command...
    local t=$1; shift
    for _ in $(seq 1 $((t*5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
    return 1
}
cleanup() {
    [ -n "${bosun_pid:-}" ] && kill -TERM "$bosun_pid" 2>/dev/null && wait "$bosun_pid" 2>/dev/null
    # Whatever bosun left (it should be nothing): keepers, mounts, the private cgroup root.
    pkill -KILL -f "$W/run/containers" 2>/dev/null
    grep " $W" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l 2>/dev/null
    for c in /sys/fs/cgroup/*/bosun-e2e-node /sys/fs/cgroup/bosun-e2e-node; do
        [ -d "$c" ] && find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null
    done
    ip link del bosune2e 2>/dev/null
    bash "$here/down.sh" --purge "$D" >/dev/null 2>&1
    rm -rf "$W"
}
trap cleanup EXIT

bash "$here/up.sh" "$D" >"$W.up.log" 2>&1 || { cat "$W.up.log"; echo "0 passed, 1 failed"; exit 1; }
export KUBECONFIG="$D/admin.kubeconfig"
bash "$root/tests/images/build-busybox.sh" "$W/busybox-oci" >/dev/null
A=(--root-dir "$W/root" --run-dir "$W/run" --data-dir "$W/data" --pod-logs-dir "$W/logs"
   --container-logs-dir "$W/clogs" --cgroup-root /bosun-e2e-node --hostname-override "$NODE"
   --cni-conf-dir "$W/cni" --pod-cidr 10.246.0.0/24)
"$BOSUN" image import "$W/busybox-oci" busybox --data-dir "$W/data" >/dev/null
# A network of this test's own (bridge, subnet, IPAM store), so nothing else can collide.
mkdir -p "$W/cni"
cat >"$W/cni/10-e2e.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "bosun-e2e", "plugins": [
  {"type": "bridge", "bridge": "bosune2e", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.246.0.0/24"}]], "dataDir": "$W/ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
JSON
"$BOSUN" --kubeconfig "$W/kubeconfig" --bootstrap-kubeconfig "$D/bootstrap.kubeconfig" \
    --cert-dir "$W/pki" "${A[@]}" >"$W/bosun.log" 2>&1 &
bosun_pid=$!

node_ready() { [ "$("$KUBECTL" get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]; }
check "node registers and turns Ready" wait_for 60 node_ready
check "client certificate from the TLS bootstrap (0600)" \
    bash -c "[ \"\$(stat -c %a \"\$(readlink -f '$W/pki/kubelet-client-current.pem')\")\" = 600 ]"
check "CSR approved and issued" bash -c "'$KUBECTL' get csr | grep -q 'system:node:$NODE\|Approved,Issued'"
lease_renewed() {
    local a b
    a=$("$KUBECTL" -n kube-node-lease get lease "$NODE" -o jsonpath='{.spec.renewTime}') || return 1
    sleep 11
    b=$("$KUBECTL" -n kube-node-lease get lease "$NODE" -o jsonpath='{.spec.renewTime}') || return 1
    [ -n "$a" ] && [ "$a" != "$b" ]
}
check "lease renewed within 11 s" lease_renewed
info=$("$KUBECTL" get node "$NODE" -o jsonpath='{.status.nodeInfo.containerRuntimeVersion} {.status.capacity.pods} {.metadata.labels.kubernetes\.io/os}')
check "node info, capacity and labels ($info)" bash -c "[[ '$info' == bosun://*' 110 linux' ]]"

cat <<YAML | "$KUBECTL" apply -f - >/dev/null
apiVersion: apps/v1
kind: Deployment
metadata: {name: e2e}
spec:
  replicas: 3
  selector: {matchLabels: {app: e2e}}
  template:
    metadata: {labels: {app: e2e}}
    spec:
      automountServiceAccountToken: false
      terminationGracePeriodSeconds: 5
      containers:
      - name: c
        image: busybox
        imagePullPolicy: IfNotPresent
        command: [sh, -c, 'trap "exit 0" TERM; while true; do sleep 0.2; done']
YAML
three_running() {
    local out
    out=$("$KUBECTL" get pods -l app=e2e -o jsonpath='{range .items[*]}{.status.phase} {.status.podIP} {.status.containerStatuses[0].ready}{"\n"}{end}')
    [ "$(grep -c '^Running 10\.246\.0\.[0-9]* true$' <<<"$out")" = 3 ]
}
check "deployment: 3 pods Running and Ready with pod IPs" wait_for 90 three_running
"$KUBECTL" scale deploy e2e --replicas=0 >/dev/null
no_pods() { [ -z "$("$KUBECTL" get pods -l app=e2e -o name)" ]; }
check "scaled to 0: pods terminated and deleted from the API" wait_for 60 no_pods
check "nothing of the pods left on the node" bash -c "[ -z \"\$(ls '$W/run/containers' '$W/run/sandboxes' 2>/dev/null | grep -v : | grep -v '^\$')\" ]"
kill -TERM "$bosun_pid"; wait "$bosun_pid" 2>/dev/null; bosun_pid=
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
