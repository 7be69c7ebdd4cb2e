#!/usr/bin/env bash
# bosun vs podman (runc), same pods, same image, same run: pod start latency, burst throughput,
# footprint. Prints a table with ratios; a full run also writes it into BENCHMARKS.md.
#
#   bench/run.sh           the full run (~10 minutes): 250 pods one after another, a burst of 100
#   bench/run.sh --quick   a few pods: checks the harness works (CI); writes nothing
#   bench/run.sh --json F  also writes the figures the regression gate compares (bench/gate.py) to F
#   bench/run.sh --busy    (with the full run) notes in BENCHMARKS.md that the machine was shared
#   bench/run.sh --no-cluster   skips the cluster part (bench/cluster.sh: control plane, bosun as a
#                               node, a 100-replica Deployment; 3 replicas with --quick)
#   bench/run.sh --no-peer      the cluster part without its peer (bench/peer.sh: the same on the
#                               real kubelet + containerd, built by bench/peer-build.sh; a full run
#                               builds them if missing, --quick runs the peer only if already built)
#
# Needs root, python3, podman, runc, skopeo, umoci, docker-registry (hack/setup.sh). Everything runs in private folders
# and a private cgroup root; everything is removed at the end, and the run fails if anything leaked.
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/env.sh

quick=
busy=
cluster=1
peer_node=1
peer=()
json=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --quick) quick=--quick ;;
        --busy) busy=--busy ;;
        --no-cluster) cluster= ;;
        --no-peer) peer_node= ;;
        --peer-fill|--fill|--burst) peer+=("$1" "$2"); shift ;;
        --json) json=(--json "$(realpath "$2")"); shift ;;
        *) echo "usage: $0 [--quick] [--busy] [--no-cluster] [--no-peer] [--peer-fill N] [--fill N] [--burst N] [--json FILE]" >&2; exit 2 ;;
    esac
    shift
done
[[ $(id -u) == 0 ]] || { echo "$0: run as root" >&2; exit 1; }
for tool in python3 podman runc skopeo umoci jq docker-registry; do
    command -v "$tool" >/dev/null || { echo "$0: $tool is required (hack/setup.sh)" >&2; exit 1; }
done

if [[ -n $quick ]]; then
    # The quick run only checks that the harness works: the debug build the tests use will do
    # (the same command as the tests' build: `-p bosun` alone unifies features differently and
    # would compile the workspace's crates again).
    cargo build --workspace --all-targets
    bosun_bin="$CARGO_TARGET_DIR/debug/bosun"
else
    cargo build --release -p bosun
    bosun_bin="$CARGO_TARGET_DIR/release/bosun"
fi

work=$(mktemp -d /tmp/bosun-bench-image-XXXXXX)
trap 'rm -rf "$work"' EXIT
bash tests/images/build-busybox.sh "$work/busybox-oci" >/dev/null

out=()
[[ -n $quick ]] || out=(--out BENCHMARKS.table.md)
python3 bench/bench.py --bosun "$bosun_bin" --layout "$work/busybox-oci" $quick $busy "${peer[@]}" \
    --command "bench/run.sh${quick:+ --quick}${busy:+ --busy}${peer[*]:+ ${peer[*]}}" "${out[@]}" "${json[@]}"

# Issue 3's benchmark: cold pull + unpack of a ~100 MB multi-layer image, bosun next to skopeo +
# umoci and podman, from one local registry.
pull_out=()
[[ -n $quick ]] || pull_out=(--out BENCHMARKS.pull.md)
python3 bench/pull.py --bosun "$bosun_bin" --base "$work/busybox-oci" $quick "${pull_out[@]}" \
    --command "bench/run.sh${quick:+ --quick}"
if [[ -z $quick ]]; then
    { echo; echo "### Image pull (issue 3): cold pull + unpack"; echo; cat BENCHMARKS.pull.md; } >>BENCHMARKS.table.md
    rm -f BENCHMARKS.pull.md
fi

# Item 3: the cluster pod-startup SLI, after the standalone part (never at the same time); item 4:
# the same on the peer node (kubelet + containerd), after bosun's, then both side by side.
cluster_rc=0
peer_note=
if [[ -n $cluster ]]; then
    bash bench/cluster.sh --bosun "$bosun_bin" --layout "$work/busybox-oci" $quick --json "$work/bosun.json" ||
        cluster_rc=$?
    if [[ -z $peer_node ]]; then
        peer_note="skipped (--no-peer)."
    elif [[ -n $quick ]] && ! bash bench/peer-build.sh --check; then
        peer_note="not built (the quick run does not build it; bench/peer-build.sh does)."
    elif ! bash bench/peer-build.sh >"$work/peer-build.log" 2>&1; then
        tail -20 "$work/peer-build.log" >&2
        peer_note="bench/peer-build.sh failed: $(tail -1 "$work/peer-build.log")"
    else
        peer_rc=0
        bash bench/peer.sh --layout "$work/busybox-oci" $quick --json "$work/peer.json" || peer_rc=$?
        if [[ $peer_rc != 0 ]]; then
            peer_note="bench/peer.sh failed (exit $peer_rc)."
            rm -f "$work/peer.json"
            [[ $cluster_rc == 0 ]] && cluster_rc=$peer_rc
        fi
    fi
    [[ -n $peer_note ]] && echo "run.sh: peer node (kubelet + containerd): $peer_note" >&2
    if [[ -s $work/bosun.json ]]; then
        cluster_out=()
        [[ -n $quick ]] || cluster_out=(--out BENCHMARKS.cluster.md)
        python3 bench/cluster.py compare --bosun "$work/bosun.json" --peer "$work/peer.json" \
            --peer-note "$peer_note" "${cluster_out[@]}"
    fi
fi

if [[ -z $quick ]]; then
    if [[ -n $cluster ]]; then
        {
            echo
            echo "### Cluster pod start (items 3 and 4): the pod-startup SLI, bosun vs kubelet + containerd"
            echo
            k8s=$(. tests/cluster/env.sh; echo "$K8S_VERSION")
            echo "The test control plane (tests/cluster/up.sh, Kubernetes $k8s, no kube-proxy) on this"
            echo "machine, one node joined through a bootstrap token with a CNI bridge: first bosun (the same"
            echo "release build), then, on a fresh control plane, the peer: the kubelet $k8s with containerd"
            echo "${CONTAINERD_VERSION:-v2.4.2} and runc $(runc --version | awk 'NR==1{print $3}') (bench/peer.sh: cgroupfs, a locally built pause image). One"
            echo "Deployment of 100 replicas of the same busybox \`sleep\` (\`imagePullPolicy: Never\`, the image imported"
            echo "beforehand; requests 10m/16Mi, limits 100m/32Mi; the default service account token volume"
            echo "mounted). Times are taken by the observer (\`bench/cluster.py\`, a watch through"
            echo "\`kubectl proxy\`), never from status fields the node writes. \`creationTimestamp\` has whole seconds,"
            echo "so the SLI rows overstate by 0-1 s; the rows from the pod's first watch event do not. \"Node"
            echo "agent\" is bosun, or the kubelet + containerd; helpers are bosun's keepers, or the"
            echo "containerd-shim-runc-v2 processes."
            echo
            if [[ $cluster_rc == 0 && -s BENCHMARKS.cluster.md ]]; then
                cat BENCHMARKS.cluster.md
            else
                echo "**The cluster part failed in this run (exit $cluster_rc).${peer_note:+ Peer: $peer_note}**"
                if [[ -s BENCHMARKS.cluster.md ]]; then echo; cat BENCHMARKS.cluster.md; fi
            fi
        } >>BENCHMARKS.table.md
        rm -f BENCHMARKS.cluster.md
    fi
    # BENCHMARKS.md = its fixed preamble (up to the marker) + the latest table.
    marker='<!-- latest run below: written by bench/run.sh -->'
    # (awk, not sed: the marker holds a '/' that ended sed's address and kept every older run.)
    { awk -v m="$marker" '{ print } $0 == m { exit }' BENCHMARKS.md; echo; cat BENCHMARKS.table.md; } >BENCHMARKS.md.new
    mv BENCHMARKS.md.new BENCHMARKS.md
    rm -f BENCHMARKS.table.md
    echo "BENCHMARKS.md updated"
fi
exit "$cluster_rc"
