#!/usr/bin/env bash
# make bench: print every benchmark's figures (nothing is asserted).
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
for b in benchmarks/bench_*.py; do
  echo "== $b"
  .venv/bin/python "$b" || echo "(benchmark $b failed)"
done
