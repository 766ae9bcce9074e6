#!/usr/bin/env bash
# make demo, step 50: `cdsops reconcile` onto the compute host built by step 40 (accounts,
# sign-in map, data group, course data access). Env from scripts/demo.sh: CDSOPS_DEMO_DIR
# (state), CDSOPS_DEMO_ROSTER (the synced roster). A failed run stops the demo.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PWD/.venv/bin:$PATH"
DEMO=${CDSOPS_DEMO_DIR:-$PWD/var/demo}
ROSTER=${CDSOPS_DEMO_ROSTER:-$DEMO/roster.duckdb}
NAME=cdsops-compute
export CDSOPS_CONFIG=${CDSOPS_CONFIG:-$PWD/inventory/local/cdsops-config.yml}
mkdir -p "$DEMO/metrics" "$DEMO/state"
die() { echo "50-reconcile: $*" >&2; exit 1; }
[[ $(podman container inspect -f '{{.State.Running}}' "$NAME" 2>/dev/null || true) == true ]] \
  || die "the compute host $NAME is not running (step 40 builds it)"

export CDSOPS_SIGNIN_KEY=$DEMO/signin.key   # the same key the gate hashes identities with
export CDSOPS_EMAIL_OUTBOX=$DEMO/outbox

echo "-- cdsops reconcile --roster $ROSTER"
rc=0
cdsops reconcile --roster "$ROSTER" --state-dir "$DEMO/state" --textfile-dir "$DEMO/metrics" >"$DEMO/reconcile.json" || rc=$?
cat "$DEMO/reconcile.json"
((rc == 0)) || die "reconcile failed (exit status $rc; its artifacts are named above)"
echo "-- and once more: a second run changes nothing"
cdsops reconcile --roster "$ROSTER" --state-dir "$DEMO/state" --textfile-dir "$DEMO/metrics" >"$DEMO/reconcile-2.json" \
  || die "the second reconcile failed: $(cat "$DEMO/reconcile-2.json")"
python -c 'import json,sys; d=json.load(open(sys.argv[1])); print("   changed:", d["changed"], "status:", d["status"])' "$DEMO/reconcile-2.json"

accounts=$(podman exec "$NAME" getent passwd | awk -F: '$3>=200001 && $3<=1199999' | wc -l)
locked=$(podman exec "$NAME" awk -F: '$8=="1"' /etc/shadow | wc -l)
((accounts > 0)) || die "reconcile reported success but $NAME has no student account"
echo "-- $accounts student accounts on $NAME, $locked expired (locked); data group: $(podman exec "$NAME" getent group cdsdata | awk -F: '{print $4}' | tr ',' '\n' | grep -c .) members"
echo "-- emails written to $DEMO/outbox: $(find "$DEMO/outbox" -name '*.eml' 2>/dev/null | wc -l)"
run_id=$(python -c 'import json,sys; print(json.load(open(sys.argv[1]))["run_id"])' "$DEMO/reconcile.json")
echo "-- the changes record (first 3 of this run): cdsops changes --roster $ROSTER --run-id $run_id"
cdsops changes --roster "$ROSTER" --run-id "$run_id" --limit 3
