#!/usr/bin/env bash
# make demo, step 70: the audit trail. The compute host's journal (the gate's sign-in lines,
# the IDE's cells and sessions: what the earlier steps produced) is exported and folded into
# the events table beside the demo roster; then `cdsops whois` on the demo student and
# `cdsops report` (HTML + JSON) over everything. In production the audit_trail role ships the
# journal to the management host and a timer runs the same ingest (docs/audit.md).
#
# Environment (from scripts/demo.sh): CDSOPS_DEMO_DIR, CDSOPS_DEMO_ROSTER;
# CDSOPS_DEMO_STUDENT (default: the printed student, whose sign-in and cell step 65 made) is the
# student whois shows. A failing ingest, whois or report stops the demo; so does a whois that
# shows no sign-in or no cell for the student step 65 signed in.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PWD/.venv/bin:$PATH"
VAR=${CDSOPS_DEMO_DIR:-$PWD/var/demo}
ROSTER=${CDSOPS_DEMO_ROSTER:-$VAR/roster.duckdb}
NAME=${CDSOPS_DEMO_COMPUTE:-cdsops-compute}
die() { echo "70-audit: $*" >&2; exit 1; }
first=$(python -c 'import json,sys; print(json.load(open(sys.argv[1]))["active"][0]["username"])' "$VAR/students.json" 2>/dev/null || true)
STUDENT=${CDSOPS_DEMO_STUDENT:-${first:-s000001}}
JOURNAL="$VAR/compute-journal.json"

echo "-- audit trail: the compute host's journal into the events table"
if command -v podman >/dev/null && [[ $(podman container inspect -f '{{.State.Running}}' "$NAME" 2>/dev/null) == true ]]; then
  podman exec "$NAME" journalctl -o json --no-pager >"$JOURNAL" || die "could not read the journal of $NAME"
else
  echo "70-audit: the compute container $NAME is not running; the report covers the roster only"
  : >"$JOURNAL"
fi
cdsops events ingest --roster "$ROSTER" --source "$JOURNAL" || die "cdsops events ingest failed"
echo "-- cdsops whois $STUDENT --roster $ROSTER"
cdsops whois "$STUDENT" --roster "$ROSTER" --limit 3 || die "cdsops whois $STUDENT failed"
if [[ $STUDENT == "$first" && ${CDSOPS_DEMO_FIRST_STUDENT:-1} != 0 ]]; then
  cdsops whois "$STUDENT" --roster "$ROSTER" --json | python -c '
import json, sys
w = json.load(sys.stdin)
missing = [s for s in ("signins", "cells") if not w[s]]
sys.exit("whois shows no " + " and no ".join(missing) + " for " + w["username"] if missing else 0)' \
    || die "the sign-in and the cell of step 65 did not reach the events table (journal: $JOURNAL)"
fi
echo "-- cdsops report --roster $ROSTER --out $VAR/report.html --json"
cdsops report --roster "$ROSTER" --out "$VAR/report.html" --json >"$VAR/report.json" || die "cdsops report failed"
python3 -c 'import json,sys; f=json.load(open(sys.argv[1]))["funnel"]; print("funnel:", {k: f[k] for k in ("registered","signed_in","read_data","ran_code")})' "$VAR/report.json"
echo "report: $VAR/report.html (figures as JSON: $VAR/report.json)"
