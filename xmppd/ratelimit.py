"""One token bucket for every rate limit: bytes per connection, WebSocket and channel frames,
BOSH requests, room messages.

Sans-IO: the caller passes the clock reading, so the bucket is tested without sleeping and
works with trio's clock or `time.monotonic` alike. A bucket starts full. A bucket given a
`limit` name counts its refusals and pauses in `xmppd_ratelimit_refusals{limit}` (/metrics).
"""

from __future__ import annotations

from . import metrics


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up; `spend` may go into debt."""

    __slots__ = ("rate", "burst", "tokens", "stamp", "limit")

    def __init__(self, rate: float, burst: float, now: float, limit: str = "") -> None:
        self.rate = float(rate)
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = now
        self.limit = limit  # the metrics label; "" counts nothing

    def _refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def spend(self, cost: float, now: float) -> float:
        """Take `cost` tokens even if that leaves a debt; return the seconds to pause so the
        debt is paid (0 when there is none). Used where the work is already done (bytes read)
        and the caller slows down instead of refusing."""
        self._refill(now)
        self.tokens -= cost
        if self.tokens >= 0:
            return 0.0
        if self.limit:
            metrics.refused(self.limit)
        return -self.tokens / self.rate

    def allow(self, now: float, cost: float = 1.0) -> bool:
        """Take `cost` tokens if they are there; refuse (and take nothing) otherwise."""
        self._refill(now)
        if self.tokens < cost:
            if self.limit:
                metrics.refused(self.limit)
            return False
        self.tokens -= cost
        return True
