#!/usr/bin/env bash
# make demo, last step: what to open, whom to sign in as, and where the audit trail's answers are.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PWD/.venv/bin:$PATH"
DEMO=${CDSOPS_DEMO_DIR:-$PWD/var/demo}
ROSTER=${CDSOPS_DEMO_ROSTER:-$DEMO/roster.duckdb}
PORT=${CDSOPS_DEMO_HTTPS_PORT:-8443}
python - "$DEMO/students.json" "$PORT" "$ROSTER" "$DEMO" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
port, roster, demo = sys.argv[2:]
a, e = s["active"][0], s["expired"][0]
print(f"""
==============================================================================
 The platform is up. Open  https://127.0.0.1:{port}/
 (a self-signed certificate: accept it once). The sign-in goes to the local
 OpenID Connect provider; type a subject into its form and press Authorize:

   {a['email']:<40} a student ({a['username']}): JupyterLab with R
   {e['email']:<40} an expired student: the "expired" page
   nobody@example.org                       not registered: the "not registered" page

 In JupyterLab: the launcher's Notebook > R tile, then run
   nrow(read.csv('/srv/cdsdata/patients.csv'))
 Sign out: https://127.0.0.1:{port}/_cdsops/logout

 The audit trail (the demo signed {a['username']} in once and ran that cell):
   .venv/bin/cdsops whois {a['username']} --roster {roster}
   report: {demo}/report.html  (figures as JSON: {demo}/report.json)
   after your own visits: bash scripts/demo.d/70-audit.sh  (reads the host's journal again)
 Check it in headless Chromium: .venv/bin/python scripts/demo.d/browser-check.py
 Inside the host: podman exec -it cdsops-compute bash;  remove it: podman rm -f cdsops-compute
==============================================================================""")
PY
