#!/usr/bin/env bash
# The CI check of the benchmarks (`make test`): a quick run (a few pods, ~2 minutes) that must work
# end to end and leave nothing behind, and the regression gate (issue 24 item 5) on that same run:
# the standalone start p50 and the per-pod user-space memory, each as a ratio to podman measured
# in the same run, must not be more than 25 % worse than the ratios recorded in
# bench/baseline.json (bench/gate.py; its decision's table test runs first).
#
#   bench/check.sh            the check
#   bench/check.sh --record   the same quick run, then records its ratios as the new baseline
#                             (after a deliberate change; commit bench/baseline.json with it)
set -euo pipefail
cd "$(dirname "$0")"
action=check
[[ ${1:-} == --record ]] && action=record
python3 test_gate.py 2>&1 | tail -1
figures=$(mktemp /tmp/bosun-bench-gate-XXXXXX.json)
trap 'rm -f "$figures"' EXIT
bash run.sh --quick --json "$figures"
python3 gate.py "$action" --baseline baseline.json --measured "$figures"
