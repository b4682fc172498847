"""The durable outbox: one row per (event, subscription) written before the event counts as
handled, a worker that delivers them at least once, and dead letters after N failures.

Each row's key is `<event id>:<subscription id>`: the idempotency key the providers send, so a
receiver that sees a delivery twice (a crash between its answer and our delete) can tell.
Retries back off exponentially with jitter; each target has a concurrency cap and every
attempt a timeout. The worker runs in its own tasks: chat delivery never waits for it.
"""

from __future__ import annotations

import logging
import math
import random
import time
from typing import TYPE_CHECKING, Any

import trio

from .model import Event, Subscription
from .providers import DeliveryFailed, deliver

if TYPE_CHECKING:
    import httpx

    from ..storage.base import MapStore, Write

log = logging.getLogger("xmppd.hooks.outbox")
PENDING, DEAD = "pending", "dead"  # the map-store `user` of each state


def backoff(attempts: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential, capped, with jitter in [delay/2, delay] so that retries spread out."""
    delay = min(cap, base * 2 ** max(0, attempts - 1))
    return delay * rng.uniform(0.5, 1.0)


class Outbox:
    def __init__(self, server: Any, store: MapStore, settings: dict[str, Any]) -> None:
        self.server = server
        self.store = store
        self.settings = settings
        self.pending: dict[str, dict[str, Any]] = {}
        self.dead: dict[str, dict[str, Any]] = {}
        self.subs: dict[str, Subscription] = {}  # shared with the service's matcher
        self.in_flight: set[str] = set()
        self.limiters: dict[str, trio.CapacityLimiter] = {}
        self.waiting: dict[int, int] = {}  # tasks started but not yet through their limiter
        self.promised: dict[str, trio.CapacityLimiter] = {}  # row key -> its reserved limiter
        self.delivered = 0
        self._wake = trio.Event()
        self._rng = random.Random()

    async def load(self) -> None:
        self.pending = await self.store.get_all(PENDING)
        self.dead = await self.store.get_all(DEAD)

    async def put(self, sub: Subscription, event: Event) -> str:
        """Write the row durably, then let the worker know."""
        row = self.row(sub, event)
        await self.store.set(PENDING, row["key"], row)
        self.adopt([row])
        return row["key"]

    def row(self, sub: Subscription, event: Event) -> dict[str, Any]:
        key = f"{event.id}:{sub.id}"
        return {
            "key": key, "subscription": sub.id, "event": event.public(), "attempts": 0,
            "next_at": time.time(), "last_error": None, "created": time.time(),
        }  # fmt: skip

    def write(self, row: dict[str, Any]) -> Write:
        """The row's write, for another store's transaction (the room archive's)."""
        return self.store.set_later(PENDING, row["key"], row)

    def adopt(self, rows: list[dict[str, Any]]) -> None:
        """Rows now durable: the worker sends them."""
        for row in rows:
            self.pending[row["key"]] = row
        self._wake.set()

    async def retry_dead(self, key: str) -> dict[str, Any] | None:
        row = self.dead.get(key)
        if row is None:
            return None
        row = {**row, "attempts": 0, "next_at": time.time()}
        await self.store.set(PENDING, key, row)
        await self.store.set(DEAD, key, None)
        self.dead.pop(key, None)
        self.pending[key] = row
        self._wake.set()
        return row

    async def drop_dead(self, key: str) -> bool:
        if self.dead.pop(key, None) is None:
            return False
        await self.store.set(DEAD, key, None)
        return True

    async def run(self, client: httpx.AsyncClient) -> None:
        async with trio.open_nursery() as nursery:
            while True:
                now = time.time()
                soonest = math.inf
                for key, row in list(self.pending.items()):
                    if key in self.in_flight:
                        continue
                    if row["next_at"] > now:
                        soonest = min(soonest, row["next_at"])
                    elif self._reserve(key, row):  # else: when a slot of its target frees, we wake
                        self.in_flight.add(key)
                        nursery.start_soon(self._attempt, client, key, row)
                self._wake = trio.Event()
                with trio.move_on_after(min(1.0, max(0.01, soonest - now))):
                    await self._wake.wait()

    async def _attempt(self, client: httpx.AsyncClient, key: str, row: dict[str, Any]) -> None:
        try:
            sub = self.subs.get(row["subscription"])
            limiter = self.promised.pop(key, None)
            if limiter is not None:
                self.waiting[id(limiter)] -= 1  # the promise of _reserve is taken up now
            if sub is None:  # deleted since: nothing to deliver any more
                await self.store.set(PENDING, key, None)
                self.pending.pop(key, None)
                return
            limiter = limiter or self._limiter(sub)
            await limiter.acquire()
            try:
                error = await self._send(client, sub, row, key)
            finally:
                limiter.release()
            if error is None:
                await self.store.set(PENDING, key, None)
                self.pending.pop(key, None)
                self.delivered += 1
            else:
                await self._failed(key, row, *error)
        except Exception:  # noqa: BLE001 - a storage hiccup: the row stays pending, retried
            log.exception("outbox row %s", key)
            row["next_at"] = time.time() + self.settings["retry_base"]
        finally:
            self.in_flight.discard(key)
            self._wake.set()

    async def _send(
        self, client: httpx.AsyncClient, sub: Subscription, row: dict[str, Any], key: str
    ) -> tuple[str, bool] | None:
        event = Event(**row["event"])
        try:
            with trio.fail_after(self.settings["timeout"]):
                await deliver(client, self.server, sub, event, key)
        except trio.TooSlowError:
            return f"no answer within {self.settings['timeout']:g} s", True
        except DeliveryFailed as exc:
            return str(exc), exc.retry
        except Exception as exc:  # noqa: BLE001 - connection refused, TLS, DNS: all retried
            return f"{type(exc).__name__}: {exc}", True
        return None

    async def _failed(self, key: str, row: dict[str, Any], error: str, retry: bool) -> None:
        attempts = row["attempts"] + 1
        row = {**row, "attempts": attempts, "last_error": error}
        if not retry or attempts >= self.settings["max_attempts"]:
            row["died"] = time.time()
            await self.store.set(DEAD, key, row)
            await self.store.set(PENDING, key, None)
            self.pending.pop(key, None)
            self.dead[key] = row
            log.warning("delivery %s is a dead letter after %d attempts: %s", key, attempts, error)
            return
        s = self.settings
        row["next_at"] = time.time() + backoff(attempts, s["retry_base"], s["retry_max"], self._rng)
        await self.store.set(PENDING, key, row)
        self.pending[key] = row

    def _reserve(self, key: str, row: dict[str, Any]) -> bool:
        """A target at its cap takes no more tasks: rows wait in the outbox, not as parked
        tasks. True (and a slot promised to the task about to start) when there is room."""
        sub = self.subs.get(row["subscription"])
        if sub is None:
            return True  # _attempt drops it
        limiter = self._limiter(sub)
        promised = self.waiting.get(id(limiter), 0)
        if limiter.available_tokens - promised <= 0:
            return False
        self.waiting[id(limiter)] = promised + 1
        self.promised[key] = limiter
        return True

    def _limiter(self, sub: Subscription) -> trio.CapacityLimiter:
        target = str(sub.target.get("url") or sub.target.get("homeserver") or sub.target)
        limiter = self.limiters.get(target)
        if limiter is None:
            limiter = self.limiters[target] = trio.CapacityLimiter(self.settings["per_target"])
        return limiter
