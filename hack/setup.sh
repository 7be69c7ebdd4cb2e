#!/usr/bin/env bash
# Installs what building and testing bosun needs on a fresh Debian machine (idempotent).
set -euo pipefail
need=()
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
dpkg -s containernetworking-plugins >/dev/null 2>&1 || need+=(containernetworking-plugins)
# libseccomp's headers and library: libcontainer's seccomp support links it.
dpkg -s libseccomp-dev >/dev/null 2>&1 || need+=(libseccomp-dev)
for pair in jq:jq strace:strace nsenter:util-linux ip:iproute2 gzip:gzip sha256sum:coreutils skopeo:skopeo umoci:umoci docker-registry:docker-registry htpasswd:apache2-utils podman:podman runc:runc python3:python3 c++:g++; do
  cmd=${pair%%:*}; pkg=${pair#*:}
  command -v "$cmd" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "setup: cargo not found; install Rust (rustup) first" >&2
    exit 1
  fi
fi
