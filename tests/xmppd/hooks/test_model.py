"""The matcher in process: index by source and event type, compiled filters (keywords, regular
expressions, #tags, senders), modes; the backoff's growth, cap and jitter."""

from __future__ import annotations

import random

import pytest

from xmppd.hooks.model import Event, Matcher, Subscription, SubscriptionError
from xmppd.hooks.outbox import backoff

ROOM = "dev@conference.example.org"
URL = {"url": "https://hooks.example.org/x"}


def _sub(sub_id: str, **fields: object) -> Subscription:
    base = {"source": "room", "room": ROOM, "events": ["message"], "provider": "webhook",
            "target": URL}  # fmt: skip
    return Subscription(id=sub_id, **{**base, **fields})  # type: ignore[arg-type]


def _event(text: str, **fields: object) -> Event:
    base = {"id": "e1", "type": "message", "source": "room", "room": ROOM,
            "sender": "ann@example.org"}  # fmt: skip
    return Event(text=text, **{**base, **fields})  # type: ignore[arg-type]


def _ids(matcher: Matcher, event: Event) -> set[str]:
    return {s.id for s in matcher.match(event)}


def test_filters_and_index() -> None:
    matcher = Matcher()
    matcher.add(_sub("all"))
    matcher.add(_sub("kw", keywords=["Deploy", "a.b"]))
    matcher.add(_sub("re", patterns=[r"\bv\d+\.\d+\b"]))
    matcher.add(_sub("tag", tags=["#ops"]))
    matcher.add(_sub("ann", senders=["ann@example.org"], keywords=["x"]))
    matcher.add(_sub("other-room", room="x@conference.example.org"))
    matcher.add(_sub("rooms", source="rooms", room=None))
    matcher.add(_sub("joins", events=["join"]))
    assert _ids(matcher, _event("hello")) == {"all", "rooms"}
    assert _ids(matcher, _event("DEPLOY now")) == {"all", "kw", "rooms"}
    assert _ids(matcher, _event("axb")) == {"all", "rooms"}  # keywords are no regex
    assert _ids(matcher, _event("shipped v2.10")) == {"all", "re", "rooms"}
    assert _ids(matcher, _event("see #ops")) == {"all", "tag", "rooms"}
    assert _ids(matcher, _event("see #opsteam and a#ops")) == {"all", "rooms"}
    assert _ids(matcher, _event("x", sender="bo@example.org")) == {"all", "rooms"}
    assert _ids(matcher, _event("x")) == {"all", "ann", "rooms"}
    assert _ids(matcher, _event("", type="join")) == {"joins"}
    matcher.remove("all")
    matcher.add(_sub("kw", keywords=["other"]))  # replacing re-indexes
    assert _ids(matcher, _event("Deploy")) == {"rooms"}
    assert len(matcher) == 7


def test_modes() -> None:
    matcher = Matcher()
    matcher.add(_sub("watch"))
    matcher.add(_sub("follow", mode="follow"))
    matcher.add(_sub("mute", mode="mute"))
    assert _ids(matcher, _event("new topic")) == {"watch", "follow"}
    assert _ids(matcher, _event("a reply", starts_thread=False)) == {"watch"}


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"source": "nowhere"}, "source"),
        ({"room": None}, "room"),
        ({"events": []}, "events"),
        ({"events": ["typing"]}, "events"),
        ({"provider": "fax"}, "provider"),
        ({"target": {"url": "ftp://x"}}, "target"),
        ({"target": {"url": "http://example.org/x"}}, "target"),
        ({"provider": "matrix", "target": {"homeserver": "https://m.org"}}, "target"),
        ({"patterns": ["(unclosed"]}, "patterns"),
        ({"patterns": ["a" * 600]}, "patterns"),
        ({"mode": "loud"}, "mode"),
    ],
)
def test_refusals_name_the_field(fields: dict, field: str) -> None:
    with pytest.raises(SubscriptionError) as caught:
        _sub("x", **fields)
    assert caught.value.field == field


def test_plain_http_only_to_loopback() -> None:
    for url in ("http://127.0.0.1:8080/x", "http://[::1]/x", "http://localhost/x"):
        _sub("x", target={"url": url})


def test_backoff_doubles_with_jitter_and_cap() -> None:
    rng = random.Random(7)
    for attempts, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (12, 60.0)]:
        delays = [backoff(attempts, 1.0, 60.0, rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 100  # jittered, not synchronised
