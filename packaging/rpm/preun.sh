# bosun %preun ($1: 0 = erase, 1 = upgrade). On erase, disable and stop the agent; KillMode=process
# leaves running pods alone (remove their manifests first to stop them).
if [ "$1" -eq 0 ]; then
    systemctl --no-reload disable bosun.service >/dev/null 2>&1 || :
    if [ -d /run/systemd/system ]; then
        systemctl stop bosun.service >/dev/null 2>&1 || :
    fi
fi
