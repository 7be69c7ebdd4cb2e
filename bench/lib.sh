# Sourced by bench/cluster.sh and bench/peer.sh: the pieces both node benchmarks share. The
# caller defines log(), $root, $D (control plane folder) and $W (its work folder).

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

# free_port VAR N: sets VAR to the first TCP port from N that nothing listens on and this script
# has not handed out yet (a variable, not an echo: a $(...) subshell would forget the hand-out).
_bench_taken=" "
free_port() {
    local p=$2 used
    used=$(ss -Htln | awk '{print $4}' | sed 's/.*://' | sort -u)
    while grep -qx "$p" <<<"$used" || [[ $_bench_taken == *" $p "* ]]; do p=$((p + 1)); done
    _bench_taken+="$p "
    printf -v "$1" '%s' "$p"
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
