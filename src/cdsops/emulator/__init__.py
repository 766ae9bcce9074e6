"""Local emulator of the Google APIs (Directory members, IAM policies, BigQuery dataset access)
and of SendGrid's mail send endpoint, for tests and demos. See :mod:`cdsops.emulator.server`."""

from cdsops.emulator.server import Emulator, Fault, GoogleError

__all__ = ["Emulator", "Fault", "GoogleError"]
