import pytest
import trio
import trio.testing

from pubsub.mailbox import Mailbox


def test_put_and_drain_fifo():
    box = Mailbox()
    for i in range(5):
        assert box.put(i, 10)
    assert box.queued_items == 5
    assert box.queued_bytes == 50
    assert box.drain() == [0, 1, 2, 3, 4]
    assert box.queued_items == 0
    assert box.queued_bytes == 0


def test_overflow_by_count_calls_once_and_refuses_afterwards():
    calls = []
    box = Mailbox(max_items=3, on_overflow=calls.append)
    assert [box.put(i, 1) for i in range(3)] == [True, True, True]
    assert box.put(3, 1) is False
    assert calls == [box]
    assert box.overflowed
    # Refuses everything afterwards, even after room is made, and never calls again.
    assert box.drain() == [0, 1, 2]
    assert box.put(4, 1) is False
    assert box.put(5, 0) is False
    assert calls == [box]


def test_overflow_by_bytes():
    calls = []
    box = Mailbox(max_items=100, max_bytes=100, on_overflow=calls.append)
    assert box.put("a", 60)
    assert box.put("b", 40)  # exactly at the limit is fine
    assert box.put("c", 1) is False
    assert len(calls) == 1
    assert box.put("d", 1) is False
    assert len(calls) == 1
    assert box.drain() == ["a", "b"]


def test_single_item_larger_than_limit_overflows():
    calls = []
    box = Mailbox(max_bytes=10, on_overflow=calls.append)
    assert box.put("big", 11) is False
    assert calls == [box]
    assert box.queued_items == 0


def test_raising_overflow_callback_does_not_escape_put():
    def boom(_box):
        raise RuntimeError("boom")

    box = Mailbox(max_items=1, on_overflow=boom)
    assert box.put(1, 1)
    assert box.put(2, 1) is False
    assert box.overflowed


def test_put_after_close_is_refused_without_overflow():
    calls = []
    box = Mailbox(on_overflow=calls.append)
    box.close()
    assert box.put(1, 1) is False
    assert calls == []
    assert box.closed and not box.overflowed


def test_invalid_limits():
    with pytest.raises(ValueError):
        Mailbox(max_items=0)


async def test_get_batch_returns_everything_queued():
    box = Mailbox()
    box.put("a", 1)
    box.put("b", 1)
    assert await box.get_batch() == ["a", "b"]
    assert box.queued_items == 0 and box.queued_bytes == 0


async def test_get_batch_wakes_on_put():
    box = Mailbox()
    got = []

    async def consumer():
        got.append(await box.get_batch())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consumer)
        await trio.testing.wait_all_tasks_blocked()
        assert got == []
        box.put("x", 1)
        box.put("y", 1)
    assert got == [["x", "y"]]


async def test_get_batch_wakes_on_close_and_ends():
    box = Mailbox()

    async def consumer():
        with pytest.raises(trio.EndOfChannel):
            await box.get_batch()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consumer)
        await trio.testing.wait_all_tasks_blocked()
        box.close()


async def test_closed_mailbox_still_yields_queued_items_then_ends():
    box = Mailbox()
    box.put(1, 1)
    box.close()
    assert await box.get_batch() == [1]
    with pytest.raises(trio.EndOfChannel):
        await box.get_batch()


async def test_cancelled_get_batch_leaves_mailbox_usable():
    box = Mailbox()
    with trio.move_on_after(0.01):
        await box.get_batch()
    box.put("after", 1)
    assert await box.get_batch() == ["after"]


async def test_second_waiter_is_refused():
    box = Mailbox()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(box.get_batch)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await box.get_batch()
        box.put(1, 1)


async def test_get_batch_is_a_checkpoint_when_items_are_ready():
    box = Mailbox()
    box.put(1, 1)
    with trio.CancelScope() as scope:
        scope.cancel()
        with pytest.raises(trio.Cancelled):
            await box.get_batch()
    assert box.queued_items == 1  # nothing lost to the cancellation


async def test_consumer_keeps_up_with_bursts():
    box = Mailbox(max_items=10_000)
    received: list[int] = []

    async def consumer():
        try:
            while True:
                received.extend(await box.get_batch())
        except trio.EndOfChannel:
            pass

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consumer)
        for burst in range(20):
            for i in range(50):
                assert box.put(burst * 50 + i, 10)
            await trio.sleep(0)
        box.close()
    assert received == list(range(1000))
