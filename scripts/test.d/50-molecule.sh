#!/usr/bin/env bash
# Run the Molecule scenarios: every directory under molecule/ with a molecule.yml,
# except molecule/shared. Builds the base image first when it is missing.
#
#   scripts/test.d/50-molecule.sh                  # every scenario
#   scripts/test.d/50-molecule.sh baseline         # one (or several) scenarios by name
#   CDSOPS_MOLECULE_SCENARIOS="baseline monitoring" make test   # same, through make test
#   CDSOPS_MOLECULE_SKIP=1 make test               # skip Molecule entirely
#   MOLECULE_CMD=converge scripts/test.d/50-molecule.sh baseline   # another molecule command
#   CDSOPS_MOLECULE_JOBS=1 scripts/test.d/50-molecule.sh            # one scenario at a time (default 2)
#
# Prints each scenario's log when it ends, each one's duration, and exits non-zero if any
# scenario failed.
set -uo pipefail
cd "$(dirname "$0")/../.."
if [[ ${CDSOPS_MOLECULE_SKIP:-0} == 1 ]]; then
  echo "molecule: skipped (CDSOPS_MOLECULE_SKIP=1)"
  exit 0
fi
export PATH="$PWD/.venv/bin:$PATH"
export PYTEST_ADDOPTS="${PYTEST_ADDOPTS:-} -p no:bqemulator -p no:cacheprovider"
export ANSIBLE_FORCE_COLOR=0 PY_COLORS=0 ANSIBLE_NOCOLOR=1 NO_COLOR=1
export MOLECULE_NO_LOG=false
bash scripts/build-base-image.sh || { echo "molecule: base image build failed" >&2; exit 1; }
size=$(podman image inspect localhost/cdsops-debian12:latest --format '{{.Size}}')
echo "molecule: base image localhost/cdsops-debian12:latest is $(( size / 1024 / 1024 )) MiB"

if (($#)); then
  scenarios=("$@")
elif [[ -n ${CDSOPS_MOLECULE_SCENARIOS:-} ]]; then
  read -r -a scenarios <<<"$CDSOPS_MOLECULE_SCENARIOS"
else
  scenarios=()
  for d in molecule/*/; do
    name=$(basename "$d")
    [[ $name == shared ]] && continue
    # a scenario that is not yet green carries molecule/NAME/NOT-IN-SUITE with the reason; it
    # still runs when named (scripts/test.d/50-molecule.sh NAME)
    if [[ -f $d/NOT-IN-SUITE ]]; then
      echo "molecule: $name not in the suite: $(head -1 "$d/NOT-IN-SUITE")"
      continue
    fi
    [[ -f $d/molecule.yml ]] && scenarios+=("$name")
  done
fi
cmd=${MOLECULE_CMD:-test}
jobs=${CDSOPS_MOLECULE_JOBS:-2}
[[ $jobs =~ ^[1-9][0-9]*$ ]] || { echo "molecule: CDSOPS_MOLECULE_JOBS must be a positive integer, not '$jobs'" >&2; exit 2; }
# Longest first, so the lanes end together (durations measured on a 2-core machine; a scenario
# not listed here runs after these). Scenarios run in $jobs lanes at once: each has its own
# container names, ports and apt cache; its output is collected in a file and printed whole
# when it ends, so logs do not interleave. A scenario with a RUN-ALONE file runs with no other
# beside it (the file says why).
order=(jupyterhub management rstudio_server audit_trail monitoring baseline signin_gate backup)
queue=()
for s in "${order[@]}"; do
  for t in "${scenarios[@]}"; do [[ $t == "$s" ]] && queue+=("$s"); done
done
for t in "${scenarios[@]}"; do
  [[ " ${order[*]} " == *" $t "* ]] || queue+=("$t")
done

logdir=$(mktemp -d /tmp/cdsops-molecule.XXXXXX)
trap 'rm -rf "$logdir"' EXIT

run_scenario() {  # $1 = scenario; writes $logdir/$1.log and $logdir/$1.result
  local s=$1 t0 r
  t0=$(date +%s)
  # time-stamp molecule's phase lines so each phase's duration (converge...) can be read off
  if molecule "$cmd" -s "$s" 2>&1 | while IFS= read -r line; do
       case $line in
         *Executing*|*Executed*) printf '[%s] %s\n' "$(date +%T)" "$line" ;;
         *) printf '%s\n' "$line" ;;
       esac
     done >"$logdir/$s.log"; then r=ok; else r=FAILED; fi
  printf '%s %d\n' "$r" "$(( $(date +%s) - t0 ))" >"$logdir/$s.result"
}

status=0
summary=()
report() {  # print a finished scenario's log and record its result
  local s=$1 r dt
  read -r r dt <"$logdir/$s.result" || { r=FAILED; dt=0; }
  echo "== molecule $cmd -s $s"
  cat "$logdir/$s.log"
  echo "== molecule scenario $s: $r in $dt s"
  [[ $r == ok ]] || status=1
  summary+=("$(printf '%-16s %-6s %4d s' "$s" "$r" "$dt")")
}

t_all=$(date +%s)
declare -A running=()
reap_one() {  # wait for one running scenario to end and report it
  local done_pid
  wait -n -p done_pid || true
  report "${running[$done_pid]}"; unset "running[$done_pid]"
}
for s in "${queue[@]}"; do
  if [[ ! -f molecule/$s/molecule.yml ]]; then
    echo "molecule: no scenario named '$s' (no molecule/$s/molecule.yml)" >&2
    status=1; continue
  fi
  if [[ -f molecule/$s/RUN-ALONE ]]; then
    # a scenario whose containers must not start beside others' (its reason is in the file)
    while (( ${#running[@]} )); do
      reap_one
    done
    echo "molecule: [$(date +%T)] start $s (alone: $(head -1 "molecule/$s/RUN-ALONE"))"
    run_scenario "$s"
    report "$s"
    continue
  fi
  while (( ${#running[@]} >= jobs )); do
    reap_one
  done
  echo "molecule: [$(date +%T)] start $s"
  run_scenario "$s" &
  running[$!]=$s
done
while (( ${#running[@]} )); do
  reap_one
done
echo "== molecule summary ($jobs at a time, $(( $(date +%s) - t_all )) s in all)"
printf '  %s\n' "${summary[@]}"
exit $status
