#!/usr/bin/env bash
# Removes the example pods (gracefully, through bosun) and stops bosun.
set -uo pipefail
rm -f /etc/bosun/manifests/*.yaml /etc/bosun/manifests/*.json
if pgrep -x bosun >/dev/null; then
  for _ in $(seq 1 300); do
    n=$(ls /run/bosun/pods 2>/dev/null | wc -l)
    [ "$n" = 0 ] && break
    sleep 0.2
  done
  pkill -TERM -x bosun
fi
echo "pods left: $(ls /run/bosun/pods 2>/dev/null | wc -l)"
