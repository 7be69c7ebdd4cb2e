#!/usr/bin/env bash
# Density (issue 24 item 1): N busybox `sleep` pods on the pod network started one after another
# and kept running, bosun then podman + runc (never at the same time); latency of pod #k against
# the pods running, agent RSS and CPU with all pods idle. Writes bench/density-<stack>.{csv,json}
# and bench/density.png (gnuplot: apt-get install gnuplot-nox), and prints the table.
#
#   bench/density.sh [--pods N] [--peer-pods M] [--peer-seconds S] [--stack bosun|podman|both]
#                    [--bosun BIN]
#
# N defaults to 1000 (bosun runs with maxPods N+10), M to 250 pods and S to 420 s of the peer's
# fill, whichever comes first. --stack runs one side only (each fits one hold of a shared lock);
# the plot and the table use whatever results bench/ holds. --bosun skips the release build.
# Needs root and what bench/run.sh needs. Everything is removed at the end (bench.py's cleanup).
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/env.sh
pods=1000 peer_pods=250 peer_seconds=420 stack=both bosun_bin=
while [[ $# -gt 0 ]]; do
    case $1 in
        --pods) pods=$2; shift ;;
        --peer-pods) peer_pods=$2; shift ;;
        --peer-seconds) peer_seconds=$2; shift ;;
        --stack) stack=$2; shift ;;
        --bosun) bosun_bin=$(realpath "$2"); shift ;;
        *) sed -n '2,13p' "$0" >&2; exit 2 ;;
    esac
    shift
done
[[ $(id -u) == 0 ]] || { echo "$0: run as root" >&2; exit 1; }
command -v gnuplot >/dev/null || { echo "$0: gnuplot is required (apt-get install gnuplot-nox)" >&2; exit 1; }
if [[ -z $bosun_bin && $stack != podman ]]; then
    cargo build --release -p bosun
    bosun_bin="$CARGO_TARGET_DIR/release/bosun"
fi
work=$(mktemp -d /tmp/bosun-bench-density-XXXXXX)
trap 'rm -rf "$work"' EXIT
bash tests/images/build-busybox.sh "$work/busybox-oci" >/dev/null
rc=0
if [[ $stack != podman ]]; then
    python3 bench/density.py run --stack bosun --bosun "$bosun_bin" --layout "$work/busybox-oci" \
        --pods "$pods" --out bench/density-bosun || rc=$?
fi
if [[ $stack != bosun ]]; then
    python3 bench/density.py run --stack podman --layout "$work/busybox-oci" --pods "$peer_pods" \
        --max-seconds "$peer_seconds" --out bench/density-podman || rc=$?
fi
python3 bench/density.py plot --png bench/density.png bench/density-bosun bench/density-podman
python3 bench/density.py report bench/density-bosun bench/density-podman
exit "$rc"
