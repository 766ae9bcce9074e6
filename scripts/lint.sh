#!/usr/bin/env bash
# The lint gates (run first by scripts/test.sh, or alone: `make lint` / scripts/lint.sh):
#   1. ansible-test sanity on the collection cdsops.platform
#   2. ansible-lint, production profile, over the repository (.ansible-lint)
#   3. ruff check (rules in pyproject.toml [tool.ruff])
#   4. lint-imports (import-linter contracts in pyproject.toml [tool.importlinter], when present)
# Every gate runs; the script fails when any of them failed. CDSOPS_LINT_ONLY="ruff ansible-lint"
# runs a subset. `scripts/lint.sh --prime` only builds ansible-test's sanity environments
# (make deps does it once, so the gate itself stays fast).
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
export PATH="$repo/.venv/bin:$PATH"
export PYTHONDONTWRITEBYTECODE=1 ANSIBLE_NOCOLOR=1 NO_COLOR=1 PY_COLORS=0
only=${CDSOPS_LINT_ONLY:-"sanity ansible-lint ruff imports"}
status=0
failed=()

gate() {  # gate NAME COMMAND...: run one gate, print its duration, remember a failure
  local name=$1 t0
  shift
  [[ " $only " == *" $name "* ]] || return 0
  echo "== lint: $name"
  t0=$(date +%s)
  if "$@"; then
    echo "== lint: $name passed in $(( $(date +%s) - t0 )) s"
  else
    echo "== lint: $name FAILED after $(( $(date +%s) - t0 )) s" >&2
    status=1
    failed+=("$name")
  fi
}

sanity() {
  # ansible-test creates one virtual environment per sanity test (from its own pinned
  # requirements, cached under ~/.ansible/test/venv) and bootstraps pip in each with a script
  # it downloads from ci-files.testing.ansible.com, which is unreachable here: give it a local
  # stand-in (ensurepip, then pip from the configured index) in the place it caches that script.
  local ver cache
  # the pip version ansible-test bootstraps (default_packages in its python_requirements.py)
  ver=$(python - <<'PY'
import pathlib, re, ansible_test
src = (pathlib.Path(ansible_test.__file__).parent / "_internal" / "python_requirements.py").read_text()
m = re.search(r"pip='([0-9.]+)'", src)
print(m.group(1) if m else "")
PY
)
  ver=${ver:-24.2}
  cache="$HOME/.ansible/test/cache/get_pip_${ver//./_}.py"
  mkdir -p "$(dirname "$cache")"
  cmp -s scripts/lint.d/get-pip-offline.py "$cache" || cp scripts/lint.d/get-pip-offline.py "$cache"
  # ansible-test wants to run from .../ansible_collections/NAMESPACE/NAME
  local py
  py=$(python -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  (cd ansible_collections/cdsops/platform && ansible-test sanity --local --python "$py" --color no "$@")
}

if [[ ${1:-} == --prime ]]; then
  sanity --prime-venvs
  exit
fi

imports() {
  if ! grep -q '^\[tool\.importlinter\]' pyproject.toml; then
    echo "no [tool.importlinter] in pyproject.toml: nothing to check"
    return 0
  fi
  lint-imports --no-cache
}

gate sanity sanity
gate ansible-lint ansible-lint --offline --profile production --nocolor -q
gate ruff ruff check --no-cache src tests benchmarks scripts ansible_collections molecule
gate imports imports
if ((status)); then
  echo "lint: FAILED: ${failed[*]}" >&2
fi
exit $status
