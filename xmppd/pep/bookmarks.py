"""XEP-0402 §5.3 compatibility: XEP-0048 bookmarks in private XML storage (XEP-0049) are a
view of the `urn:xmpp:bookmarks:1` PEP node, one item per room (item id = room JID).

Reading `<storage xmlns='storage:bookmarks'/>` builds it from the node's items; writing it
publishes the conferences that changed and retracts the ones that are gone. URL bookmarks have
no place in XEP-0402 and are not kept.
"""

from __future__ import annotations

from ..protocol import namespaces as ns
from ..protocol.jid import JID, JIDError
from ..protocol.stanza import Element, child_text, element, qname, sub

NODE_CONFIG = {
    "access_model": "whitelist",  # XEP-0402 §3: bookmarks are private
    "persist_items": True,
    "send_last_published_item": "never",
}
_CONFERENCE = qname(ns.LEGACY_BOOKMARKS, "conference")
_TRUE = ("1", "true")


def to_storage(items: list[tuple[str, Element]]) -> Element:
    """`<storage xmlns='storage:bookmarks'>` for the node's (id, conference) items."""
    storage = element(ns.LEGACY_BOOKMARKS, "storage")
    for jid, conference in items:
        if conference.tag != qname(ns.BOOKMARKS, "conference"):
            continue
        out = sub(storage, ns.LEGACY_BOOKMARKS, "conference", jid=jid)
        out.set("autojoin", "true" if conference.get("autojoin") in _TRUE else "false")
        if conference.get("name"):
            out.set("name", conference.get("name", ""))
        for child in ("nick", "password"):
            if (text := child_text(conference, ns.BOOKMARKS, child)) is not None:
                sub(out, ns.LEGACY_BOOKMARKS, child, text)
    return storage


def from_storage(storage: Element) -> dict[str, Element]:
    """The XEP-0402 `<conference/>` payloads by room JID; ValueError on a bad room JID."""
    items: dict[str, Element] = {}
    for old in storage.iterchildren(_CONFERENCE):
        try:
            jid = str(JID.parse(old.get("jid", "")))
        except JIDError as exc:
            raise ValueError(f"bad conference jid {old.get('jid')!r}") from exc
        conference = element(ns.BOOKMARKS, "conference")
        if old.get("name"):
            conference.set("name", old.get("name", ""))
        conference.set("autojoin", "true" if old.get("autojoin") in _TRUE else "false")
        for child in ("nick", "password"):
            if (text := child_text(old, ns.LEGACY_BOOKMARKS, child)) is not None:
                sub(conference, ns.BOOKMARKS, child, text)
        items[jid] = conference
    return items
