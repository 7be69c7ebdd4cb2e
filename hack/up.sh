#!/usr/bin/env bash
# The README's first command: a local Kubernetes cluster with bosun joined as its node.
#
# Builds bosun and the busybox test image, starts the real control plane of tests/cluster
# (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy, built once from
# the Go modules and cached), joins bosun to it through a TLS bootstrap (as a packaged node
# would), runs the example static pods of examples/ (with their mirror pods) and the Deployment
# of examples/cluster/, and prints how to use kubectl. bosun keeps running in the background
# (log: /var/log/bosun.log); `make down` removes the pods and stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
bash hack/setup.sh
source hack/env.sh
source tests/cluster/env.sh
# The debug build is the one the tests use (shared, quick to rebuild); packaging/build.sh makes
# the release binary.
cargo build -p bosun
# The agent and, next to it, the small keeper it runs for every container (without it the agent
# falls back to running its own, much bigger, binary as each container's keeper).
for b in bosun bosun-keeper; do
  install -m 0755 "$CARGO_TARGET_DIR/debug/$b" "/usr/local/bin/$b"
done

CP=/var/lib/bosun/cluster          # the control plane's folder (certificates, logs, kubeconfigs)
NODE=$(hostname | tr '[:upper:]' '[:lower:]')
if pgrep -f "^bosun --config /etc/bosun/config.yaml" >/dev/null; then
  echo "bosun is already running (make down first)"; exit 1
fi
# The controller-manager allocates each node a pod CIDR from the cluster's (as kubeadm's
# `--pod-network-cidr` makes it do); the node's network config below uses it.
BOSUN_CP_NODE_NAME=$NODE \
  BOSUN_CP_CONTROLLER_MANAGER_FLAGS="--allocate-node-cidrs --cluster-cidr=10.244.0.0/16" \
  bash tests/cluster/up.sh "$CP"
ln -sf "$K8S_BIN/kubectl" /usr/local/bin/kubectl
export KUBECONFIG=$CP/admin.kubeconfig

# A local registry (Debian's docker-registry on 127.0.0.1:5000, plain HTTP as docker and
# containerd allow for localhost) holding the busybox test image built from busybox-static: the
# examples pull from it, so they run on a machine without internet.
bash tests/images/build-busybox.sh "$BOSUN_CACHE/images/busybox-oci" >/dev/null
if ! [ -f /run/bosun-registry.pid ] || ! kill -0 "$(cat /run/bosun-registry.pid)" 2>/dev/null; then
  mkdir -p /var/lib/bosun/registry
  cat >/var/lib/bosun/registry/config.yml <<'YAML'
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: /var/lib/bosun/registry/data}}
http: {addr: 127.0.0.1:5000}
YAML
  nohup docker-registry serve /var/lib/bosun/registry/config.yml >/var/log/bosun-registry.log 2>&1 &
  echo $! >/run/bosun-registry.pid
  for _ in $(seq 1 50); do (exec 3<>/dev/tcp/127.0.0.1/5000) 2>/dev/null && break; sleep 0.1; done
fi
skopeo copy --quiet --dest-tls-verify=false "oci:$BOSUN_CACHE/images/busybox-oci:latest" \
  docker://127.0.0.1:5000/busybox:1.36

# The pod network: a CNI folder of bosun's own (this machine's /etc/cni/net.d may belong to
# podman), empty until the node has registered: the admin's config goes there below, as for a
# kubelet (bosun writes none of its own in cluster mode).
rm -f /etc/bosun/net.d/*.conflist /etc/bosun/net.d/*.conf
mkdir -p /etc/bosun/net.d /etc/bosun/manifests
cp examples/*.yaml /etc/bosun/manifests/
# A new control plane has a new CA: the node identity of an earlier `make up` is useless.
rm -rf /var/lib/kubelet/kubeconfig /var/lib/kubelet/pki
# The kubelet configuration: the cluster CA authenticates the apiserver's client certificate
# (kubectl logs/exec go through the node's HTTPS API).
cat >/etc/bosun/config.yaml <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  x509: {clientCAFile: $CP/pki/ca.crt}
  webhook: {enabled: true}
  anonymous: {enabled: false}
authorization: {mode: Webhook}
# Only the memory default of evictionHard, as the cluster tests: with the kubelet's disk defaults
# (nodefs 10 %, imagefs 15 % free) a development machine's shared, fuller disk puts the node under
# DiskPressure and every pod of this cluster is evicted or refused.
evictionHard: {memory.available: 100Mi}
YAML
nohup bosun --config /etc/bosun/config.yaml --kubeconfig /var/lib/kubelet/kubeconfig \
  --bootstrap-kubeconfig "$CP/bootstrap.kubeconfig" --cert-dir /var/lib/kubelet/pki \
  --pod-manifest-path /etc/bosun/manifests --cni-conf-dir /etc/bosun/net.d \
  >/var/log/bosun.log 2>&1 &
echo "bosun started (pid $!), log in /var/log/bosun.log"

# The node is NotReady ("cni plugin not initialized") until it has a network config: a bridge
# with host-local IPAM on the pod CIDR the controller-manager gave the Node (what a network
# add-on's DaemonSet writes in a real cluster).
pod_cidr() { kubectl get node "$NODE" -o jsonpath='{.spec.podCIDR}' 2>/dev/null; }
for _ in $(seq 1 120); do [ -n "$(pod_cidr)" ] && break; sleep 1; done
CIDR=$(pod_cidr)
[ -n "$CIDR" ] || { echo "the node got no pod CIDR; see /var/log/bosun.log"; exit 1; }
cat >/etc/bosun/net.d/10-bridge.conflist <<JSON
{"cniVersion": "1.0.0", "name": "bosun", "plugins": [
  {"type": "bridge", "bridge": "bosun0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "$CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}]}
JSON
echo "pod network: bridge bosun0 on $CIDR (/etc/bosun/net.d/10-bridge.conflist)"

ready() { [ "$(kubectl get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]; }
for _ in $(seq 1 120); do ready && break; sleep 1; done
ready || { echo "the node did not turn Ready; see /var/log/bosun.log"; exit 1; }
kubectl apply -f examples/cluster/ >/dev/null
kubectl rollout status deployment/hello --timeout=120s
echo
kubectl get nodes -o wide
echo
kubectl get pods -A -o wide
cat <<MSG

A local cluster with bosun as its node "$NODE". Try:
  export KUBECONFIG=$CP/admin.kubeconfig
  kubectl get pods -A -o wide                 # the Deployment's pods and the mirror pods of
                                              # the static pods in /etc/bosun/manifests
  kubectl scale deployment hello --replicas=5
  kubectl get events --sort-by=.lastTimestamp
  bosun pods                                  # what bosun itself runs
  kubectl logs deploy/hello                   # through bosun's HTTPS API, as with a kubelet
  kubectl exec -it deploy/hello -- sh
  make down                                   # remove the pods, stop bosun and the cluster
MSG
