"""One source for the student uid range (issue 13 item 6): baseline_student_uid_min/max.

Every other role's ``*_student_uid_min``/``*_student_uid_max`` default (the IDE roles, the
audit trail) is derived from the baseline role's variable, so an inventory that sets the range
once sets it for the firewall, the audit rules, the IDE guard, Workbench and the hub alike.
"""

from __future__ import annotations

from pathlib import Path

import jinja2
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BASELINE = yaml.safe_load((ROOT / "roles/baseline/defaults/main.yml").read_text(encoding="utf-8"))
RANGE_VARS = sorted(
    (role.name, name, value)
    for role in (ROOT / "roles").iterdir()
    if role.name != "baseline" and (role / "defaults/main.yml").is_file()
    for name, value in (yaml.safe_load((role / "defaults/main.yml").read_text(encoding="utf-8")) or {}).items()
    if name.endswith(("_student_uid_min", "_student_uid_max"))
)


def test_the_ide_and_audit_roles_have_a_range_variable():
    roles = {role for role, _, _ in RANGE_VARS}
    assert {"rstudio_server", "jupyterhub", "audit_trail"} <= roles, roles


@pytest.mark.parametrize("role, name, value", RANGE_VARS, ids=[f"{r}:{n}" for r, n, _ in RANGE_VARS])
def test_every_roles_range_follows_the_baseline_variable(role, name, value):
    end = name.rsplit("_", 1)[1]  # min or max
    assert isinstance(value, str) and f"baseline_student_uid_{end}" in value, (
        f"{role}: {name} = {value!r} must be derived from baseline_student_uid_{end}")
    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    # with the baseline role in the play it follows the baseline value ...
    moved = {"baseline_student_uid_min": 300001, "baseline_student_uid_max": 399999}
    assert int(env.from_string(value).render(**moved)) == moved[f"baseline_student_uid_{end}"]
    # ... and alone it falls back to the baseline role's own default
    loose = jinja2.Environment()
    assert int(loose.from_string(value).render()) == BASELINE[f"baseline_student_uid_{end}"]
