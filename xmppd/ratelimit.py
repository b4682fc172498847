"""One token bucket for every rate limit: bytes per connection, WebSocket and channel frames,
BOSH requests, room messages.

Sans-IO: the caller passes the clock reading, so the bucket is tested without sleeping and
works with trio's clock or `time.monotonic` alike. A bucket starts full.
"""

from __future__ import annotations


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up; `spend` may go into debt."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = float(rate)
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = now

    def _refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def spend(self, cost: float, now: float) -> float:
        """Take `cost` tokens even if that leaves a debt; return the seconds to pause so the
        debt is paid (0 when there is none). Used where the work is already done (bytes read)
        and the caller slows down instead of refusing."""
        self._refill(now)
        self.tokens -= cost
        return -self.tokens / self.rate if self.tokens < 0 else 0.0

    def allow(self, now: float, cost: float = 1.0) -> bool:
        """Take `cost` tokens if they are there; refuse (and take nothing) otherwise."""
        self._refill(now)
        if self.tokens < cost:
            return False
        self.tokens -= cost
        return True
