#!/usr/bin/env bash
# Checks the two packages against each other without installing anything on this host:
# the .deb unpacked with dpkg-deb -x, the .rpm installed into a throwaway root with
# `rpm --root DIR -i --nodeps --noscripts`. Compares file lists, modes and contents (the Debian
# and RPM places for the flags file are mapped onto each other), conffiles, dependencies and
# maintainer scripts, and runs `systemd-analyze verify` on the unit. Exits non-zero on a mismatch.
#
#   packaging/check.sh [DEB RPM]   # default: the newest packages in $CARGO_TARGET_DIR/packages
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/env.sh
for tool in dpkg-deb rpm; do
    command -v "$tool" >/dev/null || { echo "check.sh: $tool missing (apt-get install rpm)" >&2; exit 1; }
done
deb=${1:-$(ls -t "$CARGO_TARGET_DIR"/packages/bosun_*.deb 2>/dev/null | head -1)}
rpmf=${2:-$(ls -t "$CARGO_TARGET_DIR"/packages/bosun-[0-9]*.rpm 2>/dev/null | head -1)}
[[ -f $deb && -f $rpmf ]] || { echo "check.sh: no packages (run packaging/build.sh)" >&2; exit 1; }
echo "check.sh: $deb"
echo "check.sh: $rpmf"

t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
fail=0
bad() { echo "MISMATCH: $*"; fail=1; }
ok() { echo "ok: $*"; }

dpkg-deb -x "$deb" "$t/deb"
dpkg-deb -e "$deb" "$t/control"
mkdir -p "$t/rpm"
rpm --root "$t/rpm" --dbpath /var/lib/rpm --initdb
rpm --root "$t/rpm" --dbpath /var/lib/rpm -i --nodeps --noscripts --nosignature "$rpmf" 2>"$t/rpm.err" ||
    { cat "$t/rpm.err"; bad "rpm -i into a throwaway root failed"; }
rm -rf "$t/rpm/var/lib/rpm" "$t/rpm/usr/lib/sysimage"

# Files: "<mode> <path>" for regular files and symlinks; Debian-only documents are dropped and
# /etc/default/bosun is the RPM world's /etc/sysconfig/bosun.
listing() { # listing ROOT
    (cd "$1" && find . \( -type f -o -type l \) -printf '%m %p\n') | sed 's| \./| /|' |
        sed -e 's| /etc/default/bosun$| /etc/sysconfig/bosun|' -e 's| /lib/systemd/| /usr/lib/systemd/|' |
        grep -vE ' /usr/share/doc/bosun/(copyright|changelog.*)$' | sort -k2
}
listing "$t/deb" > "$t/deb.files"
listing "$t/rpm" > "$t/rpm.files"
if diff -u "$t/deb.files" "$t/rpm.files" > "$t/files.diff"; then
    ok "same $(wc -l < "$t/deb.files") files with the same modes"
else
    bad "file lists differ (- deb, + rpm):"; sed -n '3,$p' "$t/files.diff"
fi
for f in $(awk '{print $2}' "$t/deb.files"); do
    src=$f; [[ $f == /etc/sysconfig/bosun ]] && src=/etc/default/bosun
    [[ -e $t/deb$src ]] || src=${src/#\/usr\/lib\/systemd/\/lib\/systemd}
    if [[ -f $t/rpm$f ]] && ! cmp -s "$t/deb$src" "$t/rpm$f"; then bad "content of $f differs"; fi
done
[[ $fail == 0 ]] && ok "same contents (binary, unit, config, flags file, docs)"

# Both binaries, executable: the agent and the keeper it runs for every container (a fixed-address
# executable, so that its data stays shared between keepers).
for b in bosun bosun-keeper; do
    [[ -x $t/deb/usr/bin/$b ]] || bad "no executable /usr/bin/$b in the deb"
done
if readelf -h "$t/deb/usr/bin/bosun-keeper" 2>/dev/null | grep -q 'Type: *EXEC'; then
    ok "bosun-keeper is a fixed-address executable"
else
    bad "bosun-keeper is not linked -no-pie (agent/build.rs)"
fi

# The unit: present in both, identical (checked above), and valid.
unit=/usr/lib/systemd/system/bosun.service
[[ -f $t/deb$unit ]] || bad "no $unit in the deb"
for want in 'KillMode=process' 'Delegate=yes' 'Restart=always' 'LimitNOFILE=1048576' \
            'After=network-online.target' 'ConditionPathExists=|/etc/bosun/standalone' \
            'EnvironmentFile=-/etc/default/bosun' 'EnvironmentFile=-/etc/sysconfig/bosun'; do
    grep -qxF "$want" "$t/deb$unit" || bad "unit lacks $want"
done
if command -v systemd-analyze >/dev/null; then
    # verify resolves ExecStart against the real /usr/bin: check a copy whose ExecStart points into
    # the unpacked tree (same unit otherwise).
    mkdir -p "$t/verify"
    sed "s|^ExecStart=/usr/bin/bosun|ExecStart=$t/deb/usr/bin/bosun|" "$t/deb$unit" > "$t/verify/bosun.service"
    if out=$(systemd-analyze verify "$t/verify/bosun.service" 2>&1); then
        ok "systemd-analyze verify"
    else
        echo "$out"; bad "systemd-analyze verify failed"
    fi
fi

# Conffiles: dpkg's conffiles and rpm's %config(noreplace) files, mapped like the file list.
sed -e 's|^/etc/default/bosun$|/etc/sysconfig/bosun|' "$t/control/conffiles" | sort > "$t/deb.conf"
rpm -qpc --nosignature "$rpmf" 2>/dev/null | sort > "$t/rpm.conf"
if diff -u "$t/deb.conf" "$t/rpm.conf" >/dev/null; then
    ok "conffiles: $(tr '\n' ' ' < "$t/rpm.conf")"
else
    bad "conffiles differ: deb [$(tr '\n' ' ' < "$t/deb.conf")] rpm [$(tr '\n' ' ' < "$t/rpm.conf")]"
fi
noreplace=$(rpm -qp --nosignature --qf '[%{FILEFLAGS:fflags} %{FILENAMES}\n]' "$rpmf" | awk 'NF == 2 && $1 ~ /c/ && $1 ~ /n/ {print $2}' | sort)
[[ $noreplace == "$(cat "$t/rpm.conf")" ]] || bad "rpm config files are not all noreplace: $noreplace"

# Dependencies: the C library, libseccomp (seccomp filters) and the CNI plugins (called for
# every pod not on the host network) in both.
depends=$(dpkg-deb -f "$deb" Depends)
requires=$(rpm -qpR --nosignature "$rpmf" | tr '\n' ' ')
echo "deb Depends: $depends"
echo "rpm Requires: $requires"
[[ $depends == *libc6* ]] || bad "deb does not depend on libc6"
[[ $requires == *libc.so.6* || $requires == *glibc* ]] || bad "rpm does not require the C library"
[[ $depends == *containernetworking-plugins* ]] || bad "deb does not depend on containernetworking-plugins"
[[ $requires == *containernetworking-plugins* ]] || bad "rpm does not require containernetworking-plugins"
[[ $depends == *libseccomp2* ]] || bad "deb does not depend on libseccomp2"
[[ $requires == *libseccomp* ]] || bad "rpm does not require libseccomp"

# Maintainer scripts: enable/start on install, stop on removal, in both formats.
for s in postinst prerm postrm; do [[ -x $t/control/$s ]] || bad "deb has no $s"; done
grep -q 'deb-systemd-helper enable bosun.service' "$t/control/postinst" || bad "deb postinst does not enable the unit"
grep -q 'stop bosun.service' "$t/control/prerm" || bad "deb prerm does not stop the unit"
scripts=$(rpm -qp --scripts --nosignature "$rpmf")
for s in postinstall preuninstall postuninstall; do
    grep -q "^$s scriptlet" <<< "$scripts" || bad "rpm has no $s scriptlet"
done
grep -q 'systemctl enable bosun.service' <<< "$scripts" || bad "rpm %post does not enable the unit"
grep -q 'systemctl stop bosun.service' <<< "$scripts" || bad "rpm %preun does not stop the unit"
[[ $fail == 0 ]] && ok "maintainer scripts"

if [[ $fail != 0 ]]; then echo "check.sh: FAILED"; exit 1; fi
echo "check.sh: deb and rpm agree"
