#!/usr/bin/env bash
# `kubeadm init` on this machine with bosun as the kubelet, then kubeadm's addons and a pod
# network add-on, as a kubeadm user brings up a cluster:
#   - kubeadm (built from the pinned k8s.io/kubernetes module, tests/kubeadm/build.sh) writes the
#     kubelet's files and the control plane's static pods (etcd, kube-apiserver,
#     kube-controller-manager, kube-scheduler); bosun, started with exactly the command line of
#     packaging/kubelet's kubeadm drop-in, runs them while it registers the Node; kubeadm's own
#     preflight, kubelet-start, wait-control-plane, upload-config, mark-control-plane,
#     bootstrap-token, kubelet-finalize and addon phases must pass.
#   - kubeadm's addons: kube-proxy (DaemonSet, iptables mode) and CoreDNS (Deployment, the
#     v$COREDNS_VERSION built here: ClusterConfiguration dns.imageTag says so).
#   - flannel: upstream's kube-flannel.yml, unchanged (VXLAN on the CIDRs the controller-manager
#     allocates). Until it writes its CNI config the node is NotReady with the kubelet's message.
#   - checks: the Node Ready, every pod Running, crictl (same socket) and kubectl agree, a pod
#     resolves kubernetes.default.svc.cluster.local through the cluster DNS Service and fetches
#     a page through a ClusterIP Service.
# Images: built here (tests/kubeadm/images.sh, tests/images/build-busybox.sh) under the names
# kubeadm and kube-flannel.yml ask for, imported into bosun's store; there is no internet.
#
# Modes:
#   init.sh        the test: everything above, then torn down (kubeadm reset's work, the addons'
#                  iptables rules and links, the files), even when a step fails
#   init.sh up     the same, left running (`make kubeadm`): KUBECONFIG=/etc/kubernetes/admin.conf
#   init.sh down   tears down what `up` left (`make kubeadm-down`)
# With KUBEADM_THEN set, the test runs that command with the cluster up (the VM tier's join).
#
# Not checked here, and why:
#   - the preflight image pull (ImagePull ignored): kubeadm pulls pause, which bosun does not use,
#     and there is no internet to pull it from.
#   - SystemVerification on a cgroup v1 host (ignored, with failCgroupV1: false in the
#     KubeletConfiguration), as kubeadm's message asks; on cgroup v2 it runs.
#
# This host's own CNI configs in /etc/cni/net.d (podman's) are moved aside while the cluster is
# up and put back after: a kubeadm node has none but its network add-on's, and the node must be
# NotReady until flannel writes one.
#
# Bosun runs from the start, as an installed, enabled kubelet.service does: before kubeadm
# writes /var/lib/kubelet/config.yaml it serves only its CRI socket (kubeadm's preflight checks
# it); a supervisor restarts it when kubeadm's files change (kubeadm's kubelet-start would
# restart the unit; this machine has no systemd).
#
# Needs root and the fixed addresses of tests/cluster (interface bosun-cp0, 10.250.0.1, ports 6443,
# 2379-2381, 10250, 10257, 10259): run the test under the privileged lock:
#   flock /tmp/bosun-priv.lock tests/kubeadm/init.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=env.sh
. "$here/env.sh"
# shellcheck source=../cluster/lib.sh
. "$root/tests/cluster/lib.sh"
start=$(date +%s)
log() { echo "kubeadm-init: $*" >&2; }
die() { log "FAIL: $*"; exit 1; }
mode=${1:-test}
case $mode in test | up | down) ;; *) die "usage: $0 [test|up|down]" ;; esac
[ "$(id -u)" = 0 ] || die "needs root"

IFACE=bosun-cp0
IP=10.250.0.1
NODE=kubeadm-node
# What `up` leaves for `down`: the folders, the supervisor, what was moved aside.
STATE=/run/bosun-kubeadm.env
KUBEADM=$KUBEADM_BIN/kubeadm
CRICTL=$CRICTL_BIN/crictl
KUBECTL=$K8S_BIN/kubectl
KUBE_PROXY=$KUBE_PROXY_BIN/kube-proxy
FLANNEL_YAML=$FLANNEL_BIN/kube-flannel.yml
k() { "$KUBECTL" "$@"; }

# Removes everything, in kubeadm reset's order (the workloads, then the static pods, the agent,
# the files), then what the addons changed on the host. Safe to run on a half-built cluster.
cleanup() {
  local rc=$?
  set +e
  trap - EXIT
  log "cleaning up (rc=$rc)"
  export KUBECONFIG=/etc/kubernetes/admin.conf
  if [ -n "${sup_pid:-}" ] && kill -0 "$sup_pid" 2>/dev/null; then
    if [ -f "$KUBECONFIG" ]; then
      # The API's pods first, while flannel's CNI plugin can still tear their networks down.
      k delete namespace kubeadm-test --wait=false >/dev/null 2>&1
      k -n kube-system scale deployment coredns --replicas=0 >/dev/null 2>&1
      for _ in $(seq 60); do
        [ -z "$(k get pods -A -o name -l k8s-app=kube-dns 2>/dev/null)" ] &&
          [ -z "$(k -n kubeadm-test get pods -o name 2>/dev/null)" ] && break
        sleep 1
      done
      k delete -f "$FLANNEL_YAML" --wait=false >/dev/null 2>&1
      k -n kube-system delete daemonset kube-proxy --wait=false >/dev/null 2>&1
      for _ in $(seq 60); do
        k get pods -A -o name --field-selector spec.nodeName=$NODE 2>/dev/null | grep -qv -- "-$NODE\$" || break
        sleep 1
      done
    fi
    rm -f /etc/kubernetes/manifests/*.yaml
    for _ in $(seq 60); do
      [ -z "$(ls -A "$RUN/pods" 2>/dev/null)" ] && break
      sleep 1
    done
    kill "$sup_pid"
    for _ in $(seq 30); do kill -0 "$sup_pid" 2>/dev/null || break; sleep 1; done
  fi
  if [ "$rc" != 0 ] && [ -f "$tmp/bosun.log" ]; then
    tail -50 "$tmp/bosun.log" >&2
    cp "$tmp/bosun.log" /tmp/bosun-kubeadm-init.log && log "bosun's log: /tmp/bosun-kubeadm-init.log"
  fi
  # kubeadm reset itself (cleans /etc/kubernetes, /var/lib/etcd, the kubelet's files); its
  # container removal finds no CRI socket once the agent is gone, which it only warns about.
  if [ -x "$KUBEADM" ]; then
    "$KUBEADM" reset --force --cri-socket "unix://$SOCK" >"$tmp/reset.log" 2>&1 || cat "$tmp/reset.log" >&2
  fi
  # Whatever reset left: keepers of pods the agent did not finish, mounts, cgroups.
  reap_node "$tmp" "${CG#/}"
  grep -E " /var/lib/kubelet[/ ]" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l
  # kube-proxy's and flannel's rules and links, flannel's files.
  [ -x "$KUBE_PROXY" ] && "$KUBE_PROXY" --cleanup >/dev/null 2>&1
  for ipt in iptables ip6tables; do
    for t in nat filter mangle; do
      "$ipt" -t "$t" -S 2>/dev/null | grep -E -- '-j (FLANNEL|KUBE)' | sed 's/^-A/-D/' |
        while read -r rule; do eval "$ipt -t $t $rule"; done
      for c in $("$ipt" -t "$t" -S 2>/dev/null | awk '/^-N (FLANNEL|KUBE)/ {print $2}'); do
        "$ipt" -t "$t" -F "$c"
        "$ipt" -t "$t" -X "$c"
      done
    done
  done
  [ -n "${route_localnet:-}" ] && sysctl -qw net.ipv4.conf.all.route_localnet="$route_localnet"
  ip link del flannel.1 2>/dev/null
  ip link del cni0 2>/dev/null
  rm -rf /run/flannel /var/lib/cni/flannel /var/lib/cni/networks/cbr0 /var/lib/cni/results \
    /etc/cni/net.d/10-flannel.conflist /opt/cni/bin/flannel
  [ "${made_opt_cni:-}" = 1 ] && rmdir /opt/cni/bin /opt/cni 2>/dev/null
  if [ -d "$tmp/cni-aside" ]; then mv "$tmp/cni-aside"/* /etc/cni/net.d/ 2>/dev/null; fi
  rm -rf /etc/kubernetes /var/lib/etcd /var/lib/kubelet/config.yaml /var/lib/kubelet/kubeadm-flags.env \
    /var/lib/kubelet/instance-config.yaml /var/lib/kubelet/pki /var/lib/kubelet/pods \
    /var/log/pods/kube-system_* /var/log/pods/kube-flannel_* /var/log/pods/kubeadm-test_*
  ip link del "$IFACE" 2>/dev/null
  rm -rf "$tmp" "$STATE"
  log "done in $(($(date +%s) - start))s"
  return "$rc"
}

if [ "$mode" = down ]; then
  [ -f "$STATE" ] || die "nothing to tear down ($STATE is missing)"
  # shellcheck disable=SC1090
  . "$STATE"
  cleanup
  exit 0
fi

# Never touch a host that already has a Kubernetes node's files.
for f in /etc/kubernetes /var/lib/kubelet/config.yaml /var/lib/kubelet/kubeadm-flags.env /var/lib/etcd "$STATE"; do
  [ -e "$f" ] && die "$f exists: this machine is (or was) a node; refusing to overwrite it"
done
ip link show "$IFACE" >/dev/null 2>&1 && die "interface $IFACE exists (a control plane of tests/cluster is up?)"

t0=$(date +%s)
"$root/tests/cluster/build/build.sh" >&2
"$here/build.sh" kubeadm crictl kube-proxy >&2
log "tools ready in $(($(date +%s) - t0))s"
: "${CARGO_TARGET_DIR:=$HOME/.cache/bosun/target}"
BOSUN=${BOSUN_BIN:-$CARGO_TARGET_DIR/debug/bosun}
[ -x "$BOSUN" ] || die "$BOSUN is not built (cargo build -p bosun)"

if [ "$mode" = up ]; then
  tmp=/var/lib/bosun/kubeadm
  rm -rf "$tmp"
  mkdir -p "$tmp"
else
  tmp=$(mktemp -d /tmp/bosun-kubeadm.XXXXXX)
fi
RUN=$tmp/run
SOCK=$RUN/bosun.sock
CG=/bosun-kubeadm
sup_pid=
route_localnet=$(sysctl -n net.ipv4.conf.all.route_localnet)
made_opt_cni=0
save_state() {
  printf 'tmp=%q\nRUN=%q\nSOCK=%q\nCG=%q\nsup_pid=%q\nroute_localnet=%q\nmade_opt_cni=%q\n' \
    "$tmp" "$RUN" "$SOCK" "$CG" "$sup_pid" "$route_localnet" "$made_opt_cni" >"$STATE"
}
trap cleanup EXIT

# kubeadm's preflight runs `kubelet --version` (its version-skew check) from PATH: the
# bosun-kubelet package's /usr/bin/kubelet, here a wrapper of the same one line.
mkdir -p "$tmp/bin"
printf '#!/bin/sh\nexec %s "$@"\n' "$BOSUN" >"$tmp/bin/kubelet"
chmod 0755 "$tmp/bin/kubelet"
export PATH="$tmp/bin:$PATH"

ip link add "$IFACE" type bridge
# A /24: the second node (the VM tier's guest, on a tap device in this bridge) is 10.250.0.2.
ip addr add "$IP/24" dev "$IFACE"
ip link set "$IFACE" up
# The host's own CNI configs aside (see the top); flannel's CNI plugin goes to /opt/cni/bin.
mkdir -p "$tmp/cni-aside" /etc/cni/net.d
find /etc/cni/net.d -maxdepth 1 -type f \( -name '*.conf' -o -name '*.conflist' -o -name '*.json' \) \
  -exec mv -t "$tmp/cni-aside" {} +
if [ ! -d /opt/cni/bin ]; then
  mkdir -p /opt/cni/bin
  made_opt_cni=1
fi
save_state

# The images, named as kubeadm and kube-flannel.yml ask for them, in a private image store.
t0=$(date +%s)
mkdir -p "$tmp/data" "$tmp/images"
common=(--run-dir "$RUN" --data-dir "$tmp/data" --pod-logs-dir "$tmp/pod-logs"
  --container-logs-dir "$tmp/container-logs" --cgroup-root "$CG")
BOSUN_BIN=$BOSUN "$here/images.sh" import "${common[@]}" >&2
# The test's own pods: the busybox test image.
"$root/tests/images/build-busybox.sh" "$tmp/images/busybox" >&2
"$BOSUN" image import "$tmp/images/busybox" docker.io/library/busybox:test "${common[@]}" >&2
log "images ready in $(($(date +%s) - t0))s"

# What systemd does with packaging/kubelet: the unit's ExecStart as the drop-in rewrites it, with
# the two EnvironmentFiles, started at once (an installed, enabled kubelet.service runs before
# kubeadm: bosun serves its CRI socket while /var/lib/kubelet/config.yaml is missing) and
# restarted when it exits or when kubeadm's files change (kubeadm's kubelet-start phase writes
# them and restarts the unit). KUBELET_EXTRA_ARGS (/etc/default/kubelet) carries the private
# folders. The supervisor is a script of its own in its own session, so that `up` leaves it
# running.
dropin=$root/packaging/kubelet/10-kubeadm.conf
exec_line=$(grep '^ExecStart=.' "$dropin" | sed 's/^ExecStart=//')
# Environment="NAME=a b" as NAME="a b".
envs=$(sed -n 's/^Environment="\([^=]*\)=\(.*\)"$/\1="\2"/p' "$dropin" | tr '\n' ';')
{
  echo '#!/usr/bin/env bash'
  echo '# kubelet.service on this machine without systemd (written by tests/kubeadm/init.sh).'
  printf 'export KUBELET_EXTRA_ARGS=%q\n' "${common[*]}"
  printf 'log=%q\n' "$tmp/bosun.log"
  cat <<'SUP'
stamp() { { stat -c %Y /var/lib/kubelet/kubeadm-flags.env /var/lib/kubelet/config.yaml 2>/dev/null || true; } | tr '\n' ' '; }
child=
trap 'kill $child 2>/dev/null; wait $child; exit 0' TERM
while :; do
  (
    set -a
    KUBELET_KUBEADM_ARGS=
    [ -f /var/lib/kubelet/kubeadm-flags.env ] && . /var/lib/kubelet/kubeadm-flags.env
SUP
  printf '    %s\n' "$envs"
  printf '    exec %s\n' "${exec_line/\/usr\/bin\/kubelet/$BOSUN}"
  cat <<'SUP'
  ) >>"$log" 2>&1 &
  child=$!
  seen=$(stamp)
  while kill -0 "$child" 2>/dev/null; do
    sleep 1
    if [ "$(stamp)" != "$seen" ]; then
      echo "supervisor: kubeadm's files changed: restarting the kubelet" >>"$log"
      kill "$child" 2>/dev/null
      break
    fi
  done
  wait "$child" 2>/dev/null
  sleep 1
done
SUP
} >"$tmp/supervise.sh"
setsid bash "$tmp/supervise.sh" </dev/null >/dev/null 2>&1 &
sup_pid=$!
save_state
# kubeadm's preflight checks the CRI socket first: it is there before kubeadm runs.
for _ in $(seq 60); do [ -S "$SOCK" ] && break; sleep 1; done
[ -S "$SOCK" ] || die "bosun serves no CRI socket at $SOCK before kubeadm init"

cat >"$tmp/kubeadm.yaml" <<YAML
apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
localAPIEndpoint:
  advertiseAddress: $IP
  bindPort: 6443
nodeRegistration:
  name: $NODE
  criSocket: unix://$SOCK
  kubeletExtraArgs:
  - name: node-ip
    value: $IP
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
kubernetesVersion: $K8S_VERSION
networking:
  serviceSubnet: 10.96.0.0/16
  podSubnet: 10.244.0.0/16
# The CoreDNS built here (images.sh): kubeadm's default tag is an older release.
dns:
  imageTag: $COREDNS_VERSION
---
# kubeadm at the pinned version refuses cgroup v1 hosts (SystemVerification) unless the kubelet
# is told to run on them.
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
# The kubelet's disk defaults would evict on a busy development disk; memory as the default.
evictionHard:
  memory.available: 100Mi
YAML
log "kubeadm init"
t0=$(date +%s)
ignore=ImagePull
[ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ] || ignore=$ignore,SystemVerification
"$KUBEADM" init --config "$tmp/kubeadm.yaml" --ignore-preflight-errors="$ignore" -v=1 2>&1 | tee "$tmp/init.log" >&2
[ "${PIPESTATUS[0]}" = 0 ] || die "kubeadm init failed"
grep -q 'Your Kubernetes control-plane has initialized successfully' "$tmp/init.log" || die "kubeadm init did not finish"
log "kubeadm init done in $(($(date +%s) - t0))s"

export KUBECONFIG=/etc/kubernetes/admin.conf
# No pod network yet: the node is NotReady with the kubelet's message; the control plane's
# static pods (hostNetwork) run.
msg=$(k get node $NODE -o jsonpath='{.status.conditions[?(@.type=="Ready")].message}')
case $msg in *"cni plugin not initialized"*) ;; *) die "Ready condition before the pod network: $msg" ;; esac
for c in etcd kube-apiserver kube-controller-manager kube-scheduler; do
  # `kubectl wait` fails at once on a pod that does not exist yet: the mirror pods come a few
  # seconds after kubeadm init (their creation is refused until the system PriorityClasses exist).
  for _ in $(seq 60); do k -n kube-system get "pod/$c-$NODE" >/dev/null 2>&1 && break; sleep 1; done
  if ! k -n kube-system wait --for=condition=Ready "pod/$c-$NODE" --timeout=120s >&2; then
    # What the API and bosun each say about it.
    k -n kube-system get "pod/$c-$NODE" -o jsonpath='{.metadata.uid} {.status}{"\n"}' >&2
    "$BOSUN" pods "${common[@]}" >&2
    die "$c is not Ready"
  fi
done
# hostNetwork pods have the node's address (--node-ip), as the kubelet reports them.
ips=$(k -n kube-system get pods -l tier=control-plane -o jsonpath='{range .items[*]}{.status.podIP}{"\n"}{end}' | sort -u)
[ "$ips" = "$IP" ] || die "the static pods' podIPs are $ips, not the node's $IP"

# The pod network add-on, as its README says: kubectl apply of upstream's manifest.
t0=$(date +%s)
k apply -f "$FLANNEL_YAML" >&2
k -n kube-flannel rollout status daemonset/kube-flannel-ds --timeout=180s >&2 || die "flannel is not running"
k wait --for=condition=Ready node/$NODE --timeout=120s >&2 || die "node not Ready with flannel"
k -n kube-system rollout status daemonset/kube-proxy --timeout=120s >&2 || die "kube-proxy is not running"
k -n kube-system rollout status deployment/coredns --timeout=180s >&2 || die "CoreDNS is not running"
log "pod network and addons Ready in $(($(date +%s) - t0))s"
k get pods -A -o wide >&2

# A single-node cluster runs workloads on its control plane (kubeadm's docs: remove the taint).
k taint node $NODE node-role.kubernetes.io/control-plane:NoSchedule- >&2
k create namespace kubeadm-test >&2
k apply -f - >&2 <<YAML
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: kubeadm-test, labels: {app: web}}
spec:
  containers:
  - name: web
    image: docker.io/library/busybox:test
    imagePullPolicy: Never
    command: [sh, -c, 'mkdir -p /www && echo hello-from-web >/www/index.html && exec httpd -f -p 8080 -h /www']
    ports: [{containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: kubeadm-test}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: kubeadm-test}
spec:
  containers:
  - name: c
    image: docker.io/library/busybox:test
    imagePullPolicy: Never
    command: [sleep, '3600']
YAML
k -n kubeadm-test wait --for=condition=Ready pod/web pod/client --timeout=120s >&2 || die "test pods not Ready"
podip=$(k -n kubeadm-test get pod web -o jsonpath='{.status.podIP}')
case $podip in 10.244.*) ;; *) die "the pod's IP $podip is not on flannel's network" ;; esac
# The cluster DNS Service (CoreDNS behind kube-proxy's rules) answers for the API's Service.
out=$(k -n kubeadm-test exec client -- nslookup kubernetes.default.svc.cluster.local 2>&1) ||
  die "nslookup failed: $out"
grep -q '10.96.0.1' <<<"$out" || die "kubernetes.default resolved to: $out"
# A ClusterIP Service: its DNS name resolves to its ClusterIP, which answers (by address: the
# test image's static busybox crashes in getaddrinfo, its nslookup has a resolver of its own).
svc_ip=$(k -n kubeadm-test get service web -o jsonpath='{.spec.clusterIP}')
out=$(k -n kubeadm-test exec client -- nslookup web.kubeadm-test.svc.cluster.local 2>&1) ||
  die "nslookup web failed: $out"
grep -q "Address: $svc_ip\$" <<<"$out" || die "web.kubeadm-test resolved to: $out (ClusterIP $svc_ip)"
# Through nc: this host's static busybox (1.35.0-4+deb12u1) segfaults in wget even for an address.
out=$(k -n kubeadm-test exec client -- sh -c "printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 5 $svc_ip 80" 2>&1) ||
  die "the ClusterIP Service did not answer: $out"
[ "$(tr -d '\r' <<<"$out" | tail -1)" = hello-from-web ] || die "the ClusterIP Service answered: $out"

# crictl on the node shows the same pods and containers as the API.
crictl() { "$CRICTL" --runtime-endpoint "unix://$SOCK" --image-endpoint "unix://$SOCK" "$@" 2>/dev/null; }
api=$(k get pods -A --field-selector spec.nodeName=$NODE -o jsonpath='{range .items[*]}{.metadata.namespace}/{.metadata.name}{"\n"}{end}' | sort)
cri=$(crictl pods -o json | jq -r '.items[] | select(.state=="SANDBOX_READY") | .metadata.namespace + "/" + .metadata.name' | sort)
[ "$api" = "$cri" ] || die "kubectl and crictl disagree on pods: $api / $cri"
api_c=$(k get pods -A --field-selector spec.nodeName=$NODE -o jsonpath='{range .items[*]}{range .spec.containers[*]}{.name}{"\n"}{end}{end}' | sort | tr '\n' ' ')
cri_c=$(crictl ps -o json | jq -r '.containers[] | select(.state=="CONTAINER_RUNNING") | .metadata.name' | sort | tr '\n' ' ')
[ "$api_c" = "$cri_c" ] || die "running containers: kubectl $api_c / crictl $cri_c"
# The kubelet's files kubeadm wrote and bosun read.
grep -q "containerRuntimeEndpoint: unix://$SOCK" /var/lib/kubelet/config.yaml ||
  grep -q "container-runtime-endpoint=unix://$SOCK" /var/lib/kubelet/kubeadm-flags.env || die "no runtime endpoint"
log "PASS: kubeadm init with bosun as the kubelet, kube-proxy, CoreDNS and flannel ($(($(date +%s) - start))s)"

# What runs on this control plane next (the join of a second node): a command run with the
# cluster up, KUBECONFIG the admin's, and the test's tools and addresses in its environment.
if [ -n "${KUBEADM_THEN:-}" ]; then
  export KUBEADM KUBECTL CRICTL IFACE IP SOCK
  log "then: $KUBEADM_THEN"
  $KUBEADM_THEN || die "$KUBEADM_THEN failed"
fi
if [ "$mode" = up ]; then
  trap - EXIT
  k delete namespace kubeadm-test --wait=false >&2
  cat <<MSG

A cluster made by kubeadm init, with bosun as its kubelet (node $NODE), kube-proxy, CoreDNS and
flannel. bosun's log: $tmp/bosun.log
  export KUBECONFIG=/etc/kubernetes/admin.conf
  kubectl get pods -A -o wide                  # kubectl: $KUBECTL
  $CRICTL --runtime-endpoint unix://$SOCK ps
  make kubeadm-down                            # kubeadm reset's work, nothing left
MSG
fi
