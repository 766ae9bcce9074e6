#!/usr/bin/env bash
# Make podman usable on the CI host for the Molecule scenarios (idempotent).
# - runtime runc: crun fails on this host's hybrid cgroups;
# - default_ulimits no higher than the host's hard limits (podman refuses higher ones);
# - a shared apt package cache bind-mounted into every scenario container.
set -euo pipefail
conf=/etc/containers/containers.conf
nofile=$(ulimit -Hn)
[[ $nofile == unlimited ]] && nofile=1048576
(( nofile > 65536 )) && nofile=65536
# nproc: podman's default (4194304) is refused; on the CI host runc accepted 32768 but
# refused 40000 although the hard limit is higher, so cap it at 32768.
nproc=$(ulimit -Hu)
[[ $nproc == unlimited ]] && nproc=32768
(( nproc > 32768 )) && nproc=32768
want=$(cat <<CONF
# Written by cdsops scripts/system.d/podman.sh; rewritten when it differs.
[containers]
default_ulimits = [
  "nofile=${nofile}:${nofile}",
  "nproc=${nproc}:${nproc}",
]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
)
mkdir -p /etc/containers
if [[ ! -f $conf ]] || [[ "$(cat "$conf")" != "$want" ]]; then
  printf '%s\n' "$want" > "$conf"
  echo "podman.sh: wrote $conf (runc, nofile ${nofile})"
fi
# Shared apt cache for scenario containers (see molecule/shared/create.yml).
install -d -m 0755 /var/cache/cdsops/apt-archives
