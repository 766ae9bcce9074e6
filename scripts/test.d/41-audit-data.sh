#!/usr/bin/env bash
# Load roles/audit_trail's data-read rule (60-cdsops-data.rules, rendered for a scratch data
# directory) on THIS machine, read a file there as a student uid and as a uid outside the
# range, find the read with ausearch, and feed ausearch's raw records (auditd's log format)
# to `cdsops events ingest`: the read becomes one data.read event of that student. Restores
# the previous rules, enabled flag and auditd state. Never loads `-e 2`.
#
#   scripts/test.d/41-audit-data.sh    (root; auditd/auditctl/ausearch: scripts/apt/roles.txt)
#
# If the kernel refuses audit, it says so and exits 0 with SKIPPED (1 when CDSOPS_AUDIT_REQUIRED=1).
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PWD/.venv/bin:$PATH:/usr/sbin:/sbin"
t0=$(date +%s)
say() { echo "audit-data-test: $*"; }
fail() { echo "audit-data-test: FAIL: $*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || fail "must run as root"
for tool in auditctl auditd ausearch setpriv ansible cdsops; do
  command -v "$tool" >/dev/null || fail "$tool not found (install scripts/apt/roles.txt, make deps)"
done
if ! status=$(auditctl -s 2>&1); then
  msg="the kernel refuses audit requests here ($status): the data-read rule cannot be tested on this machine"
  if [[ ${CDSOPS_AUDIT_REQUIRED:-0} == 1 ]]; then fail "$msg"; fi
  say "SKIPPED: $msg"; exit 0
fi

# the role's default is "{{ baseline_student_uid_min | default(...) }}": the number lives in baseline
uid_min=$(sed -n 's/^baseline_student_uid_min: *//p' roles/baseline/defaults/main.yml)
[[ $uid_min =~ ^[0-9]+$ ]] || fail "baseline_student_uid_min in roles/baseline/defaults/main.yml is not a number: '$uid_min'"
student_uid=$(( uid_min ))               # s000001
outside_uid=$(( uid_min - 2 ))

work=$(mktemp -d /tmp/cdsops-audit-data.XXXXXX)
chmod 0755 "$work"
mkdir -p "$work/data"
echo "subject_id,age" >"$work/data/patients.csv"
chmod -R a+rX "$work/data"
was_enabled=$(auditctl -s | awk '$1 == "enabled" {print $2}')
auditctl -l >"$work/previous.rules"
grep -q '^No rules' "$work/previous.rules" && : >"$work/previous.rules"
auditd_pid=$(pgrep -x auditd || true)
started_auditd=0

restore() {
  set +e
  auditctl -D >/dev/null
  if [[ -s $work/previous.rules ]]; then auditctl -R "$work/previous.rules" >/dev/null || echo "audit-data-test: WARNING: could not reload the previous rules" >&2; fi
  if [[ $started_auditd == 1 ]]; then
    pid=$(cat /run/auditd.pid 2>/dev/null || pgrep -x auditd)
    [[ -n $pid ]] && kill "$pid" && for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  [[ -n $was_enabled ]] && auditctl -e "$was_enabled" >/dev/null
  say "restored: enabled=$(auditctl -s | awk '$1 == "enabled" {print $2}')"
  rm -rf "$work"
}
trap restore EXIT

ansible localhost -c local -o -m ansible.builtin.template \
  -a "src=roles/audit_trail/templates/60-cdsops-data.rules.j2 dest=$work/60-cdsops-data.rules mode=0600" \
  -e @roles/baseline/defaults/main.yml -e @roles/audit_trail/defaults/main.yml -e "audit_trail_data_dir=$work/data" >"$work/render.log" 2>&1 \
  || { cat "$work/render.log" >&2; fail "could not render the rule"; }
! grep -q -- '-e 2' "$work/60-cdsops-data.rules" || fail "the data rule file must not make the configuration immutable"

if [[ -z $auditd_pid ]]; then
  auditd || fail "auditd did not start"
  started_auditd=1
  for _ in $(seq 50); do [[ -s /run/auditd.pid ]] && break; sleep 0.1; done
fi
auditctl -D >/dev/null
auditctl -R "$work/60-cdsops-data.rules" >"$work/load.log" 2>&1 || { cat "$work/load.log" >&2; fail "the kernel rejected the rendered rule"; }
auditctl -e 1 >/dev/null
auditctl -l | grep -q -- "key=cdsops_data_read" || { auditctl -l >&2; fail "data rule not in the loaded rule list"; }
say "loaded the data-read rule"

start=$(LC_ALL=C date '+%x %T')
sleep 1
setpriv --reuid="$student_uid" --regid="$student_uid" --clear-groups cat "$work/data/patients.csv" >/dev/null
setpriv --reuid="$outside_uid" --regid="$outside_uid" --clear-groups cat "$work/data/patients.csv" >/dev/null

found=""
for _ in $(seq 50); do
  if LC_ALL=C ausearch --raw -k cdsops_data_read --start "${start% *}" "${start#* }" >"$work/raw.log" 2>/dev/null \
     && grep -q "uid=$student_uid " "$work/raw.log"; then found=yes; break; fi
  sleep 0.2
done
[[ -n $found ]] || fail "the read by uid $student_uid was not found in the audit log"
! grep -q "uid=$outside_uid " "$work/raw.log" || fail "a read by uid $outside_uid (outside the student range) was logged"
say "ok: the read by student uid $student_uid is logged (key cdsops_data_read), uid $outside_uid is not"

# the raw records through the ingest: one data.read event for s000001 with the file's path
printf 'submitted_at,email,full_name,city,country,agreed_dua,agreed_terms\n2026-01-01T00:00:00Z,probe@example.org,Probe Person,X,Y,yes,yes\n' >"$work/reg.csv"
cdsops roster sync --source "$work/reg.csv" --roster "$work/roster.duckdb" --now 2026-01-02T00:00:00Z >/dev/null
cdsops events ingest --roster "$work/roster.duckdb" --source "$work/raw.log" --host probe >"$work/summary.json"
cdsops whois s000001 --roster "$work/roster.duckdb" --json --now 2026-01-02T00:00:00Z >"$work/whois.json"
python3 - "$work" "$student_uid" <<'PY' || fail "the ingest did not turn the read into a data.read event"
import json, sys
work = sys.argv[1]
summary = json.load(open(f"{work}/summary.json"))
reads = json.load(open(f"{work}/whois.json"))["data_reads"]
assert summary["added"] >= 1 and summary["malformed"] == 0, summary
assert any(r["path"] == f"{work}/data/patients.csv" and r["uid"] == int(sys.argv[2]) for r in reads), reads
print("audit-data-test: ok: ingest made", len(reads), "data.read event(s) for s000001 at", reads[0]["path"])
PY
say "passed in $(( $(date +%s) - t0 )) s"
