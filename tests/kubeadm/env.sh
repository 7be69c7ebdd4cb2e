# Shared settings of the kubeadm test (sourced, not run): the pinned tools and where they live.
# shellcheck source=../cluster/env.sh
. "$(dirname "${BASH_SOURCE[0]}")/../cluster/env.sh"
CRICTL_VERSION=${CRICTL_VERSION:-v1.37.0}
COREDNS_VERSION=${COREDNS_VERSION:-v1.15.0}
FLANNEL_VERSION=${FLANNEL_VERSION:-v0.28.10}
# One folder per tool and version, each filled through a temporary folder and stamped when done.
TOOLS_CACHE=${TOOLS_CACHE:-$HOME/.cache/bosun/tools}
KUBEADM_BIN=$TOOLS_CACHE/kubeadm-$K8S_VERSION
CRICTL_BIN=$TOOLS_CACHE/crictl-$CRICTL_VERSION
COREDNS_BIN=$TOOLS_CACHE/coredns-$COREDNS_VERSION
FLANNEL_BIN=$TOOLS_CACHE/flannel-$FLANNEL_VERSION
