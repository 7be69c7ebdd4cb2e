#!/bin/bash
# The VM tier's focused suite, run as root inside the guest (systemd, pure cgroup v2) with the
# payload in /vmtest: bosun.deb, busybox/ (an OCI layout). Prints "VMTEST: PASS|FAIL name" lines
# and a final "N passed, M failed" line; exits non-zero if anything failed.
set -u
P=/vmtest
NODE=$(hostname)
MANIFESTS=/etc/kubernetes/manifests
MARKS=/var/tmp/vmtest-marks
T=${VMTEST_WAIT:-240}     # seconds: process creation is ~30x slower under software emulation
passed=0 failed=0

say() { echo "VMTEST: $*"; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# pod NAME: its JSON object from `bosun pods --json` (static pods are named <name>-<node>).
pod() { bosun pods --json 2>/dev/null | jq -c --arg n "$1-$NODE" '.[] | select(.metadata.name == $n)'; }
# wait_for DESCRIPTION COMMAND...: retry COMMAND every second for up to $T seconds.
wait_for() {
    local what=$1; shift
    local i
    for ((i = 0; i < T; i++)); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 1
    done
    say "timed out after ${T}s waiting for $what"
    bosun pods 2>&1 | sed 's/^/    /'
    journalctl -u bosun --no-pager -n 30 2>&1 | sed 's/^/    journal: /'
    return 1
}
phase_is() { [[ $(pod "$1" | jq -r '.status.phase') == "$2" ]]; }
running() { [[ $(pod "$1" | jq -r '.status.containerStatuses[0].state.running != null') == true ]]; }
terminated() { [[ $(pod "$1" | jq -r '.status.containerStatuses[0].state.terminated != null') == true ]]; }
gone() { [[ -z $(pod "$1") ]]; }
check() { # check DESCRIPTION CONDITION...: fail the current test with DESCRIPTION unless CONDITION
    local what=$1; shift
    if ! "$@"; then say "check failed: $what"; return 1; fi
}
apply() { # apply NAME YAML-BODY: write a manifest atomically
    printf '%s' "$2" > "$MANIFESTS/.$1.tmp" && mv "$MANIFESTS/.$1.tmp" "$MANIFESTS/$1.yaml"
}
run_test() {
    local name=$1 t0
    t0=$(now)
    say "RUN $name"
    # Not inside an if: bash ignores set -e in a tested context, and a failed check must end the
    # test.
    ( set -e; "test_$name" )
    if [ $? -eq 0 ]; then
        passed=$((passed + 1)); say "PASS $name ($(elapsed "$t0")s)"
    else
        failed=$((failed + 1)); say "FAIL $name ($(elapsed "$t0")s)"
    fi
}

test_cgroup_v2() {
    check "/sys/fs/cgroup is cgroup2 ($(stat -fc %T /sys/fs/cgroup))" [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]
    check "no cgroup v1 hierarchy mounted" [ -z "$(awk '$3 == "cgroup"' /proc/mounts)" ]
    say "  controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
}

test_install_enabled_but_idle() {
    dpkg -i "$P/bosun.deb" 2>&1 | sed 's/^/    dpkg: /'
    check "dpkg -i succeeded" [ "${PIPESTATUS[0]}" -eq 0 ]
    check "installed" dpkg -s bosun
    check "unit enabled ($(systemctl is-enabled bosun))" [ "$(systemctl is-enabled bosun)" = enabled ]
    check "unit not started without a kubeconfig or marker ($(systemctl is-active bosun))" \
        [ "$(systemctl is-active bosun)" != active ]
    check "start condition unmet" [ "$(systemctl show -P ConditionResult bosun)" = no ]
    for f in /etc/bosun/config.yaml /etc/default/bosun; do
        check "conffile $f" grep -qx "$f .*" <(dpkg-query -W -f='${Conffiles}\n' bosun | sed 's/^ //')
    done
    for d in /etc/kubernetes/manifests /var/lib/bosun /var/log/pods /var/log/containers; do
        check "folder $d" [ -d "$d" ]
    done
    check "KillMode=process" [ "$(systemctl show -P KillMode bosun)" = process ]
    check "Delegate=yes" [ "$(systemctl show -P Delegate bosun)" = yes ]
    check "LimitNOFILE=1048576" [ "$(systemctl show -P LimitNOFILE bosun)" = 1048576 ]
}

test_start_standalone() {
    bosun image import "$P/busybox" busybox
    touch /etc/bosun/standalone
    systemctl start bosun
    wait_for "bosun active" bash -c '[ "$(systemctl is-active bosun)" = active ]'
    sleep 2
    check "still active after 2s ($(systemctl is-active bosun))" [ "$(systemctl is-active bosun)" = active ]
    check "nofile limit of the agent" grep -q '^Max open files *1048576' "/proc/$(systemctl show -P MainPID bosun)/limits"
}

test_limits_in_cgroup_v2_files() {
    apply limits "apiVersion: v1
kind: Pod
metadata: {name: limits}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: busybox
    imagePullPolicy: Never
    command: [sh, -c, 'cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/cpu.max /sys/fs/cgroup/pids.max; grep -c . /proc/self/cgroup']
    resources:
      requests: {cpu: 250m, memory: 32Mi}
      limits: {cpu: 500m, memory: 64Mi}
"
    wait_for "limits Succeeded" phase_is limits Succeeded
    local out
    out=$(bosun logs "limits-$NODE" main)
    echo "$out" | sed 's/^/    container: /'
    mapfile -t l <<< "$out"
    check "memory.max = 64Mi" [ "${l[0]}" = 67108864 ]
    check "cpu.max = 50000 100000" [ "${l[1]}" = "50000 100000" ]
    check "one cgroup v2 line in /proc/self/cgroup" [ "${l[3]}" = 1 ]
    check "qosClass Burstable" [ "$(pod limits | jq -r .status.qosClass)" = Burstable ]
    rm "$MANIFESTS/limits.yaml"
    wait_for "limits gone" gone limits
}

test_oom_killed() {
    apply oom "apiVersion: v1
kind: Pod
metadata: {name: oom}
spec:
  restartPolicy: Never
  containers:
  - name: hog
    image: busybox
    imagePullPolicy: Never
    command: [sh, -c, 'head -c 200m /dev/zero | tail > /dev/null']
    resources:
      limits: {memory: 32Mi}
"
    wait_for "oom terminated" terminated oom
    local t
    t=$(pod oom | jq -c '.status.containerStatuses[0].state.terminated')
    say "  $t"
    check "reason OOMKilled" [ "$(jq -r .reason <<< "$t")" = OOMKilled ]
    check "exit code 137" [ "$(jq -r .exitCode <<< "$t")" = 137 ]
    check "bosun still active" [ "$(systemctl is-active bosun)" = active ]
    rm "$MANIFESTS/oom.yaml"
    wait_for "oom gone" gone oom
}

test_graceful_termination() {
    rm -rf "$MARKS"; mkdir -p "$MARKS"
    apply grace "apiVersion: v1
kind: Pod
metadata: {name: grace}
spec:
  terminationGracePeriodSeconds: 90
  volumes:
  - name: marks
    hostPath: {path: $MARKS, type: Directory}
  containers:
  - name: polite
    image: busybox
    imagePullPolicy: Never
    command: [sh, -c, 'trap \"echo got-term > /marks/polite; exit 0\" TERM; while true; do sleep 0.2; done']
    volumeMounts: [{name: marks, mountPath: /marks}]
"
    wait_for "grace running" running grace
    local t0 took
    t0=$(now)
    rm "$MANIFESTS/grace.yaml"
    wait_for "grace gone" gone grace
    took=$(elapsed "$t0")
    say "  removal took ${took}s with a 90s grace period"
    check "SIGTERM handler ran" grep -qx got-term "$MARKS/polite"
    check "ended by SIGTERM, well before the grace period" awk -v t="$took" 'BEGIN { exit !(t < 60) }'
}

# Shared by the two adoption tests: a long-running pod and its container's identity.
identity() { pod steady | jq -r '.status.containerStatuses[0] | "\(.containerID) \(.state.running.startedAt) \(.restartCount)"'; }
same_identity() { # same_identity BEFORE AFTER: equal, or print what bosun recorded
    [ "$1" = "$2" ] && return 0
    find /run/bosun -name started.json -exec sh -c 'echo "    $1: $(cat "$1")"' _ {} \; 2>/dev/null
    journalctl -u bosun --no-pager -n 25 | sed 's/^/    journal: /'
    return 1
}
sleeper_pid() { pgrep -xf 'sleep 3601' | head -1; }

test_restart_adopts() {
    apply steady "apiVersion: v1
kind: Pod
metadata: {name: steady}
spec:
  containers:
  - name: main
    image: busybox
    imagePullPolicy: Never
    command: [sleep, '3601']
"
    wait_for "steady running" running steady
    local before pid after main_before
    before=$(identity); pid=$(sleeper_pid); main_before=$(systemctl show -P MainPID bosun)
    say "  before: $before pid=$pid agent=$main_before"
    check "container process found" [ -n "$pid" ]
    systemctl restart bosun
    wait_for "bosun active again" bash -c '[ "$(systemctl is-active bosun)" = active ]'
    check "a new agent process" [ "$(systemctl show -P MainPID bosun)" != "$main_before" ]
    # Twice, 15 s apart: each time more than syncFrequency (10s) after the new agent started.
    sleep 15
    after=$(identity)
    say "  after:  $after pid=$(sleeper_pid)"
    check "same container, same start time, restartCount 0" same_identity "$before" "$after"
    sleep 15
    after=$(identity)
    say "  later:  $after pid=$(sleeper_pid)"
    check "still the same container, start time and restartCount" same_identity "$before" "$after"
    check "restartCount 0" [ "${after##* }" = 0 ]
    check "same process still running" [ "$(sleeper_pid)" = "$pid" ]
    check "still running" running steady
}

test_stop_leaves_pods() {
    wait_for "steady running" running steady
    local before pid after
    before=$(identity); pid=$(sleeper_pid)
    say "  before: $before pid=$pid"
    systemctl stop bosun
    check "bosun inactive after stop ($(systemctl is-active bosun))" [ "$(systemctl is-active bosun)" = inactive ]
    sleep 5
    check "container process alive with bosun stopped" kill -0 "$pid"
    check "no bosun agent left" [ -z "$(pgrep -xf '/usr/bin/bosun standalone.*')" ]
    systemctl start bosun
    wait_for "bosun active again" bash -c '[ "$(systemctl is-active bosun)" = active ]'
    sleep 15
    after=$(identity)
    say "  after stop/start: $after"
    check "same container after stop and start" same_identity "$before" "$after"
    sleep 15
    after=$(identity)
    say "  later: $after"
    check "still the same container after stop and start" same_identity "$before" "$after"
    check "same process" [ "$(sleeper_pid)" = "$pid" ]
    rm "$MANIFESTS/steady.yaml"
    wait_for "steady gone" gone steady
    check "container process ended" bash -c "! kill -0 $pid 2>/dev/null"
}

# The cluster part (payload cluster/ from run.sh: a bootstrap kubeconfig for the host's test
# control plane, reached at 10.0.2.100:6443 through QEMU user networking). The host has created a
# pod for this node before the boot; the scheduler binds it once the node is Ready, and run.sh
# checks its status in the API after the guest has powered off.
test_cluster_join() {
    ip link set eth0 up
    ip addr add 10.0.2.15/24 dev eth0
    ip route add default via 10.0.2.2
    systemctl stop bosun
    rm -f /etc/bosun/standalone
    install -m 0600 "$P/cluster/bootstrap-kubeconfig" /etc/bosun/bootstrap-kubeconfig
    # The cluster line the package ships, commented out, in the flags file.
    sed -i -e 's/^BOSUN_ARGS=/#&/' -e 's/^#\(BOSUN_ARGS="--config\)/\1/' /etc/default/bosun
    check "a cluster BOSUN_ARGS line is active" grep -q '^BOSUN_ARGS="--config .*--bootstrap-kubeconfig' /etc/default/bosun
    rm -f "$MARKS/cluster-pod"
    # The pod network: bosun writes no CNI config in cluster mode; the default bridge it wrote
    # into /etc/cni/net.d in standalone mode (the tests before) is this node's config.
    check "a CNI config is there for the cluster node" bash -c 'ls /etc/cni/net.d/*.conflist'
    systemctl start bosun
    wait_for "bosun active in cluster mode" bash -c '[ "$(systemctl is-active bosun)" = active ]'
    wait_for "the node credential from the TLS bootstrap" test -s /etc/bosun/kubeconfig
    say "  node credential written; waiting for the pod the scheduler binds here"
    wait_for "the scheduled pod's mark" test -s "$MARKS/cluster-pod"
    say "  pod says: $(cat "$MARKS/cluster-pod")"
    check "the pod has an address on bosun's bridge" grep -q 'inet 10\.244\.' "$MARKS/cluster-pod"
    # Time for the Running status to reach the API before the guest powers off.
    sleep 20
    check "bosun still active" [ "$(systemctl is-active bosun)" = active ]
}

# The tap mode's network (run.sh with VM_BRIDGE: the payload's net file has the guest's address
# and the host bridge's address as its gateway): eth0 up with them.
net_up() {
    local ADDRESS GATEWAY
    # shellcheck disable=SC1091
    . "$P/net"
    ip link set lo up
    ip link set eth0 up
    ip addr replace "$ADDRESS" dev eth0
    ip route replace default via "$GATEWAY"
    say "  eth0 $ADDRESS via $GATEWAY"
}
# The tap mode's link: eth0 has the address and the host's bridge answers on it.
test_tap_net() {
    local ADDRESS GATEWAY
    net_up
    # shellcheck disable=SC1091
    . "$P/net"
    check "eth0 has $ADDRESS" grep -qw "inet $ADDRESS" <<< "$(ip -4 -o addr show dev eth0)"
    check "the host bridge $GATEWAY answers ping over the tap link" busybox ping -c 3 -W 5 "$GATEWAY"
    say "  $(ip -4 -o addr show dev eth0 | awk '{print $2, $4}'); $(ip neigh show "$GATEWAY")"
}

# kubeadm join of this guest to the host's kubeadm control plane (tests/kubeadm/join-vm.sh: the
# payload's kubeadm/ has kubeadm, kubectl, crictl, the admin kubeconfig and the join command).
KJ=$P/kubeadm
CRI_SOCK=/run/bosun/bosun.sock
kctl() { "$KJ/kubectl" --kubeconfig "$KJ/admin.conf" "$@"; }
cri() { "$KJ/crictl" --runtime-endpoint "unix://$CRI_SOCK" --image-endpoint "unix://$CRI_SOCK" "$@"; }
node_ready() {
    [ "$(kctl get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]
}
pod_running() { [ "$(kctl get pod "$1" -o jsonpath='{.status.phase}')" = Running ]; }
# The pod network. With the cluster's network add-on (flannel: tests/kubeadm/init.sh applies
# upstream's kube-flannel.yml) its DaemonSet pod on this node writes the CNI config (VXLAN over the
# tap link), and there is nothing to do but wait. Without one, the admin's own: a bridge with
# host-local IPAM on the Node's podCIDR, as tests/kubeadm/init.sh once wrote on the host.
pod_network() {
    local cidr="" i
    if kctl -n kube-flannel get daemonset kube-flannel-ds >/dev/null 2>&1; then
        say "  pod network: flannel's DaemonSet (it writes /etc/cni/net.d/10-flannel.conflist)"
        wait_for "flannel's CNI config on this node" test -s /etc/cni/net.d/10-flannel.conflist
        return
    fi
    for ((i = 0; i < T; i++)); do
        cidr=$(kctl get node "$NODE" -o jsonpath='{.spec.podCIDR}' 2>/dev/null) && [ -n "$cidr" ] && break
        sleep 1
    done
    check "the node got a pod CIDR" [ -n "$cidr" ]
    mkdir -p /etc/cni/net.d
    cat > /etc/cni/net.d/10-kubeadm-join.conflist <<EOF
{"cniVersion": "1.0.0", "name": "kubeadm-join", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$cidr"}]]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
EOF
    say "  pod network: bridge cni0 on $cidr"
}
# What kubeadm reset leaves to the admin (its own message says so): the CNI config and links.
pod_network_down() {
    rm -f /etc/cni/net.d/10-kubeadm-join.conflist /etc/cni/net.d/10-flannel.conflist
    ip link del cni0 2>/dev/null || true
    ip link del flannel.1 2>/dev/null || true
}
# api_view / cri_view: this node's pods as "namespace/name running-containers" lines, sorted, as
# the API (kubectl, this node's pods) and the CRI (crictl on bosun's socket) see them.
api_view() {
    kctl get pods -A -o json --field-selector "spec.nodeName=$NODE" | jq -r '.items[] |
        "\(.metadata.namespace)/\(.metadata.name) \([.status.containerStatuses[]? | select(.state.running) | .name] | sort | join(","))"' | sort
}
cri_view() {
    local pods ctrs
    pods=$(cri pods -o json) && ctrs=$(cri ps -o json) || return 1
    jq -rn --argjson p "$pods" --argjson c "$ctrs" '$p.items[] | select(.state == "SANDBOX_READY") | . as $s |
        "\($s.metadata.namespace)/\($s.metadata.name) \([$c.containers[] | select(.podSandboxId == $s.id and .state == "CONTAINER_RUNNING") | .metadata.name] | sort | join(","))"' | sort
}
vmjoin_pod_gone() { ! cri pods -o json | jq -r '.items[].metadata.name' | grep -qx vmjoin-pod; }
views_agree() { local a c; a=$(api_view) && c=$(cri_view) && [ -n "$a" ] && [ "$a" = "$c" ]; }
test_kubeadm_join() {
    local t0 out rc verdict
    for f in kubeadm kubectl crictl; do install -m 0755 "$KJ/$f" "/usr/local/bin/$f"; done
    dpkg -i "$P/bosun.deb" "$P/bosun-kubelet.deb" 2>&1 | sed 's/^/    dpkg: /'
    check "dpkg -i bosun bosun-kubelet" [ "${PIPESTATUS[0]}" -eq 0 ]
    check "kubelet.service enabled ($(systemctl is-enabled kubelet))" [ "$(systemctl is-enabled kubelet)" = enabled ]
    bosun image import "$P/busybox" busybox
    # The cluster's DaemonSet images (kube-proxy, flannel), under the names their manifests ask for.
    local ref name
    while read -r ref name; do
        bosun image import "$KJ/images/$name" "$ref" >/dev/null
        say "  image $ref"
    done < <(cat "$KJ/images/refs" 2>/dev/null)
    # flannel's install-cni-plugin copies its plugin there (a hostPath without a type: it must
    # exist); Debian's CNI plugins are in /usr/lib/cni.
    mkdir -p /opt/cni/bin
    net_up
    check "the apiserver answers over the tap link" \
        timeout 30 bash -c "</dev/tcp/$(cut -d' ' -f3 "$KJ/join-command" | cut -d: -f1)/6443"
    # kubeadm's IPv4 preflight wants forwarding on (br_netfilter is loaded at boot).
    sysctl -qw net.ipv4.ip_forward=1
    # As kubeadm's install docs say: the kubelet enabled and running before the join (bosun serves
    # only its CRI socket until kubeadm has written /var/lib/kubelet/config.yaml).
    systemctl enable --now kubelet
    wait_for "bosun's CRI socket before the join" test -S "$CRI_SOCK"
    t0=$(now)
    # SystemVerification is ignored: this guest has no kernel config file (/proc/config.gz,
    # /boot/config-*) for kubeadm's kernel check.
    # shellcheck disable=SC2046
    out=$(timeout 900 $(cat "$KJ/join-command") --cri-socket "unix://$CRI_SOCK" \
        --ignore-preflight-errors=SystemVerification -v=1 2>&1) && rc=0 || rc=$?
    echo "$out" | grep -v '^I[0-9]' | sed 's/^/    kubeadm: /' | tail -40
    check "kubeadm join succeeded (rc $rc, $(elapsed "$t0")s)" [ "$rc" -eq 0 ]
    check "kubeadm join says the node joined" grep -q 'This node has joined the cluster' <<< "$out"
    check "the kubelet's TLS bootstrap wrote kubelet.conf" test -s /etc/kubernetes/kubelet.conf
    check "kubelet.service active" [ "$(systemctl is-active kubelet)" = active ]
    say "  joined in $(elapsed "$t0")s; Ready says: $(kctl get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].message}')"
    pod_network
    wait_for "node $NODE Ready" node_ready
    say "  node Ready $(elapsed "$t0")s after the join started"
    kctl get node "$NODE" -o wide 2>&1 | sed 's/^/    /'
    # A pod pinned to this node.
    kctl apply -f - <<YAML
apiVersion: v1
kind: Pod
metadata: {name: vmjoin-pod, namespace: default}
spec:
  nodeName: $NODE
  terminationGracePeriodSeconds: 0
  containers:
  - name: c
    image: busybox
    imagePullPolicy: Never
    command: [sleep, '3600']
YAML
    wait_for "vmjoin-pod Running" pod_running vmjoin-pod
    kctl get pods -A -o wide --field-selector "spec.nodeName=$NODE" 2>&1 | sed 's/^/    /'
    # crictl and the API agree on this node's pods and their running containers.
    wait_for "crictl and kubectl agree" views_agree
    say "  crictl: $(cri_view | tr '\n' ';')"
    check "vmjoin-pod's container runs (crictl)" grep -qx 'default/vmjoin-pod c' <<< "$(cri_view)"
    # The host's checks (join-vm.sh) run now, with this node up: it reads what crictl saw here
    # from a ConfigMap and answers in another.
    kctl create configmap vmjoin-guest --from-literal=crictl="$(cri_view)" >/dev/null
    T=600 wait_for "the host's verdict" kctl get configmap vmjoin-host
    verdict=$(kctl get configmap vmjoin-host -o jsonpath='{.data.result}')
    say "  host: $verdict"
    check "the host's checks passed" grep -q '^PASS' <<< "$verdict"
    # Removing the node as kubeadm's docs say: drain, kubeadm reset (then the admin deletes the
    # Node: the host does).
    kctl drain "$NODE" --force --ignore-daemonsets --delete-emptydir-data --timeout=300s 2>&1 | sed 's/^/    drain: /'
    # The drain leaves the DaemonSets' pods (kube-proxy, flannel) to kubeadm reset.
    wait_for "vmjoin-pod gone from crictl after the drain" vmjoin_pod_gone
    say "  left for kubeadm reset: $(cri_view | tr '\n' ';')"
    t0=$(now)
    out=$(timeout 600 kubeadm reset -f --cri-socket "unix://$CRI_SOCK" 2>&1) && rc=0 || rc=$?
    echo "$out" | sed 's/^/    reset: /' | tail -30
    check "kubeadm reset succeeded (rc $rc, $(elapsed "$t0")s)" [ "$rc" -eq 0 ]
    pod_network_down
    touch /var/tmp/vmjoin-reset-done
    # Tell the host the node is reset (it deletes the Node then).
    kctl create configmap vmjoin-reset --from-literal=done=1 >/dev/null
}
# After kubeadm_join's drain and kubeadm reset: nothing of the node's is left.
test_kubeadm_reset_clean() {
    check "kubeadm reset ran (kubeadm_join got that far)" test -e /var/tmp/vmjoin-reset-done
    # Everything left first (the checks below stop at the first failure).
    pgrep -a bosun | sed 's/^/    left process: /'
    grep ' /var/lib/kubelet' /proc/mounts | sed 's/^/    left mount: /'
    find /run/bosun/pods /var/lib/kubelet /etc/kubernetes -mindepth 1 -maxdepth 2 2>/dev/null | sed 's/^/    left file: /'
    check "kubelet.service stopped ($(systemctl is-active kubelet))" [ "$(systemctl is-active kubelet)" != active ]
    check "no bosun process left ($(pgrep -a bosun | tr '\n' ';'))" [ -z "$(pgrep bosun)" ]
    check "no pod state in /run/bosun/pods ($(ls /run/bosun/pods 2>/dev/null | tr '\n' ' '))" \
        [ -z "$(ls -A /run/bosun/pods 2>/dev/null)" ]
    check "no mount under /var/lib/kubelet ($(grep -c ' /var/lib/kubelet' /proc/mounts))" \
        bash -c "! grep -q ' /var/lib/kubelet' /proc/mounts"
    check "/var/lib/kubelet empty ($(find /var/lib/kubelet -mindepth 1 2>/dev/null | head -5 | tr '\n' ' '))" \
        [ -z "$(find /var/lib/kubelet -mindepth 1 2>/dev/null)" ]
    check "no file left in /etc/kubernetes ($(find /etc/kubernetes -type f 2>/dev/null | tr '\n' ' '))" \
        [ -z "$(find /etc/kubernetes -type f 2>/dev/null)" ]
    local pod_cgroups
    pod_cgroups=$(find /sys/fs/cgroup -regextype posix-extended -type d \
        -regex '.*pod[0-9a-f]{8}[-_][0-9a-f]{4}[-_].*' 2>/dev/null | head -3 | tr '\n' ' ')
    check "no pod cgroup left ($pod_cgroups)" [ -z "$pod_cgroups" ]
}

# AppArmor enforcement, through the runtime's privileged security tests (run.sh's
# security-tests binary): a Localhost profile denying writes below /denied makes a write there
# fail in the container and in an exec'd process, /proc/1/attr/current names the profile,
# RuntimeDefault loads and applies bosun-default, and a profile that is not loaded is refused.
test_apparmor() {
    check "AppArmor enabled in the guest" grep -q Y /sys/module/apparmor/parameters/enabled
    check "apparmor_parser installed" command -v apparmor_parser
    local out
    out=$(cd /tmp && BOSUN_REQUIRE_APPARMOR=1 timeout 600 "$P/security-tests" --ignored apparmor 2>&1)
    echo "$out" | sed 's/^/    security-tests: /'
    check "the AppArmor test passed" grep -qx '1 passed, 0 failed' <<< "$out"
    check "bosun-default stays loaded" grep -q '^bosun-default ' /sys/kernel/security/apparmor/profiles
    check "the test profile was removed" bash -c '! grep -q bosun-test-deny-write /sys/kernel/security/apparmor/profiles'
}

# Graceful node shutdown, last (it ends the run with a graceful poweroff, see the end of this
# file): shutdownGracePeriod 30s (10s of it for critical pods) in the node's config; bosun raises
# logind's InhibitDelayMaxSec with its drop-in and holds a delay inhibitor lock; a static pod
# (and, with the cluster part, the host's pod vm-shutdown) has a preStop hook that writes a mark
# on the guest's disk, which run.sh reads in the disk image once the guest is off.
SHUTDOWN_MARKS=/var/lib/vmtest-shutdown
test_node_shutdown() {
    # Emptied, not made again: the host's pod vm-shutdown (running since cluster_join) has the
    # folder mounted.
    mkdir -p "$SHUTDOWN_MARKS"; rm -f "$SHUTDOWN_MARKS"/*
    printf '\nshutdownGracePeriod: 30s\nshutdownGracePeriodCriticalPods: 10s\n' >> /etc/bosun/config.yaml
    systemctl restart bosun
    wait_for "bosun active" bash -c '[ "$(systemctl is-active bosun)" = active ]'
    apply shutdown "apiVersion: v1
kind: Pod
metadata: {name: shutdown}
spec:
  terminationGracePeriodSeconds: 60
  volumes:
  - name: marks
    hostPath: {path: $SHUTDOWN_MARKS, type: Directory}
  containers:
  - name: main
    image: busybox
    imagePullPolicy: Never
    command: [sh, -c, 'trap \"echo term > /marks/term-static; exit 0\" TERM; while true; do sleep 0.2; done']
    lifecycle:
      preStop:
        exec: {command: [sh, -c, 'echo prestop > /marks/prestop-static; sync']}
    volumeMounts: [{name: marks, mountPath: /marks}]
"
    wait_for "shutdown running" running shutdown
    wait_for "bosun's logind drop-in" grep -qx InhibitDelayMaxSec=30 /etc/systemd/logind.conf.d/99-bosun.conf
    wait_for "bosun's delay inhibitor lock" bash -c "systemd-inhibit --list --no-pager --no-legend | grep -q '^ *bosun .*shutdown.*delay'"
    systemd-inhibit --list --no-pager 2>&1 | sed 's/^/    inhibit: /'
    local delay
    delay=$(busctl get-property org.freedesktop.login1 /org/freedesktop/login1 org.freedesktop.login1.Manager InhibitDelayMaxUSec)
    check "logind waits up to 30 s for delay locks ($delay)" [ "$delay" = "t 30000000" ]
    if [ -f "$P/cluster/bootstrap-kubeconfig" ]; then
        wait_for "the host's pod vm-shutdown running" bash -c \
            "bosun pods --json | jq -e '.[] | select(.metadata.name == \"vm-shutdown\") | .status.containerStatuses[0].state.running != null'"
    fi
    touch /vmtest/shutdown-armed
}

# shutdown_statuses: the ended pods as bosun reports them (`bosun pods`), one JSON line each.
shutdown_statuses() {
    bosun pods --json 2>/dev/null | jq -c --arg s "shutdown-$NODE" '.[] | select(.metadata.name == $s or .metadata.name == "vm-shutdown") |
        {name: .metadata.name, phase: .status.phase, reason: .status.reason, message: .status.message,
         disruption: ([.status.conditions[]? | select(.type == "DisruptionTarget")][0])}'
}

# The graceful poweroff (test_node_shutdown armed it): logind delays the shutdown for bosun's
# lock; meanwhile the pods' statuses are printed for run.sh. systemd stops this unit once bosun
# released the lock: TERM is noted, not obeyed, until the statuses were seen (vmtest-entry, which
# would force the poweroff after the suite, ends on that TERM).
graceful_poweroff() {
    local got_term=0 i st
    trap 'got_term=1' TERM
    echo "VMTEST-DONE rc=$1 uptime=$(cut -d' ' -f1 /proc/uptime) (graceful poweroff follows)"
    sync
    echo "VMTEST-SHUTDOWN poweroff at uptime=$(cut -d' ' -f1 /proc/uptime)"
    if ! systemctl poweroff; then
        echo "VMTEST-SHUTDOWN systemctl poweroff failed"
        return 1
    fi
    for ((i = 0; i < 240; i++)); do
        st=$(shutdown_statuses)
        # Every pod ended (Failed) as bosun reports it.
        if [ -n "$st" ] && ! grep -v '"phase":"Failed"' <<< "$st" | grep -q .; then break; fi
        sleep 0.5
    done
    sleep 1
    st=$(shutdown_statuses)
    while read -r line; do [ -n "$line" ] && echo "VMTEST-SHUTDOWN status $line"; done <<< "$st"
    echo "$st" > "$SHUTDOWN_MARKS/statuses.json"; sync
    echo "VMTEST-SHUTDOWN statuses seen at uptime=$(cut -d' ' -f1 /proc/uptime)"
    [ "$got_term" = 1 ] && exit 0
    trap 'exit 0' TERM
    # Until systemd stops this unit (at most 3 minutes: vmtest-entry then forces the poweroff).
    for ((i = 0; i < 180; i++)); do sleep 1; done
    echo "VMTEST-SHUTDOWN no stop of the unit within 3 minutes of the statuses"
}

say "suite on $(uname -r), $(nproc) cpus, systemd $(systemctl --version | head -1 | cut -d' ' -f2)"
tests=(cgroup_v2 install_enabled_but_idle start_standalone limits_in_cgroup_v2_files oom_killed
       graceful_termination restart_adopts stop_leaves_pods)
[ -x "$P/security-tests" ] && tests+=(apparmor)
[ -f "$P/cluster/bootstrap-kubeconfig" ] && tests+=(cluster_join)
[ -f "$P/net" ] && tests+=(tap_net)
[ -f "$P/kubeadm/join-command" ] && tests+=(kubeadm_join kubeadm_reset_clean)
tests+=(node_shutdown)
# run.sh's short subset (the CI run) names its tests in the payload.
[ -s "$P/tests" ] && read -r -a tests <"$P/tests"
for t in "${tests[@]}"; do
    run_test "$t"
done
if [ "$failed" -gt 0 ]; then
    journalctl -u bosun --no-pager -n 60 2>&1 | sed 's/^/    journal: /'
fi
say "$passed passed, $failed failed"
rc=0; [ "$failed" -eq 0 ] || rc=1
[ -e /vmtest/shutdown-armed ] && graceful_poweroff "$rc"
exit "$rc"
