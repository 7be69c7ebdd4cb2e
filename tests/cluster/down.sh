#!/usr/bin/env bash
# Stops the control plane that up.sh started in DIR (default /tmp/bosun-cluster): every process
# in DIR/pids, kube-proxy's iptables rules (kube-proxy --cleanup), the service CIDR route and the
# advertise-address interface. Keeps DIR (logs, certificates) unless --purge is given. Safe to run twice.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=env.sh
. "$here/env.sh"

purge=0
args=()
for a in "$@"; do
  case "$a" in
    --purge) purge=1 ;;
    *) args+=("$a") ;;
  esac
done
DIR=${args[0]:-${TMPDIR:-/tmp}/bosun-cluster}
[ -d "$DIR" ] || { echo "down: $DIR does not exist" >&2; exit 0; }
DIR=$(cd "$DIR" && pwd)
PIDS=$DIR/pids
rc=0
log() { echo "down: $*" >&2; }

# Our process: the pid is alive and runs one of the binaries from K8S_BIN (not a reused pid).
ours() {
  local pid=$1 exe
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  case "$exe" in "$K8S_BIN"/*) return 0 ;; *) return 1 ;; esac
}

# Stop in reverse order of start: clients first, etcd last.
for name in kube-proxy kube-scheduler kube-controller-manager kube-apiserver etcd; do
  f=$PIDS/$name.pid
  [ -f "$f" ] || continue
  pid=$(cat "$f")
  if ours "$pid"; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 100); do ours "$pid" || break; sleep 0.1; done
    if ours "$pid"; then
      log "$name (pid $pid) ignored SIGTERM; SIGKILL"
      kill -KILL "$pid" 2>/dev/null
      for _ in $(seq 1 50); do ours "$pid" || break; sleep 0.1; done
    fi
    if ours "$pid"; then log "$name (pid $pid) is still running"; rc=1; else log "stopped $name"; fi
  fi
  ours "$pid" || rm -f "$f"
done

if [ -f "$DIR/state/kube-proxy" ]; then
  # kube-proxy --cleanup leaves the KUBE-FIREWALL chain: kube-proxy creates it as a copy of the
  # kubelet's, and cleanup treats it as the kubelet's. There is no kubelet here: remove it too.
  for ipt in iptables ip6tables; do
    command -v "$ipt" >/dev/null || continue
    while "$ipt" -w -t filter -D INPUT -j KUBE-FIREWALL 2>/dev/null; do :; done
    while "$ipt" -w -t filter -D OUTPUT -j KUBE-FIREWALL 2>/dev/null; do :; done
    "$ipt" -w -t filter -F KUBE-FIREWALL 2>/dev/null && "$ipt" -w -t filter -X KUBE-FIREWALL 2>/dev/null
  done
  if "$K8S_BIN/kube-proxy" --cleanup >>"$DIR/logs/kube-proxy-cleanup.log" 2>&1; then
    rm -f "$DIR/state/kube-proxy"
    log "removed kube-proxy's rules"
  else
    log "kube-proxy --cleanup failed; see $DIR/logs/kube-proxy-cleanup.log"
    rc=1
  fi
fi

if [ -f "$DIR/state/route" ]; then
  cidr=$(cat "$DIR/state/route")
  iface=$(cat "$DIR/state/iface" 2>/dev/null || echo none)
  if ip route show "$cidr" dev "$iface" 2>/dev/null | grep -q .; then
    ip route del "$cidr" dev "$iface" || rc=1
  fi
  ip route show "$cidr" dev "$iface" 2>/dev/null | grep -q . || { rm -f "$DIR/state/route"; log "removed route $cidr"; }
fi

if [ -f "$DIR/state/iface" ]; then
  iface=$(cat "$DIR/state/iface")
  if ip link show "$iface" >/dev/null 2>&1; then ip link del "$iface" || rc=1; fi
  ip link show "$iface" >/dev/null 2>&1 || { rm -f "$DIR/state/iface"; log "removed interface $iface"; }
fi

if [ "$purge" = 1 ] && [ "$rc" = 0 ]; then
  rm -rf "$DIR"
  log "removed $DIR"
fi
exit "$rc"
