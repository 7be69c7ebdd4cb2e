#!/usr/bin/env bash
# Removes the example pods (gracefully, through bosun) and stops bosun.
set -uo pipefail
rm -f /etc/bosun/manifests/*.yaml /etc/bosun/manifests/*.json
if pgrep -f "bosun standalone" >/dev/null; then
  for _ in $(seq 1 300); do
    n=$(ls /run/bosun/pods 2>/dev/null | wc -l)
    [ "$n" = 0 ] && break
    sleep 0.2
  done
  pkill -TERM -f "bosun standalone"
  for _ in $(seq 1 50); do pgrep -f "bosun standalone" >/dev/null || break; sleep 0.1; done
fi
echo "pods left: $(ls /run/bosun/pods 2>/dev/null | wc -l)"
