#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests, then the privileged tier (real containers,
# mounts and cgroups; needs root), one test at a time. Each stage prints how long it took, and the
# run ends with a table of the stages' times (a cold run builds the control plane, the Rust
# workspace and the VM guest: see README.md for what each costs).
set -euo pipefail
cd "$(dirname "$0")/.."
# Other privileged runs on this machine (`make conformance`, a second `make test`, a developer's
# `flock /tmp/bosun-priv.lock cargo test -- --ignored`) use the same fixed addresses, ports and
# paths: one at a time. flock -o keeps the lock in flock itself, not in the daemons tests start.
if [ -z "${BOSUN_PRIV_LOCKED:-}" ]; then
    flock -n /tmp/bosun-priv.lock true || echo "waiting for /tmp/bosun-priv.lock (another privileged run)"
    exec env BOSUN_PRIV_LOCKED=1 flock -o /tmp/bosun-priv.lock bash "$0" "$@"
fi
times=()
t0=$SECONDS
stage_start=$SECONDS
stage_name=""
stage() { # name: ends the running stage (printing its time) and starts the next
    if [ -n "$stage_name" ]; then
        local s=$((SECONDS - stage_start))
        times+=("$(printf '%-34s %4dm%02ds' "$stage_name" $((s / 60)) $((s % 60)))")
        echo "== $stage_name: $((s / 60))m$((s % 60))s"
    fi
    stage_name=$1
    stage_start=$SECONDS
    [ -n "$stage_name" ] && echo "== $stage_name"
    return 0
}
fuzz_build=""
kubeadm_build=""
summary() {
    local rc=$?
    for job in $fuzz_build $kubeadm_build; do
        if kill -0 "$job" 2>/dev/null; then
            kill -- "-$job" 2>/dev/null || true
        fi
    done
    stage ""
    local s=$((SECONDS - t0))
    echo "== stage times"
    printf '%s\n' "${times[@]}"
    printf '%-34s %4dm%02ds%s\n' total $((s / 60)) $((s % 60)) "$([ $rc = 0 ] || echo "  (failed, exit $rc)")"
}
trap summary EXIT
stage "setup (Debian packages)"
bash hack/setup.sh
source hack/env.sh
stage "fmt";    cargo fmt --all -- --check
stage "clippy"; cargo clippy --workspace --all-targets -- -D warnings
stage "build";  cargo build --workspace --all-targets
# The fuzz targets' instrumented build (a second build of the agent and its dependencies, ~10
# CPU-minutes cold) runs in the background, niced, from here on: the tiers below mostly wait on
# containers and clusters. Its stage waits for it and runs each target for 20 s.
fuzz_log=$(mktemp /tmp/bosun-fuzz-build.XXXXXX)
# (its own session, so that a failing run stops the whole build: see summary)
setsid nice -n 10 bash hack/fuzz.sh build >"$fuzz_log" 2>&1 &
fuzz_build=$!
fuzz() {
    stage "fuzz (libFuzzer, 20 s per target; its build overlapped the stages before)"
    if ! wait "$fuzz_build"; then
        cat "$fuzz_log"
        echo "fuzz: the build failed" >&2
        exit 1
    fi
    rm -f "$fuzz_log"
    bash hack/fuzz.sh 20
}
stage "unit tests"
cargo test --workspace
if [ "$(id -u)" != 0 ]; then
  fuzz
  echo "== privileged tier skipped: needs root" >&2
  exit 0
fi
stage "privileged tests"
cargo test --workspace -- --ignored --test-threads=1
# The cluster end to end tests start the real control plane of tests/cluster (built from the Go
# modules and cached by version: the first, cold, run builds it inside e2e-node).
stage "e2e-node (cluster)"; bash tests/cluster/e2e-node.sh
# The kubeadm stage's Go programs and images (kubeadm, kube-proxy, CoreDNS, flannel and its CNI
# plugin, the control plane's images; cached by version, about 8 CPU-minutes cold) build in the
# background, niced, from here on (the control plane's binaries, which e2e-node built, go into
# them), as the fuzz build does; the kubeadm stage waits for them.
kubeadm_log=$(mktemp /tmp/bosun-kubeadm-build.XXXXXX)
setsid nice -n 10 bash tests/kubeadm/images.sh build >"$kubeadm_log" 2>&1 &
kubeadm_build=$!
stage "e2e-api (cluster)";  bash tests/cluster/e2e-api.sh
stage "e2e-csi (cluster)";  bash tests/cluster/e2e-csi.sh
stage "e2e-security (cluster)"; bash tests/cluster/e2e-security.sh
stage "e2e-devices (cluster: the sample device plugin)"; bash tests/cluster/e2e-devices.sh
stage "e2e-dra (cluster: the DRA test driver)"; bash tests/cluster/e2e-dra.sh
stage "e2e-pressure (cluster: allocatable, admission, in-place resize, eviction on a loop filesystem)"
bash tests/cluster/e2e-pressure.sh
stage "kubeadm (init with bosun as the kubelet, kube-proxy, CoreDNS, flannel)"
if ! wait "$kubeadm_build"; then
    cat "$kubeadm_log"
    echo "kubeadm: building the tools and images failed" >&2
    exit 1
fi
rm -f "$kubeadm_log"
bash tests/kubeadm/init.sh
fuzz
stage "bench (quick run + regression gate: ratios to podman vs bench/baseline.json)"
bash bench/check.sh
# The VM tier's short subset: the .deb of the debug build on a pure cgroup v2 systemd guest;
# tests/vm/run.sh runs the whole tier with the release build and the cluster part.
stage "VM tier (CI subset, cgroup v2)"
VM_SUBSET=ci bash tests/vm/run.sh
