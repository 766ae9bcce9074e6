#!/usr/bin/env bash
# Create .venv with cdsops and its development tools; idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[dev]'
# bqemulator needs DuckDB's spatial extension; the wheel ships it, DuckDB looks for it here.
ext=$(.venv/bin/python - <<'PY'
import importlib.util, pathlib
spec = importlib.util.find_spec("duckdb_extension_spatial")
print(next(pathlib.Path(spec.submodule_search_locations[0]).rglob("spatial.duckdb_extension")))
PY
)
ver=$(.venv/bin/python -c 'import duckdb; print(duckdb.__version__)')
dest="$HOME/.duckdb/extensions/v${ver}/linux_amd64"
mkdir -p "$dest"
cmp -s "$ext" "$dest/spatial.duckdb_extension" || cp "$ext" "$dest/spatial.duckdb_extension"
# The collection cdsops.platform: linked into the venv's site-packages/ansible_collections, where
# ansible-core looks for collections on sys.path (the wheel installs it at the same place on the
# management host). The one place that makes the checkout's collection importable.
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
mkdir -p "$site/ansible_collections/cdsops"
ln -sfn "$PWD/ansible_collections/cdsops/platform" "$site/ansible_collections/cdsops/platform"
# ansible-test's sanity environments (its own pinned tool versions), built once here so the lint
# gate does not pay for them
bash scripts/lint.sh --prime >/dev/null
