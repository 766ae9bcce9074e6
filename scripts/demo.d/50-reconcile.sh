#!/usr/bin/env bash
# make demo, step 50: a podman systemd container as the compute host, then `cdsops reconcile`.
# Env from scripts/demo.sh: CDSOPS_DEMO_DIR (state), CDSOPS_DEMO_ROSTER (the synced roster).
# The container `cdsops-compute` is left running (it is the demo's product).
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PWD/.venv/bin:$PATH"
DEMO=${CDSOPS_DEMO_DIR:-$PWD/var/demo}
ROSTER=${CDSOPS_DEMO_ROSTER:-$DEMO/roster.duckdb}
NAME=cdsops-compute
IMAGE=localhost/cdsops-debian12:latest
export CDSOPS_CONFIG=${CDSOPS_CONFIG:-$PWD/inventory/local/cdsops-config.yml}
mkdir -p "$DEMO/metrics" "$DEMO/state"

if ! command -v podman >/dev/null; then
  echo "50-reconcile: podman is not installed; skipping the compute host (scripts/apt/roles.txt installs it)"
  exit 0
fi
podman image exists "$IMAGE" || bash scripts/build-base-image.sh

echo "-- compute host: podman container $NAME ($IMAGE, systemd as PID 1)"
if [[ $(podman container inspect -f '{{.State.Running}}' "$NAME" 2>/dev/null) != true ]]; then
  podman rm -f "$NAME" >/dev/null 2>&1 || true
  podman run -d --name "$NAME" --hostname "$NAME" --tmpfs /run --tmpfs /tmp "$IMAGE" /sbin/init >/dev/null
fi
for _ in $(seq 1 100); do
  s=$(podman exec "$NAME" systemctl is-system-running 2>/dev/null || true)
  [[ $s == running || $s == degraded ]] && break
  sleep 0.2
done

host_play=scripts/demo.d/compute-minimal.yml
if [[ ${CDSOPS_DEMO_FULL_HOST:-0} == 1 && -f playbooks/compute.yml ]]; then
  host_play=playbooks/compute.yml
fi
echo "-- prepare the host with $host_play"
ANSIBLE_CONFIG=$PWD/ansible.cfg ansible-playbook -i "$NAME," -c containers.podman.podman \
  -e ansible_python_interpreter=/usr/bin/python3 "$host_play" | grep -E '^(PLAY RECAP|[a-z0-9-]+ +: ok=)' || true

# the sign-in hash key (management side only; secret)
if [[ ! -s $DEMO/signin.key ]]; then
  (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DEMO/signin.key")
fi
export CDSOPS_SIGNIN_KEY=$DEMO/signin.key
export CDSOPS_EMAIL_OUTBOX=$DEMO/outbox

echo "-- cdsops reconcile --roster $ROSTER"
set +e
cdsops reconcile --roster "$ROSTER" --state-dir "$DEMO/state" --textfile-dir "$DEMO/metrics" >"$DEMO/reconcile.json"
rc=$?
set -e
cat "$DEMO/reconcile.json"
echo "(exit status $rc)"
echo "-- and once more: a second run changes nothing"
cdsops reconcile --roster "$ROSTER" --state-dir "$DEMO/state" --textfile-dir "$DEMO/metrics" || true

set +o pipefail  # the listings below are cut with head
echo
echo "-- accounts on $NAME (getent passwd, uid 200001-1199999; first 10)"
podman exec "$NAME" sh -c 'getent passwd | awk -F: "\$3>=200001 && \$3<=1199999"' | head -10
n=$(podman exec "$NAME" sh -c 'getent passwd | awk -F: "\$3>=200001 && \$3<=1199999"' | wc -l)
locked=$(podman exec "$NAME" sh -c 'awk -F: "\$8==\"1\"" /etc/shadow' | wc -l)
echo "   $n student accounts, $locked locked (expired)"
echo "-- the data group"
podman exec "$NAME" getent group cdsdata | cut -c1-200
echo "   $(podman exec "$NAME" getent group cdsdata | awk -F: '{print $4}' | tr ',' '\n' | grep -c . ) members"
echo "-- /srv/cdsdata"
podman exec "$NAME" ls -la /srv/cdsdata | head -6
echo "-- emails written to $DEMO/outbox: $(ls "$DEMO/outbox" 2>/dev/null | wc -l)"
echo "-- metrics ($DEMO/metrics/cdsops_reconcile.prom)"
grep -v '^#' "$DEMO/metrics/cdsops_reconcile.prom" || true
echo "-- the changes record (first 3 of this run): cdsops changes --roster $ROSTER --run-id RUN"
run_id=$(python -c 'import json,sys; print(json.load(open(sys.argv[1]))["run_id"])' "$DEMO/reconcile.json")
cdsops changes --roster "$ROSTER" --run-id "$run_id" --limit 3
echo
echo "The compute host keeps running. Look inside:  podman exec -it $NAME bash"
echo "Stop and remove it:                            podman rm -f $NAME"
exit $rc
