"""A small per-address token bucket for failed access-token attempts of the review app.

Why: without it a short or guessable token falls to a script in a fraction of a second. Each
client address may fail `burst` times at once, then one more time every `every_seconds`; while
its bucket is empty every unauthenticated request from that address is answered 429 with a
`Retry-After`, the right token included, so guessing gains nothing by going on. Successful and
public requests cost nothing. Addresses are forgotten once their bucket is full again, and at
most `max_addresses` are tracked (the fullest go first), so memory stays bounded whatever
addresses a scanner comes from.

Behind a reverse proxy every client shares the proxy's address: the limit then applies to all
of them together, which is the safe side.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable


class FailureLimiter:
    """Token buckets of failed attempts, keyed by client address."""

    def __init__(
        self,
        burst: int = 10,
        every_seconds: float = 6.0,
        *,
        max_addresses: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if burst < 1 or not every_seconds > 0 or max_addresses < 1:
            raise ValueError("need burst >= 1, every_seconds > 0 and max_addresses >= 1")
        self.burst = burst
        self.every = every_seconds
        self.max_addresses = max_addresses
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, at)
        self._lock = threading.Lock()

    def _tokens(self, address: str, now: float) -> float:
        tokens, at = self._buckets.get(address, (float(self.burst), now))
        return min(float(self.burst), tokens + (now - at) / self.every)

    def retry_after(self, address: str) -> int:
        """Seconds until `address` may try again; 0 when it may try now."""
        with self._lock:
            tokens = self._tokens(address, self.clock())
        return 0 if tokens >= 1.0 else max(1, math.ceil((1.0 - tokens) * self.every))

    def failed(self, address: str) -> None:
        """Spend one attempt of `address`."""
        with self._lock:
            now = self.clock()
            tokens = max(0.0, self._tokens(address, now) - 1.0)
            self._buckets[address] = (tokens, now)
            if len(self._buckets) > self.max_addresses:
                self._forget(now)

    def _forget(self, now: float) -> None:
        """Drop refilled buckets, then the fullest, until within `max_addresses`."""
        by_tokens = sorted(self._buckets, key=lambda a: -self._tokens(a, now))
        for address in by_tokens:
            if len(self._buckets) <= self.max_addresses and self._tokens(address, now) < self.burst:
                break
            del self._buckets[address]
