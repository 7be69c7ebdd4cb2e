#!/usr/bin/env bash
# End-to-end: CSI on a bosun node with the Kubernetes CSI reference components, against the real
# test control plane. bosun joins as node e2e-csi (its own root/run/data folders, cgroup root,
# CNI bridge, pod subnet, free API ports and a control plane of its own, so e2e-node.sh and
# e2e-api.sh can run beside it) and hosts its own storage stack: csi-driver-host-path's
# hostpathplugin with node-driver-registrar, external-provisioner, -attacher and -resizer, as
# upstream deploys them (one StatefulSet pod, a shared socket folder, the driver privileged with
# Bidirectional mounts of the node's folders), from images built here from the released sources
# (tests/csi/upstream: build.sh, deploy.sh, hostpath.yaml) and pulled from a local registry.
# Then:
#   1. registration through plugins_registry: the CSINode entry (node id, topology key,
#      allocatable count) from the driver's NodeGetInfo, the topology label on the Node;
#   2. dynamic provisioning: a StorageClass, a 3-replica StatefulSet with volumeClaimTemplates
#      (WaitForFirstConsumer, the provisioner's topology from CSINode); the attach/detach
#      controller's VolumeAttachments, attached by csi-attacher, the Node's volumesAttached and
#      volumesInUse; pod info, tokenRequests and fsGroup reach the driver; data survives a pod's
#      deletion and its recreation; scale to 0 (unpublished, unstaged, detached) and back;
#   3. a StatefulSet of raw block volumes (volumeMode: Block), data surviving recreation;
#   4. the driver pod gone: a deleted pod's volume stays mounted and in volumesInUse, so the
#      attach/detach controller does not detach it; a new pod on that claim waits (FailedMount)
#      and starts once the driver is back, with the data;
#   5. online expansion through csi-resizer (FileSystemResizeSuccessful on pod and claim) and a
#      node expansion the driver refuses (NodeResizeInfeasible, NodeResizeError, VolumeResizeFailed);
#   6. CSI ephemeral inline volumes and generic ephemeral volumes;
#   7. bosun killed (-9) while NodePublishVolume runs (after NodeStageVolume), and killed with
#      volumes mounted: no unmount, no second mount, nothing staged twice;
#   8. volume stats in /stats/summary and /metrics; a block local PV;
#   9. everything deleted: volumes deleted by the provisioner, nothing mounted, staged, attached
#      or running.
# Starts and stops its own control plane and registry and leaves nothing running. Prints
# `N passed, M failed`. Needs root, Go (first run: builds the components, see
# tests/cluster/README.md), docker-registry, skopeo and strace.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
source "$here/env.sh"
source "$here/lib.sh"
D=${1:-/tmp/bosun-e2e-csi-cluster}
W=$(mktemp -d /tmp/bosun-e2e-csi-XXXXXX)
BOSUN=${BOSUN_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/bosun/target}/debug/bosun}
KUBECTL="$K8S_BIN/kubectl"
export KUBECTL
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
DRV=hostpath.csi.k8s.io
DATA="$W/hostpath-data"   # the driver's state folder (its volumes are folders and files here)
ROOT="$W/root"
k() { "$KUBECTL" "$@"; }
cleanup() {
    [ -n "${strace_pid:-}" ] && kill -KILL "$strace_pid" 2>/dev/null
    [ -n "${watch_pid:-}" ] && kill "$watch_pid" 2>/dev/null
    if [ -n "${KEEP_LOGS:-}" ]; then
        mkdir -p "$KEEP_LOGS"
        cp -r "$W"/*.log "$W/logs" "$D/logs" "$KEEP_LOGS/" 2>/dev/null
    fi
    [ -n "${bosun_pid:-}" ] && kill -TERM "$bosun_pid" 2>/dev/null && wait "$bosun_pid" 2>/dev/null
    [ -n "${registry_pid:-}" ] && kill "$registry_pid" 2>/dev/null
    sleep 0.5
    # Loop devices the driver attached for block volumes (a failed run).
    for img in "$DATA"/* "$W/local-block.img"; do
        [ -f "$img" ] && losetup -j "$img" | cut -d: -f1 | xargs -r -n1 losetup -d 2>/dev/null
    done
    # Whatever bosun left (it should be nothing): containers, keepers, mounts, cgroups, bridge.
    reap_node "$W" "$CG" "$BRIDGE"
    bash "$here/down.sh" --purge "$D" >/dev/null 2>&1
    rm -rf "$W"
}
trap cleanup EXIT

# The five components and their images (built once per tag, cached).
bash "$root/tests/csi/upstream/build.sh" >"$W/csi-build.log" 2>&1 ||
    { cat "$W/csi-build.log"; echo "0 passed, 1 failed"; exit 1; }
for tool in docker-registry skopeo strace; do
    command -v "$tool" >/dev/null || { echo "$tool is missing (hack/setup.sh installs it)"; echo "0 passed, 1 failed"; exit 1; }
done
bash "$here/up.sh" "$D" >"$W/up.log" 2>&1 || { cat "$W/up.log"; echo "0 passed, 1 failed"; exit 1; }
export KUBECONFIG="$D/admin.kubeconfig"
source "$D/state/env"
bash "$root/tests/images/build-busybox.sh" "$W/busybox-oci" >/dev/null

# Free ports for the API, healthz and the registry (a kubelet or another e2e may hold some).
free_port PORT 21250
free_port HPORT 21248
free_port REG_PORT 25000
REGISTRY=127.0.0.1:$REG_PORT
mkdir -p "$W/registry"
cat >"$W/registry/config.yml" <<YAML
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: $W/registry/data}}
http: {addr: $REGISTRY}
YAML
docker-registry serve "$W/registry/config.yml" >"$W/registry.log" 2>&1 &
registry_pid=$!
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
A=(--root-dir "$ROOT" --run-dir "$W/run" --data-dir "$W/data" --pod-logs-dir "$W/logs"
   --container-logs-dir "$W/clogs" --cgroup-root "/$CG" --hostname-override "$NODE"
   --cni-conf-dir "$W/cni" --pod-cidr "$POD_SUBNET")
"$BOSUN" image import "$W/busybox-oci" busybox --data-dir "$W/data" >/dev/null 2>&1
mkdir -p "$W/cni"
# A default route through the bridge: the sidecars reach the apiserver at the host's address.
cat >"$W/cni/10-e2e-csi.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "bosun-e2e-csi", "plugins": [
  {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_SUBNET"}]], "dataDir": "$W/ipam",
            "routes": [{"dst": "0.0.0.0/0"}]}}]}
JSON
start_bosun() {
    "$BOSUN" --kubeconfig "$W/kubeconfig" --bootstrap-kubeconfig "$D/bootstrap.kubeconfig" \
        --cert-dir "$W/pki" --node-ip "$NODE_IP" --config "$W/config.yaml" "${A[@]}" \
        >>"$W/bosun.log" 2>&1 &
    bosun_pid=$!
}
start_bosun
node_ready() { [ "$(k get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]; }
check "node registers and turns Ready" wait_for 90 node_ready

# The storage stack, as pods on bosun. The driver implements ControllerPublishVolume
# (--enable-attach: it refuses NodeStageVolume of a volume csi-attacher has not published to the
# node, so staging before the VolumeAttachment is attached fails), refuses node expansions above
# 1 GiB (the failing expansion of section 5) and reports 16 volumes per node.
phase() { k get pod "$1" -o jsonpath='{.status.phase}' 2>/dev/null; }
running() { [ "$(phase "$1")" = Running ]; }
gone() { ! k get pod "$1" >/dev/null 2>&1; }
ready_containers() { k get pod csi-hostpathplugin-0 -o jsonpath='{range .status.containerStatuses[*]}{.name}={.ready} {end}' 2>/dev/null; }
stack_ready() { [ "$(ready_containers | tr ' ' '\n' | grep -c '=true$')" = 5 ]; }
registered() { k get csinode "$NODE" -o jsonpath='{.spec.drivers[*].name}' 2>/dev/null | tr ' ' '\n' | grep -qx "$DRV"; }

bash "$root/tests/csi/upstream/deploy.sh" "$REGISTRY" "$ROOT" "$DATA" "$BOSUN_CP_IP:$API_PORT" "$NODE" \
    --enable-attach=true --maxvolumespernode=16 --max-volume-size-node=1073741824 >"$W/deploy.log" 2>&1
check "the CSI stack runs on bosun: 5 containers Ready ($(wait_for 60 stack_ready; ready_containers))" stack_ready
if ! stack_ready; then  # nothing below can pass without the stack
    cat "$W/deploy.log"
    echo "$passed passed, $((failed + 1)) failed (the rest not run)"
    exit 1
fi
images() { k get pod csi-hostpathplugin-0 -o jsonpath='{range .status.containerStatuses[*]}{.image}{"\n"}{end}' 2>/dev/null; }
check "its five images pulled from the local registry ($(images | grep -c "^$REGISTRY/sig-storage/"))" \
    [ "$(images | grep -c "^$REGISTRY/sig-storage/")" = 5 ]
driver_log() { k logs csi-hostpathplugin-0 -c hostpath 2>/dev/null; }
# The driver logs every call as JSON (`gRPCCall: {"Method":..., "Request":..., "Response":...,
# "Error":...}`, what Kubernetes' own CSI e2e tests read): jq over them, true when the filter holds.
calls() { driver_log | sed -n 's/^.*gRPCCall: //p' | jq -s -e "$1" >/dev/null; }
method() { echo "map(select(.Method == \"/csi.v1.Node/$1\"))"; }

# 1. Registration and the CSINode object.
reg_logged() { k logs csi-hostpathplugin-0 -c node-driver-registrar 2>/dev/null | grep -q 'Received NotifyRegistrationStatus call.*status="plugin_registered:true"'; }
check "the registrar was told registration succeeded (through $ROOT/plugins_registry)" wait_for 30 reg_logged
csinode() { k get csinode "$NODE" -o jsonpath="{range .spec.drivers[?(@.name==\"$DRV\")]}{.nodeID} {.topologyKeys[*]} {.allocatable.count}{end}" 2>/dev/null; }
check "CSINode $NODE: $DRV with node id, topology key and allocatable count from NodeGetInfo ($(csinode))" \
    bash -c "[ \"\$($(declare -f k csinode); KUBECTL='$KUBECTL' NODE=$NODE DRV=$DRV csinode)\" = '$NODE topology.hostpath.csi/node 16' ]"
csinode_owner=$(k get csinode "$NODE" -o jsonpath='{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}' 2>/dev/null)
check "CSINode is owned by the Node ($csinode_owner)" [ "$csinode_owner" = "Node/$NODE" ]
label() { [ "$(k get node "$NODE" -o jsonpath='{.metadata.labels.topology\.hostpath\.csi/node}')" = "$NODE" ]; }
check "the Node has the driver's topology label topology.hostpath.csi/node=$NODE" wait_for 30 label
check "NodeGetInfo answered the node id $NODE" calls "$(method NodeGetInfo) | last | .Response.node_id == \"$NODE\""

# 2. Dynamic provisioning with a StatefulSet. The CSIDriver also asks for a token (tokenRequests).
k patch csidriver "$DRV" --type=merge -p '{"spec": {"tokenRequests": [{"audience": "e2e-audience"}]}}' >"$W/apply.log" 2>&1
cat <<YAML | k apply -f - >>"$W/apply.log" 2>&1
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: csi-hostpath-sc}
provisioner: $DRV
reclaimPolicy: Delete
volumeBindingMode: WaitForFirstConsumer
allowVolumeExpansion: true
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: csi-hostpath-immediate}
provisioner: $DRV
reclaimPolicy: Delete
volumeBindingMode: Immediate
allowVolumeExpansion: true
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  serviceName: web
  replicas: 3
  podManagementPolicy: Parallel
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      securityContext: {fsGroup: 2345}
      automountServiceAccountToken: false
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: busybox
        imagePullPolicy: Never
        volumeMounts: [{name: data, mountPath: /data}]
        command: [sh, -c, '[ -f /data/id ] || hostname > /data/id; echo start >> /data/starts; trap "exit 0" TERM; while true; do sleep 0.2; done']
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      storageClassName: csi-hostpath-sc
      resources: {requests: {storage: 1Mi}}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: blk}
spec:
  serviceName: blk
  replicas: 2
  podManagementPolicy: Parallel
  selector: {matchLabels: {app: blk}}
  template:
    metadata: {labels: {app: blk}}
    spec:
      automountServiceAccountToken: false
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: busybox
        imagePullPolicy: Never
        volumeDevices: [{name: raw, devicePath: /dev/xvda}]
        command: [sh, -c, 'want=blk-\$(hostname); if [ "\$(dd if=/dev/xvda bs=\${#want} count=1 2>/dev/null)" = "\$want" ]; then echo found; else printf %s "\$want" | dd of=/dev/xvda conv=fsync 2>/dev/null && echo wrote; fi; trap "exit 0" TERM; while true; do sleep 0.2; done']
  volumeClaimTemplates:
  - metadata: {name: raw}
    spec:
      volumeMode: Block
      accessModes: [ReadWriteOnce]
      storageClassName: csi-hostpath-sc
      resources: {requests: {storage: 1Mi}}
YAML
all_running() { for p in "$@"; do running "$p" || return 1; done; }
check "StatefulSet web: 3 pods Running on provisioned claims" wait_for 180 all_running web-0 web-1 web-2
pv_of() { k get pvc "$1" -o jsonpath='{.spec.volumeName}' 2>/dev/null; }
handle_of() { k get pv "$1" -o jsonpath='{.spec.csi.volumeHandle}' 2>/dev/null; }
pvs_ok() {
    local c pv
    for c in data-web-0 data-web-1 data-web-2; do
        pv=$(pv_of "$c")
        [ "$(k get pv "$pv" -o jsonpath='{.spec.csi.driver} {.spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions[0].key}={.spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions[0].values[0]}')" = \
            "$DRV topology.hostpath.csi/node=$NODE" ] || return 1
    done
}
check "claims data-web-{0,1,2} bound to $DRV PVs with the node's topology (from CSINode)" pvs_ok
own_id() { [ "$(k exec "$1" -- cat /data/id 2>/dev/null)" = "$1" ]; }
check "each pod wrote its name into its own volume" bash -c "$(declare -f k own_id); KUBECTL='$KUBECTL'; own_id web-0 && own_id web-1 && own_id web-2"
PV0=$(pv_of data-web-0); H0=$(handle_of "$PV0")
check "the data is in the driver's volume folder ($(cat "$DATA/$H0/id" 2>/dev/null))" bash -c "[ \"\$(cat '$DATA/$H0/id' 2>/dev/null)\" = web-0 ]"
va_name() { echo "csi-$(printf %s "$1$DRV$NODE" | sha256sum | cut -d' ' -f1)"; }  # the kubelet's getAttachmentName
va_attached() { # pv
    local h; h=$(handle_of "$1")
    [ "$(k get volumeattachment "$(va_name "$h")" -o jsonpath='{.spec.attacher} {.spec.nodeName} {.spec.source.persistentVolumeName} {.status.attached}' 2>/dev/null)" = "$DRV $NODE $1 true" ]
}
vas_ok() { for c in data-web-0 data-web-1 data-web-2; do va_attached "$(pv_of "$c")" || return 1; done; }
check "the attach/detach controller's VolumeAttachments (named after the volume handles), attached by csi-attacher" vas_ok
# Its writers: kube-controller-manager made it (the spec), csi-attacher attached it (status,
# finalizer); the order of managedFields is not the order of the writes.
va_writers() { k get volumeattachment "$(va_name "$H0")" -o jsonpath='{range .metadata.managedFields[*]}{.manager}:{.subresource} {end}' 2>/dev/null; }
check "... created by kube-controller-manager ($(va_writers))" bash -c "grep -qw 'kube-controller-manager:' <<<'$(va_writers)'"
uname_of() { echo "kubernetes.io/csi/$DRV^$(handle_of "$(pv_of "$1")")"; }
node_lists() { # jsonpath-field claim...
    local f=$1 c list; shift
    list=$(k get node "$NODE" -o jsonpath="{.status.$f}" 2>/dev/null)
    for c in "$@"; do grep -qF "$(uname_of "$c")" <<<"$list" || return 1; done
}
check "the Node reports the volumes in volumesInUse (bosun) and volumesAttached (attach/detach controller)" \
    wait_for 30 bash -c "$(declare -f k pv_of handle_of uname_of node_lists); KUBECTL='$KUBECTL' NODE=$NODE DRV=$DRV;
        node_lists volumesInUse data-web-0 data-web-1 data-web-2 && node_lists volumesAttached data-web-0 data-web-1 data-web-2"
uid0=$(k get pod web-0 -o jsonpath='{.metadata.uid}')
target0="$ROOT/pods/$uid0/volumes/kubernetes.io~csi/$PV0/mount"
stage0="$ROOT/plugins/kubernetes.io/csi/$DRV/$(printf %s "$H0" | sha256sum | cut -d' ' -f1)/globalmount"
check "NodeStageVolume at the kubelet's globalmount path, without pod info" \
    calls "$(method NodeStageVolume) | map(select(.Request.volume_id == \"$H0\")) | last | .Request |
    .staging_target_path == \"$stage0\" and (.volume_context | has(\"csi.storage.k8s.io/pod.name\") | not)"
check "NodePublishVolume: pod info (podInfoOnMount), the tokenRequests token, staging and target paths" \
    calls "$(method NodePublishVolume) | map(select(.Request.target_path == \"$target0\")) | last | .Request |
    .volume_context[\"csi.storage.k8s.io/pod.name\"] == \"web-0\" and
    .volume_context[\"csi.storage.k8s.io/pod.uid\"] == \"$uid0\" and
    .volume_context[\"csi.storage.k8s.io/serviceAccount.name\"] == \"default\" and
    .volume_context[\"csi.storage.k8s.io/ephemeral\"] == \"false\" and
    (.volume_context[\"csi.storage.k8s.io/serviceAccount.tokens\"] | fromjson | .[\"e2e-audience\"].token | length > 20) and
    .staging_target_path == \"$stage0\""
gids=$(stat -c '%g' "$DATA/$H0" "$DATA/$H0/id" 2>/dev/null | paste -sd' ')
check "fsGroup (fsGroupPolicy File): the volume and the pod's file have group 2345, setgid ($gids)" \
    bash -c "[ '$gids' = '2345 2345' ] && [ -g '$DATA/$H0' ]"

# Data survives the pod's deletion and its recreation on the node.
k exec web-1 -- sh -c 'echo kept > /data/kept' >/dev/null 2>&1
uid1=$(k get pod web-1 -o jsonpath='{.metadata.uid}')
k delete pod web-1 --wait=false >/dev/null 2>&1
recreated() { running web-1 && [ "$(k get pod web-1 -o jsonpath='{.metadata.uid}')" != "$uid1" ]; }
check "web-1 deleted and recreated by its StatefulSet" wait_for 120 recreated
check "... with its data: id and the file written before ($(k exec web-1 -- cat /data/kept 2>/dev/null))" \
    bash -c "[ \"\$('$KUBECTL' exec web-1 -- cat /data/kept 2>/dev/null)\" = kept ] && [ \"\$('$KUBECTL' exec web-1 -- cat /data/id 2>/dev/null)\" = web-1 ]"
check "the old pod's folder is gone (unpublished)" wait_for 30 bash -c "! test -e '$ROOT/pods/$uid1'"

# 3. Raw block volumes.
check "StatefulSet blk: 2 pods Running on Block claims" wait_for 120 all_running blk-0 blk-1
blk_log() { k logs "$1" 2>/dev/null | head -1; }
check "blk-0 wrote its device ($(blk_log blk-0))" [ "$(blk_log blk-0)" = wrote ]
PVB=$(pv_of raw-blk-0); HB=$(handle_of "$PVB")
check "the data is in the driver's backing file ($(head -c 9 "$DATA/$HB" 2>/dev/null))" \
    bash -c "[ \"\$(head -c 9 '$DATA/$HB' 2>/dev/null)\" = blk-blk-0 ]"
blk_uid=$(k get pod blk-0 -o jsonpath='{.metadata.uid}')
BD="$ROOT/plugins/kubernetes.io/csi/volumeDevices"
check "block NodeStageVolume and NodePublishVolume at the kubelet's volumeDevices paths" \
    calls "($(method NodeStageVolume) | map(select(.Request.volume_id == \"$HB\")) | last | .Request.staging_target_path == \"$BD/staging/$PVB\") and
           ($(method NodePublishVolume) | map(select(.Request.volume_id == \"$HB\")) | last | .Request.target_path == \"$BD/publish/$PVB/$blk_uid\")"
k delete pod blk-0 --wait=false >/dev/null 2>&1
blk_recreated() { running blk-0 && [ "$(k get pod blk-0 -o jsonpath='{.metadata.uid}')" != "$blk_uid" ]; }
check "blk-0 recreated and finds its data on the device ($(wait_for 120 blk_recreated; blk_log blk-0))" [ "$(blk_log blk-0)" = found ]

# Scale to 0: every volume unpublished, unstaged and detached; and back.
k scale statefulset web --replicas=0 >/dev/null
no_web() { gone web-0 && gone web-1 && gone web-2; }
check "web scaled to 0: pods gone" wait_for 90 no_web
no_staged() { for c in data-web-0 data-web-1 data-web-2; do test -e "$ROOT/plugins/kubernetes.io/csi/$DRV/$(printf %s "$(handle_of "$(pv_of "$c")")" | sha256sum | cut -d' ' -f1)" && return 1; done; return 0; }
check "... their volumes unpublished and unstaged" wait_for 30 no_staged
no_vas() { for c in data-web-0 data-web-1 data-web-2; do k get volumeattachment "$(va_name "$(handle_of "$(pv_of "$c")")")" >/dev/null 2>&1 && return 1; done; return 0; }
check "... no longer in volumesInUse, and detached: their VolumeAttachments deleted" wait_for 90 no_vas
k scale statefulset web --replicas=3 >/dev/null
check "web scaled back to 3: Running" wait_for 120 all_running web-0 web-1 web-2
check "... each with its own data" bash -c "$(declare -f k own_id); KUBECTL='$KUBECTL'; own_id web-0 && own_id web-1 && own_id web-2 &&
    [ \"\$('$KUBECTL' exec web-1 -- cat /data/kept 2>/dev/null)\" = kept ]"
check "... attached again" wait_for 30 vas_ok

# 4. The driver pod gone (its StatefulSet scaled to 0, as a rollout or eviction would): a deleted
# pod's volume stays mounted, so bosun keeps it in volumesInUse and the attach/detach controller
# must not detach it; a new pod on the claim waits, then starts once the driver is back.
cat <<YAML | k apply -f - >>"$W/apply.log" 2>&1
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: att-claim}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: csi-hostpath-immediate
  resources: {requests: {storage: 1Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: att-1}
spec:
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  volumes: [{name: data, persistentVolumeClaim: {claimName: att-claim}}]
  containers:
  - name: c
    image: busybox
    imagePullPolicy: Never
    volumeMounts: [{name: data, mountPath: /data}]
    command: [sh, -c, 'echo survived > /data/hello; trap "exit 0" TERM; while true; do sleep 0.2; done']
YAML
check "pod att-1 runs on claim att-claim" wait_for 90 running att-1
PVA=$(pv_of att-claim); HA=$(handle_of "$PVA"); VAA=$(va_name "$HA")
att_uid=$(k get pod att-1 -o jsonpath='{.metadata.uid}')
att_target="$ROOT/pods/$att_uid/volumes/kubernetes.io~csi/$PVA/mount"
count_mounts() { awk -v p="$1" '$5 == p' /proc/self/mountinfo | wc -l; }
k scale statefulset csi-hostpathplugin --replicas=0 >/dev/null
check "the driver pod stopped and the driver unregistered (CSINode entry removed)" \
    wait_for 90 bash -c "$(declare -f k gone registered); KUBECTL='$KUBECTL' NODE=$NODE DRV=$DRV; gone csi-hostpathplugin-0 && ! registered"
k delete pod att-1 --wait=false >/dev/null 2>&1
att1_stopped() { gone att-1 || [ -z "$(k get pod att-1 -o jsonpath='{.status.containerStatuses[?(@.state.running)].name}')" ]; }
check "pod att-1 deleted while its driver is down" wait_for 60 att1_stopped
# The attach/detach controller detaches a volume whose pods are gone at once unless the node
# reports it in volumesInUse: 20 s of it still attached is the proof (and fails if bosun stops
# reporting volumesInUse).
held=0
for _ in $(seq 1 20); do
    va=$(k get volumeattachment "$VAA" -o jsonpath='{.status.attached} {.metadata.deletionTimestamp}' 2>/dev/null)
    [ "$va" = "true " ] && node_lists volumesInUse att-claim && [ "$(count_mounts "$att_target")" = 1 ] || break
    held=$((held + 1)); sleep 1
done
check "for 20 s the volume stays mounted, in volumesInUse, and attached (no detach requested) ($held s)" [ "$held" = 20 ]
cat <<YAML | k apply -f - >>"$W/apply.log" 2>&1
apiVersion: v1
kind: Pod
metadata: {name: att-2}
spec:
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  volumes: [{name: data, persistentVolumeClaim: {claimName: att-claim}}]
  containers:
  - name: c
    image: busybox
    imagePullPolicy: Never
    volumeMounts: [{name: data, mountPath: /data}]
    command: [sh, -c, 'cat /data/hello; trap "exit 0" TERM; while true; do sleep 0.2; done']
YAML
event_says() { # object reason text
    k get events --field-selector "involvedObject.name=$1,reason=$2" -o jsonpath='{.items[*].message}' 2>/dev/null | grep -qF "$3"
}
check "a new pod on the claim waits: FailedMount (driver not registered)" \
    wait_for 60 event_says att-2 FailedMount "driver name $DRV not found in the list of registered CSI drivers"
check "... and is not Running ($(phase att-2))" bash -c "! [ '$(phase att-2)' = Running ]"
k scale statefulset csi-hostpathplugin --replicas=1 >/dev/null
check "the driver is back (registered again)" wait_for 120 registered
check "pod att-2 starts once the driver is back" wait_for 90 running att-2
check "... with the data att-1 wrote ($(k logs att-2 2>/dev/null))" bash -c "[ \"\$('$KUBECTL' logs att-2 2>/dev/null)\" = survived ]"
check "att-1's volume is unpublished now and its pod folder removed" wait_for 30 bash -c "! test -e '$ROOT/pods/$att_uid'"
k delete pod att-2 --wait=false >/dev/null 2>&1
va_gone() { ! k get volumeattachment "$VAA" >/dev/null 2>&1; }
check "att-2 deleted with the driver up: unmounted, out of volumesInUse, then detached (VolumeAttachment deleted)" \
    wait_for 90 bash -c "$(declare -f k gone va_gone); KUBECTL='$KUBECTL' VAA=$VAA; gone att-2 && va_gone"

# 5. Online expansion through csi-resizer.
claim_status() { k get pvc "$1" -o jsonpath='{.status.capacity.storage} {.status.allocatedResourceStatuses.storage}' 2>/dev/null; }
cid0=$(k get pod web-0 -o jsonpath='{.status.containerStatuses[0].containerID}')
k patch pvc data-web-0 --type=merge -p '{"spec": {"resources": {"requests": {"storage": "2Mi"}}}}' >>"$W/apply.log" 2>&1
check "data-web-0 grown online to 2Mi: status capacity, resize status cleared ($(wait_for 90 bash -c "[ \"\$($(declare -f k claim_status); KUBECTL='$KUBECTL'; claim_status data-web-0)\" = '2Mi ' ]"; claim_status data-web-0))" \
    [ "$(claim_status data-web-0)" = "2Mi " ]
PV0=$(pv_of data-web-0); uid0=$(k get pod web-0 -o jsonpath='{.metadata.uid}')
resize_msg="MountVolume.NodeExpandVolume succeeded for volume \"$PV0\" $NODE"
check "FileSystemResizeSuccessful on the pod and on the claim: $resize_msg" \
    wait_for 20 bash -c "$(declare -f k event_says); KUBECTL='$KUBECTL'; event_says web-0 FileSystemResizeSuccessful '$resize_msg' && event_says data-web-0 FileSystemResizeSuccessful '$resize_msg'"
check "NodeExpandVolume on the publish path with the new size" calls "$(method NodeExpandVolume) | last | .Request |
    .volume_id == \"$(handle_of "$PV0")\" and .capacity_range.required_bytes == 2097152 and
    .volume_path == \"$ROOT/pods/$uid0/volumes/kubernetes.io~csi/$PV0/mount\""
check "web-0 ran on through the expansion (same container)" \
    [ "$(k get pod web-0 -o jsonpath='{.status.containerStatuses[0].containerID} {.status.containerStatuses[0].restartCount}')" = "$cid0 0" ]
# A node expansion the driver refuses (above its --max-volume-size-node): the kubelet marks the
# claim NodeResizeInfeasible with a NodeResizeError condition and warns on the pod. csi-resizer
# then expands it on the controller side again and sets it back to NodeResizePending so that the
# node may try again (its expandAndRecover, "case #3"), so the marking is watched for.
k get pvc data-web-1 -w -o jsonpath='{.status.allocatedResourceStatuses.storage}{"\n"}' >"$W/web-1-resize.log" 2>&1 &
watch_pid=$!
k patch pvc data-web-1 --type=merge -p '{"spec": {"resources": {"requests": {"storage": "2Gi"}}}}' >>"$W/apply.log" 2>&1
infeasible() { grep -qx NodeResizeInfeasible "$W/web-1-resize.log"; }
check "a refused node expansion: data-web-1 marked NodeResizeInfeasible ($(wait_for 90 infeasible; sort -u "$W/web-1-resize.log" | paste -sd' '))" infeasible
kill "$watch_pid" 2>/dev/null; wait "$watch_pid" 2>/dev/null; watch_pid=
check "... its capacity still 1Mi ($(claim_status data-web-1))" bash -c "[ \"\$($(declare -f k claim_status); KUBECTL='$KUBECTL'; claim_status data-web-1 | cut -d' ' -f1)\" = 1Mi ]"
cond=$(k get pvc data-web-1 -o jsonpath='{.status.conditions[?(@.type=="NodeResizeError")].status} {.status.conditions[?(@.type=="NodeResizeError")].message}' 2>/dev/null)
check "... with the NodeResizeError condition ($cond)" bash -c "grep -q '^True failed to expand pvc with .*OutOfRange' <<<'$cond'"
check "... and a VolumeResizeFailed event on the pod" wait_for 20 event_says web-1 VolumeResizeFailed "NodeExpandVolume.NodeExpandVolume failed for volume \"$(pv_of data-web-1)\""

# 6. CSI ephemeral inline volumes and generic ephemeral volumes.
cat <<YAML | k apply -f - >>"$W/apply.log" 2>&1
apiVersion: storage.k8s.io/v1
kind: CSIDriver
metadata: {name: persistent-only.bosun.dev}
spec: {attachRequired: false, volumeLifecycleModes: [Persistent]}
---
apiVersion: v1
kind: Secret
metadata: {name: inline-secret}
stringData: {password: s3cret}
---
apiVersion: v1
kind: Pod
metadata: {name: inline-1}
spec:
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  volumes:
  - name: data
    csi:
      driver: $DRV
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
  volumes: [{name: data, csi: {driver: persistent-only.bosun.dev}}]
  containers:
  - {name: c, image: busybox, imagePullPolicy: Never, command: [sleep, "3600"], volumeMounts: [{name: data, mountPath: /data}]}
---
apiVersion: v1
kind: Pod
metadata: {name: eph-1}
spec:
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  volumes:
  - name: scratch
    ephemeral:
      volumeClaimTemplate:
        spec:
          accessModes: [ReadWriteOnce]
          storageClassName: csi-hostpath-sc
          resources: {requests: {storage: 1Mi}}
  containers:
  - name: c
    image: busybox
    imagePullPolicy: Never
    volumeMounts: [{name: scratch, mountPath: /scratch}]
    command: [sh, -c, 'echo ephemeral-claim > /scratch/hello; trap "exit 0" TERM; while true; do sleep 0.2; done']
YAML
check "pod inline-1 runs on an inline volume of $DRV" wait_for 90 running inline-1
inl_uid=$(k get pod inline-1 -o jsonpath='{.metadata.uid}')
inl_handle=csi-$(printf %s "${inl_uid}data" | sha256sum | cut -d' ' -f1)
check "the driver made the volume on NodePublishVolume; the pod's file is in it ($(cat "$DATA/$inl_handle/hello" 2>/dev/null))" \
    bash -c "[ \"\$(cat '$DATA/$inl_handle/hello' 2>/dev/null)\" = inline ]"
check "NodePublishVolume: the kubelet's handle, no staging, attributes, ephemeral and pod keys, the secret" \
    calls "$(method NodePublishVolume) | map(select(.Request.volume_id == \"$inl_handle\")) | last | .Request |
    (.staging_target_path // \"\") == \"\" and .volume_context[\"e2e/inline\"] == \"yes\" and
    .volume_context[\"csi.storage.k8s.io/ephemeral\"] == \"true\" and
    .volume_context[\"csi.storage.k8s.io/pod.name\"] == \"inline-1\" and .secrets.password == \"s3cret\" and
    .target_path == \"$ROOT/pods/$inl_uid/volumes/kubernetes.io~csi/data/mount\""
check "NodeStageVolume never called for it" calls "$(method NodeStageVolume) | map(select(.Request.volume_id == \"$inl_handle\")) | length == 0"
check "a driver without the Ephemeral lifecycle mode is refused with FailedMount" \
    wait_for 60 event_says inline-refused FailedMount 'volume mode "Ephemeral" not supported by driver persistent-only.bosun.dev'
check "... and the refused pod does not run ($(phase inline-refused))" bash -c "[ '$(phase inline-refused)' = Pending ]"
check "pod eph-1 runs on its generic ephemeral volume" wait_for 120 running eph-1
eph=$(k get pvc eph-1-scratch -o jsonpath='{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}/{.metadata.ownerReferences[0].controller} {.status.phase}' 2>/dev/null)
check "claim eph-1-scratch made by the ephemeral volume controller, owned by the pod, provisioned ($eph)" [ "$eph" = "Pod/eph-1/true Bound" ]
PVE=$(pv_of eph-1-scratch); HE=$(handle_of "$PVE")
check "the pod's file is in the provisioned volume ($(cat "$DATA/$HE/hello" 2>/dev/null))" \
    bash -c "[ \"\$(cat '$DATA/$HE/hello' 2>/dev/null)\" = ephemeral-claim ]"
k delete pod inline-1 inline-refused eph-1 --wait=false >/dev/null 2>&1
check "inline-1 deleted: unpublished, and the driver deleted its volume" \
    wait_for 60 bash -c "$(declare -f k gone); KUBECTL='$KUBECTL'; gone inline-1 && ! test -e '$ROOT/pods/$inl_uid' && ! test -e '$DATA/$inl_handle'"
check "eph-1 deleted: its claim garbage-collected and its volume deleted by the provisioner" \
    wait_for 90 bash -c "$(declare -f k gone); KUBECTL='$KUBECTL'; gone eph-1 && ! '$KUBECTL' get pvc eph-1-scratch >/dev/null 2>&1 && ! test -e '$DATA/$HE'"
# A claim named <pod>-<volume> the pod does not own: never used (bound to the node directly, as
# the scheduler refuses it too).
cat <<YAML | k apply -f - >>"$W/apply.log" 2>&1
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
check "a pod not owning its <pod>-<volume> claim gets FailedMount (pod is not owner)" \
    wait_for 60 event_says eph-foreign FailedMount "PVC default/eph-foreign-scratch was not created for pod default/eph-foreign (pod is not owner)"
k delete pod eph-foreign --wait=false >/dev/null 2>&1
k delete pvc eph-foreign-scratch --wait=false >/dev/null 2>&1

# 7. bosun killed (-9) with volumes mounted: web-0 keeps its mount (same mount, no unmount).
uid0=$(k get pod web-0 -o jsonpath='{.metadata.uid}')
target0="$ROOT/pods/$uid0/volumes/kubernetes.io~csi/$PV0/mount"
mount_id() { awk -v p="$1" '$5 == p {print $1}' /proc/self/mountinfo | paste -sd' '; }
id_before=$(mount_id "$target0")
cid0=$(k get pod web-0 -o jsonpath='{.status.containerStatuses[0].containerID}')
n_calls() { driver_log | sed -n 's/^.*gRPCCall: //p' | jq -s "$(method "$1") | map(select(.Request.volume_id == \"$2\")) | length"; }
H0=$(handle_of "$PV0")
unpub_before=$(n_calls NodeUnpublishVolume "$H0"); unstage_before=$(n_calls NodeUnstageVolume "$H0")
pub_before=$(n_calls NodePublishVolume "$H0")
kill -KILL "$bosun_pid"; wait "$bosun_pid" 2>/dev/null
start_bosun
healthz() { [ "$(curl -s "http://127.0.0.1:$HPORT/healthz")" = ok ]; }
wait_for 30 healthz
# The restarted agent sets the pod's volumes up again, as the kubelet's reconstruction does
# (NodeStageVolume and NodePublishVolume are idempotent).
republished() { [ "$(n_calls NodePublishVolume "$H0")" -gt "$pub_before" ]; }
wait_for 60 republished
id_after=$(mount_id "$target0")
check "after kill -9 and restart: the same single mount of web-0's volume (mount id $id_before, then $id_after)" \
    bash -c "[ -n '$id_before' ] && [ '$id_before' = '$id_after' ]"
check "... no NodeUnpublishVolume or NodeUnstageVolume ($unpub_before/$unstage_before before, $(n_calls NodeUnpublishVolume "$H0")/$(n_calls NodeUnstageVolume "$H0") after)" \
    bash -c "[ '$(n_calls NodeUnpublishVolume "$H0")' = '$unpub_before' ] && [ '$(n_calls NodeUnstageVolume "$H0")' = '$unstage_before' ]"
check "... the pod runs on in the same container" \
    [ "$(k get pod web-0 -o jsonpath='{.status.containerStatuses[0].containerID} {.status.containerStatuses[0].restartCount} {.status.phase}')" = "$cid0 0 Running" ]
check "... and reads its volume ($(k exec web-0 -- cat /data/id 2>/dev/null))" own_id web-0

# bosun killed while NodePublishVolume runs, after NodeStageVolume: the driver's exec of `mount`
# is held 15 s (strace's syscall delay), bosun is killed -9 when the call is seen, the driver
# finishes it; the restarted bosun stages (idempotent: the driver says already staged) and
# publishes (already mounted) again. The volume ends published once and staged once.
cat <<YAML | k apply -f - >>"$W/apply.log" 2>&1
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: kill-claim}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: csi-hostpath-immediate
  resources: {requests: {storage: 1Mi}}
YAML
wait_for 60 bash -c "[ \"\$('$KUBECTL' get pvc kill-claim -o jsonpath='{.status.phase}')\" = Bound ]"
PVK=$(pv_of kill-claim); HK=$(handle_of "$PVK")
driver_pid=""
for p in $(pgrep -x hostpathplugin); do grep -q "$CG" "/proc/$p/cgroup" 2>/dev/null && driver_pid=$p; done
strace -f -qq -p "$driver_pid" -e trace=execve -e inject=execve:delay_enter=15000000 -o /dev/null 2>"$W/strace.log" &
strace_pid=$!
sleep 1
cat <<YAML | k apply -f - >>"$W/apply.log" 2>&1
apiVersion: v1
kind: Pod
metadata: {name: kill-1}
spec:
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  volumes: [{name: data, persistentVolumeClaim: {claimName: kill-claim}}]
  containers:
  - name: c
    image: busybox
    imagePullPolicy: Never
    volumeMounts: [{name: data, mountPath: /data}]
    command: [sh, -c, 'echo published > /data/hello; trap "exit 0" TERM; while true; do sleep 0.2; done']
YAML
in_publish() { # NodeStageVolume answered, NodePublishVolume asked (logged on entry) and not answered
    local log; log=$(driver_log)
    grep 'GRPC request:' <<<"$log" | grep -F "\"$HK\"" | grep -qF '"target_path"' &&
        sed -n 's/^.*gRPCCall: //p' <<<"$log" | jq -s -e "($(method NodeStageVolume) | map(select(.Request.volume_id == \"$HK\" and .Error == \"\")) | length == 1) and
            ($(method NodePublishVolume) | map(select(.Request.volume_id == \"$HK\")) | length == 0)" >/dev/null
}
check "NodeStageVolume done and NodePublishVolume under way for kill-1 (the driver's mount held)" wait_for 90 in_publish
kill -KILL "$bosun_pid"; wait "$bosun_pid" 2>/dev/null
# SIGKILL: the kernel detaches its tracees and they go on (strace on SIGTERM can stay blocked
# on a tracee held in its injected delay, and the test with it).
kill -KILL "$strace_pid" 2>/dev/null; wait "$strace_pid" 2>/dev/null; strace_pid=
start_bosun
check "pod kill-1 runs after the restart" wait_for 120 running kill-1
kill_uid=$(k get pod kill-1 -o jsonpath='{.metadata.uid}')
kill_target="$ROOT/pods/$kill_uid/volumes/kubernetes.io~csi/$PVK/mount"
check "its volume is published once ($(count_mounts "$kill_target") mount)" [ "$(count_mounts "$kill_target")" = 1 ]
staged_in_driver() { jq -c --arg h "$HK" '.Volumes[] | select(.VolID == $h) | [(.Staged | length), (.Published | length)]' "$DATA/state.json" 2>/dev/null; }
check "the driver has it staged once and published once ($(staged_in_driver))" [ "$(staged_in_driver)" = "[1,1]" ]
check "the second NodeStageVolume found it staged (idempotent), no NodeUnstageVolume" \
    calls "($(method NodeStageVolume) | map(select(.Request.volume_id == \"$HK\" and .Error == \"\")) | length >= 2) and
           ($(method NodeUnstageVolume) | map(select(.Request.volume_id == \"$HK\")) | length == 0)"
check "the pod's file is in the volume ($(cat "$DATA/$HK/hello" 2>/dev/null))" bash -c "[ \"\$(cat '$DATA/$HK/hello' 2>/dev/null)\" = published ]"

# 8. Volume stats (NodeGetVolumeStats) in /stats/summary and /metrics, through the node proxy.
summary_volume() { # pod volume -> the volume's entry
    k get --raw "/api/v1/nodes/$NODE/proxy/stats/summary" 2>/dev/null |
        jq -c --arg p "$1" --arg v "$2" '.pods[] | select(.podRef.name == $p) | .volume[]? | select(.name == $v)'
}
stats_ok() { summary_volume web-2 data | jq -e '.capacityBytes > 0 and .usedBytes > 0 and .inodes > 0 and .pvcRef.name == "data-web-2"' >/dev/null; }
check "/stats/summary: web-2's volume with the driver's figures and its claim ($(wait_for 30 stats_ok; summary_volume web-2 data | jq -c '{capacityBytes, pvcRef}'))" stats_ok
metric='kubelet_volume_stats_capacity_bytes{namespace="default",persistentvolumeclaim="data-web-2"}'
check "/metrics: $metric" bash -c "'$KUBECTL' get --raw /api/v1/nodes/$NODE/proxy/metrics 2>/dev/null | grep -qF '$metric'"

# A block local PV: a loop device of this node, given to the container through volumeDevices.
truncate -s 1M "$W/local-block.img"
LOOP=$(losetup -f --show "$W/local-block.img")
cat <<YAML | k apply -f - >>"$W/apply.log" 2>&1
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
succeeded() { [ "$(phase "$1")" = Succeeded ]; }
check "pod local-block-writer writes its local block PV (phase $(wait_for 90 succeeded local-block-writer; phase local-block-writer))" succeeded local-block-writer
check "the data is on the loop device's file ($(head -c 9 "$W/local-block.img"))" \
    bash -c "[ \"\$(head -c 9 '$W/local-block.img')\" = local-blk ]"
k delete pod local-block-writer --wait=false >/dev/null 2>&1
check "pod local-block-writer deleted" wait_for 60 gone local-block-writer
losetup -d "$LOOP" 2>/dev/null

# 9. Everything deleted: the provisioner deletes the volumes (reclaimPolicy Delete), the
# attach/detach controller detaches them, nothing is left mounted or staged; then the stack goes.
k delete statefulset web blk --wait=false >/dev/null 2>&1
k delete pod kill-1 --wait=false >/dev/null 2>&1
no_pods() { [ -z "$(k get pods -o name 2>/dev/null | grep -v csi-hostpathplugin)" ]; }
check "workload pods gone" wait_for 120 no_pods
k delete pvc --all --wait=false >/dev/null 2>&1
no_vols() { [ -z "$(k get pv -o name 2>/dev/null | grep -v pv-e2e-local-block)" ] && [ -z "$(k get volumeattachment -o name 2>/dev/null)" ]; }
check "every volume detached and deleted by the provisioner ($(wait_for 120 no_vols; k get pv,volumeattachment -o name 2>/dev/null | grep -vc local-block) left)" no_vols
left_in_driver() { jq '.Volumes | length' "$DATA/state.json" 2>/dev/null; }
check "the driver has no volume left ($(left_in_driver)), no loop device on its files" \
    bash -c "[ '$(left_in_driver)' = 0 ] && [ -z \"\$(losetup -a | grep -F '$DATA')\" ]"
k delete statefulset csi-hostpathplugin --wait=false >/dev/null 2>&1
check "the driver pod gone and unregistered" wait_for 90 bash -c "$(declare -f k gone registered); KUBECTL='$KUBECTL' NODE=$NODE DRV=$DRV; gone csi-hostpathplugin-0 && ! registered"
mounts_below_root() { grep -c " $ROOT/" /proc/self/mountinfo; }
check "no mount left below the root dir ($(wait_for 20 bash -c "[ \$(grep -c ' $ROOT/' /proc/self/mountinfo) = 0 ]"; mounts_below_root))" [ "$(mounts_below_root)" = 0 ]
leftover() { find "$ROOT/plugins/kubernetes.io" -name globalmount -o -name vol_data.json 2>/dev/null; ls "$ROOT/pods" 2>/dev/null; }
check "no staging or pod folder left ($(leftover | tr '\n' ' '))" bash -c "[ -z \"\$($(declare -f leftover); ROOT='$ROOT'; leftover)\" ]"
kill -TERM "$bosun_pid"; wait "$bosun_pid" 2>/dev/null; bosun_pid=
no_containers() { [ -z "$(find /sys/fs/cgroup/*/$CG /sys/fs/cgroup/$CG -name cgroup.procs -exec cat {} + 2>/dev/null)" ]; }
check "no container process left in the cgroup root" no_containers
summary
