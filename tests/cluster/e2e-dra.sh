#!/usr/bin/env bash
# End-to-end: Dynamic Resource Allocation (issue 25), with bosun as the node of a real control
# plane of this script's own (resource.k8s.io/v1 served, the scheduler's DRA plugin and the
# resourceclaim controller on by default at 1.36) and Kubernetes' own DRA test driver
# (test/e2e/dra/test-driver of the pinned module, built once by tests/dra/build.sh) run as a
# host process: its kubelet plugin registers in bosun's <root-dir>/plugins_registry, its socket
# in <root-dir>/plugins, its CDI spec files in this test's CDI folder (bosun's --cdi-spec-dir);
# each prepared claim's CDI spec puts the claim's opaque parameters (user_<key>=<value>) and
# claim_<claim>_<request>=true ('-' made '_') into the containers' env.
# Checked: the driver registers and publishes its ResourceSlice; a pod with a claim from a
# ResourceClaimTemplate runs, the container naming the claim gets its env, the other one not;
# two pods sharing one ResourceClaim both get it, prepared once; bosun restarted: the pods keep
# running and the checkpoint keeps the claims; deleting pods unprepares their claims (the
# driver's CDI file is gone) only once the last pod of a shared claim is gone; with the driver
# down a pod waits with FailedPrepareDynamicResources and runs once the driver is back.
# Leaves nothing running. Prints `N passed, M failed`. Needs root.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
source "$here/env.sh"
source "$here/lib.sh"
D=${1:-/tmp/bosun-e2e-dra-cluster}
W=$(mktemp -d /tmp/bosun-e2e-dra-XXXXXX)
chmod 0711 "$W"
BOSUN=${BOSUN_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/bosun/target}/debug/bosun}
KUBECTL="$K8S_BIN/kubectl"
NODE=e2e-dra
DRIVER_NAME=test-driver.cdi.k8s.io
# A control plane of its own (beside the other e2e scripts').
export BOSUN_CP_IF=bosun-cp7 BOSUN_CP_IP=10.250.7.1 BOSUN_CP_SERVICE_CIDR=10.107.0.0/16
export BOSUN_CP_KUBE_PROXY=0 BOSUN_CP_NODE_NAME=$NODE
driver_pid=""
stop_driver() {
    if [ -n "$driver_pid" ]; then
        kill -TERM "$driver_pid" 2>/dev/null
        wait "$driver_pid" 2>/dev/null
        driver_pid=""
    fi
}
cleanup() {
    stop_driver
    [ -n "${bosun_pid:-}" ] && kill -TERM "$bosun_pid" 2>/dev/null && wait "$bosun_pid" 2>/dev/null
    reap_node "$W" bosun-e2e-dra bosune2edra
    bash "$here/down.sh" --purge "$D" >/dev/null 2>&1
    if [ "$failed" != 0 ]; then
        cp "$W/bosun.log" /tmp/bosun-e2e-dra.failed.log 2>/dev/null
        cp "$W/driver.log" /tmp/bosun-e2e-dra.driver.log 2>/dev/null
    fi
    rm -rf "$W"
}
trap cleanup EXIT

t_build=$SECONDS
bash "$root/tests/dra/build.sh" >"$W/build.log" 2>&1 || { cat "$W/build.log"; echo "0 passed, 1 failed"; failed=1; exit 1; }
echo "(DRA test driver ready in $((SECONDS - t_build)) s)"
DRIVER="$HOME/.cache/bosun/dra/$K8S_VERSION/bin/dra-test-driver"
bash "$here/up.sh" "$D" >"$W.up.log" 2>&1 || { cat "$W.up.log"; echo "0 passed, 1 failed"; failed=1; exit 1; }
rm -f "$W.up.log"
export KUBECONFIG="$D/admin.kubeconfig"
bash "$root/tests/images/build-busybox.sh" "$W/busybox-oci" >/dev/null
free_port PORT 20370
free_port HPORT 20368
cat >"$W/config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
port: $PORT
healthzPort: $HPORT
evictionHard: {memory.available: 100Mi}
authentication:
  x509: {clientCAFile: $D/pki/ca.crt}
YAML
A=(--root-dir "$W/root" --run-dir "$W/run" --data-dir "$W/data" --pod-logs-dir "$W/logs"
   --container-logs-dir "$W/clogs" --cgroup-root /bosun-e2e-dra --hostname-override "$NODE"
   --cni-conf-dir "$W/cni" --pod-cidr 10.243.0.0/24 --cdi-spec-dir "$W/cdi")
"$BOSUN" image import "$W/busybox-oci" busybox --data-dir "$W/data" >/dev/null 2>&1
# The driver makes only the parent of its socket folder.
mkdir -p "$W/cni" "$W/cdi" "$W/root/plugins_registry" "$W/root/plugins/$DRIVER_NAME"
bridge_conflist "$W/cni/10-e2e-dra.conflist" bosun-e2e-dra bosune2edra 10.243.0.0/24 "$W/ipam"
start_bosun() {
    "$BOSUN" --kubeconfig "$W/kubeconfig" --bootstrap-kubeconfig "$D/bootstrap.kubeconfig" \
        --cert-dir "$W/pki" --node-ip "$BOSUN_CP_IP" --config "$W/config.yaml" "${A[@]}" \
        >>"$W/bosun.log" 2>&1 &
    bosun_pid=$!
}
# The driver's kubelet plugin as a host process, on bosun's folders (the admin kubeconfig
# publishes its ResourceSlice).
start_driver() {
    "$DRIVER" --kubeconfig "$D/admin.kubeconfig" -v=5 kubelet-plugin --node-name "$NODE" \
        --plugin-registration-path "$W/root/plugins_registry" --datadir "$W/root/plugins" \
        --cdi-dir "$W/cdi" >>"$W/driver.log" 2>&1 &
    driver_pid=$!
}
start_bosun
node_ready() { [ "$("$KUBECTL" get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]; }
check "node registers and turns Ready" wait_for 60 node_ready
served() { "$KUBECTL" api-versions | grep -qx resource.k8s.io/v1; }
check "resource.k8s.io/v1 is served" served
start_driver
registered() { grep -q "DRA driver registered.*$DRIVER_NAME" "$W/bosun.log"; }
check "the driver's kubelet plugin registers with bosun (DRAPlugin)" wait_for 60 registered
slice() { [ -n "$("$KUBECTL" get resourceslices -o jsonpath="{.items[?(@.spec.nodeName==\"$NODE\")].metadata.name}")" ]; }
check "the driver publishes its ResourceSlice for the node" wait_for 60 slice

cat <<YAML | "$KUBECTL" apply -f - >/dev/null
apiVersion: resource.k8s.io/v1
kind: DeviceClass
metadata: {name: example}
spec:
  selectors:
  - cel: {expression: 'device.driver == "$DRIVER_NAME"'}
---
apiVersion: resource.k8s.io/v1
kind: ResourceClaimTemplate
metadata: {name: tmpl, namespace: default}
spec:
  spec:
    devices:
      requests:
      - name: my-device
        exactly: {deviceClassName: example}
      config:
      - opaque:
          driver: $DRIVER_NAME
          parameters: {a: b}
---
apiVersion: resource.k8s.io/v1
kind: ResourceClaim
metadata: {name: shared, namespace: default}
spec:
  devices:
    requests:
    - name: my-device
      exactly: {deviceClassName: example}
    config:
    - opaque:
        driver: $DRIVER_NAME
        parameters: {shared: "yes"}
YAML
# claimpod NAME CLAIM-SOURCE: a pod whose container `with` names the claim, `without` not.
claimpod() {
    cat <<YAML | "$KUBECTL" apply -f - >/dev/null
apiVersion: v1
kind: Pod
metadata: {name: $1}
spec:
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  resourceClaims:
  - {name: res, $2}
  containers:
  - name: with
    image: busybox
    imagePullPolicy: Never
    command: [sh, -c, 'env | grep -E "^(user|claim)_" | sort; exec sleep 3600']
    resources:
      claims: [{name: res}]
  - name: without
    image: busybox
    imagePullPolicy: Never
    command: [sh, -c, 'env | grep -E "^(user|claim)_" | sort; echo done; exec sleep 3600']
YAML
}
running() { [ "$("$KUBECTL" get pod "$1" -o jsonpath='{.status.phase}')" = Running ]; }
logs() { "$KUBECTL" logs "$1" -c "$2" 2>/dev/null; }
has_env() { logs "$1" "$2" | grep -qx -- "$3"; }
claim_of() { "$KUBECTL" get pod "$1" -o jsonpath='{.status.resourceClaimStatuses[0].resourceClaimName}'; }
claim_uid() { "$KUBECTL" get resourceclaim "$1" -o jsonpath='{.metadata.uid}'; }
cdi_file() { ls "$W/cdi/$DRIVER_NAME-$1-"*.json >/dev/null 2>&1; }
no_cdi_file() { ! cdi_file "$1"; }
in_checkpoint() { jq -e --arg n "$1" '[.ClaimInfoStateList[].ClaimName] | index($n) != null' "$W/root/dra_manager_state" >/dev/null 2>&1; }
not_in_checkpoint() { ! in_checkpoint "$1"; }

claimpod inline "resourceClaimTemplateName: tmpl"
check "a pod with a claim from a ResourceClaimTemplate runs" wait_for 90 running inline
gen=$(claim_of inline)
check "its claim was generated ($gen)" test -n "$gen"
check "the container naming the claim has the claim's parameters (user_a=b)" wait_for 10 has_env inline with user_a=b
# The driver's env name: claim_<claim>_<request>, '-' made '_'.
genvar=${gen//-/_}
check "and the driver's claim_${genvar}_my_device=true" has_env inline with "claim_${genvar}_my_device=true"
without_empty() { [ "$(logs inline without)" = done ]; }
check "the container not naming it has none of them" wait_for 10 without_empty
uid_gen=$(claim_uid "$gen")
check "the driver prepared it (its CDI spec file)" cdi_file "$uid_gen"
check "the checkpoint holds the prepared claim" in_checkpoint "$gen"

claimpod share1 "resourceClaimName: shared"
claimpod share2 "resourceClaimName: shared"
check "a pod using the shared ResourceClaim runs" wait_for 90 running share1
check "a second pod using it runs" wait_for 90 running share2
both_shared() { has_env share1 with user_shared=yes && has_env share2 with user_shared=yes; }
check "both get the shared claim's env (user_shared=yes)" wait_for 10 both_shared
uid_shared=$(claim_uid shared)
reserved=$("$KUBECTL" get resourceclaim shared -o jsonpath='{.status.reservedFor[*].name}')
check "the claim is reserved for both ($reserved)" test "$(wc -w <<<"$reserved")" = 2
prepares=$(grep -c "NodePrepareResources.*$uid_shared\|$uid_shared.*NodePrepareResources" "$W/driver.log" || true)
echo "  (driver log lines with NodePrepareResources and the shared claim: $prepares)"

kill -TERM "$bosun_pid"; wait "$bosun_pid" 2>/dev/null
start_bosun
check "bosun restarted: Ready again" wait_for 60 node_ready
registered_twice() { [ "$(grep -c "DRA driver registered" "$W/bosun.log")" -ge 2 ]; }
check "bosun restarted: the driver registers again" wait_for 60 registered_twice
all_running() { running inline && running share1 && running share2; }
check "the pods kept running" all_running
both_kept() { in_checkpoint "$gen" && in_checkpoint shared; }
check "the checkpoint kept the claims" both_kept

"$KUBECTL" delete pod inline --grace-period=1 --wait=true --timeout=60s >/dev/null 2>&1
check "the first pod deleted: its claim unprepared (the driver's CDI file gone)" wait_for 30 no_cdi_file "$uid_gen"
check "and gone from the checkpoint" wait_for 10 not_in_checkpoint "$gen"
"$KUBECTL" delete pod share1 --grace-period=1 --wait=true --timeout=60s >/dev/null 2>&1
sleep 2
check "one pod of the shared claim deleted: still prepared for the other" cdi_file "$uid_shared"
check "the other keeps running" running share2
"$KUBECTL" delete pod share2 --grace-period=1 --wait=true --timeout=60s >/dev/null 2>&1
check "the last pod of the shared claim deleted: unprepared" wait_for 30 no_cdi_file "$uid_shared"
no_claim() { [ "$(jq '.ClaimInfoStateList | length' "$W/root/dra_manager_state")" = 0 ]; }
check "the checkpoint holds no claim" wait_for 10 no_claim

# The driver down: a pod whose claim is allocated (the ResourceSlice stays) cannot be prepared.
stop_driver
claimpod late "resourceClaimTemplateName: tmpl"
failed_event() {
    "$KUBECTL" get events --field-selector involvedObject.name=late,reason=FailedPrepareDynamicResources \
        -o jsonpath='{.items[*].message}' | grep -q "DRA driver $DRIVER_NAME is not registered"
}
scheduled() { [ -n "$("$KUBECTL" get pod late -o jsonpath='{.spec.nodeName}')" ]; }
if wait_for 60 scheduled; then
    check "with the driver down: FailedPrepareDynamicResources (driver not registered)" wait_for 60 failed_event
    creating() { [ "$("$KUBECTL" get pod late -o jsonpath='{.status.containerStatuses[0].state.waiting.reason}')" = ContainerCreating ]; }
    check "its containers wait in ContainerCreating" wait_for 30 creating
    start_driver
    check "the driver back: the pod runs (preparation retried)" wait_for 150 running late
else
    echo "  (the pod was not scheduled with the driver down: its ResourceSlice went with it)"
    start_driver
    check "the driver back: the pod runs" wait_for 150 running late
fi
"$KUBECTL" delete pod late --grace-period=1 --wait=true --timeout=60s >/dev/null 2>&1
nothing_left() { [ -z "$(ls -A "$W/run/pods" 2>/dev/null)" ]; }
check "every pod removed from the node" wait_for 60 nothing_left
no_cdi_left() { ! ls "$W/cdi/$DRIVER_NAME"-*.json >/dev/null 2>&1; }
check "no CDI spec file left by the driver" wait_for 30 no_cdi_left
summary
