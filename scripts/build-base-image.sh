#!/usr/bin/env bash
# Build the Debian 12 systemd base image the Molecule scenarios run on:
#   localhost/cdsops-debian12:latest
# debootstrap (minbase + systemd, python3, python3-apt, ...) -> rootfs tarball cached in
# /var/cache/cdsops/ -> `podman import` with CMD /sbin/init.
# Does nothing when the image exists; FORCE=1 rebuilds the image (and REBOOTSTRAP=1 the tarball).
# Usage: scripts/build-base-image.sh            (as root, on Debian 12)
set -euo pipefail
IMAGE=${CDSOPS_BASE_IMAGE:-localhost/cdsops-debian12:latest}
CACHE=${CDSOPS_CACHE_DIR:-/var/cache/cdsops}
MIRROR=${CDSOPS_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${CDSOPS_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
SUITE=bookworm
TARBALL="$CACHE/debian12-rootfs.tar"
INCLUDE=systemd,systemd-sysv,dbus,python3,python3-apt,ca-certificates,iproute2,procps,debian-archive-keyring

if [[ ${FORCE:-0} != 1 ]] && podman image exists "$IMAGE"; then
  echo "build-base-image: $IMAGE exists"
  exit 0
fi
[[ $(id -u) -eq 0 ]] || { echo "build-base-image: must run as root (debootstrap)" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "build-base-image: debootstrap missing (scripts/apt/roles.txt)" >&2; exit 1; }
mkdir -p "$CACHE/debootstrap-debs"
t0=$(date +%s)

if [[ ${REBOOTSTRAP:-0} == 1 || ! -s $TARBALL ]]; then
  root=$(mktemp -d "$CACHE/rootfs.XXXXXX")
  trap 'rm -rf --one-file-system "$root"' EXIT
  echo "build-base-image: debootstrap $SUITE into $root"
  debootstrap --variant=minbase --include="$INCLUDE" --cache-dir="$CACHE/debootstrap-debs" \
    "$SUITE" "$root" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
    || { tail -30 "$CACHE/debootstrap.log" >&2; exit 1; }
  # apt sources, security origin included (unattended-upgrades needs it)
  rm -f "$root/etc/apt/sources.list"
  cat >"$root/etc/apt/sources.list.d/debian.sources" <<SRC
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY_MIRROR
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  # no recommends, keep downloaded packages (the scenarios bind-mount a shared cache)
  cat >"$root/etc/apt/apt.conf.d/90cdsops" <<'APT'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Binary::apt::APT::Keep-Downloaded-Packages "true";
APT
  rm -f "$root/etc/apt/apt.conf.d/docker-clean"
  # units that cannot work in a container
  for u in systemd-udevd.service systemd-udevd-control.socket systemd-udevd-kernel.socket \
           systemd-udev-trigger.service getty@tty1.service console-getty.service \
           systemd-remount-fs.service sys-kernel-debug.mount sys-kernel-tracing.mount \
           systemd-firstboot.service; do
    ln -sf /dev/null "$root/etc/systemd/system/$u"
  done
  : >"$root/etc/machine-id"
  echo cdsops-base >"$root/etc/hostname"
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/var/log/*.log
  touch -d @0 "$root/var/lib/apt/lists"   # no lists: never "fresh" for cache_valid_time
  tar -C "$root" --numeric-owner -cf "$TARBALL.tmp" .
  mv "$TARBALL.tmp" "$TARBALL"
  rm -rf --one-file-system "$root"
  trap - EXIT
fi

echo "build-base-image: podman import $TARBALL -> $IMAGE"
podman import \
  --change 'CMD ["/sbin/init"]' \
  --change 'ENV container=podman' \
  --change 'STOPSIGNAL SIGRTMIN+3' \
  --message "cdsops Debian 12 systemd base" \
  "$TARBALL" "$IMAGE" >/dev/null
size=$(podman image inspect "$IMAGE" --format '{{.Size}}')
echo "build-base-image: built $IMAGE ($(( size / 1024 / 1024 )) MiB) in $(( $(date +%s) - t0 )) s"
