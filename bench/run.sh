#!/usr/bin/env bash
# bosun vs podman (runc), same pods, same image, same run: pod start latency, burst throughput,
# footprint. Prints a table with ratios; a full run also writes it into BENCHMARKS.md.
#
#   bench/run.sh           the full run (~10 minutes): 250 pods one after another, a burst of 100
#   bench/run.sh --quick   a few pods: checks the harness works (CI); writes nothing
#   bench/run.sh --busy    (with the full run) notes in BENCHMARKS.md that the machine was shared
#
# Needs root, python3, podman, runc, skopeo (hack/setup.sh). Everything runs in private folders
# and a private cgroup root; everything is removed at the end, and the run fails if anything leaked.
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/env.sh

quick=
busy=
peer=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --quick) quick=--quick ;;
        --busy) busy=--busy ;;
        --peer-fill|--fill|--burst) peer+=("$1" "$2"); shift ;;
        *) echo "usage: $0 [--quick] [--busy] [--peer-fill N] [--fill N] [--burst N]" >&2; exit 2 ;;
    esac
    shift
done
[[ $(id -u) == 0 ]] || { echo "$0: run as root" >&2; exit 1; }
for tool in python3 podman runc skopeo jq; do
    command -v "$tool" >/dev/null || { echo "$0: $tool is required (hack/setup.sh)" >&2; exit 1; }
done

if [[ -n $quick ]]; then
    # The quick run only checks that the harness works: the debug build the tests use will do.
    cargo build -p bosun
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
    --command "bench/run.sh${quick:+ --quick}${busy:+ --busy}${peer[*]:+ ${peer[*]}}" "${out[@]}"

if [[ -z $quick ]]; then
    # BENCHMARKS.md = its fixed preamble (up to the marker) + the latest table.
    marker='<!-- latest run below: written by bench/run.sh -->'
    { sed "/^$marker\$/q" BENCHMARKS.md; echo; cat BENCHMARKS.table.md; } >BENCHMARKS.md.new
    mv BENCHMARKS.md.new BENCHMARKS.md
    rm -f BENCHMARKS.table.md
    echo "BENCHMARKS.md updated"
fi
