"""An in-memory multi-node cluster: a real `Adapter` whose wire is a pickled queue.

Messages cross "nodes" only when the test calls ``flush()``, so gossip is deterministic,
and pickling proves that everything sent between nodes is plain data.
"""

from __future__ import annotations

import pickle
from collections import deque

import pytest

from pubsub.adapters.base import Adapter, LocalBus


class MemoryCluster:
    def __init__(self) -> None:
        self.buses: dict[str, LocalBus] = {}
        self.queue: deque[tuple[str, str, str, bytes]] = deque()
        self.cut: set[str] = set()  # partitioned nodes: their traffic is lost
        self.sent = 0

    def adapter(self) -> MemoryAdapter:
        return MemoryAdapter(self)

    def send(self, src: str, dst: str, topic: str, message: object) -> None:
        self.sent += 1
        self.queue.append((src, dst, topic, pickle.dumps(message)))

    def flush(self) -> int:
        delivered = 0
        while self.queue:
            src, dst, topic, data = self.queue.popleft()
            if src in self.cut or dst in self.cut or dst not in self.buses:
                continue
            self.buses[dst].local_broadcast(topic, pickle.loads(data))
            delivered += 1
        return delivered


class MemoryAdapter(Adapter):
    fanout = True

    def __init__(self, cluster: MemoryCluster) -> None:
        super().__init__()
        self.cluster = cluster

    def attach(self, bus: LocalBus) -> None:
        super().attach(bus)
        self.cluster.buses[bus.node] = bus

    def broadcast(self, topic: str, message: object) -> None:
        for node in self.cluster.buses:
            if node != self.node:
                self.cluster.send(self.node, node, topic, message)

    def direct_broadcast(self, node: str, topic: str, message: object) -> None:
        self.cluster.send(self.node, node, topic, message)


@pytest.fixture
def cluster() -> MemoryCluster:
    return MemoryCluster()
