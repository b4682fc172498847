import pytest
import trio

from pubsub.adapters.base import Adapter
from pubsub.adapters.local import LocalAdapter
from pubsub.bus import PubSub


class Sub:
    def __init__(self) -> None:
        self.got: list[object] = []

    def deliver(self, topic: str, message: object) -> None:
        self.got.append(message)


def test_local_adapter_is_a_noop_fanout():
    adapter = LocalAdapter()
    assert isinstance(adapter, Adapter)
    assert adapter.fanout is False
    with pytest.raises(RuntimeError):
        _ = adapter.node  # not attached yet
    bus = PubSub("n1", adapter)
    assert adapter.node == "n1"
    sub = Sub()
    bus.subscribe("t", sub)
    adapter.broadcast("t", "x")  # nowhere to go: nothing delivered locally either
    adapter.direct_broadcast("n2", "t", "x")
    assert sub.got == []
    assert bus.broadcast("t", "y") == 1
    assert sub.got == ["y"]


def test_base_adapter_cannot_be_instantiated_without_fanout_methods():
    with pytest.raises(TypeError):
        Adapter()  # type: ignore[abstract]


async def test_local_adapter_run_reports_started_and_sleeps():
    bus = PubSub()
    with trio.move_on_after(0.05) as scope:
        async with trio.open_nursery() as nursery:
            await nursery.start(bus.adapter.run)
    assert scope.cancelled_caught
