#!/usr/bin/env bash
# The VM tier: boots a fresh Debian guest (systemd, pure cgroup v2) under QEMU, installs the
# freshly built bosun .deb with dpkg -i and runs suite.sh there. Prints the suite's lines, a
# final "N passed, M failed" line and exits non-zero on any failure.
#
#   tests/vm/run.sh                 # build packages + guest (cached) + busybox layout, boot, test
#   BOSUN_DEB=path.deb tests/vm/run.sh   # test that .deb instead of building one
#   VM_CLUSTER=0 tests/vm/run.sh     # without the cluster part (no control plane on the host)
#   VM_PROFILE=debug tests/vm/run.sh # package the debug binary the test command built (no release build)
#   VM_SUBSET=ci tests/vm/run.sh     # the short subset the test command runs: debug package, no
#                                    # cluster part, the tests in CI_TESTS below
#   VM_TESTS="cgroup_v2 ... node_shutdown"  # only these guest tests, in this order
#   VM_TIMEOUT=1200 VM_MEM=2048 VM_CPUS=2 KEEP=1 (keep the work folder with serial.log)
#   VM_BRIDGE=bosun-cp0 VM_IP=10.250.0.2/24 tests/vm/run.sh   # tap mode: the guest on a tap
#       device (VM_TAP, default bosun-vmtap0) in that existing host bridge, with that address and
#       the bridge's address as its gateway (a real L2 link: no cluster part, the caller's
#       control plane is on the bridge); VM_PAYLOAD=dir adds that folder's files to the payload
#   BOSUN_KUBELET_DEB=path.deb      # the bosun-kubelet package for the payload (else the one the
#                                   # release build made, if any)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
here="$root/tests/vm"
cd "$root"
source hack/env.sh
source tests/cluster/env.sh
source tests/cluster/lib.sh
start=$(date +%s)
log() { echo "vm: $*" >&2; }
secs() { echo "$(($(date +%s) - start))s"; }

# Host tools (Debian), installed once.
need=()
for pair in qemu-system-x86_64:qemu-system-x86 debootstrap:debootstrap cpio:cpio depmod:kmod \
            mke2fs:e2fsprogs xz:xz-utils jq:jq; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
[[ -x /bin/busybox ]] || need+=(busybox-static)
if ((${#need[@]})); then
    log "installing ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null ||
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; }
fi

CI_TESTS="cgroup_v2 install_enabled_but_idle start_standalone limits_in_cgroup_v2_files restart_adopts"
subset=${VM_SUBSET:-}
profile=${VM_PROFILE:-release}
cluster=${VM_CLUSTER:-1}
if [[ $subset == ci ]]; then profile=debug; cluster=0; fi
bridge=${VM_BRIDGE:-}
tap=${VM_TAP:-bosun-vmtap0}
if [[ -n $bridge ]]; then
    [[ -n ${VM_IP:-} ]] || { log "VM_BRIDGE needs VM_IP (the guest's address, e.g. 10.250.0.2/24)"; exit 2; }
    gateway=$(ip -4 -o addr show dev "$bridge" 2>/dev/null | awk '{print $4}' | cut -d/ -f1 | head -1)
    [[ -n $gateway ]] || { log "bridge $bridge missing or without an IPv4 address"; exit 2; }
    cluster=0
fi
work=$(mktemp -d /tmp/bosun-vm.XXXXXX)
cp_dir="$work/cluster"
tap_made=
cleanup() {
    if [[ -n $tap_made ]]; then ip link del "$tap" 2>/dev/null || true; fi
    if mountpoint -q "$work/disk" 2>/dev/null; then umount "$work/disk" || umount -l "$work/disk"; fi
    if [[ $cluster == 1 && -d $cp_dir ]]; then bash tests/cluster/down.sh "$cp_dir" --purge >/dev/null 2>&1; fi
    if [[ -z ${KEEP:-} ]]; then rm -rf "$work"; fi
}
trap cleanup EXIT
# A signal ends the run through the EXIT trap too (the tap device and the control plane go).
trap 'exit 130' INT
trap 'exit 143' TERM
[[ -z ${KEEP:-} ]] || log "keeping $work"
payload="$work/payload"
mkdir -p "$payload"

# 1. The package under test.
if [[ -n ${BOSUN_DEB:-} ]]; then
    deb=$BOSUN_DEB
else
    log "building packages ($profile, $(secs))"
    pkgs=$(PROFILE=$profile packaging/build.sh)
    deb=$(grep '/bosun_[^/]*\.deb$' <<<"$pkgs")
    kdeb=$(grep '/bosun-kubelet_[^/]*\.deb$' <<<"$pkgs" || true)
fi
cp "$deb" "$payload/bosun.deb"
kdeb=${BOSUN_KUBELET_DEB:-${kdeb:-}}
[[ -z $kdeb ]] || cp "$kdeb" "$payload/bosun-kubelet.deb"
# The caller's files (tests/kubeadm/join-vm.sh: kubeadm, kubectl, crictl, the join command).
[[ -z ${VM_PAYLOAD:-} ]] || cp -a "$VM_PAYLOAD/." "$payload/"
[[ $subset != ci ]] || echo "$CI_TESTS" >"$payload/tests"
[[ -z ${VM_TESTS:-} ]] || echo "$VM_TESTS" >"$payload/tests"
# The guest tests this run has (the suite's list, unless one is given).
wanted=$(cat "$payload/tests" 2>/dev/null || echo all)
has_test() { [[ $wanted == all || " $wanted " == *" $1 "* ]]; }
# 2. The test image and the suite.
tests/images/build-busybox.sh "$payload/busybox" >/dev/null
cp "$here/suite.sh" "$payload/suite.sh"
# The runtime's privileged security tests (AppArmor needs a host that enforces it: this guest).
if [[ $subset != ci ]] && has_test apparmor; then
    log "security test binary ($(secs))"
    sec_bin=$(cargo test -p bosun-runtime --test security --no-run --message-format=json 2>/dev/null |
        jq -r 'select(.reason == "compiler-artifact" and .target.name == "security") | .executable // empty' | tail -1)
    [[ -x $sec_bin ]] || { log "no security test binary"; exit 1; }
    cp "$sec_bin" "$payload/security-tests"
fi
# The cluster part: a test control plane on the host (its own interface and addresses, no
# kube-proxy), reached by the guest at 10.0.2.100:6443 through QEMU user networking (restrict=on:
# the guest reaches nothing else; each connection is relayed by busybox nc to the apiserver).
if [[ $cluster == 1 ]]; then
    log "control plane for the cluster part ($(secs))"
    BOSUN_CP_IF=bosun-cp4 BOSUN_CP_IP=10.250.4.1 BOSUN_CP_SERVICE_CIDR=10.100.0.0/16 BOSUN_CP_KUBE_PROXY=0 \
        BOSUN_CP_NODE_NAME=bosun-vm BOSUN_CP_EXTRA_SANS=IP:10.0.2.100 \
        bash tests/cluster/up.sh "$cp_dir" >"$work/cp-up.log" 2>&1 ||
        { tail -20 "$work/cp-up.log" >&2; log "the control plane did not come up"; exit 1; }
    api_port=$(. "$cp_dir/state/env"; echo "$API_PORT")
    k() { "$K8S_BIN/kubectl" --kubeconfig "$cp_dir/admin.kubeconfig" "$@"; }
    mkdir -p "$payload/cluster"
    "$K8S_BIN/kubectl" --kubeconfig "$cp_dir/bootstrap.kubeconfig" config view --raw --flatten -o json |
        jq '.clusters[0].cluster.server = "https://10.0.2.100:6443"' >"$payload/cluster/bootstrap-kubeconfig"
    # The pod for the guest node, created before it exists: the scheduler binds it once the node
    # has registered and is Ready. The default service account appears shortly after startup.
    wait_for 60 k get serviceaccount default || true
    k apply -f - >/dev/null <<'YAML'
apiVersion: v1
kind: Pod
metadata: {name: vm-pod, namespace: default}
spec:
  nodeSelector: {kubernetes.io/hostname: bosun-vm}
  terminationGracePeriodSeconds: 0
  containers:
  - name: c
    image: busybox
    imagePullPolicy: Never
    command: [sh, -c, 'ip -4 -o addr show eth0 > /marks/.cluster-pod; mv /marks/.cluster-pod /marks/cluster-pod; exec sleep 3600']
    volumeMounts: [{name: marks, mountPath: /marks}]
  volumes:
  - {name: marks, hostPath: {path: /var/tmp/vmtest-marks, type: DirectoryOrCreate}}
YAML
    # The graceful node shutdown test's pod: its preStop hook writes a mark on the guest's disk.
    if has_test node_shutdown; then
        k apply -f - >/dev/null <<'YAML'
apiVersion: v1
kind: Pod
metadata: {name: vm-shutdown, namespace: default}
spec:
  nodeSelector: {kubernetes.io/hostname: bosun-vm}
  terminationGracePeriodSeconds: 60
  containers:
  - name: c
    image: busybox
    imagePullPolicy: Never
    command: [sh, -c, 'trap "exit 0" TERM; while true; do sleep 0.2; done']
    lifecycle:
      preStop:
        exec: {command: [sh, -c, 'echo prestop > /marks/prestop-api; sync']}
    volumeMounts: [{name: marks, mountPath: /marks}]
  volumes:
  - {name: marks, hostPath: {path: /var/lib/vmtest-shutdown, type: DirectoryOrCreate}}
YAML
    fi
    nic=(-nic "user,model=virtio-net-pci,restrict=on,guestfwd=tcp:10.0.2.100:6443-cmd:/bin/busybox nc 10.250.4.1 $api_port")
elif [[ -n $bridge ]]; then
    # Tap mode: a tap device in the caller's bridge (removed at the end whatever happens); the
    # guest's address and gateway go in the payload (suite.sh's net_up).
    if ip link show "$tap" >/dev/null 2>&1; then log "$tap exists (another VM run?)"; exit 1; fi
    ip tuntap add dev "$tap" mode tap
    tap_made=1
    ip link set "$tap" master "$bridge"
    ip link set "$tap" up
    printf 'ADDRESS=%s\nGATEWAY=%s\n' "$VM_IP" "$gateway" >"$payload/net"
    log "tap mode: $tap in $bridge, guest $VM_IP via $gateway"
    nic=(-netdev "tap,id=n0,ifname=$tap,script=no,downscript=no" -device "virtio-net-pci,netdev=n0")
else
    nic=(-nic none)
fi
tar -cf "$work/payload.tar" -C "$payload" .
# 3. The guest (cached under ~/.cache/bosun/vm/<version>).
log "guest ($(secs))"
guest=$("$here/build-guest.sh")
log "guest $guest"

# 4. Boot. KVM only where the CPU really offers it (the host's paravirtual /dev/kvm cannot run a
# stock kernel), QEMU's software emulation otherwise.
if grep -qwE 'vmx|svm' /proc/cpuinfo && [[ -w /dev/kvm ]]; then
    accel=(-accel kvm -cpu host)
else
    accel=(-accel "tcg,thread=multi" -cpu max)
fi
serial="$work/serial.log"
# The root disk: a throwaway overlay (snapshot=on), or with the node shutdown test a sparse copy
# the guest writes to, read back below once the guest is off (the cache stays pristine).
if [[ $subset != ci ]] && has_test node_shutdown; then
    cp --sparse=always "$guest/rootfs.ext4" "$work/rootfs.ext4"
    rootfs=(-drive "file=$work/rootfs.ext4,if=virtio,format=raw")
else
    rootfs=(-drive "file=$guest/rootfs.ext4,if=virtio,format=raw,snapshot=on")
fi
log "booting (${accel[*]}) ($(secs))"
boot=$(date +%s)
set +e
timeout --foreground -k 10 "${VM_TIMEOUT:-1500}" qemu-system-x86_64 -nodefaults -no-user-config \
    "${accel[@]}" -m "${VM_MEM:-2048}" -smp "${VM_CPUS:-2}" \
    -kernel "$guest/vmlinux" -initrd "$guest/initramfs.gz" \
    -append "console=ttyS0 loglevel=4 panic=-1 cgroup_no_v1=all systemd.unified_cgroup_hierarchy=1 systemd.show_status=auto" \
    "${rootfs[@]}" \
    -drive "file=$work/payload.tar,if=virtio,format=raw,readonly=on" \
    "${nic[@]}" -display none -serial "file:$serial" -no-reboot
qrc=$?
set -e
log "qemu exited with $qrc after $(($(date +%s) - boot))s (total $(secs))"

grep -a '^VMTEST' "$serial" | sed 's/\r$//' || true
# The cluster part as the API saw it: the guest registered as a Node, the scheduler bound the pod
# to it and its Running status with an address on the guest's bridge reached the apiserver.
host_failed=0
if [[ $cluster == 1 ]]; then
    node=$(k get node bosun-vm -o json 2>/dev/null || true)
    pod=$(k get pod vm-pod -o json 2>/dev/null || echo '{}')
    bound=$(jq -r '.spec.nodeName // ""' <<<"$pod")
    # Running, or (the node shutdown test ends every pod) ended after it ran.
    running=$(jq -r '.status.containerStatuses[0].state | .running != null or .terminated.startedAt != null' <<<"$pod")
    ip=$(jq -r '.status.podIP // ""' <<<"$pod")
    if [[ -n $node && $bound == bosun-vm && $running == true && $ip == 10.244.* ]]; then
        echo "HOST: PASS cluster_pod_in_api (node bosun-vm registered, pod bound to it, Running, podIP $ip)"
    else
        host_failed=$((host_failed + 1))
        echo "HOST: FAIL cluster_pod_in_api (node: ${node:+registered}${node:-missing}, nodeName '$bound', running $running, podIP '$ip')"
        k get nodes -o wide 2>&1 | sed 's/^/    /'
        k get events -A 2>&1 | tail -15 | sed 's/^/    /'
    fi
fi
# Graceful node shutdown, after the guest's `systemctl poweroff`: the preStop marks on the guest's
# disk (its image mounted read-only), the statuses bosun reported while logind waited, and with
# the cluster part the pod's status and the Node's Ready condition in the API.
host_tests=0
if [[ $subset != ci ]] && has_test node_shutdown && grep -aq '^VMTEST-SHUTDOWN poweroff' "$serial"; then
    host_tests=$((host_tests + 1))
    mkdir -p "$work/disk"
    marks=""
    if mount -o ro,loop,noload "$work/rootfs.ext4" "$work/disk" 2>/dev/null; then
        for f in prestop-static term-static prestop-api; do
            [[ -s $work/disk/var/lib/vmtest-shutdown/$f ]] && marks+="$f "
        done
        umount "$work/disk"
    else
        # No loop device: read the image with debugfs (read-only, catastrophic mode).
        for f in prestop-static term-static prestop-api; do
            debugfs -c -R "cat /var/lib/vmtest-shutdown/$f" "$work/rootfs.ext4" 2>/dev/null | grep -q . && marks+="$f "
        done
    fi
    want_marks="prestop-static term-static "
    [[ $cluster == 1 ]] && want_marks+="prestop-api "
    if [[ $marks == "$want_marks" ]]; then
        echo "HOST: PASS node_shutdown_prestop_marks (on the guest's disk: $marks)"
    else
        host_failed=$((host_failed + 1))
        echo "HOST: FAIL node_shutdown_prestop_marks (found '$marks', want '$want_marks')"
    fi
    host_tests=$((host_tests + 1))
    message="Pod was terminated in response to imminent node shutdown."
    ended() { # ended JSON: phase Failed, reason Terminated, the message, DisruptionTarget
        jq -e --arg m "$message" '.phase == "Failed" and .reason == "Terminated" and .message == $m
            and .disruption.status == "True" and .disruption.reason == "TerminationByKubelet"
            and .disruption.message == $m' <<<"$1" >/dev/null 2>&1
    }
    static=$(grep -a '^VMTEST-SHUTDOWN status .*"name":"shutdown-' "$serial" | tail -1 | sed 's/^VMTEST-SHUTDOWN status //; s/\r$//' || true)
    if ended "$static"; then
        echo "HOST: PASS node_shutdown_status (bosun pods in the guest during the shutdown: $static)"
    else
        host_failed=$((host_failed + 1))
        echo "HOST: FAIL node_shutdown_status (bosun pods in the guest: '${static}')"
        grep -a '^VMTEST-SHUTDOWN' "$serial" | sed 's/^/    /'
    fi
    if [[ $cluster == 1 ]]; then
        host_tests=$((host_tests + 1))
        api=$(k get pod vm-shutdown -o json 2>/dev/null |
            jq -c '.status | {phase, reason, message, disruption: ([.conditions[]? | select(.type == "DisruptionTarget")][0])}' || true)
        ready=$(k get node bosun-vm -o json 2>/dev/null |
            jq -c '[.status.conditions[] | select(.type == "Ready")][0] | {status, reason, message}' || true)
        if ended "$api" && jq -e '.status == "False" and .reason == "KubeletNotReady" and .message == "node is shutting down"' <<<"$ready" >/dev/null 2>&1; then
            echo "HOST: PASS node_shutdown_in_api (pod vm-shutdown: $api; Node Ready: $ready)"
        else
            host_failed=$((host_failed + 1))
            echo "HOST: FAIL node_shutdown_in_api (pod vm-shutdown: '$api'; Node Ready: '$ready')"
        fi
    fi
elif [[ $subset != ci ]] && has_test node_shutdown; then
    host_tests=$((host_tests + 1)); host_failed=$((host_failed + 1))
    echo "HOST: FAIL node_shutdown (the guest never started its graceful poweroff)"
fi
summary=$(grep -a 'VMTEST: [0-9]* passed, [0-9]* failed' "$serial" | tail -1 | sed 's/^VMTEST: //; s/\r$//')
summary=${summary:-0 passed, 1 failed}
[[ $cluster == 1 ]] && host_tests=$((host_tests + 1))
if ((host_tests)); then
    p=${summary%% passed*}; f=${summary#*passed, }; f=${f%% failed*}
    summary="$((p + host_tests - host_failed)) passed, $((f + host_failed)) failed"
fi
if ! grep -aq '^VMTEST-DONE rc=0' "$serial" || ((host_failed)); then
    if ! grep -aq '^VMTEST-DONE' "$serial"; then
        log "the suite did not finish (qemu rc $qrc); last serial lines:"
        tail -40 "$serial" >&2
    fi
    echo "$summary"
    if [[ -z ${KEEP:-} ]]; then
        cp "$serial" /tmp/bosun-vm-serial.log
        log "serial log: /tmp/bosun-vm-serial.log"
    fi
    exit 1
fi
echo "$summary"
