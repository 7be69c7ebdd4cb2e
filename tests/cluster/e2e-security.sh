#!/usr/bin/env bash
# End-to-end: the security profiles the kubelet enforces (issue 17), with bosun as the node of
# a real control plane of this script's own: a `restricted` namespace
# (pod-security.kubernetes.io/enforce=restricted) admits a Deployment that runs confined
# (Seccomp: 2 in its status, a call the default profile denies fails with EPERM, `kubectl exec`
# and a `kubectl debug --profile=restricted` ephemeral container confined too); the same call
# works with Unconfined; a Localhost profile denying mkdir; a missing Localhost profile gives
# CreateContainerError naming the file and an Event, and the fixed file lets the retry start it;
# sysctls: a safe one seen inside while the host's value is unchanged, an unsafe one refused
# with SysctlForbidden, then allowed through allowedUnsafeSysctls after a restart; AppArmor
# refused on a host without it; `hostUsers: false`: uid_map, the host-side uid of the process,
# ownership of emptyDir, configMap and hostPath files, and the range kept across a kill -9 of
# bosun. Leaves nothing running. Prints `N passed, M failed`. Needs root.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
source "$here/env.sh"
source "$here/lib.sh"
D=${1:-/tmp/bosun-e2e-sec-cluster}
W=$(mktemp -d /tmp/bosun-e2e-sec-XXXXXX)
# Searchable by others (0711, as /var/lib/bosun and /run/bosun are): the userns pod walks it.
chmod 0711 "$W"
BOSUN=${BOSUN_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/bosun/target}/debug/bosun}
KUBECTL="$K8S_BIN/kubectl"
NODE=e2e-sec
# A control plane of its own (beside e2e-node.sh's and e2e-api.sh's).
export BOSUN_CP_IF=bosun-cp5 BOSUN_CP_IP=10.250.5.1 BOSUN_CP_SERVICE_CIDR=10.105.0.0/16
export BOSUN_CP_KUBE_PROXY=0 BOSUN_CP_NODE_NAME=$NODE
cleanup() {
    [ -n "${bosun_pid:-}" ] && kill -TERM "$bosun_pid" 2>/dev/null && wait "$bosun_pid" 2>/dev/null
    reap_node "$W" bosun-e2e-sec bosune2esec
    bash "$here/down.sh" --purge "$D" >/dev/null 2>&1
    [ "$failed" = 0 ] || cp "$W/bosun.log" /tmp/bosun-e2e-security.failed.log 2>/dev/null
    rm -rf "$W"
}
trap cleanup EXIT

bash "$here/up.sh" "$D" >"$W.up.log" 2>&1 || { cat "$W.up.log"; echo "0 passed, 1 failed"; exit 1; }
rm -f "$W.up.log"
export KUBECONFIG="$D/admin.kubeconfig"
bash "$root/tests/images/build-busybox.sh" "$W/busybox-oci" >/dev/null
free_port PORT 20350
free_port HPORT 20348
write_config() { # allowedUnsafeSysctls (YAML list)
    cat >"$W/config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
port: $PORT
healthzPort: $HPORT
# Only the memory default of evictionHard: the kubelet's disk defaults (10 % / 15 % free) would
# evict this test's pods on a host whose disk is merely quite full.
evictionHard: {memory.available: 100Mi}
authentication:
  x509: {clientCAFile: $D/pki/ca.crt}
allowedUnsafeSysctls: $1
YAML
}
write_config "[]"
A=(--root-dir "$W/root" --run-dir "$W/run" --data-dir "$W/data" --pod-logs-dir "$W/logs"
   --container-logs-dir "$W/clogs" --cgroup-root /bosun-e2e-sec --hostname-override "$NODE"
   --cni-conf-dir "$W/cni" --pod-cidr 10.249.0.0/24)
"$BOSUN" image import "$W/busybox-oci" busybox --data-dir "$W/data" >/dev/null 2>&1
mkdir -p "$W/cni" "$W/root/seccomp/profiles" "$W/hostdir"
# A host folder the userns pod may write to (its root is not root on the host).
chmod 1777 "$W/hostdir"
cat >"$W/cni/10-e2e-sec.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "bosun-e2e-sec", "plugins": [
  {"type": "bridge", "bridge": "bosune2esec", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.249.0.0/24"}]], "dataDir": "$W/ipam"}}]}
JSON
cat >"$W/root/seccomp/profiles/deny-mkdir.json" <<'JSON'
{"defaultAction": "SCMP_ACT_ALLOW",
 "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}
JSON
start_bosun() {
    "$BOSUN" --kubeconfig "$W/kubeconfig" --bootstrap-kubeconfig "$D/bootstrap.kubeconfig" \
        --cert-dir "$W/pki" --node-ip "$BOSUN_CP_IP" --config "$W/config.yaml" "${A[@]}" \
        >>"$W/bosun.log" 2>&1 &
    bosun_pid=$!
}
start_bosun
node_ready() { [ "$("$KUBECTL" get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]; }
check "node registers and turns Ready" wait_for 60 node_ready

# What each container prints: its seccomp mode, and whether unshare -U and mkdir work.
PROBE='echo seccomp=$(grep Seccomp: /proc/self/status | cut -f2);
  if unshare -U true 2>/tmp/e; then echo unshare=ok; else echo unshare=$(cat /tmp/e); fi;
  if mkdir /tmp/d 2>/tmp/e; then echo mkdir=ok; else echo mkdir=$(cat /tmp/e); fi;
  exec sleep 3600'
"$KUBECTL" create namespace restricted >/dev/null
"$KUBECTL" label namespace restricted pod-security.kubernetes.io/enforce=restricted >/dev/null
cat <<YAML | "$KUBECTL" apply -f - >"$W/apply.log" 2>&1
apiVersion: apps/v1
kind: Deployment
metadata: {name: confined, namespace: restricted}
spec:
  replicas: 1
  selector: {matchLabels: {app: confined}}
  template:
    metadata: {labels: {app: confined}}
    spec:
      automountServiceAccountToken: false
      terminationGracePeriodSeconds: 1
      securityContext:
        runAsNonRoot: true
        runAsUser: 1000
        seccompProfile: {type: RuntimeDefault}
      containers:
      - name: c
        image: busybox
        imagePullPolicy: Never
        command: [sh, -c, '$PROBE']
        securityContext:
          allowPrivilegeEscalation: false
          capabilities: {drop: [ALL]}
YAML
check "restricted namespace admits the Deployment" grep -q "deployment.apps/confined created" "$W/apply.log"
cat <<YAML | "$KUBECTL" apply -f - >/dev/null
apiVersion: v1
kind: Pod
metadata: {name: unconfined}
spec:
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  securityContext: {seccompProfile: {type: Unconfined}}
  containers:
  - {name: c, image: busybox, imagePullPolicy: Never, command: [sh, -c, '$PROBE']}
---
apiVersion: v1
kind: Pod
metadata: {name: local}
spec:
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    imagePullPolicy: Never
    command: [sh, -c, '$PROBE']
    securityContext: {seccompProfile: {type: Localhost, localhostProfile: profiles/deny-mkdir.json}}
---
apiVersion: v1
kind: Pod
metadata: {name: badprofile}
spec:
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    imagePullPolicy: Never
    command: [sh, -c, '$PROBE']
    securityContext: {seccompProfile: {type: Localhost, localhostProfile: profiles/later.json}}
YAML
logs() { "$KUBECTL" logs "$@" 2>/dev/null; }
printed() { # key value [kubectl logs args]
    local k=$1 v=$2; shift 2
    logs "$@" | grep -qxF "$k=$v"
}
printed_has() { # key substring [kubectl logs args]
    local k=$1 v=$2; shift 2
    logs "$@" | grep "^$k=" | grep -qF "$v"
}
check "restricted pod: Seccomp: 2" wait_for 60 printed seccomp 2 -n restricted deploy/confined
check "restricted pod: unshare -U denied with EPERM" \
    wait_for 10 printed_has unshare "Operation not permitted" -n restricted deploy/confined
check "restricted pod: mkdir allowed by the default profile" wait_for 10 printed mkdir ok -n restricted deploy/confined
confined_pod=$("$KUBECTL" -n restricted get pods -l app=confined -o jsonpath='{.items[0].metadata.name}')
exec_mode() { [ "$("$KUBECTL" -n restricted exec "$confined_pod" -- grep Seccomp: /proc/self/status | cut -f2)" = 2 ]; }
check "kubectl exec into the confined container is confined" wait_for 20 exec_mode
# (The output is taken first: kubectl exits 1 with the command, which pipefail would report.)
exec_unshare() {
    local out
    out=$("$KUBECTL" -n restricted exec "$confined_pod" -- unshare -U true 2>&1)
    grep -q "Operation not permitted" <<<"$out"
}
check "kubectl exec: unshare -U denied" wait_for 20 exec_unshare
"$KUBECTL" -n restricted debug "$confined_pod" --image=busybox --image-pull-policy=Never \
    --profile=restricted -c dbg -- sh -c "$PROBE" >/dev/null 2>&1
check "ephemeral container (kubectl debug --profile=restricted): Seccomp: 2" \
    wait_for 60 printed seccomp 2 -n restricted "$confined_pod" -c dbg
check "Unconfined: Seccomp: 0" wait_for 60 printed seccomp 0 unconfined
check "Unconfined: unshare -U works" wait_for 10 printed unshare ok unconfined
check "Localhost deny-mkdir: Seccomp: 2" wait_for 60 printed seccomp 2 local
check "Localhost deny-mkdir: mkdir fails" wait_for 10 printed_has mkdir "Operation not permitted" local
check "Localhost deny-mkdir: unshare -U works" wait_for 10 printed unshare ok local

want_file="$W/root/seccomp/profiles/later.json"
bad_waiting() {
    local w
    w=$("$KUBECTL" get pod badprofile -o jsonpath='{.status.containerStatuses[0].state.waiting.reason}|{.status.containerStatuses[0].state.waiting.message}')
    [[ "$w" == CreateContainerError\|*"$want_file"* ]]
}
check "missing Localhost profile: CreateContainerError naming the file" wait_for 60 bad_waiting
bad_event() {
    "$KUBECTL" get events --field-selector involvedObject.name=badprofile \
        -o jsonpath='{range .items[*]}{.type} {.reason} {.message}{"\n"}{end}' |
        grep "^Warning Failed Error: " | grep -qF "$want_file"
}
check "missing Localhost profile: a Warning Event names the file" wait_for 30 bad_event
cp "$W/root/seccomp/profiles/deny-mkdir.json" "$want_file"
bad_running() { [ "$("$KUBECTL" get pod badprofile -o jsonpath='{.status.phase}')" = Running ]; }
check "the fixed profile lets the retry start it" wait_for 60 bad_running

# sysctls.
host_range=$(cat /proc/sys/net/ipv4/ip_local_port_range)
host_somaxconn=$(cat /proc/sys/net/core/somaxconn)
sysctl_pod() { # name sysctl value
    cat <<YAML | "$KUBECTL" apply -f - >/dev/null
apiVersion: v1
kind: Pod
metadata: {name: $1}
spec:
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  securityContext: {sysctls: [{name: $2, value: '$3'}]}
  containers:
  - name: c
    image: busybox
    imagePullPolicy: Never
    command: [sh, -c, 'echo value=\$(cat /proc/sys/\$(echo $2 | tr . /) | tr -s " \t" "-"); exec sleep 3600']
YAML
}
sysctl_pod sysok net.ipv4.ip_local_port_range "21000 21100"
sysctl_pod sysbad net.core.somaxconn 1111
check "safe sysctl seen inside the pod" wait_for 60 printed value 21000-21100 sysok
check "the host's value is unchanged" test "$(cat /proc/sys/net/ipv4/ip_local_port_range)" = "$host_range"
rejected() { # pod reason message
    [ "$("$KUBECTL" get pod "$1" -o jsonpath='{.status.phase}|{.status.reason}|{.status.message}')" = "Failed|$2|$3" ]
}
check "unsafe sysctl: phase Failed, SysctlForbidden, the kubelet's message" wait_for 60 rejected sysbad SysctlForbidden \
    'Pod was rejected: forbidden sysctl: "net.core.somaxconn" not allowlisted'
sysbad_event() {
    "$KUBECTL" get events --field-selector involvedObject.name=sysbad -o jsonpath='{range .items[*]}{.reason}{"\n"}{end}' | grep -qx SysctlForbidden
}
check "unsafe sysctl: a SysctlForbidden Event" wait_for 30 sysbad_event
check "unsafe sysctl: no container ran" test -z "$("$KUBECTL" get pod sysbad -o jsonpath='{.status.containerStatuses}')"
if [ ! -e /sys/kernel/security/apparmor ]; then
    cat <<YAML | "$KUBECTL" apply -f - >/dev/null
apiVersion: v1
kind: Pod
metadata: {name: armored}
spec:
  automountServiceAccountToken: false
  securityContext: {appArmorProfile: {type: RuntimeDefault}}
  containers:
  - {name: c, image: busybox, imagePullPolicy: Never, command: [sleep, '3600']}
YAML
    check "AppArmor asked on a host without it: Failed with the kubelet's message" wait_for 60 rejected armored AppArmor \
        'Pod was rejected: Cannot enforce AppArmor: AppArmor is not enabled on the host'
fi

# User namespaces.
"$KUBECTL" create configmap ucm --from-literal=key=value >/dev/null
cat <<YAML | "$KUBECTL" apply -f - >/dev/null
apiVersion: v1
kind: Pod
metadata: {name: userns}
spec:
  hostUsers: false
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  volumes:
  - {name: data, emptyDir: {}}
  - {name: cm, configMap: {name: ucm}}
  - {name: host, hostPath: {path: $W/hostdir}}
  containers:
  - name: c
    image: busybox
    imagePullPolicy: Never
    volumeMounts: [{name: data, mountPath: /data}, {name: cm, mountPath: /cm}, {name: host, mountPath: /host}]
    command: [sh, -c, 'echo uidmap=\$(cat /proc/self/uid_map | tr -s " " " " | sed "s/^ //");
      touch /data/f /host/f; echo data=\$(stat -c %u /data/f); echo cm=\$(stat -L -c %u /cm/key);
      echo host=\$(stat -c %u /host/f); exec sleep 3602']
YAML
# Its container running (a pod whose container fails to start and is restarted is Running too).
userns_running() { [ -n "$("$KUBECTL" get pod userns -o jsonpath='{.status.containerStatuses[0].state.running.startedAt}')" ]; }
check "hostUsers: false pod runs" wait_for 60 userns_running
uid=$("$KUBECTL" get pod userns -o jsonpath='{.metadata.uid}')
base=$(jq -r --arg u "$uid" '.pods[$u] // empty' "$W/data/userns.json" 2>/dev/null)
check "its range is in the allocator's file ($base)" test -n "$base"
check "uid_map inside is 0 $base 65536" wait_for 20 printed uidmap "0 $base 65536" userns
host_uid() {
    local pid
    pid=$(pgrep -fx "sleep 3602") || return 1
    [ "$(awk '/^Uid:/ {print $2}' "/proc/$pid/status")" = "$base" ]
}
check "the container's process runs as $base on the host" host_uid
check "emptyDir file the pod wrote: owned by root inside" wait_for 10 printed data 0 userns
check "emptyDir file on the host: the idmapped write lands as host root" \
    test "$(stat -c %u "$W/root/pods/$uid/volumes/kubernetes.io~empty-dir/data/f")" = 0
check "configMap file: owned by root inside (idmapped)" wait_for 10 printed cm 0 userns
check "hostPath file: owned by $base on the host" test "$(stat -c %u "$W/hostdir/f" 2>/dev/null)" = "$base"
check "hostPath file: root inside" wait_for 10 printed host 0 userns
kill -KILL "$bosun_pid"; wait "$bosun_pid" 2>/dev/null
# Restarted with the unsafe sysctl allowed.
write_config '["net.core.somaxconn"]'
start_bosun
check "node Ready again after kill -9" wait_for 60 node_ready
same_range() { [ "$(jq -r --arg u "$uid" '.pods[$u]' "$W/data/userns.json")" = "$base" ]; }
check "the range is kept across kill -9" same_range
check "the userns pod kept running" host_uid
sysctl_pod sysbad2 net.core.somaxconn 1111
check "allowedUnsafeSysctls: the unsafe sysctl is set inside" wait_for 60 printed value 1111 sysbad2
check "the host's somaxconn is unchanged" test "$(cat /proc/sys/net/core/somaxconn)" = "$host_somaxconn"
"$KUBECTL" delete pod userns --wait=true --timeout=60s >/dev/null 2>&1
freed() { [ "$(jq -r --arg u "$uid" '.pods[$u] // "none"' "$W/data/userns.json")" = none ]; }
check "the range is freed when the pod is gone" wait_for 30 freed

"$KUBECTL" -n restricted delete deployment confined >/dev/null 2>&1
"$KUBECTL" delete pod --all --grace-period=1 --wait=true --timeout=90s >/dev/null 2>&1
"$KUBECTL" -n restricted delete pod --all --grace-period=1 --wait=true --timeout=90s >/dev/null 2>&1
nothing_left() { [ -z "$(ls -A "$W/run/pods" 2>/dev/null)" ]; }
check "every pod removed from the node" wait_for 60 nothing_left
summary
