# bosun-kubelet %preun ($1: 0 = erase, 1 = upgrade): on removal stop and disable kubelet.service;
# KillMode=process: pods keep running when the agent stops.
if [ "$1" -eq 0 ]; then
    systemctl disable --now kubelet.service >/dev/null 2>&1 || :
fi
