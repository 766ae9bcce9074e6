"""The audit trail: events collected from the compute hosts, folded into an events table
next to the roster (usernames and student ids only, never an email or a name), and the
commands that read it (``cdsops events ingest``, ``cdsops whois``, ``cdsops report``).

See docs/audit.md.
"""

from .model import KINDS, Event

__all__ = ["KINDS", "Event"]
