#!/usr/bin/env python3
"""Density (issue 24 item 1): N busybox `sleep` pods on the pod network, one after another, all
kept running; the start latency of pod #k against the number already running, the agent's RSS as
it grows, its CPU with all pods idle; the same for the peer (podman + runc) up to a bounded count
or until it stops. Driven by bench/density.sh (which builds bosun and the busybox layout):

    density.py run --stack bosun  --bosun BIN --layout DIR --pods N --out PREFIX
    density.py run --stack podman --layout DIR --pods M [--max-seconds S] --out PREFIX
    density.py plot --png FILE PREFIX...       # gnuplot: latency and memory against pods running
    density.py report PREFIX...                # the markdown table for BENCHMARKS.md

`run` writes PREFIX.csv (one row per pod) and PREFIX.json (the summary). Isolation, the pod and
the cleanup are bench.py's (bench/README.md): a private tempdir, cgroup root and CNI bridge for
bosun, `bench<pid>-` pods for podman; everything is removed at the end and the run fails if
anything leaked.
"""

import argparse
import csv
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402
from bench import Bosun, Podman, cpu_percent, footprint_user, log, proc_cpu_ticks, proc_mem, reap  # noqa: E402

# 1,000 pods of 1m CPU fit in the allocatable of 2 cores; bosun's admission counts requests as
# the kubelet does (bench.py's 5m would stop at ~400 pods).
CPU_REQUEST = "1m"
FIELDS = ["stack", "pod", "running_before", "start_ms", "agent_rss_kib", "agent_cpu_s", "stack_user_kib"]


def settle_and_measure(agent, helpers_fn, window):
    """With every pod idle: (agent RSS KiB, agent CPU %, stack CPU %, stack anon+PTE KiB)."""
    time.sleep(10)
    helpers = helpers_fn()
    rss = proc_mem(agent)[2] if agent else None
    agent_cpu = cpu_percent([agent], window) if agent else None
    stack_cpu = cpu_percent(([agent] if agent else []) + helpers, window)
    anon, pte, _ = footprint_user(([agent] if agent else []) + helpers)
    return rss, agent_cpu, stack_cpu, anon + pte


def run_bosun(args):
    rows, summary = [], {"stack": "bosun", "asked": args.pods}
    b = Bosun(args.bosun, args.layout, max_pods=max(110, args.pods + 10), cpu_request=CPU_REQUEST)
    try:
        b.start()
        time.sleep(10)
        agent = b.proc.pid
        summary["idle_rss_kib"] = proc_mem(agent)[2]
        summary["idle_cpu_pct"] = cpu_percent([agent], args.cpu_window)
        b.stage("warmup")
        b.release("warmup")
        b.wait_running(["warmup"], 60)
        b.remove_all()

        def helpers():
            return [h for h in b.processes()[0] if h != agent]

        perf = None
        if args.perf:  # the whole machine, every process: the report is filtered by command name
            perf = subprocess.Popen(["perf", "record", "-a", "-g", "-F", str(args.perf_freq),
                                     "-o", args.perf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1)
        started = time.perf_counter()
        for k in range(1, args.pods + 1):
            name = f"d{k}"
            b.stage(name)
            t0 = time.perf_counter()
            b.release(name)
            try:
                done = b.wait_running([name], args.pod_timeout)
            except RuntimeError as e:
                summary["stopped"] = f"pod #{k} not running after {args.pod_timeout} s: {str(e)[:300]}"
                log(f"bosun: {summary['stopped']}")
                break
            row = {"stack": "bosun", "pod": k, "running_before": k - 1,
                   "start_ms": round((done[name] - t0) * 1000, 2),
                   "agent_rss_kib": proc_mem(agent)[2],
                   "agent_cpu_s": round(proc_cpu_ticks(agent) / bench.CLK_TCK, 2), "stack_user_kib": ""}
            if k % args.sample_every == 0 or k == 1:
                anon, pte, _ = footprint_user([agent] + helpers())
                row["stack_user_kib"] = anon + pte
            rows.append(row)
            if perf and k == args.perf_pods:
                perf.send_signal(signal.SIGINT)
                perf.wait()
                perf = None
                summary["perf_pods"] = k
                summary["perf_s"] = round(time.perf_counter() - started, 2)
            if k % 50 == 0:
                log(f"bosun: {k} pods running, last start {row['start_ms']:.1f} ms, "
                    f"agent RSS {row['agent_rss_kib'] / 1024:.1f} MiB")
        summary["fill_s"] = round(time.perf_counter() - started, 1)
        if perf:
            perf.send_signal(signal.SIGINT)
            perf.wait()
        summary["started"] = len(rows)
        summary["running_at_end"] = count_bosun_running(b)
        rss, acpu, scpu, user = settle_and_measure(agent, helpers, args.cpu_window)
        keepers = helpers()
        if keepers:  # one keeper's memory, for the per-pod figure
            summary["keeper_smaps_rollup"] = bench.read(f"/proc/{keepers[0]}/smaps_rollup")
        summary.update(rss_kib=rss, agent_cpu_pct=acpu, stack_cpu_pct=scpu, stack_user_kib=user,
                       helpers=len(helpers()), agent_fds=len(os.listdir(f"/proc/{agent}/fd")),
                       agent_threads=len(os.listdir(f"/proc/{agent}/task")))
        log(f"bosun with {len(rows)} idle pods: agent RSS {rss / 1024:.1f} MiB, agent CPU {acpu:.2f} %, "
            f"stack CPU {scpu:.2f} %")
        if args.perf_idle:  # where the idle agent's CPU goes
            subprocess.run(["perf", "record", "-g", "-F", str(args.perf_freq), "-p", str(agent),
                            "-o", args.perf_idle, "--", "sleep", "20"], capture_output=True)
        t0 = time.perf_counter()
        b.remove_all(timeout=args.remove_timeout)
        summary["remove_s"] = round(time.perf_counter() - t0, 1)
    finally:
        try:
            b.remove_all(timeout=args.remove_timeout)
        except Exception as e:  # noqa: BLE001 - reported as a leak below
            log(f"bosun remove: {e}")
        b.stop()
        keep = os.environ.get("BENCH_KEEP_LOG")
        if keep:
            shutil.copy(b.path("bosun.log"), keep)
        summary["leaks"] = b.leaks()
    return rows, summary


def count_bosun_running(b):
    n = 0
    for uid in os.listdir(b.path("run/pods")):
        name, ok = b._running(uid)
        n += bool(ok)
    return n


def run_podman(args):
    rows, summary = [], {"stack": "podman", "asked": args.pods}
    workdir = tempfile.mkdtemp(prefix="bosun-bench-density-podman-")
    pm = Podman(args.layout, workdir)
    pm.cpu_request = CPU_REQUEST
    try:
        pm.play(["warmup"])
        pm.remove_all()
        reap()

        def helpers():
            conmons, infra, _ = pm.processes()
            return conmons + infra

        started = time.perf_counter()
        for k in range(1, args.pods + 1):
            if time.perf_counter() - started > args.max_seconds:
                summary["stopped"] = f"bounded: {args.max_seconds} s of fill reached at {k - 1} pods"
                break
            try:
                _, running = pm.play([f"d{k}"], timeout=args.pod_timeout)
            except (RuntimeError, subprocess.TimeoutExpired) as e:
                summary["stopped"] = f"pod #{k} failed: {str(e)[:300]}"
                log(f"podman: {summary['stopped']}")
                break
            reap()
            row = {"stack": "podman", "pod": k, "running_before": k - 1,
                   "start_ms": round(running * 1000, 2), "agent_rss_kib": "", "agent_cpu_s": "",
                   "stack_user_kib": ""}
            if k % args.sample_every == 0 or k == 1:
                anon, pte, _ = footprint_user(helpers())
                row["stack_user_kib"] = anon + pte
            rows.append(row)
            if k % 50 == 0:
                log(f"podman: {k} pods running, last start {row['start_ms']:.0f} ms")
        summary["fill_s"] = round(time.perf_counter() - started, 1)
        summary["started"] = len(rows)
        summary["running_at_end"] = sum(1 for c in pm.ours()
                                        if c.get("State") == "running" and not c.get("IsInfra"))
        _, _, scpu, user = settle_and_measure(None, helpers, args.cpu_window)
        summary.update(stack_cpu_pct=scpu, stack_user_kib=user, helpers=len(helpers()))
        t0 = time.perf_counter()
        pm.remove_all()
        summary["remove_s"] = round(time.perf_counter() - t0, 1)
    finally:
        summary["leaks"] = pm.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
    return rows, summary


def latency_marks(rows):
    """Start of pod #10 and of the last pod, each as the median of the 5 pods up to it (single
    samples are noisy), and the last over the 10th."""
    ms = [r["start_ms"] for r in rows]
    if len(ms) < 10:
        return {}
    m10 = statistics.median(ms[5:10])
    last = statistics.median(ms[-5:])
    return {"start_10_ms": m10, "start_last_ms": last, "last_over_10": last / m10}


def cmd_run(args):
    if os.geteuid() != 0:
        sys.exit("density: must run as root")
    bench.become_subreaper()
    load_start = bench.read("/proc/loadavg").split()[0]
    rows, summary = (run_bosun if args.stack == "bosun" else run_podman)(args)
    summary.update(latency_marks(rows))
    summary["load"] = f"{load_start} / {bench.read('/proc/loadavg').split()[0]}"
    summary["when"] = time.strftime("%Y-%m-%d %H:%M %Z")
    with open(args.out + ".csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
    with open(args.out + ".json", "w") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps(summary, indent=1))
    if summary["leaks"]:
        print("LEAKED (cleaned up by force):\n  " + "\n  ".join(summary["leaks"]), file=sys.stderr)
        return 1
    return 0


def load(prefix):
    with open(prefix + ".json") as f:
        summary = json.load(f)
    with open(prefix + ".csv") as f:
        rows = list(csv.DictReader(f))
    return summary, rows


def cmd_plot(args):
    """Two panels against the pods already running: start latency (log scale: the stacks are an
    order of magnitude apart) and memory (bosun's agent RSS; each stack's user space, anonymous
    + page tables: bosun agent + keepers, podman conmons + infra)."""
    data = {}
    for prefix in args.prefixes:
        if os.path.exists(prefix + ".csv"):
            summary, rows = load(prefix)
            data[summary["stack"]] = rows
    tmp = tempfile.mkdtemp(prefix="bosun-density-plot-")
    try:
        plots_lat, plots_mem = [], []
        for stack, rows in data.items():
            lat = os.path.join(tmp, f"{stack}.lat")
            with open(lat, "w") as f:
                f.writelines(f"{r['running_before']} {r['start_ms']}\n" for r in rows)
            label = "bosun" if stack == "bosun" else "podman + runc"
            plots_lat.append(f"'{lat}' using 1:2 with points pt 7 ps 0.3 title '{label}: start of the next pod'")
            if any(r["agent_rss_kib"] for r in rows):
                rss = os.path.join(tmp, f"{stack}.rss")
                with open(rss, "w") as f:
                    f.writelines(f"{int(r['pod'])} {int(r['agent_rss_kib']) / 1024:.2f}\n"
                                 for r in rows if r["agent_rss_kib"])
                plots_mem.append(f"'{rss}' using 1:2 with lines lw 2 title '{label}: agent RSS'")
            user = os.path.join(tmp, f"{stack}.user")
            with open(user, "w") as f:
                f.writelines(f"{int(r['pod'])} {int(r['stack_user_kib']) / 1024:.2f}\n"
                             for r in rows if r["stack_user_kib"])
            who = "agent + keepers" if stack == "bosun" else "conmons + infra"
            plots_mem.append(f"'{user}' using 1:2 with linespoints pt 5 ps 0.5 "
                             f"title '{label}: user space of {who} (anon + PTE)'")
        script = f"""set terminal pngcairo size 1100,900 font ',10'
set output '{os.path.abspath(args.png)}'
set multiplot layout 2,1 title 'Pods one after another, all kept running (bench/density.sh, {time.strftime('%Y-%m-%d')})'
set grid
set key left top
set xlabel 'pods already running'
set ylabel 'start latency (ms)'
set logscale y
plot {', '.join(plots_lat)}
unset logscale y
set xlabel 'pods running'
set ylabel 'MiB'
plot {', '.join(plots_mem)}
unset multiplot
"""
        subprocess.run(["gnuplot"], input=script, text=True, check=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"density: wrote {args.png}")
    return 0


def cmd_report(args):
    s, ms = {}, {}
    for prefix in args.prefixes:
        if os.path.exists(prefix + ".json"):
            summary, rows = load(prefix)
            s[summary["stack"]] = summary
            ms[summary["stack"]] = [float(r["start_ms"]) for r in rows]
    b, p = s.get("bosun", {}), s.get("podman", {})
    # Both at the same count: the last pod the peer started.
    m = min(len(ms.get("bosun", [])), len(ms.get("podman", [])))
    same = {k: statistics.median(v[m - 5:m]) for k, v in ms.items()} if m >= 5 else {}

    def f(v, scale=1.0, digits=1):
        if v is None or v == "":
            return "n/a"
        return f"{v * scale:.{digits}f}"

    def ratio(x, y):
        return f"{x / y:.2f}" if x not in (None, "") and y not in (None, "", 0) else "n/a"

    rows = [
        ("pods started one after another (asked)", f"{b.get('started')} ({b.get('asked')})",
         f"{p.get('started')} ({p.get('asked')})", "", "1000"),
        ("  all running at the end", b.get("running_at_end"), p.get("running_at_end"), "", ""),
        ("  where it stopped", b.get("stopped", "did not"), p.get("stopped", "did not"), "", ""),
        ("start of pod #10, median of #6-#10 (ms)", f(b.get("start_10_ms")), f(p.get("start_10_ms")),
         ratio(b.get("start_10_ms"), p.get("start_10_ms")), ""),
        (f"start of pod #{m}, median of #{m - 4}-#{m} (ms)", f(same.get("bosun")), f(same.get("podman")),
         ratio(same.get("bosun"), same.get("podman")), ""),
        ("start of the last pod, median of the last 5 (ms)", f(b.get("start_last_ms")),
         f(p.get("start_last_ms")), "", ""),
        ("  last / #10", f(b.get("last_over_10"), digits=2), f(p.get("last_over_10"), digits=2), "", "<= 2"),
        ("time to start them all (s)", f(b.get("fill_s")), f(p.get("fill_s")), "", ""),
        ("agent RSS idle, no pods (MiB)", f(b.get("idle_rss_kib"), 1 / 1024), "no daemon", "", ""),
        ("agent RSS with all pods (MiB)", f(b.get("rss_kib"), 1 / 1024), "no daemon", "", "< 100 MiB"),
        ("agent CPU with all pods idle (% of a core)", f(b.get("agent_cpu_pct"), digits=2), "no daemon",
         "", "< 2 %"),
        ("stack CPU with all pods idle: agent + helpers (% of a core)", f(b.get("stack_cpu_pct"), digits=2),
         f(p.get("stack_cpu_pct"), digits=2), "", ""),
        ("stack user space with all pods: anon + PTE (MiB)", f(b.get("stack_user_kib"), 1 / 1024),
         f(p.get("stack_user_kib"), 1 / 1024), "", ""),
        ("  per pod (KiB)", f(b["stack_user_kib"] / b["started"]) if b.get("started") else "n/a",
         f(p["stack_user_kib"] / p["started"]) if p.get("started") else "n/a", "", ""),
        ("agent's open files / threads with all pods", f"{b.get('agent_fds')} / {b.get('agent_threads')}",
         "no daemon", "", ""),
        ("removing them all (s)", f(b.get("remove_s")), f(p.get("remove_s")), "", ""),
        ("load average (1 min) at start / end", b.get("load"), p.get("load"), "", "(2 cores, shared)"),
    ]
    print("| measure | bosun | podman+runc | bosun/podman | goal |")
    print("| --- | ---: | ---: | ---: | --- |")
    for name, x, y, r, goal in rows:
        print(f"| {name} | {x} | {y} | {r} | {goal} |")
    return 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--stack", choices=("bosun", "podman"), required=True)
    r.add_argument("--bosun")
    r.add_argument("--layout", required=True)
    r.add_argument("--pods", type=int, default=1000)
    r.add_argument("--out", required=True, help="writes OUT.csv and OUT.json")
    r.add_argument("--sample-every", type=int, default=25, help="pods between two looks at every helper")
    r.add_argument("--max-seconds", type=float, default=1e9, help="bounds the fill's time (the peer's)")
    r.add_argument("--pod-timeout", type=float, default=120)
    r.add_argument("--remove-timeout", type=float, default=900)
    r.add_argument("--cpu-window", type=float, default=10.0)
    r.add_argument("--perf", help="bosun: perf record -a -g of the fill into this file (item 3)")
    r.add_argument("--perf-freq", type=int, default=999)
    r.add_argument("--perf-pods", type=int, default=0, help="stop --perf after this many pods (0: all)")
    r.add_argument("--perf-idle", help="bosun: perf record -g of the agent for 20 s with all pods idle")
    p = sub.add_parser("plot")
    p.add_argument("--png", required=True)
    p.add_argument("prefixes", nargs="+")
    rep = sub.add_parser("report")
    rep.add_argument("prefixes", nargs="+")
    args = ap.parse_args()
    if args.cmd == "run" and args.stack == "bosun" and not args.bosun:
        ap.error("--stack bosun needs --bosun BIN")
    return {"run": cmd_run, "plot": cmd_plot, "report": cmd_report}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
