"""The base of every error a cdsops command reports as one line (and its exit status)."""

from __future__ import annotations

__all__ = ["CdsopsError", "UsageError"]


class CdsopsError(Exception):
    """An expected failure: ``str()`` is the one-line reason, :attr:`exit_code` the status.
    Nothing was changed unless the message says otherwise."""

    exit_code = 1


class UsageError(CdsopsError):
    """A command was given a value it cannot use (a bad ``--now``, no roster store, ...)."""
