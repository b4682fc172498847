"""Micro-benchmark of the pubsub hot path (not a test). Run: python bench/pubsub_bench.py

Prints nanoseconds per operation, best of several rounds, on this machine's CPython.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pubsub import Envelope, Mailbox, PubSub, Tracker


class Counter:
    """The cheapest possible subscriber: measures the bus itself."""

    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0

    def deliver(self, topic: str, message: object) -> None:
        self.n += 1


class MailboxSession:
    """What a session does on delivery: queue the item in its bounded mailbox."""

    __slots__ = ("box",)

    def __init__(self) -> None:
        self.box = Mailbox(max_items=1 << 30, max_bytes=1 << 60)

    def deliver(self, topic: str, message: object) -> None:
        box = self.box
        box.put(message, 100)
        if box.queued_items >= 64:  # the writer task keeps up in batches
            box.drain()


class WireSession:
    """Delivery that also asks the envelope for its bytes (encode-once)."""

    __slots__ = ("out",)

    def __init__(self) -> None:
        self.out: bytes = b""

    def deliver(self, topic: str, message: object) -> None:
        self.out = message.encoded("xml", _encode)  # type: ignore[attr-defined]


def _encode(payload: object) -> bytes:
    return str(payload).encode()


def best_ns(fn: Callable[[], None], loops: int, rounds: int = 15) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter_ns()
        fn()
        best = min(best, (time.perf_counter_ns() - start) / loops)
    return best


def bench_broadcast(make: Callable[[], object], n_subs: int, loops: int, kind: str) -> float:
    bus = PubSub()
    subs = [make() for _ in range(n_subs)]
    for s in subs:
        bus.subscribe("room:r", s)  # type: ignore[arg-type]
    msg: object = "hello"
    sender = subs[0]
    topic = "room:r"
    # One loop per kind so the measurement holds no dispatch of its own.
    if kind == "local":
        local_broadcast = bus.local_broadcast

        def run() -> None:
            for _ in range(loops):
                local_broadcast(topic, msg)

    elif kind == "from":
        broadcast_from = bus.broadcast_from

        def run() -> None:
            for _ in range(loops):
                broadcast_from(sender, topic, msg)  # type: ignore[arg-type]

    elif kind == "envelope":
        broadcast = bus.broadcast

        def run() -> None:
            for _ in range(loops):
                broadcast(topic, Envelope("hello"))

    else:
        broadcast = bus.broadcast

        def run() -> None:
            for _ in range(loops):
                broadcast(topic, msg)

    return best_ns(run, loops)


def bench_tracker(loops: int) -> float:
    tracker = Tracker(PubSub())
    owners = [object() for _ in range(loops)]

    def run() -> None:
        for owner in owners:
            tracker.track(owner, "presence:h", "alice@h", {"res": "r"})
        for owner in owners:
            tracker.untrack(owner, "presence:h", "alice@h")

    return best_ns(run, loops * 2)


def main() -> None:
    rows = []
    for n, loops in ((1, 200_000), (100, 5_000)):
        rows.append((f"local_broadcast, {n} counter subscriber(s)", n, loops, Counter, "local"))
        rows.append((f"broadcast, {n} counter subscriber(s)", n, loops, Counter, "broadcast"))
        rows.append((f"broadcast_from, {n} counter subscriber(s)", n, loops, Counter, "from"))
        rows.append((f"broadcast, {n} mailbox session(s)", n, loops, MailboxSession, "broadcast"))
        rows.append((f"broadcast Envelope, {n} wire session(s)", n, loops, WireSession, "envelope"))
    for label, n, loops, make, kind in rows:
        ns = bench_broadcast(make, n, loops, kind)
        print(f"{label:48s} {ns:9.0f} ns/broadcast  {ns / n:7.1f} ns/delivery")
    print(f"{'tracker track/untrack (no listeners)':48s} {bench_tracker(20_000):9.0f} ns/op")


if __name__ == "__main__":
    main()
