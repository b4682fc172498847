"""The trio shell of the login throttle (xmppd/throttle.py): wait, then check, one at a time.

`attempt()` wraps the check of one secret (a SASL password check or SCRAM lookup, a host-app
token). Attempts from an address that is not slowed go straight through, up to `slow_after`
at once (an office behind one NAT logging in at nine is not serialized). Beyond that, or once
the address is slowed, its attempts queue on a lock and each waits its delay *inside* it, so a
burst of parallel guesses is answered like a sequence: the failure of one is counted before
the next is checked, and attempts still queued when a ban begins are refused at once.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from . import metrics
from .throttle import LoginThrottle

log = logging.getLogger("xmppd.auth")


class LoginGate:
    def __init__(self, throttle: LoginThrottle) -> None:
        self.throttle = throttle
        self._in_flight: Counter[str] = Counter()  # attempts being checked, per address key
        self._turns: dict[str, trio.Lock] = {}  # only for slowed addresses with attempts

    @asynccontextmanager
    async def attempt(self, address: str, account: str | None) -> AsyncIterator[bool]:
        """Yields True when the secret may be checked now, False when the address is banned.
        The outcome is reported to the throttle by the caller, before this block ends."""
        throttle = self.throttle
        key = throttle.key(address)
        if key is None:
            yield True
            return
        if throttle.banned(address, time.monotonic()):
            metrics.refused("login")
            yield False
            return
        others = self._in_flight[key]
        self._in_flight[key] += 1
        try:
            slowed = throttle.delay_for(address, account, time.monotonic()) > 0
            if not slowed and others < throttle.settings["slow_after"]:
                yield True
                return
            turn = self._turns.setdefault(key, trio.Lock())
            async with turn:
                yield await self._wait(address, account)
        finally:
            self._in_flight[key] -= 1
            if not self._in_flight[key]:
                del self._in_flight[key]
                self._turns.pop(key, None)

    async def _wait(self, address: str, account: str | None) -> bool:
        throttle = self.throttle
        if throttle.banned(address, time.monotonic()):
            metrics.refused("login")
            return False  # the ban began while this attempt queued
        delay = throttle.delay_for(address, account, time.monotonic())
        if delay:
            log.info("login attempt from %s waits %.1f s", address, delay)
            await trio.sleep(delay)
        return not throttle.banned(address, time.monotonic())

    @property
    def in_flight(self) -> int:
        return sum(self._in_flight.values())
