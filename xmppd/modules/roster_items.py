"""The roster item model (xmppd/modules/roster.py): the stored document of one contact, the
view a service gets of it, and how a shared (directory) item merges with a personal one."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

Doc = dict[str, Any]
# What a client sees of an item; a change to any of these is pushed and versioned.
VISIBLE = ("listed", "name", "groups", "sub", "ask", "approved")


def blank() -> Doc:
    return {
        "listed": False,  # in the roster the client sees
        "name": None,
        "groups": [],
        "sub": "none",  # none | to | from | both
        "ask": False,  # pending out: we asked to see the contact's presence
        "pending_in": False,  # the contact asked to see ours, not answered yet
        "request": None,  # that request, serialized, for re-delivery (RFC 6121 §3.1.3)
        "approved": False,  # pre-approved (RFC 6121 §3.4)
        "ver": 0,
    }


def public(contact: str, doc: Doc) -> dict[str, Any]:
    """The service view of an item."""
    return {
        "jid": contact,
        "name": doc["name"],
        "groups": list(doc["groups"]),
        "subscription": doc["sub"],
        "ask": doc["ask"],
        "approved": doc["approved"],
    }


SharedItem = tuple[str | None, list[str]]  # (name, groups) of a computed item


class Shared(Protocol):
    """Items computed per account instead of stored (the directory's groups)."""

    def tag(self, user: str) -> str:
        """Changes whenever the user's shared items change ("" when there are none)."""
        ...

    def items(self, user: str) -> Iterable[tuple[str, str | None, list[str]]]:
        """(contact bare JID, name, groups) of every shared item of `user`."""
        ...

    def item(self, user: str, contact: str) -> SharedItem | None: ...

    def render(self, user: str, skip: set[str]) -> bytes:
        """`items` as serialized <item/> elements (roster namespace inherited), but those of
        the contacts in `skip`: a big group's roster without building each element."""
        ...

    def online_contacts(self, user: str) -> list[str]:
        """Bare JIDs of shared contacts with an available resource (for presence)."""
        ...


def merge(doc: Doc | None, shared: SharedItem | None) -> Doc | None:
    """The item a client sees. A shared item is subscription "both" (presence flows without a
    stored subscription); a listed personal item for the same contact keeps its name (else the
    shared name) and adds its groups in front of the shared ones."""
    if shared is None:
        return doc
    base = doc if doc is not None else blank()
    name, groups = shared
    if base["listed"]:
        name = base["name"] or name
        groups = list(dict.fromkeys([*base["groups"], *groups]))
    return {**base, "listed": True, "name": name, "groups": groups, "sub": "both", "ask": False}
