"""XEP-0059 request parsing and response building (sans-IO)."""

from __future__ import annotations

import pytest
from lxml import etree

from xmppd.protocol import rsm

NS = "http://jabber.org/protocol/rsm"


def parse(inner: str) -> rsm.Request:
    return rsm.parse(etree.fromstring(f"<set xmlns='{NS}'>{inner}</set>"))


def test_forward_backward_and_last_page_requests() -> None:
    assert parse("<max>10</max>") == rsm.Request(max=10)
    after = parse("<max>10</max><after>abc</after>")
    assert (after.after, after.backward) == ("abc", False)
    before = parse("<max>10</max><before>abc</before>")
    assert (before.before, before.backward) == ("abc", True)
    last = parse("<max>10</max><before/>")  # §2.5: the last page
    assert (last.before, last.backward) == ("", True)
    assert parse("<index>3</index>").index == 3
    assert parse("").backward is False


def test_found_in_a_parent_and_response_elements_ignored() -> None:
    query = etree.fromstring(
        f"<query xmlns='urn:xmpp:mam:2'><set xmlns='{NS}'><max>0</max>"
        "<count>5</count></set></query>"
    )
    assert rsm.find(query) == rsm.Request(max=0)
    assert rsm.find(etree.fromstring("<query xmlns='urn:xmpp:mam:2'/>")) is None


@pytest.mark.parametrize(
    "inner",
    [
        "<max>-1</max>",
        "<max>ten</max>",
        "<max>1e3</max>",
        "<max>١٢</max>",  # non-ASCII digits
        "<max>99999999999999999999</max>",
        "<max></max>",
        "<index>-2</index>",
        "<after/>",
        "<max>1</max><max>2</max>",
        "<after>a</after><after>b</after>",
    ],
)
def test_malformed_requests_are_refused(inner: str) -> None:
    with pytest.raises(rsm.RSMError):
        parse(inner)


def test_response_set() -> None:
    out = rsm.build("first-id", "last-id", count=20, first_index=0)
    assert out.tag == f"{{{NS}}}set"
    assert out.findtext(f"{{{NS}}}first") == "first-id"
    assert out.find(f"{{{NS}}}first").get("index") == "0"
    assert out.findtext(f"{{{NS}}}last") == "last-id"
    assert out.findtext(f"{{{NS}}}count") == "20"
    plain = rsm.build("a", "b")
    assert plain.find(f"{{{NS}}}first").get("index") is None
    assert plain.find(f"{{{NS}}}count") is None
    assert len(rsm.build()) == 0  # an empty page: neither first nor last
    assert b"ns0" not in etree.tostring(out)
