#!/usr/bin/env bash
# `make kubeadm` / `make kubeadm-down`: tests/kubeadm/init.sh left running (or torn down), with
# bosun built first. See tests/kubeadm/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/env.sh
case ${1:-up} in
  up)
    bash hack/setup.sh
    cargo build -p bosun
    exec tests/kubeadm/init.sh up
    ;;
  down) exec tests/kubeadm/init.sh down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
