"""The Redis adapter against the real Redis at 127.0.0.1:6379.

Each node is its own PubSub + RedisAdapter (its own Redis connections) running in its own
trio task; every test uses a fresh key/channel prefix so parallel runs never meet.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import trio

from pubsub.adapters.redis import RedisAdapter
from pubsub.bus import PubSub
from pubsub.presence import Tracker

coredis = pytest.importorskip("coredis")
URL = "redis://127.0.0.1:6379/0"


class Sub:
    def __init__(self) -> None:
        self.got: list[object] = []
        self.arrived = trio.Event()

    def deliver(self, topic: str, message: object) -> None:
        self.got.append(message)
        self.arrived.set()


@pytest.fixture
def prefix() -> str:
    return f"xmppd-test-{uuid.uuid4().hex}"


Start = Callable[..., "AsyncIterator[PubSub]"]


@asynccontextmanager
async def cluster(prefix: str, names: str, **adapter_args: object) -> AsyncIterator[dict]:
    """Nodes named by the letters of ``names``, each with its own adapter and cancel scope."""
    async with trio.open_nursery() as nursery:
        nodes: dict[str, dict] = {}
        for name in names:
            adapter = RedisAdapter(URL, prefix=prefix, **adapter_args)  # type: ignore[arg-type]
            bus = PubSub(name, adapter)
            scope = trio.CancelScope()

            async def run(bus=bus, scope=scope, task_status=trio.TASK_STATUS_IGNORED) -> None:
                with scope:
                    await bus.run(task_status=task_status)

            await nursery.start(run)
            nodes[name] = {"bus": bus, "adapter": adapter, "scope": scope}
        yield nodes
        nursery.cancel_scope.cancel()


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)


async def test_broadcast_reaches_every_other_node_once(prefix):
    async with cluster(prefix, "abc") as nodes:
        subs = {n: Sub() for n in nodes}
        for n, sub in subs.items():
            nodes[n]["bus"].subscribe("room:x", sub)
        assert nodes["a"]["bus"].broadcast("room:x", {"body": "hi", "n": 1}) == 1  # local
        await wait_for(lambda: subs["b"].got and subs["c"].got)
        await trio.sleep(0.1)  # nothing more comes: no echo back to a, no duplicates
        assert subs["a"].got == subs["b"].got == subs["c"].got == [{"body": "hi", "n": 1}]
        # Encoded once, published once: Redis does the fan-out to both other nodes.
        assert nodes["a"]["adapter"].sent == 1


async def test_direct_broadcast_reaches_only_its_node(prefix):
    async with cluster(prefix, "abc") as nodes:
        subs = {n: Sub() for n in nodes}
        for n, sub in subs.items():
            nodes[n]["bus"].subscribe("session:x", sub)
        assert nodes["a"]["bus"].direct_broadcast("c", "session:x", ("only", "c")) == 0
        await wait_for(lambda: subs["c"].got)
        await trio.sleep(0.1)
        assert subs["c"].got == [("only", "c")]
        assert subs["a"].got == subs["b"].got == []


async def test_prefixes_isolate_clusters(prefix):
    async with cluster(prefix, "a") as one, cluster(prefix + "-other", "b") as two:
        sub = Sub()
        two["b"]["bus"].subscribe("t", sub)
        one["a"]["bus"].broadcast("t", "x")
        await trio.sleep(0.2)
        assert sub.got == []


async def test_unencodable_and_malformed_messages_are_dropped(prefix):
    async with cluster(prefix, "ab") as nodes:
        sub = Sub()
        nodes["b"]["bus"].subscribe("t", sub)
        local = Sub()
        nodes["a"]["bus"].subscribe("t", local)
        # A lambda cannot cross nodes: local delivery still happens, nothing raises.
        assert nodes["a"]["bus"].broadcast("t", lambda: None) == 1
        assert nodes["a"]["adapter"].dropped == 1
        # Someone writes garbage, or a pickle naming os.system, on the cluster channel.
        import os
        import pickle

        async with coredis.Redis.from_url(URL) as raw:
            await raw.publish(f"{prefix}:all", b"not a pickle")
            await raw.publish(f"{prefix}:all", pickle.dumps(("x", "t", os.system)))
        nodes["a"]["bus"].broadcast("t", "after")
        await wait_for(lambda: sub.got)
        assert sub.got == ["after"]


async def test_full_queue_drops_cluster_traffic_without_blocking(prefix):
    async with cluster(prefix, "ab", max_queue=3) as nodes:
        bus = nodes["a"]["bus"]
        for i in range(10):  # no checkpoint in between: the sender cannot drain
            bus.broadcast("t", i)
        # 3 queued + at most 1 handed straight to the waiting sender; the rest dropped.
        assert nodes["a"]["adapter"].dropped in (6, 7)


async def test_nodes_registry_shows_up_and_down(prefix):
    async with cluster(prefix, "ab", heartbeat=0.1, down_period=0.5) as nodes:
        seen = await nodes["a"]["adapter"].nodes()
        assert [(n.name, n.state) for n in seen] == [("a", "up"), ("b", "up")]
        nodes["b"]["scope"].cancel()  # b dies without a goodbye
        await trio.sleep(0.8)
        seen = await nodes["a"]["adapter"].nodes()
        assert [(n.name, n.state) for n in seen] == [("a", "up"), ("b", "down")]


def tracker_of(node: dict, **kw: float) -> Tracker:
    return Tracker(node["bus"], broadcast_period=0.1, max_silent_periods=2, **kw)


async def test_trackers_replicate_and_detect_a_dead_node(prefix):
    async with cluster(prefix, "abc") as nodes, trio.open_nursery() as nursery:
        trackers = {
            n: tracker_of(node, down_period=0.6, permdown_period=5) for n, node in nodes.items()
        }
        scopes = {}
        for n, tracker in trackers.items():
            scopes[n] = trio.CancelScope()

            async def run(tracker=tracker, scope=scopes[n]) -> None:
                with scope:
                    await tracker.run()

            nursery.start_soon(run)
        a, b, c = trackers["a"], trackers["b"], trackers["c"]
        a.track("s1", "presence:x", "alice@x", {"resource": "phone"})
        b.track("s2", "presence:x", "alice@x", {"resource": "laptop"})
        c.track("s3", "presence:x", "bob@x", {"resource": "r"})

        def view(t: Tracker) -> dict:
            return {k: sorted(m["resource"] for m in ms) for k, ms in t.list("presence:x").items()}

        everyone = {"alice@x": ["laptop", "phone"], "bob@x": ["r"]}
        await wait_for(lambda: view(a) == view(b) == view(c) == everyone)
        # c is killed: no goodbye, its Redis traffic stops.
        scopes["c"].cancel()
        nodes["c"]["scope"].cancel()
        gone = {"alice@x": ["laptop", "phone"]}
        with trio.fail_after(3):
            await wait_for(lambda: view(a) == view(b) == gone)
        assert a.peers()[c.replica_id] == "down"
        nursery.cancel_scope.cancel()


async def test_late_tracker_gets_full_state(prefix):
    async with cluster(prefix, "ab") as nodes, trio.open_nursery() as nursery:
        a = tracker_of(nodes["a"])
        for i in range(50):
            a.track(f"s{i}", "t", f"user{i}", {"i": i})
        nursery.start_soon(a.run)
        await trio.sleep(0.3)  # a's deltas went out with nobody listening
        b = tracker_of(nodes["b"])
        nursery.start_soon(b.run)
        await wait_for(lambda: len(b.list("t")) == 50)
        nursery.cancel_scope.cancel()


async def test_flush_delay_gossips_changes_at_once(prefix):
    async with cluster(prefix, "ab") as nodes, trio.open_nursery() as nursery:
        a = Tracker(nodes["a"]["bus"], broadcast_period=5, flush_delay=0.005)
        b = Tracker(nodes["b"]["bus"], broadcast_period=5, flush_delay=0.005)
        nursery.start_soon(a.run)
        nursery.start_soon(b.run)
        await wait_for(lambda: a.peers() and b.peers())
        a.track("s", "t", "alice", {"r": 1})
        await wait_for(lambda: b.get_by_key("t", "alice"), timeout=1)  # not 5 s later
        a.untrack("s", "t", "alice")
        await wait_for(lambda: not b.get_by_key("t", "alice"), timeout=1)
        nursery.cancel_scope.cancel()
