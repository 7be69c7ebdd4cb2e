#!/usr/bin/env python3
"""Cluster pod start (issue 6 item 3): the Kubernetes pod-startup SLI on a bosun node.

Driven by bench/cluster.sh, which starts the control plane and joins bosun as NODE first:

    cluster.py --kubectl K --kubeconfig F --node NODE --bosun-pid PID --run-dir DIR
               --image IMG --replicas N [--cpu-window S] [--out FILE]

It talks to the apiserver through `kubectl proxy --unix-socket` (Python standard library only),
opens a watch on the Deployment's pods before it creates the Deployment, and stamps every watch
event with the observer's own clock (time.time() when the line arrives) — never with the
status times bosun writes. Per pod:

- SLI: from `metadata.creationTimestamp` (apiserver clock, same host; whole seconds, so it
  overstates by 0-1 s) until a watch event shows phase Running with every container
  `state.running` and `started: true`. This is the upstream SLI's definition.
- the same end point from the first watch event that showed the pod (ADDED, observer clock,
  millisecond precision; the apiserver sends it right after the pod is stored).
- Ready: the first event with condition Ready=True; "all Ready" is measured from just before
  the Deployment is POSTed.

Then bosun's RSS and CPU with the N pods, then scale to 0 and wait until the API has no pod of
ours left and bosun's `<run-dir>/pods` is empty. The Deployment is deleted at the end whatever
happened. Prints a markdown fragment (and writes it to --out).
"""

import argparse
import calendar
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

NS = "default"
NAME = "bosun-bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")
# Seconds between the node turning Ready and the idle sample.
IDLE_SETTLE = 10


def log(msg):
    print(f"[cluster {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=None):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if self.timeout is not None:
            s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


class Api:
    def __init__(self, sock):
        self.sock = sock

    def call(self, method, path, body=None, ctype="application/json", ok=(200, 201, 202)):
        c = UnixHTTPConnection(self.sock, timeout=30)
        try:
            data = json.dumps(body).encode() if body is not None else None
            headers = {"Content-Type": ctype} if data is not None else {}
            c.request(method, path, body=data, headers=headers)
            r = c.getresponse()
            text = r.read()
            if r.status not in ok:
                raise RuntimeError(f"{method} {path}: HTTP {r.status}: {text[:300]!r}")
            return json.loads(text) if text else {}
        finally:
            c.close()


def parse_time(s):
    """RFC 3339 (the apiserver writes whole seconds, Z) to a Unix time."""
    s = s.rstrip("Z")
    frac = 0.0
    if "." in s:
        s, f = s.split(".", 1)
        frac = float("0." + f)
    return calendar.timegm(time.strptime(s, "%Y-%m-%dT%H:%M:%S")) + frac


def started(pod):
    st = pod.get("status", {})
    if st.get("phase") != "Running":
        return False
    want = len(pod.get("spec", {}).get("containers", []))
    cs = st.get("containerStatuses") or []
    return len(cs) == want and all("running" in (c.get("state") or {}) and c.get("started") for c in cs)


def ready(pod):
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in pod.get("status", {}).get("conditions") or [])


class Watcher(threading.Thread):
    """Follows the Deployment's pods; records the observer time of each transition per uid."""

    def __init__(self, api, selector, rv):
        super().__init__(daemon=True)
        self.api, self.selector, self.rv = api, selector, rv
        self.pods = {}  # uid -> {name, created, seen, running, ready, deleted, node}
        self.lock = threading.Lock()
        self.stop = False
        self.error = None

    def run(self):
        while not self.stop:
            q = urllib.parse.urlencode({"watch": "1", "labelSelector": self.selector,
                                        "resourceVersion": self.rv, "timeoutSeconds": "3600",
                                        "allowWatchBookmarks": "true"})
            c = UnixHTTPConnection(self.api.sock, timeout=None)
            try:
                c.request("GET", f"/api/v1/namespaces/{NS}/pods?{q}")
                r = c.getresponse()
                if r.status != 200:
                    raise RuntimeError(f"watch: HTTP {r.status}: {r.read()[:300]!r}")
                while not self.stop:
                    line = r.readline()
                    now = time.time()
                    if not line:
                        break
                    self.event(json.loads(line), now)
            except Exception as e:  # noqa: BLE001 - reported by the main thread
                if not self.stop:
                    self.error = e
                    log(f"watch failed: {e}; reconnecting")
                    time.sleep(0.5)
            finally:
                c.close()

    def event(self, ev, now):
        obj = ev.get("object", {})
        if ev.get("type") == "ERROR":
            raise RuntimeError(f"watch error event: {obj}")
        md = obj.get("metadata", {})
        if md.get("resourceVersion"):
            self.rv = md["resourceVersion"]
        if ev.get("type") == "BOOKMARK":
            return
        uid = md["uid"]
        with self.lock:
            p = self.pods.setdefault(uid, {"name": md.get("name"), "seen": now,
                                           "created": parse_time(md["creationTimestamp"]),
                                           "running": None, "ready": None, "deleted": None})
            p["node"] = obj.get("spec", {}).get("nodeName")
            if p["running"] is None and started(obj):
                p["running"] = now
            if p["ready"] is None and ready(obj):
                p["ready"] = now
            if ev.get("type") == "DELETED":
                p["deleted"] = now

    def snapshot(self):
        with self.lock:
            return {u: dict(p) for u, p in self.pods.items()}


def pct(values, p):
    s = sorted(values)
    if not s:
        return float("nan")
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def proc_status_kib(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def cpu_ticks(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except OSError:
        return 0


def cpu_percent(pid, seconds):
    a = cpu_ticks(pid)
    time.sleep(seconds)
    return 100.0 * (cpu_ticks(pid) - a) / CLK_TCK / seconds


def helpers(match, agent_pids):
    """Processes whose command line names MATCH, except the agents: bosun's keepers (its run
    folder), or containerd's shims (its socket). Returns their pids."""
    pids = []
    kinds = {}
    for p in os.listdir("/proc"):
        if not p.isdigit() or int(p) in agent_pids or int(p) == os.getpid():
            continue
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                cmd = f.read()
            if match.encode() in cmd:
                pids.append(int(p))
                k = os.path.basename(cmd.split(b"\0")[0].decode(errors="replace"))
                kinds[k] = kinds.get(k, 0) + 1
        except OSError:
            pass
    log(f"helpers: {kinds}")
    return pids


def smaps_kib(pid):
    """Anonymous + page tables (KiB) of one process, and its RSS."""
    anon = pte = rss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Anonymous:"):
                    anon = int(line.split()[1])
        pte = proc_status_kib(pid, "VmPTE") or 0
        rss = proc_status_kib(pid, "VmRSS") or 0
    except OSError:
        pass
    return anon + pte, rss


def cgroup_pids(cgroup_root):
    """Processes in the pods' cgroups below CGROUP_ROOT (memory hierarchy, v1 or v2)."""
    out = set()
    for base in ("/sys/fs/cgroup/memory", "/sys/fs/cgroup"):
        top = base + cgroup_root
        if not os.path.isdir(top):
            continue
        for d, _, files in os.walk(top):
            if "cgroup.procs" in files:
                try:
                    with open(os.path.join(d, "cgroup.procs")) as f:
                        out.update(int(x) for x in f.read().split())
                except OSError:
                    pass
        break
    return sorted(out)


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def agents_rss(pids):
    vals = [proc_status_kib(p, "VmRSS") for p in pids]
    return None if any(v is None for v in vals) else sum(vals)


def agents_cpu(pids, seconds):
    a = sum(cpu_ticks(p) for p in pids)
    time.sleep(seconds)
    return 100.0 * (sum(cpu_ticks(p) for p in pids) - a) / CLK_TCK / seconds


def deployment(name, image, replicas, node):
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            # Every replica at once (the default 25% surge only matters for updates).
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{
                        "name": "sleep", "image": image, "imagePullPolicy": "Never",
                        "command": ["sleep", "1000000"],
                        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"},
                                      "limits": {"cpu": "100m", "memory": "32Mi"}},
                    }],
                },
            },
        },
    }


def lone_pod(name, image, node):
    """One pod with the Deployment's pod template, bound to `node` by nodeName (no scheduler)."""
    tmpl = deployment(name, image, 1, node)["spec"]["template"]
    spec = dict(tmpl["spec"], nodeName=node)
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, "labels": {"app": f"{NAME}-one"}},
            "spec": spec}


def wait(cond, timeout, what, step=0.2):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return True
        time.sleep(step)
    log(f"timed out after {timeout:.0f} s waiting for {what}")
    return False


def node_has_no_pod(args, api, selector):
    """No pod with `selector` in the API, and none on the node (bosun: its run folder; the
    peer: no process left in the pods' cgroups)."""
    left = api.call("GET", f"/api/v1/namespaces/{NS}/pods?labelSelector={urllib.parse.quote(selector)}")
    pods_dir = os.path.join(args.run_dir, "pods") if args.run_dir else None
    if pods_dir:
        on_node = os.listdir(pods_dir) if os.path.isdir(pods_dir) else []
    else:
        on_node = cgroup_pids(args.cgroup_root)
    return not left.get("items") and not on_node


def lone_starts(args, api, n):
    """n pods created one at a time on the idle node (each deleted, and gone from the node,
    before the next): from its first watch event to Running, per pod, in seconds."""
    selector = f"app={NAME}-one"
    out = []
    for i in range(n):
        lst = api.call("GET", f"/api/v1/namespaces/{NS}/pods?labelSelector={urllib.parse.quote(selector)}")
        w = Watcher(api, selector, lst["metadata"]["resourceVersion"])
        w.start()
        time.sleep(0.5)
        name = f"{NAME}-one-{i}"
        api.call("POST", f"/api/v1/namespaces/{NS}/pods", lone_pod(name, args.image, args.node))
        running = lambda: any(p["running"] for p in w.snapshot().values())  # noqa: E731
        if wait(running, 60, f"pod {name} Running"):
            out += [p["running"] - p["seen"] for p in w.snapshot().values() if p["running"]]
        w.stop = True
        api.call("DELETE", f"/api/v1/namespaces/{NS}/pods/{name}")
        wait(lambda: node_has_no_pod(args, api, selector), args.timeout, f"pod {name} gone", step=0.5)
    return out


def run(args, api, tmp):
    res = {"replicas": args.replicas, "load_start": os.getloadavg()[0]}
    # Idle figures: the node is registered and Ready, no pod yet, and its start-up settled (the
    # same wait for every node agent; bosun pages its start-up code out 5 s after its first sync).
    time.sleep(IDLE_SETTLE)
    res["idle_rss"] = agents_rss(args.agent_pid)
    res["idle_rss_each"] = [proc_status_kib(p, "VmRSS") for p in args.agent_pid]
    res["idle_cpu"] = agents_cpu(args.agent_pid, args.cpu_window)
    res["idle_helpers"] = len(helpers(args.helpers_match, args.agent_pid))
    anon0 = sum(smaps_kib(p)[0] for p in args.agent_pid)

    res["lone"] = lone_starts(args, api, 3 if args.replicas >= 10 else 1)
    log(f"lone pods: {', '.join(f'{v * 1000:.0f} ms' for v in res['lone'])}")

    selector = f"app={NAME}"
    lst = api.call("GET", f"/api/v1/namespaces/{NS}/pods?labelSelector={urllib.parse.quote(selector)}")
    if lst.get("items"):
        raise RuntimeError(f"pods labelled {selector} exist already")
    w = Watcher(api, selector, lst["metadata"]["resourceVersion"])
    w.start()
    time.sleep(0.5)

    log(f"creating Deployment {NAME} with {args.replicas} replicas on {args.node}")
    t0 = time.time()
    api.call("POST", f"/apis/apps/v1/namespaces/{NS}/deployments",
             deployment(NAME, args.image, args.replicas, args.node))
    res["created_at"] = t0

    def all_ready():
        s = w.snapshot()
        return len(s) >= args.replicas and sum(1 for p in s.values() if p["ready"]) >= args.replicas
    ok = wait(all_ready, args.timeout, f"{args.replicas} pods Ready")
    snap = w.snapshot()
    pods = [p for p in snap.values() if p["deleted"] is None]
    res["timed_out"] = not ok
    res["sli"] = [p["running"] - p["created"] for p in pods if p["running"]]
    res["from_seen"] = [p["running"] - p["seen"] for p in pods if p["running"]]
    res["first_seen"] = [p["seen"] - t0 for p in pods]
    res["running"] = sum(1 for p in pods if p["running"])
    res["ready"] = sum(1 for p in pods if p["ready"])
    res["all_running"] = max((p["running"] for p in pods if p["running"]), default=t0) - t0
    res["all_ready"] = max((p["ready"] for p in pods if p["ready"]), default=t0) - t0 if ok else None
    res["other_node"] = sum(1 for p in pods if p.get("node") not in (None, args.node))
    log(f"{res['running']} running, {res['ready']} ready after {time.time() - t0:.1f} s")

    time.sleep(2)
    subprocess.run(["sync"], check=False)
    res["rss"] = agents_rss(args.agent_pid)
    res["rss_each"] = [proc_status_kib(p, "VmRSS") for p in args.agent_pid]
    res["agent_growth"] = sum(smaps_kib(p)[0] for p in args.agent_pid) - anon0
    hp = helpers(args.helpers_match, args.agent_pid)
    res["helpers"] = len(hp)
    res["helpers_anon"] = sum(smaps_kib(p)[0] for p in hp)
    res["helpers_rss"] = sum(smaps_kib(p)[1] for p in hp)
    res["cpu"] = agents_cpu(args.agent_pid, args.cpu_window)
    res["stack_cpu"] = agents_cpu(args.agent_pid + hp, args.cpu_window)
    # The pods' own processes: pause (the peer's sandboxes; bosun has none) and the containers.
    sandbox = [p for p in cgroup_pids(args.cgroup_root) if comm(p) == "pause"] if args.cgroup_root else []
    res["sandboxes"] = len(sandbox)
    res["sandboxes_anon"] = sum(smaps_kib(p)[0] for p in sandbox)

    log("scaling to 0")
    t1 = time.time()
    api.call("PATCH", f"/apis/apps/v1/namespaces/{NS}/deployments/{NAME}",
             {"spec": {"replicas": 0}}, ctype="application/merge-patch+json")
    res["removed"] = wait(lambda: node_has_no_pod(args, api, selector), args.timeout,
                          "the node to have no pod left", step=0.5)
    res["remove_time"] = time.time() - t1
    res["load_end"] = os.getloadavg()[0]
    w.stop = True
    return res


def fmt(v, unit=""):
    if v is None or (isinstance(v, float) and v != v):
        return "n/a"
    if isinstance(v, float):
        return f"{v:.2f}{unit}" if abs(v) < 10 else f"{v:.1f}{unit}" if abs(v) < 100 else f"{v:.0f}{unit}"
    return f"{v}{unit}"


def rows(r):
    """(title, number or None, shown text or None, goal) per row; numbers give the ratios."""
    n = r["replicas"]
    ms = lambda v: v * 1000.0  # noqa: E731
    mib = lambda v: v / 1024.0 if v is not None else None  # noqa: E731
    per_pod = lambda v: v / n if n and v is not None else None  # noqa: E731
    return [
        (f"pods Running (all containers started) / Ready, of {n}", None, f"{r['running']} / {r['ready']}", ""),
        ("one pod alone on the idle node: first watch event to Running, median (ms)",
         ms(pct(r["lone"], 50)) if r.get("lone") else None, None if r.get("lone") else "n/a", "well under 1 s"),
        ("pod-startup SLI p50: creationTimestamp to Running seen by a watch (ms)", ms(pct(r["sli"], 50)), None, "well under 1 s"),
        ("pod-startup SLI p99 (ms)", ms(pct(r["sli"], 99)), None, ""),
        ("  same end, from the pod's first watch event (ms precision), p50 (ms)", ms(pct(r["from_seen"], 50)), None, ""),
        ("  same, p99 (ms)", ms(pct(r["from_seen"], 99)), None, ""),
        (f"Deployment created to all {n} Running, seen by the watch (s)", r["all_running"], None, ""),
        (f"Deployment created to all {n} Ready (s)", r["all_ready"], None if r["all_ready"] is not None else "not reached", ""),
        ("Deployment created to the last pod's first watch event (s)", max(r["first_seen"], default=float("nan")), None, ""),
        ("node agent RSS, node Ready, no pods (MiB)", mib(r["idle_rss"]), None, "< 15 MiB"),
        ("node agent CPU, node Ready, no pods (% of a core)", r["idle_cpu"], None, ""),
        (f"node agent RSS with {n} cluster pods (MiB)", mib(r["rss"]), None, ""),
        ("  per process (MiB; the peer: kubelet + containerd)", None,
         " + ".join(fmt(mib(v)) for v in r.get("rss_each") or []) or "n/a", ""),
        (f"node agent CPU with {n} cluster pods (% of a core)", r["cpu"], None, ""),
        (f"stack CPU with {n} pods: agent + helpers (% of a core)", r.get("stack_cpu"), None, ""),
        (f"helper processes for {n} pods (bosun: keepers; peer: shims)", r["helpers"], None, ""),
        ("per pod, user space the node adds: helpers + sandbox + agent growth, anon + PTE (KiB)",
         (r["helpers_anon"] + r["sandboxes_anon"] + r["agent_growth"]) / n if r.get("helpers_anon") is not None else None, None, "< 1024 KiB"),
        ("  of which helpers' anonymous + page tables (KiB)", per_pod(r.get("helpers_anon")), None, ""),
        ("  helpers' RSS incl. shared pages, per pod (KiB)", per_pod(r.get("helpers_rss")), None, ""),
        ("  of which node agent growth since idle, anon + page tables (KiB)", r["agent_growth"] / n if r.get("agent_growth") is not None else None, None, ""),
        ("  of which the sandbox process (pause), anon + page tables (KiB)", r["sandboxes_anon"] / r["sandboxes"] if r.get("sandboxes") else 0.0, None, ""),
        ("scale to 0 until the API and the node have no pod left (s)", r["remove_time"] if r["removed"] else None, None if r["removed"] else "not reached", ""),
        ("machine load average (1 min) when this node's part started / ended", None,
         f"{fmt(r.get('load_start'))} / {fmt(r.get('load_end'))}", "(2 cores, shared)"),
    ]


def cell(num, text):
    return text if text is not None else fmt(num)


def report(r, label):
    body = f"| measure | {label} | goal |\n| --- | ---: | --- |\n"
    body += "".join(f"| {t} | {cell(v, x)} | {g} |\n" for t, v, x, g in rows(r))
    return body


def compare(a, b, la, lb):
    """Both nodes side by side, with la/lb ratios."""
    body = f"| measure | {la} | {lb} | {la}/peer | goal |\n| --- | ---: | ---: | ---: | --- |\n"
    for (t, va, xa, g), (_, vb, xb, _) in zip(rows(a), rows(b)):
        ok = isinstance(va, (int, float)) and isinstance(vb, (int, float)) and vb and va == va and vb == vb
        ratio = fmt(va / vb) if ok and xa is None and xb is None else "n/a"
        body += f"| {t} | {cell(va, xa)} | {cell(vb, xb)} | {ratio} | {g} |\n"
    return body


def main_compare(argv):
    ap = argparse.ArgumentParser(prog="cluster.py compare")
    ap.add_argument("--bosun", required=True, help="JSON written by cluster.py --json for bosun")
    ap.add_argument("--peer", help="the same for kubelet+containerd (missing: bosun only)")
    ap.add_argument("--peer-note", default="", help="why the peer column is missing")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    with open(args.bosun) as f:
        a = json.load(f)
    b = None
    if args.peer and os.path.exists(args.peer):
        with open(args.peer) as f:
            b = json.load(f)
    if b is not None:
        text = compare(a, b, "bosun", "kubelet+containerd")
    else:
        text = report(a, "bosun")
        if args.peer_note:
            text += f"\nNo peer column: {args.peer_note}\n"
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "compare":
        return main_compare(sys.argv[2:])
    # SIGTERM (the driver's cleanup, a group kill) runs the finally below: the Deployment is
    # deleted, kubectl proxy stopped, its socket folder removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser()
    for a in ("--kubectl", "--kubeconfig", "--node", "--image"):
        ap.add_argument(a, required=True)
    ap.add_argument("--agent-pid", type=int, action="append", default=[],
                    help="the node agent's processes (bosun; or the kubelet and containerd)")
    ap.add_argument("--bosun-pid", type=int, help="same as --agent-pid")
    ap.add_argument("--run-dir", help="bosun's run folder (keepers name it; <run-dir>/pods)")
    ap.add_argument("--helpers-match", help="string in the helpers' command lines (default: --run-dir)")
    ap.add_argument("--cgroup-root", help="the pods' cgroup root (pause processes; the peer's 'no pod left')")
    ap.add_argument("--label", default="bosun")
    ap.add_argument("--replicas", type=int, default=100)
    ap.add_argument("--cpu-window", type=float, default=10.0)
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--out")
    ap.add_argument("--json", help="also write the raw results there (for `cluster.py compare`)")
    args = ap.parse_args()
    if args.bosun_pid:
        args.agent_pid.append(args.bosun_pid)
    args.helpers_match = args.helpers_match or args.run_dir
    if not args.agent_pid or not args.helpers_match or not (args.run_dir or args.cgroup_root):
        ap.error("--agent-pid (or --bosun-pid), --run-dir or --helpers-match, and --run-dir or --cgroup-root are required")
    tmp = tempfile.mkdtemp(prefix="bosun-bench-proxy-")
    sock = os.path.join(tmp, "api.sock")
    proxy = subprocess.Popen([args.kubectl, "--kubeconfig", args.kubeconfig, "proxy", f"--unix-socket={sock}"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    api = Api(sock)
    res = None
    try:
        if not wait(lambda: os.path.exists(sock), 30, "kubectl proxy"):
            raise RuntimeError("kubectl proxy did not start")
        res = run(args, api, tmp)
    finally:
        try:
            api.call("DELETE", f"/apis/apps/v1/namespaces/{NS}/deployments/{NAME}", ok=(200, 202, 404))
        except Exception as e:  # noqa: BLE001
            log(f"deleting the Deployment: {e}")
        proxy.terminate()
        try:
            proxy.wait(10)
        except subprocess.TimeoutExpired:
            proxy.kill()
            proxy.wait()
        try:
            os.unlink(sock)
        except OSError:
            pass
        os.rmdir(tmp)
    text = report(res, args.label)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f)
    bad = res["timed_out"] or not res["removed"] or res["other_node"]
    if bad:
        log("FAILED: " + ", ".join(k for k in ("timed_out", "other_node") if res[k]) +
            ("" if res["removed"] else " pods left after scaling to 0"))
        sys.exit(1)


if __name__ == "__main__":
    main()
