# Sourced by bench/cluster.sh and bench/peer.sh: the pieces both node benchmarks share, on top of
# the helpers every cluster script shares (tests/cluster/lib.sh: free_port, wait_for, ...). The
# caller defines log(), $root, $D (control plane folder) and $W (its work folder).

# shellcheck source=../tests/cluster/lib.sh
. "$root/tests/cluster/lib.sh"

# Starts the test control plane (tests/cluster/up.sh) in $D; exits the script if it fails.
start_control_plane() {
    log "control plane in $D (interface $BOSUN_CP_IF, $BOSUN_CP_IP, no kube-proxy)"
    local t_up=$SECONDS
    if ! bash "$root/tests/cluster/up.sh" "$D" >"$W/up.log" 2>&1; then
        cat "$W/up.log" >&2
        log "up.sh failed"
        exit 1
    fi
    log "control plane up in $((SECONDS - t_up)) s"
}

# exit_with_leaks RC LEAK...: lists what had to be removed by force and exits (1 if RC was 0).
exit_with_leaks() {
    local rc=$1
    shift
    if [[ $# -gt 0 ]]; then
        log "LEAKED (cleaned up by force):"
        printf '  %s\n' "$@" >&2
        [[ $rc == 0 ]] && rc=1
    fi
    exit "$rc"
}
