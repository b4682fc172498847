from __future__ import annotations

import pytest

from xmppd.events import EventBus, UnknownEvent
from xmppd.protocol.jid import JID
from xmppd.router import scope_of


@pytest.mark.parametrize(
    "name",
    [
        "message/full",
        "pre-presence/self",
        "iq/host",
        "iq-get/host/urn:xmpp:ping:ping",
        "iq-set/self/jabber:iq:roster:query",
        "route/remote",
    ],
)
def test_grammar_accepts(name: str) -> None:
    EventBus().hook(name, _never)


@pytest.mark.parametrize(
    "name", ["mesage/full", "message/everyone", "iq-get/full/x:y", "session-bund"]
)
def test_unknown_names_fail_at_hook_time(name: str) -> None:
    with pytest.raises(UnknownEvent):
        EventBus().hook(name, _never)


def test_declared_feature_events() -> None:
    bus = EventBus()
    bus.declare("roster-item-changed")
    bus.hook("roster-item-changed", _never)


async def test_priorities_and_the_first_true_stops_the_chain() -> None:
    bus = EventBus()
    ran: list[str] = []

    def handler(name: str, result: bool):
        async def run(_event: object) -> bool:
            ran.append(name)
            return result

        return run

    bus.hook("message/bare", handler("delivery", True), -1)
    bus.hook("message/bare", handler("observer", False), 0)
    bus.hook("message/bare", handler("filter", False), 10)
    bus.hook("message/bare", handler("second observer", False), 0)
    assert await bus.fire("message/bare", None) is True
    assert ran == ["filter", "observer", "second observer", "delivery"]
    ran.clear()
    bus.hook("message/bare", handler("blocker", True), 5)
    assert await bus.fire("message/bare", None) is True
    assert ran == ["filter", "blocker"]
    assert await bus.fire("message/full", None) is False


def test_scopes() -> None:
    alice = JID.parse("alice@example.org/desk")
    assert scope_of(None, alice) == "self"
    assert scope_of(JID.parse("alice@example.org"), alice) == "self"
    assert scope_of(JID.parse("alice@example.org/phone"), alice) == "full"
    assert scope_of(JID.parse("bob@example.org"), alice) == "bare"
    assert scope_of(JID.parse("example.org"), alice) == "host"


async def _never(_event: object) -> bool:
    raise AssertionError("not fired in these tests")
