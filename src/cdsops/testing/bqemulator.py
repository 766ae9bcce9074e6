"""Run ``bqemulator`` (a local BigQuery REST emulator) as a subprocess for tests.

Usage from a pytest fixture (one emulator per module or session keeps tests fast)::

    import pytest
    from cdsops.testing import running_emulator

    @pytest.fixture(scope="session")
    def bq_endpoint():
        with running_emulator() as emu:      # free loopback port, ready when yielded
            yield emu.endpoint                # "http://127.0.0.1:PORT"

and point cdsops at it with ``monkeypatch.setenv("CDSOPS_BIGQUERY_ENDPOINT", endpoint)``
(see :func:`cdsops.bq.make_client`). Every test should use its own dataset name so
tests sharing one emulator stay independent.

The emulator is started from the same virtualenv as the running interpreter
(``<sys.prefix>/bin/bqemulator``), in ephemeral (in-memory) mode, bound to 127.0.0.1
only. It needs DuckDB's spatial extension in ``~/.duckdb/extensions`` (copied by
``scripts/bootstrap-venv.sh``). Its log goes to a temporary file whose tail is shown
when startup fails. :meth:`BigQueryEmulator.stop` terminates the whole process group,
so nothing is left running.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["BigQueryEmulator", "EmulatorError", "bigquery_client", "emulator_fixture", "free_port", "running_emulator"]

STARTUP_TIMEOUT = 60.0


class EmulatorError(RuntimeError):
    """bqemulator could not be started."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _executable() -> str:
    candidate = Path(sys.prefix) / "bin" / "bqemulator"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("bqemulator")
    if not found:
        raise EmulatorError("bqemulator is not installed (pip install -e '.[dev]')")
    return found


class BigQueryEmulator:
    """One bqemulator process on 127.0.0.1. Use as a context manager or call start()/stop()."""

    def __init__(self, *, project: str = "test-project", port: int | None = None, startup_timeout: float = STARTUP_TIMEOUT) -> None:
        self.project = project
        self.requested_port = port
        self.port: int | None = None
        self.startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self._workdir: str | None = None

    @property
    def endpoint(self) -> str:
        if self.port is None:
            raise EmulatorError("bqemulator is not running")
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """Process id of the running emulator (None when stopped)."""
        return self._proc.pid if self._proc is not None else None

    def start(self) -> BigQueryEmulator:
        if self._proc is not None:
            return self
        last = ""
        for _attempt in range(3):  # a port taken between free_port() and bind: try another
            port = self.requested_port or free_port()
            try:
                self._spawn(port)
                return self
            except EmulatorError as exc:
                last = str(exc)
                self.stop()
                if self.requested_port:
                    break
        raise EmulatorError(last)

    def _spawn(self, port: int) -> None:
        self._workdir = tempfile.mkdtemp(prefix="cdsops-bqemu-")
        self._log = open(os.path.join(self._workdir, "bqemulator.log"), "w+b")  # noqa: SIM115  the handle must outlive this statement (held lock or stream)
        env = dict(os.environ)
        env.pop("BIGQUERY_EMULATOR_HOST", None)
        env["TMPDIR"] = self._workdir  # its upload spool (bqemu_uploads/) goes away with the workdir
        cmd = [
            _executable(), "start",
            "--rest-host", "127.0.0.1", "--rest-port", str(port),
            "--grpc-host", "127.0.0.1", "--grpc-port", "0",
            "--ephemeral", "--project", self.project,
            "--log-level", "warning", "--log-format", "json",
        ]  # fmt: skip
        self._proc = subprocess.Popen(
            cmd, cwd=self._workdir, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            env=env, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + self.startup_timeout
        url = f"http://127.0.0.1:{port}/healthz"
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise EmulatorError(f"bqemulator exited with status {self._proc.returncode} on port {port}: {self._tail()}")
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:
                    if resp.status == 200:
                        self.port = port
                        return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.1)
        raise EmulatorError(f"bqemulator did not answer on port {port} within {self.startup_timeout:g} s: {self._tail()}")

    def _tail(self, limit: int = 2000) -> str:
        if self._log is None:
            return ""
        try:
            self._log.flush()
            self._log.seek(0)
            text = self._log.read().decode("utf-8", "replace")
        except (OSError, ValueError):
            return ""
        return " ".join(text[-limit:].split())

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        elif proc is not None:
            proc.wait()
        if self._log is not None:
            with contextlib.suppress(Exception):
                self._log.close()
            self._log = None
        if self._workdir:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        self.port = None

    def __enter__(self) -> BigQueryEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def running_emulator(*, project: str = "test-project") -> Iterator[BigQueryEmulator]:
    """Start bqemulator on a free loopback port; stop it (and its children) on exit."""
    emu = BigQueryEmulator(project=project)
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()


def emulator_fixture(scope: str = "module", project: str = "test-project") -> Any:
    """A pytest fixture yielding a running :class:`BigQueryEmulator`; in a test module::

        from cdsops.testing.bqemulator import emulator_fixture
        bq_emulator = emulator_fixture()          # one emulator for the module

        def test_x(bq_emulator, monkeypatch):
            monkeypatch.setenv("CDSOPS_BIGQUERY_ENDPOINT", bq_emulator.endpoint)
    """
    import pytest

    @pytest.fixture(scope=scope)
    def _emulator() -> Iterator[BigQueryEmulator]:
        with running_emulator(project=project) as emu:
            yield emu

    return _emulator


def bigquery_client(endpoint: str, project: str = "test-project") -> Any:
    """An official ``google.cloud.bigquery.Client`` talking to the emulator at ``endpoint``."""
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    return bigquery.Client(
        project=project, credentials=AnonymousCredentials(), client_options=ClientOptions(api_endpoint=endpoint)
    )


def new_dataset(endpoint: str, project: str = "test-project", prefix: str = "d") -> str:
    """Create a dataset with a fresh random name (``<prefix>_<8 hex>``) in the emulator; its name."""
    import secrets

    name = f"{prefix}_{secrets.token_hex(4)}"
    client = bigquery_client(endpoint, project)
    try:
        client.create_dataset(name)
    finally:
        client.close()
    return name
