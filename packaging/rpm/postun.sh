# bosun %postun: systemd bookkeeping only. Images, pod folders and logs are kept.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
