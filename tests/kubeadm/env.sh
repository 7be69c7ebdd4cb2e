# shellcheck shell=bash disable=SC2034  # sourced; the variables are for the scripts that source it
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
# flannel's CNI plugin: built from its released source archive (build.sh; the Go module proxy
# refuses its module); kube-flannel.yml names its image by a later tag of the same release line.
FLANNEL_CNI_VERSION=${FLANNEL_CNI_VERSION:-v1.9.1-flannel1}
FLANNEL_CNI_BIN=$TOOLS_CACHE/flannel-cni-$FLANNEL_CNI_VERSION
KUBE_PROXY_BIN=$TOOLS_CACHE/kube-proxy-$K8S_VERSION
