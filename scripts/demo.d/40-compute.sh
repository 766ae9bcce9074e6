#!/usr/bin/env bash
# make demo, step 40: the compute host of the open profile (JupyterHub + JupyterLab + R behind
# the sign-in gate) as a podman systemd container, built by playbooks/compute.yml with the real
# roles. Its 443 is published on 127.0.0.1:$CDSOPS_DEMO_HTTPS_PORT (8443), the demo's OpenID
# Connect provider (step 60) on 127.0.0.1:9400. Any failure stops the demo with its reason.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PWD/.venv/bin:$PATH"
DEMO=${CDSOPS_DEMO_DIR:-$PWD/var/demo}
NAME=cdsops-compute
IMAGE=localhost/cdsops-debian12:latest
PORT=${CDSOPS_DEMO_HTTPS_PORT:-8443}
IDP_PORT=9400
LAYOUT="open-ide-1 https=$PORT"   # containers made by an older demo are replaced
mkdir -p "$DEMO"

die() { echo "40-compute: $*" >&2; exit 1; }
command -v podman >/dev/null || die "podman is not installed (scripts/apt/roles.txt lists it; run make deps)"
podman image exists "$IMAGE" || bash scripts/build-base-image.sh || die "the base image could not be built"

# Throwaway secrets of the demo (var/demo, never committed): the identity-hash key shared by
# the reconcile and the gate, and the gate's cookie key.
for key in signin.key gate-cookie.key; do
  if [[ ! -s $DEMO/$key ]]; then
    (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DEMO/$key")
  fi
done

echo "-- compute host: podman container $NAME ($IMAGE, systemd as PID 1, limits enforced)"
if [[ $(podman container inspect -f '{{index .Config.Labels "cdsops.demo"}}' "$NAME" 2>/dev/null || true) != "$LAYOUT" ]]; then
  podman rm -f "$NAME" >/dev/null 2>&1 || true
fi
# "running" in podman's records is not enough: after the machine was suspended or restored, a
# container can be recorded as running with its processes gone (exec then fails); recreate it
if [[ $(podman container inspect -f '{{.State.Running}}' "$NAME" 2>/dev/null || true) != true ]] \
   || ! podman exec "$NAME" true >/dev/null 2>&1; then
  podman rm -f "$NAME" >/dev/null 2>&1 || true
  cache=/var/cache/cdsops
  mkdir -p "$cache/apt-archives/$NAME/partial" "$cache/pip" /usr/local/share/ca-certificates
  # --cgroupns=private + SYS_ADMIN + the rw re-mount (cgroup-rw-init.sh): systemd enforces each
  # student's CPU and memory limits; NET_ADMIN: the firewall and the IDE guard load nftables.
  podman run -d --name "$NAME" --hostname "$NAME" --label "cdsops.demo=$LAYOUT" \
    --systemd=always --cgroupns=private --cap-add SYS_ADMIN --cap-add NET_ADMIN \
    --tmpfs /run --tmpfs /tmp \
    -v "$PWD/molecule/shared/cgroup-rw-init.sh:/usr/local/sbin/cdsops-cgroup-rw-init:ro" \
    -v "$cache/apt-archives/$NAME:/var/cache/apt/archives:rw" -v "$cache/pip:/root/.cache/pip:rw" \
    -v /usr/local/share/ca-certificates:/usr/local/share/ca-certificates-host:ro \
    -p "127.0.0.1:$PORT:443" -p "127.0.0.1:$IDP_PORT:$IDP_PORT" \
    "$IMAGE" /usr/local/sbin/cdsops-cgroup-rw-init >/dev/null || die "podman run failed"
fi
state=
for _ in $(seq 1 120); do
  state=$(podman exec "$NAME" systemctl is-system-running 2>/dev/null || true)
  [[ $state == running || $state == degraded ]] && break
  sleep 0.5
done
[[ $state == running || $state == degraded ]] || die "systemd in $NAME did not boot (state: ${state:-none})"

# The machine's local CAs (e.g. a TLS-intercepting egress proxy's), for pip and npm inside.
# (update-ca-certificates' rehash always warns about the bundle file; its output is shown on failure)
podman exec "$NAME" sh -c 'cp /usr/local/share/ca-certificates-host/*.crt /usr/local/share/ca-certificates/ 2>/dev/null; out=$(update-ca-certificates 2>&1) || { echo "$out" >&2; exit 1; }' \
  || die "could not install the CA certificates in $NAME"
if ! podman exec "$NAME" sh -c 'ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1'; then
  podman exec "$NAME" apt-get update -qq || die "apt-get update failed in $NAME"
fi

cat >"$DEMO/inventory.yml" <<INV
# written by scripts/demo.d/40-compute.sh: the demo container is the group compute
compute:
  hosts:
    $NAME:
      ansible_connection: containers.podman.podman
      ansible_python_interpreter: /usr/bin/python3
      ansible_become: false   # podman exec is root already (the image has no sudo)
INV
# A second `make demo` skips the playbook when nothing it reads has changed since it last
# succeeded on this very container (the stamp: the container's id and a digest of the playbooks,
# roles, collection, the demo's variables and keys) and the host's services are up; anything
# else converges again. CDSOPS_DEMO_CONVERGE=1 always applies the playbook.
cid=$(podman container inspect -f '{{.Id}}' "$NAME")
digest=$( { find playbooks roles ansible_collections/cdsops -type f ! -name '*.pyc' ! -path '*/molecule/*' -print0 \
            | sort -z | xargs -0 sha256sum; sha256sum scripts/demo.d/compute-demo-vars.yml ansible.cfg "$DEMO/signin.key" "$DEMO/gate-cookie.key"
            echo "port=$PORT"; } | sha256sum | cut -c1-16)
stamp="$cid $digest"
services="nginx cdsops-gate cdsops-jupyterhub"
if [[ ${CDSOPS_DEMO_CONVERGE:-0} != 1 && -s $DEMO/compute.stamp && $(cat "$DEMO/compute.stamp") == "$stamp" ]] \
   && podman exec "$NAME" systemctl is-active -q $services; then
  echo "-- built already: playbooks/compute.yml last succeeded on this container with these roles and variables"
  echo "   (stamp $DEMO/compute.stamp; $services active); CDSOPS_DEMO_CONVERGE=1 make demo applies it again"
  exit 0
fi
rm -f "$DEMO/compute.stamp"
echo "-- build it: ansible-playbook playbooks/compute.yml (ide=jupyter; log: $DEMO/compute.log)"
start=$(date +%s)
if ! ANSIBLE_CONFIG=$PWD/ansible.cfg ansible-playbook -i "$DEMO/inventory.yml" playbooks/compute.yml \
    -e @scripts/demo.d/compute-demo-vars.yml -e "demo_dir=$DEMO" -e "demo_https_port=$PORT" >"$DEMO/compute.log" 2>&1; then
  grep -E -A12 '^(fatal|failed):' "$DEMO/compute.log" | head -40 >&2 || true
  die "playbooks/compute.yml failed (whole output: $DEMO/compute.log)"
fi
recap=$(grep -E "^$NAME +: ok=" "$DEMO/compute.log" || true)
[[ -n $recap ]] || die "playbooks/compute.yml applied nothing to $NAME (no PLAY RECAP line for it; see $DEMO/compute.log)"
echo "   $recap ($(( $(date +%s) - start )) s)"
podman exec "$NAME" systemctl is-active -q $services || die "after the playbook, not all of $services are active in $NAME"
echo "$stamp" >"$DEMO/compute.stamp"
