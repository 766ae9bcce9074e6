#!/bin/sh
# Container entry point for scenarios that must enforce systemd resource limits (cgroup v1
# hosts): podman mounts the controllers read-only, so MemoryMax/CPUQuota written by systemd
# would be ignored. Needs --cgroupns=private and CAP_SYS_ADMIN (molecule/shared/README.md).
# re-mount the cgroup v1 controllers read-write (podman mounts them ro), then boot systemd
for c in cpu cpuacct memory pids; do
  if [ -d /sys/fs/cgroup/$c ]; then umount /sys/fs/cgroup/$c 2>/dev/null; mount -t cgroup -o rw,nosuid,nodev,noexec,relatime,$c cgroup /sys/fs/cgroup/$c; fi
done
exec /sbin/init
