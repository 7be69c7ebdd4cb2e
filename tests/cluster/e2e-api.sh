#!/usr/bin/env bash
# End-to-end: the kubelet HTTP API of bosun against the real test control plane. bosun joins as
# node e2e-api (its own root/run/data folders, cgroup root, CNI bridge and pod subnet, and free
# ports for its API, so e2e-node.sh can run beside it), then: plain healthz; `kubectl logs`
# (whole, --tail, --previous after a restart, -f sees a new line); `kubectl exec` (output, exit
# code, stdin, -it); `kubectl cp` both ways; `kubectl attach` (output); `kubectl port-forward` (a
# file of known bytes from busybox httpd, twice, and the error of a closed port); `kubectl run
# -i/-it --rm`, `kubectl debug` with an ephemeral container (--target) and `kubectl debug node/...`
# (debug_checks); /metrics, /metrics/resource, /stats/summary, /configz; logs of an ended pod,
# healthz checks, metrics-server with `kubectl top` and an HPA (top_checks); an anonymous request
# gets 401 and a certificate without RBAC on nodes/proxy 403; exec, logs and port-forward again
# with the apiserver restarted with ExtendWebSocketsToKubelet off (SPDY/3.1 to bosun, spdy_checks);
# after a restart with serverTLSBootstrap, the serving certificate comes from an approved CSR.
# Hardening: a token allowed only `get nodes/proxy` cannot upgrade any variant of a streaming path
# (unclean, percent-encoded, SPDY); a pod uid in the path must be the pod's; OPTIONS is
# authenticated; containerLogs validation errors are 422; idle connections, silent clients and
# idle exec sessions (streamingConnectionIdleTimeout) are closed.
# Starts and stops its own control plane and leaves nothing running. Prints `N passed, M failed`.
# Needs root. BOSUN_CP_APISERVER_FLAGS=--feature-gates=ExtendWebSocketsToKubelet=false makes the
# apiserver talk SPDY/3.1 to bosun (it translates kubectl's WebSockets) instead of passing the
# WebSockets through.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
source "$here/env.sh"
source "$here/lib.sh"
D=${1:-/tmp/bosun-e2e-api-cluster}
W=$(mktemp -d /tmp/bosun-e2e-api-XXXXXX)
BOSUN=${BOSUN_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/bosun/target}/debug/bosun}
KUBECTL="$K8S_BIN/kubectl"
NODE=e2e-api
# A control plane of its own, beside the one e2e-node.sh starts (bosun-cp0, 10.250.0.1).
export BOSUN_CP_IF=bosun-cp1 BOSUN_CP_IP=10.250.1.1 BOSUN_CP_SERVICE_CIDR=10.97.0.0/16
export BOSUN_CP_KUBE_PROXY=0 BOSUN_CP_NODE_NAME=$NODE
NODE_IP=$BOSUN_CP_IP
cleanup() {
    [ -n "${follow_pid:-}" ] && kill "$follow_pid" 2>/dev/null
    [ -n "${ms_pid:-}" ] && kill "$ms_pid" 2>/dev/null
    [ -n "${bosun_pid:-}" ] && kill -TERM "$bosun_pid" 2>/dev/null && wait "$bosun_pid" 2>/dev/null
    # Whatever bosun left (it should be nothing): containers, keepers, mounts, cgroups, bridge.
    reap_node "$W" bosun-e2e-api bosune2eapi
    bash "$here/down.sh" --purge "$D" >/dev/null 2>&1
    [ -n "${KEEP_LOGS:-}" ] && cp "$W/bosun.log" "$KEEP_LOGS" 2>/dev/null
    rm -rf "$W"
}
trap cleanup EXIT

bash "$here/up.sh" "$D" >"$W.up.log" 2>&1 || { cat "$W.up.log"; echo "0 passed, 1 failed"; exit 1; }
rm -f "$W.up.log"
export KUBECONFIG="$D/admin.kubeconfig"
bash "$root/tests/images/build-busybox.sh" "$W/busybox-oci" >/dev/null

# Free ports for the API and healthz (a running kubelet or another e2e may hold 10250/10248).
free_port PORT 20250
free_port HPORT 20248
cat >"$W/config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# Only the memory default of evictionHard: the kubelet's disk defaults (10 % / 15 % free) would
# evict this test's pods and collect its images on a host whose disk is merely quite full.
evictionHard: {memory.available: 100Mi}
port: $PORT
healthzPort: $HPORT
containerLogMaxSize: 2Ki
authentication:
  x509: {clientCAFile: $D/pki/ca.crt}
YAML

A=(--root-dir "$W/root" --run-dir "$W/run" --data-dir "$W/data" --pod-logs-dir "$W/logs"
   --container-logs-dir "$W/clogs" --cgroup-root /bosun-e2e-api --hostname-override "$NODE"
   --cni-conf-dir "$W/cni" --pod-cidr 10.247.0.0/24)
"$BOSUN" image import "$W/busybox-oci" busybox --data-dir "$W/data" >/dev/null 2>&1
mkdir -p "$W/cni"
cat >"$W/cni/10-e2e-api.conflist" <<JSON
{"cniVersion": "1.0.0", "name": "bosun-e2e-api", "plugins": [
  {"type": "bridge", "bridge": "bosune2eapi", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.247.0.0/24"}]], "dataDir": "$W/ipam"}}]}
JSON
start_bosun() {
    "$BOSUN" --kubeconfig "$W/kubeconfig" --bootstrap-kubeconfig "$D/bootstrap.kubeconfig" \
        --cert-dir "$W/pki" --node-ip "$NODE_IP" --config "$W/config.yaml" "${A[@]}" \
        >>"$W/bosun.log" 2>&1 &
    bosun_pid=$!
}
start_bosun

healthz() { [ "$(curl -s "http://127.0.0.1:$HPORT/healthz")" = ok ]; }
check "plain healthz on 127.0.0.1:$HPORT says ok" wait_for 30 healthz
node_ready() { [ "$("$KUBECTL" get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]; }
check "node registers and turns Ready" wait_for 60 node_ready
# Connection limits, checked at the end: a client that completes TLS and sends nothing is
# closed after the 32 s request head timeout, a kept-alive connection after 90 s idle
# (`openssl s_client -quiet` holds the connection open until the server closes it).
hold_open() { # name, request to send first (or empty)
    local t0=$SECONDS
    printf '%b' "$2" | timeout 200 openssl s_client -quiet -connect "$NODE_IP:$PORT" >"$W/$1.out" 2>/dev/null
    echo $((SECONDS - t0)) >"$W/$1.secs"
}
hold_open silent "" &
hold_open keepalive 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n' &
endpoint=$("$KUBECTL" get node "$NODE" -o jsonpath='{.status.daemonEndpoints.kubeletEndpoint.Port} {.status.declaredFeatures}')
check "node reports port $PORT and ExtendWebSocketsToKubelet ($endpoint)" \
    bash -c "[[ '$endpoint' == '$PORT '*ExtendWebSocketsToKubelet* ]]"
check "serving certificate written under --cert-dir" test -s "$W/pki/kubelet.crt" -a -s "$W/pki/kubelet.key"

cat <<YAML | "$KUBECTL" apply -f - >/dev/null
apiVersion: v1
kind: Pod
metadata: {name: api-a}
spec:
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    imagePullPolicy: Never
    command: [sh, -c, 'echo line-1; echo line-2; echo line-3; trap "exit 0" TERM;
      while true; do if [ -f /tmp/next ]; then echo next-line; rm /tmp/next; fi; sleep 0.2; done']
---
apiVersion: v1
kind: Pod
metadata: {name: api-b}
spec:
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  volumes: [{name: d, emptyDir: {}}]
  containers:
  - name: c
    image: busybox
    imagePullPolicy: Never
    volumeMounts: [{name: d, mountPath: /data}]
    command: [sh, -c, 'if [ -f /data/once ]; then echo second-run; trap "exit 0" TERM;
      while true; do sleep 0.2; done; else touch /data/once; echo first-run; exit 1; fi']
---
apiVersion: v1
kind: Pod
metadata: {name: api-c}
spec:
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    imagePullPolicy: Never
    command: [sh, -c, 'trap "exit 0" TERM; i=0; while true; do i=\$((i+1)); echo "seq \$i"; sleep 0.05; done']
---
apiVersion: v1
kind: Pod
metadata: {name: api-d}
spec:
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: busybox
    imagePullPolicy: Never
    command: [sh, -c, 'mkdir -p /www && seq 1 30000 >/www/f && exec httpd -f -p 8080 -h /www']
YAML
running() { [ "$("$KUBECTL" get pod "$1" -o jsonpath='{.status.phase}')" = Running ]; }
check "pod api-a runs" wait_for 60 running api-a

logs=$("$KUBECTL" logs api-a 2>&1)
check "kubectl logs ($(tr '\n' ' ' <<<"$logs"))" bash -c "[ \"\$(printf 'line-1\nline-2\nline-3')\" = '$logs' ]"
tail=$("$KUBECTL" logs api-a --tail=1 2>&1)
check "kubectl logs --tail=1 ($tail)" [ "$tail" = line-3 ]
ts=$("$KUBECTL" logs api-a --timestamps --limit-bytes=200 2>&1 | head -1)
check "kubectl logs --timestamps ($ts)" bash -c "[[ '$ts' =~ ^20[0-9-]+T[0-9:.]+Z\ line-1$ ]]"

out=$("$KUBECTL" exec api-a -- cat /etc/hostname 2>&1)
check "kubectl exec cat /etc/hostname ($out)" [ "$out" = api-a ]
"$KUBECTL" exec api-a -- sh -c 'exit 3' >/dev/null 2>&1
code=$?
check "kubectl exec exit code ($code)" [ "$code" = 3 ]
out=$(echo hi | "$KUBECTL" exec -i api-a -- cat 2>&1)
check "kubectl exec -i with stdin ($out)" [ "$out" = hi ]
# A terminal for kubectl (script(1)), so `-it` really asks for a TTY.
out=$(script -qec "$KUBECTL exec -it api-a -- sh -c '[ -t 0 ] && [ -t 1 ] && echo is-a-tty; exit 4'" \
    /dev/null </dev/null 2>&1 | tr -d '\r')
# (A "^@" before the line: script's EOF character read by kubectl as a NUL, see spdy_checks.)
check "kubectl exec -it gets a terminal ($(tr '\n' ' ' <<<"$out"))" bash -c "grep -qxE '(\\^@)*is-a-tty' <<<'$out'"
script -qec "$KUBECTL exec -it api-a -- sh -c 'exit 4'" /dev/null </dev/null >/dev/null 2>&1
code=$?
check "kubectl exec -it exit code ($code)" [ "$code" = 4 ]
out=$("$KUBECTL" exec api-a -- sh -c 'echo to-out; echo to-err >&2' 2>/dev/null)
check "kubectl exec stdout apart from stderr ($out)" [ "$out" = to-out ]

# kubectl cp both ways (tar through exec): known bytes in, the same bytes back out.
head -c 200000 /dev/urandom >"$W/cp-in"
"$KUBECTL" cp "$W/cp-in" default/api-a:/tmp/cp-in >"$W/cp.out" 2>&1
out=$("$KUBECTL" exec api-a -- sha256sum /tmp/cp-in 2>&1 | cut -d' ' -f1)
check "kubectl cp into the pod ($out $(head -c 200 "$W/cp.out"))" [ "$out" = "$(sha256sum <"$W/cp-in" | cut -d' ' -f1)" ]
"$KUBECTL" cp default/api-a:/tmp/cp-in "$W/cp-out" >"$W/cp.out" 2>&1
check "kubectl cp out of the pod ($(head -c 200 "$W/cp.out"))" cmp -s "$W/cp-in" "$W/cp-out"

"$KUBECTL" logs -f api-a >"$W/follow.out" 2>&1 &
follow_pid=$!
sleep 1
"$KUBECTL" exec api-a -- touch /tmp/next >/dev/null 2>&1
check "kubectl logs -f sees a new line" wait_for 15 grep -q next-line "$W/follow.out"
kill "$follow_pid" 2>/dev/null; wait "$follow_pid" 2>/dev/null; follow_pid=
# A client that goes away: its command is killed, not left running in the container.
timeout 3 "$KUBECTL" exec api-a -- sleep 1234 >/dev/null 2>&1
no_sleeper() { ! "$KUBECTL" exec api-a -- ps | grep -q 'sleep 1234'; }
check "exec of a client that went away is killed" wait_for 10 no_sleeper

# Follow across rotations (containerLogMaxSize 2Ki: api-c's log rotates every second or so).
running api-c || wait_for 30 running api-c
timeout 8 "$KUBECTL" logs -f api-c >"$W/rotate.out" 2>/dev/null
gapless() {
    local n first last
    n=$(grep -c '^seq [0-9]*$' "$W/rotate.out")
    first=$(grep -m1 '^seq ' "$W/rotate.out" | cut -d' ' -f2)
    last=$(grep '^seq ' "$W/rotate.out" | tail -1 | cut -d' ' -f2)
    [ "$n" -gt 60 ] && [ $((last - first + 1)) = "$n" ] &&
        awk '$1 == "seq" { if (prev && $2 != prev + 1) exit 1; prev = $2 }' "$W/rotate.out"
}
rotations=$(ls "$W"/logs/default_api-c_*/c/ 2>/dev/null | grep -c '\.log\.')
rotated_gapless() { [ "$rotations" -ge 2 ] && gapless; }
check "kubectl logs -f across $rotations rotations: $(grep -c '^seq ' "$W/rotate.out") lines, none lost" \
    rotated_gapless

"$KUBECTL" attach api-a -c c >"$W/attach.out" 2>&1 &
follow_pid=$!
sleep 2
"$KUBECTL" exec api-a -- touch /tmp/next >/dev/null 2>&1
check "kubectl attach streams the container's new output" wait_for 15 grep -q next-line "$W/attach.out"
kill "$follow_pid" 2>/dev/null; wait "$follow_pid" 2>/dev/null; follow_pid=

# port-forward: a file of known bytes (~160 KB, many SPDY data frames) through busybox httpd
# inside the pod's network namespace, over two connections of one kubectl port-forward.
running api-d || wait_for 30 running api-d
free_port LPORT 21080
"$KUBECTL" port-forward pod/api-d "$LPORT:8080" >"$W/pf.out" 2>&1 &
follow_pid=$!
check "kubectl port-forward listens" wait_for 20 grep -q "Forwarding from 127.0.0.1:$LPORT" "$W/pf.out"
want=$(seq 1 30000 | sha256sum | cut -d' ' -f1)
fetched() { [ "$(curl -s --max-time 10 "http://127.0.0.1:$LPORT/f" | sha256sum | cut -d' ' -f1)" = "$want" ]; }
check "kubectl port-forward fetches the file intact" fetched
check "kubectl port-forward fetches it again (second connection)" fetched
kill "$follow_pid" 2>/dev/null; wait "$follow_pid" 2>/dev/null; follow_pid=
# A port nothing listens on: the error comes back on the error stream.
free_port LPORT2 21180
"$KUBECTL" port-forward pod/api-d "$LPORT2:9" >"$W/pf2.out" 2>&1 &
follow_pid=$!
wait_for 20 grep -q "Forwarding from 127.0.0.1:$LPORT2" "$W/pf2.out"
curl -s --max-time 5 "http://127.0.0.1:$LPORT2/" >/dev/null 2>&1
refused() { grep -q "error forwarding port 9 to pod default/api-d.*failed to connect to localhost:9" "$W/pf2.out"; }
check "kubectl port-forward to a closed port reports the error" wait_for 10 refused
check "the port-forward error reads as the kubelet's ($(grep -o 'failed to connect.*' "$W/pf2.out" | head -1 | cut -c1-160))" \
    bash -c "grep -q 'IPv4: dial tcp4 127.0.0.1:9: connect: connection refused' '$W/pf2.out' && ! grep -Eq 'os error|Some\\(' '$W/pf2.out'"
kill "$follow_pid" 2>/dev/null; wait "$follow_pid" 2>/dev/null; follow_pid=

restarted() { [ "$("$KUBECTL" get pod api-b -o jsonpath='{.status.containerStatuses[0].restartCount}')" -ge 1 ] && running api-b; }
check "pod api-b restarted once" wait_for 60 restarted
prev=$("$KUBECTL" logs api-b --previous 2>&1)
cur=$("$KUBECTL" logs api-b 2>&1)
check "kubectl logs --previous ($prev) and current ($cur)" bash -c "[ '$prev' = first-run ] && [ '$cur' = second-run ]"

code=$(curl -sk -o /dev/null -w '%{http_code}' "https://$NODE_IP:$PORT/pods")
check "anonymous request gets 401 ($code)" [ "$code" = 401 ]
# A user with a certificate of the cluster CA but no RBAC on nodes/proxy.
openssl req -newkey rsa:2048 -nodes -keyout "$W/nobody.key" -out "$W/nobody.csr" -subj "/CN=nobody" 2>/dev/null
printf 'extendedKeyUsage=clientAuth\n' >"$W/nobody.ext"
openssl x509 -req -in "$W/nobody.csr" -CA "$D/pki/ca.crt" -CAkey "$D/pki/ca.key" -CAcreateserial \
    -out "$W/nobody.crt" -days 1 -extfile "$W/nobody.ext" 2>/dev/null
code=$(curl -sk --cert "$W/nobody.crt" --key "$W/nobody.key" -o "$W/forbidden.out" -w '%{http_code}' \
    "https://$NODE_IP:$PORT/pods")
check "certificate without RBAC gets 403 ($code: $(cat "$W/forbidden.out" 2>/dev/null))" [ "$code" = 403 ]
code=$(curl -sk --cert "$D/pki/admin.crt" --key "$D/pki/admin.key" -o "$W/pods.json" -w '%{http_code}' \
    "https://$NODE_IP:$PORT/pods")
check "admin certificate gets /pods ($code)" bash -c "[ '$code' = 200 ] && jq -e '.items[] | select(.metadata.name==\"api-a\")' '$W/pods.json' >/dev/null"
code=$(curl -sk --cert "$D/pki/admin.crt" --key "$D/pki/admin.key" -o "$W/running.json" -w '%{http_code}' \
    "https://$NODE_IP:$PORT/runningpods/")
check "admin certificate gets /runningpods/ ($code)" bash -c "[ '$code' = 200 ] && jq -e '.items | length >= 4' '$W/running.json' >/dev/null"
admin_get() { curl -sk --cert "$D/pki/admin.crt" --key "$D/pki/admin.key" "https://$NODE_IP:$PORT$1"; }
admin_get /metrics/resource >"$W/metrics.txt"
check "/metrics/resource has api-a's container CPU and memory" bash -c "
    grep -q '^container_cpu_usage_seconds_total{container=\"c\",namespace=\"default\",pod=\"api-a\"} [0-9.e-]* [0-9]*\$' '$W/metrics.txt' &&
    grep -q '^container_memory_working_set_bytes{container=\"c\",namespace=\"default\",pod=\"api-a\"} [1-9]' '$W/metrics.txt' &&
    grep -q '^node_cpu_usage_seconds_total [1-9]' '$W/metrics.txt'"
check "/metrics counts the running pods" bash -c "[ \"\$(grep '^kubelet_running_pods ' <<<'$(admin_get /metrics)')\" = 'kubelet_running_pods 4' ]"
admin_get /stats/summary >"$W/summary.json"
jq_true() { [ -s "${*: -1}" ] && jq -e "$@" >/dev/null; }
check "/stats/summary has pod api-a with CPU used" jq_true \
    '.node.cpu.usageCoreNanoSeconds > 0 and ([.pods[] | select(.podRef.name=="api-a") | .containers[0].cpu.usageCoreNanoSeconds > 0] == [true])' \
    "$W/summary.json"
check "/configz names the port" bash -c "[ \"\$(jq -r .kubeletconfig.port <<<'$(admin_get /configz)')\" = $PORT ]"
# Bearer tokens go through TokenReview: a valid service account token without RBAC, then garbage.
token=$("$KUBECTL" create token default --duration=10m 2>/dev/null)
code=$(curl -sk -H "Authorization: Bearer $token" -o /dev/null -w '%{http_code}' "https://$NODE_IP:$PORT/pods")
check "service account token without RBAC gets 403 ($code)" [ "$code" = 403 ]
code=$(curl -sk -H "Authorization: Bearer not-a-token" -o /dev/null -w '%{http_code}' "https://$NODE_IP:$PORT/pods")
check "invalid token gets 401 ($code)" [ "$code" = 401 ]

# --- One path for authorization and routing. A token allowed only `get nodes/proxy` reads
# /pods, but no variant of a streaming path lets it upgrade (WebSocket or SPDY): they need
# `create`, and unclean paths are redirected before anything else. Each attempt would create a
# marker file in the container if it ran.
cat <<YAML | "$KUBECTL" apply -f - >/dev/null
apiVersion: v1
kind: ServiceAccount
metadata: {name: proxy-getter, namespace: default}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: e2e-proxy-get}
rules: [{apiGroups: [""], resources: [nodes/proxy], verbs: [get]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: e2e-proxy-get}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: e2e-proxy-get}
subjects: [{kind: ServiceAccount, name: proxy-getter, namespace: default}]
YAML
gtoken=$("$KUBECTL" create token proxy-getter --duration=10m 2>/dev/null)
get_pods() { [ "$(curl -sk -H "Authorization: Bearer $gtoken" -o /dev/null -w '%{http_code}' "https://$NODE_IP:$PORT/pods")" = 200 ]; }
check "a token with get nodes/proxy reads /pods" wait_for 30 get_pods
upgrade() { # credentials ("token:T" or "admin"), kind (ws, spdy, tunnel), path -> status code
    local auth=() proto
    case $1 in
        token:*) auth=(-H "Authorization: Bearer ${1#token:}") ;;
        admin) auth=(--cert "$D/pki/admin.crt" --key "$D/pki/admin.key") ;;
    esac
    case $2 in
        ws) proto=(-H 'Upgrade: websocket' -H 'Sec-WebSocket-Version: 13' -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==' -H 'Sec-WebSocket-Protocol: v4.channel.k8s.io') ;;
        tunnel) proto=(-H 'Upgrade: websocket' -H 'Sec-WebSocket-Version: 13' -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==' -H 'Sec-WebSocket-Protocol: SPDY/3.1+portforward.k8s.io') ;;
        spdy) proto=(-H 'Upgrade: SPDY/3.1' -H 'X-Stream-Protocol-Version: v4.channel.k8s.io') ;;
    esac
    curl -sk --path-as-is --http1.1 --max-time 4 -o "$W/upgrade.out" -w '%{http_code}' "${auth[@]}" \
        -H 'Connection: Upgrade' "${proto[@]}" "https://$NODE_IP:$PORT$3"
}
q='?command=touch&command=/tmp/pwned&output=1'
for attempt in "ws /exec/default/api-a/c$q 403" "ws //exec/default/api-a/c$q 307" \
    "ws /%65xec/default/api-a/c$q 403" "ws /exec%2Fdefault%2Fapi-a%2Fc$q 403" \
    "ws /%2Fexec/default/api-a/c$q 404" "tunnel /%2F/portForward/default/api-d 404" \
    "ws /pods/../exec/default/api-a/c$q 307" "ws /./exec/default/api-a/c$q 307" \
    "spdy /exec/default/api-a/c$q 403" "ws //attach/default/api-a/c?output=1 307" \
    "ws /attach/default/api-a/c?output=1 403" "tunnel //portForward/default/api-d 307" \
    "tunnel /portForward/default/api-d 403" "spdy /portForward/default/api-d 403"; do
    read -r kind path want <<<"$attempt"
    code=$(upgrade "token:$gtoken" "$kind" "$path")
    check "get-only token, $kind $path: $code (want $want)" [ "$code" = "$want" ]
done
out=$("$KUBECTL" exec api-a -- ls /tmp/pwned 2>&1)
check "none of those ran a command ($out)" bash -c "! '$KUBECTL' exec api-a -- test -e /tmp/pwned"
code=$(upgrade admin ws "/exec/default/api-a/c?command=touch&command=/tmp/admin-ran&output=1")
check "the same WebSocket exec with the admin certificate is upgraded ($code)" [ "$code" = 101 ]
check "and runs its command" wait_for 10 "$KUBECTL" exec api-a -- test -e /tmp/admin-ran
# A pod uid in the path that is not the pod's is refused (exec and attach as the kubelet's
# attach, port-forward with its 404); the pod's own uid is taken.
uid_a=$("$KUBECTL" get pod api-a -o jsonpath='{.metadata.uid}')
code=$(upgrade admin ws "/exec/default/api-a/00000000-0000-0000-0000-000000000000/c?command=touch&command=/tmp/wrong-uid&output=1")
check "exec with another pod's uid: $code ($(head -c 100 "$W/upgrade.out"))" \
    bash -c "[ '$code' = 500 ] && grep -q 'pod api-a_default not found' '$W/upgrade.out'"
check "and ran nothing" bash -c "! '$KUBECTL' exec api-a -- test -e /tmp/wrong-uid"
code=$(upgrade admin ws "/exec/default/api-a/$uid_a/c?command=true&output=1")
check "exec with the pod's uid ($code)" [ "$code" = 101 ]
code=$(upgrade admin tunnel "/portForward/default/api-d/00000000-0000-0000-0000-000000000000")
check "port-forward with another pod's uid: $code ($(head -c 100 "$W/upgrade.out"))" \
    bash -c "[ '$code' = 404 ] && grep -q 'pod not found' '$W/upgrade.out'"
# Methods the kubelet has no verb for are authenticated first; validation errors are 422.
code=$(curl -sk -X OPTIONS -o /dev/null -w '%{http_code}' "https://$NODE_IP:$PORT/pods")
check "OPTIONS without credentials gets 401 ($code)" [ "$code" = 401 ]
code=$(curl -sk -X OPTIONS --cert "$D/pki/admin.crt" --key "$D/pki/admin.key" -o /dev/null -w '%{http_code}' "https://$NODE_IP:$PORT/pods")
check "OPTIONS with the admin certificate gets 405 ($code)" [ "$code" = 405 ]
code=$(curl -sk --cert "$D/pki/admin.crt" --key "$D/pki/admin.key" -o /dev/null -w '%{http_code}' \
    "https://$NODE_IP:$PORT/containerLogs/default/api-a/c?tailLines=-1")
check "containerLogs?tailLines=-1 gets 422 ($code)" [ "$code" = 422 ]

# --- debug_checks: attach with stdin, ephemeral containers, node debugging (kubectl run -i,
# kubectl debug). Self-contained: creates and deletes its own pods.
debug_checks() {
    local out code dbg_pod  # not `name`: check() has a local of that name
    out=$(echo hello | timeout 90 "$KUBECTL" run dbg-run -i --rm --restart=Never --image=busybox \
        --image-pull-policy=Never -- cat 2>/dev/null)
    check "kubectl run -i --rm: stdin reaches cat ($(tr '\n' ' ' <<<"$out"))" bash -c "grep -qx hello <<<'$out'"
    dbg_run_gone() { ! "$KUBECTL" get pod dbg-run >/dev/null 2>&1; }
    check "kubectl run --rm deletes its pod" wait_for 30 dbg_run_gone
    out=$(echo world | timeout 90 "$KUBECTL" run dbg-read -i --rm --restart=Never --image=busybox \
        --image-pull-policy=Never -- sh -c 'read x; echo got-$x; exit 3' 2>/dev/null)
    code=$?
    check "kubectl run -i: read from stdin, exit code ($(tr '\n' ' ' <<<"$out") $code)" \
        bash -c "grep -qx got-world <<<'$out' && [ $code = 3 ]"
    # -it through a terminal (script(1)): the container gets a tty, input typed on it arrives.
    out=$( (sleep 8; printf 'typed\r') | timeout 90 script -qec "$KUBECTL run dbg-tty -it --rm --restart=Never \
        --image=busybox --image-pull-policy=Never -- sh -c '[ -t 0 ] && echo is-a-tty; read x; echo got-\$x'" \
        /dev/null 2>&1 | tr -d '\r')
    printf '%s\n' "$out" >"$W/dbg-tty.out"
    check "kubectl run -it --rm: a terminal, typed input ($(grep -E 'is-a-tty|got-' "$W/dbg-tty.out" | tr '\n' ' '))" \
        bash -c "grep -qx is-a-tty '$W/dbg-tty.out' && grep -qx got-typed '$W/dbg-tty.out'"

    cat <<YAML | "$KUBECTL" apply -f - >/dev/null
apiVersion: v1
kind: Pod
metadata: {name: dbg-t}
spec:
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  volumes: [{name: d, emptyDir: {}}]
  containers:
  - name: c
    image: busybox
    imagePullPolicy: Never
    volumeMounts: [{name: d, mountPath: /data}]
    command: [sh, -c, 'echo shared > /data/f; exec sleep 3600']
YAML
    check "pod dbg-t runs" wait_for 60 running dbg-t
    "$KUBECTL" debug dbg-t --image=busybox --image-pull-policy=Never --target=c -c dbg1 \
        -- sh -c 'ps; echo pid1=$(cat /proc/1/cmdline | tr "\0" " ")' >/dev/null 2>&1
    eph_done() { [ -n "$("$KUBECTL" get pod dbg-t -o jsonpath='{.status.ephemeralContainerStatuses[?(@.name=="dbg1")].state.terminated.exitCode}')" ]; }
    check "ephemeral container dbg1 runs and ends (ephemeralContainerStatuses)" wait_for 60 eph_done
    out=$("$KUBECTL" logs dbg-t -c dbg1 2>&1)
    check "ephemeral container with --target sees the target's processes ($(tr '\n' ' ' <<<"$out" | cut -c1-200))" \
        bash -c "grep -q 'sleep 3600' <<<'$out'"
    out=$("$KUBECTL" get pod dbg-t -o jsonpath='{.status.containerStatuses[0].ready} {.status.containerStatuses[0].restartCount} {.status.ephemeralContainerStatuses[0].restartCount}')
    check "the pod's own container is untouched ($out)" [ "$out" = "true 0 0" ]
    # Interactive: kubectl debug -i waits for the container to run, then attaches stdin.
    out=$(printf 'ps; exit\n' | timeout 90 "$KUBECTL" debug -i dbg-t --image=busybox \
        --image-pull-policy=Never --target=c -c dbg2 -- sh 2>/dev/null)
    printf '%s\n' "$out" >"$W/dbg-i.out"
    check "kubectl debug -i: stdin reaches the ephemeral shell ($(grep -c . "$W/dbg-i.out") lines)" \
        grep -q 'sleep 3600' "$W/dbg-i.out"
    eph2_running_or_done() { [ -n "$("$KUBECTL" get pod dbg-t -o jsonpath='{.status.ephemeralContainerStatuses[?(@.name=="dbg2")].state.terminated}')" ]; }
    check "ephemeral container dbg2 ended" wait_for 30 eph2_running_or_done
    # An ephemeral container mounting a volume of the pod (through the subresource directly).
    "$KUBECTL" patch pod dbg-t --subresource=ephemeralcontainers --type=strategic -p \
        '{"spec":{"ephemeralContainers":[{"name":"dbg3","image":"busybox","imagePullPolicy":"Never",
          "command":["cat","/data/f"],"volumeMounts":[{"name":"d","mountPath":"/data"}],
          "terminationMessagePolicy":"File"}]}}' >/dev/null 2>&1
    eph3_done() { [ "$("$KUBECTL" get pod dbg-t -o jsonpath='{.status.ephemeralContainerStatuses[?(@.name=="dbg3")].state.terminated.exitCode}')" = 0 ]; }
    check "ephemeral container dbg3 ends with 0" wait_for 60 eph3_done
    out=$("$KUBECTL" logs dbg-t -c dbg3 2>&1)
    check "ephemeral container dbg3 mounts the pod's volume ($out)" [ "$out" = shared ]

    # Node debugging: a pod with the host's namespaces and / at /host.
    echo "node-marker-$$" >"$W/host-marker"
    # It keeps running: bosun releases a pod that ended at once, and its logs with it from the API.
    out=$("$KUBECTL" debug "node/$NODE" --image=busybox --image-pull-policy=Never \
        -- sh -c "cat /host$W/host-marker; [ -d /proc/$bosun_pid ] && echo sees-host-pids; exec sleep 3600" 2>&1)
    dbg_pod=$(grep -o 'node-debugger-[a-z0-9-]*' <<<"$out" | head -1)
    check "kubectl debug node/$NODE: pod ${dbg_pod:-?} runs" wait_for 60 running "$dbg_pod"
    node_dbg_out() {
        "$KUBECTL" logs "$dbg_pod" >"$W/dbg-node.out" 2>&1 &&
            grep -qx "node-marker-$$" "$W/dbg-node.out" && grep -qx sees-host-pids "$W/dbg-node.out"
    }
    wait_for 30 node_dbg_out
    check "node debugger reads the host's files under /host and sees host pids ($(tr '\n' ' ' <"$W/dbg-node.out"))" \
        node_dbg_out
    out=$("$KUBECTL" get pod "$dbg_pod" -o jsonpath='{.spec.hostPID} {.spec.hostIPC} {.spec.hostNetwork}')
    check "node debugger pod has the host's namespaces ($out)" [ "$out" = "true true true" ]
    "$KUBECTL" delete pod dbg-t "$dbg_pod" --wait=false >/dev/null 2>&1
    dbg_gone() { ! "$KUBECTL" get pod dbg-t >/dev/null 2>&1 && ! "$KUBECTL" get pod "$dbg_pod" >/dev/null 2>&1; }
    check "debug pods deleted" wait_for 60 dbg_gone
}
debug_checks
# --- top_checks: logs of an ended pod, the kubelet's healthz checks, metrics-server (built from
# its Go module, run as a host process behind the aggregation layer) with `kubectl top` and a
# HorizontalPodAutoscaler scaling on CPU. Self-contained: creates and deletes its own objects.
top_checks() {
    local out code ms_bin ms_port ms_token apiserver
    # A pod that ended: bosun releases its containers, its log files stay.
    cat <<YAML | "$KUBECTL" apply -f - >/dev/null
apiVersion: v1
kind: Pod
metadata: {name: api-done}
spec:
  automountServiceAccountToken: false
  restartPolicy: Never
  containers:
  - name: c
    image: busybox
    imagePullPolicy: Never
    command: [sh, -c, 'echo done-1; echo done-line-$$']
YAML
    succeeded() { [ "$("$KUBECTL" get pod api-done -o jsonpath='{.status.phase}')" = Succeeded ]; }
    check "pod api-done (restartPolicy Never) succeeds" wait_for 60 succeeded
    sleep 3
    out=$("$KUBECTL" logs api-done 2>&1)
    check "kubectl logs of a Succeeded pod ($(tr '\n' ' ' <<<"$out"))" \
        bash -c "[ \"\$(printf 'done-1\ndone-line-$$')\" = '$out' ]"
    out=$(timeout 20 "$KUBECTL" logs -f --tail=1 api-done 2>&1)
    check "kubectl logs -f --tail=1 of a Succeeded pod ends at once ($out)" [ "$out" = "done-line-$$" ]
    "$KUBECTL" delete pod api-done --wait=false >/dev/null 2>&1

    # healthz as the kubelet serves it.
    out=$(curl -s "http://127.0.0.1:$HPORT/healthz?verbose")
    check "healthz?verbose lists ping, log and syncloop ($(tr '\n' ' ' <<<"$out"))" \
        [ "$out" = "$(printf '[+]ping ok\n[+]log ok\n[+]syncloop ok\nhealthz check passed')" ]
    out=$(curl -s "http://127.0.0.1:$HPORT/healthz/syncloop")/$(curl -s "http://127.0.0.1:$HPORT/healthz/log")/$(curl -s "http://127.0.0.1:$HPORT/healthz/ping")
    check "healthz/syncloop, /log and /ping ($out)" [ "$out" = ok/ok/ok ]
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$HPORT/healthz/nope")
    check "healthz/nope is 404 ($code)" [ "$code" = 404 ]

    # metrics-server: built once per version, serving on the advertise address; the apiserver
    # reaches it through an APIService, a Service without selector and its endpoints.
    ms_bin=$(bash "$here/metrics-server/build.sh" 2>"$W/ms-build.log" | tail -1)
    check "metrics-server built ($ms_bin)" test -x "$ms_bin"
    used=$(ss -Htln | awk '{print $4}' | sed 's/.*://' | sort -u)
    free_port ms_port 20443
    cat <<YAML | "$KUBECTL" apply -f - >"$W/ms-apply.log" 2>&1
apiVersion: v1
kind: ServiceAccount
metadata: {name: metrics-server, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:metrics-server"}
rules:
- apiGroups: [""]
  resources: [nodes/metrics]
  verbs: [get]
- apiGroups: [""]
  resources: [pods, nodes]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:metrics-server"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:metrics-server"}
subjects: [{kind: ServiceAccount, name: metrics-server, namespace: kube-system}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "metrics-server:system:auth-delegator"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:auth-delegator"}
subjects: [{kind: ServiceAccount, name: metrics-server, namespace: kube-system}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: metrics-server-auth-reader, namespace: kube-system}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: extension-apiserver-authentication-reader}
subjects: [{kind: ServiceAccount, name: metrics-server, namespace: kube-system}]
---
apiVersion: v1
kind: Service
metadata: {name: metrics-server, namespace: kube-system}
spec:
  ports: [{name: https, port: 443, targetPort: $ms_port, protocol: TCP}]
---
apiVersion: v1
kind: Endpoints
metadata: {name: metrics-server, namespace: kube-system}
subsets: [{addresses: [{ip: $NODE_IP}], ports: [{name: https, port: $ms_port, protocol: TCP}]}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: metrics-server-host
  namespace: kube-system
  labels: {kubernetes.io/service-name: metrics-server}
addressType: IPv4
ports: [{name: https, port: $ms_port, protocol: TCP}]
endpoints: [{addresses: [$NODE_IP], conditions: {ready: true}}]
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {name: v1beta1.metrics.k8s.io}
spec:
  service: {name: metrics-server, namespace: kube-system, port: 443}
  group: metrics.k8s.io
  version: v1beta1
  insecureSkipTLSVerify: true
  groupPriorityMinimum: 100
  versionPriority: 100
YAML
    ms_token=$("$KUBECTL" -n kube-system create token metrics-server --duration=1h 2>/dev/null)
    apiserver=$("$KUBECTL" config view --minify -o jsonpath='{.clusters[0].cluster.server}')
    KUBECONFIG="$W/ms.kubeconfig" "$KUBECTL" config set-cluster c --server="$apiserver" \
        --certificate-authority="$D/pki/ca.crt" --embed-certs=true >/dev/null
    KUBECONFIG="$W/ms.kubeconfig" "$KUBECTL" config set-credentials ms --token="$ms_token" >/dev/null
    KUBECONFIG="$W/ms.kubeconfig" "$KUBECTL" config set-context c --cluster=c --user=ms >/dev/null
    KUBECONFIG="$W/ms.kubeconfig" "$KUBECTL" config use-context c >/dev/null
    if [ -x "$ms_bin" ]; then
        "$ms_bin" --secure-port="$ms_port" --bind-address="$NODE_IP" --cert-dir="$W/ms-certs" \
            --kubeconfig="$W/ms.kubeconfig" --authentication-kubeconfig="$W/ms.kubeconfig" \
            --authorization-kubeconfig="$W/ms.kubeconfig" --kubelet-insecure-tls \
            --kubelet-preferred-address-types=InternalIP --kubelet-use-node-status-port \
            --metric-resolution=15s >"$W/metrics-server.log" 2>&1 &
        ms_pid=$!
    fi
    ms_available() { [ "$("$KUBECTL" get apiservice v1beta1.metrics.k8s.io -o jsonpath='{.status.conditions[?(@.type=="Available")].status}')" = True ]; }
    check "APIService v1beta1.metrics.k8s.io Available" wait_for 90 ms_available
    top_node() { "$KUBECTL" top node "$NODE" --no-headers >"$W/top-node.out" 2>&1 &&
        grep -Eq "^$NODE +[0-9]+m +[0-9]+% +[0-9]+Mi +[0-9]+%" "$W/top-node.out"; }
    check "kubectl top node ($(wait_for 90 top_node; cat "$W/top-node.out"))" top_node
    top_pod() { "$KUBECTL" top pod api-a --no-headers >"$W/top-pod.out" 2>&1 &&
        grep -Eq '^api-a +[0-9]+m +[0-9]+Mi' "$W/top-pod.out"; }
    check "kubectl top pod ($(wait_for 60 top_pod; cat "$W/top-pod.out"))" top_pod

    # A HorizontalPodAutoscaler (CPU 50% of 100m) on a Deployment whose pod burns its 200m limit.
    cat <<YAML | "$KUBECTL" apply -f - >/dev/null
apiVersion: apps/v1
kind: Deployment
metadata: {name: burn}
spec:
  replicas: 1
  selector: {matchLabels: {app: burn}}
  template:
    metadata: {labels: {app: burn}}
    spec:
      automountServiceAccountToken: false
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: busybox
        imagePullPolicy: Never
        command: [sh, -c, 'trap "exit 0" TERM; while :; do :; done']
        resources: {requests: {cpu: 100m}, limits: {cpu: 200m}}
        readinessProbe: {exec: {command: ["true"]}, periodSeconds: 2}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: burn}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: burn}
  minReplicas: 1
  maxReplicas: 2
  metrics:
  - type: Resource
    resource: {name: cpu, target: {type: Utilization, averageUtilization: 50}}
YAML
    scaled() { [ "$("$KUBECTL" get deploy burn -o jsonpath='{.spec.replicas}')" = 2 ]; }
    check "HPA scales Deployment burn from 1 to 2 replicas on CPU ($(wait_for 180 scaled;
        "$KUBECTL" get hpa burn --no-headers 2>&1 | tr -s ' '))" scaled
    # bosun's own figures on /metrics, named as the kubelet's.
    admin_get /metrics >"$W/metrics-agent.txt"
    check "/metrics has the pod start SLI, pod worker and runtime operation histograms" bash -c "
        grep -Eq '^kubelet_pod_start_sli_duration_seconds_count [1-9]' '$W/metrics-agent.txt' &&
        grep -q '^kubelet_pod_start_sli_duration_seconds_bucket{le=\"0.5\"} ' '$W/metrics-agent.txt' &&
        grep -Eq '^kubelet_pod_worker_duration_seconds_count\{operation_type=\"sync\"\} [1-9]' '$W/metrics-agent.txt' &&
        grep -Eq '^kubelet_runtime_operations_duration_seconds_count\{operation_type=\"start_container\"\} [1-9]' '$W/metrics-agent.txt'"
    check "/metrics counts burn's readiness probes (prober_probe_total)" \
        grep -Eq '^prober_probe_total\{container="c",namespace="default",pod="burn-[^"]*",pod_uid="[^"]+",probe_type="Readiness",result="successful"\} [1-9]' \
        "$W/metrics-agent.txt"
    "$KUBECTL" delete hpa burn >/dev/null 2>&1
    "$KUBECTL" delete deploy burn --wait=false >/dev/null 2>&1
    burn_gone() { [ -z "$("$KUBECTL" get pods -l app=burn -o name 2>/dev/null)" ]; }
    check "Deployment burn's pods deleted" wait_for 60 burn_gone
    [ -n "${ms_pid:-}" ] && kill "$ms_pid" 2>/dev/null && wait "$ms_pid" 2>/dev/null
    ms_pid=
    "$KUBECTL" delete apiservice v1beta1.metrics.k8s.io >/dev/null 2>&1
}
top_checks

# The SPDY path (for control planes that do not send WebSockets to nodes): the same apiserver
# restarted with ExtendWebSocketsToKubelet off translates kubectl's WebSockets into SPDY/3.1
# toward bosun. exec (output, exit code, stdin, -it), logs, attach and port-forward again.
spdy_checks() {
    local cmdf=$D/state/cmd.kube-apiserver out code
    cp "$cmdf" "$W/cmd.kube-apiserver.orig"
    printf ' %q' --feature-gates=ExtendWebSocketsToKubelet=false >>"$cmdf"
    bash "$here/component.sh" "$D" stop kube-apiserver >/dev/null 2>&1
    bash "$here/component.sh" "$D" start kube-apiserver >/dev/null 2>&1
    check "apiserver back with the WebSocket gate off" wait_for 90 "$KUBECTL" get --raw /readyz
    local before
    before=$(grep -c 'over SPDY/3.1' "$W/bosun.log")
    out=$("$KUBECTL" exec api-a -- cat /etc/hostname 2>&1)
    check "SPDY: kubectl exec ($out)" [ "$out" = api-a ]
    "$KUBECTL" exec api-a -- sh -c 'exit 5' >/dev/null 2>&1
    code=$?
    check "SPDY: kubectl exec exit code ($code)" [ "$code" = 5 ]
    out=$(echo via-spdy | "$KUBECTL" exec -i api-a -- cat 2>&1)
    check "SPDY: kubectl exec -i with stdin ($out)" [ "$out" = via-spdy ]
    # script(1) writes the EOF character when its stdin (/dev/null) ends; when that comes while
    # kubectl's terminal is still canonical, the kernel queues it as a NUL that kubectl, raw by
    # then, reads and sends: the container's terminal echoes it ("^@") before the output.
    out=$(script -qec "$KUBECTL exec -it api-a -- sh -c '[ -t 0 ] && echo is-a-tty'" /dev/null </dev/null 2>&1 | tr -d '\r\0')
    check "SPDY: kubectl exec -it gets a terminal ($(tr '\n' ' ' <<<"$out"))" bash -c "grep -qxE '(\\^@)*is-a-tty' <<<'$out'"
    check "SPDY: bosun served those over SPDY/3.1" [ "$(grep -c 'over SPDY/3.1' "$W/bosun.log")" -ge $((before + 4)) ]
    out=$("$KUBECTL" logs api-a --tail=1 2>&1)
    check "SPDY gate off: kubectl logs ($out)" [ -n "$out" ]
    local lport
    free_port lport 21280
    "$KUBECTL" port-forward pod/api-d "$lport:8080" >"$W/pf3.out" 2>&1 &
    follow_pid=$!
    wait_for 20 grep -q "Forwarding from 127.0.0.1:$lport" "$W/pf3.out"
    local want
    want=$(seq 1 30000 | sha256sum | cut -d' ' -f1)
    spdy_fetched() { [ "$(curl -s --max-time 10 "http://127.0.0.1:$lport/f" | sha256sum | cut -d' ' -f1)" = "$want" ]; }
    check "SPDY: kubectl port-forward fetches the file intact" spdy_fetched
    check "SPDY: port-forward arrived as plain SPDY" grep -q 'port-forward.*Spdy' "$W/bosun.log"
    kill "$follow_pid" 2>/dev/null; wait "$follow_pid" 2>/dev/null; follow_pid=
    cp "$W/cmd.kube-apiserver.orig" "$cmdf"
    bash "$here/component.sh" "$D" stop kube-apiserver >/dev/null 2>&1
    bash "$here/component.sh" "$D" start kube-apiserver >/dev/null 2>&1
    check "apiserver back with its usual flags" wait_for 90 "$KUBECTL" get --raw /readyz
}
case "${BOSUN_CP_APISERVER_FLAGS:-}" in
    *ExtendWebSocketsToKubelet=false*) ;;   # the whole run is already the SPDY path
    *) spdy_checks ;;
esac

# serverTLSBootstrap: bosun restarted (pods are adopted) asks for a serving certificate.
kill -TERM "$bosun_pid"; wait "$bosun_pid" 2>/dev/null; bosun_pid=
echo "serverTLSBootstrap: true" >>"$W/config.yaml"
echo "streamingConnectionIdleTimeout: 10s" >>"$W/config.yaml"
start_bosun
serving_csr() {
    "$KUBECTL" get csr -o jsonpath='{range .items[?(@.spec.signerName=="kubernetes.io/kubelet-serving")]}{.metadata.name} {.spec.username}{"\n"}{end}' |
        awk -v u="system:node:$NODE" '$2 == u {print $1; exit}' | grep .
}
check "serving CSR (kubernetes.io/kubelet-serving) requested after a restart" wait_for 30 serving_csr
"$KUBECTL" certificate approve "$(serving_csr)" >/dev/null 2>&1
verified() { [ "$(curl -s --cacert "$D/pki/ca.crt" -o /dev/null -w '%{http_code}' "https://$NODE_IP:$PORT/pods")" = 401 ]; }
check "approved: the API serves a certificate of the cluster CA" wait_for 30 verified
out=$("$KUBECTL" exec api-a -- cat /etc/hostname 2>&1)
check "kubectl exec after the restart ($out)" [ "$out" = api-a ]
# streamingConnectionIdleTimeout (10s here): an exec session with no byte either way is closed,
# and its command with it.
t0=$SECONDS
printf 'GET /exec/default/api-a/c?command=sleep&command=3600&output=1 HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: v4.channel.k8s.io\r\n\r\n' |
    timeout 120 openssl s_client -quiet -cert "$D/pki/admin.crt" -key "$D/pki/admin.key" \
        -connect "$NODE_IP:$PORT" >"$W/idle-session.out" 2>/dev/null
took=$((SECONDS - t0))
check "an idle exec session is closed after streamingConnectionIdleTimeout (${took}s)" \
    bash -c "grep -q '^HTTP/1.1 101' '$W/idle-session.out' && [ $took -ge 8 ] && [ $took -le 40 ]"
no_sleeper_3600() { ! "$KUBECTL" exec api-a -- ps | grep -q 'sleep 3600'; }
check "and its command is gone" wait_for 15 no_sleeper_3600
result() { [ -s "$W/$1.secs" ]; }
wait_for 150 result keepalive
silent=$(cat "$W/silent.secs" 2>/dev/null)
check "a client that sends nothing after TLS is closed after the header timeout (${silent:-?}s)" \
    bash -c "[ -n '$silent' ] && [ '$silent' -ge 25 ] && [ '$silent' -le 60 ]"
idle=$(cat "$W/keepalive.secs" 2>/dev/null)
check "an idle kept-alive connection is closed after 90 s (${idle:-?}s, $(head -1 "$W/keepalive.out" | tr -d '\r'))" \
    bash -c "grep -q '^HTTP/1.1 401' '$W/keepalive.out' && [ -n '$idle' ] && [ '$idle' -ge 80 ] && [ '$idle' -le 130 ]"

"$KUBECTL" delete pod api-a api-b api-c api-d --wait=false >/dev/null 2>&1
"$KUBECTL" delete clusterrolebinding e2e-proxy-get >/dev/null 2>&1
"$KUBECTL" delete clusterrole e2e-proxy-get >/dev/null 2>&1
gone() { [ -z "$("$KUBECTL" get pods -o name 2>/dev/null)" ]; }
check "pods deleted" wait_for 60 gone
kill -TERM "$bosun_pid"; wait "$bosun_pid" 2>/dev/null; bosun_pid=
summary
