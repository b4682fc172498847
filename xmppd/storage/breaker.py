"""The database's "is down" state (a circuit breaker).

Theory of operation: when a storage call finds the database unreachable (a refused or lost
connection, a pool timeout), the breaker opens. While open, every storage call fails at once
with `StorageUnavailable` instead of waiting for a connect timeout, and one background task
probes the database every `retry_interval` seconds; the first probe that succeeds closes the
breaker. The outage is logged once when it starts and once when it ends (with how many calls
were refused meanwhile), never per call. Callers decide what a refused call means: live
messages are delivered and their archive copies spooled (modules/mam.py), messages that need
storage are answered with a temporary error (RFC 6120 §8.3.3.18, type wait).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import trio

from xmppd.storage import probes
from xmppd.storage.base import StorageUnavailable

log = logging.getLogger("xmppd.storage")

DEFAULT_RETRY_INTERVAL = 2.0  # seconds


class Breaker:
    __slots__ = ("where", "retry_interval", "_probe", "down", "cause", "since", "refused")

    def __init__(
        self, where: str, probe: Callable[[], Awaitable[None]], retry_interval: float
    ) -> None:
        self.where = where
        self.retry_interval = retry_interval
        self._probe = probe  # raises StorageError while the database is still unreachable
        self.down = False
        self.cause = ""
        self.since = 0.0  # time.monotonic() when the outage began
        self.refused = 0  # calls refused at once during the current outage

    def check(self) -> None:
        """Raise StorageUnavailable at once while the database is known to be down."""
        if self.down:
            self.refused += 1
            probes.refused()
            raise StorageUnavailable(f"database {self.where} is unavailable: {self.cause}")

    def failed(self, exc: BaseException) -> None:
        """A call found the database unreachable: open, log once, start probing."""
        if self.down:
            return
        self.down, self.cause, self.since, self.refused = True, str(exc), time.monotonic(), 0
        log.error(
            "database %s unavailable (%s); storage calls fail at once, probing every %.1f s",
            self.where,
            self.cause,
            self.retry_interval,
        )
        # A system task: the database belongs to no nursery of its own, and the probe must
        # outlive whichever task noticed the outage.
        trio.lowlevel.spawn_system_task(self._probe_until_back, name="storage-probe")

    async def _probe_until_back(self) -> None:
        try:
            while self.down:
                await trio.sleep(self.retry_interval)
                try:
                    await self._probe()
                except Exception as exc:  # still down (StorageError), or a broken probe
                    self.cause = str(exc)
                    continue
                self.down = False
                log.warning(
                    "database %s is back after %.1f s (%d storage calls refused meanwhile)",
                    self.where,
                    time.monotonic() - self.since,
                    self.refused,
                )
        except trio.Cancelled:
            raise
        except BaseException:  # a system task must never crash the run
            log.exception("database probe failed")
