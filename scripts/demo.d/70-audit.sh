#!/usr/bin/env bash
# make demo, step 70: the audit trail. The compute host's journal (the gate's sign-in lines,
# the IDE's cells and sessions: what the earlier steps produced) is exported and folded into
# the events table beside the demo roster; then `cdsops whois` on the demo student and
# `cdsops report` (HTML + JSON) over everything. In production the audit_trail role ships the
# journal to the management host and a timer runs the same ingest (docs/audit.md).
#
# Environment (from scripts/demo.sh): CDSOPS_DEMO_DIR, CDSOPS_DEMO_ROSTER;
# CDSOPS_DEMO_STUDENT (default s000001) is the student whois shows.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PWD/.venv/bin:$PATH"
VAR=${CDSOPS_DEMO_DIR:-$PWD/var/demo}
ROSTER=${CDSOPS_DEMO_ROSTER:-$VAR/roster.duckdb}
NAME=${CDSOPS_DEMO_COMPUTE:-cdsops-compute}
STUDENT=${CDSOPS_DEMO_STUDENT:-s000001}
JOURNAL="$VAR/compute-journal.json"

echo "-- audit trail: the compute host's journal into the events table"
if command -v podman >/dev/null && [[ $(podman container inspect -f '{{.State.Running}}' "$NAME" 2>/dev/null) == true ]]; then
  podman exec "$NAME" journalctl -o json --no-pager >"$JOURNAL"
else
  echo "70-audit: the compute container $NAME is not running; the report covers the roster only"
  : >"$JOURNAL"
fi
cdsops events ingest --roster "$ROSTER" --source "$JOURNAL"
echo "-- cdsops whois $STUDENT"
cdsops whois "$STUDENT" --roster "$ROSTER" || true
echo "-- cdsops report"
cdsops report --roster "$ROSTER" --out "$VAR/report.html" --json >"$VAR/report.json"
python3 -c 'import json,sys; f=json.load(open(sys.argv[1]))["funnel"]; print("funnel:", {k: f[k] for k in ("registered","signed_in","read_data","ran_code")})' "$VAR/report.json"
echo "report: $VAR/report.html (figures as JSON: $VAR/report.json)"
