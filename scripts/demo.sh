#!/usr/bin/env bash
# make demo: the main job on the embedded default.
# 1. sync the bundled synthetic registrations into an embedded (DuckDB) roster;
# 2. print the roster and the plan;
# 3. every hook in scripts/demo.d (build the compute host container, reconcile, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
VAR=${CDSOPS_DEMO_DIR:-$PWD/var/demo}
mkdir -p "$VAR"
SAMPLE=src/cdsops/data/sample_registrations.csv
ROSTER="$VAR/roster.duckdb"
export CDSOPS_CONFIG=${CDSOPS_CONFIG:-$PWD/inventory/local/cdsops-config.yml}
[[ -f "$CDSOPS_CONFIG" ]] || unset CDSOPS_CONFIG

# The bundled sample is dated; shift it so its newest row is an hour old today.
python -m cdsops.sample redate "$SAMPLE" "$VAR/registrations.csv"
echo "== 1. sync the bundled sample ($SAMPLE, re-dated to today) into $ROSTER"
cdsops roster sync --source "$VAR/registrations.csv" --roster "$ROSTER"
echo
echo "== 2. the roster"
cdsops roster show --roster "$ROSTER"
echo
echo "== 3. the plan"
cdsops plan --roster "$ROSTER"
for hook in scripts/demo.d/*.sh; do
  [[ -e "$hook" ]] || continue
  echo
  echo "== $hook"
  CDSOPS_DEMO_DIR="$VAR" CDSOPS_DEMO_ROSTER="$ROSTER" bash "$hook"
done
