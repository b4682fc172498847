"""The presence Tracker's sync cost and state size: 100,000 sessions over 4 nodes, in process.

Four Trackers on an in-memory adapter that encodes every message with the cluster codec
(the bytes Redis would carry). Each node tracks its share of sessions; then one gossip
round replicates them, and a fifth node joins late and pulls the full state. Prints JSON:
time and bytes per phase, and the memory of one node's state.

    PYTHONPATH=$PWD python3 bench/tracker_bench.py --sessions 100000 --nodes 4
"""

from __future__ import annotations

import argparse
import json
import time
import tracemalloc
from collections import deque

from pubsub.adapters.base import Adapter
from pubsub.bus import PubSub
from pubsub.codec import Codec
from pubsub.presence import Tracker


class Wire:
    def __init__(self) -> None:
        self.codec = Codec()
        self.buses: dict[str, PubSub] = {}
        self.queue: deque[tuple[str, str, bytes]] = deque()
        self.bytes = 0
        self.messages = 0

    def send(self, dst: str, topic: str, message: object) -> None:
        data = self.codec.encode(message)  # once per message, as the Redis adapter does
        self.bytes += len(data)
        self.messages += 1
        self.queue.append((dst, topic, data))

    def flush(self) -> None:
        while self.queue:
            dst, topic, data = self.queue.popleft()
            self.buses[dst].local_broadcast(topic, self.codec.decode(data))


class WireAdapter(Adapter):
    def __init__(self, wire: Wire) -> None:
        super().__init__()
        self.wire = wire

    def attach(self, bus) -> None:  # type: ignore[no-untyped-def]
        super().attach(bus)
        self.wire.buses[bus.node] = bus

    def broadcast(self, topic: str, message: object) -> None:
        # Redis fans one PUBLISH out; count the bytes once, deliver to each other node.
        data = self.wire.codec.encode(message)
        self.wire.bytes += len(data)
        self.wire.messages += 1
        for node in self.wire.buses:
            if node != self.node:
                self.wire.queue.append((node, topic, data))

    def direct_broadcast(self, node: str, topic: str, message: object) -> None:
        self.wire.send(node, topic, message)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--nodes", type=int, default=4)
    args = parser.parse_args()
    wire = Wire()
    clock = [0.0]
    trackers = [
        Tracker(PubSub(f"n{i}", WireAdapter(wire)), clock=lambda: clock[0])
        for i in range(args.nodes)
    ]
    topic = "presence:example.org"
    start = time.perf_counter()
    for i in range(args.sessions):
        t = trackers[i % args.nodes]
        t.track(("s", i), topic, f"user{i}@example.org", {"resource": "r", "priority": 0})
    track_s = time.perf_counter() - start
    for t in trackers:
        t.announce()
    wire.flush()
    wire.bytes = wire.messages = 0
    start = time.perf_counter()
    clock[0] += 1.5
    for t in trackers:
        t.tick()
    wire.flush()
    round_s = time.perf_counter() - start
    round_bytes, round_msgs = wire.bytes, wire.messages
    assert all(len(t.list(topic)) == args.sessions for t in trackers)
    # A node joining late pulls everything (state transfer).
    wire.bytes = 0
    start = time.perf_counter()
    late = Tracker(PubSub("late", WireAdapter(wire)), clock=lambda: clock[0])
    late.announce()
    wire.flush()
    join_s = time.perf_counter() - start
    join_bytes = wire.bytes
    assert len(late.list(topic)) == args.sessions
    # Memory of one node's full view: a second late node, measured while it joins.
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    probe = Tracker(PubSub("probe", WireAdapter(wire)), clock=lambda: clock[0])
    probe.announce()
    wire.flush()
    state_bytes = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    # Steady state: 1% of the sessions change in one period.
    wire.bytes = 0
    changes = args.sessions // 100
    for i in range(changes):
        t = trackers[i % args.nodes]
        t.update(("s", i), topic, f"user{i}@example.org", {"resource": "r", "priority": 1})
    start = time.perf_counter()
    clock[0] += 1.5
    for t in (*trackers, late, probe):
        t.tick()
    wire.flush()
    churn_s = time.perf_counter() - start
    print(
        json.dumps(
            {
                "sessions": args.sessions,
                "nodes": args.nodes,
                "track_us_per_session": round(track_s / args.sessions * 1e6, 2),
                "first_round_s": round(round_s, 3),
                "first_round_bytes": round_bytes,
                "first_round_messages": round_msgs,
                "late_join_s": round(join_s, 3),
                "late_join_bytes": join_bytes,
                "one_node_state_mib": round(state_bytes / 2**20, 1),
                "churn_1pct_s": round(churn_s, 3),
                "churn_1pct_bytes": wire.bytes,
            }
        )
    )


if __name__ == "__main__":
    main()
