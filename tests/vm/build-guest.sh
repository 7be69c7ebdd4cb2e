#!/usr/bin/env bash
# Builds (once, cached by version) the Debian guest of the VM tier and prints its folder:
#   vmlinux         Debian's kernel, uncompressed from the bzImage's xz stream (boots faster)
#   initramfs.gz    busybox + the virtio/ext4 modules; mounts /dev/vda and switch_roots to systemd
#   rootfs.ext4     debootstrap bookworm minbase + systemd, a module subset, the test runner unit
#
#   tests/vm/build-guest.sh            # prints ~/.cache/bosun/vm/<version>
# Needs: apt-get (Debian), debootstrap, mke2fs, cpio, xz, busybox-static, kmod (modprobe/depmod).
# Any cached guest of the current RECIPE is reused, even if Debian has a newer kernel since.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
RECIPE=r4                      # bump when this script or guest/ changes what is built
SUITE=bookworm
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
cache=${BOSUN_CACHE:-$HOME/.cache/bosun}/vm
# The guest files (unit, entry script) are part of the recipe: hash them into the version.
recipe_hash=$( (cat "$0" "$here"/guest/*) | sha256sum | cut -c1-8)

for d in "$cache"/"$SUITE-$RECIPE-$recipe_hash"-*/; do
    if [[ -f $d/done ]]; then echo "${d%/}"; exit 0; fi
done

log() { echo "build-guest: $*" >&2; }
for tool in debootstrap mke2fs cpio xz depmod modprobe; do
    command -v "$tool" >/dev/null || { log "$tool missing (apt-get install debootstrap e2fsprogs cpio xz-utils kmod)"; exit 1; }
done
[[ -x /bin/busybox ]] && /bin/busybox --list | grep -qx switch_root ||
    { log "/bin/busybox (busybox-static) missing"; exit 1; }

# The kernel package behind linux-image-amd64 (refresh the lists if they are missing).
kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9].*\)/\1/p' | head -1)
if [[ -z $kpkg ]]; then
    apt-get update -qq >&2
    kpkg=$(apt-cache depends linux-image-amd64 | sed -n 's/^ *Depends: \(linux-image-[0-9].*\)/\1/p' | head -1)
fi
kver=${kpkg#linux-image-}
out="$cache/$SUITE-$RECIPE-$recipe_hash-$kver"
work="$out.tmp"
rm -rf "$work"; mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
log "building $out (kernel $kpkg)"

# 1. Kernel: download and unpack, never install into the host.
(cd "$work" && apt-get download "$kpkg" >/dev/null 2>&1) || { log "apt-get download $kpkg failed"; exit 1; }
dpkg-deb -x "$work"/"$kpkg"_*.deb "$work/k"
bz="$work/k/boot/vmlinuz-$kver"
off=$(grep -abo $'\xfd7zXZ\x00' "$bz" | head -1 | cut -d: -f1)
tail -c +"$((off + 1))" "$bz" | xz -dc > "$work/vmlinux" 2>/dev/null || true
if ! head -c 4 "$work/vmlinux" | grep -q $'\x7fELF'; then
    log "could not uncompress the kernel, using the bzImage"
    cp "$bz" "$work/vmlinux"
fi

# 2. Modules: only what the guest needs, with their dependencies, for initramfs and rootfs.
boot_mods=(virtio_pci virtio_blk ext4)
# Pods: overlay rootfs, veth pairs on a bridge (the CNI bridge plugin), iptables-nft for ipMasq and
# portmap (all of netfilter: the kernel asks modprobe for what a rule needs), and the NIC of the
# cluster part (QEMU user networking); vxlan for flannel's VXLAN backend between the nodes
# (tests/kubeadm/join-vm.sh: the kernel loads it through modprobe when flanneld makes flannel.1).
run_mods=(overlay veth bridge br_netfilter virtio_net vxlan)
while read -r ko; do
    m=$(basename "$ko"); run_mods+=("${m%.ko*}")
done < <(cd "$work/k/lib/modules/$kver/kernel" && find net/netfilter net/ipv4/netfilter net/ipv6/netfilter net/bridge -name '*.ko*')
mods="$work/mods"
mkdir -p "$mods/lib/modules/$kver"
cp "$work/k/lib/modules/$kver"/modules.{order,builtin,builtin.modinfo} "$mods/lib/modules/$kver/"
depmod -b "$work/k" "$kver"   # the package ships no modules.dep (made at install time)
resolve() { # resolve ROOT MODULE: the module's files, dependencies first
    local files
    files=$(modprobe -d "$1" -S "$kver" --show-depends "$2" | awk '$1 == "insmod" {print $2}')
    [[ -n $files ]] || { log "module $2 not found under $1"; return 1; }
    echo "$files"
}
for m in "${boot_mods[@]}" "${run_mods[@]}"; do
    files=$(resolve "$work/k" "$m") || { [[ " ${boot_mods[*]} " != *" $m "* ]] || exit 1; continue; }
    for f in $files; do
        rel=${f#"$work/k"}
        mkdir -p "$mods$(dirname "$rel")"
        cp "$f" "$mods$rel"
    done
done
depmod -b "$mods" "$kver"

# 3. initramfs: busybox, the boot modules in load order, /init.
ir="$work/initramfs"
mkdir -p "$ir"/{bin,dev,proc,sys,newroot}
cp /bin/busybox "$ir/bin/busybox"
cp -a "$mods/lib" "$ir/lib"
: > "$ir/modules.load"
for m in "${boot_mods[@]}"; do
    files=$(resolve "$mods" "$m")
    for f in $files; do
        echo "${f#"$mods"}" >> "$ir/modules.load"
    done
done
# Shared dependencies (virtio_ring, ...) once, in first-needed order.
awk '!seen[$0]++' "$ir/modules.load" > "$ir/modules.load.new" && mv "$ir/modules.load.new" "$ir/modules.load"
cp "$here/guest/init" "$ir/init"
chmod 755 "$ir/init"
(cd "$ir" && find . | cpio -o -H newc --quiet | gzip -1) > "$work/initramfs.gz"

# 4. rootfs: debootstrap with systemd, then our files.
rootfs="$work/rootfs"
log "debootstrap $SUITE (minbase + systemd)"
# apparmor: apparmor_parser and the abstractions its profiles include, for the AppArmor test
# (Debian's kernel enables the LSM by default). busybox-static: the security test binary copies
# /bin/busybox into its containers' layer.
debootstrap --variant=minbase \
    --include=systemd,systemd-sysv,dbus,iproute2,util-linux,kmod,busybox-static,procps,jq,containernetworking-plugins,iptables,apparmor \
    "$SUITE" "$rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 ||
    { tail -20 "$work/debootstrap.log" >&2; log "debootstrap failed"; exit 1; }
cp -a "$mods/lib/modules" "$rootfs/lib/"
echo bosun-vm > "$rootfs/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 bosun-vm\n' > "$rootfs/etc/hosts"
: > "$rootfs/etc/fstab"
printf 'overlay\nveth\nbridge\nbr_netfilter\nvirtio_net\n' > "$rootfs/etc/modules-load.d/bosun-vm.conf"
# No udev in the guest: nothing would ever announce the tty devices, so no gettys; no timers.
for u in serial-getty@ttyS0.service getty@tty1.service getty.target apt-daily.timer \
         apt-daily-upgrade.timer dpkg-db-backup.timer e2scrub_all.timer fstrim.timer \
         systemd-timesyncd.service; do
    ln -sf /dev/null "$rootfs/etc/systemd/system/$u"
done
install -m 0755 "$here/guest/vmtest-entry" "$rootfs/usr/local/sbin/vmtest-entry"
install -m 0644 "$here/guest/vmtest.service" "$rootfs/etc/systemd/system/vmtest.service"
mkdir -p "$rootfs/etc/systemd/system/multi-user.target.wants"
ln -sf /etc/systemd/system/vmtest.service "$rootfs/etc/systemd/system/multi-user.target.wants/vmtest.service"
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
mke2fs -q -t ext4 -L rootfs -d "$rootfs" "$work/rootfs.ext4" 2G >&2

mkdir -p "$out"
mv "$work/vmlinux" "$work/initramfs.gz" "$work/rootfs.ext4" "$out/"
echo "$kver" > "$out/kernel-version"
touch "$out/done"
# Older guests of any recipe are dropped (they are 2 GB sparse files each).
for d in "$cache"/*/; do [[ ${d%/} == "$out" ]] || rm -rf "${d%/}"; done
log "done: $out"
echo "$out"
