#!/bin/sh
# Usage: ip netns exec NS deploy/e2e/netns-exec.sh CGROUP_MOUNTS COMMAND [ARG...]
#
# `ip netns exec` runs COMMAND in a private mount namespace where it has mounted a fresh sysfs
# over /sys (so that /sys/class/net shows the namespace's interfaces). That hides the cgroup
# file systems mounted under /sys/fs/cgroup, and dockerd refuses to start without them
# ("Devices cgroup isn't mounted"). This mounts them again, as listed in CGROUP_MOUNTS (lines
# "MOUNTPOINT FSTYPE OPTIONS", written by run.sh from the host's /proc/self/mountinfo), then
# execs COMMAND, so that COMMAND keeps this PID. The mounts are private to the namespace and
# disappear with its last process.
set -eu
list=$1
shift
# cgroup v1 (or hybrid): a tmpfs holds one directory per hierarchy; pure v2 mounts cgroup2 on
# /sys/fs/cgroup itself.
if ! grep -q '^/sys/fs/cgroup ' "$list"; then
    mount -t tmpfs -o mode=755,nosuid,nodev,noexec cgroup /sys/fs/cgroup
fi
while read -r mountpoint fstype options; do
    mkdir -p "$mountpoint"
    if [ "$fstype" = cgroup2 ]; then
        mount -t cgroup2 cgroup2 "$mountpoint"
    else
        mount -t cgroup -o "$options" cgroup "$mountpoint"
    fi
done < "$list"
exec "$@"
