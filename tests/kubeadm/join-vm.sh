#!/usr/bin/env bash
# `kubeadm join` of a second node, the VM tier's guest with bosun's packages installed, to the
# control plane of tests/kubeadm/init.sh, then `kubeadm reset` on it, leaving nothing. Run as
# init.sh's KUBEADM_THEN (the cluster up, KUBECONFIG the admin's, KUBEADM, KUBECTL, CRICTL, IFACE,
# IP in the environment):
#
#   flock /tmp/bosun-priv.lock env KUBEADM_THEN=$PWD/tests/kubeadm/join-vm.sh tests/kubeadm/init.sh
#
# The guest (tests/vm/run.sh in its tap mode: a tap device in init.sh's bridge, the guest at
# $VM_IP, default 10.250.0.2) reaches the apiserver at $IP:6443 directly. Its suite test
# kubeadm_join (tests/vm/suite.sh) installs the bosun and bosun-kubelet .debs, runs the join
# command made here, waits for its Node to be Ready (with the admin's pod network step), runs a pod
# pinned to itself, compares crictl with the API, then drains itself and runs `kubeadm reset`.
# This script checks, while the guest is up, the guest's Node in the API (Ready, InternalIP
# $VM_IP) and that `kubectl get pods -o wide` agrees with what the guest's crictl saw (handed over
# in a ConfigMap; the verdict goes back in another, which the guest waits for before its reset);
# after the reset it deletes the Node, as kubeadm's docs tell the admin to. Everything it made is
# removed at the end, also on failure.
#
# The packages: run.sh builds them (release, packaging/build.sh) unless BOSUN_DEB and
# BOSUN_KUBELET_DEB name them. init.sh's BOSUN_BIN must then not be the release binary itself:
# packaging/build.sh strips it in place, which fails while init.sh's bosun runs it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
start=$(date +%s)
log() { echo "join-vm: $*" >&2; }
die() { log "FAIL: $*"; exit 1; }
for v in KUBECONFIG KUBEADM KUBECTL CRICTL IFACE IP; do
    [ -n "${!v:-}" ] || die "$v is not set: run this as tests/kubeadm/init.sh's KUBEADM_THEN"
done
NODE=bosun-vm                  # the guest's hostname (tests/vm/build-guest.sh)
VM_IP=${VM_IP:-10.250.0.2}
k() { "$KUBECTL" "$@"; }

work=$(mktemp -d /tmp/bosun-vmjoin.XXXXXX)
vm_pid=
token=
cleanup() {
    local rc=$?
    set +e
    if [ -n "$vm_pid" ] && kill -0 "$vm_pid" 2>/dev/null; then
        log "stopping the VM run"
        # run.sh leads its own process group (setsid): QEMU, timeout and run.sh end together, and
        # run.sh's EXIT trap removes its tap device.
        kill -TERM -- "-$vm_pid" 2>/dev/null
        for _ in $(seq 30); do kill -0 "$vm_pid" 2>/dev/null || break; sleep 1; done
        kill -KILL -- "-$vm_pid" 2>/dev/null
        # Killed before its trap ran: its tap device.
        ip link del "${VM_TAP:-bosun-vmtap0}" 2>/dev/null
    fi
    k delete pod vmjoin-pod --ignore-not-found --grace-period=0 --force >/dev/null 2>&1
    k delete configmap vmjoin-guest vmjoin-host vmjoin-reset --ignore-not-found >/dev/null 2>&1
    k delete node "$NODE" --ignore-not-found >/dev/null 2>&1
    [ -z "$token" ] || "$KUBEADM" token delete "$token" >/dev/null 2>&1
    rm -rf "$work"
    log "done in $(($(date +%s) - start))s (rc=$rc)"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# 1. The payload's kubeadm/ folder: the tools, the admin kubeconfig, the join command.
pl=$work/payload/kubeadm
mkdir -p "$pl"
cp "$KUBEADM" "$KUBECTL" "$CRICTL" "$pl/"
install -m 0600 "$KUBECONFIG" "$pl/admin.conf"
"$KUBEADM" token create --print-join-command >"$pl/join-command"
token=$(awk '{for (i = 1; i < NF; i++) if ($i == "--token") print $(i + 1)}' "$pl/join-command")
grep -q "^kubeadm join $IP:6443 --token " "$pl/join-command" || die "unexpected join command: $(cat "$pl/join-command")"
log "join command made (token ${token%%.*}.…)"
# The images the cluster's DaemonSets run on every node (kube-proxy, flannel and its CNI plugin
# installer; CoreDNS too, should the scheduler put a replica there), built by images.sh under the
# names their manifests ask for: the guest imports them (no registry there either).
mkdir -p "$pl/images"
"$here/images.sh" build 2>"$work/images.err" >"$work/images.txt" || { cat "$work/images.err" >&2; die "images.sh failed"; }
while read -r ref layout; do
    # (not the control plane's static pods: they run on the host only)
    case $ref in */kube-apiserver:* | */kube-controller-manager:* | */kube-scheduler:* | */etcd:*) continue ;; esac
    name=$(basename "$(dirname "$layout")")
    cp -a "$layout" "$pl/images/$name"
    echo "$ref $name" >>"$pl/images/refs"
done <"$work/images.txt"
log "images for the guest: $(awk '{print $1}' "$pl/images/refs" | tr '\n' ' ')"
k delete node "$NODE" --ignore-not-found >/dev/null

# 2. The guest, in the background: tap mode in init.sh's bridge, only the kubeadm_join test.
log "booting the guest ($VM_IP on $IFACE)"
VM_BRIDGE=$IFACE VM_IP=$VM_IP/24 VM_TESTS="tap_net kubeadm_join kubeadm_reset_clean kubeadm_reset_cri_cleanup" VM_PAYLOAD=$work/payload \
    VM_TIMEOUT=${VM_TIMEOUT:-1200} setsid "$root/tests/vm/run.sh" >"$work/vm.out" 2>&1 &
vm_pid=$!

# 3. While the guest is up: its report, then the API's view of it.
for _ in $(seq 1500); do
    k get configmap vmjoin-guest >/dev/null 2>&1 && break
    kill -0 "$vm_pid" 2>/dev/null || break
    sleep 1
done
verdict=""
if ! k get configmap vmjoin-guest >/dev/null 2>&1; then
    verdict="FAIL: the guest never reported its crictl view"
else
    guest_view=$(k get configmap vmjoin-guest -o jsonpath='{.data.crictl}')
    node=$(k get node "$NODE" -o json)
    ready=$(jq -r '.status.conditions[] | select(.type == "Ready") | .status' <<<"$node")
    internal=$(jq -r '[.status.addresses[] | select(.type == "InternalIP") | .address] | join(",")' <<<"$node")
    k get nodes -o wide >&2
    k get pods -A -o wide --field-selector "spec.nodeName=$NODE" >&2
    api_view=$(k get pods -A -o json --field-selector "spec.nodeName=$NODE" | jq -r '.items[] |
        "\(.metadata.namespace)/\(.metadata.name) \([.status.containerStatuses[]? | select(.state.running) | .name] | sort | join(","))"' | sort)
    # The -o wide columns for the test pod: the node, and an address of the node's pod CIDR.
    wide=$(k get pod vmjoin-pod -o wide --no-headers 2>/dev/null | awk '{print $2, $3, $6, $7}')
    cidr=$(jq -r '.spec.podCIDR // ""' <<<"$node")
    pod_ip=$(awk '{print $3}' <<<"$wide")
    log "guest crictl: $(tr '\n' ';' <<<"$guest_view")  api: $(tr '\n' ';' <<<"$api_view")  vmjoin-pod: $wide (podCIDR $cidr)"
    if [ "$ready" != True ]; then
        verdict="FAIL: Node $NODE Ready is '$ready'"
    elif [ "$internal" != "$VM_IP" ]; then
        verdict="FAIL: Node $NODE InternalIP is '$internal', not $VM_IP"
    elif [ -z "$api_view" ] || [ "$api_view" != "$guest_view" ]; then
        verdict="FAIL: kubectl ($(tr '\n' ';' <<<"$api_view")) and the guest's crictl ($(tr '\n' ';' <<<"$guest_view")) disagree"
    elif [ "$(awk '{print $1, $2, $4}' <<<"$wide")" != "1/1 Running $NODE" ] ||
        [ "${pod_ip%.*}" != "$(cut -d/ -f1 <<<"$cidr" | cut -d. -f1-3)" ]; then
        verdict="FAIL: kubectl get pod vmjoin-pod -o wide says '$wide' (podCIDR $cidr)"
    else
        verdict="PASS: Node $NODE Ready, InternalIP $internal; kubectl and the guest's crictl agree: $(tr '\n' ';' <<<"$api_view"); vmjoin-pod $wide"
    fi
fi
log "host checks: $verdict"
k create configmap vmjoin-host --from-literal=result="$verdict" >/dev/null || log "could not hand the verdict to the guest"

# 4. The guest drains itself, resets and powers off; run.sh's result.
vm_rc=0
wait "$vm_pid" || vm_rc=$?
vm_pid=
sed 's/^/    /' "$work/vm.out" >&2
reset_done=$(k get configmap vmjoin-reset -o jsonpath='{.data.done}' 2>/dev/null || true)

# 5. The admin's last step after kubeadm reset on the node: delete its Node.
node_gone=0
if [ "$reset_done" = 1 ]; then
    k delete node "$NODE" --timeout=60s >&2 && ! k get node "$NODE" >/dev/null 2>&1 && node_gone=1
fi
[ "$vm_rc" = 0 ] || die "the VM run failed (rc $vm_rc; host checks: $verdict)"
[[ $verdict == PASS* ]] || die "host checks: $verdict"
[ "$reset_done" = 1 ] || die "the guest did not report its kubeadm reset"
[ "$node_gone" = 1 ] || die "Node $NODE could not be deleted"
log "PASS: kubeadm join of $NODE, crictl and kubectl agree, kubeadm reset left nothing, Node deleted ($(($(date +%s) - start))s)"
