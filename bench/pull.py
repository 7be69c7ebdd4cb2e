#!/usr/bin/env python3
"""Cold pull + unpack of a multi-layer image of about 100 MB from a local registry: bosun next to
`skopeo copy` + `umoci unpack` and `podman pull`, the same image from the same registry, in the
same run (issue 3's benchmark).

Each round starts every tool with an empty store of its own (cold: nothing of the image is
local) and times the whole command until it exits: download, digest checks, decompression and
unpacking to files on disk. The rounds alternate the tools so drift hits all of them alike; the
table has the median of the rounds.

  bench/pull.py --bosun BIN --base BUSYBOX_OCI_LAYOUT [--rounds N] [--quick] [--out FILE]
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

MIB = 1 << 20


def log(msg):
    print(f"[pull] {msg}", file=sys.stderr, flush=True)


def put_blob(layout, data):
    digest = hashlib.sha256(data).hexdigest()
    path = os.path.join(layout, "blobs", "sha256", digest)
    with open(path, "wb") as f:
        f.write(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def layer(files, level=6):
    """A gzip tar layer of (name, bytes) files and their folders; returns (blob, diff_id)."""
    dirs = set()
    for name, _ in files:
        parent = os.path.dirname(name)
        while parent:
            dirs.add(parent)
            parent = os.path.dirname(parent)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as t:
        for d in sorted(dirs):
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            info.mtime = 1700000000
            t.addfile(info)
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 1700000000
            t.addfile(info, io.BytesIO(data))
    tar = raw.getvalue()
    return gzip.compress(tar, compresslevel=level, mtime=0), hashlib.sha256(tar).hexdigest()


def text(rng, n):
    words = [b"kubelet", b"bosun", b"pod", b"container", b"layer", b"overlay", b"digest", b"node"]
    out = bytearray()
    while len(out) < n:
        out += rng.choice(words) + b" " + str(rng.randrange(1 << 20)).encode() + b"\n"
    return bytes(out[:n])


def build_image(base, out, scale):
    """An OCI layout at `out`: busybox's layers, then a layer of many small text files and three
    of larger files (half random bytes, half text), about 100 MB unpacked at scale 1."""
    shutil.copytree(base, out)
    with open(os.path.join(base, "index.json")) as f:
        idx = json.load(f)
    mdesc = idx["manifests"][0]
    blob = lambda d: os.path.join(base, "blobs", "sha256", d.split(":", 1)[1])
    with open(blob(mdesc["digest"])) as f:
        manifest = json.load(f)
    with open(blob(manifest["config"]["digest"])) as f:
        config = json.load(f)
    rng = random.Random(42)
    small = int(3000 * scale)
    layers = [[(f"usr/share/bench/small/{i // 100:02d}/f{i}.txt", text(rng, rng.randrange(512, 4096)))
               for i in range(small)]]
    per_big = int(128 * scale) or 1
    for n in range(3):
        files = []
        for i in range(per_big):
            size = 256 * 1024
            data = rng.randbytes(size) if i % 2 == 0 else text(rng, size)
            files.append((f"opt/bench/l{n}/blob{i}.bin", data))
        layers.append(files)
    unpacked = 0
    for files in layers:
        unpacked += sum(len(d) for _, d in files)
        gz, diff_id = layer(files)
        desc = put_blob(out, gz)
        desc["mediaType"] = "application/vnd.oci.image.layer.v1.tar+gzip"
        manifest["layers"].append(desc)
        config["rootfs"]["diff_ids"].append(f"sha256:{diff_id}")
    cdesc = put_blob(out, json.dumps(config).encode())
    manifest["config"] = dict(manifest["config"], **cdesc)
    mblob = put_blob(out, json.dumps(manifest).encode())
    mblob["mediaType"] = "application/vnd.oci.image.manifest.v1+json"
    mblob["annotations"] = {"org.opencontainers.image.ref.name": "latest"}
    with open(os.path.join(out, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [mblob]}, f)
    compressed = sum(d["size"] for d in manifest["layers"])
    what = f"busybox, {small} small text files, {3 * per_big} files of 256 KiB half random, half text"
    return len(manifest["layers"]), unpacked, compressed, what


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Registry:
    def __init__(self, work):
        self.port = free_port()
        self.addr = f"127.0.0.1:{self.port}"
        cfg = os.path.join(work, "registry.yml")
        with open(cfg, "w") as f:
            f.write("version: 0.1\nlog: {level: warn}\n"
                    f"storage: {{filesystem: {{rootdirectory: {work}/registry}}}}\n"
                    f"http: {{addr: {self.addr}}}\n")
        self.proc = subprocess.Popen(["docker-registry", "serve", cfg],
                                     stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "registry.log"), "w"))
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("docker-registry did not start")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def run(cmd, **kw):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: exit {r.returncode}: {r.stderr.strip()[-2000:]}")
    return r


def timed(cmds):
    t0 = time.monotonic()
    for c in cmds:
        run(c)
    return time.monotonic() - t0


def du(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_blocks * 512
            except OSError:
                pass
    return total


def runroot(d):
    # podman refuses a runroot path longer than 50 characters.
    return "/run/bosun-bench-pull-" + hashlib.sha256(d.encode()).hexdigest()[:8]


def podman(d):
    return ["podman", "--root", f"{d}/storage", "--runroot", runroot(d), "--storage-driver", "overlay"]


def mounts_under(path):
    with open("/proc/self/mountinfo") as f:
        return [l.split()[4] for l in f if l.split()[4].startswith(path)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bosun", required=True)
    ap.add_argument("--base", required=True, help="busybox OCI layout (tests/images/build-busybox.sh)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out")
    ap.add_argument("--command", default="bench/pull.py")
    args = ap.parse_args()
    scale = 0.1 if args.quick else 1.0
    rounds = 1 if args.quick else args.rounds

    work = tempfile.mkdtemp(prefix="bosun-bench-pull-", dir="/var/tmp")
    reg = None
    try:
        layout = os.path.join(work, "image")
        nlayers, unpacked, compressed, what = build_image(args.base, layout, scale)
        log(f"image: {nlayers} layers, {unpacked / MIB:.0f} MiB of files, {compressed / MIB:.0f} MiB compressed")
        reg = Registry(work)
        ref = f"{reg.addr}/pullbench:v1"
        run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{layout}:latest", f"docker://{ref}"])

        peers = {
            "bosun": lambda d: [[args.bosun, "pull", "--data-dir", f"{d}/data", "--root-dir", f"{d}/root",
                                 "--run-dir", f"{d}/run", ref]],
            "skopeo+umoci": lambda d: [
                ["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{ref}", f"oci:{d}/layout:v1"],
                ["umoci", "unpack", "--image", f"{d}/layout:v1", f"{d}/bundle"]],
            "podman": lambda d: [podman(d) + ["pull", "--quiet", "--tls-verify=false", ref]],
        }
        times = {k: [] for k in peers}
        disk = {}
        for r in range(rounds):
            order = list(peers) if r % 2 == 0 else list(reversed(peers))
            for name in order:
                d = os.path.join(work, f"{name}-{r}")
                os.makedirs(d)
                subprocess.run(["sync"])
                t = timed(peers[name](d))
                times[name].append(t)
                disk[name] = du(d)
                log(f"round {r + 1}/{rounds} {name}: {t:.2f} s")
                if name == "podman":
                    subprocess.run(podman(d) + ["rmi", "-a", "-f"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    shutil.rmtree(runroot(d), ignore_errors=True)
                for m in reversed(mounts_under(d)):
                    subprocess.run(["umount", "-l", m])
                shutil.rmtree(d, ignore_errors=True)

        med = {k: statistics.median(v) for k, v in times.items()}
        b = med["bosun"]
        lines = [
            f"Cold pull + unpack of one image from a local `docker-registry` (plain HTTP on 127.0.0.1): "
            f"{nlayers} gzip layers, {unpacked / MIB:.0f} MiB of files ({compressed / MIB:.0f} MiB compressed: "
            f"{what}). "
            f"Median of {rounds} round(s), every round from an empty store; command: `{args.command}`.",
            "",
            "| tool | time (s) | MiB/s (compressed) | store on disk (MiB) | bosun / tool |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for name in peers:
            lines.append(f"| {name} | {med[name]:.2f} | {compressed / MIB / med[name]:.1f} | "
                         f"{disk[name] / MIB:.0f} | {b / med[name]:.2f} |")
        table = "\n".join(lines) + "\n"
        print(table)
        if args.out:
            with open(args.out, "w") as f:
                f.write(table)
    finally:
        if reg:
            reg.stop()
        left = mounts_under(work)
        for m in reversed(left):
            subprocess.run(["umount", "-l", m])
        shutil.rmtree(work, ignore_errors=True)
        if left:
            print(f"[pull] mounts were left under {work}: {left}", file=sys.stderr)
            sys.exit(1)


if __name__ == "__main__":
    main()
