"""Retry policy for Google API calls: capped exponential backoff with full jitter.

Follows https://developers.google.com/admin-sdk/directory/v1/limits and
https://cloud.google.com/iam/docs/retry-strategy : retry 429, 5xx and 403
``rateLimitExceeded``/``userRateLimitExceeded`` with truncated exponential backoff.

``quotaExceeded`` is retried the same way: the Directory API documents it as "the limit of
concurrent requests for a certain operation has been reached" and says to retry with
exponential backoff, and real group-member writes get it when too many run at once (batched
or concurrent inserts, reported by GAM and the Terraform googleworkspace provider users).
``dailyLimitExceeded`` stops the run cleanly: it must not be retried before the quota resets.

:class:`RateLimiter` paces calls under a documented per-minute quota (2,400 queries per
minute per user for the Directory API) so a large sync does not run into it at all.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["FATAL", "QUOTA", "RETRIED_QUOTA_REASONS", "RETRY", "Backoff", "RateLimiter", "classify", "error_reason"]

RETRY, QUOTA, FATAL = "retry", "quota", "fatal"
#: quota reasons that are retried with backoff like a rate limit (concurrent-request limits)
RETRIED_QUOTA_REASONS = frozenset({"quotaExceeded"})
_RATE_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded", "backendError", "internalError"}) | RETRIED_QUOTA_REASONS
_QUOTA_REASONS = frozenset({"dailyLimitExceeded", "dailyLimitExceededUnreg"})


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


class RateLimiter:
    """At most ``calls`` per ``per_seconds`` (sliding window), with a small safety margin.

    ``acquire(n)`` blocks (through the injectable ``sleep``) until ``n`` more calls fit.
    """

    def __init__(self, calls: int, per_seconds: float = 60.0, *, margin: float = 0.05,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        if calls < 1 or per_seconds <= 0:
            raise ValueError("a rate limit needs at least one call per positive window")
        import collections

        self.calls, self.window = calls, per_seconds * (1 + margin) + margin
        self.clock, self.sleep = clock, sleep
        self._log: collections.deque[float] = collections.deque()
        self.waited = 0.0

    def acquire(self, n: int = 1) -> None:
        if n > self.calls:
            raise ValueError(f"{n} calls can never fit a limit of {self.calls} per window; send smaller batches")
        while True:
            now = self.clock()
            while self._log and self._log[0] <= now - self.window:
                self._log.popleft()
            if len(self._log) + n <= self.calls:
                self._log.extend([now] * n)
                return
            # wait until enough of the oldest calls leave the window
            wait = self._log[len(self._log) + n - self.calls - 1] + self.window - now
            wait = max(wait, 0.001)
            self.waited += wait
            self.sleep(wait)


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
