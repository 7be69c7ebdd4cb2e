#!/usr/bin/env bash
# Stops or starts single components of a control plane that up.sh started in DIR, with the same
# command line, data and certificates (for tests like "control plane down for a minute").
# Usage: component.sh DIR stop|start NAME...   NAME: etcd kube-apiserver kube-controller-manager
#        kube-scheduler kube-proxy. `start` does not wait for readiness.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=env.sh
. "$here/env.sh"
DIR=$(cd "${1:?usage: component.sh DIR stop|start NAME...}" && pwd)
op=${2:?usage: component.sh DIR stop|start NAME...}
shift 2
ours() {
  local exe
  exe=$(readlink "/proc/$1/exe" 2>/dev/null) || return 1
  [[ "$exe" == "$K8S_BIN"/* ]]
}
for name in "$@"; do
  pidf=$DIR/pids/$name.pid cmdf=$DIR/state/cmd.$name
  [ -f "$cmdf" ] || { echo "component: $name was not started by up.sh in $DIR" >&2; exit 1; }
  case "$op" in
    stop)
      [ -f "$pidf" ] || continue
      pid=$(cat "$pidf")
      if ours "$pid"; then
        kill -TERM "$pid"
        for _ in $(seq 1 100); do ours "$pid" || break; sleep 0.1; done
        ours "$pid" && kill -KILL "$pid"
        for _ in $(seq 1 50); do ours "$pid" || break; sleep 0.1; done
      fi
      rm -f "$pidf"
      echo "component: stopped $name" >&2
      ;;
    start)
      if [ -f "$pidf" ] && ours "$(cat "$pidf")"; then
        echo "component: $name is already running" >&2
        continue
      fi
      eval "setsid $(cat "$cmdf") </dev/null >>\"$DIR/logs/$name.log\" 2>&1 &"
      echo $! >"$pidf"
      echo "component: started $name (pid $!)" >&2
      ;;
    *) echo "component: unknown operation $op" >&2; exit 1 ;;
  esac
done
