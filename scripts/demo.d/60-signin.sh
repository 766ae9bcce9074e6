#!/usr/bin/env bash
# make demo, step 60: a local OpenID Connect provider standing in for Google
# (oidc-provider-mock, inside the compute host, published on 127.0.0.1:9400 only) that knows
# the sample students (the URL and whom to sign in as: step 90, at the end).
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PWD/.venv/bin:$PATH"
DEMO=${CDSOPS_DEMO_DIR:-$PWD/var/demo}
ROSTER=${CDSOPS_DEMO_ROSTER:-$DEMO/roster.duckdb}
NAME=cdsops-compute
PORT=${CDSOPS_DEMO_HTTPS_PORT:-8443}
IDP=http://127.0.0.1:9400
die() { echo "60-signin: $*" >&2; exit 1; }

version=$(python -c "import importlib.metadata as m; print(m.version('oidc-provider-mock'))") \
  || die "oidc-provider-mock is missing from .venv (make deps installs it)"
if ! podman exec "$NAME" /opt/cdsops-demo-idp/bin/python -c "import oidc_provider_mock" 2>/dev/null; then
  echo "-- install oidc-provider-mock $version in $NAME (/opt/cdsops-demo-idp)"
  podman exec "$NAME" sh -c "python3 -m venv /opt/cdsops-demo-idp && PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    /opt/cdsops-demo-idp/bin/pip install -q --disable-pip-version-check oidc-provider-mock==$version" \
    || die "could not install oidc-provider-mock in $NAME"
fi
if ! podman exec "$NAME" systemctl is-active -q cdsops-demo-idp.service; then
  podman exec "$NAME" systemd-run --unit=cdsops-demo-idp --description="make demo: OpenID Connect provider (stands in for Google)" \
    -p Restart=on-failure -E NO_COLOR=1 -E PYTHONWARNINGS=ignore \
    /opt/cdsops-demo-idp/bin/python -m oidc_provider_mock -p 9400 -H 0.0.0.0 >/dev/null \
    || die "could not start the OpenID Connect provider in $NAME"
fi
for _ in $(seq 1 100); do
  python -c "import sys, urllib.request as u; u.urlopen(sys.argv[1], timeout=2)" "$IDP/.well-known/openid-configuration" 2>/dev/null && break
  sleep 0.3
done
python -c "import sys, urllib.request as u; u.urlopen(sys.argv[1], timeout=5)" "$IDP/.well-known/openid-configuration" \
  || die "the OpenID Connect provider does not answer on $IDP"

# The provider's sign-in form asks for a "subject": each sample student's subject is their email.
cdsops roster show --roster "$ROSTER" --json >"$DEMO/roster.json"
python - "$DEMO/roster.json" "$IDP" "$DEMO/students.json" <<'PY'
import json, sys, urllib.request
students = json.load(open(sys.argv[1]))["students"]
active = [s for s in students if s["status"] == "active"]
expired = [s for s in students if s["status"] == "expired"]
if not active or not expired:
    sys.exit("60-signin: the roster needs an active and an expired student")
chosen = {"active": active[:3], "expired": expired[:1]}
for s in chosen["active"] + chosen["expired"] + [{"identity": "nobody@example.org"}]:
    body = json.dumps({"email": s["identity"], "email_verified": True}).encode()
    req = urllib.request.Request(f"{sys.argv[2]}/users/{s['identity']}", data=body, method="PUT",
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=5).read()
json.dump({k: [{"email": s["identity"], "username": s["username"]} for s in v] for k, v in chosen.items()},
          open(sys.argv[3], "w"), indent=1)
PY
python -c "import ssl, sys, urllib.request as u; u.urlopen(sys.argv[1], timeout=10, context=ssl._create_unverified_context())" \
  "https://127.0.0.1:$PORT/_cdsops/healthz" || die "the sign-in gate does not answer on https://127.0.0.1:$PORT"

echo "-- the provider knows the sample students (written to $DEMO/students.json); the URL and whom to sign in as are printed at the end"
