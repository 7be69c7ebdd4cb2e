#!/usr/bin/env bash
# Starts a throwaway Kubernetes control plane on this machine for bosun's end-to-end tests:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kube-proxy, with the TLS,
# RBAC and bootstrap-token setup kubeadm would do. Everything lives in DIR (default
# /tmp/bosun-cluster): pki/, logs/, pids/, data, admin.kubeconfig and bootstrap.kubeconfig.
# Stop it with down.sh DIR. Needs root (an interface, a route, iptables).
#
# Environment overrides (defaults in brackets):
#   BOSUN_CP_IF [bosun-cp0]          port-less bridge carrying the advertise address
#   BOSUN_CP_IP [10.250.0.1]         apiserver advertise address (a /32 on BOSUN_CP_IF)
#   BOSUN_CP_SERVICE_CIDR [10.96.0.0/16]
#   BOSUN_CP_NODE_NAME [$(hostname)] node name kube-proxy uses (bosun's node)
#   BOSUN_CP_KUBE_PROXY [1]          0 to not run kube-proxy
#   BOSUN_CP_TIMEOUT [240]           seconds to wait for readiness
#   BOSUN_CP_EXTRA_SANS []           more subjectAltNames for the apiserver's certificate
#                                    (e.g. IP:10.0.2.100, the address a VM guest reaches it at)
#   BOSUN_CP_APISERVER_FLAGS []      extra kube-apiserver flags, space-separated
#                                    (e.g. --feature-gates=ExtendWebSocketsToKubelet=false)
#   BOSUN_CP_CONTROLLER_MANAGER_FLAGS []  extra kube-controller-manager flags (e.g. --v=5)
set -Eeuo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=env.sh
. "$here/env.sh"

DIR=${1:-${TMPDIR:-/tmp}/bosun-cluster}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
IFACE=${BOSUN_CP_IF:-bosun-cp0}
ADV_IP=${BOSUN_CP_IP:-10.250.0.1}
SERVICE_CIDR=${BOSUN_CP_SERVICE_CIDR:-10.96.0.0/16}
NODE_NAME=${BOSUN_CP_NODE_NAME:-$(hostname | tr '[:upper:]' '[:lower:]')}
RUN_PROXY=${BOSUN_CP_KUBE_PROXY:-1}
TIMEOUT=${BOSUN_CP_TIMEOUT:-240}
EXTRA_SANS=${BOSUN_CP_EXTRA_SANS:+,$BOSUN_CP_EXTRA_SANS}
read -r -a APISERVER_FLAGS <<<"${BOSUN_CP_APISERVER_FLAGS:-}"
read -r -a KCM_FLAGS <<<"${BOSUN_CP_CONTROLLER_MANAGER_FLAGS:-}"
PKI=$DIR/pki
LOGS=$DIR/logs
PIDS=$DIR/pids
KUBECTL=$K8S_BIN/kubectl

log() { echo "up: $*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (an interface, a route, iptables)"
for c in ip openssl ss; do command -v "$c" >/dev/null || die "$c is not installed"; done

# A previous run in this DIR that is still alive: refuse rather than fight over ports.
if [ -d "$PIDS" ]; then
  for f in "$PIDS"/*.pid; do
    [ -e "$f" ] || continue
    if kill -0 "$(cat "$f")" 2>/dev/null; then
      die "$(basename "$f" .pid) from a previous run is still running; run down.sh $DIR first"
    fi
  done
fi
if ip link show "$IFACE" >/dev/null 2>&1; then
  die "interface $IFACE already exists (another control plane?); run down.sh on its DIR first"
fi

"$here/build/build.sh" >&2

if [ "$RUN_PROXY" = 1 ] && ! command -v iptables >/dev/null; then
  log "iptables is missing: installing it with apt-get"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iptables >&2 ||
    die "cannot install iptables (set BOSUN_CP_KUBE_PROXY=0 to run without kube-proxy)"
fi

rm -rf "$PIDS" "$DIR/state" "$DIR/etcd" "$PKI" "$LOGS"
mkdir -p "$PKI" "$LOGS" "$PIDS" "$DIR/state"

# From here on a failure tears down whatever was started.
cleanup_on_error() {
  local rc=$?
  log "failed (exit $rc); tearing down. Logs are in $LOGS"
  "$here/down.sh" "$DIR" >&2 || true
  exit "$rc"
}
trap cleanup_on_error ERR

# ---------- network: advertise address and service CIDR ----------
# The advertise address is a /32 on an interface of its own: a Linux bridge with no ports (this
# VM's kernel has no `dummy` driver; a port-less bridge behaves the same: it is up, and whatever
# is routed out of it is dropped because there is nowhere to forward it). The kernel treats the
# /32 as a local address (local routing table), so packets to it are delivered on this host,
# from the host itself and from pods (they come in through their veth and the host's route).
# It is not the VM's external address and no route points anywhere off the machine.
ip link add "$IFACE" type bridge
echo "$IFACE" >"$DIR/state/iface"
ip addr add "$ADV_IP/32" dev "$IFACE"
ip link set "$IFACE" up
# The service CIDR is routed into the same port-less bridge: a ClusterIP that kube-proxy did not
# translate is dropped here instead of following the default route off the machine. Not a
# `blackhole` route: with one, the host's own connect() to a ClusterIP fails with EINVAL at the
# first route lookup, before kube-proxy's OUTPUT DNAT can rewrite the destination; pods would
# be fine (their DNAT is in PREROUTING), the host would not.
ip route add "$SERVICE_CIDR" dev "$IFACE"
echo "$SERVICE_CIDR" >"$DIR/state/route"

# ---------- ports ----------
used_ports=$(ss -Htln | awk '{print $4}' | sed 's/.*://' | sort -u)
taken=" "
free_port() { # first port >= $1 that nothing listens on (any address) and we did not hand out
  local p=$1
  while grep -qx "$p" <<<"$used_ports" || [[ "$taken" == *" $p "* ]]; do p=$((p + 1)); done
  taken+="$p "
  echo "$p"
}
API_PORT=$(free_port 6443)
ETCD_PORT=$(free_port 23790)
ETCD_PEER_PORT=$(free_port 23800)
KCM_PORT=$(free_port 10257)
SCHED_PORT=$(free_port 10259)
PROXY_HEALTH_PORT=$(free_port 10256)
PROXY_METRICS_PORT=$(free_port 10249)
SERVER=https://$ADV_IP:$API_PORT
cat >"$DIR/state/env" <<EOF
SERVER=$SERVER
ADV_IP=$ADV_IP
API_PORT=$API_PORT
ETCD_PORT=$ETCD_PORT
SERVICE_CIDR=$SERVICE_CIDR
NODE_NAME=$NODE_NAME
K8S_VERSION=$K8S_VERSION
K8S_BIN=$K8S_BIN
EOF

# ---------- certificates ----------
# First service IP (the `kubernetes` Service): network address + 1.
IFS=./ read -r a b c d _ <<<"$SERVICE_CIDR"
FIRST_SVC_IP=$a.$b.$c.$((d + 1))

ssl() { openssl "$@" 2>>"$LOGS/openssl.log"; }
new_ca() { # name cn
  ssl req -x509 -newkey rsa:2048 -nodes -keyout "$PKI/$1.key" -out "$PKI/$1.crt" -days 3650 \
    -subj "/CN=$2" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,digitalSignature,keyEncipherment,keyCertSign"
}
new_cert() { # ca name subject extKeyUsage [subjectAltName]
  local ca=$1 name=$2 subj=$3 eku=$4 san=${5:-}
  ssl req -newkey rsa:2048 -nodes -keyout "$PKI/$name.key" -out "$PKI/$name.csr" -subj "$subj"
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"
    [ -n "$san" ] && echo "subjectAltName=$san"
  } >"$PKI/$name.ext"
  ssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/$ca.crt" -CAkey "$PKI/$ca.key" -CAcreateserial \
    -out "$PKI/$name.crt" -days 365 -extfile "$PKI/$name.ext"
  rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}
log "certificates in $PKI"
umask 077
new_ca ca bosun-test-ca
new_ca front-proxy-ca bosun-test-front-proxy-ca
new_cert ca apiserver /CN=kube-apiserver serverAuth \
  "IP:127.0.0.1,IP:$ADV_IP,IP:$FIRST_SVC_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local$EXTRA_SANS"
new_cert ca apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
new_cert front-proxy-ca front-proxy-client /CN=front-proxy-client clientAuth
new_cert ca admin "/O=system:masters/CN=kubernetes-admin" clientAuth
new_cert ca controller-manager /CN=system:kube-controller-manager clientAuth
new_cert ca scheduler /CN=system:kube-scheduler clientAuth
new_cert ca kube-proxy /CN=system:kube-proxy clientAuth
ssl genrsa -out "$PKI/sa.key" 2048
ssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub"
umask 022

# ---------- kubeconfigs ----------
kubeconfig() { # file user [cert-name | token:TOKEN]
  local f=$1 user=$2 cred=$3
  "$KUBECTL" config --kubeconfig="$f" set-cluster bosun-test --server="$SERVER" \
    --certificate-authority="$PKI/ca.crt" --embed-certs=true >/dev/null
  if [[ "$cred" == token:* ]]; then
    "$KUBECTL" config --kubeconfig="$f" set-credentials "$user" --token="${cred#token:}" >/dev/null
  else
    "$KUBECTL" config --kubeconfig="$f" set-credentials "$user" --client-certificate="$PKI/$cred.crt" \
      --client-key="$PKI/$cred.key" --embed-certs=true >/dev/null
  fi
  "$KUBECTL" config --kubeconfig="$f" set-context default --cluster=bosun-test --user="$user" >/dev/null
  "$KUBECTL" config --kubeconfig="$f" use-context default >/dev/null
  chmod 600 "$f"
}
rm -f "$DIR"/*.kubeconfig
kubeconfig "$DIR/admin.kubeconfig" kubernetes-admin admin
kubeconfig "$DIR/controller-manager.kubeconfig" system:kube-controller-manager controller-manager
kubeconfig "$DIR/scheduler.kubeconfig" system:kube-scheduler scheduler
kubeconfig "$DIR/kube-proxy.kubeconfig" system:kube-proxy kube-proxy
TOKEN_ID=$(tr -dc a-z0-9 </dev/urandom | head -c 6 || true)
TOKEN_SECRET=$(tr -dc a-z0-9 </dev/urandom | head -c 16 || true)
kubeconfig "$DIR/bootstrap.kubeconfig" "tls-bootstrap-token-user" "token:$TOKEN_ID.$TOKEN_SECRET"
echo "$TOKEN_ID.$TOKEN_SECRET" >"$DIR/state/bootstrap-token"
chmod 600 "$DIR/state/bootstrap-token"
K="$KUBECTL --kubeconfig=$DIR/admin.kubeconfig"

# ---------- processes ----------
start() { # name cmd...: detached in its own session, pid in pids/, output in logs/
  local name=$1; shift
  printf '%q ' "$@" >"$DIR/state/cmd.$name"
  setsid "$@" </dev/null >>"$LOGS/$name.log" 2>&1 &
  echo $! >"$PIDS/$name.pid"
  log "started $name (pid $!)"
}
wait_for() { # description seconds cmd...
  local what=$1 secs=$2; shift 2
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$end" ] || { log "timed out after ${secs}s waiting for $what"; return 1; }
    sleep 1
  done
  log "$what: ok"
}
alive() { kill -0 "$(cat "$PIDS/$1.pid")" 2>/dev/null; }

start etcd "$K8S_BIN/etcd" --name=bosun-test --data-dir="$DIR/etcd" \
  --listen-client-urls="http://127.0.0.1:$ETCD_PORT" --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster="bosun-test=http://127.0.0.1:$ETCD_PEER_PORT" \
  --log-level=warn
wait_for "etcd health" 60 bash -c "alive_pid=\$(cat $PIDS/etcd.pid); kill -0 \$alive_pid && \
  exec 3<>/dev/tcp/127.0.0.1/$ETCD_PORT && printf 'GET /health HTTP/1.0\r\n\r\n' >&3 && grep -q '\"health\":\"true\"' <&3"

start kube-apiserver "$K8S_BIN/kube-apiserver" \
  --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
  --bind-address="$ADV_IP" --advertise-address="$ADV_IP" --secure-port="$API_PORT" \
  --cert-dir="$PKI/apiserver-generated" \
  --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
  --client-ca-file="$PKI/ca.crt" \
  --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
  --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
  --kubelet-preferred-address-types=InternalIP,Hostname \
  --authorization-mode=Node,RBAC \
  --enable-admission-plugins=NodeRestriction \
  --enable-bootstrap-token-auth=true \
  --allow-privileged=true \
  --service-cluster-ip-range="$SERVICE_CIDR" \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$PKI/sa.pub" \
  --service-account-signing-key-file="$PKI/sa.key" \
  --requestheader-client-ca-file="$PKI/front-proxy-ca.crt" \
  --requestheader-allowed-names=front-proxy-client \
  --requestheader-extra-headers-prefix=X-Remote-Extra- \
  --requestheader-group-headers=X-Remote-Group \
  --requestheader-username-headers=X-Remote-User \
  --proxy-client-cert-file="$PKI/front-proxy-client.crt" \
  --proxy-client-key-file="$PKI/front-proxy-client.key" \
  --enable-aggregator-routing=true \
  --profiling=false ${APISERVER_FLAGS[@]+"${APISERVER_FLAGS[@]}"}
wait_for "kube-apiserver /readyz" "$TIMEOUT" bash -c "kill -0 $(cat "$PIDS/kube-apiserver.pid") && \
  [ \"\$($K get --raw /readyz 2>/dev/null)\" = ok ]"

start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
  --kubeconfig="$DIR/controller-manager.kubeconfig" \
  --authentication-kubeconfig="$DIR/controller-manager.kubeconfig" \
  --authorization-kubeconfig="$DIR/controller-manager.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port="$KCM_PORT" \
  --client-ca-file="$PKI/ca.crt" \
  --requestheader-client-ca-file="$PKI/front-proxy-ca.crt" \
  --cluster-name=bosun-test \
  --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
  --controllers='*,bootstrapsigner,tokencleaner' \
  --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
  --use-service-account-credentials=true \
  --service-cluster-ip-range="$SERVICE_CIDR" \
  --leader-elect=false --profiling=false ${KCM_FLAGS[@]+"${KCM_FLAGS[@]}"}

start kube-scheduler "$K8S_BIN/kube-scheduler" \
  --kubeconfig="$DIR/scheduler.kubeconfig" \
  --authentication-kubeconfig="$DIR/scheduler.kubeconfig" \
  --authorization-kubeconfig="$DIR/scheduler.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port="$SCHED_PORT" \
  --leader-elect=false --profiling=false

if [ "$RUN_PROXY" = 1 ]; then
  # Host sysctls are left alone: no conntrack tuning, no route_localnet for localhost NodePorts.
  cat >"$DIR/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: $DIR/kube-proxy.kubeconfig
mode: iptables
hostnameOverride: $NODE_NAME
bindAddress: 127.0.0.1
healthzBindAddress: 127.0.0.1:$PROXY_HEALTH_PORT
metricsBindAddress: 127.0.0.1:$PROXY_METRICS_PORT
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
iptables:
  localhostNodePorts: false
EOF
  start kube-proxy "$K8S_BIN/kube-proxy" --config="$DIR/kube-proxy.yaml"
  echo 1 >"$DIR/state/kube-proxy"
fi

# ---------- kubeadm's bootstrap objects ----------
log "bootstrap token, RBAC bindings, cluster-info"
$K apply -f - >>"$LOGS/setup.log" 2>&1 <<EOF
apiVersion: v1
kind: Secret
metadata:
  name: bootstrap-token-$TOKEN_ID
  namespace: kube-system
type: bootstrap.kubernetes.io/token
stringData:
  description: bosun test control plane bootstrap token
  token-id: "$TOKEN_ID"
  token-secret: "$TOKEN_SECRET"
  usage-bootstrap-authentication: "true"
  usage-bootstrap-signing: "true"
  auth-extra-groups: system:bootstrappers:kubeadm:default-node-token
---
# Bootstrapping nodes may create CSRs (kubeadm:kubelet-bootstrap).
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: kubeadm:kubelet-bootstrap
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: system:node-bootstrapper}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: Group, name: system:bootstrappers}
- {apiGroup: rbac.authorization.k8s.io, kind: Group, name: system:bootstrappers:kubeadm:default-node-token}
---
# Their client-certificate CSRs are approved automatically (csrapproving controller).
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: kubeadm:node-autoapprove-bootstrap
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:certificates.k8s.io:certificatesigningrequests:nodeclient"}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: Group, name: system:bootstrappers}
- {apiGroup: rbac.authorization.k8s.io, kind: Group, name: system:bootstrappers:kubeadm:default-node-token}
---
# Nodes renewing their own client certificate are approved too.
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: kubeadm:node-autoapprove-certificate-rotation
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient"}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: Group, name: system:nodes}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: kubeadm:get-nodes
rules:
- {apiGroups: [""], resources: [nodes], verbs: [get]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: kubeadm:get-nodes
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: kubeadm:get-nodes}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: Group, name: system:bootstrappers:kubeadm:default-node-token}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: cluster-info
  namespace: kube-public
data:
  kubeconfig: |
    apiVersion: v1
    kind: Config
    clusters:
    - name: ""
      cluster:
        server: $SERVER
        certificate-authority-data: $(base64 -w0 <"$PKI/ca.crt")
    contexts: []
    current-context: ""
    users: []
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: kubeadm:bootstrap-signer-clusterinfo
  namespace: kube-public
rules:
- {apiGroups: [""], resources: [configmaps], resourceNames: [cluster-info], verbs: [get]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: kubeadm:bootstrap-signer-clusterinfo
  namespace: kube-public
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: kubeadm:bootstrap-signer-clusterinfo}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: system:anonymous}
EOF

wait_for "default ServiceAccount in default" "$TIMEOUT" $K get serviceaccount default -n default
wait_for "kube-root-ca.crt ConfigMap in default" "$TIMEOUT" $K get configmap kube-root-ca.crt -n default
for p in etcd kube-apiserver kube-controller-manager kube-scheduler; do
  alive "$p" || { log "$p exited; see $LOGS/$p.log"; false; }
done
if [ "$RUN_PROXY" = 1 ]; then
  wait_for "kube-proxy rules for the kubernetes Service" 120 bash -c \
    "kill -0 $(cat "$PIDS/kube-proxy.pid") && iptables-save -t nat | grep -q -- '-d $FIRST_SVC_IP/32 .*--dport 443'"
fi

trap - ERR
log "control plane $K8S_VERSION is up at $SERVER"
echo "export KUBECONFIG=$DIR/admin.kubeconfig"
