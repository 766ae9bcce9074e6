#!/usr/bin/env bash
# Run the Molecule scenarios: every directory under molecule/ with a molecule.yml,
# except molecule/shared. Builds the base image first when it is missing.
#
#   scripts/test.d/50-molecule.sh                  # every scenario
#   scripts/test.d/50-molecule.sh baseline         # one (or several) scenarios by name
#   CDSOPS_MOLECULE_SCENARIOS="baseline monitoring" make test   # same, through make test
#   CDSOPS_MOLECULE_SKIP=1 make test               # skip Molecule entirely
#   MOLECULE_CMD=converge scripts/test.d/50-molecule.sh baseline   # another molecule command
#
# Prints each scenario's duration and exits non-zero if any scenario failed.
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
status=0
summary=()
for s in "${scenarios[@]}"; do
  if [[ ! -f molecule/$s/molecule.yml ]]; then
    echo "molecule: no scenario named '$s' (no molecule/$s/molecule.yml)" >&2
    status=1; continue
  fi
  echo "== molecule $cmd -s $s"
  t0=$(date +%s)
  # time-stamp molecule's phase lines so each phase's duration (converge...) can be read off
  if molecule "$cmd" -s "$s" 2>&1 | while IFS= read -r line; do
       case $line in
         *Executing*|*Executed*) printf '[%s] %s\n' "$(date +%T)" "$line" ;;
         *) printf '%s\n' "$line" ;;
       esac
     done; then r=ok; else r=FAILED; status=1; fi
  dt=$(( $(date +%s) - t0 ))
  summary+=("$(printf '%-16s %-6s %4d s' "$s" "$r" "$dt")")
  echo "== molecule scenario $s: $r in $dt s"
done
echo "== molecule summary"
printf '  %s\n' "${summary[@]}"
exit $status
