#!/usr/bin/env bash
# The whole test suite: the lint gates (scripts/lint.sh) first, then pytest (unit, integration
# against emulators, end-to-end), then every hook in scripts/test.d (Molecule scenarios, the
# host audit test). A failed gate fails the suite (the rest still runs, to show everything).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
export PYTHONDONTWRITEBYTECODE=1
status=0
start=$(date +%s)
echo "== scripts/lint.sh"
bash scripts/lint.sh || { echo "FAILED: scripts/lint.sh" >&2; status=1; }
echo "== scripts/lint.sh took $(( $(date +%s) - start )) s"
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
