#!/usr/bin/env bash
# The VM tier: boots a fresh Debian guest (systemd, pure cgroup v2) under QEMU, installs the
# freshly built bosun .deb with dpkg -i and runs suite.sh there. Prints the suite's lines, a
# final "N passed, M failed" line and exits non-zero on any failure.
#
#   tests/vm/run.sh                 # build packages + guest (cached) + busybox layout, boot, test
#   BOSUN_DEB=path.deb tests/vm/run.sh   # test that .deb instead of building one
#   VM_TIMEOUT=1200 VM_MEM=2048 VM_CPUS=2 KEEP=1 (keep the work folder with serial.log)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
here="$root/tests/vm"
cd "$root"
source hack/env.sh
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

work=$(mktemp -d /tmp/bosun-vm.XXXXXX)
if [[ -z ${KEEP:-} ]]; then trap 'rm -rf "$work"' EXIT; else log "keeping $work"; fi
payload="$work/payload"
mkdir -p "$payload"

# 1. The package under test.
if [[ -n ${BOSUN_DEB:-} ]]; then
    deb=$BOSUN_DEB
else
    log "building packages ($(secs))"
    deb=$(packaging/build.sh | grep '\.deb$')
fi
cp "$deb" "$payload/bosun.deb"
# 2. The test image and the suite.
tests/images/build-busybox.sh "$payload/busybox" >/dev/null
cp "$here/suite.sh" "$payload/suite.sh"
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
    accel=(-accel tcg,thread=multi -cpu max)
fi
serial="$work/serial.log"
log "booting (${accel[*]}) ($(secs))"
boot=$(date +%s)
set +e
timeout --foreground -k 10 "${VM_TIMEOUT:-1500}" qemu-system-x86_64 -nodefaults -no-user-config \
    "${accel[@]}" -m "${VM_MEM:-2048}" -smp "${VM_CPUS:-2}" \
    -kernel "$guest/vmlinux" -initrd "$guest/initramfs.gz" \
    -append "console=ttyS0 loglevel=4 panic=-1 cgroup_no_v1=all systemd.unified_cgroup_hierarchy=1 systemd.show_status=auto" \
    -drive "file=$guest/rootfs.ext4,if=virtio,format=raw,snapshot=on" \
    -drive "file=$work/payload.tar,if=virtio,format=raw,readonly=on" \
    -nic none -display none -serial "file:$serial" -no-reboot
qrc=$?
set -e
log "qemu exited with $qrc after $(($(date +%s) - boot))s (total $(secs))"

grep -a '^VMTEST' "$serial" | sed 's/\r$//' || true
if ! grep -aq '^VMTEST-DONE rc=0' "$serial"; then
    if ! grep -aq '^VMTEST-DONE' "$serial"; then
        log "the suite did not finish (qemu rc $qrc); last serial lines:"
        tail -40 "$serial" >&2
    fi
    summary=$(grep -a 'VMTEST: [0-9]* passed, [0-9]* failed' "$serial" | tail -1 | sed 's/^VMTEST: //; s/\r$//')
    echo "${summary:-0 passed, 1 failed}"
    if [[ -z ${KEEP:-} ]]; then
        cp "$serial" /tmp/bosun-vm-serial.log
        log "serial log: /tmp/bosun-vm-serial.log"
    fi
    exit 1
fi
grep -a 'VMTEST: [0-9]* passed, [0-9]* failed' "$serial" | tail -1 | sed 's/^VMTEST: //; s/\r$//'
