"""Fast testinfra `host` for the cdsops scenarios: `podman exec` instead of Ansible.

Molecule runs testinfra with `--connection ansible`, which costs an Ansible run (1-2 s) per
command. Import this fixture in a scenario's tests to run commands with `podman exec`
(milliseconds) against the same inventory host:

    import sys, pathlib
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "shared"))
    from podman_host import host  # noqa: E402,F401  (overrides testinfra's fixture)

`host.ansible(...)` is not available with this backend (use `_testinfra_host.ansible`).
"""

from __future__ import annotations

import pytest
import testinfra


@pytest.fixture(scope="module")
def host(_testinfra_host):
    name = _testinfra_host.backend.get_hostname()
    return testinfra.get_host(f"podman://{name}")
