"""Single-node adapter: there are no other nodes, so fan-out is a no-op."""

from __future__ import annotations

from .base import Adapter

__all__ = ["LocalAdapter"]


class LocalAdapter(Adapter):
    """The default adapter. `PubSub` never even calls it on broadcast (``fanout`` is False)."""

    fanout = False

    def broadcast(self, topic: str, message: object) -> None:
        return None

    def direct_broadcast(self, node: str, topic: str, message: object) -> None:
        # Another node does not exist here; the message has nowhere to go.
        return None
