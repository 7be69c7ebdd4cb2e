#!/usr/bin/env bash
# End-to-end: device plugins (issue 25), with bosun as the node of a real control plane of this
# script's own and Kubernetes' own sample device plugin (test/images/sample-device-plugin of the
# pinned module, built once by tests/devices/build.sh: resource example.com/resource, devices
# Dev-1 and Dev-2, a mount and a CDI device each). The plugin runs in a mount namespace where
# /var/lib/kubelet/device-plugins is bosun's <root-dir>/device-plugins and /var/run/cdi this
# test's CDI folder (bosun's --cdi-spec-dir), so nothing of the host's kubelet folders changes.
# Checked: the resource on the Node (capacity and allocatable 2); a pod asking for one device
# runs with the plugin's mount, the CDI device's env and node; a second pod gets the other
# device; a third stays Pending (unschedulable); deleting the first frees its device for the
# third; the plugin stopped: allocatable 0; started again: it registers and allocatable is 2;
# bosun restarted: the plugin registers again, the pods keep their devices (checkpoint); every
# pod deleted: the checkpoint holds no device. Leaves nothing running. Prints `N passed, M
# failed`. Needs root. A stage of `make test`; by hand: BOSUN_BIN=<target>/debug/bosun.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
source "$here/env.sh"
source "$here/lib.sh"
D=${1:-/tmp/bosun-e2e-dev-cluster}
W=$(mktemp -d /tmp/bosun-e2e-dev-XXXXXX)
chmod 0711 "$W"
BOSUN=${BOSUN_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/bosun/target}/debug/bosun}
KUBECTL="$K8S_BIN/kubectl"
NODE=e2e-dev
RES=example.com/resource
# A control plane of its own (beside the other e2e scripts').
export BOSUN_CP_IF=bosun-cp6 BOSUN_CP_IP=10.250.6.1 BOSUN_CP_SERVICE_CIDR=10.106.0.0/16
export BOSUN_CP_KUBE_PROXY=0 BOSUN_CP_NODE_NAME=$NODE
plugin_pid=""
stop_plugin() {
    if [ -n "$plugin_pid" ]; then
        kill -TERM "$plugin_pid" 2>/dev/null
        wait "$plugin_pid" 2>/dev/null
        plugin_pid=""
    fi
}
cleanup() {
    stop_plugin
    [ -n "${bosun_pid:-}" ] && kill -TERM "$bosun_pid" 2>/dev/null && wait "$bosun_pid" 2>/dev/null
    reap_node "$W" bosun-e2e-dev bosune2edev
    bash "$here/down.sh" --purge "$D" >/dev/null 2>&1
    # The sample plugin's fake device files (it makes them in /tmp at Allocate).
    rm -f /tmp/Dev-1 /tmp/Dev-2
    if [ "$failed" != 0 ]; then
        cp "$W/bosun.log" /tmp/bosun-e2e-devices.failed.log 2>/dev/null
        cp "$W/plugin.log" /tmp/bosun-e2e-devices.plugin.log 2>/dev/null
    fi
    rm -rf "$W"
}
trap cleanup EXIT

t_build=$SECONDS
bash "$root/tests/devices/build.sh" >"$W/build.log" 2>&1 || { cat "$W/build.log"; echo "0 passed, 1 failed"; failed=1; exit 1; }
echo "(sample device plugin ready in $((SECONDS - t_build)) s)"
PLUGIN="$HOME/.cache/bosun/devices/$K8S_VERSION/bin/sample-device-plugin"
bash "$here/up.sh" "$D" >"$W.up.log" 2>&1 || { cat "$W.up.log"; echo "0 passed, 1 failed"; failed=1; exit 1; }
rm -f "$W.up.log"
export KUBECONFIG="$D/admin.kubeconfig"
bash "$root/tests/images/build-busybox.sh" "$W/busybox-oci" >/dev/null
free_port PORT 20360
free_port HPORT 20358
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
   --container-logs-dir "$W/clogs" --cgroup-root /bosun-e2e-dev --hostname-override "$NODE"
   --cni-conf-dir "$W/cni" --pod-cidr 10.248.0.0/24 --cdi-spec-dir "$W/cdi")
"$BOSUN" image import "$W/busybox-oci" busybox --data-dir "$W/data" >/dev/null 2>&1
mkdir -p "$W/cni" "$W/cdi" "$W/root/device-plugins"
bridge_conflist "$W/cni/10-e2e-dev.conflist" bosun-e2e-dev bosune2edev 10.248.0.0/24 "$W/ipam"
start_bosun() {
    "$BOSUN" --kubeconfig "$W/kubeconfig" --bootstrap-kubeconfig "$D/bootstrap.kubeconfig" \
        --cert-dir "$W/pki" --node-ip "$BOSUN_CP_IP" --config "$W/config.yaml" "${A[@]}" \
        >>"$W/bosun.log" 2>&1 &
    bosun_pid=$!
}
# The plugin in a mount namespace of its own: the kubelet's fixed plugin folder is bosun's,
# /var/run/cdi is $W/cdi (it writes its CDI spec there); /tmp stays the host's (its device
# files, which bosun mounts into containers).
start_plugin() {
    CDI_ENABLED=1 unshare --mount --propagation private -- sh -c '
        set -e
        mount -t tmpfs bosun-e2e-dev /var/lib
        mkdir -p /var/lib/kubelet/device-plugins
        mount --bind "$1" /var/lib/kubelet/device-plugins
        mount -t tmpfs bosun-e2e-dev /run
        mkdir -p /run/cdi
        mount --bind "$2" /run/cdi
        exec "$3"' sh "$W/root/device-plugins" "$W/cdi" "$PLUGIN" >>"$W/plugin.log" 2>&1 &
    plugin_pid=$!
}
start_bosun
node_ready() { [ "$("$KUBECTL" get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]; }
check "node registers and turns Ready" wait_for 60 node_ready
start_plugin
# resources CAPACITY ALLOCATABLE: what the Node reports of the plugin's resource.
resources() {
    local got
    got=$("$KUBECTL" get node "$NODE" -o go-template="{{index .status.capacity \"$RES\"}}/{{index .status.allocatable \"$RES\"}}")
    [ "$got" = "$1/$2" ]
}
check "the plugin registers: $RES capacity 2, allocatable 2 on the Node" wait_for 60 resources 2 2

devpod() { # name
    cat <<YAML | "$KUBECTL" apply -f - >/dev/null
apiVersion: v1
kind: Pod
metadata: {name: $1}
spec:
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    imagePullPolicy: Never
    command: [sh, -c, 'echo env=\$CDI_DEVICE; for d in Dev-1 Dev-2; do [ -f /tmp/\$d ] && echo mount=\$d; [ -b /tmp/CDI-\$d ] && echo node=CDI-\$d; done; exec sleep 3600']
    resources:
      limits: {$RES: 1}
YAML
}
running() { [ "$("$KUBECTL" get pod "$1" -o jsonpath='{.status.phase}')" = Running ]; }
logs() { "$KUBECTL" logs "$1" 2>/dev/null; }
# device POD: the device the pod printed it got (Dev-1 or Dev-2), checked consistent: its
# CDI env, its mount and its CDI device node name the same one device, and only that one.
device() {
    local out env m n
    out=$(logs "$1")
    env=$(sed -n 's/^env=CDI-//p' <<<"$out")
    m=$(grep -c '^mount=' <<<"$out")
    n=$(grep -c '^node=' <<<"$out")
    if [ -n "$env" ] && [ "$m" = 1 ] && [ "$n" = 1 ] &&
        grep -qx "mount=$env" <<<"$out" && grep -qx "node=CDI-$env" <<<"$out"; then
        echo "$env"
    else
        return 1
    fi
}
has_device() { device "$1" >/dev/null; }
devpod dev1
check "a pod asking for one device runs" wait_for 60 running dev1
check "it has one device: the plugin's mount, the CDI env and device node" wait_for 10 has_device dev1
d1=$(device dev1)
devpod dev2
check "a second pod runs" wait_for 60 running dev2
check "it has the other device" wait_for 10 has_device dev2
d2=$(device dev2)
check "the two pods' devices differ ($d1, $d2)" test -n "$d1" -a -n "$d2" -a "$d1" != "$d2"
check "the Node still reports allocatable 2" resources 2 2
devpod dev3
unschedulable() {
    [ "$("$KUBECTL" get pod dev3 -o jsonpath='{.status.phase}|{.spec.nodeName}|{.status.conditions[?(@.type=="PodScheduled")].reason}')" = "Pending||Unschedulable" ]
}
check "a third pod stays Pending: no device left" wait_for 30 unschedulable
sleep 3
check "still Pending a moment later" unschedulable
"$KUBECTL" delete pod dev1 --grace-period=1 --wait=true --timeout=60s >/dev/null 2>&1
check "the first pod deleted: the third runs" wait_for 90 running dev3
device_is() { [ "$(device "$1")" = "$2" ]; }
check "with the first pod's device ($d1)" wait_for 10 device_is dev3 "$d1"

stop_plugin
check "the plugin stopped: allocatable 0 (capacity kept for the grace period)" wait_for 60 resources 2 0
check "the pods keep running" running dev2
t_reg=$SECONDS
start_plugin
check "the plugin started again: it registers, allocatable 2" wait_for 60 resources 2 2
echo "(re-registered in $((SECONDS - t_reg)) s)"

kill -TERM "$bosun_pid"; wait "$bosun_pid" 2>/dev/null
t_reg=$SECONDS
start_bosun
check "bosun restarted: Ready again" wait_for 60 node_ready
# The plugin sees kubelet.sock made anew and registers again (after its 10 s wait); until
# then the Node reports its devices unhealthy.
check "bosun restarted: the plugin registers again, allocatable 2" wait_for 90 resources 2 2
echo "(registered again $((SECONDS - t_reg)) s after the restart)"
# held DEVICE: a pod's entry in the checkpoint holds it.
held() {
    jq -e --arg d "$1" '[.Data.PodDeviceEntries[]?.DeviceIDs[][]] | index($d) != null' \
        "$W/root/device-plugins/bosun_internal_checkpoint" >/dev/null
}
both_held() { held "$d1" && held "$d2"; }
check "the checkpoint holds the running pods' devices ($d1, $d2)" both_held
check "the pods kept running" running dev2
check "and kept their devices" device_is dev2 "$d2"

"$KUBECTL" delete pod --all --grace-period=1 --wait=true --timeout=90s >/dev/null 2>&1
nothing_left() { [ -z "$(ls -A "$W/run/pods" 2>/dev/null)" ]; }
check "every pod removed from the node" wait_for 60 nothing_left
none_held() { ! held Dev-1 && ! held Dev-2; }
check "the checkpoint holds no device" wait_for 10 none_held
summary
