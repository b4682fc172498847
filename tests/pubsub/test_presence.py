import logging

import pytest
import trio

from pubsub.bus import PubSub
from pubsub.presence import PresenceDiff, Tracker


class Recorder:
    def __init__(self) -> None:
        self.got: list[object] = []

    def deliver(self, topic: str, message: object) -> None:
        self.got.append(message)


class Session:
    """Stands for an XMPP session (the owner)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Session({self.name})"


def strip(metas: dict[str, list[dict]]) -> dict[str, list[str]]:
    return {k: [m["res"] for m in ms] for k, ms in metas.items()}


@pytest.fixture
def tracker() -> Tracker:
    return Tracker(PubSub("n1"))


def test_track_reports_synchronously_to_listeners_and_subscribers(tracker):
    diffs: list[PresenceDiff] = []
    tracker.listen(diffs.append)
    sub = Recorder()
    tracker.pubsub.subscribe("presence:h", sub)
    phone, laptop = Session("phone"), Session("laptop")
    ref1 = tracker.track(phone, "presence:h", "alice@h", {"res": "phone"})
    assert (
        diffs
        == sub.got
        == [PresenceDiff("presence:h", {"alice@h": [{"res": "phone", "phx_ref": ref1}]}, {})]
    )
    ref2 = tracker.track(laptop, "presence:h", "alice@h", {"res": "laptop"})
    assert ref1 != ref2
    assert diffs[-1].joins == {"alice@h": [{"res": "laptop", "phx_ref": ref2}]}
    assert len(sub.got) == 2
    assert tracker.list("presence:h") == {
        "alice@h": [{"res": "phone", "phx_ref": ref1}, {"res": "laptop", "phx_ref": ref2}]
    }
    assert [m["res"] for m in tracker.get_by_key("presence:h", "alice@h")] == ["phone", "laptop"]


def test_track_copies_meta_and_refuses_duplicates(tracker):
    diffs = []
    tracker.listen(diffs.append)
    s = Session("s")
    meta = {"res": "r"}
    tracker.track(s, "t", "k", meta)
    assert meta == {"res": "r"}
    with pytest.raises(ValueError):
        tracker.track(s, "t", "k", {"res": "again"})
    assert len(diffs) == 1
    tracker.track(s, "t", "other-key", {"res": "r2"})  # another key is fine
    assert strip(tracker.list("t")) == {"k": ["r"], "other-key": ["r2"]}


def test_untrack_reports_leave_of_that_meta_only(tracker):
    diffs = []
    tracker.listen(diffs.append)
    a, b = Session("a"), Session("b")
    tracker.track(a, "t", "alice", {"res": "a"})
    tracker.track(b, "t", "alice", {"res": "b"})
    tracker.untrack(a, "t", "alice")
    assert diffs[-1].joins == {}
    assert strip(diffs[-1].leaves) == {"alice": ["a"]}
    assert strip(tracker.list("t")) == {"alice": ["b"]}
    tracker.untrack(a, "t", "alice")  # not tracked: no diff
    assert len(diffs) == 3
    tracker.untrack(b, "t", "alice")
    assert tracker.list("t") == {}


def test_update_is_leave_and_join_with_prev_ref(tracker):
    diffs = []
    tracker.listen(diffs.append)
    s = Session("s")
    ref = tracker.track(s, "t", "alice", {"res": "r", "show": "away"})
    ref2 = tracker.update(s, "t", "alice", {"res": "r", "show": "chat"})
    diff = diffs[-1]
    assert diff.leaves == {"alice": [{"res": "r", "show": "away", "phx_ref": ref}]}
    assert diff.joins == {
        "alice": [{"res": "r", "show": "chat", "phx_ref": ref2, "phx_ref_prev": ref}]
    }
    ref3 = tracker.update(s, "t", "alice", lambda old: {**old, "show": "dnd"})
    assert diffs[-1].joins["alice"][0]["show"] == "dnd"
    assert diffs[-1].joins["alice"][0]["phx_ref"] == ref3
    assert diffs[-1].joins["alice"][0]["phx_ref_prev"] == ref2
    assert tracker.get_by_key("t", "alice") == diffs[-1].joins["alice"]
    with pytest.raises(ValueError):
        tracker.update(Session("x"), "t", "alice", {})


def test_untrack_all_reports_one_diff_per_topic(tracker):
    s, other = Session("s"), Session("o")
    tracker.track(s, "presence:h", "alice", {"res": "1"})
    tracker.track(s, "room:a", "alice", {"res": "1"})
    tracker.track(s, "room:b", "alice", {"res": "1"})
    tracker.track(other, "room:a", "alice", {"res": "2"})
    diffs = []
    tracker.listen(diffs.append)
    tracker.untrack_all(s)
    assert sorted(d.topic for d in diffs) == ["presence:h", "room:a", "room:b"]
    assert all(strip(d.leaves) == {"alice": ["1"]} and d.joins == {} for d in diffs)
    assert strip(tracker.list("room:a")) == {"alice": ["2"]}
    tracker.untrack_all(s)
    assert len(diffs) == 3


def test_raising_listener_does_not_stop_others(tracker, caplog):
    def bad(diff):
        raise RuntimeError("listener bug")

    good = []
    sub = Recorder()
    tracker.listen(bad)
    tracker.listen(good.append)
    tracker.pubsub.subscribe("t", sub)
    with caplog.at_level(logging.ERROR):
        tracker.track(Session("s"), "t", "k", {"res": "r"})
    assert len(good) == 1 and len(sub.got) == 1
    assert "listener bug" in caplog.text
    tracker.unlisten(bad)


def test_local_tracker_keeps_no_delta_and_runs_idle(tracker):
    s = Session("s")
    for _ in range(10):
        tracker.track(s, "t", "k", {"res": "r"})
        tracker.untrack(s, "t", "k")
    assert not tracker.state.has_delta()
    tracker.tick(0.0)  # nothing to gossip, no error
    assert tracker.pubsub.subscriber_count("tracker:presence") == 0


def test_tracker_validates_periods():
    with pytest.raises(ValueError):
        Tracker(PubSub(), broadcast_period=1.0, down_period=1.5)
    with pytest.raises(ValueError):
        Tracker(PubSub(), down_period=10, permdown_period=10)


async def test_run_with_local_adapter(tracker):
    async with trio.open_nursery() as nursery:
        await nursery.start(tracker.pubsub.run)
        await nursery.start(tracker.run)
        tracker.track(Session("s"), "t", "k", {"res": "r"})
        assert strip(tracker.list("t")) == {"k": ["r"]}
        nursery.cancel_scope.cancel()
