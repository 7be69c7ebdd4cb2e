#!/usr/bin/env bash
# Runs the CSI reference stack (hostpath.yaml) as pods on a node, the way upstream deploys it:
# pushes the five images build.sh made to a registry, applies the sidecars' RBAC and the
# StatefulSet, and waits until the driver is registered on the node (its CSINode entry).
#
#   deploy.sh REGISTRY ROOT_DIR DATA_DIR APISERVER_HOST:PORT NODE [HOSTPATHPLUGIN_FLAG...]
#
# REGISTRY is a plain-HTTP registry (127.0.0.1:PORT); ROOT_DIR the node's root dir (the
# kubelet's /var/lib/kubelet); DATA_DIR the driver's state folder on the host. kubectl must be
# on PATH or in $KUBECTL, with KUBECONFIG set. Prints nothing on success; on failure the pod's
# state and its containers' logs.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 5 ] || { echo "usage: $0 REGISTRY ROOT_DIR DATA_DIR APISERVER_HOST:PORT NODE [FLAG...]" >&2; exit 2; }
registry=$1 root=$2 data=$3 apiserver=$4 node=$5
shift 5
KUBECTL=${KUBECTL:-kubectl}
cache=$(bash "$here/build.sh")

# Images: sig-storage/<binary>:<tag>, as upstream names them.
for d in "$cache"/*/oci; do
    [ -f "$d/index.json" ] || continue
    stem=$(basename "$(dirname "$d")")
    bin=$(ls "$(dirname "$d")/bin")
    tag=${stem##*-}
    skopeo copy --quiet --dest-tls-verify=false "oci:$d:$tag" "docker://$registry/sig-storage/$bin:$tag"
done

args=""
for f in "$@"; do args+="- \"$f\"\n            "; done  # one list item per flag
mkdir -p "$root/plugins_registry" "$root/plugins" "$root/pods"
for f in "$cache"/*/rbac.yaml; do "$KUBECTL" apply -f "$f" >/dev/null; done
sed -e "s|@REGISTRY@|$registry|g" -e "s|@ROOT@|$root|g" -e "s|@DATA@|$data|g" \
    -e "s|@APISERVER_HOST@|${apiserver%:*}|g" -e "s|@APISERVER_PORT@|${apiserver##*:}|g" \
    -e "s|^ *@DRIVER_ARGS@\$|            $args|" "$here/hostpath.yaml" | "$KUBECTL" apply -f - >/dev/null

registered() {
    "$KUBECTL" get csinode "$node" -o jsonpath='{.spec.drivers[*].name}' 2>/dev/null |
        tr ' ' '\n' | grep -qx hostpath.csi.k8s.io
}
for _ in $(seq 1 300); do registered && exit 0; sleep 0.5; done
echo "$0: hostpath.csi.k8s.io did not register on node $node within 150 s" >&2
"$KUBECTL" get pod csi-hostpathplugin-0 -o wide >&2 || true
"$KUBECTL" describe pod csi-hostpathplugin-0 >&2 || true
for c in hostpath node-driver-registrar csi-attacher csi-provisioner csi-resizer; do
    echo "--- $c" >&2
    "$KUBECTL" logs csi-hostpathplugin-0 -c "$c" --tail 30 >&2 || true
done
exit 1
