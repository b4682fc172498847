"""The cluster-adapter seam: cross-node fan-out only.

Local dispatch never goes through an adapter: `PubSub` delivers to subscribers on this
node itself (a dict lookup and direct calls). An adapter only carries messages to the
*other* nodes, and hands what it receives from them to ``bus.local_broadcast``. This is
the same split as Phoenix's ``Phoenix.PubSub.Adapter`` (node name, broadcast,
direct_broadcast), adapted to trio:

* ``broadcast`` / ``direct_broadcast`` are synchronous and must not block: they run on
  the hot path inside ``PubSub.broadcast``. A network adapter (Redis) encodes the message,
  appends it to a bounded outbound queue and returns; its ``run`` task does the I/O.
  If that queue is full the adapter drops *cluster* traffic and logs it (the local
  deliveries already happened); it never raises into the caller.
* ``run`` is the adapter's receive loop (and sender loop, for network adapters). It is
  started in the server nursery via ``PubSub.run``; it calls ``task_status.started()``
  once the adapter can receive.
* Messages that cross nodes must be encodable by the adapter's codec. The XMPP core
  sends ``wire.Envelope`` payloads (bytes/str/dicts) and the Tracker sends tuples of
  str/int/dict plus ``state.Delta`` objects; a network adapter must encode those.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Protocol

import trio

__all__ = ["Adapter", "LocalBus"]


class LocalBus(Protocol):
    """What an adapter sees of the bus it serves."""

    node: str

    def local_broadcast(self, topic: str, message: object) -> int: ...


class Adapter(ABC):
    """Cross-node fan-out for one `PubSub`."""

    #: False for adapters with no other nodes: `PubSub.broadcast` then skips the call,
    #: and the Tracker keeps no replication delta.
    fanout: bool = True

    def __init__(self) -> None:
        self._bus: LocalBus | None = None

    def attach(self, bus: LocalBus) -> None:
        """Called once by `PubSub.__init__`; incoming messages go to ``bus.local_broadcast``."""
        if self._bus is not None:
            raise RuntimeError("adapter already attached to a bus")
        self._bus = bus

    @property
    def node(self) -> str:
        """This node's name (the bus's)."""
        if self._bus is None:
            raise RuntimeError("adapter not attached")
        return self._bus.node

    @abstractmethod
    def broadcast(self, topic: str, message: object) -> None:
        """Send ``message`` to ``topic`` on every *other* node (must not block or raise)."""

    @abstractmethod
    def direct_broadcast(self, node: str, topic: str, message: object) -> None:
        """Send ``message`` to ``topic`` on ``node`` only (``node`` is never this node)."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Receive loop; the default has nothing to receive and sleeps forever."""
        task_status.started()
        await trio.sleep_forever()
