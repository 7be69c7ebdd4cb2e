#!/usr/bin/env bash
# The cluster benchmark's peer (issue 6 item 4): the real kubelet + containerd (+ Debian's runc)
# joined to the same kind of test control plane as bosun in bench/cluster.sh, the same
# 100-replica Deployment, measured by the same bench/cluster.py.
#
#   bench/peer.sh --layout OCI-LAYOUT [--quick] [--out FILE] [--json FILE]
#
# Exit 3 (and nothing started) when the peer is not built: run bench/peer-build.sh.
#
# Isolation: control plane interface bosun-cp3, advertise address 10.250.3.1, service CIDR
# 10.99.0.0/16, no kube-proxy; everything of the node under /var/lib/bosun-peer/run-<pid>
# (containerd root/state/socket, kubelet --root-dir, podLogsDir, CNI conf and IPAM data, runc
# root), cgroup root /bosun-peer-<pid>, CNI bridge bosunpeer0 with 10.238.0.0/24, free ports.
# kubelet and containerd run in a private mount namespace (unshare -m, private propagation)
# where tmpfs mounts hide the paths both hardcode whatever their flags say: /run (containerd's
# shim sockets /run/containerd/s, NRI), /var/lib/kubelet (the device plugin socket) and
# /var/log/containers (kubelet's log symlinks). Every mount they make (overlay rootfs, tmpfs
# volumes, netns pins) lives in that namespace and goes away with it; nothing leaks to the host.
#
# On exit, whatever happened: the Deployment is deleted and the kubelet given time to stop every
# pod; the kubelet, then containerd are stopped; anything left (shims, pod processes in the cgroup
# root, processes of the namespace, cgroups, the bridge, the folder) is removed by force and
# reported (exit 1); the control plane is stopped and purged.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
source "$root/tests/cluster/env.sh"
source "$here/lib.sh"
CONTAINERD_VERSION=${CONTAINERD_VERSION:-v2.4.2}
CONTAINERD_BIN=${CONTAINERD_BIN:-$HOME/.cache/bosun/containerd/$CONTAINERD_VERSION/bin}
RUNC=${RUNC:-$(command -v runc || echo /usr/sbin/runc)}

layout= quick= out= json=
while [[ $# -gt 0 ]]; do
    case $1 in
        --layout) layout=$2; shift ;;
        --quick) quick=1 ;;
        --out) out=$2; shift ;;
        --json) json=$2; shift ;;
        *) echo "usage: $0 --layout DIR [--quick] [--out FILE] [--json FILE]" >&2; exit 2 ;;
    esac
    shift
done
[[ -d $layout ]] || { echo "$0: --layout DIR is required" >&2; exit 2; }
[[ $(id -u) == 0 ]] || { echo "$0: run as root" >&2; exit 1; }
log() { echo "[peer $(date +%H:%M:%S)] $*" >&2; }
if ! bash "$here/peer-build.sh" --check; then
    log "the peer is not built (kubelet in $K8S_BIN, containerd in $CONTAINERD_BIN): run bench/peer-build.sh"
    exit 3
fi
for t in unshare "$RUNC" /usr/lib/cni/bridge /usr/lib/cni/host-local /usr/lib/cni/loopback; do
    command -v "$t" >/dev/null || { log "$t is missing"; exit 3; }
done

NODE=peer-node
CGROOT=/bosun-peer-$$
BRIDGE=bosunpeer0
SUBNET=10.238.0.0/24
IMAGE=localhost/bosun-bench-busybox:latest
PAUSE=localhost/bosun-peer-pause:latest
KUBECTL="$K8S_BIN/kubectl"
CTR="$CONTAINERD_BIN/ctr"
mkdir -p /var/lib/bosun-peer
W=/var/lib/bosun-peer/run-$$
rm -rf "$W"; mkdir -p "$W"/{pids,cni,ipam,kubelet,pod-logs,pki,containerd/root,containerd/state,runc,opt}
D=$(mktemp -d /tmp/bosun-peer-cp-XXXXXX)
SOCK=$W/containerd/containerd.sock
export BOSUN_CP_IF=bosun-cp3 BOSUN_CP_IP=10.250.3.1 BOSUN_CP_SERVICE_CIDR=10.99.0.0/16
export BOSUN_CP_KUBE_PROXY=0 BOSUN_CP_NODE_NAME=$NODE
export KUBECONFIG=$D/admin.kubeconfig
ns_pid=
replicas=100 cpu_window=10
[[ -n $quick ]] && replicas=3 cpu_window=1

pidof_() { cat "$W/pids/$1" 2>/dev/null; }
alive() { local p; p=$(pidof_ "$1") && [[ -n $p ]] && kill -0 "$p" 2>/dev/null; }
# Processes of our mount namespace (containerd, kubelet, shims, CNI plugins), by pid.
ns_pids() {
    [[ -n ${ns_ino:-} ]] || return 0
    local p
    for p in /proc/[0-9]*; do
        [[ $(readlink "$p/ns/mnt" 2>/dev/null) == "$ns_ino" ]] && echo "${p#/proc/}"
    done
}
# Processes in the pods' cgroups (pause, the containers), any v1 hierarchy holding our root.
cg_pids() {
    local c
    for c in /sys/fs/cgroup/*/"${CGROOT#/}"; do
        [[ -d $c ]] && find "$c" -name cgroup.procs -exec cat {} + 2>/dev/null
    done | sort -u
}
stop_pid() { # name seconds: SIGTERM, wait, SIGKILL
    local p n=$(($2 * 5))
    p=$(pidof_ "$1") || return 0
    [[ -n $p ]] && kill -0 "$p" 2>/dev/null || return 0
    kill -TERM "$p" 2>/dev/null
    for _ in $(seq 1 "$n"); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.2; done
    leaks+=("$1 ignored SIGTERM for $2 s")
    kill -KILL "$p" 2>/dev/null
}

cleanup() {
    local rc=$? left
    leaks=()
    trap - EXIT INT TERM
    if alive kubelet && [[ -s $D/admin.kubeconfig ]]; then
        "$KUBECTL" delete deployment bosun-bench --ignore-not-found --wait=false >/dev/null 2>&1
        "$KUBECTL" delete pods -l "app in (bosun-bench,bosun-bench-one)" --grace-period=1 --wait=false >/dev/null 2>&1
        for _ in $(seq 1 240); do [[ -z $(cg_pids) ]] && break; sleep 0.5; done
        [[ -z $(cg_pids) ]] || leaks+=("pod processes still running after 120 s: $(cg_pids | wc -l)")
    fi
    stop_pid kubelet 20
    # Sandboxes and containers the kubelet left (it removes exited ones only in its GC): through
    # containerd, which stops the shims and lets CNI DEL give the addresses back.
    if alive containerd; then
        local c
        for c in $("$CTR" --address "$SOCK" -n k8s.io tasks ls -q 2>/dev/null); do
            "$CTR" --address "$SOCK" -n k8s.io tasks kill -s KILL "$c" >/dev/null 2>&1
        done
        sleep 1
        for c in $("$CTR" --address "$SOCK" -n k8s.io tasks ls -q 2>/dev/null); do
            "$CTR" --address "$SOCK" -n k8s.io tasks rm -f "$c" >/dev/null 2>&1
        done
        for c in $("$CTR" --address "$SOCK" -n k8s.io containers ls -q 2>/dev/null); do
            "$CTR" --address "$SOCK" -n k8s.io containers rm "$c" >/dev/null 2>&1
        done
    fi
    stop_pid containerd 20
    left=$(cg_pids)
    if [[ -n $left ]]; then
        leaks+=("pod processes left: $(echo $left)")
        # shellcheck disable=SC2086
        kill -KILL $left 2>/dev/null
    fi
    left=$(ns_pids | grep -vx "${ns_pid:-0}")
    if [[ -n $left ]]; then
        leaks+=("processes of the namespace left (shims...): $(echo $left)")
        # shellcheck disable=SC2086
        kill -KILL $left 2>/dev/null
    fi
    if [[ -n $ns_pid ]]; then
        kill -TERM "$ns_pid" 2>/dev/null
        wait "$ns_pid" 2>/dev/null
    fi
    sleep 0.5
    local mounts
    mounts=$(awk -v w="$W/" 'index($5, w) == 1 {print $5}' /proc/self/mountinfo | sort -r)
    if [[ -n $mounts ]]; then
        leaks+=("host mounts left below $W: $(wc -l <<<"$mounts")")
        xargs -r -n1 umount -l <<<"$mounts" 2>/dev/null
    fi
    local cg
    for cg in /sys/fs/cgroup/*/"${CGROOT#/}"; do
        [[ -d $cg ]] || continue
        find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null
        [[ -d $cg ]] && leaks+=("cgroup $cg could not be removed")
    done
    ip link show "$BRIDGE" >/dev/null 2>&1 && ip link del "$BRIDGE" 2>/dev/null
    bash "$root/tests/cluster/down.sh" --purge "$D" >/dev/null 2>&1 || leaks+=("down.sh failed")
    ip link show bosun-cp3 >/dev/null 2>&1 && leaks+=("interface bosun-cp3 left")
    if [[ -n ${KEEP_LOGS:-} ]]; then
        mkdir -p "$KEEP_LOGS" && cp "$W"/*.log "$KEEP_LOGS/" 2>/dev/null
    fi
    if [[ $rc != 0 ]]; then
        for f in containerd kubelet; do
            [[ -s $W/$f.log ]] && { log "$f's last log lines:"; tail -15 "$W/$f.log" >&2; }
        done
    fi
    rm -rf "$W"
    rmdir /var/lib/bosun-peer 2>/dev/null
    exit_with_leaks "$rc" "${leaks[@]}"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------- the control plane ----------
start_control_plane

# ---------- images ----------
bash "$here/peer/build-pause-image.sh" "$W/pause-oci" >/dev/null || { log "building the pause image failed"; exit 1; }
tar -C "$W/pause-oci" -cf "$W/pause.tar" . && tar -C "$layout" -cf "$W/busybox.tar" . ||
    { log "packing the image layouts failed"; exit 1; }
rm -rf "$W/pause-oci"

# ---------- configuration ----------
free_port PORT 22250
free_port HPORT 22248
free_port STREAM_PORT 22260

cat >"$W/containerd.toml" <<TOML
version = 4
root = "$W/containerd/root"
state = "$W/containerd/state"
imports = []
disabled_plugins = ["io.containerd.nri.v1.nri"]

[plugins."io.containerd.server.v1.grpc"]
  address = "$SOCK"

[plugins."io.containerd.server.v1.ttrpc"]
  address = "$SOCK.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "$W/opt"

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "$PAUSE"

[plugins."io.containerd.cri.v1.runtime"]
  enable_selinux = false
  # No CAP_SYS_RESOURCE here: the kubelet's -998 for sandboxes would fail in runc.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = "$RUNC"
        Root = "$W/runc"
        SystemdCgroup = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "$W/cni"
    max_conf_num = 1

[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "$STREAM_PORT"
TOML

cat >"$W/cni/10-peer.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "bosun-peer", "plugins": [
  {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$SUBNET"}]],
            "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$W/ipam"}},
  {"type": "loopback"}]}
JSON

cat >"$W/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This host's controllers are on cgroup v1 (hybrid): refused since 1.35 unless told (KEP-5573).
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: $CGROOT
containerRuntimeEndpoint: unix://$SOCK
address: $BOSUN_CP_IP
port: $PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $HPORT
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $D/pki/ca.crt}
authorization: {mode: Webhook}
failSwapOn: false
podLogsDir: $W/pod-logs
maxPods: 250
# Disk and image GC thresholds out of the way: the bench must not be cut short by a shared disk.
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# The agent lacks CAP_SYS_RESOURCE: it could not lower its own oom_score_adj to -999.
oomScoreAdj: 0
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
YAML

# Runs inside the private mount namespace: hide the hardcoded paths, start containerd and the
# kubelet, wait. Its pid is the namespace's anchor.
cat >"$W/ns.sh" <<SH
set -e
mount -t tmpfs -o mode=0755,size=64m bosun-peer-run /run
mkdir -p /run/containerd /run/netns /run/lock
mount -t tmpfs -o mode=0755,size=16m bosun-peer-kubelet /var/lib/kubelet
mount -t tmpfs -o mode=0755,size=16m bosun-peer-logs /var/log/containers
export PATH="$CONTAINERD_BIN:\$PATH"
"$CONTAINERD_BIN/containerd" --config "$W/containerd.toml" >>"$W/containerd.log" 2>&1 &
echo \$! >"$W/pids/containerd"
for _ in \$(seq 1 150); do [ -S "$SOCK" ] && break; sleep 0.2; done
until [ -e "$W/go-kubelet" ]; do sleep 0.1; kill -0 \$(cat "$W/pids/containerd") || exit 1; done
"$K8S_BIN/kubelet" --config "$W/kubelet.yaml" --root-dir "$W/kubelet" --cert-dir "$W/pki" \
    --kubeconfig "$W/kubelet.kubeconfig" --bootstrap-kubeconfig "$D/bootstrap.kubeconfig" \
    --hostname-override $NODE --node-ip $BOSUN_CP_IP -v=1 >>"$W/kubelet.log" 2>&1 &
echo \$! >"$W/pids/kubelet"
wait
SH

# The pods' cgroup root must exist before the kubelet starts (it creates kubepods below it).
for h in /sys/fs/cgroup/*/; do
    case $h in */unified/) continue ;; esac
    [[ -e $h/cgroup.procs ]] || continue
    mkdir -p "$h${CGROOT#/}"
    if [[ -e $h/cpuset.cpus ]]; then
        cat "$h/cpuset.cpus" >"$h${CGROOT#/}/cpuset.cpus"
        cat "$h/cpuset.mems" >"$h${CGROOT#/}/cpuset.mems"
    fi
done

# ---------- containerd ----------
# Its own session: a Ctrl-C for the script must not reach the daemons before the orderly cleanup.
setsid unshare --mount --propagation private -- bash "$W/ns.sh" </dev/null >>"$W/ns.log" 2>&1 &
ns_pid=$!
sleep 0.2
ns_ino=$(readlink "/proc/$ns_pid/ns/mnt")
for _ in $(seq 1 150); do [[ -S $SOCK ]] && break; kill -0 "$ns_pid" 2>/dev/null || break; sleep 0.2; done
[[ -S $SOCK ]] || { cat "$W/ns.log" >&2; log "containerd did not start"; exit 1; }
log "containerd $("$CONTAINERD_BIN/containerd" --version | awk '{print $3}') (pid $(pidof_ containerd)), socket $SOCK"
# The layouts' only manifest is tagged `latest`: --base-name makes it NAME:latest.
for img in "pause.tar:${PAUSE%:latest}" "busybox.tar:${IMAGE%:latest}"; do
    f=${img%%:*} name=${img#*:}
    "$CTR" --address "$SOCK" -n k8s.io images import --base-name "$name" "$W/$f" >>"$W/import.log" 2>&1 ||
        { cat "$W/import.log" >&2; log "ctr images import $f failed"; exit 1; }
done
rm -f "$W/pause.tar" "$W/busybox.tar"
log "images: $("$CTR" --address "$SOCK" -n k8s.io images ls -q | grep -v '^sha256:' | tr '\n' ' ')"

# ---------- kubelet ----------
touch "$W/go-kubelet"
for _ in $(seq 1 50); do [[ -s $W/pids/kubelet ]] && break; sleep 0.1; done
log "kubelet $("$K8S_BIN/kubelet" --version | awk '{print $2}') (pid $(pidof_ kubelet)) joining as $NODE"
node_ready() { [ "$("$KUBECTL" get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]; }
for _ in $(seq 1 240); do node_ready && break; alive kubelet || break; sleep 0.5; done
node_ready || { log "node $NODE did not turn Ready in 120 s"; exit 1; }
log "node $NODE Ready"

python3 "$here/cluster.py" --kubectl "$KUBECTL" --kubeconfig "$D/admin.kubeconfig" --node "$NODE" \
    --agent-pid "$(pidof_ kubelet)" --agent-pid "$(pidof_ containerd)" --label "kubelet+containerd" \
    --helpers-match "$SOCK" --cgroup-root "$CGROOT" --image "$IMAGE" --replicas "$replicas" \
    --cpu-window "$cpu_window" ${out:+--out "$out"} ${json:+--json "$json"}
