#!/usr/bin/env bash
# Cluster pod start (issue 6 item 3): the real test control plane (tests/cluster/up.sh), bosun
# joined as node `bench-node`, a Deployment of N busybox `sleep` replicas, the pod-startup SLI
# seen through a watch (bench/cluster.py says exactly what is measured).
#
#   bench/cluster.sh --bosun BIN --layout OCI-LAYOUT [--quick] [--out FILE] [--json FILE]
#
# --quick: 3 replicas and 1 s CPU windows (bench/check.sh, through run.sh --quick).
# Everything is private so it never collides with the test suite's control planes: interface
# bosun-cpbench, advertise address 10.250.9.1, service CIDR 10.109.0.0/16, no kube-proxy; bosun
# with its own folders (a tempdir), cgroup root /bosun-bench-cluster-<pid>, CNI bridge
# bosunbench0 with pod subnet 10.239.0.0/24, free ports. On exit, whatever happened: the
# Deployment is deleted, bosun is given time to remove every pod, then stopped; anything left
# (processes from the tempdir, mounts below it, the cgroup root, the bridge) is removed by force
# and reported, and the control plane is stopped and purged (down.sh --purge).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
source "$root/tests/cluster/env.sh"
source "$here/lib.sh"

bosun= layout= quick= out= json=
while [[ $# -gt 0 ]]; do
    case $1 in
        --bosun) bosun=$2; shift ;;
        --layout) layout=$2; shift ;;
        --quick) quick=1 ;;
        --out) out=$2; shift ;;
        --json) json=$2; shift ;;
        *) echo "usage: $0 --bosun BIN --layout DIR [--quick] [--out FILE] [--json FILE]" >&2; exit 2 ;;
    esac
    shift
done
[[ -x $bosun && -d $layout ]] || { echo "$0: --bosun BIN and --layout DIR are required" >&2; exit 2; }
[[ $(id -u) == 0 ]] || { echo "$0: run as root" >&2; exit 1; }

log() { echo "[cluster $(date +%H:%M:%S)] $*" >&2; }
D=$(mktemp -d /tmp/bosun-bench-cp-XXXXXX)
W=$(mktemp -d /tmp/bosun-bench-cluster-XXXXXX)
NODE=bench-node
CGROOT=/bosun-bench-cluster-$$
BRIDGE=bosunbench0
IMAGE=localhost/bosun-bench-busybox:latest
KUBECTL="$K8S_BIN/kubectl"
export BOSUN_CP_IF=bosun-cpbench BOSUN_CP_IP=10.250.9.1 BOSUN_CP_SERVICE_CIDR=10.109.0.0/16
export BOSUN_CP_KUBE_PROXY=0 BOSUN_CP_NODE_NAME=$NODE
export KUBECONFIG=$D/admin.kubeconfig
bosun_pid=
replicas=100 cpu_window=10
[[ -n $quick ]] && replicas=3 cpu_window=1

# Processes whose command line names our tempdir (keepers; bosun itself), by pid.
our_pids() {
    local p
    for p in /proc/[0-9]*; do
        p=${p#/proc/}
        [[ $p == "$$" || $p == "$BASHPID" ]] && continue
        { tr '\0' ' ' <"/proc/$p/cmdline"; } 2>/dev/null | grep -qF "$W/" && echo "$p"
    done
}

cleanup() {
    local rc=$? leaks=()
    trap - EXIT INT TERM
    if [[ -n $bosun_pid ]] && kill -0 "$bosun_pid" 2>/dev/null; then
        if [[ -s $D/admin.kubeconfig ]]; then
            "$KUBECTL" delete deployment bosun-bench --ignore-not-found --wait=false >/dev/null 2>&1
            "$KUBECTL" delete pods -l "app in (bosun-bench,bosun-bench-one)" --grace-period=1 --wait=false >/dev/null 2>&1
            for _ in $(seq 1 240); do
                [[ -z $(ls -A "$W/run/pods" 2>/dev/null) ]] && break
                sleep 0.5
            done
            [[ -z $(ls -A "$W/run/pods" 2>/dev/null) ]] || leaks+=("pods still on the node after 120 s: $(ls "$W/run/pods" | wc -l)")
        fi
        kill -TERM "$bosun_pid" 2>/dev/null
        for _ in $(seq 1 100); do kill -0 "$bosun_pid" 2>/dev/null || break; sleep 0.2; done
        if kill -0 "$bosun_pid" 2>/dev/null; then
            leaks+=("bosun ignored SIGTERM for 20 s")
            kill -KILL "$bosun_pid" 2>/dev/null
        fi
        wait "$bosun_pid" 2>/dev/null
    fi
    local left
    left=$(our_pids)
    if [[ -n $left ]]; then
        leaks+=("processes left: $(echo $left)")
        # shellcheck disable=SC2086
        kill -KILL $left 2>/dev/null
    fi
    local mounts
    mounts=$(awk -v w="$W/" 'index($5, w) == 1 {print $5}' /proc/self/mountinfo | sort -r)
    if [[ -n $mounts ]]; then
        leaks+=("mounts left: $(wc -l <<<"$mounts")")
        xargs -r -n1 umount -l <<<"$mounts" 2>/dev/null
    fi
    local c
    for c in /sys/fs/cgroup/*"$CGROOT" /sys/fs/cgroup/*/"${CGROOT#/}"; do
        [[ -d $c ]] || continue
        [[ -n $(find "$c" -mindepth 1 -type d 2>/dev/null) ]] && leaks+=("cgroups left below $c")
        find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null
    done
    ip link del "$BRIDGE" 2>/dev/null
    bash "$root/tests/cluster/down.sh" --purge "$D" >/dev/null 2>&1 || leaks+=("down.sh failed")
    ip link show bosun-cpbench >/dev/null 2>&1 && leaks+=("interface bosun-cpbench left")
    if [[ -n ${KEEP_LOGS:-} ]]; then cp "$W/bosun.log" "$KEEP_LOGS" 2>/dev/null; fi
    if [[ $rc != 0 && -s $W/bosun.log ]]; then
        log "bosun's last log lines:"; tail -20 "$W/bosun.log" >&2
    fi
    rm -rf "$W"
    exit_with_leaks "$rc" "${leaks[@]}"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start_control_plane

"$bosun" image import "$layout" "$IMAGE" --data-dir "$W/data" >/dev/null 2>&1 ||
    { log "bosun image import failed"; exit 1; }

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
mkdir -p "$W/cni"
cat >"$W/cni/10-bench.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "bosun-bench", "plugins": [
  {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.239.0.0/24"}]], "dataDir": "$W/ipam"}}]}
JSON
"$bosun" --kubeconfig "$W/kubeconfig" --bootstrap-kubeconfig "$D/bootstrap.kubeconfig" \
    --cert-dir "$W/pki" --node-ip "$BOSUN_CP_IP" --config "$W/config.yaml" \
    --root-dir "$W/root" --run-dir "$W/run" --data-dir "$W/data" --pod-logs-dir "$W/logs" \
    --container-logs-dir "$W/clogs" --cgroup-root "$CGROOT" --hostname-override "$NODE" \
    --cni-conf-dir "$W/cni" --pod-cidr 10.239.0.0/24 >>"$W/bosun.log" 2>&1 &
bosun_pid=$!
log "bosun $bosun (pid $bosun_pid) joining as $NODE"

node_ready() { [ "$("$KUBECTL" get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]; }
for _ in $(seq 1 120); do node_ready && break; kill -0 "$bosun_pid" 2>/dev/null || break; sleep 0.5; done
node_ready || { log "node $NODE did not turn Ready in 60 s"; exit 1; }
log "node $NODE Ready"

python3 "$here/cluster.py" --kubectl "$KUBECTL" --kubeconfig "$D/admin.kubeconfig" --node "$NODE" \
    --bosun-pid "$bosun_pid" --run-dir "$W/run" --image "$IMAGE" --replicas "$replicas" \
    --cpu-window "$cpu_window" --cgroup-root "$CGROOT" ${out:+--out "$out"} ${json:+--json "$json"}
