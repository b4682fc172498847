"""Cluster adapters: cross-node fan-out only (local dispatch stays in `pubsub.bus`)."""

from .base import Adapter, LocalBus
from .local import LocalAdapter

__all__ = ["Adapter", "LocalAdapter", "LocalBus"]
