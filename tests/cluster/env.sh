# Shared settings for the test control plane scripts (sourced, not run).
# The one pinned Kubernetes version (k8s-openapi 0.29 supports 1.36) and where its binaries live.
K8S_VERSION=${K8S_VERSION:-v1.36.5}
K8S_BIN=${K8S_BIN:-$HOME/.cache/bosun/k8s/$K8S_VERSION/bin}
K8S_BINARIES="kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubectl etcd"
