"""Retrying Cloud TPU API calls that failed for a passing reason.

A long smoke run reads its node hundreds of times; one 503 from the API must not end it.
Reads, operation polls and deletes are safe to repeat, so they retry transient errors
(HTTP 500/502/503/504, a 429 rate limit, a reset connection) with bounded exponential
backoff and jitter, and log each retry. Everything else (403, 404, a zone quota of 0) is
raised at once: retrying it would only delay the decision. Creates are not retried here:
a repeated create is not idempotent, so a failed create is a zone failure (tpu.zones).
The sleep and the random source are parameters so tests run in milliseconds.
"""
from __future__ import annotations

import itertools
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Callable, TypeVar

from tpu.errors import api_message, classify_exception

T = TypeVar("T")
TRANSIENT_CODES = frozenset({500, 502, 503, 504})
LOGGER = logging.getLogger("grpo.tpu")


def is_transient(exc: BaseException) -> bool:
    """5xx, a 429 that is not a quota of 0, or a connection that broke."""
    import requests

    if isinstance(exc, (ConnectionError, requests.exceptions.ConnectionError)):
        return True
    code = getattr(exc, "code", None)
    if code == 429:
        return classify_exception(exc).reason != "quota_zero"
    return code in TRANSIENT_CODES


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` calls at most; waits initial_s, 2x, 4x ... capped at max_s, each scaled by
    a random factor in [0.5, 1) so that many clients do not retry in lockstep."""

    attempts: int = 7  # about 1-2 minutes of waiting in all
    initial_s: float = 2.0
    max_s: float = 60.0
    sleep: Callable[[float], None] = time.sleep
    rand: Callable[[], float] = random.random
    log: Callable[[str], None] = field(default=LOGGER.warning)

    def delay(self, retry: int) -> float:
        """Seconds before retry number `retry` (1-based)."""
        return min(self.max_s, self.initial_s * 2 ** (retry - 1)) * (0.5 + 0.5 * self.rand())

    def call(self, what: str, fn: Callable[[], T]) -> T:
        """fn(), retrying transient errors; `what` names the call in the log."""
        for retry in itertools.count(1):
            try:
                return fn()
            except Exception as exc:  # noqa: BLE001 - is_transient decides; the rest is re-raised
                if retry == self.attempts or not is_transient(exc):
                    raise
                wait = self.delay(retry)
                reason = (api_message(exc).strip().splitlines() or [""])[0][:200]
                self.log(f"{what}: transient error ({reason}); retry {retry}/{self.attempts - 1} in {wait:.1f} s")
                self.sleep(wait)
