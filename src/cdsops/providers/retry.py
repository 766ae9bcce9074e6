"""Retry policy for Google API calls: capped exponential backoff with full jitter.

Follows https://developers.google.com/admin-sdk/directory/v1/limits and
https://cloud.google.com/iam/docs/retry-strategy : retry 429, 5xx and 403
``rateLimitExceeded``/``userRateLimitExceeded`` with truncated exponential backoff; a
``quotaExceeded``/``dailyLimitExceeded`` error does not get better by retrying: stop.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from typing import Callable

__all__ = ["Backoff", "classify", "error_reason", "RETRY", "QUOTA", "FATAL"]

RETRY, QUOTA, FATAL = "retry", "quota", "fatal"
_RATE_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded", "backendError", "internalError"})
_QUOTA_REASONS = frozenset({"quotaExceeded", "dailyLimitExceeded", "dailyLimitExceededUnreg"})


@dataclass
class Backoff:
    """Sleep ``min(cap, base * 2**attempt) * U(0,1)`` (full jitter) between attempts."""

    base: float = 0.5
    cap: float = 32.0
    max_attempts: int = 8
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)
    slept: float = 0.0  # total, for reports and tests

    def delay(self, attempt: int) -> float:
        return min(self.cap, self.base * (2**attempt)) * self.rng.random()

    def wait(self, attempt: int) -> None:
        d = self.delay(attempt)
        self.slept += d
        self.sleep(d)


def error_reason(content: bytes | str | None) -> str:
    """The first ``errors[].reason`` (or ``status``) of a Google JSON error body."""
    if not content:
        return ""
    try:
        data = json.loads(content)
    except (ValueError, TypeError):
        return ""
    err = data.get("error") if isinstance(data, dict) else None
    if not isinstance(err, dict):
        return ""
    errors = err.get("errors") or []
    if errors and isinstance(errors[0], dict) and errors[0].get("reason"):
        return str(errors[0]["reason"])
    for d in err.get("details") or []:
        if isinstance(d, dict) and d.get("reason"):
            return str(d["reason"])
    return str(err.get("status") or "")


def classify(status: int, content: bytes | str | None) -> str:
    """RETRY, QUOTA or FATAL for an HTTP error answer."""
    reason = error_reason(content)
    if reason in _QUOTA_REASONS:
        return QUOTA
    if status == 429 or status >= 500:
        return RETRY
    if status == 403 and reason in _RATE_REASONS:
        return RETRY
    return FATAL
