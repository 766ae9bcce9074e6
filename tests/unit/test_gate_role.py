"""The signin_gate role follows the project's role conventions, and its templates render."""

from __future__ import annotations

import json
from pathlib import Path

import jinja2
import pytest
import yaml

from cdsops.gate.config import config_from_mapping

ROLE = Path(__file__).resolve().parents[2] / "roles/signin_gate"


def load(rel):
    return yaml.safe_load((ROLE / rel).read_text())


def test_argument_specs_equal_defaults():
    defaults = load("defaults/main.yml")
    options = load("meta/argument_specs.yml")["argument_specs"]["main"]["options"]
    assert set(options) == set(defaults)
    for name, spec in options.items():
        assert name.startswith("signin_gate_")
        assert spec["default"] == defaults[name], name
        assert spec.get("description"), name
    for secret in ("signin_gate_client_secret", "signin_gate_cookie_key", "signin_gate_hash_key"):
        assert options[secret].get("no_log") is True


def test_main_only_dispatches_with_tags_and_toggles():
    main = load("tasks/main.yml")
    for task in main:
        assert set(task) <= {"name", "ansible.builtin.import_tasks", "when", "tags"}, task
        concern = task["ansible.builtin.import_tasks"].removesuffix(".yml")
        if concern != "validate":
            assert task["when"] == f"signin_gate_{concern}_enabled | bool"
            assert f"signin_gate_{concern}" in task["tags"]
            assert f"signin_gate_{concern}_enabled" in load("defaults/main.yml")


@pytest.mark.parametrize("path", sorted(p.relative_to(ROLE).as_posix() for p in (ROLE / "tasks").glob("*.yml"))
                         + ["handlers/main.yml"])
def test_tasks_are_named_fqcn_and_modes_quoted(path):
    text = (ROLE / path).read_text()
    for task in load(path):
        assert task.get("name"), (path, task)
        modules = [k for k in task if "." in k]
        assert modules and all(m.startswith("ansible.") for m in modules), (path, task)
        for args in (task[m] for m in modules):
            if isinstance(args, dict) and "mode" in args:
                assert isinstance(args["mode"], str) and args["mode"].startswith("0")
    assert "mode: 0" not in text  # quoted in the source, not just parsed as strings


def render(name, **extra):
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(ROLE / "templates")), undefined=jinja2.StrictUndefined)
    env.filters["to_nice_json"] = lambda v, indent=4: json.dumps(v, indent=indent, sort_keys=True)
    env.filters["bool"] = bool
    variables = dict(load("defaults/main.yml"))
    variables.update(load("vars/main.yml"))
    variables.update(signin_gate_client_id="id", signin_gate_public_url="https://ide.example.org",
                     signin_gate_registration_url="https://forms.example.org/r", ansible_managed="managed",
                     role_path=str(ROLE))
    variables.update(extra)
    # second pass for the vars that refer to other vars
    for _ in range(2):
        variables = {k: (env.from_string(v).render(**variables) if isinstance(v, str) and "{{" in v else v)
                     for k, v in variables.items()}
    return env.get_template(name).render(**variables)


def test_gate_json_renders_to_a_valid_gate_configuration():
    cfg = config_from_mapping(json.loads(render("gate.json.j2")))
    assert cfg.listen == "127.0.0.1:9180" and cfg.map_file == "/etc/cdsops/signin-map.json"
    assert cfg.client_secret_file == "/etc/cdsops/gate-client-secret" and cfg.cookie_secure is True
    assert cfg.hash_key_file == "/etc/cdsops/signin.key"


def test_snippets_keep_the_contract():
    server = render("cdsops-gate-server.conf.j2")
    protect = render("cdsops-gate-protect.conf.j2")
    assert "location = /_cdsops/auth" in server and "internal;" in server
    assert "location @cdsops_gate_login" in server and "proxy_pass http://127.0.0.1:9180" in server
    assert "auth_request /_cdsops/auth;" in protect
    assert "proxy_set_header X-RStudio-Username $cdsops_gate_username;" in protect
    assert "error_page 401 = @cdsops_gate_login;" in protect


def test_unit_runs_the_gate_unprivileged_and_sandboxed():
    unit = render("cdsops-gate.service.j2")
    assert "User=cdsops-gate" in unit and "ExecStart=/usr/bin/python3 -m cdsops.gate --config /etc/cdsops/gate.json" in unit
    assert "ProtectSystem=strict" in unit and "NoNewPrivileges=yes" in unit
    # the sandbox leaves exactly the state directory writable (revoked sessions, subject bindings)
    assert "ReadWritePaths=/var/lib/cdsops-gate\n" in unit
    assert "ProtectSystem" not in render("cdsops-gate.service.j2", signin_gate_systemd_hardening=False)


def test_unit_logs_under_the_contracted_syslog_identifier():
    """The journal shipper and `cdsops events ingest` select the gate's audit lines by it."""
    unit = render("cdsops-gate.service.j2")
    assert "\nSyslogIdentifier=cdsops-gate\n" in unit
    assert "SyslogIdentifier=cdsops-gate" in render("cdsops-gate.service.j2", signin_gate_systemd_hardening=False)


def test_gate_json_names_the_state_directory():
    cfg = config_from_mapping(json.loads(render("gate.json.j2", signin_gate_state_dir="/srv/gate-state")))
    assert cfg.state_dir == "/srv/gate-state"


def test_public_locations_are_rate_limited_and_the_zones_are_at_http_level(tmp_path):
    """Every gate location a browser can reach is limited; the zones pass `nginx -t` where they
    land (http level) and the snippets pass it with them, through the role's own checker."""
    import shutil
    import subprocess

    server = render("cdsops-gate-server.conf.j2")
    limits = render("cdsops-gate-limits.conf.j2")
    assert "limit_req_zone $binary_remote_addr zone=cdsops_gate_addr:1m rate=20r/s;" in limits
    assert 'limit_req_zone "all" zone=cdsops_gate_all:64k rate=100r/s;' in limits
    blocks = {b.split("{", 1)[0].strip(): b for b in server.split("\nlocation ")[1:]}
    for name in ("^~ /_cdsops/", "@cdsops_gate_login"):
        assert "limit_req zone=cdsops_gate_addr burst=100 nodelay;" in blocks[name], name
        assert "limit_req zone=cdsops_gate_all burst=300 nodelay;" in blocks[name], name
        assert "limit_req_status 429;" in blocks[name], name
    assert "limit_req" not in blocks["= /_cdsops/auth"]  # the IDE's every request: never limited
    if not shutil.which("nginx"):
        pytest.fail("nginx is required (scripts/apt/gate.txt)")
    for name, text in (("limits.conf", limits), ("server.conf", server),
                       ("protect.conf", render("cdsops-gate-protect.conf.j2"))):
        (tmp_path / name).write_text(text)
    check = str(ROLE / "files/cdsops-gate-check-snippet")

    def nginx_t(*args):
        return subprocess.run(["sh", check, *args], capture_output=True, text=True, timeout=60)

    assert nginx_t("http", str(tmp_path / "limits.conf")).returncode == 0
    ok = nginx_t("server", str(tmp_path / "server.conf"), str(tmp_path / "limits.conf"))
    assert ok.returncode == 0, ok.stderr
    assert nginx_t("protect", str(tmp_path / "protect.conf"), str(tmp_path / "limits.conf")).returncode == 0
    # without the zones the server snippet is refused: the checker really tests them together
    assert nginx_t("server", str(tmp_path / "server.conf")).returncode != 0


def test_code_files_listed_exist():
    src = ROLE.parents[1] / "src/cdsops"
    files = load("vars/main.yml")["__signin_gate_code_files"]
    assert all((src / f).is_file() for f in files)
    assert sorted(p.name for p in (src / "gate").glob("*.py")) == sorted(f[5:] for f in files if f.startswith("gate/"))


def test_the_ide_site_includes_the_snippets_where_this_role_writes_them():
    """Contract with the rstudio_server role: the paths it includes are the ones rendered here."""
    site = ROLE.parent / "rstudio_server/templates/nginx-rstudio.conf.j2"
    if not site.exists():
        pytest.skip("rstudio_server role not present")
    text = site.read_text()
    snippets_dir = load("defaults/main.yml")["signin_gate_nginx_snippets_dir"]
    assert f"include {snippets_dir}/cdsops-gate-server.conf;" in text
    assert f"include {snippets_dir}/cdsops-gate-protect.conf;" in text
    task = next(t for t in load("tasks/nginx.yml") if t["name"] == "Render the gate's nginx snippets")
    names = {item["dest"] for item in task["loop"]}
    assert names == {"cdsops-gate-server.conf", "cdsops-gate-protect.conf"}


def test_missing_or_weak_settings_fail_clearly_without_printing_secrets(tmp_path):
    import os
    import subprocess
    import sys

    play = tmp_path / "play.yml"
    play.write_text(yaml.safe_dump([{
        "hosts": "localhost", "gather_facts": False,
        "tasks": [{"ansible.builtin.include_role": {"name": "signin_gate", "tasks_from": "validate"},
                   "vars": {"signin_gate_client_id": "x", "signin_gate_client_secret": "s3cret-value-xyz",
                            "signin_gate_cookie_key": "short-cookie-key", "signin_gate_hash_key": "0123456789abcdef",
                            "signin_gate_public_url": "https://ide.example.org",
                            "signin_gate_registration_url": "https://forms.example.org"}}],
    }]))
    env = dict(os.environ, ANSIBLE_ROLES_PATH=str(ROLE.parent), ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_PYTHON_INTERPRETER=sys.executable)
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                           str(play)], env=env, capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "signin_gate_cookie_key | length >= 32" in out
    assert "s3cret-value-xyz" not in out and "short-cookie-key" not in out


def test_workbench_signs_out_through_the_gate():
    """Contract with the rstudio_server role: Workbench's "Sign out" ends at the gate's logout
    (which revokes the session), not at the sign-in URL (which used to send the student back)."""
    from cdsops.gate.views import LOGOUT_URL

    rserver = ROLE.parent / "rstudio_server/templates/rserver.conf.j2"
    if not rserver.exists():
        pytest.skip("rstudio_server role not present")
    assert f"\nauth-proxy-sign-out-url={LOGOUT_URL}\n" in rserver.read_text()
    checker = (ROLE.parent / "rstudio_server/files/cdsops-rstudio-conf-check").read_text()
    assert '"auth-proxy-sign-out-url"' in checker  # the role's own validator knows the option
    site_check = (ROLE.parent / "rstudio_server/files/cdsops-nginx-check-site").read_text()
    assert "include /etc/nginx/conf.d/*.conf;" in site_check  # the site validates with the gate's zones


def test_support_command_runs_the_installed_gate_with_its_configuration():
    wrapper = render("cdsops-gate.sh.j2")
    assert wrapper.startswith("#!/bin/sh\n")
    assert ('exec env PYTHONPATH=/opt/cdsops-gate PYTHONDONTWRITEBYTECODE=1 /usr/bin/python3 -m cdsops.gate '
            '--config /etc/cdsops/gate.json "$@"') in wrapper
    task = next(t for t in load("tasks/install.yml")
                if t.get("ansible.builtin.template", {}).get("src") == "cdsops-gate.sh.j2")
    assert task["ansible.builtin.template"]["dest"] == "/usr/local/sbin/cdsops-gate"


def test_the_shipped_code_holds_every_module_the_gate_imports():
    """The role ships a list of the package's files, not the package: every cdsops module the
    gate imports (and what those import in turn) must be on the list, or the gate cannot start
    on the compute host."""
    import ast

    src = Path(__file__).resolve().parents[2] / "src" / "cdsops"
    shipped = set(yaml.safe_load((Path(__file__).resolve().parents[2] / "roles/signin_gate/vars/main.yml").read_text())["__signin_gate_code_files"])
    todo, seen = [p.relative_to(src).as_posix() for p in (src / "gate").glob("*.py")], set()
    while todo:
        rel = todo.pop()
        if rel in seen:
            continue
        seen.add(rel)
        package = Path(rel).parent
        for node in ast.walk(ast.parse((src / rel).read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package
                for _ in range(node.level - 1):
                    base = base.parent
                names = [node.module] if node.module else [a.name for a in node.names]
                for name in names:
                    path = base.joinpath(*name.split("."))
                    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
                        if (src / candidate).exists():
                            todo.append(candidate.as_posix())
            elif isinstance(node, ast.ImportFrom | ast.Import):
                for name in [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]:
                    if name and name.startswith("cdsops."):
                        todo.append((Path(*name.split(".")[1:]).with_suffix(".py")).as_posix())
    missing = sorted(r for r in seen if r not in shipped and (src / r).exists())
    assert not missing, f"the gate imports {missing}, which roles/signin_gate/vars/main.yml does not ship"
