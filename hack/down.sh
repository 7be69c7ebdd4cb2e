#!/usr/bin/env bash
# Undoes `make up`: deletes the pods through the API (gracefully, bosun runs their preStop hooks),
# removes the static pods, stops bosun, and stops the control plane. Nothing is left running.
set -uo pipefail
cd "$(dirname "$0")/.."
source hack/env.sh
source tests/cluster/env.sh
CP=/var/lib/bosun/cluster
export KUBECONFIG=$CP/admin.kubeconfig
rm -f /etc/bosun/manifests/*.yaml /etc/bosun/manifests/*.json
agent() { pgrep -f "^bosun --config /etc/bosun/config.yaml"; }
if agent >/dev/null && [ -f "$KUBECONFIG" ]; then
  "$K8S_BIN/kubectl" delete -f examples/cluster/ --ignore-not-found --wait=false >/dev/null 2>&1
  "$K8S_BIN/kubectl" delete pods --all -A --wait=false >/dev/null 2>&1
  for _ in $(seq 1 300); do
    n=$(ls /run/bosun/pods 2>/dev/null | wc -l)
    [ "$n" = 0 ] && break
    sleep 0.2
  done
fi
if agent >/dev/null; then
  pkill -TERM -f "^bosun --config /etc/bosun/config.yaml"
  for _ in $(seq 1 50); do agent >/dev/null || break; sleep 0.1; done
fi
# A standalone bosun from an older `make up`.
pkill -TERM -f "bosun standalone" 2>/dev/null
[ -d "$CP" ] && bash tests/cluster/down.sh --purge "$CP"
# The node identity belonged to that control plane.
rm -rf /var/lib/kubelet/kubeconfig /var/lib/kubelet/pki
ip link del bosun0 2>/dev/null
if [ -f /run/bosun-registry.pid ]; then
  kill "$(cat /run/bosun-registry.pid)" 2>/dev/null
  rm -f /run/bosun-registry.pid
fi
echo "pods left: $(ls /run/bosun/pods 2>/dev/null | wc -l)"
