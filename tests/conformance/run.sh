#!/usr/bin/env bash
# `make conformance`: the upstream e2e suite's [NodeConformance] specs against a `make up`
# cluster (the control plane of tests/cluster with bosun joined as its node).
#
# Builds e2e.test, ginkgo (build.sh) and the test images (images.sh) first, without any lock;
# then, holding /tmp/bosun-priv.lock (the cluster uses fixed addresses), runs hack/up.sh, pushes the
# images to its registry, runs the specs with KUBE_TEST_REPO_LIST pointing at it, prints the pass
# count and the failed specs, and runs hack/down.sh (also when something fails).
#
# Settings (environment):
#   CONF_FOCUS   ginkgo --focus  (default '\[NodeConformance\]')
#   CONF_SKIP    ginkgo --skip   (default '\[Serial\]|\[Disruptive\]|\[Flaky\]|\[Slow\]')
#   CONF_PROCS   parallel ginkgo processes (default 5)
#   CONF_OUT     where the JUnit report, the suite's output and bosun's log go
#                (default /var/tmp/bosun-conformance/<UTC time>)
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
[ "$(id -u)" = 0 ] || { echo "$0: needs root (the cluster and bosun do)" >&2; exit 1; }
source hack/env.sh
source tests/conformance/env.sh
if [ -z "${CONF_LOCKED:-}" ]; then
  bash hack/setup.sh
  bash tests/conformance/build.sh
  bash tests/conformance/images.sh
  cargo build -p bosun
  export CONF_OUT=${CONF_OUT:-/var/tmp/bosun-conformance/$(date -u +%Y%m%dT%H%M%SZ)}
  echo "waiting for /tmp/bosun-priv.lock"
  exec env CONF_LOCKED=1 flock /tmp/bosun-priv.lock bash "$0" "$@"
fi
out=${CONF_OUT:-/var/tmp/bosun-conformance/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
focus=${CONF_FOCUS:-'\[NodeConformance\]'}
skip=${CONF_SKIP:-'\[Serial\]|\[Disruptive\]|\[Flaky\]|\[Slow\]'}
procs=${CONF_PROCS:-5}

finish() {
  local rc=$?
  cp /var/log/bosun.log "$out/bosun.log" 2>/dev/null || true
  bash "$root/hack/down.sh" >"$out/down.log" 2>&1 || true
  echo "results in $out"
  exit $rc
}
trap finish EXIT
t0=$(date +%s)
bash hack/up.sh >"$out/up.log" 2>&1 || { tail -20 "$out/up.log" >&2; exit 1; }
export KUBECONFIG=/var/lib/bosun/cluster/admin.kubeconfig
bash tests/conformance/images.sh push

cat >"$out/repo-list.yaml" <<YAML
promoterE2eRegistry: $CONF_REGISTRY/e2e-test-images
buildImageRegistry: $CONF_REGISTRY/build-image
gcEtcdRegistry: $CONF_REGISTRY
gcRegistry: $CONF_REGISTRY
sigStorageRegistry: $CONF_REGISTRY/sig-storage
privateRegistry: $CONF_REGISTRY/k8s-authenticated-test
dockerLibraryRegistry: $CONF_REGISTRY/library
cloudProviderGcpRegistry: $CONF_REGISTRY/cloud-provider-gcp
YAML
export KUBE_TEST_REPO_LIST=$out/repo-list.yaml

t1=$(date +%s)
echo "running [NodeConformance] (focus '$focus', skip '$skip', $procs processes); output in $out/e2e.log"
rc=0
"$CONF_BIN/ginkgo" --procs="$procs" --focus="$focus" --skip="$skip" --timeout=4h \
  --no-color --output-dir="$out" "$CONF_BIN/e2e.test" -- \
  --kubeconfig="$KUBECONFIG" --provider=skeleton --report-dir="$out" \
  >"$out/e2e.log" 2>&1 || rc=$?
t2=$(date +%s)

python3 - "$out" <<'PY'
import glob, sys, xml.etree.ElementTree as ET
out = sys.argv[1]
passed, failed, fails = 0, 0, []
for f in glob.glob(out + "/junit*.xml"):
    for tc in ET.parse(f).getroot().iter("testcase"):
        st = tc.get("status", "")
        if tc.find("skipped") is not None or st == "skipped":
            continue
        name = tc.get("name", "")
        if name.startswith("[SynchronizedBeforeSuite]") or name.startswith("[SynchronizedAfterSuite]") \
           or name.startswith("[ReportAfterSuite]") or name.startswith("[ReportBeforeSuite]"):
            if tc.find("failure") is None and tc.find("error") is None:
                continue
        if tc.find("failure") is not None or tc.find("error") is not None:
            failed += 1; fails.append(name)
        else:
            passed += 1
with open(out + "/failed.txt", "w") as fh:
    fh.write("".join(n + "\n" for n in sorted(fails)))
for n in sorted(fails):
    print("FAILED:", n)
print(f"conformance: {passed} passed, {failed} failed")
PY
echo "cluster up and images pushed in $((t1 - t0))s, suite $((t2 - t1))s (ginkgo exit $rc)"
exit $rc
