#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests, then the privileged tier (real containers,
# mounts and cgroups; needs root), one test at a time.
set -euo pipefail
cd "$(dirname "$0")/.."
bash hack/setup.sh
source hack/env.sh
echo "== fmt";    cargo fmt --all -- --check
echo "== clippy"; cargo clippy --workspace --all-targets -- -D warnings
echo "== build";  cargo build --workspace --all-targets
echo "== unit tests"
cargo test --workspace
echo "== fuzz (libFuzzer, 20 s per target: static pod manifests, API requests, SPDY frames)"
bash hack/fuzz.sh 20
if [ "$(id -u)" != 0 ]; then
  echo "== privileged tier skipped: needs root" >&2
  exit 0
fi
echo "== privileged tests"
cargo test --workspace -- --ignored --test-threads=1
echo "== cluster end to end (real control plane from tests/cluster, cached build)"
bash tests/cluster/e2e-node.sh
bash tests/cluster/e2e-api.sh
bash tests/cluster/e2e-csi.sh
echo "== benchmark harness (quick run, no figures checked)"
bash bench/check.sh
echo "== VM tier, short subset (the .deb of the debug build on a pure cgroup v2 systemd guest;"
echo "   tests/vm/run.sh runs the whole tier with the release build and the cluster part)"
VM_SUBSET=ci bash tests/vm/run.sh
