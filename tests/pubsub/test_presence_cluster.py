"""Tracker gossip between nodes over the in-memory cluster adapter (see conftest.py)."""

import pytest
import trio

from pubsub.bus import PubSub
from pubsub.presence import PresenceDiff, Tracker


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Node:
    def __init__(self, cluster, name: str, clock: Clock) -> None:
        self.bus = PubSub(name, cluster.adapter())
        self.tracker = Tracker(
            self.bus,
            clock=clock,
            broadcast_period=1.0,
            max_silent_periods=3,
            down_period=10.0,
            permdown_period=100.0,
        )
        self.diffs: list[PresenceDiff] = []
        self.tracker.listen(self.diffs.append)

    def view(self, topic: str = "t") -> dict[str, list[str]]:
        return {k: sorted(m["res"] for m in ms) for k, ms in self.tracker.list(topic).items()}

    def seen(self) -> list[tuple[str, str, str]]:
        """Flattened diffs: (+/-, key, res)."""
        out = []
        for d in self.diffs:
            out += [("+", k, m["res"]) for k, ms in d.joins.items() for m in ms]
            out += [("-", k, m["res"]) for k, ms in d.leaves.items() for m in ms]
        return out


@pytest.fixture
def clock() -> Clock:
    return Clock()


def tick(clock: Clock, cluster, *nodes: Node, seconds: float = 1.0) -> None:
    clock.now += seconds
    for n in nodes:
        n.tracker.tick()
    cluster.flush()


def test_track_replicates_to_other_nodes(cluster, clock):
    a, b, c = (Node(cluster, n, clock) for n in "abc")
    a.tracker.track("sess-a", "t", "alice", {"res": "phone"})
    b.tracker.track("sess-b", "t", "alice", {"res": "laptop"})
    tick(clock, cluster, a, b, c)
    for n in (a, b, c):
        assert n.view() == {"alice": ["laptop", "phone"]}
    assert c.seen() == [("+", "alice", "phone"), ("+", "alice", "laptop")] or c.seen() == [
        ("+", "alice", "laptop"),
        ("+", "alice", "phone"),
    ]
    # Remote diffs reach local subscribers of the topic too.
    got = []

    class Sub:
        def deliver(self, topic, message):
            got.append(message)

    c.bus.subscribe("t", Sub())
    a.tracker.untrack("sess-a", "t", "alice")
    tick(clock, cluster, a, b, c)
    assert c.view() == b.view() == a.view() == {"alice": ["laptop"]}
    assert len(got) == 1 and list(got[0].leaves) == ["alice"]


def test_update_replicates_as_one_diff(cluster, clock):
    a, b = Node(cluster, "a", clock), Node(cluster, "b", clock)
    a.tracker.track("s", "t", "alice", {"res": "r", "show": "away"})
    tick(clock, cluster, a, b)
    a.tracker.update("s", "t", "alice", {"res": "r", "show": "chat"})
    tick(clock, cluster, a, b)
    last = b.diffs[-1]
    assert [m["show"] for m in last.joins["alice"]] == ["chat"]
    assert [m["show"] for m in last.leaves["alice"]] == ["away"]
    assert last.joins["alice"][0]["phx_ref_prev"] == last.leaves["alice"][0]["phx_ref"]


def test_late_node_gets_full_state(cluster, clock):
    a = Node(cluster, "a", clock)
    for i in range(5):
        a.tracker.track(f"s{i}", "t", f"user{i}", {"res": "r"})
    a.tracker.untrack("s0", "t", "user0")
    tick(clock, cluster, a)  # nobody to hear it
    b = Node(cluster, "b", clock)
    b.tracker.announce()
    cluster.flush()
    assert b.view() == a.view() == {f"user{i}": ["r"] for i in range(1, 5)}
    assert len(b.seen()) == 4


def test_lost_delta_is_repaired_by_transfer(cluster, clock):
    a, b = Node(cluster, "a", clock), Node(cluster, "b", clock)
    tick(clock, cluster, a, b)
    a.tracker.announce()
    cluster.flush()
    cluster.cut.add("b")
    a.tracker.track("s1", "t", "alice", {"res": "1"})
    tick(clock, cluster, a, b)  # delta lost
    cluster.cut.clear()
    a.tracker.track("s2", "t", "bob", {"res": "2"})
    tick(clock, cluster, a, b)
    assert b.view() == {"alice": ["1"], "bob": ["2"]}


def test_silent_node_goes_down_then_rejoins(cluster, clock):
    a, b = Node(cluster, "a", clock), Node(cluster, "b", clock)
    a.tracker.track("s1", "t", "alice", {"res": "1"})
    b.tracker.track("s2", "t", "bob", {"res": "2"})
    tick(clock, cluster, a, b)
    assert b.view() == {"alice": ["1"], "bob": ["2"]}
    cluster.cut.add("a")
    for _ in range(11):
        tick(clock, cluster, a, b)
    assert b.view() == {"bob": ["2"]}
    assert b.seen()[-1] == ("-", "alice", "1")
    assert b.tracker.peers() == {a.tracker.replica_id: "down"}
    cluster.cut.clear()
    for _ in range(4):  # a heartbeats within max_silent_periods
        tick(clock, cluster, a, b)
    assert b.view() == {"alice": ["1"], "bob": ["2"]}
    assert b.seen()[-1] == ("+", "alice", "1")
    assert b.tracker.peers() == {a.tracker.replica_id: "up"}


def test_permdown_purges_without_a_second_leave(cluster, clock):
    a, b = Node(cluster, "a", clock), Node(cluster, "b", clock)
    a.tracker.track("s1", "t", "alice", {"res": "1"})
    tick(clock, cluster, a, b)
    cluster.cut.add("a")
    tick(clock, cluster, b, seconds=11)
    tick(clock, cluster, b, seconds=100)
    assert b.tracker.peers() == {}
    assert len(b.tracker.state) == 0
    assert b.seen() == [("+", "alice", "1"), ("-", "alice", "1")]


def test_restarted_node_replaces_its_old_incarnation(cluster, clock):
    a, b = Node(cluster, "a", clock), Node(cluster, "b", clock)
    a.tracker.track("s1", "t", "alice", {"res": "old"})
    tick(clock, cluster, a, b)
    a2 = Node(cluster, "a", clock)  # same node name, new process
    a2.tracker.track("s1", "t", "alice", {"res": "new"})
    a2.tracker.announce()
    cluster.flush()
    tick(clock, cluster, a2, b)
    assert b.view() == {"alice": ["new"]}
    assert ("-", "alice", "old") in b.seen()
    assert list(b.tracker.peers()) == [a2.tracker.replica_id]


def test_graceful_permdown(cluster, clock):
    a, b = Node(cluster, "a", clock), Node(cluster, "b", clock)
    a.tracker.track("s1", "t", "alice", {"res": "1"})
    tick(clock, cluster, a, b)
    a.tracker.graceful_permdown()
    cluster.flush()
    assert b.view() == {}
    assert b.tracker.peers() == {}


async def test_run_loops_gossip_over_time(cluster, autojump_clock):
    a = Tracker(PubSub("a", cluster.adapter()), broadcast_period=0.5)
    b = Tracker(PubSub("b", cluster.adapter()), broadcast_period=0.5)

    async def pump():
        while True:
            cluster.flush()
            await trio.sleep(0.1)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(pump)
        await nursery.start(a.run)
        await nursery.start(b.run)
        a.track("s", "t", "alice", {"res": "r"})
        await trio.sleep(1.5)
        assert [m["res"] for m in b.get_by_key("t", "alice")] == ["r"]
        b.track("s", "t", "bob", {"res": "r"})
        await trio.sleep(1.5)
        assert sorted(a.list("t")) == ["alice", "bob"]
        nursery.cancel_scope.cancel()


def test_one_tracker_per_name_per_bus(cluster):
    bus = PubSub("a", cluster.adapter())
    Tracker(bus)
    with pytest.raises(ValueError):
        Tracker(bus)
    Tracker(bus, name="rooms")  # another name is fine


def test_peer_listener_tells_failures_from_ordinary_leaves(cluster, clock):
    a, b = Node(cluster, "a", clock), Node(cluster, "b", clock)
    events: list[tuple[str, str, list[str]]] = []
    b.tracker.listen_peers(
        lambda node, state, es: events.append((node, state, [e.key for e in es]))
    )
    a.tracker.track("s1", "t", "alice", {"res": "1"})
    a.tracker.track("s2", "t", "bob", {"res": "2"})
    tick(clock, cluster, a, b)
    assert events == [("a", "up", [])]
    a.tracker.untrack("s2", "t", "bob")  # an ordinary leave: no peer event
    tick(clock, cluster, a, b)
    assert events == [("a", "up", [])]
    cluster.cut.add("a")
    for _ in range(11):
        tick(clock, cluster, a, b)
    assert events[-1] == ("a", "down", ["alice"])
    cluster.cut.clear()
    for _ in range(4):
        tick(clock, cluster, a, b)
    assert events[-1] == ("a", "up", ["alice"])
    a.tracker.graceful_permdown()
    cluster.flush()
    assert events[-1] == ("a", "bye", ["alice"])
