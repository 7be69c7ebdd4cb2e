#!/usr/bin/env bash
# End-to-end: bosun joins the real test control plane as its node (TLS bootstrap from a
# bootstrap token only), is NotReady without a CNI config (a hostNetwork pod runs, a pod on the
# pod network waits) and turns Ready when the config is written, with a Lease, runs a 3-replica Deployment with pod IPs
# (with their service account volumes), a static pod with its mirror pod, pods that use
# configMaps, secrets and their token against the API through the `kubernetes` Service, a
# configMap update inside a running pod, imagePullSecrets, an image volume from a private
# registry and pod-level resources, a Job, a DaemonSet, graceful deletion with preStop,
# Events, a kill -9 of bosun with every container adopted, and removes everything gracefully. Starts and stops its own control plane and
# leaves nothing running. Prints `N passed, M failed`. Needs root.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
source "$here/env.sh"
source "$here/lib.sh"
D=${1:-/tmp/bosun-e2e-cluster}
W=$(mktemp -d /tmp/bosun-e2e-node-XXXXXX)
BOSUN=${BOSUN_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/bosun/target}/debug/bosun}
KUBECTL="$K8S_BIN/kubectl"
NODE=e2e-node
cleanup() {
    [ -n "${bosun_pid:-}" ] && kill -TERM "$bosun_pid" 2>/dev/null && wait "$bosun_pid" 2>/dev/null
    [ -n "${registry_pid:-}" ] && kill "$registry_pid" 2>/dev/null
    # Whatever bosun left (it should be nothing): containers, keepers, mounts, cgroups, bridge.
    reap_node "$W" bosun-e2e-node bosune2e
    bash "$here/down.sh" --purge "$D" >/dev/null 2>&1
    # bosun's log of a failed run stays for a look.
    [ "$failed" = 0 ] || cp "$W/bosun.log" /tmp/bosun-e2e-node.failed.log 2>/dev/null
    rm -rf "$W"
}
trap cleanup EXIT

# The controller-manager allocates the node its pod CIDR (10.246.0.0/24, the first of the
# cluster's), as kubeadm's --pod-network-cidr makes it do.
BOSUN_CP_CONTROLLER_MANAGER_FLAGS="--allocate-node-cidrs --cluster-cidr=10.246.0.0/16" \
    bash "$here/up.sh" "$D" >"$W.up.log" 2>&1 || { cat "$W.up.log"; echo "0 passed, 1 failed"; exit 1; }
export KUBECONFIG="$D/admin.kubeconfig"
bash "$root/tests/images/build-busybox.sh" "$W/busybox-oci" >/dev/null
mkdir -p "$W/manifests"
cat >"$W/manifests/static.yaml" <<'YAML'
apiVersion: v1
kind: Pod
metadata: {name: static-web, namespace: kube-system, labels: {tier: static}}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - {name: c, image: busybox, imagePullPolicy: Never, command: [sleep, '3600']}
YAML
A=(--pod-manifest-path "$W/manifests"
   --root-dir "$W/root" --run-dir "$W/run" --data-dir "$W/data" --pod-logs-dir "$W/logs"
   --container-logs-dir "$W/clogs" --cgroup-root /bosun-e2e-node --hostname-override "$NODE"
   --cni-conf-dir "$W/cni")
"$BOSUN" image import "$W/busybox-oci" busybox --data-dir "$W/data" >/dev/null
# busybox plus the control plane's own (static) kubectl: pods that talk to the apiserver.
EXTRA_BINS="$KUBECTL" bash "$root/tests/images/build-busybox.sh" "$W/kubectl-oci" >/dev/null
"$BOSUN" image import "$W/kubectl-oci" kubectl --data-dir "$W/data" >/dev/null
# The CNI folder stays empty until the node has registered (below): bosun writes no network
# config of its own in cluster mode.
mkdir -p "$W/cni"
# Only the memory default of evictionHard: the kubelet's disk defaults (10 % / 15 % free) would
# evict this test's pods and collect its images on a host whose disk is merely quite full.
printf 'kind: KubeletConfiguration\nevictionHard: {memory.available: 100Mi}\n' >"$W/config.yaml"
"$BOSUN" --kubeconfig "$W/kubeconfig" --bootstrap-kubeconfig "$D/bootstrap.kubeconfig" \
    --cert-dir "$W/pki" --config "$W/config.yaml" "${A[@]}" >"$W/bosun.log" 2>&1 &
bosun_pid=$!

node_ready() { [ "$("$KUBECTL" get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]; }

# No CNI config yet: the node is NotReady with the kubelet's message (containerd's NetworkReady
# condition), a hostNetwork pod runs, a pod on the pod network waits (NetworkNotReady).
NET_MSG='container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized'
node_network_not_ready() {
    [ "$("$KUBECTL" get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}|{.status.conditions[?(@.type=="Ready")].reason}|{.status.conditions[?(@.type=="Ready")].message}')" = "False|KubeletNotReady|$NET_MSG" ]
}
check "no CNI config: node registers NotReady (runtime network not ready)" wait_for 60 node_network_not_ready
node_cidr() { "$KUBECTL" get node "$NODE" -o jsonpath='{.spec.podCIDR}'; }
check "the controller-manager's pod CIDR is the node's (logged by bosun)" wait_for 30 bash -c \
    "[ \"\$('$KUBECTL' get node $NODE -o jsonpath='{.spec.podCIDR}')\" = 10.246.0.0/24 ] && grep -q 'updating the node.s pod CIDR.*new=10.246.0.0/24' '$W/bosun.log'"
for p in net-host:true net-pod:false; do
    cat <<YAML | "$KUBECTL" apply -f - >/dev/null
apiVersion: v1
kind: Pod
metadata: {name: ${p%%:*}}
spec:
  nodeName: $NODE
  hostNetwork: ${p##*:}
  tolerations: [{operator: Exists}]
  terminationGracePeriodSeconds: 1
  containers:
  - {name: c, image: busybox, imagePullPolicy: Never, command: [sleep, '3600']}
YAML
done
pod_phase() { "$KUBECTL" get pod "$1" -o jsonpath='{.status.phase}'; }
check "no CNI config: a hostNetwork pod runs" wait_for 60 bash -c "[ \"\$('$KUBECTL' get pod net-host -o jsonpath='{.status.phase}')\" = Running ]"
net_not_ready_event() {
    "$KUBECTL" get events --field-selector involvedObject.name=net-pod,reason=NetworkNotReady \
        -o jsonpath='{.items[*].type}|{.items[*].message}' | grep -qF "Warning|network is not ready: $NET_MSG"
}
check "no CNI config: a pod on the pod network waits (Warning NetworkNotReady)" wait_for 30 net_not_ready_event
check "  ... still Pending, ContainerCreating" bash -c \
    "[ \"\$('$KUBECTL' get pod net-pod -o jsonpath='{.status.phase} {.status.containerStatuses[0].state.waiting.reason}')\" = 'Pending ContainerCreating' ]"
check "  ... and has no sandbox" bash -c "! ls '$W/run/sandboxes/' 2>/dev/null | grep -q \"\$('$KUBECTL' get pod net-pod -o jsonpath='{.metadata.uid}')\""
# The admin writes the node's network config (a bridge of this test's own, host-local IPAM on
# the node's pod CIDR): bosun picks it up without a restart.
bosun_before=$bosun_pid
CIDR=$(node_cidr)
cat >"$W/cni/10-e2e.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "bosun-e2e", "plugins": [
  {"type": "bridge", "bridge": "bosune2e", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "${CIDR:-10.246.0.0/24}"}]],
            "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$W/ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
JSON
check "CNI config written: the node turns Ready" wait_for 60 node_ready
net_pod_runs() {
    [[ "$("$KUBECTL" get pod net-pod -o jsonpath='{.status.phase} {.status.podIP}')" == "Running 10.246.0."* ]]
}
check "  ... the waiting pod runs with an address of the node's pod CIDR" wait_for 60 net_pod_runs
check "  ... without a restart of bosun" kill -0 "$bosun_before"
"$KUBECTL" delete pod net-host net-pod --wait=false >/dev/null 2>&1
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
lease_owned() {
    local owner uid
    owner=$("$KUBECTL" -n kube-node-lease get lease "$NODE" -o jsonpath='{.metadata.ownerReferences[0].apiVersion}/{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}/{.metadata.ownerReferences[0].uid}') || return 1
    uid=$("$KUBECTL" get node "$NODE" -o jsonpath='{.metadata.uid}') || return 1
    [ "$owner" = "v1/Node/$NODE/$uid" ]
}
check "lease owned by its Node (the kubelet's ownerReference)" wait_for 30 lease_owned
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
# Every container has its keeper, run by the small bosun-keeper binary next to bosun (not a copy
# of the agent): at least the 3 deployment pods'.
keepers() {
    [ "$(pgrep -cf "/bosun-keeper __keeper $W/run/containers/")" -ge 3 ] &&
        [ "$(pgrep -cf "/bosun __keeper $W/run/containers/")" = 0 ]
}
check "containers are kept by bosun-keeper processes" keepers

# A static pod from the manifest folder, and its mirror pod in the API with its status.
mirror_running() {
    local m
    m=$("$KUBECTL" -n kube-system get pod "static-web-$NODE" -o jsonpath='{.metadata.annotations.kubernetes\.io/config\.mirror} {.metadata.ownerReferences[0].kind} {.status.phase}') || return 1
    [[ "$m" == ?*" Node Running" ]]
}
check "static pod: mirror pod owned by the Node shows Running" wait_for 60 mirror_running
# A user deletes the mirror pod: the node finishes the deletion and makes a new one (the
# kubelet's syncPod), whose status is written again.
mirror_uid() { "$KUBECTL" -n kube-system get pod "static-web-$NODE" -o jsonpath='{.metadata.uid}' 2>/dev/null; }
old_mirror=$(mirror_uid)
"$KUBECTL" -n kube-system delete pod "static-web-$NODE" --wait=false >/dev/null 2>&1
mirror_recreated() { local u; u=$(mirror_uid) && [ -n "$u" ] && [ "$u" != "$old_mirror" ] && mirror_running; }
check "mirror pod deleted by a user: recreated, Running again" wait_for 60 mirror_recreated

# The log of a container, as the container wrote it (CRI lines without their prefix).
clog() { # pod container
    local uid
    uid=$("$KUBECTL" get pod "$1" -o jsonpath='{.metadata.uid}') || return 1
    cat "$W/logs/default_$1_$uid/$2/"*.log 2>/dev/null | cut -d' ' -f4-
}
phase() { "$KUBECTL" get pod "$1" -o jsonpath='{.status.phase}' 2>/dev/null; }

# configMap, secret, downwardAPI and the service account volume, env from both, service links,
# and a token the apiserver accepts, over the `kubernetes` Service (kube-proxy on this host).
"$KUBECTL" create configmap e2e-conf --from-literal=greeting=hello >/dev/null
"$KUBECTL" create secret generic e2e-secret --from-literal=pass=s3cret >/dev/null
"$KUBECTL" create rolebinding e2e-view --clusterrole=view --serviceaccount=default:default >/dev/null
cat <<'YAML' | "$KUBECTL" apply -f - >/dev/null
apiVersion: v1
kind: Pod
metadata: {name: reader, labels: {app: reader}}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: kubectl
    imagePullPolicy: Never
    env:
    - {name: PASS, valueFrom: {secretKeyRef: {name: e2e-secret, key: pass}}}
    envFrom: [{configMapRef: {name: e2e-conf}, prefix: CONF_}]
    command: [sh, -c, 'echo "pass=$PASS greeting=$CONF_greeting host=$KUBERNETES_SERVICE_HOST";
      echo "ns=$(cat /var/run/secrets/kubernetes.io/serviceaccount/namespace)";
      echo "mode=$(stat -Lc %a /var/run/secrets/kubernetes.io/serviceaccount/token)";
      echo "ro=$(touch /var/run/secrets/kubernetes.io/serviceaccount/x 2>&1 | grep -c Read-only)";
      echo "whoami=$(kubectl auth whoami -o jsonpath={.status.userInfo.username})";
      kubectl get pods -o name']
YAML
reader_done() { [ "$(phase reader)" = Succeeded ]; }
check "pod using configMap/secret env and the API through its token succeeds" wait_for 60 reader_done
reader=$(clog reader c)
for want in "pass=s3cret greeting=hello host=10.96.0.1" "ns=default" "mode=644" "ro=1" \
    "whoami=system:serviceaccount:default:default" "pod/reader"; do
    check "reader saw: $want" grep -qxF "$want" <<<"$reader"
done
[ "$failed" = 0 ] || { echo "--- reader log:"; echo "$reader"; }
reasons() {
    "$KUBECTL" get events --field-selector "involvedObject.name=$1" \
        -o jsonpath='{.items[*].reason}' | tr ' ' '\n' | sort -u | tr '\n' ' '
}
for r in Pulled Created Started; do
    check "Event $r for the reader ($(reasons reader))" grep -qw "$r" <<<"$(reasons reader)"
done

cat <<'YAML' | "$KUBECTL" apply -f - >/dev/null
apiVersion: v1
kind: Pod
metadata: {name: watcher}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: c
    image: busybox
    imagePullPolicy: Never
    command: [sh, -c, 'while true; do echo "greeting=$(cat /conf/greeting)"; sleep 1; done']
    volumeMounts: [{name: conf, mountPath: /conf}]
  volumes:
  - name: conf
    configMap: {name: e2e-conf}
YAML
says() { clog "$1" c | grep -qxF "$2"; }
check "configMap volume inside the pod" wait_for 60 says watcher greeting=hello
"$KUBECTL" patch configmap e2e-conf -p '{"data":{"greeting":"bonjour"}}' >/dev/null
check "configMap update reaches the running pod" wait_for 90 says watcher greeting=bonjour
cat <<'YAML' | "$KUBECTL" apply -f - >/dev/null
apiVersion: v1
kind: Pod
metadata: {name: nocm}
spec:
  containers:
  - {name: c, image: busybox, imagePullPolicy: Never, volumeMounts: [{name: v, mountPath: /v}]}
  volumes: [{name: v, configMap: {name: absent}}]
YAML
failed_mount() {
    "$KUBECTL" get events --field-selector involvedObject.name=nocm,reason=FailedMount \
        -o jsonpath='{.items[*].message}' | grep -qF 'configmap "absent" not found'
}
check "missing configMap: FailedMount event" wait_for 60 failed_mount
"$KUBECTL" delete pod nocm --wait=false >/dev/null

# imagePullSecrets: an image in a registry that wants a login (Debian's docker-registry with
# htpasswd, on 127.0.0.1) runs for a pod with the secret; without it the pod is ImagePullBackOff.
REG_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$W/registry"
htpasswd -nbB puller s3cret >"$W/registry/htpasswd"
cat >"$W/registry/config.yml" <<YAML
version: 0.1
storage: {filesystem: {rootdirectory: $W/registry/data}}
http: {addr: 127.0.0.1:$REG_PORT}
auth: {htpasswd: {realm: bosun-e2e, path: $W/registry/htpasswd}}
YAML
docker-registry serve "$W/registry/config.yml" >"$W/registry/log" 2>&1 &
registry_pid=$!
reg_up() { (exec 3<>"/dev/tcp/127.0.0.1/$REG_PORT") 2>/dev/null; }
wait_for 20 reg_up
skopeo copy --quiet --dest-tls-verify=false --dest-creds=puller:s3cret \
    "oci:$W/busybox-oci:latest" "docker://127.0.0.1:$REG_PORT/private/busybox:v1" >/dev/null
"$KUBECTL" create secret docker-registry e2e-pull --docker-server="127.0.0.1:$REG_PORT" \
    --docker-username=puller --docker-password=s3cret >/dev/null
cat <<YAML | "$KUBECTL" apply -f - >/dev/null
apiVersion: v1
kind: Pod
metadata: {name: private}
spec:
  imagePullSecrets: [{name: e2e-pull}]
  terminationGracePeriodSeconds: 1
  containers:
  - {name: c, image: "127.0.0.1:$REG_PORT/private/busybox:v1", command: [sleep, '3600']}
---
apiVersion: v1
kind: Pod
metadata: {name: nosecret}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {name: c, image: "127.0.0.1:$REG_PORT/private/busybox:v1", imagePullPolicy: Always, command: [sleep, '3600']}
YAML
check "imagePullSecrets: the private image is pulled and runs" wait_for 90 bash -c "[ \"\$('$KUBECTL' get pod private -o jsonpath='{.status.phase}')\" = Running ]"
backoff() {
    "$KUBECTL" get pod nosecret -o jsonpath='{.status.containerStatuses[0].state.waiting.reason}' |
        grep -qE 'ErrImagePull|ImagePullBackOff'
}
check "no pull secret: ErrImagePull / ImagePullBackOff" wait_for 60 backoff
"$KUBECTL" delete pod private nosecret --wait=false >/dev/null

# An image volume from the private registry, pulled with the pod's pull secret: the image's
# files read-only in the container, the view gone with the pod; without the secret the
# container waits in ErrImagePull / ImagePullBackOff. And pod-level resources (spec.resources):
# the QoS class the kubelet computes from them.
cat <<YAML | "$KUBECTL" apply -f - >/dev/null
apiVersion: v1
kind: Pod
metadata: {name: imgvol}
spec:
  imagePullSecrets: [{name: e2e-pull}]
  terminationGracePeriodSeconds: 1
  restartPolicy: Never
  resources: {limits: {cpu: 200m, memory: 64Mi}}
  volumes:
  - {name: tools, image: {reference: "127.0.0.1:$REG_PORT/private/busybox:v1", pullPolicy: Always}}
  containers:
  - name: c
    image: busybox
    imagePullPolicy: Never
    command: [sh, -c, '{ test -x /tools/bin/busybox && echo image-file; touch /tools/x 2>/dev/null || echo read-only; } >/dev/termination-log']
    volumeMounts: [{name: tools, mountPath: /tools}]
---
apiVersion: v1
kind: Pod
metadata: {name: imgvol-nosecret}
spec:
  terminationGracePeriodSeconds: 1
  volumes:
  - {name: tools, image: {reference: "127.0.0.1:$REG_PORT/private/busybox:v1", pullPolicy: Always}}
  containers:
  - {name: c, image: busybox, imagePullPolicy: Never, command: [sleep, '3600'], volumeMounts: [{name: tools, mountPath: /tools}]}
YAML
# (Read from the termination message: this test's node does not authenticate the apiserver's
# client certificate, so `kubectl logs` is e2e-api.sh's business.)
imgvol_read() {
    [ "$("$KUBECTL" get pod imgvol -o jsonpath='{.status.containerStatuses[0].state.terminated.message}' |
        tr '\n' ' ')" = "image-file read-only " ]
}
check "image volume: the image's file, read-only, pulled with the pull secret" wait_for 90 imgvol_read
check "pod-level resources: qosClass Guaranteed" \
    test "$("$KUBECTL" get pod imgvol -o jsonpath='{.status.qosClass}')" = Guaranteed
imgvol_backoff() {
    "$KUBECTL" get pod imgvol-nosecret -o jsonpath='{.status.containerStatuses[0].state.waiting.reason}' |
        grep -qE 'ErrImagePull|ImagePullBackOff'
}
check "image volume without the pull secret: ErrImagePull / ImagePullBackOff" wait_for 60 imgvol_backoff
"$KUBECTL" delete pod imgvol imgvol-nosecret --wait=true --timeout=60s >/dev/null
imgvol_gone() { ! grep -q "$W/run/image-volumes/" /proc/self/mountinfo; }
check "image volume: unmounted with the pod" wait_for 30 imgvol_gone
kill "$registry_pid" 2>/dev/null

# A Job runs to completion; a DaemonSet's pod lands on this node.
cat <<'YAML' | "$KUBECTL" apply -f - >/dev/null
apiVersion: batch/v1
kind: Job
metadata: {name: e2e-job}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - {name: c, image: busybox, imagePullPolicy: Never, command: [sh, -c, 'echo done']}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: e2e-ds}
spec:
  selector: {matchLabels: {app: e2e-ds}}
  template:
    metadata: {labels: {app: e2e-ds}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - {name: c, image: busybox, imagePullPolicy: Never, command: [sleep, '3600']}
YAML
job_done() { [ "$("$KUBECTL" get job e2e-job -o jsonpath='{.status.succeeded}')" = 1 ]; }
check "job runs to Succeeded" wait_for 90 job_done
ds_running() {
    [ "$("$KUBECTL" get pods -l app=e2e-ds -o jsonpath='{.items[0].spec.nodeName} {.items[0].status.phase}')" = "$NODE Running" ]
}
check "daemonset pod Running on the node" wait_for 90 ds_running

# A PersistentVolumeClaim bound to a local PV of this node: the pod writes through it. A pod put
# on this node by hand with a claim on another node's local PV is refused with a clear reason.
mkdir -p "$W/disk" "$W/otherdisk"
cat <<YAML | "$KUBECTL" apply -f - >/dev/null
apiVersion: v1
kind: PersistentVolume
metadata: {name: e2e-local}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  storageClassName: ""
  local: {path: "$W/disk"}
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions: [{key: kubernetes.io/hostname, operator: In, values: [$NODE]}]
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: e2e-elsewhere}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  storageClassName: ""
  local: {path: "$W/otherdisk"}
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions: [{key: kubernetes.io/hostname, operator: In, values: [some-other-node]}]
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: ""
  volumeName: e2e-local
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: elsewhere}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: ""
  volumeName: e2e-elsewhere
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: Pod
metadata: {name: pvc-writer}
spec:
  restartPolicy: Never
  securityContext: {fsGroup: 2468}
  containers:
  - name: c
    image: busybox
    imagePullPolicy: Never
    command: [sh, -c, 'echo persisted > /data/file']
    volumeMounts: [{name: d, mountPath: /data}]
  volumes: [{name: d, persistentVolumeClaim: {claimName: data}}]
---
apiVersion: v1
kind: Pod
metadata: {name: pvc-elsewhere}
spec:
  nodeName: $NODE
  containers:
  - {name: c, image: busybox, imagePullPolicy: Never, volumeMounts: [{name: d, mountPath: /data}]}
  volumes: [{name: d, persistentVolumeClaim: {claimName: elsewhere}}]
YAML
pvc_written() { [ "$(phase pvc-writer)" = Succeeded ] && [ "$(cat "$W/disk/file" 2>/dev/null)" = persisted ]; }
check "PVC on a local PV: the pod's write is in the node's folder" wait_for 90 pvc_written
# fsGroup on a writable local PV (the kubelet's local volume plugin): the folder's group with
# setgid, so the pod's new file has that group too.
check "fsGroup on the local PV: folder and the pod's file in group 2468 ($(stat -c '%g %A' "$W/disk" "$W/disk/file" 2>&1 | tr '\n' ' '))" \
    bash -c "[ \"\$(stat -c '%g %A' '$W/disk')\" = '2468 drwxrwsr-x' ] && [ \"\$(stat -c %g '$W/disk/file')\" = 2468 ]"
refused() {
    "$KUBECTL" get events --field-selector involvedObject.name=pvc-elsewhere,reason=FailedMount \
        -o jsonpath='{.items[*].message}' | grep -q 'does not select node'
}
check "PVC on another node's local PV: FailedMount with the reason" wait_for 60 refused
"$KUBECTL" delete pod pvc-elsewhere pvc-writer --wait=false >/dev/null

# Deleting a pod with a 5 s grace runs preStop, then SIGTERM, and the pod is gone.
mkdir -p "$W/hook"
cat <<YAML | "$KUBECTL" apply -f - >/dev/null
apiVersion: v1
kind: Pod
metadata: {name: graceful}
spec:
  terminationGracePeriodSeconds: 5
  volumes: [{name: h, hostPath: {path: "$W/hook", type: Directory}}]
  containers:
  - name: c
    image: busybox
    imagePullPolicy: Never
    volumeMounts: [{name: h, mountPath: /h}]
    command: [sh, -c, 'trap "echo term >> /h/log; exit 0" TERM; echo up > /h/up; while true; do sleep 0.2; done']
    lifecycle: {preStop: {exec: {command: [sh, -c, 'echo prestop >> /h/log']}}}
YAML
graceful_up() { [ "$(phase graceful)" = Running ] && [ -f "$W/hook/up" ]; }
check "graceful pod Running" wait_for 60 graceful_up
t0=$(date +%s)
"$KUBECTL" delete pod graceful --grace-period=5 --wait=true --timeout=60s >/dev/null 2>&1
t1=$(date +%s)
hook_log=$(tr '\n' ' ' <"$W/hook/log" 2>/dev/null)
check "delete with grace 5 s: preStop then SIGTERM ($hook_log)" [ "$hook_log" = "prestop term " ]
gone() { ! "$KUBECTL" get pod graceful >/dev/null 2>&1; }
check "delete with grace 5 s: gone from the API in $((t1 - t0)) s" gone
check "  ... within the grace period" [ $((t1 - t0)) -le 8 ]

# kill -9 of bosun and a restart: the running containers are adopted, not restarted.
restarts() { "$KUBECTL" get pods -l app=e2e -o jsonpath='{range .items[*]}{.status.containerStatuses[0].containerID} {.status.containerStatuses[0].restartCount}{"\n"}{end}' | sort; }
before=$(restarts)
kill -KILL "$bosun_pid"; wait "$bosun_pid" 2>/dev/null
"$BOSUN" --kubeconfig "$W/kubeconfig" --bootstrap-kubeconfig "$D/bootstrap.kubeconfig" \
    --cert-dir "$W/pki" --config "$W/config.yaml" "${A[@]}" >>"$W/bosun.log" 2>&1 &
bosun_pid=$!
sleep 15
same_containers() { [ "$before" = "$(restarts)" ] && three_running; }
check "bosun kill -9 + restart: same containers, no restarts" same_containers
check "  ... (3 containers with restartCount 0 before)" [ "$(grep -c ' 0$' <<<"$before")" = 3 ]
# The control plane stopped for a minute: pods keep running, a container that dies meanwhile is
# restarted, and its status reaches the API once the apiserver is back.
bash "$here/component.sh" "$D" stop kube-apiserver >/dev/null
loops() { # pids of the deployment's shells (in this test's cgroup root)
    for p in /proc/[0-9]*; do
        grep -q bosun-e2e-node "$p/cgroup" 2>/dev/null &&
            cat "$p/cmdline" 2>/dev/null | tr '\0' ' ' | grep -q '^sh -c trap "exit 0" TERM' &&
            basename "$p"
    done
}
victim=$(loops | head -1)
[ -n "$victim" ] && kill -KILL "$victim"
sleep 60
running_during=$(loops | wc -l)
bash "$here/component.sh" "$D" start kube-apiserver >/dev/null
check "apiserver down 60 s: the 3 pods kept running (and the killed one came back: $running_during)" \
    [ "$running_during" = 3 ]
api_up() { "$KUBECTL" get --raw /readyz >/dev/null 2>&1; }
wait_for 120 api_up
restarted_once() {
    [ "$("$KUBECTL" get pods -l app=e2e -o jsonpath='{range .items[*]}{.status.containerStatuses[0].restartCount}{"\n"}{end}' | sort | tr '\n' ' ')" = "0 0 1 " ]
}
check "after the outage: the restart is in the API (restartCounts 0 0 1)" wait_for 90 restarted_once
healthy() { node_ready && three_running; }
check "after the outage: node Ready, pods Running" wait_for 60 healthy
"$KUBECTL" scale deploy e2e --replicas=0 >/dev/null
no_pods() { [ -z "$("$KUBECTL" get pods -l app=e2e -o name)" ]; }
# (the controller-manager reconnects to the restarted apiserver with its own backoff first)
wait_for 120 no_pods
check "scaled to 0: pods terminated and deleted from the API ($("$KUBECTL" get pods -l app=e2e -o jsonpath='{range .items[*]}{.metadata.name}:{.metadata.deletionTimestamp} {end}'))" no_pods
check "finished pods stay in the API (reader Succeeded)" [ "$(phase reader)" = Succeeded ]
rm "$W/manifests/static.yaml"
mirror_gone() { ! "$KUBECTL" -n kube-system get pod "static-web-$NODE" >/dev/null 2>&1; }
check "static pod removed: mirror pod deleted" wait_for 60 mirror_gone
"$KUBECTL" delete ds e2e-ds --wait=false >/dev/null
"$KUBECTL" delete job e2e-job --cascade=foreground --wait=false >/dev/null
"$KUBECTL" delete pod --all --grace-period=2 --wait=false >/dev/null
empty() { [ -z "$("$KUBECTL" get pods -A --field-selector spec.nodeName="$NODE" -o name)" ]; }
check "every pod deleted from the API" wait_for 90 empty
leftovers() { ls "$W/run/containers" "$W/run/sandboxes" "$W/root/pods" 2>/dev/null | grep -v : | grep -v '^$' | tr '\n' ' '; }
nothing_left() { [ -z "$(leftovers)" ]; }
wait_for 30 nothing_left
check "nothing of the pods left on the node ($(leftovers))" nothing_left
kill -TERM "$bosun_pid"; wait "$bosun_pid" 2>/dev/null; bosun_pid=
summary
