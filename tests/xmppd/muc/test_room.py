"""Room presence views: the bytes a recipient gets without a copy equal the serialized copy."""

from __future__ import annotations

import pytest
from lxml import etree

from xmppd.muc.room import View
from xmppd.protocol import namespaces as ns
from xmppd.protocol.stanza import make, sub

RECIPIENTS = [
    "alice@localhost/r",
    'o\'brien@localhost/a "quoted" & <tagged> resource',
    "bob@localhost/tab\there",
    "zoë@localhost/ünïcode ✓",
]


def presences() -> list:
    bare = make("presence", {"from": "room@conference.localhost/Nick"})
    full = make("presence", {"from": "room@conference.localhost/N & <b>"})
    sub(full, ns.CLIENT, "show", "away")
    sub(full, ns.CLIENT, "status", 'at "lunch" > 1h & back')
    sub(sub(full, ns.MUC_USER, "x"), ns.MUC_USER, "item", affiliation="none", role="visitor")
    return [bare, full]


@pytest.mark.parametrize("real", RECIPIENTS)
@pytest.mark.parametrize("which", [0, 1])
def test_wire_is_the_serialized_copy(real: str, which: int) -> None:
    view = View(presences()[which])
    out = view.to(real)
    assert out.get("to") == real
    assert view.wire_to(real) == etree.tostring(out)
    assert etree.fromstring(view.wire_to(real)).get("to") == real
    assert view.element.get("to") is None  # the template itself never changes
