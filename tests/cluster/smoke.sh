#!/usr/bin/env bash
# Smoke check of the test control plane: up, a Deployment (pods stay Pending: no node yet), a
# node client CSR made with the bootstrap kubeconfig gets approved and signed, kube-proxy
# translates the kubernetes Service, then down leaves nothing behind. Prints "N passed, M failed".
# Usage: smoke.sh [DIR]   (needs root; builds the binaries first if needed)
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=env.sh
. "$here/env.sh"
DIR=${1:-$(mktemp -d /tmp/bosun-cluster-smoke.XXXXXX)}
IFACE=${BOSUN_CP_IF:-bosun-cp0}
# shellcheck source=lib.sh
. "$here/lib.sh"
finish() {
  summary
  exit $?
}

check "up.sh $DIR" "$here/up.sh" "$DIR"
[ "$failed" = 0 ] || finish
# shellcheck disable=SC1091
. "$DIR/state/env"
K="$K8S_BIN/kubectl --kubeconfig=$DIR/admin.kubeconfig"
KB="$K8S_BIN/kubectl --kubeconfig=$DIR/bootstrap.kubeconfig"

check "/readyz is ok" test "$($K get --raw /readyz)" = ok
check "/version is $K8S_VERSION" test "$($K get --raw /version | jq -r .gitVersion)" = "$K8S_VERSION"
check "apiserver listens on the advertise address $SERVER" $K --server="$SERVER" get ns default -o name
check "default ServiceAccount exists" $K get sa default -n default -o name
check "kubernetes Service endpoint is the advertise address" \
  test "$($K get endpointslice -n default -l kubernetes.io/service-name=kubernetes -o jsonpath='{.items[0].endpoints[0].addresses[0]}')" = "$ADV_IP"

# A Deployment: the controller manager makes a ReplicaSet and pods, the scheduler finds no node.
$K create deployment smoke --image=registry.k8s.io/pause:3.10 --replicas=2 >/dev/null
check "deployment creates 2 pods" wait_for 60 \
  bash -c "[ \$($K get pods -l app=smoke -o name | wc -l) = 2 ]"
check "pods are Pending and Unschedulable (no node yet)" wait_for 60 bash -c \
  "[ \"\$($K get pods -l app=smoke -o jsonpath='{range .items[*]}{.status.phase}/{.status.conditions[?(@.type==\"PodScheduled\")].reason} {end}')\" = 'Pending/Unschedulable Pending/Unschedulable ' ]"

# TLS bootstrap: a node client CSR with the bootstrap token is approved and signed.
work=$DIR/smoke
mkdir -p "$work"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$work/node.key" \
  -out "$work/node.csr" -subj "/O=system:nodes/CN=system:node:test" 2>/dev/null
cat >"$work/csr.yaml" <<YAML
apiVersion: certificates.k8s.io/v1
kind: CertificateSigningRequest
metadata:
  name: smoke-node-client
spec:
  signerName: kubernetes.io/kube-apiserver-client-kubelet
  usages: [digital signature, client auth]
  request: $(base64 -w0 <"$work/node.csr")
YAML
check "bootstrap token can create a CSR" $KB create -f "$work/csr.yaml"
check "bootstrap token cannot list pods" bash -c "! $KB get pods -A >/dev/null 2>&1"
check "CSR is approved automatically" wait_for 60 bash -c \
  "$K get csr smoke-node-client -o jsonpath='{.status.conditions[?(@.type==\"Approved\")].status}' | grep -qx True"
check "CSR is signed" wait_for 60 bash -c \
  "$K get csr smoke-node-client -o jsonpath='{.status.certificate}' | grep -q ."
$K get csr smoke-node-client -o jsonpath='{.status.certificate}' | base64 -d >"$work/node.crt" 2>/dev/null
check "signed certificate chains to the cluster CA" openssl verify -CAfile "$DIR/pki/ca.crt" "$work/node.crt"
check "signed certificate is for system:node:test in system:nodes" bash -c \
  "openssl x509 -in $work/node.crt -noout -subject | grep -q 'O *= *system:nodes, CN *= *system:node:test'"
check "node certificate authenticates as system:node:test" bash -c \
  "$K8S_BIN/kubectl --server=$SERVER --certificate-authority=$DIR/pki/ca.crt --client-certificate=$work/node.crt \
   --client-key=$work/node.key auth whoami -o jsonpath='{.status.userInfo.username}' | grep -qx system:node:test"

if [ -f "$DIR/state/kube-proxy" ]; then
  IFS=./ read -r a b c d _ <<<"$SERVICE_CIDR"
  svc_ip=$a.$b.$c.$((d + 1))
  check "kube-proxy translates the kubernetes Service from the host" wait_for 60 bash -c \
    "[ \"\$(curl -sS --max-time 3 --cacert $DIR/pki/ca.crt --cert $DIR/pki/admin.crt --key $DIR/pki/admin.key https://$svc_ip/readyz)\" = ok ]"
fi

# down leaves nothing behind.
pids=$(cat "$DIR"/pids/*.pid 2>/dev/null)
check "down.sh $DIR" "$here/down.sh" "$DIR"
left=0
for p in $pids; do
  case "$(readlink "/proc/$p/exe" 2>/dev/null)" in "$K8S_BIN"/*) left=$((left + 1)) ;; esac
done
check "no control plane process left ($(echo $pids | wc -w) were running)" test "$left" = 0
check "interface $IFACE is gone" bash -c "! ip link show $IFACE >/dev/null 2>&1"
check "route $SERVICE_CIDR is gone" test -z "$(ip route show "$SERVICE_CIDR")"
check "no KUBE- iptables chains left" bash -c "! iptables-save | grep -q KUBE- && ! ip6tables-save | grep -q KUBE-"
[ "$failed" = 0 ] && [ -z "${1:-}" ] && rm -rf "$DIR"
finish
