#!/usr/bin/env python3
"""bosun vs podman (runc): pod start latency, burst throughput and footprint, in one run.

Driven by bench/run.sh, which builds bosun (release) and the busybox OCI layout first:

    bench.py --bosun BIN --layout DIR [--quick] [--out BENCHMARKS.md] [--command "..."]

Everything bosun does here happens in private folders (a tempdir), a private cgroup root
(/bosun-bench-<pid>) and node name `bench`; podman pods are named `bench<pid>-...`, the image is
`localhost/bosun-bench-busybox:latest` in both. Everything is removed at the end and the run
fails (exit 1) if anything leaked.
"""

import argparse
import ctypes
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

IMAGE = "localhost/bosun-bench-busybox:latest"
CONTAINERS_CONF = "/etc/containers/containers.conf"
CONTAINERS_CONF_TEXT = """# Written by bosun bench/bench.py for this run only (removed afterwards).
[containers]
default_ulimits = ["nofile=1024:1024","nproc=4096:4096"]
[engine]
runtime = "runc"
"""
POLL = 0.005  # seconds between two looks at bosun's status files
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# The pod network of bosun's pods: a CNI bridge of its own (the standard plugins, as on a node).
# Podman's pods get podman's default bridge network (netavark) in the same run.
BOSUN_BRIDGE = "bosunbench1"
BOSUN_POD_SUBNET = "10.238.0.0/16"
HOST_NET_PODS = 20  # pods of the host-network sequence (no pod network: the runtime alone)
SECCOMP_PODS = 20  # pods of each seccomp profile in the seccomp sequence (host network)
SECCOMP_KINDS = ("Unconfined", "RuntimeDefault")


# The pods' CPU request. bosun admits pods as the kubelet does (the sum of requests within the
# node's allocatable): 250 pods of 5m fit on 2 cores (of 50m, as before 2026-12-07, only 40 did);
# the density run (bench/density.py) uses 1m for 1,000 pods.
CPU_REQUEST = "5m"


def manifest(name, image=IMAGE, host_network=False, seccomp=None, cpu_request=CPU_REQUEST):
    """The one pod every measurement uses: one busybox container sleeping, Burstable QoS, on
    the pod network (or, for the host-network rows, the host's).

    Not Guaranteed: bosun gives Guaranteed containers oom_score_adj -997 like the kubelet, and
    without CAP_SYS_RESOURCE (this VM) the write fails and the container never starts."""
    return f"""apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  hostNetwork: {'true' if host_network else 'false'}{seccomp_context(seccomp)}
  terminationGracePeriodSeconds: 0
  restartPolicy: Always
  containers:
  - name: sleep
    image: {image}
    imagePullPolicy: IfNotPresent
    command: [sleep, "1000000"]
    resources:
      requests: {{cpu: {cpu_request}, memory: 16Mi}}
      limits: {{cpu: 100m, memory: 32Mi}}
"""


def seccomp_context(seccomp):
    """The pod-level seccompProfile of the seccomp rows (nothing for the other rows)."""
    if seccomp is None:
        return ""
    return f"\n  securityContext:\n    seccompProfile: {{type: {seccomp}}}"


def seccomp_order(i):
    """The two profiles, alternating which goes first, so that neither always follows the other."""
    return SECCOMP_KINDS if i % 2 else tuple(reversed(SECCOMP_KINDS))


# ---------------------------------------------------------------- /proc helpers


def read(path, default=""):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return default


def cmdline(pid):
    return read(f"/proc/{pid}/cmdline").replace("\0", " ").strip()


def pids():
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def proc_mem(pid):
    """(Anonymous KiB from smaps_rollup, page tables KiB, RSS KiB) of one process."""
    anon = 0
    for line in read(f"/proc/{pid}/smaps_rollup").splitlines():
        if line.startswith("Anonymous:"):
            anon = int(line.split()[1])
    pte = rss = 0
    for line in read(f"/proc/{pid}/status").splitlines():
        if line.startswith("VmPTE:"):
            pte = int(line.split()[1])
        elif line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    return anon, pte, rss


def proc_cpu_ticks(pid):
    stat = read(f"/proc/{pid}/stat")
    if not stat:
        return 0
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def is_zombie(pid):
    stat = read(f"/proc/{pid}/stat")
    return not stat or stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def cpu_percent(pid_list, seconds):
    """CPU used by these processes over `seconds`, in % of one core."""
    before = sum(proc_cpu_ticks(p) for p in pid_list)
    time.sleep(seconds)
    after = sum(proc_cpu_ticks(p) for p in pid_list)
    return 100.0 * (after - before) / CLK_TCK / seconds


def meminfo():
    out = {}
    for line in read("/proc/meminfo").splitlines():
        k, v = line.split(":", 1)
        out[k] = int(v.split()[0])
    return out


def settle_meminfo():
    subprocess.run(["sync"], check=False)
    time.sleep(0.5)
    return meminfo()


def become_subreaper():
    # Keepers and conmons daemonize; this VM's PID 1 does not reap them.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def reap():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def pct(values, p):
    s = sorted(values)
    if not s:
        return float("nan")
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def cgroup_bases():
    bases = ["/sys/fs/cgroup"]
    for e in os.listdir("/sys/fs/cgroup"):
        p = os.path.join("/sys/fs/cgroup", e)
        if os.path.isdir(p) and not os.path.islink(p):
            bases.append(p)
    return bases


def machine():
    mem = meminfo()["MemTotal"] / 1024 / 1024
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        cg = "v2 (unified)"
    elif os.path.exists("/sys/fs/cgroup/unified"):
        cg = "v1/v2 hybrid (controllers on v1)"
    else:
        cg = "v1"
    cpu = ""
    for line in read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    load = read("/proc/loadavg").split()[:3]
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory": f"{mem:.1f} GiB",
        "kernel": platform.release(),
        "cgroups": cg,
        "load": " ".join(load),
    }


# ---------------------------------------------------------------- bosun


# bosun's maxPods in the bench (the kubelet's default, 110, would refuse the fill's 250 pods).
MAX_PODS = 1100


class Bosun:
    def __init__(self, binary, layout, max_pods=MAX_PODS, cpu_request=CPU_REQUEST):
        self.bin = binary
        self.dir = tempfile.mkdtemp(prefix="bosun-bench-")
        self.cgroup_root = f"/bosun-bench-{os.getpid()}"
        for d in ("manifests", "staging", "root", "run", "data", "pods-logs", "containers-logs", "cni"):
            os.makedirs(self.path(d))
        with open(self.path("cni/10-bench.conflist"), "w") as f:
            json.dump({"cniVersion": "1.0.0", "name": "bench", "plugins": [
                {"type": "bridge", "bridge": BOSUN_BRIDGE, "isGateway": True, "ipMasq": False,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": BOSUN_POD_SUBNET}]],
                          "routes": [{"dst": "0.0.0.0/0"}], "dataDir": self.path("ipam")}},
                {"type": "portmap", "capabilities": {"portMappings": True}}]}, f)
        with open(self.path("config.yaml"), "w") as f:
            f.write("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n"
                    f"maxPods: {max_pods}\n")
        self.cpu_request = cpu_request
        self.proc = None
        self.known = {}  # uid -> pod name
        out = self.cli(["image", "import", layout, IMAGE])
        if out.returncode != 0:
            raise RuntimeError(f"bosun image import: {out.stderr}")

    def path(self, sub):
        return os.path.join(self.dir, sub)

    def common(self):
        return [
            "--root-dir", self.path("root"),
            "--run-dir", self.path("run"),
            "--data-dir", self.path("data"),
            "--pod-logs-dir", self.path("pods-logs"),
            "--container-logs-dir", self.path("containers-logs"),
            "--cgroup-root", self.cgroup_root,
            "--hostname-override", "bench",
            "--cni-conf-dir", self.path("cni"),
            "--config", self.path("config.yaml"),
        ]

    def cli(self, args):
        return subprocess.run([self.bin] + args + self.common(), capture_output=True, text=True)

    def start(self):
        logf = open(self.path("bosun.log"), "a")
        self.proc = subprocess.Popen(
            [self.bin, "standalone", "--manifests", self.path("manifests")] + self.common(),
            stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
        )
        logf.close()

    def log_tail(self, n=30):
        return "\n".join(read(self.path("bosun.log")).splitlines()[-n:])

    def stage(self, name, host_network=False, seccomp=None):
        """Writes the manifest next to the folder; `release` renames it in."""
        f = self.path(f"staging/{name}.yaml")
        with open(f, "w") as fh:
            fh.write(manifest(name, host_network=host_network, seccomp=seccomp,
                              cpu_request=self.cpu_request))
        return f

    def release(self, name):
        os.rename(self.path(f"staging/{name}.yaml"), self.path(f"manifests/{name}.yaml"))

    def _running(self, uid):
        try:
            with open(self.path(f"run/pods/{uid}/status.json"), "rb") as f:
                pod = json.loads(f.read())
        except (OSError, ValueError):
            return None, False
        name = pod.get("metadata", {}).get("name", "")
        cs = pod.get("status", {}).get("containerStatuses") or []
        ok = len(cs) == 1 and all("running" in (c.get("state") or {}) for c in cs)
        return name, ok

    def wait_running(self, names, timeout):
        """Polls status files until every pod in `names` (manifest names) has all containers
        running; returns {name: perf_counter at which it was first seen running}."""
        want = {f"{n}-bench": n for n in names}
        done = {}
        pending_uids = set()
        deadline = time.perf_counter() + timeout
        while len(done) < len(want):
            now = time.perf_counter()
            try:
                uids = os.listdir(self.path("run/pods"))
            except OSError:
                uids = []
            for uid in uids:
                if uid not in self.known:
                    pending_uids.add(uid)
            for uid in list(pending_uids):
                name, ok = self._running(uid)
                if name:
                    self.known[uid] = name
                if name and name not in want:
                    pending_uids.discard(uid)
                    continue
                if ok:
                    done[want[name]] = now
                    pending_uids.discard(uid)
            if now > deadline:
                missing = sorted(set(want.values()) - set(done))
                raise RuntimeError(
                    f"bosun: pods not running after {timeout}s: {missing[:5]}...\n"
                    f"bosun log tail:\n{self.log_tail()}"
                )
            if self.proc.poll() is not None:
                raise RuntimeError(f"bosun exited ({self.proc.returncode}):\n{self.log_tail()}")
            time.sleep(POLL)
        return done

    def remove_all(self, timeout=180):
        for f in os.listdir(self.path("manifests")):
            os.remove(self.path(f"manifests/{f}"))
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if not os.listdir(self.path("run/pods")):
                    self.known.clear()
                    return
            except OSError:
                return
            time.sleep(0.1)
        raise RuntimeError(f"bosun: pods still present after {timeout}s\n{self.log_tail()}")

    def processes(self):
        """Processes bosun started or runs: (helpers incl. agent, container processes)."""
        helpers, containers = [], []
        me = os.getpid()
        for pid in pids():
            if pid == me:
                continue
            cg = read(f"/proc/{pid}/cgroup")
            if self.cgroup_root + "/" in cg:
                containers.append(pid)
            elif self.dir in cmdline(pid):
                helpers.append(pid)
        return helpers, containers

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise RuntimeError("bosun did not exit within 30 s of SIGTERM")
        if self.proc and self.proc.returncode not in (0, None):
            log(f"warning: bosun exited with {self.proc.returncode}")

    def leaks(self):
        """Checks nothing of ours is left; removes it by force if so and returns what leaked."""
        found = []
        helpers, containers = self.processes()
        live = [p for p in helpers + containers if not is_zombie(p)]
        if live:
            found.append(f"bosun processes {live}: " + "; ".join(cmdline(p)[:80] for p in live[:5]))
            for p in live:
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.3)
        reap()
        mounts = [
            l.split(" ")[4]
            for l in read("/proc/self/mountinfo").splitlines()
            if l.split(" ")[4].startswith(self.dir)
        ]
        if mounts:
            found.append(f"mounts {mounts[:5]} ({len(mounts)})")
            for m in reversed(mounts):
                subprocess.run(["umount", "-l", m], check=False)
        cg_left = []
        for base in cgroup_bases():
            root = os.path.join(base, self.cgroup_root.lstrip("/"))
            if not os.path.isdir(root):
                continue
            dirs = [d for d, _, _ in os.walk(root)]
            cg_left += [d for d in dirs if os.path.basename(d).startswith("pod")
                        or "/pod" in d[len(root):]]
            for d in sorted(dirs, key=lambda d: -d.count("/")):
                try:
                    os.rmdir(d)
                except OSError as e:
                    found.append(f"cgroup {d} cannot be removed: {e}")
        if cg_left:
            found.append(f"pod cgroups left: {cg_left[:5]} ({len(cg_left)})")
        ipam = self.path("ipam/bench")
        held = [f for f in (os.listdir(ipam) if os.path.isdir(ipam) else [])
                if f not in ("lock",) and not f.startswith("last_reserved_ip")]
        if held:
            found.append(f"pod IPs still allocated (no CNI DEL): {held[:5]} ({len(held)})")
        # The bridge itself stays after its last pod, as on a node: ours, removed.
        subprocess.run(["ip", "link", "del", BOSUN_BRIDGE], capture_output=True)
        if not mounts:
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            found.append(f"kept {self.dir} because mounts leaked")
        return found


# ---------------------------------------------------------------- podman


class Podman:
    def __init__(self, layout, workdir):
        self.dir = workdir
        self.prefix = f"bench{os.getpid()}"
        self.cpu_request = CPU_REQUEST
        self.wrote_conf = False
        # Before any podman command: podman itself creates it (netavark's lock).
        self.had_networks = os.path.exists("/etc/containers/networks")
        self.had_image = False
        if not os.path.exists(CONTAINERS_CONF):
            os.makedirs(os.path.dirname(CONTAINERS_CONF), exist_ok=True)
            with open(CONTAINERS_CONF, "w") as f:
                f.write(CONTAINERS_CONF_TEXT)
            self.wrote_conf = True
        else:
            log(f"{CONTAINERS_CONF} exists: using it as it is")
        self.had_image = subprocess.run(
            ["podman", "image", "exists", IMAGE], capture_output=True
        ).returncode == 0
        self.had_pause = self.pause_images()
        subprocess.run(
            ["skopeo", "copy", "--quiet", f"oci:{layout}:latest", f"containers-storage:{IMAGE}"],
            check=True, capture_output=True,
        )

    @staticmethod
    def pause_images():
        out = subprocess.run(["podman", "images", "--format", "{{.Repository}}:{{.Tag}}"],
                             capture_output=True, text=True).stdout.split()
        return [i for i in out if "podman-pause" in i]

    def name(self, n):
        return f"{self.prefix}-{n}"

    def write(self, names, file, host_network=False, seccomp=None):
        with open(file, "w") as f:
            f.write("---\n".join(manifest(self.name(n), host_network=host_network, seccomp=seccomp,
                                          cpu_request=self.cpu_request)
                                 for n in names))

    def running(self, names):
        run = {n for c in self.ours() if c.get("State") == "running" for n in c.get("Names") or []}
        return all(f"{self.name(n)}-sleep" in run for n in names)

    def play(self, names, timeout=600, host_network=False, seccomp=None):
        """`podman kube play` of these pods (on podman's default network, or the host's);
        returns (seconds until play returned, seconds until podman showed every container
        running: the same if play's return implied it)."""
        f = os.path.join(self.dir, f"podman-{names[0]}.yaml")
        self.write(names, f, host_network, seccomp)
        t0 = time.perf_counter()
        r = subprocess.run(
            ["podman", "kube", "play", f], capture_output=True, text=True,
            timeout=timeout,
        )
        t1 = time.perf_counter()
        if r.returncode != 0:
            raise RuntimeError(f"podman kube play: {r.stderr.strip()}")
        t2 = t1
        while not self.running(names):
            t2 = time.perf_counter()
            if t2 - t0 > timeout:
                raise RuntimeError(f"podman: pods not running after {timeout}s")
            time.sleep(POLL)
        return t1 - t0, t2 - t0

    def ours(self):
        out = subprocess.run(
            ["podman", "ps", "-a", "--pod", "--no-trunc", "--format", "json"],
            capture_output=True, text=True,
        ).stdout
        return [c for c in json.loads(out or "[]")
                if (c.get("PodName") or "").startswith(self.prefix + "-")]

    def processes(self):
        """(conmons, infra processes, container processes) of our pods."""
        ctrs = self.ours()
        ids = {c["Id"]: c for c in ctrs}
        conmons = []
        for pid in pids():
            if read(f"/proc/{pid}/comm").strip() != "conmon":
                continue
            cl = cmdline(pid)
            if any(i in cl for i in ids):
                conmons.append(pid)
        infra = [c["Pid"] for c in ctrs if c.get("IsInfra") and c.get("Pid")]
        work = [c["Pid"] for c in ctrs if not c.get("IsInfra") and c.get("Pid")]
        return conmons, infra, work

    def pod_names(self):
        out = subprocess.run(
            ["podman", "pod", "ps", "--filter", f"name=^{self.prefix}-", "--format", "{{.Name}}"],
            capture_output=True, text=True,
        ).stdout
        return out.split()

    def remove_all(self):
        names = self.pod_names()
        for i in range(0, len(names), 50):
            subprocess.run(["podman", "pod", "rm", "-f", "-t", "0"] + names[i:i + 50],
                           capture_output=True, text=True)
        reap()

    def cleanup(self):
        found = []
        self.remove_all()
        left = self.pod_names()
        if left:
            found.append(f"podman pods left: {left[:5]} ({len(left)})")
        ctrs = self.ours()
        if ctrs:
            found.append(f"podman containers left: {[c['Names'] for c in ctrs[:5]]}")
            subprocess.run(["podman", "rm", "-f", "-t", "0"] + [c["Id"] for c in ctrs], capture_output=True)
        time.sleep(0.2)
        reap()
        if not self.had_image:
            subprocess.run(["podman", "rmi", "-f", IMAGE], capture_output=True)
        made = [i for i in self.pause_images() if i not in self.had_pause]
        if made:  # the infra image podman built for this run
            subprocess.run(["podman", "rmi", "-f"] + made, capture_output=True)
        if self.wrote_conf:
            os.remove(CONTAINERS_CONF)
        nets = "/etc/containers/networks"
        if not self.had_networks and os.path.isdir(nets) and set(os.listdir(nets)) <= {"netavark.lock"}:
            shutil.rmtree(nets)  # podman made it (netavark's lock) for this run
        return found


# ---------------------------------------------------------------- phases


def footprint_user(pid_list):
    anon = pte = rss = 0
    for p in pid_list:
        a, t, r = proc_mem(p)
        anon, pte, rss = anon + a, pte + t, rss + r
    return anon, pte, rss


def run_bosun(args, p):
    res = {}
    b = Bosun(args.bosun, args.layout)
    try:
        mem0 = settle_meminfo()
        b.start()
        # Let it scan, adopt nothing and settle: bosun pages its start-up code out 5 s after its
        # first sync (the idle figure is the steady state, as for a node that has been up a while).
        time.sleep(10 if not args.quick else 1)
        agent = b.proc.pid
        a, t, rss = proc_mem(agent)
        res["idle_rss"] = rss
        res["idle_anon"] = a + t
        res["idle_cpu"] = cpu_percent([agent], p["cpu_window"])
        log(f"bosun idle: RSS {rss} KiB, anonymous {a} KiB, CPU {res['idle_cpu']:.2f}%")
        mem_idle = settle_meminfo()
        res["agent_start_memavail"] = mem0["MemAvailable"] - mem_idle["MemAvailable"]

        # Warm-up (not measured): the first pod unpacks the image layer.
        b.stage("warmup")
        b.release("warmup")
        b.wait_running(["warmup"], 60)
        b.remove_all()
        mem_idle = settle_meminfo()

        # Fill: one pod after another, each waited for, up to FILL pods kept running.
        lat = []
        for i in range(1, p["fill"] + 1):
            name = f"f{i}"
            b.stage(name)
            t0 = time.perf_counter()
            b.release(name)
            done = b.wait_running([name], 60)
            lat.append(done[name] - t0)
            if i == p["foot"]:
                res["foot"] = measure_bosun_footprint(b, p, mem_idle)
            if i % 25 == 0:
                log(f"bosun: {i} pods running, last start {lat[-1]*1000:.1f} ms")
        res["fill"] = lat
        b.remove_all()

        # Burst: BURST manifests renamed into the folder at once.
        names = [f"b{i}" for i in range(1, p["burst"] + 1)]
        for n in names:
            b.stage(n)
        t0 = time.perf_counter()
        for n in names:
            b.release(n)
        done = b.wait_running(names, 300)
        res["burst"] = max(done.values()) - t0
        res["burst_each"] = sorted(v - t0 for v in done.values())
        log(f"bosun burst of {len(names)}: {res['burst']:.2f} s")
        b.remove_all()

        # Host network: the same pods without a pod network (the runtime's own path).
        lat = []
        for i in range(1, p["hostnet"] + 1):
            name = f"h{i}"
            b.stage(name, host_network=True)
            t0 = time.perf_counter()
            b.release(name)
            done = b.wait_running([name], 60)
            lat.append(done[name] - t0)
        res["hostnet"] = lat
        log(f"bosun host network: p50 {pct(lat, 50)*1000:.0f} ms")
        b.remove_all()

        # Seccomp: the same host-network pods, Unconfined and RuntimeDefault taking turns.
        res["seccomp"] = {k: [] for k in SECCOMP_KINDS}
        for i in range(1, p["seccomp"] + 1):
            for kind in seccomp_order(i):
                name = f"s{kind[0].lower()}{i}"
                b.stage(name, host_network=True, seccomp=kind)
                t0 = time.perf_counter()
                b.release(name)
                done = b.wait_running([name], 60)
                res["seccomp"][kind].append(done[name] - t0)
        log("bosun seccomp: p50 " + ", ".join(
            f"{k} {pct(v, 50)*1000:.1f} ms" for k, v in res["seccomp"].items()))
        b.remove_all()
    finally:
        try:
            b.remove_all(timeout=120)
        except Exception as e:  # noqa: BLE001 - reported as a leak below
            log(f"bosun remove: {e}")
        b.stop()
        keep = os.environ.get("BENCH_KEEP_LOG")
        if keep:  # for a look at where the time goes (bosun's own log timestamps)
            shutil.copy(b.path("bosun.log"), keep)
        res["leaks"] = b.leaks()
        for leak in res["leaks"]:
            log(f"LEAK (bosun): {leak}")
    return res


def measure_bosun_footprint(b, p, mem_idle):
    n = p["foot"]
    agent = b.proc.pid
    time.sleep(1)
    helpers, ctrs = b.processes()
    keepers = [h for h in helpers if h != agent]
    f = {"pods": n, "helpers": len(keepers), "container_procs": len(ctrs)}
    mem = settle_meminfo()
    a, t, rss = proc_mem(agent)
    f["agent_rss"], f["agent_anon"], f["agent_pte"] = rss, a, t
    f["helper_anon"], f["helper_pte"], f["helper_rss"] = footprint_user(keepers)
    f["ctr_anon"], f["ctr_pte"], _ = footprint_user(ctrs)
    f["memavail_delta"] = mem_idle["MemAvailable"] - mem["MemAvailable"]
    f["sunreclaim_delta"] = mem["SUnreclaim"] - mem_idle["SUnreclaim"]
    f["agent_cpu"] = cpu_percent([agent], p["cpu_window"])
    f["stack_cpu"] = cpu_percent([agent] + keepers, p["cpu_window"])
    log(f"bosun with {n} pods: agent RSS {rss} KiB; {len(keepers)} helpers anon "
        f"{f['helper_anon']} KiB + PTE {f['helper_pte']} KiB")
    return f


def run_podman(args, p, workdir):
    res = {}
    pm = Podman(args.layout, workdir)
    try:
        # Warm-up (not measured): podman builds its pause image and opens its storage.
        pm.play(["warmup"])
        pm.remove_all()
        reap()
        mem_idle = settle_meminfo()
        lat, lat_play = [], []
        for i in range(1, p["peer_fill"] + 1):
            play, running = pm.play([f"f{i}"])
            lat.append(running)
            lat_play.append(play)
            if i == p["foot"]:
                res["foot"] = measure_podman_footprint(pm, p, mem_idle)
            if i % 25 == 0:
                log(f"podman: {i} pods running, last start {running*1000:.0f} ms")
            reap()
        res["fill"] = lat
        res["play_implied_running"] = all(abs(a - b) < 1e-9 for a, b in zip(lat, lat_play))
        pm.remove_all()
        names = [f"b{i}" for i in range(1, p["burst"] + 1)]
        play, running = pm.play(names)
        res["burst"] = running
        log(f"podman burst of {len(names)}: {running:.2f} s")
        pm.remove_all()
        lat = []
        for i in range(1, p["hostnet"] + 1):
            _, running = pm.play([f"h{i}"], host_network=True)
            lat.append(running)
            reap()
        res["hostnet"] = lat
        log(f"podman host network: p50 {pct(lat, 50)*1000:.0f} ms")
        pm.remove_all()
        res["seccomp"] = {k: [] for k in SECCOMP_KINDS}
        for i in range(1, p["seccomp"] + 1):
            for kind in seccomp_order(i):
                _, running = pm.play([f"s{kind[0].lower()}{i}"], host_network=True, seccomp=kind)
                res["seccomp"][kind].append(running)
                reap()
        log("podman seccomp: p50 " + ", ".join(
            f"{k} {pct(v, 50)*1000:.1f} ms" for k, v in res["seccomp"].items()))
        pm.remove_all()
    finally:
        res["leaks"] = pm.cleanup()
        for leak in res["leaks"]:
            log(f"LEAK (podman): {leak}")
    return res


def measure_podman_footprint(pm, p, mem_idle):
    n = p["foot"]
    time.sleep(1)
    reap()
    conmons, infra, work = pm.processes()
    f = {"pods": n, "helpers": len(conmons) + len(infra), "container_procs": len(work)}
    mem = settle_meminfo()
    f["helper_anon"], f["helper_pte"], f["helper_rss"] = footprint_user(conmons + infra)
    f["conmon_anon"], f["conmon_pte"], _ = footprint_user(conmons)
    f["ctr_anon"], f["ctr_pte"], _ = footprint_user(work)
    f["memavail_delta"] = mem_idle["MemAvailable"] - mem["MemAvailable"]
    f["sunreclaim_delta"] = mem["SUnreclaim"] - mem_idle["SUnreclaim"]
    f["stack_cpu"] = cpu_percent(conmons + infra, p["cpu_window"])
    log(f"podman with {n} pods: {len(conmons)} conmons + {len(infra)} infra, anon "
        f"{f['helper_anon']} KiB + PTE {f['helper_pte']} KiB")
    return f


# ---------------------------------------------------------------- report


def fmt(v, unit=""):
    if v is None:
        return "n/a"
    if isinstance(v, float):
        if v != v:
            return "n/a"
        return f"{v:.1f}{unit}" if abs(v) < 100 else f"{v:.0f}{unit}"
    return f"{v}{unit}"


def ratio(a, b):
    if a is None or b is None or b == 0 or a != a or b != b:
        return "n/a"
    return f"{a / b:.2f}"


def per_pod_user(bo, pm):
    """The per-pod user-space memory each stack adds (KiB): (bosun, podman). bosun: keepers'
    anonymous + page tables plus the agent's growth since idle; podman: conmons + infra."""
    fb, fp = bo["foot"], pm["foot"]
    growth = max(0, fb["agent_anon"] + fb["agent_pte"] - bo["idle_anon"])
    return ((fb["helper_anon"] + fb["helper_pte"] + growth) / fb["pods"],
            (fp["helper_anon"] + fp["helper_pte"]) / fp["pods"])


def gate_figures(p, bo, pm, quick):
    """What bench/check.sh compares with bench/baseline.json (bench/gate.py): the two ratios
    against the peer measured in the same run, and the figures they come from."""
    seq_b, seq_p = bo["fill"][: p["seq"]], pm["fill"][: p["seq"]]
    mem_b, mem_p = per_pod_user(bo, pm)
    return {
        "mode": "quick" if quick else "full",
        "start_p50_ratio": pct(seq_b, 50) / pct(seq_p, 50),
        "per_pod_memory_ratio": mem_b / mem_p,
        "bosun_start_p50_ms": pct(seq_b, 50) * 1000,
        "podman_start_p50_ms": pct(seq_p, 50) * 1000,
        "bosun_per_pod_kib": mem_b,
        "podman_per_pod_kib": mem_p,
        "pods": len(seq_b),
        "load": read("/proc/loadavg").split()[0],
    }


def report(p, bo, pm, mach, command, quick, busy):
    rows = []
    ms = lambda s: s * 1000.0  # noqa: E731
    seq_b, seq_p = bo["fill"][: p["seq"]], pm["fill"][: p["seq"]]
    rows.append((f"sequential start p50, first {len(seq_b)} pods (ms)", ms(pct(seq_b, 50)), ms(pct(seq_p, 50)), "< 50 ms"))
    rows.append((f"sequential start p99, first {len(seq_b)} pods (ms)", ms(pct(seq_b, 99)), ms(pct(seq_p, 99)), ""))
    rows.append((f"sequential start p50, host network, {len(bo['hostnet'])} pods (ms)", ms(pct(bo["hostnet"], 50)), ms(pct(pm["hostnet"], 50)), "< 50 ms"))
    rows.append((f"sequential start p99, host network, {len(bo['hostnet'])} pods (ms)", ms(pct(bo["hostnet"], 99)), ms(pct(pm["hostnet"], 99)), ""))
    sb, sp = bo["seccomp"], pm["seccomp"]
    for kind in SECCOMP_KINDS:
        rows.append((f"sequential start p50, host network, seccomp {kind}, {len(sb[kind])} pods (ms)",
                     ms(pct(sb[kind], 50)), ms(pct(sp[kind], 50)), ""))
    u, d = SECCOMP_KINDS
    rows.append(("  RuntimeDefault / Unconfined, start p50", pct(sb[d], 50) / pct(sb[u], 50),
                 pct(sp[d], 50) / pct(sp[u], 50), "bosun <= 1.10"))
    rows.append((f"burst of {p['burst']}: time until all running (s)", bo["burst"], pm["burst"], ""))
    rows.append((f"burst of {p['burst']}: pods per second", p["burst"] / bo["burst"], p["burst"] / pm["burst"], ">= 3x peer"))
    for k in p["marks"]:
        if k <= len(bo["fill"]):
            lo = max(0, k - 5)
            have = k <= len(pm["fill"])
            rows.append((f"start of pod #{k} with {k-1} running (ms)", ms(bo["fill"][k - 1]),
                         ms(pm["fill"][k - 1]) if have else float("nan"), ""))
            rows.append((f"  median of pods #{lo+1}-#{k} (ms)", ms(statistics.median(bo["fill"][lo:k])),
                         ms(statistics.median(pm["fill"][lo:k])) if have else float("nan"), ""))
    fb, fp = bo["foot"], pm["foot"]
    n = fb["pods"]
    rows.append(("agent RSS idle, no pods (MiB)", bo["idle_rss"] / 1024, None, "< 15 MiB"))
    rows.append(("agent CPU idle, no pods (% of a core)", bo["idle_cpu"], None, ""))
    rows.append((f"agent RSS with {n} pods (MiB)", fb["agent_rss"] / 1024, None, ""))
    rows.append((f"agent CPU with {n} pods (% of a core)", fb["agent_cpu"], None, ""))
    rows.append((f"stack CPU with {n} pods: agent + helpers (% of a core)", fb["stack_cpu"], fp["stack_cpu"], ""))
    rows.append((f"helper processes for {n} pods", fb["helpers"], fp["helpers"], ""))
    per_b, per_p = per_pod_user(bo, pm)
    rows.append(("per pod, user space the stack adds: anon + page tables (KiB)", per_b, per_p, "< 1024 KiB"))
    rows.append(("  of which helpers' anonymous (KiB)", fb["helper_anon"] / n, fp["helper_anon"] / n, ""))
    rows.append(("  of which helpers' page tables (KiB)", fb["helper_pte"] / n, fp["helper_pte"] / n, ""))
    rows.append(("  of which agent growth, anon + PTE (KiB)", max(0, fb["agent_anon"] + fb["agent_pte"] - bo["idle_anon"]) / n, 0.0, ""))
    rows.append(("per pod, helpers' RSS incl. shared pages (KiB)", fb["helper_rss"] / n, fp["helper_rss"] / n, ""))
    rows.append(("per pod, MemAvailable drop, everything incl. the container (KiB)", fb["memavail_delta"] / n, fp["memavail_delta"] / n, ""))
    rows.append(("per pod, unreclaimable slab growth (KiB)", fb["sunreclaim_delta"] / n, fp["sunreclaim_delta"] / n, ""))
    rows.append(("per pod, the container's own process: anon + PTE (KiB)", (fb["ctr_anon"] + fb["ctr_pte"]) / n, (fp["ctr_anon"] + fp["ctr_pte"]) / n, ""))

    head = "| measure | bosun | podman+runc | bosun/podman | goal |\n| --- | ---: | ---: | ---: | --- |\n"
    body = ""
    for name, b, q, goal in rows:
        body += f"| {name} | {fmt(b)} | {fmt(q) if q is not None else 'no daemon'} | {ratio(b, q)} | {goal} |\n"
    m = mach
    text = f"""## Run of {time.strftime('%Y-%m-%d %H:%M %Z')}{' (--quick: harness check, not figures)' if quick else ''}

Machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory']}, kernel {m['kernel']}, cgroups {m['cgroups']};
load average at the start {m['load_start']}, at the end {m['load']}.{' The machine was shared with other builds and agents during this run: absolute times are noisy, ratios within the run hold better.' if busy else ''}

Command: `{command}`

Pod network: bosun's pods on a CNI bridge of their own (Debian's bridge, host-local and portmap
plugins), podman's on its default bridge network (netavark); the host-network rows run the same
pods with `hostNetwork: true` in both (no pod network: the runtimes alone); the seccomp rows are
those host-network pods with a pod-level `seccompProfile`, `Unconfined` and `RuntimeDefault` taking
turns (bosun: its built-in default profile, compiled once; podman: its own default profile).
Podman: {pm.get('version', '')}, `podman kube play`, runc, cgroupfs; start time measured until {'`podman kube play` returned (it starts the containers before it returns; `podman ps` confirmed every container running right after each play)' if pm.get('play_implied_running') else 'podman ps showed every container running'}.
bosun: release build, default log level, start time measured from the rename of the manifest into the
watched folder until `<run-dir>/pods/<uid>/status.json` shows the container running (polled every 5 ms).
Fill: bosun {p['fill']} pods one after another, podman {p['peer_fill']}{' (fewer to keep the run short: rows beyond it are n/a)' if p['peer_fill'] < p['fill'] else ''}.

{head}{body}"""
    return text


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bosun", required=True)
    ap.add_argument("--layout", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out")
    ap.add_argument("--json", help="writes the figures bench/check.sh gates on (bench/gate.py)")
    ap.add_argument("--command", default="bench/run.sh")
    ap.add_argument("--busy", action="store_true", help="note that the machine was shared")
    ap.add_argument("--fill", type=int, help="pods in the fill phase (default 250)")
    ap.add_argument("--burst", type=int, help="pods in the burst (default 100)")
    ap.add_argument("--peer-fill", type=int, help="podman pods in the fill phase (default: as bosun)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench: must run as root")
    if args.quick:
        p = {"fill": 12, "seq": 12, "foot": 6, "marks": [5], "burst": 5, "cpu_window": 1.0, "hostnet": 3,
             "seccomp": 3}
    else:
        p = {"fill": 250, "seq": 50, "foot": 100, "marks": [10, 100, 250], "burst": 100, "cpu_window": 10.0,
             "hostnet": HOST_NET_PODS, "seccomp": SECCOMP_PODS}
    if args.fill:
        p["fill"] = args.fill
        p["foot"] = min(p["foot"], args.fill)
        p["seq"] = min(p["seq"], args.fill)
    if args.burst:
        p["burst"] = args.burst
    p["peer_fill"] = max(p["foot"], min(args.peer_fill or p["fill"], p["fill"]))
    become_subreaper()
    mach = machine()
    mach["load_start"] = mach["load"]
    started = time.time()
    workdir = tempfile.mkdtemp(prefix="bosun-bench-podman-")
    leaks = []
    try:
        log(f"bosun phase ({'quick' if args.quick else 'full'})")
        bo = run_bosun(args, p)
        leaks += bo["leaks"]
        log("podman phase")
        pm = run_podman(args, p, workdir)
        pm["version"] = subprocess.run(["podman", "--version"], capture_output=True, text=True).stdout.strip() + \
            ", " + subprocess.run(["runc", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
        leaks += pm["leaks"]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    mach.update({k: v for k, v in machine().items() if k == "load"})
    text = report(p, bo, pm, mach, args.command, args.quick, args.busy)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(gate_figures(p, bo, pm, args.quick), f, indent=1)
    log(f"total {time.time() - started:.0f} s")
    if leaks:
        print("LEAKED (cleaned up by force):\n  " + "\n  ".join(leaks), file=sys.stderr)
        sys.exit(1)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
