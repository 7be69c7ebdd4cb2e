#!/usr/bin/env python3
"""The benchmark regression gate (issue 24 item 5), run by bench/check.sh (`make test`).

bench.py --json writes the figures of one run; this compares the two ratios against the peer
measured in that same run (bosun / podman: the standalone start p50 and the per-pod user-space
memory) with the ratios recorded in bench/baseline.json for the same mode (quick or full), and
fails if either is more than TOLERANCE worse. Ratios, not absolute times: a loaded machine slows
both stacks alike, so the ratio holds where the milliseconds do not.

    gate.py check  --baseline bench/baseline.json --measured RUN.json
    gate.py record --baseline bench/baseline.json --measured RUN.json --note "..."
"""

import argparse
import json
import math
import sys
import time

TOLERANCE = 0.25  # "more than 25 % worse"
GATED = (
    ("start_p50_ratio", "standalone start p50, bosun / podman"),
    ("per_pod_memory_ratio", "per-pod user-space memory, bosun / podman"),
)


def judge(recorded, measured, tolerance=TOLERANCE):
    """One verdict per gated ratio: (key, recorded, measured, limit, ok). Lower ratios are better
    for bosun; a ratio fails when it is above recorded * (1 + tolerance), or when it is missing
    or not a finite positive number (a run that measured nothing must not pass). A ratio the
    baseline does not record is not gated."""
    out = []
    for key, _ in GATED:
        base = recorded.get(key)
        if base is None:
            continue
        limit = base * (1 + tolerance)
        got = measured.get(key)
        ok = isinstance(got, (int, float)) and math.isfinite(got) and 0 < got <= limit
        out.append((key, base, got, limit, ok))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("action", choices=("check", "record"))
    ap.add_argument("--baseline", required=True)
    ap.add_argument("--measured", required=True)
    ap.add_argument("--note", default="")
    args = ap.parse_args()
    with open(args.measured) as f:
        measured = json.load(f)
    mode = measured.get("mode", "quick")
    try:
        with open(args.baseline) as f:
            baseline = json.load(f)
    except FileNotFoundError:
        baseline = {}
    if args.action == "record":
        entry = {k: round(measured[k], 4) for k, _ in GATED}
        entry["recorded"] = (f"{time.strftime('%Y-%m-%d %H:%M %Z')}, load {measured.get('load')}; "
                             f"bosun {measured['bosun_start_p50_ms']:.1f} ms / "
                             f"{measured['bosun_per_pod_kib']:.0f} KiB, podman "
                             f"{measured['podman_start_p50_ms']:.0f} ms / "
                             f"{measured['podman_per_pod_kib']:.0f} KiB"
                             + (f"; {args.note}" if args.note else ""))
        baseline[mode] = entry
        with open(args.baseline, "w") as f:
            json.dump(baseline, f, indent=1, sort_keys=True)
            f.write("\n")
        print(f"gate: recorded the {mode} run's ratios in {args.baseline}")
        return 0
    if mode not in baseline:
        print(f"gate: {args.baseline} records no {mode} run", file=sys.stderr)
        return 1
    names = dict(GATED)
    failed = 0
    for key, base, got, limit, ok in judge(baseline[mode], measured):
        shown = f"{got:.3f}" if isinstance(got, (int, float)) else str(got)
        print(f"gate: {names[key]}: {shown} (recorded {base:.3f}, limit {limit:.3f}): "
              f"{'ok' if ok else 'WORSE by more than ' + str(int(TOLERANCE * 100)) + ' %'}")
        failed += not ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
