#!/usr/bin/env bash
# End-to-end: the node's resource contract against the real control plane. bosun's root dir,
# image store and pod logs live on a small loop-mounted ext4 filesystem of this test's own (so
# nothing can fill the real disk), the pods' memory is capped by a systemReserved that leaves
# 600Mi to the kubepods cgroup. Checked: allocatable (capacity minus systemReserved and the hard
# thresholds) on the Node and on the kubepods cgroup; admission OutOfcpu for a pod pinned with
# nodeName; BestEffort, then Burstable, then Guaranteed evicted under memory pressure (the
# minimum reclaim keeps the threshold met until all three are gone), with the kubelet's status
# (Failed, Evicted, message, DisruptionTarget), the MemoryPressure condition and its taint, a
# new pod kept off the node meanwhile and scheduled once the pressure is over; an emptyDir over
# its sizeLimit and a container over its limits.ephemeral-storage evicted within 30 s;
# DiskPressure from a filled root dir, unused images collected first, then a pod evicted; an
# in-place resize up and down without a restart (the cgroup read inside the container), a
# RestartContainer resize restarting its container, a resize beyond allocatable refused, a
# running non-sidecar init container resized in place (status and cgroup). Starts
# and stops its own control plane, unmounts and detaches everything, leaves nothing running.
# Prints `N passed, M failed`. Needs root.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
source "$here/env.sh"
source "$here/lib.sh"
D=${1:-/tmp/bosun-e2e-cluster}
W=$(mktemp -d /tmp/bosun-e2e-pressure-XXXXXX)
BOSUN=${BOSUN_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/bosun/target}/debug/bosun}
KUBECTL="$K8S_BIN/kubectl"
NODE=e2e-pressure
CG=/bosun-e2e-pressure
FS="$W/fs"
cleanup() {
    [ -n "${bosun_pid:-}" ] && kill -TERM "$bosun_pid" 2>/dev/null && wait "$bosun_pid" 2>/dev/null
    reap_node "$W" "${CG#/}" bosune2epr
    # The loop filesystem: unmounted (lazily if something still holds it) and detached.
    umount "$FS" 2>/dev/null || umount -l "$FS" 2>/dev/null
    [ -n "${loopdev:-}" ] && losetup -d "$loopdev" 2>/dev/null
    bash "$here/down.sh" --purge "$D" >/dev/null 2>&1
    [ "${failed:-0}" = 0 ] || cp "$W/bosun.log" /tmp/bosun-e2e-pressure.failed.log 2>/dev/null
    rm -rf "$W"
}
trap cleanup EXIT

# The node's filesystem: 256 MiB of ext4 on a loop device.
truncate -s 256M "$W/fs.img"
mkfs.ext4 -q -F "$W/fs.img"
mkdir -p "$FS"
loopdev=$(losetup --find --show "$W/fs.img") || { echo "0 passed, 1 failed"; exit 1; }
mount "$loopdev" "$FS" || { echo "0 passed, 1 failed"; exit 1; }

bash "$here/up.sh" "$D" >"$W.up.log" 2>&1 || { cat "$W.up.log"; rm -f "$W.up.log"; echo "0 passed, 1 failed"; exit 1; }
rm -f "$W.up.log"
export KUBECONFIG="$D/admin.kubeconfig"
bash "$root/tests/images/build-busybox.sh" "$W/busybox-oci" >/dev/null

free_port PORT 20250
free_port HPORT 20248
MEM_KIB=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
# Pods get 600Mi: the rest of the memory is the system's.
RESERVED=$(( MEM_KIB * 1024 - 600 * 1024 * 1024 ))
cat >"$W/config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
port: $PORT
healthzPort: $HPORT
authentication:
  x509: {clientCAFile: $D/pki/ca.crt}
systemReserved: {memory: "$RESERVED"}
enforceNodeAllocatable: [pods]
evictionHard:
  memory.available: 300Mi
  nodefs.available: 60Mi
  imagefs.available: 60Mi
  nodefs.inodesFree: 1%
evictionMinimumReclaim:
  memory.available: 260Mi
evictionPressureTransitionPeriod: 20s
imageMinimumGCAge: 1s
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 90
YAML
A=(--root-dir "$FS/kubelet" --run-dir "$W/run" --data-dir "$FS/bosun" --pod-logs-dir "$FS/logs"
   --container-logs-dir "$W/clogs" --cgroup-root "$CG" --hostname-override "$NODE"
   --cni-conf-dir "$W/cni" --pod-cidr 10.245.0.0/24)
"$BOSUN" image import "$W/busybox-oci" busybox --data-dir "$FS/bosun" >/dev/null 2>&1
mkdir -p "$W/cni"
cat >"$W/cni/10-e2e-pressure.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "bosun-e2e-pressure", "plugins": [
  {"type": "bridge", "bridge": "bosune2epr", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.245.0.0/24"}]], "dataDir": "$W/ipam"}}]}
JSON
"$BOSUN" --kubeconfig "$W/kubeconfig" --bootstrap-kubeconfig "$D/bootstrap.kubeconfig" \
    --cert-dir "$W/pki" --config "$W/config.yaml" "${A[@]}" >"$W/bosun.log" 2>&1 &
bosun_pid=$!

node_ready() { [ "$("$KUBECTL" get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]; }
check "node registers and turns Ready" wait_for 60 node_ready
jp() { "$KUBECTL" get "$@" 2>/dev/null; }
cond() { jp node "$NODE" -o jsonpath="{.status.conditions[?(@.type==\"$1\")].status}"; }

# ---------- allocatable ----------
alloc=$(jp node "$NODE" -o jsonpath='{.status.allocatable.memory}')
storage_cap=$(jp node "$NODE" -o jsonpath='{.status.capacity.ephemeral-storage}')
storage_alloc=$(jp node "$NODE" -o jsonpath='{.status.allocatable.ephemeral-storage}')
check "allocatable memory is 600Mi minus the 300Mi threshold ($alloc)" [ "$alloc" = 300Mi ]
to_bytes() { numfmt --from=iec-i --suffix= "${1%i}i" 2>/dev/null || numfmt --from=iec "${1%i}"; }
storage_ok() {
    local cap al
    cap=$(to_bytes "$storage_cap") && al=$(to_bytes "$storage_alloc") &&
        [ $((cap - al)) = $((60 * 1024 * 1024)) ]
}
check "allocatable ephemeral storage is the loop fs minus 60Mi ($storage_cap, $storage_alloc)" storage_ok
kubepods_limit() {
    local f
    for f in /sys/fs/cgroup/memory$CG/kubepods/memory.limit_in_bytes /sys/fs/cgroup$CG/kubepods/memory.max; do
        [ -f "$f" ] && [ "$(cat "$f")" = $((600 * 1024 * 1024)) ] && return 0
    done
    return 1
}
check "kubepods cgroup limited to the pods' 600Mi (enforceNodeAllocatable: pods)" wait_for 20 kubepods_limit

# ---------- admission ----------
cat <<YAML | "$KUBECTL" apply -f - >/dev/null
apiVersion: v1
kind: Pod
metadata: {name: too-big}
spec:
  nodeName: $NODE
  containers:
  - {name: c, image: busybox, imagePullPolicy: Never, command: [sleep, '3600'],
     resources: {requests: {cpu: '100'}}}
YAML
rejected() {
    local out
    out=$(jp pod too-big -o jsonpath='{.status.phase}|{.status.reason}|{.status.message}')
    [[ $out == "Failed|OutOfcpu|Pod was rejected: Node didn't have enough resource: cpu, requested: 100000, used: 0, capacity: "* ]]
}
check "a nodeName pod requesting 100 CPUs is Failed with OutOfcpu and the kubelet's message" wait_for 30 rejected
rejected_event() { "$KUBECTL" get events --field-selector involvedObject.name=too-big,reason=OutOfcpu -o name | grep -q .; }
check "an OutOfcpu Warning event" wait_for 20 rejected_event
"$KUBECTL" delete pod too-big --wait=false >/dev/null 2>&1

# ---------- in-place resize ----------
# The container's own cgroup, read inside it: "<cpu quota> <period> <memory limit>" (v2 files,
# or the v1 folders bosun binds at /sys/fs/cgroup/<controller>).
CGREAD='if [ -f /sys/fs/cgroup/cpu.max ]; then echo $(cat /sys/fs/cgroup/cpu.max) $(cat /sys/fs/cgroup/memory.max); else echo $(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us) $(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us) $(cat /sys/fs/cgroup/memory/memory.limit_in_bytes); fi'
cat <<YAML | "$KUBECTL" apply -f - >/dev/null
apiVersion: v1
kind: Pod
metadata: {name: resized}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    imagePullPolicy: Never
    command: [sleep, '3600']
    resources: {requests: {cpu: 100m, memory: 32Mi}, limits: {cpu: 200m, memory: 64Mi}}
  - name: r
    image: busybox
    imagePullPolicy: Never
    command: [sleep, '3600']
    resources: {requests: {cpu: 50m, memory: 16Mi}, limits: {cpu: 100m, memory: 32Mi}}
    resizePolicy: [{resourceName: memory, restartPolicy: RestartContainer}]
YAML
resized_running() { [ "$(jp pod resized -o jsonpath='{.status.phase}')" = Running ]; }
check "a pod to resize runs" wait_for 60 resized_running
cg() { "$KUBECTL" exec resized -c "$1" -- sh -c "$CGREAD" 2>/dev/null; }
resize() { "$KUBECTL" patch pod resized --subresource resize --type strategic -p "$1" >/dev/null; }
resized_to() { # container, limits.cpu, limits.memory
    local out
    out=$(jp pod resized -o jsonpath="{.status.containerStatuses[?(@.name==\"$1\")].resources.limits.cpu} {.status.containerStatuses[?(@.name==\"$1\")].resources.limits.memory} {.status.conditions[?(@.type==\"PodResizeInProgress\")].status}")
    [ "$out" = "$2 $3 " ]
}
restarts() { jp pod resized -o jsonpath="{.status.containerStatuses[?(@.name==\"$1\")].restartCount}"; }
resize '{"spec":{"containers":[{"name":"c","resources":{"requests":{"cpu":"150m","memory":"32Mi"},"limits":{"cpu":"400m","memory":"96Mi"}}}]}}'
check "resized up: the status reports the new limits, no resize in progress" wait_for 30 resized_to c 400m 96Mi
cg_is() { [ "$(cg "$1")" = "$2" ]; }
check "resized up in place: the container's cgroup has cpu 400m and 96Mi ($(cg c))" wait_for 10 cg_is c "40000 100000 $((96 * 1024 * 1024))"
check "resized up without a restart" [ "$(restarts c)" = 0 ]
alloc_cpu() { [ "$(jp pod resized -o jsonpath='{.status.containerStatuses[?(@.name=="c")].allocatedResources.cpu}')" = 150m ]; }
check "allocatedResources says the new request" alloc_cpu
resize '{"spec":{"containers":[{"name":"c","resources":{"requests":{"cpu":"100m","memory":"32Mi"},"limits":{"cpu":"300m","memory":"48Mi"}}}]}}'
check "resized down: the status reports the new limits" wait_for 30 resized_to c 300m 48Mi
check "resized down in place: the container's cgroup has cpu 300m and 48Mi ($(cg c))" wait_for 10 cg_is c "30000 100000 $((48 * 1024 * 1024))"
check "resized down without a restart" [ "$(restarts c)" = 0 ]
resize '{"spec":{"containers":[{"name":"r","resources":{"requests":{"cpu":"50m","memory":"16Mi"},"limits":{"cpu":"100m","memory":"40Mi"}}}]}}'
check "a RestartContainer memory resize restarts the container" wait_for 30 eval '[ "$(restarts r)" = 1 ] && resized_to r 100m 40Mi'
check "the restarted container's cgroup has 40Mi ($(cg r))" wait_for 10 cg_is r "10000 100000 $((40 * 1024 * 1024))"
resize '{"spec":{"containers":[{"name":"c","resources":{"requests":{"cpu":"100","memory":"32Mi"},"limits":{"cpu":"100","memory":"48Mi"}}}]}}' 2>"$W/resize.err"
check "a resize beyond the node's allocatable is refused by the apiserver" grep -q "allocatable" "$W/resize.err"
"$KUBECTL" delete pod resized --wait=false >/dev/null 2>&1
# A running non-sidecar init container resized in place (upstream's "should support resizing a
# non-sidecar init container"): its status and its cgroup take the new values, no restart.
cat <<YAML | "$KUBECTL" apply -f - >/dev/null
apiVersion: v1
kind: Pod
metadata: {name: init-resized}
spec:
  terminationGracePeriodSeconds: 1
  initContainers:
  - name: i
    image: busybox
    imagePullPolicy: Never
    command: [tail, -f, /dev/null]
    resources: {requests: {cpu: 200m, memory: 64Mi}, limits: {cpu: 200m, memory: 64Mi}}
  containers:
  - name: c
    image: busybox
    imagePullPolicy: Never
    command: [sleep, '3600']
    resources: {requests: {cpu: 200m, memory: 64Mi}, limits: {cpu: 200m, memory: 64Mi}}
YAML
init_to() { # limits.cpu, limits.memory, allocatedResources.cpu
    local out
    out=$(jp pod init-resized -o jsonpath='{.status.initContainerStatuses[0].resources.limits.cpu} {.status.initContainerStatuses[0].resources.limits.memory} {.status.initContainerStatuses[0].allocatedResources.cpu} {.status.conditions[?(@.type=="PodResizeInProgress")].status}')
    [ "$out" = "$1 $2 $3 " ]
}
init_cg() { "$KUBECTL" exec init-resized -c i -- sh -c "$CGREAD" 2>/dev/null; }
init_cg_is() { [ "$(init_cg)" = "$1" ]; }
init_restarts() { jp pod init-resized -o jsonpath='{.status.initContainerStatuses[0].restartCount}'; }
check "a running init container reports its resources" wait_for 60 init_to 200m 64Mi 200m
check "the init container's cgroup has cpu 200m and 64Mi ($(init_cg))" wait_for 10 init_cg_is "20000 100000 $((64 * 1024 * 1024))"
"$KUBECTL" patch pod init-resized --subresource resize --type strategic -p '{"spec":{"initContainers":[{"name":"i","resources":{"requests":{"cpu":"300m","memory":"128Mi"},"limits":{"cpu":"300m","memory":"128Mi"}}}]}}' >/dev/null
check "init container resized up: the status reports the new values" wait_for 30 init_to 300m 128Mi 300m
check "init container resized up in place: its cgroup has cpu 300m and 128Mi ($(init_cg))" wait_for 10 init_cg_is "30000 100000 $((128 * 1024 * 1024))"
check "init container resized without a restart" [ "$(init_restarts)" = 0 ]
"$KUBECTL" delete pod init-resized --wait=false >/dev/null 2>&1

# ---------- memory pressure ----------
# Each pod holds its share in a memory emptyDir (tmpfs pages are charged to the writer's cgroup,
# and stay there whatever the process does): Guaranteed 60Mi of 150Mi, Burstable 60Mi of its
# 100Mi request, BestEffort 230Mi (the pods' 350Mi cross 600Mi - 300Mi).
hog() { # name MiB resources
    cat <<YAML | "$KUBECTL" apply -f - >/dev/null
apiVersion: v1
kind: Pod
metadata: {name: $1, labels: {test: memory}}
spec:
  terminationGracePeriodSeconds: 30
  containers:
  - name: c
    image: busybox
    imagePullPolicy: Never
    command: [sh, -c, 'dd if=/dev/zero of=/mem/fill bs=1M count=$2 2>/dev/null; echo held; sleep 3600']
    resources: $3
    volumeMounts: [{name: mem, mountPath: /mem}]
  volumes:
  - {name: mem, emptyDir: {medium: Memory}}
YAML
}
running() { [ "$(jp pod "$1" -o jsonpath='{.status.phase}')" = Running ]; }
holding() { "$KUBECTL" logs "$1" 2>/dev/null | grep -q held; }
hog guaranteed 60 '{requests: {memory: 150Mi, cpu: 10m}, limits: {memory: 150Mi, cpu: 10m}}'
hog burstable 60 '{requests: {memory: 100Mi}}'
both_holding() { holding guaranteed && holding burstable; }
check "Guaranteed and Burstable pods hold their memory" wait_for 60 both_holding
: >"$W/order"
watch_order() {
    local end=$((SECONDS + 150)) p
    while [ "$SECONDS" -lt "$end" ]; do
        for p in besteffort burstable guaranteed; do
            grep -qx "$p" "$W/order" 2>/dev/null && continue
            [ "$(jp pod "$p" -o jsonpath='{.status.reason}')" = Evicted ] && echo "$p" >>"$W/order"
        done
        [ "$(wc -l <"$W/order" 2>/dev/null || echo 0)" -ge 3 ] && return
        sleep 0.2
    done
}
watch_order &
watcher=$!
hog besteffort 230 '{}'
pressure() { [ "$(cond MemoryPressure)" = True ]; }
check "MemoryPressure on the Node" wait_for 60 pressure
taint() { jp node "$NODE" -o jsonpath='{.spec.taints[*].key}' | grep -q "node.kubernetes.io/$1"; }
check "the memory-pressure taint on the Node" wait_for 30 taint memory-pressure
cat <<YAML | "$KUBECTL" apply -f - >/dev/null
apiVersion: v1
kind: Pod
metadata: {name: newcomer}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {name: c, image: busybox, imagePullPolicy: Never, command: [sleep, '3600']}
YAML
kept_off() {
    sleep 5
    [ -z "$(jp pod newcomer -o jsonpath='{.spec.nodeName}')" ] && [ "$(cond MemoryPressure)" = True ]
}
check "a new pod is not scheduled while the node has memory pressure" kept_off
wait "$watcher"
order=$(tr '\n' ' ' <"$W/order" 2>/dev/null)
check "evicted in order BestEffort, Burstable, Guaranteed ($order)" [ "$order" = "besteffort burstable guaranteed " ]
evicted_status() {
    local out
    out=$(jp pod besteffort -o jsonpath='{.status.phase}|{.status.reason}|{.status.message}|{.status.conditions[?(@.type=="DisruptionTarget")].status}/{.status.conditions[?(@.type=="DisruptionTarget")].reason}')
    [[ $out == "Failed|Evicted|The node was low on resource: memory. Threshold quantity: 300Mi, available: "*"Container c was using "*", request is 0, has larger consumption of memory. |True/TerminationByKubelet" ]]
}
check "an evicted pod: Failed, Evicted, the kubelet's message, DisruptionTarget" evicted_status
evicted_event() { "$KUBECTL" get events --field-selector involvedObject.name=besteffort,reason=Evicted -o name | grep -q .; }
check "an Evicted Warning event" evicted_event
no_pressure() { [ "$(cond MemoryPressure)" = False ]; }
check "MemoryPressure back to False after the transition period" wait_for 90 no_pressure
newcomer_runs() { running newcomer; }
check "the new pod is scheduled and runs once the pressure is over" wait_for 90 newcomer_runs
"$KUBECTL" delete pod -l test=memory --wait=false >/dev/null 2>&1
"$KUBECTL" delete pod newcomer --wait=false >/dev/null 2>&1

# ---------- ephemeral storage ----------
cat <<YAML | "$KUBECTL" apply -f - >/dev/null
apiVersion: v1
kind: Pod
metadata: {name: emptydir-hog}
spec:
  terminationGracePeriodSeconds: 30
  containers:
  - {name: c, image: busybox, imagePullPolicy: Never,
     command: [sh, -c, 'dd if=/dev/zero of=/data/f bs=1M count=3; sleep 3600'],
     volumeMounts: [{name: data, mountPath: /data}]}
  volumes:
  - {name: data, emptyDir: {sizeLimit: 1Mi}}
---
apiVersion: v1
kind: Pod
metadata: {name: log-hog}
spec:
  terminationGracePeriodSeconds: 30
  containers:
  - {name: c, image: busybox, imagePullPolicy: Never,
     command: [sh, -c, 'head -c 3000000 /dev/zero | tr "\\\\0" x | fold -w 100; sleep 3600'],
     resources: {limits: {ephemeral-storage: 1Mi}}}
YAML
emptydir_started() { [ "$(jp pod emptydir-hog -o jsonpath='{.status.containerStatuses[0].state.running.startedAt}')" != "" ] || emptydir_evicted; }
emptydir_evicted() {
    [ "$(jp pod emptydir-hog -o jsonpath='{.status.reason}|{.status.message}')" = 'Evicted|Usage of EmptyDir volume "data" exceeds the limit "1Mi". ' ]
}
wait_for 60 emptydir_started
t_started=$SECONDS
wait_for 40 emptydir_evicted
took=$((SECONDS - t_started))
evicted_in_time() { [ "$took" -le 30 ] && emptydir_evicted; }
check "an emptyDir over its 1Mi sizeLimit is evicted within 30 s of its container's start ($took s)" evicted_in_time
log_evicted() {
    local out
    out=$(jp pod log-hog -o jsonpath='{.status.reason}|{.status.message}')
    [[ $out == 'Evicted|Pod ephemeral local storage usage exceeds the total limit of containers 1Mi. ' ||
       $out == 'Evicted|Container c exceeded its local ephemeral storage limit "1Mi". ' ]]
}
check "a container over limits.ephemeral-storage (its log) is evicted" wait_for 45 log_evicted
"$KUBECTL" delete pod emptydir-hog log-hog --wait=false >/dev/null 2>&1

# ---------- disk pressure ----------
# An image no pod uses, then a pod using disk, then the root dir filled past the threshold: the
# unused image is collected first, and since that is not enough, the pod is evicted.
# (busybox with one more file: an image of its own, which no pod uses).
EXTRA_BINS=/bin/busybox bash "$root/tests/images/build-busybox.sh" "$W/other-oci" >/dev/null
"$BOSUN" image import "$W/other-oci" unused-image --data-dir "$FS/bosun" >/dev/null 2>&1
cat <<YAML | "$KUBECTL" apply -f - >/dev/null
apiVersion: v1
kind: Pod
metadata: {name: disk-user}
spec:
  terminationGracePeriodSeconds: 30
  containers:
  - {name: c, image: busybox, imagePullPolicy: Never,
     command: [sh, -c, 'dd if=/dev/zero of=/data/f bs=1M count=5; sleep 3600'],
     volumeMounts: [{name: data, mountPath: /data}]}
  volumes:
  - {name: data, emptyDir: {}}
YAML
disk_user_runs() { running disk-user; }
check "a pod writing 5Mi into its emptyDir runs" wait_for 60 disk_user_runs
images_before=$("$BOSUN" images --data-dir "$FS/bosun" 2>/dev/null | grep -c .)
avail=$(df -B1 --output=avail "$FS" | tail -1)
fallocate -l $((avail - 40 * 1024 * 1024)) "$FS/kubelet/filler"
disk_pressure() { [ "$(cond DiskPressure)" = True ]; }
check "DiskPressure on the Node" wait_for 60 disk_pressure
check "the disk-pressure taint on the Node" wait_for 30 taint disk-pressure
disk_evicted() {
    [[ $(jp pod disk-user -o jsonpath='{.status.reason}|{.status.message}') == 'Evicted|The node was low on resource: ephemeral-storage. Threshold quantity: 60Mi, available: '* ]]
}
check "a pod is evicted for ephemeral-storage" wait_for 60 disk_evicted
images_gone() {
    ! "$BOSUN" images --data-dir "$FS/bosun" 2>/dev/null | grep -q unused-image
}
check "the unused image was collected ($images_before images before)" images_gone
gc_first() {
    local gc ev
    gc=$(grep -n 'reclaimed disk' "$W/bosun.log" | head -1 | cut -d: -f1)
    ev=$(grep -n 'evicting pod.*ephemeral-storage' "$W/bosun.log" | head -1 | cut -d: -f1)
    [ -n "$gc" ] && [ -n "$ev" ] && [ "$gc" -lt "$ev" ]
}
check "image GC ran before the eviction" gc_first
rm -f "$FS/kubelet/filler"
no_disk_pressure() { [ "$(cond DiskPressure)" = False ]; }
check "DiskPressure back to False once the disk is freed" wait_for 90 no_disk_pressure
"$KUBECTL" delete pod disk-user --wait=false >/dev/null 2>&1

gone() { [ -z "$("$KUBECTL" get pods -o name 2>/dev/null)" ]; }
check "every pod deleted" wait_for 90 gone
summary
