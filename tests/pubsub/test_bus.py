import logging

import pytest
import trio

from pubsub.adapters.local import LocalAdapter
from pubsub.bus import PubSub


class Recorder:
    def __init__(self, name: str = "r") -> None:
        self.name = name
        self.got: list[tuple[str, object]] = []

    def deliver(self, topic: str, message: object) -> None:
        self.got.append((topic, message))

    def __repr__(self) -> str:
        return f"Recorder({self.name})"


class Raiser:
    def deliver(self, topic: str, message: object) -> None:
        raise RuntimeError("subscriber bug")


def test_default_adapter_is_local():
    bus = PubSub()
    assert bus.node == "local"
    assert isinstance(bus.adapter, LocalAdapter)
    assert bus.adapter.node == "local"


def test_broadcast_reaches_subscribers_of_that_topic_only():
    bus = PubSub("n1")
    a, b, c = Recorder("a"), Recorder("b"), Recorder("c")
    bus.subscribe("room:x", a)
    bus.subscribe("room:x", b)
    bus.subscribe("room:y", c)
    assert bus.broadcast("room:x", "hi") == 2
    assert a.got == [("room:x", "hi")]
    assert b.got == [("room:x", "hi")]
    assert c.got == []
    assert bus.broadcast("room:nobody", "hi") == 0


def test_subscribe_is_idempotent_and_counted():
    bus = PubSub()
    a = Recorder()
    bus.subscribe("t", a)
    bus.subscribe("t", a)
    assert bus.subscriber_count("t") == 1
    assert bus.broadcast("t", 1) == 1
    assert a.got == [("t", 1)]
    assert bus.subscriber_count("other") == 0


def test_unsubscribe_and_unsubscribe_all():
    bus = PubSub()
    a, b = Recorder("a"), Recorder("b")
    for topic in ("user:u@h", "session:u@h/r", "room:r@muc"):
        bus.subscribe(topic, a)
    bus.subscribe("room:r@muc", b)
    bus.unsubscribe("session:u@h/r", a)
    bus.unsubscribe("session:u@h/r", a)  # twice is harmless
    assert bus.topics_of(a) == ("user:u@h", "room:r@muc")
    assert bus.local_broadcast("session:u@h/r", "x") == 0
    bus.unsubscribe_all(a)
    assert bus.topics_of(a) == ()
    assert bus.subscriber_count("user:u@h") == 0
    assert bus.broadcast("room:r@muc", "m") == 1
    assert a.got == []
    assert b.got == [("room:r@muc", "m")]
    bus.unsubscribe_all(a)  # unknown subscriber: no error


def test_broadcast_from_excludes_sender():
    bus = PubSub()
    a, b, c = Recorder("a"), Recorder("b"), Recorder("c")
    for r in (a, b, c):
        bus.subscribe("room:x", r)
    assert bus.broadcast_from(b, "room:x", "m") == 2
    assert a.got == [("room:x", "m")] and c.got == [("room:x", "m")]
    assert b.got == []
    # A sender that is not subscribed excludes nobody.
    stranger = Recorder("s")
    assert bus.local_broadcast_from(stranger, "room:x", "n") == 3
    assert bus.local_broadcast_from(a, "room:none", "n") == 0


class Unsubscriber:
    """Unsubscribes a victim (or itself) while a broadcast is running."""

    def __init__(self, bus: PubSub, victim: object) -> None:
        self.bus = bus
        self.victim = victim
        self.got: list[object] = []

    def deliver(self, topic: str, message: object) -> None:
        self.got.append(message)
        self.bus.unsubscribe(topic, self.victim)
        self.bus.subscribe(topic, Recorder("late"))


def test_unsubscribe_and_subscribe_during_broadcast():
    bus = PubSub()
    first = Recorder("first")
    bus.subscribe("t", first)
    killer = Unsubscriber(bus, first)
    bus.subscribe("t", killer)
    after = Recorder("after")
    bus.subscribe("t", after)
    # The running broadcast delivers to the subscribers present when it started.
    assert bus.broadcast("t", 1) == 3
    assert after.got == [("t", 1)]
    assert bus.subscriber_count("t") == 3  # killer, after, late (first is gone)
    bus.broadcast("t", 2)
    assert first.got == [("t", 1)]
    assert after.got == [("t", 1), ("t", 2)]


def test_self_unsubscribe_during_broadcast():
    bus = PubSub()
    me = Unsubscriber(bus, None)
    me.victim = me
    other = Recorder()
    bus.subscribe("t", me)
    bus.subscribe("t", other)
    bus.broadcast("t", "x")
    bus.broadcast("t", "y")
    assert me.got == ["x"]
    assert other.got == [("t", "x"), ("t", "y")]


def test_raising_subscriber_does_not_stop_others(caplog):
    bus = PubSub()
    a, b = Recorder("a"), Recorder("b")
    bus.subscribe("t", a)
    bus.subscribe("t", Raiser())
    bus.subscribe("t", b)
    with caplog.at_level(logging.ERROR, logger="pubsub.bus"):
        assert bus.broadcast("t", "m") == 2
        assert bus.broadcast_from(a, "t", "n") == 1
    assert a.got == [("t", "m")]
    assert b.got == [("t", "m"), ("t", "n")]
    assert "subscriber bug" in caplog.text
    assert len([r for r in caplog.records if "raised while delivering" in r.message]) == 2


def test_direct_broadcast_to_this_node_and_other_node():
    bus = PubSub("n1")
    a = Recorder()
    bus.subscribe("t", a)
    assert bus.direct_broadcast("n1", "t", "here") == 1
    assert bus.direct_broadcast("n2", "t", "there") == 0
    assert a.got == [("t", "here")]


def test_cluster_fanout(cluster):
    bus1 = PubSub("n1", cluster.adapter())
    bus2 = PubSub("n2", cluster.adapter())
    bus3 = PubSub("n3", cluster.adapter())
    subs = {}
    for bus in (bus1, bus2, bus3):
        subs[bus.node] = Recorder(bus.node)
        bus.subscribe("room:x", subs[bus.node])
    assert bus1.broadcast("room:x", "all") == 1
    cluster.flush()
    assert all(r.got == [("room:x", "all")] for r in subs.values())
    # broadcast_from: the sender is local, remote nodes get it.
    assert bus1.broadcast_from(subs["n1"], "room:x", "from") == 0
    assert bus2.direct_broadcast("n3", "room:x", "direct") == 0
    assert bus2.local_broadcast("room:x", "local") == 1
    cluster.flush()
    assert subs["n1"].got == [("room:x", "all")]
    assert subs["n2"].got == [("room:x", "all"), ("room:x", "local"), ("room:x", "from")]
    assert subs["n3"].got == [("room:x", "all"), ("room:x", "from"), ("room:x", "direct")]


def test_adapter_can_only_attach_once():
    adapter = LocalAdapter()
    PubSub("a", adapter)
    with pytest.raises(RuntimeError):
        PubSub("b", adapter)


async def test_run_starts_local_adapter():
    bus = PubSub()
    async with trio.open_nursery() as nursery:
        await nursery.start(bus.run)
        nursery.cancel_scope.cancel()
