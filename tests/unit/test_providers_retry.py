"""Retry classification and backoff of the Google providers."""

from __future__ import annotations

import json
import random

import pytest

from cdsops.providers.retry import FATAL, QUOTA, RETRY, Backoff, classify, error_reason


def body(reason: str, code: int = 403) -> bytes:
    return json.dumps({"error": {"code": code, "message": "m", "errors": [{"domain": "usageLimits", "reason": reason}]}}).encode()


@pytest.mark.parametrize(
    "status,content,expected",
    [
        (429, body("rateLimitExceeded", 429), RETRY),
        (500, body("backendError", 500), RETRY),
        (503, b"", RETRY),
        (502, b"<html>bad gateway</html>", RETRY),
        (403, body("rateLimitExceeded"), RETRY),
        (403, body("userRateLimitExceeded"), RETRY),
        (403, body("quotaExceeded"), RETRY),  # concurrent-request limit: back off and retry
        (429, body("quotaExceeded", 429), RETRY),
        (403, body("dailyLimitExceeded"), QUOTA),
        (403, body("forbidden"), FATAL),
        (400, body("invalid", 400), FATAL),
        (404, body("notFound", 404), FATAL),
        (409, body("duplicate", 409), FATAL),
    ],
)
def test_classify(status: int, content: bytes, expected: str) -> None:
    assert classify(status, content) == expected


def test_error_reason_reads_errors_details_and_status() -> None:
    assert error_reason(body("duplicate")) == "duplicate"
    assert error_reason(json.dumps({"error": {"code": 409, "status": "ABORTED"}})) == "ABORTED"
    assert error_reason(json.dumps({"error": {"details": [{"reason": "RATE_LIMIT_EXCEEDED"}]}})) == "RATE_LIMIT_EXCEEDED"
    assert error_reason(b"not json") == "" and error_reason(None) == "" and error_reason(b"[1]") == ""


def test_backoff_is_capped_exponential_with_full_jitter() -> None:
    slept: list[float] = []
    b = Backoff(base=0.5, cap=4.0, sleep=slept.append, rng=random.Random(1))
    for attempt in range(10):
        b.wait(attempt)
    assert len(slept) == 10
    for attempt, d in enumerate(slept):
        assert 0 <= d <= min(4.0, 0.5 * 2**attempt)
    assert max(slept[5:]) <= 4.0
    assert len(set(slept)) == 10  # jittered, not a fixed schedule
    assert b.slept == pytest.approx(sum(slept))


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s


def test_rate_limiter_sliding_window() -> None:
    from cdsops.providers.retry import RateLimiter

    clock = FakeClock()
    rl = RateLimiter(10, 1.0, margin=0.0, clock=clock, sleep=clock.sleep)
    rl.acquire(10)
    assert rl.waited == 0
    rl.acquire(1)  # must wait until the first ten leave the window
    assert rl.waited == pytest.approx(1.0, abs=0.01)
    clock.now += 0.5
    rl.acquire(5)
    # never more than 10 calls in any 1 s window
    assert len([t for t in rl._log if t > clock.now - 1.0]) <= 10
    with pytest.raises(ValueError, match="can never fit"):
        rl.acquire(11)
    with pytest.raises(ValueError):
        RateLimiter(0, 60)
