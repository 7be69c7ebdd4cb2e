# bosun-kubelet %post ($1: 1 = install, 2 = upgrade): enable kubelet.service on install, as the
# .deb does; until kubeadm writes /var/lib/kubelet/config.yaml bosun serves only its CRI socket.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -eq 1 ]; then
    systemctl enable kubelet.service >/dev/null 2>&1 || :
fi
