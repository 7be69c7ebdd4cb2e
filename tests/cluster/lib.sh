# Sourced by the cluster end-to-end scripts (e2e-node.sh, e2e-api.sh, e2e-csi.sh, smoke.sh), the
# kubeadm test (tests/kubeadm/init.sh, check-images.sh),
# the VM tier (tests/vm/run.sh) and the benchmarks (bench/lib.sh): the helpers they share.

passed=${passed:-0}
failed=${failed:-0}

# check NAME COMMAND...: runs COMMAND and counts it in $passed or $failed ("ok   NAME" or
# "FAIL NAME").
check() {
    local name=$1; shift
    if "$@"; then passed=$((passed+1)); echo "ok   $name"; else failed=$((failed+1)); echo "FAIL $name"; fi
}

# summary: prints "N passed, M failed"; true when nothing failed.
summary() {
    echo "$passed passed, $failed failed"
    [ "$failed" = 0 ]
}

# wait_for SECONDS COMMAND...: retries COMMAND (quietly) every 0.2 s for SECONDS, then once
# more; its status.
wait_for() {
    local end=$((SECONDS + $1)); shift
    while [ "$SECONDS" -lt "$end" ]; do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
    "$@" >/dev/null 2>&1
}

# free_port VAR N: sets VAR to the first TCP port from N that nothing listens on and that this
# script has not handed out yet (a variable, not an echo: a $(...) subshell would forget the
# hand-out).
_free_ports_taken=" "
free_port() {
    local p=$2 used
    used=$(ss -Htln | awk '{print $4}' | sed 's/.*://' | sort -u)
    while grep -qx "$p" <<<"$used" || [[ $_free_ports_taken == *" $p "* ]]; do p=$((p + 1)); done
    _free_ports_taken+="$p "
    printf -v "$1" '%s' "$p"
}

# bridge_conflist FILE NAME BRIDGE SUBNET IPAM_DIR: writes a CNI config for a test node: the
# bridge plugin (gateway, no masquerade) on BRIDGE with host-local addresses from SUBNET, kept in
# IPAM_DIR, as the cluster admin's config the node waits for.
bridge_conflist() {
    cat >"$1" <<JSON
{"cniVersion": "1.0.0", "name": "$2", "plugins": [
  {"type": "bridge", "bridge": "$3", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$4"}]], "dataDir": "$5"}}]}
JSON
}

# reap_node DIR CGROUP [IFACE...]: removes whatever a bosun node that kept its state under DIR
# and its pods under the cgroup CGROUP left behind (nothing, when it worked): the processes of
# its cgroups, its keepers, the mounts below DIR, its cgroups, and the interfaces named.
reap_node() {
    local dir=$1 cg=$2 c; shift 2
    for c in /sys/fs/cgroup/*/"$cg" /sys/fs/cgroup/"$cg"; do
        [ -d "$c" ] && find "$c" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -KILL 2>/dev/null
    done
    pkill -KILL -f "$dir/run/containers" 2>/dev/null
    sleep 0.5
    for _ in 1 2 3; do
        grep " $dir" /proc/self/mountinfo | awk '{print $5}' | sort -r | xargs -r -n1 umount -l 2>/dev/null
    done
    for c in /sys/fs/cgroup/*/"$cg" /sys/fs/cgroup/"$cg"; do
        [ -d "$c" ] && find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null
    done
    for c in "$@"; do ip link del "$c" 2>/dev/null; done
    return 0
}
