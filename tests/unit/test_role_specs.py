"""Role conventions (design.md), checked for EVERY role under roles/:

- meta/argument_specs.yml options == defaults/main.yml keys, with equal default values;
- role variables carry the role name as prefix (internal ones in vars/ as ``__<role>_``);
- every task and handler has a name and a fully qualified module name, loops use ``loop:``;
- file modes are quoted strings (an unquoted 0644 is the integer 420);
- tasks/main.yml only dispatches (include_tasks/import_tasks, with tags);
- docs/roles.md and the roles' generated README sections are up to date.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLES = sorted(p for p in (ROOT / "roles").iterdir() if p.is_dir() and not p.name.startswith("."))

TASK_KEYWORDS = {
    "name", "when", "loop", "loop_control", "register", "notify", "tags", "become", "become_user",
    "become_method", "changed_when", "failed_when", "check_mode", "diff", "no_log", "ignore_errors",
    "vars", "environment", "delegate_to", "delegate_facts", "run_once", "until", "retries", "delay",
    "args", "listen", "async", "poll", "throttle", "any_errors_fatal", "timeout", "module_defaults",
    "collections", "debugger", "ignore_unreachable", "block", "rescue", "always", "connection",
}


def load_yaml(path: Path):
    with path.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def iter_tasks(tasks, origin):
    for task in tasks or []:
        assert isinstance(task, dict), f"{origin}: a task must be a mapping, got {task!r}"
        yield task
        for key in ("block", "rescue", "always"):
            if key in task:
                yield from iter_tasks(task[key], origin)


def task_files(role: Path):
    files = sorted((role / "tasks").glob("*.yml")) + sorted((role / "handlers").glob("*.yml"))
    return [f for f in files if f.is_file()]


def module_of(task: dict) -> str | None:
    keys = [k for k in task if k not in TASK_KEYWORDS and not k.startswith("with_")]
    if "block" in task:
        return None
    assert len(keys) == 1, f"task {task.get('name')!r}: expected one module key, found {keys}"
    return keys[0]


def test_there_are_roles():
    assert {"baseline", "management", "monitoring"} <= {r.name for r in ROLES}


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.name)
def test_argument_specs_equal_defaults(role: Path):
    defaults_file = role / "defaults" / "main.yml"
    specs_file = role / "meta" / "argument_specs.yml"
    assert specs_file.is_file(), f"{role.name}: meta/argument_specs.yml is missing"
    defaults = (load_yaml(defaults_file) or {}) if defaults_file.is_file() else {}
    options = load_yaml(specs_file)["argument_specs"]["main"].get("options") or {}
    assert set(options) == set(defaults), (
        f"{role.name}: only in argument_specs: {sorted(set(options) - set(defaults))}; "
        f"only in defaults: {sorted(set(defaults) - set(options))}"
    )
    for name, spec in options.items():
        assert "default" in spec, f"{role.name}: option {name} has no default in argument_specs"
        assert spec["default"] == defaults[name], (
            f"{role.name}: {name} default differs: argument_specs {spec['default']!r} != defaults {defaults[name]!r}"
        )
        assert spec.get("type"), f"{role.name}: option {name} has no type"
        assert spec.get("description"), f"{role.name}: option {name} has no description"


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.name)
def test_variables_carry_the_role_prefix(role: Path):
    prefix = role.name + "_"
    defaults_file = role / "defaults" / "main.yml"
    defaults = (load_yaml(defaults_file) or {}) if defaults_file.is_file() else {}
    bad = [k for k in defaults if not k.startswith(prefix)]
    assert not bad, f"{role.name}: defaults without the '{prefix}' prefix: {bad}"
    vars_file = role / "vars" / "main.yml"
    if vars_file.is_file():
        internal = load_yaml(vars_file) or {}
        bad = [k for k in internal if not k.startswith("__" + prefix)]
        assert not bad, f"{role.name}: vars/main.yml keys must start with '__{prefix}': {bad}"
    for path in task_files(role):
        for task in iter_tasks(load_yaml(path), path):
            for key in ("register",):
                if key in task:
                    assert task[key].startswith("__" + prefix), (
                        f"{path.relative_to(ROOT)}: register {task[key]!r} must start with '__{prefix}'"
                    )
            if "set_fact" in str(module_of(task)):
                args = task[module_of(task)] or {}
                bad = [k for k in args if k != "cacheable" and not k.startswith((prefix, "__" + prefix))]
                assert not bad, f"{path.relative_to(ROOT)}: set_fact names without the role prefix: {bad}"


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.name)
def test_tasks_have_names_fqcn_loop_and_quoted_modes(role: Path):
    files = task_files(role)
    assert (role / "tasks" / "main.yml").is_file(), f"{role.name}: tasks/main.yml is missing"
    for path in files:
        where = path.relative_to(ROOT)
        for task in iter_tasks(load_yaml(path), path):
            assert task.get("name"), f"{where}: a task has no name: {task!r}"
            assert not any(k.startswith("with_") for k in task), f"{where}: {task['name']!r} uses with_*, use loop:"
            module = module_of(task)
            if module is None:
                continue
            assert module.count(".") >= 2, f"{where}: {task['name']!r} uses {module!r}, not a fully qualified name"
            args = task.get(module)
            if isinstance(args, dict) and "mode" in args:
                assert isinstance(args["mode"], str), (
                    f"{where}: {task['name']!r} has mode {args['mode']!r}: quote it (\"0644\")"
                )
            if isinstance(args, dict) and isinstance(args.get("validate"), str):
                assert "%s" in args["validate"], f"{where}: {task['name']!r}: validate needs %s"


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.name)
def test_main_only_dispatches(role: Path):
    tasks = load_yaml(role / "tasks" / "main.yml") or []
    for task in tasks:
        module = module_of(task)
        assert module in {"ansible.builtin.include_tasks", "ansible.builtin.import_tasks"}, (
            f"{role.name}: tasks/main.yml should only dispatch to one file per concern, found {module!r}"
        )
        assert task.get("tags"), f"{role.name}: tasks/main.yml entry {task.get('name')!r} has no tag"


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.name)
def test_role_has_readme(role: Path):
    assert (role / "README.md").is_file(), f"{role.name}: README.md is missing"


def test_docs_roles_md_is_generated_from_the_argument_specs():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen-role-docs.py"), "--check"],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
