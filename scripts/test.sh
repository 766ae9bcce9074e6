#!/usr/bin/env bash
# The whole test suite: pytest (unit, integration against emulators, end-to-end),
# then every hook in scripts/test.d (Molecule scenarios, the host audit test).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
export PYTHONDONTWRITEBYTECODE=1
status=0
start=$(date +%s)
.venv/bin/python -m pytest tests -q "$@" || status=$?
for hook in scripts/test.d/*.sh; do
  [[ -e "$hook" ]] || continue
  echo "== $hook"
  t0=$(date +%s)
  bash "$hook" || { echo "FAILED: $hook" >&2; status=1; }
  echo "== $hook took $(( $(date +%s) - t0 )) s"
done
echo "test suite took $(( $(date +%s) - start )) s"
exit $status
