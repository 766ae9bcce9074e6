#!/usr/bin/env bash
# make demo, step 65: the printed student's first visit, done once by the demo so that the
# audit trail (step 70) has something to show: a real sign-in through the demo's OpenID Connect
# provider and the sign-in gate on https://127.0.0.1:$CDSOPS_DEMO_HTTPS_PORT (HTTP, no browser),
# then, with the gate's session cookie as the only credential, the hub's login, the spawn of
# their JupyterLab server and one R cell reading the course data over the kernel's websocket
# (molecule/jupyterhub/tests/hubclient.py, run inside the host with the hub's python).
# A failure stops the demo with its reason. CDSOPS_DEMO_FIRST_STUDENT=0 skips it.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PWD/.venv/bin:$PATH"
DEMO=${CDSOPS_DEMO_DIR:-$PWD/var/demo}
NAME=cdsops-compute
PORT=${CDSOPS_DEMO_HTTPS_PORT:-8443}
CELL="nrow(read.csv('/srv/cdsdata/patients.csv'))"
die() { echo "65-first-student: $*" >&2; exit 1; }
[[ ${CDSOPS_DEMO_FIRST_STUDENT:-1} == 0 ]] && { echo "-- skipped (CDSOPS_DEMO_FIRST_STUDENT=0)"; exit 0; }
[[ -s $DEMO/students.json ]] || die "$DEMO/students.json is missing (step 60 writes it)"

read -r email user < <(python -c 'import json,sys; a=json.load(open(sys.argv[1]))["active"][0]; print(a["email"], a["username"])' "$DEMO/students.json")
echo "-- $user signs in through the OpenID Connect provider (as $email) and runs: $CELL"
cookie=$(python - "https://127.0.0.1:$PORT" "$email" <<'PY'
import sys
import requests
import urllib3

urllib3.disable_warnings()
base, email = sys.argv[1:]
s = requests.Session()
s.trust_env = False   # loopback only: no proxy from the environment
s.verify = False      # the demo's self-signed certificate
form = s.get(base + "/", timeout=30)
if "/oauth2/authorize" not in form.url:
    sys.exit(f"the gate did not send the browser to the provider's sign-in form (got {form.status_code} {form.url})")
done = s.post(form.url, data={"sub": email}, timeout=60)
value = s.cookies.get("__Host-cdsops_session")
if not value:
    sys.exit(f"no gate session after the sign-in (got {done.status_code} {done.url}: {done.text[:200]})")
print(value)
PY
)  || die "the sign-in through the provider and the gate failed"
# hubclient.py takes the gate's session cookie as NAME=VALUE
arg="__Host-cdsops_session=$cookie"
podman exec -i "$NAME" sh -c 'cat >/root/hubclient.py' <molecule/jupyterhub/tests/hubclient.py \
  || die "could not copy the test client into $NAME"
out=$(podman exec "$NAME" /opt/cdsops-jupyterhub/bin/python /root/hubclient.py "$arg" "$user" run "$CELL" 2>&1 | tail -1) \
  || die "the R cell did not run: $out"
python - "$out" <<'PY' || die "the R cell gave no result: $out"
import json, sys
try:
    d = json.loads(sys.argv[1])
except json.JSONDecodeError:
    sys.exit(1)
if d.get("error") or not d.get("result", "").strip():
    sys.exit(1)
print("   R answered:", d["result"].strip())
PY
