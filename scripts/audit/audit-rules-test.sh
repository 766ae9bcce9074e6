#!/usr/bin/env bash
# Load the baseline role's rendered audit rules on THIS machine, run a command as a uid in
# the student range, find it with ausearch, check a uid outside the range is not logged and
# an identity-file write is, then restore the previous rules, enabled flag and auditd state.
#
#   scripts/test.d/40-audit.sh          (root; needs auditd/auditctl/ausearch: scripts/apt/roles.txt)
#
# If the kernel refuses audit (no CONFIG_AUDIT, not the initial namespaces), it says so and
# exits 0 with SKIPPED, or 1 when CDSOPS_AUDIT_REQUIRED=1.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$PWD/.venv/bin:$PATH:/usr/sbin:/sbin"
t0=$(date +%s)
say() { echo "audit-test: $*"; }
fail() { echo "audit-test: FAIL: $*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || fail "must run as root"
for tool in auditctl auditd ausearch setpriv ansible; do
  command -v "$tool" >/dev/null || fail "$tool not found (install scripts/apt/roles.txt, make deps)"
done
if ! status=$(auditctl -s 2>&1); then
  msg="the kernel refuses audit requests here ($status): the audit rules cannot be tested on this machine"
  if [[ ${CDSOPS_AUDIT_REQUIRED:-0} == 1 ]]; then fail "$msg"; fi
  say "SKIPPED: $msg"; exit 0
fi

# student uid range from the role defaults (cdsops.config: uid_base + 1 .. uid_base + 10^width - 1)
uid_min=$(sed -n 's/^baseline_student_uid_min: *//p' roles/baseline/defaults/main.yml)
uid_max=$(sed -n 's/^baseline_student_uid_max: *//p' roles/baseline/defaults/main.yml)
student_uid=$(( uid_min + 41 ))          # s000042
outside_uid=$(( uid_min - 1 ))           # uid_base itself: not a student

work=$(mktemp -d /tmp/cdsops-audit.XXXXXX)
was_enabled=$(auditctl -s | awk '$1 == "enabled" {print $2}')
auditctl -l >"$work/previous.rules"
grep -q '^No rules' "$work/previous.rules" && : >"$work/previous.rules"
auditd_pid=$(pgrep -x auditd || true)
started_auditd=0

restore() {
  set +e
  auditctl -D >/dev/null
  if [[ -s $work/previous.rules ]]; then auditctl -R "$work/previous.rules" >/dev/null || echo "audit-test: WARNING: could not reload the previous rules from $work/previous.rules" >&2; fi
  if [[ $started_auditd == 1 ]]; then
    pid=$(cat /run/auditd.pid 2>/dev/null || pgrep -x auditd)
    [[ -n $pid ]] && kill "$pid" && for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  [[ -n $was_enabled ]] && auditctl -e "$was_enabled" >/dev/null
  say "restored: $(auditctl -l | grep -vc "^No rules" || true) rule(s), enabled=$(auditctl -s | awk '$1 == "enabled" {print $2}'), auditd $( [[ $started_auditd == 1 ]] && echo stopped again || echo left as it was)"
  rm -rf "$work"
}
trap restore EXIT

say "rendering roles/baseline/templates/audit.rules.j2 with the role defaults"
ansible localhost -c local -o -m ansible.builtin.template \
  -a "src=roles/baseline/templates/audit.rules.j2 dest=$work/cdsops.rules mode=0600" \
  -e @roles/baseline/defaults/main.yml >"$work/render.log" 2>&1 || { cat "$work/render.log" >&2; fail "could not render the rules"; }

# -e 2 (immutable until reboot) is NEVER loaded here: it would lock this machine's audit
# configuration for every later run. Its file is rendered and checked instead.
ansible localhost -c local -o -m ansible.builtin.template \
  -a "src=roles/baseline/templates/99-finalize.rules.j2 dest=$work/99-finalize.rules mode=0600" \
  -e @roles/baseline/defaults/main.yml >"$work/render-final.log" 2>&1 || { cat "$work/render-final.log" >&2; fail "could not render 99-finalize.rules"; }
[[ $(grep -Ev '^(#.*|)$' "$work/99-finalize.rules") == "-e 2" ]] || fail "99-finalize.rules must hold -e 2 alone"
grep -q -- '^-e' "$work/cdsops.rules" && fail "50-cdsops.rules must not set the enabled flag (-e belongs in 99-finalize.rules)"
say "ok: 99-finalize.rules holds -e 2 alone (rendered, not loaded)"

if [[ -z $auditd_pid ]]; then
  auditd || fail "auditd did not start"
  started_auditd=1
  for _ in $(seq 50); do [[ -s /run/auditd.pid ]] && break; sleep 0.1; done
  say "started auditd (it was not running; it is stopped again afterwards)"
fi
auditctl -D >/dev/null
auditctl -R "$work/cdsops.rules" >"$work/load.log" 2>&1 || { cat "$work/load.log" >&2; fail "the kernel rejected the rendered rules"; }
auditctl -e 1 >/dev/null
say "loaded $(auditctl -l | grep -vc "^No rules") rules"
auditctl -l | grep -q -- "-S execve,execveat -F uid>=$uid_min -F uid<=$uid_max -F key=cdsops_student_exec" \
  || { auditctl -l >&2; fail "student exec rule not in the loaded rule list"; }

marker="cdsops-audit-probe-$$-$RANDOM"
start=$(LC_ALL=C date '+%x %T')   # ausearch parses dates in the C locale's %x
sleep 1
setpriv --reuid="$student_uid" --regid="$student_uid" --clear-groups /bin/echo "$marker-student" >/dev/null
setpriv --reuid="$outside_uid" --regid="$outside_uid" --clear-groups /bin/echo "$marker-outside" >/dev/null
python3 -c "open('/etc/passwd', 'a').close()"   # opened for writing, not modified
config_probe=/etc/nftables.conf
[[ -e $config_probe ]] && python3 -c "open('$config_probe', 'a').close()"   # the same for a watched config file

found=""
for _ in $(seq 50); do
  if LC_ALL=C ausearch -i -k cdsops_student_exec --uid "$student_uid" --start "${start% *}" "${start#* }" 2>/dev/null | grep -q -- "$marker-student"; then
    found=yes; break
  fi
  sleep 0.2
done
[[ -n $found ]] || fail "the command run as uid $student_uid was not found in the audit log"
say "ok: a command run as student uid $student_uid is in the audit log (key cdsops_student_exec)"
if LC_ALL=C ausearch -i -k cdsops_student_exec --start "${start% *}" "${start#* }" 2>/dev/null | grep -q -- "$marker-outside"; then
  fail "a command run as uid $outside_uid (outside the student range) was logged"
fi
say "ok: uid $outside_uid (outside $uid_min..$uid_max) is not logged"
LC_ALL=C ausearch -k cdsops_identity --start "${start% *}" "${start#* }" >/dev/null 2>&1 \
  || fail "opening /etc/passwd for writing was not logged (key cdsops_identity)"
say "ok: a write-open of /etc/passwd is logged (key cdsops_identity)"
if [[ -e $config_probe ]]; then
  LC_ALL=C ausearch -k cdsops_config -f "$config_probe" --start "${start% *}" "${start#* }" >/dev/null 2>&1 \
    || fail "opening $config_probe for writing was not logged (key cdsops_config)"
  say "ok: a write-open of $config_probe is logged (key cdsops_config)"
fi

# The role's "Load audit rules" handler, run for real (its command from
# roles/baseline/handlers/main.yml, the real augenrules and auditctl), against a copy of
# rules.d holding the rendered files. Only two things differ from a host, so that nothing
# here can lock this machine: augenrules reads/writes the copy instead of /etc/audit, and the
# copy's 99-finalize.rules says `-e 0` where the role's says `-e 2` (the same last -e line,
# an observable and reversible value). If augenrules --load applies the rules and then the
# last -e of rules.d, the kernel ends with our rules loaded and enabled 0; with the real
# file it would end enabled 2.
tree=$work/etc-audit
mkdir -p "$tree/rules.d"
cp "$work/cdsops.rules" "$tree/rules.d/50-cdsops.rules"
cp "$work/99-finalize.rules" "$tree/rules.d/99-finalize.rules"
sed -e "s#^DestinationFile=.*#DestinationFile=$tree/audit.rules#" \
    -e "s#^SourceRulesDir=.*#SourceRulesDir=$tree/rules.d#" /usr/sbin/augenrules >"$work/augenrules"
chmod 0700 "$work/augenrules"
grep -q "^SourceRulesDir=$tree/rules.d\$" "$work/augenrules" && grep -q "^DestinationFile=$tree/audit.rules\$" "$work/augenrules" \
  || fail "could not point a copy of /usr/sbin/augenrules at a test directory (its variables changed?)"
# 1. without --load: what a host's /etc/audit/audit.rules becomes; -e 2 is its last line, once
"$work/augenrules" >/dev/null || fail "augenrules failed on the rendered rules.d"
last=$(grep -Ev '^(#.*|\s*)$' "$tree/audit.rules" | tail -1)
[[ $last == "-e 2" && $(grep -c -- '^-e' "$tree/audit.rules") == 1 ]] \
  || fail "augenrules did not end the generated audit.rules with -e 2 (last line: $last)"
say "ok: augenrules ends the generated audit.rules with the one -e 2 of 99-finalize.rules"
# 2. the handler's command, with --load, on a rules.d whose last -e is 0
handler_cmd=$(python -c '
import sys, yaml
for h in yaml.safe_load(open("roles/baseline/handlers/main.yml")):
    if h["name"] == "Load audit rules":
        print(h["ansible.builtin.shell"]["cmd"])
')
[[ $handler_cmd == *"/usr/sbin/augenrules --load"* && $handler_cmd == *"/usr/sbin/auditctl -s"* ]] \
  || fail "the Load audit rules handler no longer runs 'auditctl -s' and 'augenrules --load': $handler_cmd"
handler_cmd=${handler_cmd//\/usr\/sbin\/augenrules/$work/augenrules}
handler_cmd=${handler_cmd//\/run\/reboot-required/$work/reboot-required}
sed -i 's/^-e 2$/-e 0/' "$tree/rules.d/99-finalize.rules"
auditctl -D >/dev/null; auditctl -e 1 >/dev/null
# auditctl -s prints "enabled N" on a line of its own: the handler's grep '^enabled 2' reads it
auditctl -s | grep -qx 'enabled 1' || fail "auditctl -s does not print 'enabled 1' as the handler expects: $(auditctl -s | head -3)"
/bin/bash -c "$handler_cmd" >"$work/handler.log" 2>&1 || { cat "$work/handler.log" >&2; fail "the handler's command failed"; }
enabled=$(auditctl -s | awk '$1 == "enabled" {print $2}')
auditctl -l | grep -q -- "-F key=cdsops_student_exec" || fail "the handler did not load the rules of rules.d"
[[ $enabled == 0 ]] || fail "the handler loaded the rules but not the last -e line of rules.d (enabled $enabled)"
[[ ! -e $work/reboot-required ]] || fail "the handler asked for a reboot although the rules were not immutable"
say "ok: the Load audit rules handler (augenrules --load) loads rules.d and then its last -e line (-e 0 here; -e 2 on a host)"
# 3. the handler once the rules are immutable: the kernel's answer to auditctl -s is the one
# thing substituted here (enabled 2 cannot be set without locking this machine)
fake_status="printf 'enabled 2\\nfailure 1\\n'"
immutable_cmd=${handler_cmd//"/usr/sbin/auditctl -s"/$fake_status}
[[ $immutable_cmd != "$handler_cmd" ]] || fail "could not substitute auditctl -s in the handler's command"
auditctl -D >/dev/null
/bin/bash -c "$immutable_cmd" >"$work/handler2.log" 2>&1 || { cat "$work/handler2.log" >&2; fail "the handler failed on immutable rules (it must ask for a reboot instead)"; }
[[ -e $work/reboot-required ]] || fail "the handler did not flag a reboot when the rules are immutable"
auditctl -l | grep -q -- "-F key=cdsops_student_exec" && fail "the handler ran augenrules --load although the rules are immutable"
say "ok: with immutable rules the handler flags a reboot and loads nothing"
say "passed in $(( $(date +%s) - t0 )) s"
