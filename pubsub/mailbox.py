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
        "_room",
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
        self._room: trio.Event | None = None  # set when a loaded mailbox is emptied or closed

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
        self._make_room()
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
        self._make_room()
        return items

    def _make_room(self) -> None:
        room = self._room
        if room is not None:
            self._room = None
            room.set()

    # -- flow control ---------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        """More than half full (items or bytes): time for producers that can wait to wait."""
        return self._bytes * 2 > self._max_bytes or len(self._items) * 2 > self._max_items

    async def wait_for_room(self) -> None:
        """Return once the mailbox is not `loaded` (the consumer took a batch) or is closed.

        For producers that can slow down instead of overflowing it: the session's own reader
        (what a client sends causes answers and bounces for it), or bounces routed again.
        """
        while self.loaded and not self._refusing:
            if self._room is None:
                self._room = trio.Event()
            await self._room.wait()

    def peek_last(self) -> object:
        """The item queued last (the queue must not be empty)."""
        return self._items[-1]

    def putback(self, items: list[object], size: int) -> None:
        """Return items the consumer took but could not hand on, at the front and in order,
        so that the owner can `drain` them (even once closed or overflowed: they were
        accepted before)."""
        self._items[:0] = items
        self._bytes += size

    def drain(self) -> list[object]:
        """Remove and return the queued items (the owner bounces or stores them)."""
        return self._take()

    def close(self) -> None:
        """Refuse further puts; a waiting ``get_batch`` wakes (and ends once empty)."""
        self._closed = self._refusing = True
        self._make_room()
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
