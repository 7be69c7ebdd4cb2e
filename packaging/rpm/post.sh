# bosun %post ($1: 1 = install, 2 = upgrade). Mirrors the Debian maintainer scripts: create the
# folders, enable the unit, start it (a no-op until /etc/bosun/standalone, /etc/bosun/kubeconfig
# or /etc/bosun/bootstrap-kubeconfig exists) or, on upgrade, restart it; KillMode=process keeps
# running pods alive through the restart.
if command -v systemd-tmpfiles >/dev/null 2>&1; then
    systemd-tmpfiles --create bosun.conf >/dev/null 2>&1 || :
else
    install -d -m 0755 /etc/kubernetes/manifests /var/log/pods /var/log/containers
    install -d -m 0711 /var/lib/bosun
    install -d -m 0750 /var/lib/kubelet
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -eq 1 ]; then
    systemctl enable bosun.service >/dev/null 2>&1 || :
    if [ -d /run/systemd/system ]; then
        systemctl start bosun.service >/dev/null 2>&1 || :
    fi
elif [ -d /run/systemd/system ]; then
    systemctl try-restart bosun.service >/dev/null 2>&1 || :
fi
