#!/usr/bin/env bash
# Builds the release binary and both packages (.deb with cargo-deb, .rpm with cargo-generate-rpm)
# into $CARGO_TARGET_DIR/packages/ and prints their paths (one per line, on stdout), then the
# optional bosun-kubelet .deb and .rpm (bosun in the kubelet's place for kubeadm:
# /usr/bin/kubelet, kubelet.service and kubeadm's drop-in; the `kubelet` variant of both tools).
#
#   packaging/build.sh            # build (installs the two cargo tools into ~/.cargo/bin if missing)
#   NO_BUILD=1 packaging/build.sh # package the release binary already built
#   PROFILE=debug packaging/build.sh   # only a .deb, of the debug binary the test command built
#                                      (stripped): the VM tier's CI subset, without a release build
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/env.sh

CARGO_DEB_VERSION=3.8.0
CARGO_GENERATE_RPM_VERSION=0.21.1

have_tool() { # have_tool BIN VERSION: the installed tool reports VERSION
    command -v "$1" >/dev/null 2>&1 && "$1" --version 2>/dev/null | grep -qF "$2"
}
have_tool cargo-deb "$CARGO_DEB_VERSION" ||
    cargo install --locked --quiet "cargo-deb@$CARGO_DEB_VERSION" >&2
have_tool cargo-generate-rpm "$CARGO_GENERATE_RPM_VERSION" ||
    cargo install --locked --quiet "cargo-generate-rpm@$CARGO_GENERATE_RPM_VERSION" >&2

out="$CARGO_TARGET_DIR/packages"
mkdir -p "$out"

# Reproducible timestamps inside both packages: the last commit's time. Given to the packaging
# tools only: cc-rs reruns every C build script (aws-lc-sys, ring, zstd-sys...) when
# SOURCE_DATE_EPOCH changes, so exporting it to cargo build rebuilt those at every new commit.
epoch=$(git log -1 --format=%ct 2>/dev/null || date +%s)

if [[ ${PROFILE:-release} == debug ]]; then
    # cargo-deb takes the binary from <target dir>/release/: give it a target dir of its own
    # holding the stripped debug binary there.
    dbg="$out/debug-profile"
    rm -rf "$dbg"; mkdir -p "$dbg/target/release"
    # The very build the test command makes (`-p bosun` alone would unify features differently
    # and compile a second copy of many crates).
    cargo build --locked --workspace --all-targets >&2
    for b in bosun bosun-keeper; do
        strip --strip-all -o "$dbg/target/release/$b" "$CARGO_TARGET_DIR/debug/$b"
    done
    SOURCE_DATE_EPOCH=$epoch CARGO_TARGET_DIR="$dbg/target" cargo deb -p bosun --no-build --no-strip --output "$dbg" >&2
    ls -t "$dbg"/bosun_*.deb | head -1
    exit 0
fi
rm -f "$out"/bosun_*.deb "$out"/bosun-*.rpm "$out"/bosun-kubelet_*.deb "$out"/bosun-kubelet-*.rpm

if [[ -z ${NO_BUILD:-} ]]; then
    echo "build.sh: cargo build --release -p bosun" >&2
    cargo build --release --locked -p bosun >&2
fi
# The agent and its per-container keeper (agent/src/bin/keeper.rs).
for b in bosun bosun-keeper; do
    bin="$CARGO_TARGET_DIR/release/$b"
    [[ -x $bin ]] || { echo "build.sh: $bin missing (run without NO_BUILD)" >&2; exit 1; }
    # Strip the symbols once so that both packages ship the very same binaries (cargo-deb would
    # strip its copy only, cargo-generate-rpm none).
    strip --strip-all "$bin"
done
SOURCE_DATE_EPOCH=$epoch cargo deb -p bosun --no-build --no-strip --output "$out" >&2
SOURCE_DATE_EPOCH=$epoch cargo generate-rpm -p agent --output "$out" >&2
SOURCE_DATE_EPOCH=$epoch cargo deb -p bosun --variant kubelet --no-build --no-strip --output "$out" >&2
SOURCE_DATE_EPOCH=$epoch cargo generate-rpm -p agent --variant kubelet --output "$out" >&2

deb=$(ls -t "$out"/bosun_*.deb | head -1)
rpm=$(ls -t "$out"/bosun-[0-9]*.rpm | head -1)
echo "$deb"
echo "$rpm"
ls -t "$out"/bosun-kubelet_*.deb | head -1
ls -t "$out"/bosun-kubelet-*.rpm | head -1
