"""Test helpers shared by every engineer's tests (not used in production code paths).

- :mod:`cdsops.testing.bqemulator`: start ``bqemulator`` as a subprocess on a free
  loopback port, wait until it answers, stop it after (``BigQueryEmulator``,
  ``running_emulator``, ``emulator_fixture``, ``bigquery_client``, ``new_dataset``).
- :mod:`cdsops.testing.registrations`: write a registration CSV (``write_registrations``).
"""

from .bqemulator import (
                         BigQueryEmulator,
                         EmulatorError,
                         bigquery_client,
                         emulator_fixture,
                         free_port,
                         new_dataset,
                         running_emulator,
)
from .registrations import write_registrations

__all__ = ["BigQueryEmulator", "EmulatorError", "bigquery_client", "emulator_fixture", "free_port", "new_dataset",
           "running_emulator", "write_registrations"]
