"""In-process publish/subscribe with a pluggable cluster adapter.

Hot path: ``broadcast`` is one dict lookup that yields a cached tuple of bound
``deliver`` methods, then a direct call per subscriber. No task switch, no per-message
allocation. The tuple is rebuilt lazily after a subscribe/unsubscribe on that topic, so
changing subscriptions during a broadcast is safe: a broadcast delivers to the
subscribers present when it started.

Subscriptions are idempotent: a subscriber subscribed twice to one topic gets one copy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

import trio

from .adapters.base import Adapter
from .adapters.local import LocalAdapter

__all__ = ["PubSub", "Subscriber"]

_log = logging.getLogger(__name__)

Deliver = Callable[[str, object], None]


class Subscriber(Protocol):
    """Anything hashable with a ``deliver`` method. ``deliver`` must not block or raise."""

    def deliver(self, topic: str, message: object) -> None: ...


class PubSub:
    """Topic -> subscribers registry with local dispatch and adapter fan-out."""

    def __init__(self, node: str = "local", adapter: Adapter | None = None) -> None:
        self.node = node
        # topic -> {subscriber: its bound deliver}; the bound method is fetched once so
        # the cached tuple holds the very same objects (``is`` works in broadcast_from).
        self._subs: dict[str, dict[Subscriber, Deliver]] = {}
        # topic -> tuple of delivers; dropped on change, rebuilt on next broadcast.
        self._cache: dict[str, tuple[Deliver, ...]] = {}
        # subscriber -> its topics, for unsubscribe_all (a session has a handful).
        self._topics_of: dict[Subscriber, list[str]] = {}
        self.adapter: Adapter = adapter if adapter is not None else LocalAdapter()
        self.adapter.attach(self)
        self._fanout = self.adapter.fanout

    # -- subscriptions ----------------------------------------------------------------------

    def subscribe(self, topic: str, subscriber: Subscriber) -> None:
        subs = self._subs.get(topic)
        if subs is None:
            subs = self._subs[topic] = {}
        elif subscriber in subs:
            return
        subs[subscriber] = subscriber.deliver
        self._cache.pop(topic, None)
        topics = self._topics_of.get(subscriber)
        if topics is None:
            self._topics_of[subscriber] = [topic]
        else:
            topics.append(topic)

    def unsubscribe(self, topic: str, subscriber: Subscriber) -> None:
        if not self._drop(topic, subscriber):
            return
        topics = self._topics_of[subscriber]
        topics.remove(topic)
        if not topics:
            del self._topics_of[subscriber]

    def unsubscribe_all(self, subscriber: Subscriber) -> None:
        for topic in self._topics_of.pop(subscriber, ()):
            self._drop(topic, subscriber)

    def _drop(self, topic: str, subscriber: Subscriber) -> bool:
        subs = self._subs.get(topic)
        if subs is None or subs.pop(subscriber, None) is None:
            return False
        if not subs:
            del self._subs[topic]
        self._cache.pop(topic, None)
        return True

    def subscriber_count(self, topic: str) -> int:
        subs = self._subs.get(topic)
        return 0 if subs is None else len(subs)

    def topics_of(self, subscriber: Subscriber) -> tuple[str, ...]:
        return tuple(self._topics_of.get(subscriber, ()))

    def _delivers(self, topic: str) -> tuple[Deliver, ...]:
        delivers = self._cache.get(topic)
        if delivers is None:
            subs = self._subs.get(topic)
            if subs is None:
                return ()
            delivers = self._cache[topic] = tuple(subs.values())
        return delivers

    # -- publishing --------------------------------------------------------------------------

    def broadcast(self, topic: str, message: object) -> int:
        """Deliver to local subscribers and to every other node; returns local deliveries."""
        if self._fanout:
            self.adapter.broadcast(topic, message)
        # local_broadcast inlined: this is the per-message hot path.
        delivers = self._cache.get(topic)
        if delivers is None:
            delivers = self._delivers(topic)
        count = len(delivers)
        for deliver in delivers:
            try:
                deliver(topic, message)
            except Exception:
                count -= 1
                self._failed(deliver, topic)
        return count

    def broadcast_from(self, sender: Subscriber, topic: str, message: object) -> int:
        """Like `broadcast`, but ``sender`` (a local subscriber) does not get it."""
        if self._fanout:
            self.adapter.broadcast(topic, message)
        return self.local_broadcast_from(sender, topic, message)

    def local_broadcast(self, topic: str, message: object) -> int:
        """Deliver to subscribers on this node only; returns successful deliveries."""
        delivers = self._cache.get(topic)
        if delivers is None:
            delivers = self._delivers(topic)
        count = len(delivers)
        for deliver in delivers:
            try:
                deliver(topic, message)
            except Exception:
                count -= 1
                self._failed(deliver, topic)
        return count

    def local_broadcast_from(self, sender: Subscriber, topic: str, message: object) -> int:
        subs = self._subs.get(topic)
        if subs is None:
            return 0
        skip = subs.get(sender)
        count = 0
        for deliver in self._delivers(topic):
            if deliver is skip:
                continue
            try:
                deliver(topic, message)
                count += 1
            except Exception:
                self._failed(deliver, topic)
        return count

    def direct_broadcast(self, node: str, topic: str, message: object) -> int:
        """Deliver on ``node`` only; returns local deliveries (0 for another node)."""
        if node == self.node:
            return self.local_broadcast(topic, message)
        self.adapter.direct_broadcast(node, topic, message)
        return 0

    @staticmethod
    def _failed(deliver: Deliver, topic: str) -> None:
        who = getattr(deliver, "__self__", deliver)
        _log.exception("subscriber %r raised while delivering on %r", who, topic)

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the adapter's receive loop (the local adapter just sleeps). Start in a nursery."""
        await self.adapter.run(task_status=task_status)

    def __repr__(self) -> str:
        return f"<PubSub node={self.node!r} topics={len(self._subs)}>"
