"""Bounded per-subscriber queue with an explicit slow-consumer policy.

A session's writer task drains its Mailbox in batches (one socket write per burst).
Producers (`put`) never block and never wait: a full mailbox *overflows* instead.
Overflow is sticky: the owner is told once through ``on_overflow`` (it disconnects the
session) and every later ``put`` returns False, so no producer believes an item was
queued when it was not. Items still queued can be taken back with ``drain`` and
bounced or stored offline by the owner.

Waiting costs no task and no allocation per ``put``: the single consumer parks itself
with ``trio.lowlevel`` and the first ``put`` (or ``close``) reschedules it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

__all__ = ["Mailbox"]

_log = logging.getLogger(__name__)


class Mailbox:
    """FIFO of items with a count limit and a byte limit; one consumer at a time."""

    __slots__ = (
        "_items",
        "_bytes",
        "_max_items",
        "_max_bytes",
        "_on_overflow",
        "_waiter",
        "_closed",
        "_overflowed",
        "_refusing",
    )

    def __init__(
        self,
        max_items: int = 2000,
        max_bytes: int = 4 * 1024 * 1024,
        on_overflow: Callable[[Mailbox], None] | None = None,
    ) -> None:
        if max_items < 1 or max_bytes < 1:
            raise ValueError("max_items and max_bytes must be positive")
        self._items: list[object] = []
        self._bytes = 0
        self._max_items = max_items
        self._max_bytes = max_bytes
        self._on_overflow = on_overflow
        self._waiter: trio.lowlevel.Task | None = None
        self._closed = False
        self._overflowed = False
        self._refusing = False  # closed or overflowed: one check on the hot path

    # -- producer side (sync, never blocks, never raises) -------------------------------

    def put(self, item: object, size: int) -> bool:
        """Queue ``item`` (``size`` bytes); False if closed, overflowed or it would not fit."""
        if self._refusing:
            return False
        items = self._items
        nbytes = self._bytes + size
        if nbytes > self._max_bytes or len(items) >= self._max_items:
            self._overflow()
            return False
        items.append(item)
        self._bytes = nbytes
        if self._waiter is not None:
            self._wake()
        return True

    def _overflow(self) -> None:
        # Set the flag first: the callback may call put/close re-entrantly.
        self._overflowed = self._refusing = True
        callback = self._on_overflow
        self._on_overflow = None  # exactly once, and drop the reference
        if callback is not None:
            try:
                callback(self)
            except Exception:  # put() must not raise into a broadcast loop
                _log.exception("mailbox on_overflow callback failed")

    def _wake(self) -> None:
        task = self._waiter
        self._waiter = None
        trio.lowlevel.reschedule(task)

    # -- consumer side --------------------------------------------------------------------

    async def get_batch(self) -> list[object]:
        """Wait for at least one item; return every queued item (FIFO) and empty the queue.

        Raises ``trio.EndOfChannel`` once the mailbox is closed and empty.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._items:
            # Be a full checkpoint (fairness); producers may add to this batch meanwhile.
            await trio.lowlevel.cancel_shielded_checkpoint()
        while not self._items:
            if self._closed:
                raise trio.EndOfChannel
            await self._park()
        return self._take()

    async def _park(self) -> None:
        if self._waiter is not None:
            raise trio.BusyResourceError("another task is already waiting on this mailbox")
        self._waiter = trio.lowlevel.current_task()

        def abort(_: object) -> trio.lowlevel.Abort:
            self._waiter = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def _take(self) -> list[object]:
        items = self._items
        self._items = []
        self._bytes = 0
        return items

    def drain(self) -> list[object]:
        """Remove and return the queued items (the owner bounces or stores them)."""
        return self._take()

    def close(self) -> None:
        """Refuse further puts; a waiting ``get_batch`` wakes (and ends once empty)."""
        self._closed = self._refusing = True
        if self._waiter is not None:
            self._wake()

    # -- introspection --------------------------------------------------------------------

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    @property
    def queued_items(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def overflowed(self) -> bool:
        return self._overflowed

    @property
    def max_items(self) -> int:
        return self._max_items

    @property
    def max_bytes(self) -> int:
        return self._max_bytes

    def __repr__(self) -> str:
        state = "closed" if self._closed else "overflowed" if self._overflowed else "open"
        return f"<Mailbox {state} {len(self._items)} items {self._bytes} bytes>"
