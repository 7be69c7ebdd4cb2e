#!/usr/bin/env bash
# End-to-end: CSI persistent volumes on a bosun node against the real test control plane.
# bosun joins as node e2e-csi (its own root/run/data folders, cgroup root, CNI bridge, pod
# subnet and free API ports, and a control plane of its own, so e2e-node.sh and e2e-api.sh can
# run beside it). Two CSI drivers run as a DaemonSet would run them on a real node: the driver
# with its endpoint at <root-dir>/plugins/<driver>/csi.sock and a registrar that puts its
# registration socket in <root-dir>/plugins_registry/. Then:
#   1. the CSINode object lists both drivers with their node id; the node has their topology label;
#   2. a CSIDriver with attachRequired: false and podInfoOnMount: true, a PV on a volume created
#      through the driver's Controller service, a PVC bound to it, a pod that writes a file
#      through the claim: it Succeeds, the file is in the driver's state folder, the driver got
#      the pod info keys, a token for its tokenRequests audience and the PV's volumeAttributes;
#      and the pod's fsGroup applied (default fsGroupPolicy, fsType ext4, RWO);
#   3. the pod deleted: unpublished and unstaged (no mount below the root dir, no globalmount);
#   4. a driver with attachRequired: true: the pod waits with FailedMount (not attached) until
#      the test plays the external-attacher (VolumeAttachment status.attached=true), then runs
#      with the attachment metadata as the publish context;
#      its volume's NodeGetVolumeStats figures in /stats/summary and /metrics; the claim grown
#      while in use (the test plays the external-resizer): NodeExpandVolume, then the claim's
#      status capacity updated and its resize status cleared;
#   5. bosun killed (-9) and restarted while that pod runs: the pod keeps running, its volume
#      is not mounted twice;
#   6. a pod deleted while its driver is down: the volume's data survives, the mount stays until
#      the driver is back, then it is unpublished and unstaged;
#   7. a generic ephemeral volume (ephemeral.volumeClaimTemplate on a StorageClass whose PV
#      exists): the ephemeral volume controller's claim is used and the pod's file lands in the
#      volume; a pod whose <pod>-<volume> claim it does not own is refused (FailedMount);
#   8. a CSI ephemeral inline volume: published without staging, with the kubelet's volume
#      handle, the pod's volumeAttributes, the ephemeral and pod info keys and the
#      nodePublishSecretRef's data; unpublished with the pod; refused (FailedMount) for a driver
#      whose CSIDriver does not list the Ephemeral lifecycle mode;
#   9. a raw block volume (volumeMode: Block, volumeDevices): staged and published at the
#      kubelet's volumeDevices paths, the container reads and writes the device; unpublished
#      and unstaged with the pod; a block local PV (a loop device) given the same way;
#  10. nothing left mounted, staged or running.
# Starts and stops its own control plane and leaves nothing running. Prints `N passed, M failed`.
# Needs root and Go (for the test driver).
#
# THE CSI DRIVER IS A STAND-IN. The real csi-driver-host-path (hostpathplugin) and
# node-driver-registrar cannot be fetched here: the Go module proxy answers 403 for every
# version of github.com/kubernetes-csi/csi-driver-host-path and .../node-driver-registrar. So
# this test runs `csi-testdriver` (tests/csi/testdriver, built by tests/csi/build.sh from the
# upstream CSI spec and kubelet plugin-registration Go modules): `driver` behaves like
# hostpathplugin (bind mounts from its state folder, every node call logged to
# <statedir>/requests.jsonl), `registrar` like node-driver-registrar, and `create-volume` plays
# the external-provisioner's CreateVolume call. The external-attacher is played by kubectl.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
source "$here/env.sh"
source "$here/lib.sh"
D=${1:-/tmp/bosun-e2e-csi-cluster}
W=$(mktemp -d /tmp/bosun-e2e-csi-XXXXXX)
BOSUN=${BOSUN_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/bosun/target}/debug/bosun}
KUBECTL="$K8S_BIN/kubectl"
NODE=e2e-csi
CG=${E2E_CSI_CGROUP:-bosun-e2e-csi}
BRIDGE=${E2E_CSI_BRIDGE:-bosune2ecsi}
POD_SUBNET=${E2E_CSI_POD_SUBNET:-10.248.0.0/24}
# A control plane of its own, beside e2e-node.sh's (bosun-cp0) and e2e-api.sh's (bosun-cp1).
# Every name and range can be overridden, so two runs of this test can share the machine:
#   BOSUN_CP_IF BOSUN_CP_IP BOSUN_CP_SERVICE_CIDR E2E_CSI_BRIDGE E2E_CSI_POD_SUBNET E2E_CSI_CGROUP
export BOSUN_CP_IF=${BOSUN_CP_IF:-bosun-cp2} BOSUN_CP_IP=${BOSUN_CP_IP:-10.250.2.1}
export BOSUN_CP_SERVICE_CIDR=${BOSUN_CP_SERVICE_CIDR:-10.98.0.0/16}
export BOSUN_CP_KUBE_PROXY=0 BOSUN_CP_NODE_NAME=$NODE
NODE_IP=$BOSUN_CP_IP
DRV1=csi-e2e.bosun.dev          # attachRequired: false, podInfoOnMount: true
DRV2=csi-e2e-attach.bosun.dev   # attachRequired: true
csi_pids=()
cleanup() {
    [ -n "${bosun_pid:-}" ] && kill -TERM "$bosun_pid" 2>/dev/null && wait "$bosun_pid" 2>/dev/null
    # The CSI drivers and registrars (SIGTERM: they remove their sockets).
    for p in "${csi_pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for p in "${csi_pids[@]}"; do wait "$p" 2>/dev/null; done
    sleep 0.5
    # Loop devices the stand-in driver attached for block volumes (a failed run).
    for img in "$W"/state*/block/*.img "$W/local-block.img"; do
        [ -e "$img" ] && losetup -j "$img" | cut -d: -f1 | xargs -r -n1 losetup -d 2>/dev/null
    done
    # Whatever bosun left (it should be nothing): containers, keepers, mounts, cgroups, bridge.
    reap_node "$W" "$CG" "$BRIDGE"
    [ -n "${KEEP_LOGS:-}" ] && mkdir -p "$KEEP_LOGS" && cp "$W"/*.log "$D"/logs/kube-controller-manager.log "$KEEP_LOGS" 2>/dev/null &&
        for i in 1 2; do cp "$W/state$i/requests.jsonl" "$KEEP_LOGS/requests-$i.jsonl" 2>/dev/null; done
    bash "$here/down.sh" --purge "$D" >/dev/null 2>&1
    rm -rf "$W"
}
trap cleanup EXIT

bin=$(bash "$root/tests/csi/build.sh" 2>"$W/csi-build.log" | tail -1)
TD="$bin/csi-testdriver"
[ -x "$TD" ] || { cat "$W/csi-build.log"; echo "0 passed, 1 failed"; exit 1; }
bash "$here/up.sh" "$D" >"$W.up.log" 2>&1 || { cat "$W.up.log"; rm -f "$W.up.log"; echo "0 passed, 1 failed"; exit 1; }
rm -f "$W.up.log"
export KUBECONFIG="$D/admin.kubeconfig"
bash "$root/tests/images/build-busybox.sh" "$W/busybox-oci" >/dev/null

# Free ports for the API and healthz (a running kubelet or another e2e may hold 10250/10248).
free_port PORT 21250
free_port HPORT 21248
cat >"$W/config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# Only the memory default of evictionHard: the kubelet's disk defaults (10 % / 15 % free) would
# evict this test's pods and collect its images on a host whose disk is merely quite full.
evictionHard: {memory.available: 100Mi}
port: $PORT
healthzPort: $HPORT
authentication:
  x509: {clientCAFile: $D/pki/ca.crt}
YAML
A=(--root-dir "$W/root" --run-dir "$W/run" --data-dir "$W/data" --pod-logs-dir "$W/logs"
   --container-logs-dir "$W/clogs" --cgroup-root "/$CG" --hostname-override "$NODE"
   --cni-conf-dir "$W/cni" --pod-cidr "$POD_SUBNET")
"$BOSUN" image import "$W/busybox-oci" busybox --data-dir "$W/data" >/dev/null 2>&1
mkdir -p "$W/cni"
cat >"$W/cni/10-e2e-csi.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "bosun-e2e-csi", "plugins": [
  {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_SUBNET"}]], "dataDir": "$W/ipam"}}]}
JSON
start_bosun() {
    "$BOSUN" --kubeconfig "$W/kubeconfig" --bootstrap-kubeconfig "$D/bootstrap.kubeconfig" \
        --cert-dir "$W/pki" --node-ip "$NODE_IP" --config "$W/config.yaml" "${A[@]}" \
        >>"$W/bosun.log" 2>&1 &
    bosun_pid=$!
}
start_bosun
node_ready() { [ "$("$KUBECTL" get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]; }
check "node registers and turns Ready" wait_for 90 node_ready

# The drivers, as their DaemonSet would start them on this node.
sock() { echo "$W/root/plugins/$1/csi.sock"; }
start_driver() { # driver-name state-folder
    mkdir -p "$(dirname "$(sock "$1")")" "$W/root/plugins_registry"
    "$TD" driver --endpoint "unix://$(sock "$1")" --nodeid "$NODE" --drivername "$1" \
        --statedir "$2" >>"$W/driver-$1.log" 2>&1 &
    csi_pids+=($!)
    "$TD" registrar --csi-address "$(sock "$1")" --kubelet-registration-path "$(sock "$1")" \
        --plugin-registration-path "$W/root/plugins_registry" >>"$W/registrar-$1.log" 2>&1 &
    csi_pids+=($!)
}
start_driver "$DRV1" "$W/state1"
start_driver "$DRV2" "$W/state2"
check "both registrars are told registration succeeded" \
    wait_for 30 bash -c "grep -q registered=true '$W/registrar-$DRV1.log' && grep -q registered=true '$W/registrar-$DRV2.log'"

# 1. CSINode and topology labels.
csinode_ok() {
    local out
    out=$("$KUBECTL" get csinode "$NODE" -o jsonpath='{range .spec.drivers[*]}{.name}={.nodeID} {.topologyKeys[*]}{"\n"}{end}') || return 1
    grep -qx "$DRV1=$NODE topology.hostpath.csi/node" <<<"$out" &&
        grep -qx "$DRV2=$NODE topology.hostpath.csi/node" <<<"$out"
}
check "CSINode $NODE lists both drivers with node id $NODE and topology key" wait_for 30 csinode_ok
csinode_owner=$("$KUBECTL" get csinode "$NODE" -o jsonpath='{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}' 2>/dev/null)
check "CSINode is owned by the Node ($csinode_owner)" [ "$csinode_owner" = "Node/$NODE" ]
label() { [ "$("$KUBECTL" get node "$NODE" -o jsonpath='{.metadata.labels.topology\.hostpath\.csi/node}')" = "$NODE" ]; }
check "node has the drivers' topology label topology.hostpath.csi/node=$NODE" wait_for 30 label

# Volumes through the Controller service (the external-provisioner's part).
create_volume() { # driver pv-name -> "id context-json"
    "$TD" create-volume --endpoint "unix://$(sock "$1")" --name "$2" 2>>"$W/create-volume.log" | paste -sd' '
}
read -r VOL1 CTX1 <<<"$(create_volume "$DRV1" pv-e2e-1)"
read -r VOL2 _ <<<"$(create_volume "$DRV2" pv-e2e-2)"
check "volumes created through CreateVolume ($VOL1, $VOL2)" \
    test -n "$VOL1" -a -n "$VOL2" -a -d "$W/state1/volumes/$VOL1" -a -d "$W/state2/volumes/$VOL2"
ident=$(jq -r '."storage.kubernetes.io/csiProvisionerIdentity" // empty' <<<"${CTX1:-{\}}")

cat <<YAML | "$KUBECTL" apply -f - >"$W/apply.log" 2>&1
apiVersion: storage.k8s.io/v1
kind: CSIDriver
metadata: {name: $DRV1}
spec:
  attachRequired: false
  podInfoOnMount: true
  volumeLifecycleModes: [Persistent, Ephemeral]
  tokenRequests: [{audience: e2e-audience, expirationSeconds: 3600}]
---
apiVersion: storage.k8s.io/v1
kind: CSIDriver
metadata: {name: $DRV2}
spec: {attachRequired: true, podInfoOnMount: false, volumeLifecycleModes: [Persistent]}
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: pv-e2e-1}
spec:
  capacity: {storage: 1Mi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: ""
  claimRef: {namespace: default, name: claim-1}
  csi:
    driver: $DRV1
    volumeHandle: $VOL1
    fsType: ext4
    volumeAttributes: {storage.kubernetes.io/csiProvisionerIdentity: "$ident", e2e/color: blue}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: claim-1}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: ""
  volumeName: pv-e2e-1
  resources: {requests: {storage: 1Mi}}
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: pv-e2e-2}
spec:
  capacity: {storage: 1Mi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: ""
  claimRef: {namespace: default, name: claim-2}
  csi: {driver: $DRV2, volumeHandle: $VOL2, fsType: ext4}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: claim-2}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: ""
  volumeName: pv-e2e-2
  resources: {requests: {storage: 1Mi}}
YAML
bound() { [ "$("$KUBECTL" get pvc "$1" -o jsonpath='{.status.phase}')" = Bound ]; }
check "claims bound to their PVs" wait_for 60 bash -c "$(declare -f bound); KUBECTL='$KUBECTL'; bound claim-1 && bound claim-2"

# 2. A pod writes through claim-1 and Succeeds.
cat <<YAML | "$KUBECTL" apply -f - >>"$W/apply.log" 2>&1
apiVersion: v1
kind: Pod
metadata: {name: csi-writer}
spec:
  securityContext: {fsGroup: 2345}
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  restartPolicy: Never
  volumes: [{name: data, persistentVolumeClaim: {claimName: claim-1}}]
  containers:
  - name: c
    image: busybox
    imagePullPolicy: Never
    volumeMounts: [{name: data, mountPath: /data}]
    command: [sh, -c, 'echo written-by-pod > /data/hello && grep -q " /data " /proc/mounts']
YAML
phase() { "$KUBECTL" get pod "$1" -o jsonpath='{.status.phase}' 2>/dev/null; }
succeeded() { [ "$(phase "$1")" = Succeeded ]; }
check "pod csi-writer Succeeds (phase $(wait_for 90 succeeded csi-writer; phase csi-writer))" succeeded csi-writer
check "the pod's file is in the driver's state folder ($(cat "$W/state1/volumes/$VOL1/hello" 2>/dev/null))" \
    bash -c "[ \"\$(cat '$W/state1/volumes/$VOL1/hello' 2>/dev/null)\" = written-by-pod ]"
# fsGroup (the CSIDriver's default fsGroupPolicy ReadWriteOnceWithFSType: fsType ext4, RWO):
# the node gave the volume the group and setgid, so the pod's new file has the group too.
gids=$(stat -c %g "$W/state1/volumes/$VOL1" "$W/state1/volumes/$VOL1/hello" 2>/dev/null | paste -sd' ')
check "fsGroup applied to the CSI volume: group 2345 with setgid, the pod's file in it ($gids)" \
    bash -c "[ '$gids' = '2345 2345' ] && [ -g '$W/state1/volumes/$VOL1' ]"
writer_uid=$("$KUBECTL" get pod csi-writer -o jsonpath='{.metadata.uid}')
request() { # state-folder method jq-filter: the filter holds for the last such request
    [ -s "$1/requests.jsonl" ] && jq -s -e "[.[] | select(.method == \"$2\")] | last | $3" "$1/requests.jsonl" >/dev/null
}
check "NodePublishVolume got the pod info keys" request "$W/state1" NodePublishVolume "
    .volumeContext[\"csi.storage.k8s.io/pod.name\"] == \"csi-writer\" and
    .volumeContext[\"csi.storage.k8s.io/pod.namespace\"] == \"default\" and
    .volumeContext[\"csi.storage.k8s.io/pod.uid\"] == \"$writer_uid\" and
    .volumeContext[\"csi.storage.k8s.io/serviceAccount.name\"] == \"default\" and
    .volumeContext[\"csi.storage.k8s.io/ephemeral\"] == \"false\""
check "NodePublishVolume got a service account token for the CSIDriver's tokenRequests audience" \
    request "$W/state1" NodePublishVolume '
    .volumeContext["csi.storage.k8s.io/serviceAccount.tokens"] | fromjson | .["e2e-audience"] |
    (.token | length > 20) and (.expirationTimestamp | test("^20[0-9-]+T[0-9:]+Z$"))'
check "NodePublishVolume got the PV's volumeAttributes, fsType and the staging path" \
    request "$W/state1" NodePublishVolume "
    .volumeContext[\"e2e/color\"] == \"blue\" and
    .volumeContext[\"storage.kubernetes.io/csiProvisionerIdentity\"] == \"csi-testdriver\" and
    .capability.fsType == \"ext4\" and .capability.accessMode == \"SINGLE_NODE_WRITER\" and
    (.stagingTargetPath | endswith(\"/globalmount\")) and
    (.targetPath == \"$W/root/pods/$writer_uid/volumes/kubernetes.io~csi/pv-e2e-1/mount\")"
check "NodeStageVolume got no pod info (stage is per volume)" request "$W/state1" NodeStageVolume \
    '.volumeId != null and (.volumeContext | has("csi.storage.k8s.io/pod.name") | not)'

# 3. Deleting the pod: unpublished and unstaged.
"$KUBECTL" delete pod csi-writer --wait=false >/dev/null 2>&1
gone() { ! "$KUBECTL" get pod "$1" >/dev/null 2>&1; }
check "pod csi-writer deleted" wait_for 60 gone csi-writer
mounts_below_root() { grep -c " $W/root/" /proc/self/mountinfo; }
no_mounts() { [ "$(mounts_below_root)" = 0 ]; }
check "no mount left below the root dir ($(wait_for 20 no_mounts; mounts_below_root))" no_mounts
stage_dir="$W/root/plugins/kubernetes.io/csi/$DRV1/$(printf %s "$VOL1" | sha256sum | cut -d' ' -f1)"
check "the globalmount folder is gone" bash -c "! test -e '$stage_dir/globalmount' && ! test -e '$stage_dir'"
check "the driver got NodeUnpublishVolume and NodeUnstageVolume" bash -c \
    "grep -q '\"method\":\"NodeUnpublishVolume\"' '$W/state1/requests.jsonl' && grep -q '\"method\":\"NodeUnstageVolume\"' '$W/state1/requests.jsonl'"

# 4. attachRequired: the pod waits for the VolumeAttachment.
cat <<YAML | "$KUBECTL" apply -f - >>"$W/apply.log" 2>&1
apiVersion: v1
kind: Pod
metadata: {name: csi-attached}
spec:
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  volumes: [{name: data, persistentVolumeClaim: {claimName: claim-2}}]
  containers:
  - name: c
    image: busybox
    imagePullPolicy: Never
    volumeMounts: [{name: data, mountPath: /data}]
    command: [sh, -c, 'echo attached > /data/hello; trap "exit 0" TERM; while true; do sleep 0.2; done']
YAML
failed_mount() {
    "$KUBECTL" get events --field-selector involvedObject.name=csi-attached,reason=FailedMount \
        -o jsonpath='{.items[*].message}' 2>/dev/null | grep -q 'not attached'
}
check "pod csi-attached waits with a FailedMount event (not attached)" wait_for 60 failed_mount
running() { [ "$(phase "$1")" = Running ]; }
check "pod csi-attached is not Running before the attach ($(phase csi-attached))" bash -c "! [ '$(phase csi-attached)' = Running ]"
va=csi-$(printf %s "pv-e2e-2$DRV2$NODE" | sha256sum | cut -d' ' -f1)
# The attach/detach controller may have created it already (the node is controller-managed).
cat <<YAML | "$KUBECTL" create -f - >>"$W/apply.log" 2>&1
apiVersion: storage.k8s.io/v1
kind: VolumeAttachment
metadata: {name: $va}
spec:
  attacher: $DRV2
  nodeName: $NODE
  source: {persistentVolumeName: pv-e2e-2}
YAML
"$KUBECTL" patch volumeattachment "$va" --subresource=status --type=merge \
    -p '{"status": {"attached": true, "attachmentMetadata": {"devicePath": "/dev/e2e-csi"}}}' >>"$W/apply.log" 2>&1
check "VolumeAttachment $va attached" bash -c "[ \"\$('$KUBECTL' get volumeattachment $va -o jsonpath='{.status.attached}')\" = true ]"
check "pod csi-attached runs once attached" wait_for 90 running csi-attached
check "the attachment metadata is the publish context of stage and publish" bash -c "
    $(declare -f request); request '$W/state2' NodeStageVolume '.publishContext.devicePath == \"/dev/e2e-csi\"' &&
    request '$W/state2' NodePublishVolume '.publishContext.devicePath == \"/dev/e2e-csi\"'"
check "the pod's file is in the second driver's state folder" \
    wait_for 10 bash -c "[ \"\$(cat '$W/state2/volumes/$VOL2/hello' 2>/dev/null)\" = attached ]"

# Volume stats: NodeGetVolumeStats (the driver reports the size CreateVolume recorded) in
# /stats/summary and /metrics, read through the apiserver's node proxy.
summary_volume() { # pod volume -> the volume's entry
    "$KUBECTL" get --raw "/api/v1/nodes/$NODE/proxy/stats/summary" 2>/dev/null |
        jq -c --arg p "$1" --arg v "$2" '.pods[] | select(.podRef.name == $p) | .volume[]? | select(.name == $v)'
}
stats_ok() {
    summary_volume csi-attached data | jq -e '.capacityBytes == 1048576 and .usedBytes == 9 and
        .availableBytes == 1048567 and .pvcRef.name == "claim-2" and .pvcRef.namespace == "default" and
        .inodes > 0' >/dev/null
}
check "/stats/summary: csi-attached's volume with the driver's capacityBytes ($(wait_for 30 stats_ok; summary_volume csi-attached data))" stats_ok
check "NodeGetVolumeStats was called on the publish path with the staging path" \
    request "$W/state2" NodeGetVolumeStats "
    .volumeId == \"$VOL2\" and (.volumePath | endswith(\"/volumes/kubernetes.io~csi/pv-e2e-2/mount\")) and
    (.stagingTargetPath | endswith(\"/globalmount\"))"
metric_line='kubelet_volume_stats_capacity_bytes{namespace="default",persistentvolumeclaim="claim-2"} 1048576'
check "/metrics: $metric_line" bash -c \
    "'$KUBECTL' get --raw /api/v1/nodes/$NODE/proxy/metrics 2>/dev/null | grep -qxF '$metric_line'"

# Online expansion. The test plays the external-resizer after ControllerExpandVolume: the PV
# grows to 2Mi and the claim's status asks for the node's part (NodeResizePending).
"$KUBECTL" patch pv pv-e2e-2 --type=merge -p '{"spec": {"capacity": {"storage": "2Mi"}}}' >>"$W/apply.log" 2>&1
"$KUBECTL" patch pvc claim-2 --subresource=status --type=merge \
    -p '{"status": {"allocatedResources": {"storage": "2Mi"}, "allocatedResourceStatuses": {"storage": "NodeResizePending"}}}' >>"$W/apply.log" 2>&1
pvc_status() { "$KUBECTL" get pvc claim-2 -o jsonpath='{.status.capacity.storage} {.status.allocatedResourceStatuses}' 2>/dev/null; }
resized() { [ "$(pvc_status)" = "2Mi " ]; }
check "claim-2 grown by the node: status capacity 2Mi, resize status cleared ($(wait_for 60 resized; pvc_status))" resized
check "NodeExpandVolume on the publish path with the PV's new size" request "$W/state2" NodeExpandVolume "
    .volumeId == \"$VOL2\" and .requiredBytes == 2097152 and
    (.volumePath | endswith(\"/volumes/kubernetes.io~csi/pv-e2e-2/mount\"))"
grown() { summary_volume csi-attached data | jq -e '.capacityBytes == 2097152' >/dev/null; }
check "/stats/summary shows the grown capacity ($(wait_for 20 grown; summary_volume csi-attached data | jq -c .capacityBytes))" grown
check "the pod ran on through the expansion ($(phase csi-attached))" running csi-attached

# 5. bosun killed (-9) and restarted while the CSI pod runs.
att_uid=$("$KUBECTL" get pod csi-attached -o jsonpath='{.metadata.uid}')
target="$W/root/pods/$att_uid/volumes/kubernetes.io~csi/pv-e2e-2/mount"
count_mounts() { awk -v p="$1" '$5 == p' /proc/self/mountinfo | wc -l; }
before=$(count_mounts "$target")
cid_before=$("$KUBECTL" get pod csi-attached -o jsonpath='{.status.containerStatuses[0].containerID}')
publishes_before=$(grep -c '"method":"NodePublishVolume"' "$W/state2/requests.jsonl")
kill -KILL "$bosun_pid"; wait "$bosun_pid" 2>/dev/null
start_bosun
healthz() { [ "$(curl -s "http://127.0.0.1:$HPORT/healthz")" = ok ]; }
wait_for 30 healthz
# The restarted worker sets the pod's volumes up again (NodePublishVolume is idempotent).
republished() { [ "$(grep -c '"method":"NodePublishVolume"' "$W/state2/requests.jsonl")" -gt "$publishes_before" ]; }
wait_for 30 republished
sleep 3
after=$(count_mounts "$target")
cid_after=$("$KUBECTL" get pod csi-attached -o jsonpath='{.status.containerStatuses[0].containerID} {.status.containerStatuses[0].restartCount} {.status.phase}')
check "after kill -9 + restart the pod runs on, same container ($cid_after)" [ "$cid_after" = "$cid_before 0 Running" ]
check "the publish path is mounted once before and after the restart ($before, $after)" \
    bash -c "[ '$before' = 1 ] && [ '$after' = 1 ]"
staging2="$W/root/plugins/kubernetes.io/csi/$DRV2/$(printf %s "$VOL2" | sha256sum | cut -d' ' -f1)/globalmount"
check "the staging path is mounted once ($(count_mounts "$staging2"))" [ "$(count_mounts "$staging2")" = 1 ]
out=$("$KUBECTL" exec csi-attached -- cat /data/hello 2>&1)
check "the volume is still seen inside the container ($out)" [ "$out" = attached ]

# 6. The pod deleted while its driver is down (its DaemonSet pod restarting): the volume's data
# survives, the mount stays until the driver is back, then it is unpublished and unstaged.
drv2_pid=${csi_pids[2]}
kill -TERM "$drv2_pid"; wait "$drv2_pid" 2>/dev/null
"$KUBECTL" delete pod csi-attached --wait=false >/dev/null 2>&1
check "pod csi-attached deleted while its driver is down" wait_for 60 gone csi-attached
check "the volume's data survived ($(cat "$W/state2/volumes/$VOL2/hello" 2>/dev/null))" \
    bash -c "[ \"\$(cat '$W/state2/volumes/$VOL2/hello' 2>/dev/null)\" = attached ]"
check "the publish path stays mounted while the driver is down ($(count_mounts "$target"))" [ "$(count_mounts "$target")" = 1 ]
"$TD" driver --endpoint "unix://$(sock "$DRV2")" --nodeid "$NODE" --drivername "$DRV2" \
    --statedir "$W/state2" >>"$W/driver-$DRV2.log" 2>&1 &
csi_pids+=($!)
check "driver back: unpublished and unstaged ($(wait_for 30 no_mounts; mounts_below_root) mounts left)" no_mounts
# Not checked: the attach/detach controller's own attach/detach. In this control plane it logs
# "AttachVolume started" but neither creates the VolumeAttachment nor, later, deletes it.

# 7. Generic ephemeral volumes. The test plays the provisioner: a PV of the StorageClass exists.
read -r VOLE _ <<<"$(create_volume "$DRV1" pv-e2e-eph)"
cat <<YAML | "$KUBECTL" apply -f - >>"$W/apply.log" 2>&1
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: e2e-eph}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: Immediate
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: pv-e2e-eph}
spec:
  capacity: {storage: 1Mi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: e2e-eph
  csi: {driver: $DRV1, volumeHandle: $VOLE}
---
apiVersion: v1
kind: Pod
metadata: {name: eph-writer}
spec:
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  restartPolicy: Never
  volumes:
  - name: scratch
    ephemeral:
      volumeClaimTemplate:
        spec:
          accessModes: [ReadWriteOnce]
          storageClassName: e2e-eph
          resources: {requests: {storage: 1Mi}}
  containers:
  - name: c
    image: busybox
    imagePullPolicy: Never
    volumeMounts: [{name: scratch, mountPath: /scratch}]
    command: [sh, -c, 'echo ephemeral-claim > /scratch/hello && grep -q " /scratch " /proc/mounts']
YAML
check "pod eph-writer Succeeds (phase $(wait_for 120 succeeded eph-writer; phase eph-writer))" succeeded eph-writer
eph_owner=$("$KUBECTL" get pvc eph-writer-scratch -o jsonpath='{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}/{.metadata.ownerReferences[0].controller} {.spec.volumeName}' 2>/dev/null)
check "claim eph-writer-scratch made by the controller, owned by the pod, bound ($eph_owner)" [ "$eph_owner" = "Pod/eph-writer/true pv-e2e-eph" ]
check "the pod's file is in the ephemeral claim's volume ($(cat "$W/state1/volumes/$VOLE/hello" 2>/dev/null))" \
    bash -c "[ \"\$(cat '$W/state1/volumes/$VOLE/hello' 2>/dev/null)\" = ephemeral-claim ]"
eph_uid=$("$KUBECTL" get pod eph-writer -o jsonpath='{.metadata.uid}')
check "NodePublishVolume of the claim's PV (pv-e2e-eph, not ephemeral)" request "$W/state1" NodePublishVolume "
    .volumeId == \"$VOLE\" and .volumeContext[\"csi.storage.k8s.io/ephemeral\"] == \"false\" and
    .targetPath == \"$W/root/pods/$eph_uid/volumes/kubernetes.io~csi/pv-e2e-eph/mount\""
"$KUBECTL" delete pod eph-writer --wait=false >/dev/null 2>&1
check "pod eph-writer deleted, its volume unpublished" wait_for 60 bash -c "$(declare -f gone); KUBECTL='$KUBECTL'; gone eph-writer && ! test -e '$W/root/pods/$eph_uid'"
# A claim named <pod>-<volume> the pod does not own: never used (bound to nodeName directly,
# as the scheduler refuses it too).
cat <<YAML | "$KUBECTL" apply -f - >>"$W/apply.log" 2>&1
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: eph-foreign-scratch}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: e2e-none
  resources: {requests: {storage: 1Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: eph-foreign}
spec:
  nodeName: $NODE
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  volumes:
  - name: scratch
    ephemeral:
      volumeClaimTemplate:
        spec:
          accessModes: [ReadWriteOnce]
          storageClassName: e2e-none
          resources: {requests: {storage: 1Mi}}
  containers:
  - {name: c, image: busybox, imagePullPolicy: Never, command: [sleep, "3600"], volumeMounts: [{name: scratch, mountPath: /scratch}]}
YAML
event_says() { # pod reason text
    "$KUBECTL" get events --field-selector "involvedObject.name=$1,reason=$2" \
        -o jsonpath='{.items[*].message}' 2>/dev/null | grep -qF "$3"
}
check "a pod not owning its <pod>-<volume> claim gets FailedMount (pod is not owner)" \
    wait_for 60 event_says eph-foreign FailedMount "PVC default/eph-foreign-scratch was not created for pod default/eph-foreign (pod is not owner)"
check "... and does not run ($(phase eph-foreign))" bash -c "[ '$(phase eph-foreign)' = Pending ]"
"$KUBECTL" delete pod eph-foreign --wait=false >/dev/null 2>&1
"$KUBECTL" delete pvc eph-foreign-scratch --wait=false >/dev/null 2>&1

# 8. CSI ephemeral inline volumes.
cat <<YAML | "$KUBECTL" apply -f - >>"$W/apply.log" 2>&1
apiVersion: v1
kind: Secret
metadata: {name: inline-secret}
stringData: {password: s3cret}
---
apiVersion: v1
kind: Pod
metadata: {name: inline-writer}
spec:
  securityContext: {fsGroup: 3456}
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  volumes:
  - name: data
    csi:
      driver: $DRV1
      volumeAttributes: {e2e/inline: "yes"}
      nodePublishSecretRef: {name: inline-secret}
  containers:
  - name: c
    image: busybox
    imagePullPolicy: Never
    volumeMounts: [{name: data, mountPath: /data}]
    command: [sh, -c, 'echo inline > /data/hello; trap "exit 0" TERM; while true; do sleep 0.2; done']
---
apiVersion: v1
kind: Pod
metadata: {name: inline-refused}
spec:
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  volumes: [{name: data, csi: {driver: $DRV2}}]
  containers:
  - {name: c, image: busybox, imagePullPolicy: Never, command: [sleep, "3600"], volumeMounts: [{name: data, mountPath: /data}]}
YAML
check "pod inline-writer runs" wait_for 90 running inline-writer
inl_uid=$("$KUBECTL" get pod inline-writer -o jsonpath='{.metadata.uid}')
inl_handle=csi-$(printf %s "${inl_uid}data" | sha256sum | cut -d' ' -f1)
check "the inline volume holds the pod's file ($(cat "$W/state1/ephemeral/$inl_handle/hello" 2>/dev/null))" \
    wait_for 10 bash -c "[ \"\$(cat '$W/state1/ephemeral/$inl_handle/hello' 2>/dev/null)\" = inline ]"
check "NodePublishVolume: kubelet's handle, no staging, attributes, ephemeral and pod keys, secret" \
    request "$W/state1" NodePublishVolume "
    .volumeId == \"$inl_handle\" and .stagingTargetPath == \"\" and
    .volumeContext[\"e2e/inline\"] == \"yes\" and
    .volumeContext[\"csi.storage.k8s.io/ephemeral\"] == \"true\" and
    .volumeContext[\"csi.storage.k8s.io/pod.name\"] == \"inline-writer\" and
    .volumeContext[\"csi.storage.k8s.io/pod.uid\"] == \"$inl_uid\" and
    .secrets.password == \"s3cret\" and
    .targetPath == \"$W/root/pods/$inl_uid/volumes/kubernetes.io~csi/data/mount\""
inl_gid=$(stat -c %g "$W/state1/ephemeral/$inl_handle" 2>/dev/null)
check "no fsGroup on an inline volume without fsType (ReadWriteOnceWithFSType; group $inl_gid)" \
    bash -c "[ -n '$inl_gid' ] && [ '$inl_gid' != 3456 ]"
inline_stats() { summary_volume inline-writer data | jq -e '.capacityBytes > 0 and (has("pvcRef") | not)' >/dev/null; }
check "/stats/summary: the inline volume, without pvcRef ($(wait_for 20 inline_stats; summary_volume inline-writer data))" inline_stats
inl_vd="$W/root/pods/$inl_uid/volumes/kubernetes.io~csi/data/vol_data.json"
check "vol_data.json says Ephemeral ($(jq -c '[.volumeLifecycleMode, .specVolID]' "$inl_vd" 2>/dev/null))" \
    bash -c "[ \"\$(jq -r .volumeLifecycleMode '$inl_vd')\" = Ephemeral ]"
check "NodeStageVolume never called for the inline volume" bash -c \
    "! jq -e -s '[.[] | select(.method == \"NodeStageVolume\" and .volumeId == \"$inl_handle\")] | length > 0' '$W/state1/requests.jsonl' >/dev/null"
check "a driver without the Ephemeral lifecycle mode is refused with FailedMount" \
    wait_for 60 event_says inline-refused FailedMount "volume mode \"Ephemeral\" not supported by driver $DRV2"
check "... and the refused pod does not run ($(phase inline-refused))" bash -c "[ '$(phase inline-refused)' = Pending ]"
"$KUBECTL" delete pod inline-writer inline-refused --wait=false >/dev/null 2>&1
check "inline pods deleted" wait_for 60 bash -c "$(declare -f gone); KUBECTL='$KUBECTL'; gone inline-writer && gone inline-refused"
check "the inline volume is unpublished and its folders removed" wait_for 20 bash -c \
    "! test -e '$W/root/pods/$inl_uid' && ! test -e '$W/state1/ephemeral/$inl_handle' &&
     jq -e -s '[.[] | select(.method == \"NodeUnpublishVolume\" and .volumeId == \"$inl_handle\")] | length == 1' '$W/state1/requests.jsonl' >/dev/null"

# 9. A raw block volume (volumeMode: Block): the stand-in driver's volume is a loop device.
read -r VOLB _ <<<"$(create_volume "$DRV1" pv-e2e-block)"
cat <<YAML | "$KUBECTL" apply -f - >>"$W/apply.log" 2>&1
apiVersion: v1
kind: PersistentVolume
metadata: {name: pv-e2e-block}
spec:
  capacity: {storage: 1Mi}
  volumeMode: Block
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: ""
  claimRef: {namespace: default, name: claim-block}
  csi: {driver: $DRV1, volumeHandle: $VOLB}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: claim-block}
spec:
  volumeMode: Block
  accessModes: [ReadWriteOnce]
  storageClassName: ""
  volumeName: pv-e2e-block
  resources: {requests: {storage: 1Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: block-writer}
spec:
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  restartPolicy: Never
  volumes: [{name: raw, persistentVolumeClaim: {claimName: claim-block}}]
  containers:
  - name: c
    image: busybox
    imagePullPolicy: Never
    volumeDevices: [{name: raw, devicePath: /dev/xvda}]
    command: [sh, -c, '[ -b /dev/xvda ] && printf block-data | dd of=/dev/xvda conv=fsync 2>/dev/null && [ "\$(dd if=/dev/xvda bs=10 count=1 2>/dev/null)" = block-data ]']
YAML
check "pod block-writer writes and reads its block device (phase $(wait_for 90 succeeded block-writer; phase block-writer))" succeeded block-writer
check "the data is on the volume's backing storage ($(head -c 10 "$W/state1/block/$VOLB.img" 2>/dev/null))" \
    bash -c "[ \"\$(head -c 10 '$W/state1/block/$VOLB.img' 2>/dev/null)\" = block-data ]"
blk_uid=$("$KUBECTL" get pod block-writer -o jsonpath='{.metadata.uid}')
BD="$W/root/plugins/kubernetes.io/csi/volumeDevices"
check "block NodeStageVolume and NodePublishVolume at the kubelet's volumeDevices paths" bash -c "
    $(declare -f request); request '$W/state1' NodeStageVolume '.capability.block == true and .stagingTargetPath == \"$BD/staging/pv-e2e-block\"' &&
    request '$W/state1' NodePublishVolume '.capability.block == true and .targetPath == \"$BD/publish/pv-e2e-block/$blk_uid\" and .stagingTargetPath == \"$BD/staging/pv-e2e-block\"'"
"$KUBECTL" delete pod block-writer --wait=false >/dev/null 2>&1
check "pod block-writer deleted" wait_for 60 gone block-writer
blk_gone() { [ -z "$(losetup -j "$W/state1/block/$VOLB.img" 2>/dev/null)" ] && ! test -e "$BD/pv-e2e-block" && ! test -e "$BD/publish/pv-e2e-block" && ! test -e "$BD/staging/pv-e2e-block"; }
check "block volume unpublished and unstaged: loop device detached, folders gone" wait_for 20 blk_gone

# A block local PV: a loop device of this node, given to the container through volumeDevices.
truncate -s 1M "$W/local-block.img"
LOOP=$(losetup -f --show "$W/local-block.img")
cat <<YAML | "$KUBECTL" apply -f - >>"$W/apply.log" 2>&1
apiVersion: v1
kind: PersistentVolume
metadata: {name: pv-e2e-local-block}
spec:
  capacity: {storage: 1Mi}
  volumeMode: Block
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: ""
  claimRef: {namespace: default, name: claim-local-block}
  local: {path: $LOOP}
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions: [{key: kubernetes.io/hostname, operator: In, values: [$NODE]}]
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: claim-local-block}
spec:
  volumeMode: Block
  accessModes: [ReadWriteOnce]
  storageClassName: ""
  volumeName: pv-e2e-local-block
  resources: {requests: {storage: 1Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: local-block-writer}
spec:
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  restartPolicy: Never
  volumes: [{name: raw, persistentVolumeClaim: {claimName: claim-local-block}}]
  containers:
  - name: c
    image: busybox
    imagePullPolicy: Never
    volumeDevices: [{name: raw, devicePath: /dev/xvdb}]
    command: [sh, -c, '[ -b /dev/xvdb ] && printf local-blk | dd of=/dev/xvdb conv=fsync 2>/dev/null']
YAML
check "pod local-block-writer writes its local block PV (phase $(wait_for 90 succeeded local-block-writer; phase local-block-writer))" succeeded local-block-writer
check "the data is on the loop device's file ($(head -c 9 "$W/local-block.img"))" \
    bash -c "[ \"\$(head -c 9 '$W/local-block.img')\" = local-blk ]"
"$KUBECTL" delete pod local-block-writer --wait=false >/dev/null 2>&1
check "pod local-block-writer deleted" wait_for 60 gone local-block-writer
losetup -d "$LOOP" 2>/dev/null

# 10. Nothing left.
check "no mount left below the root dir ($(wait_for 20 no_mounts; mounts_below_root))" no_mounts
leftover() { find "$W/root/plugins/kubernetes.io" -name globalmount -o -name vol_data.json 2>/dev/null; ls "$W/root/pods" 2>/dev/null; }
check "no staging or pod folder left ($(leftover | tr '\n' ' '))" bash -c "[ -z \"\$($(declare -f leftover); W='$W'; leftover)\" ]"
kill -TERM "$bosun_pid"; wait "$bosun_pid" 2>/dev/null; bosun_pid=
no_containers() { [ -z "$(find /sys/fs/cgroup/*/$CG -name cgroup.procs -exec cat {} + 2>/dev/null)" ]; }
check "no container process left in the cgroup root" no_containers
summary
