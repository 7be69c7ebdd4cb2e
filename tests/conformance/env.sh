# Shared settings of the conformance harness (sourced, not run).
# shellcheck source=../cluster/env.sh
. "$(dirname "${BASH_SOURCE[0]}")/../cluster/env.sh"
# Everything built for one Kubernetes version: e2e.test and ginkgo in bin/, the test images as
# OCI layouts in images/, each set with a .complete stamp written last.
CONF_CACHE=${CONF_CACHE:-$HOME/.cache/bosun/conformance/$K8S_VERSION}
CONF_BIN=$CONF_CACHE/bin
CONF_IMAGES=$CONF_CACHE/images
# The module's sources at that version (the Go module cache), for the images' sources.
K8S_SRC=${K8S_SRC:-$(go env GOMODCACHE)/k8s.io/kubernetes@$K8S_VERSION}
# The local registry the images are pushed to (hack/up.sh starts it) and the registry list that
# points the suite there (KUBE_TEST_REPO_LIST).
CONF_REGISTRY=${CONF_REGISTRY:-127.0.0.1:5000}
