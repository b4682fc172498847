"""XEP-0054 vcard-temp, with the XEP-0153 avatar hash added to the user's presence.

- get/set of one's own vCard (no `to`, or the own bare JID); get of another account's vCard at
  its bare JID. A missing own vCard is an empty `<vCard/>`; a missing vCard of someone else and
  a missing account both answer `service-unavailable` (§3.3 of version 1.3, against directory
  harvesting). Setting someone else's vCard is `forbidden`.
- Stored in keyval store `vcard` as `{"xml": ..., "photo": sha1-hex-or-""}`; the hash of the PHOTO
  BINVAL (SHA-1 of the decoded image, XEP-0153 §3.1) is computed once, at set time. A BINVAL
  that is not base64 is refused with `bad-request`; a vCard over `max_size` bytes with
  `not-acceptable`.
- Presence: available presence from the user (broadcast or directed) without
  `<x xmlns='vcard-temp:x:update'><photo/></x>` gets one with the stored hash (empty `<photo/>`:
  no avatar). A client's own `<photo/>` is left alone. After a vCard set, the new hash goes out
  with the user's next presence: the server does not re-broadcast on its own (a client that
  sets an avatar MUST send presence with it, XEP-0153 §4.2).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import TYPE_CHECKING

from lxml import etree

from ..events import AccountDeleted
from ..module import Implements, Module, ModuleSpec
from ..options import Option
from ..protocol import namespaces as ns
from ..protocol.stanza import Element, copy, first_child, get_child, reply, sub
from ..router import StanzaEvent
from ..storage import StorageError

if TYPE_CHECKING:
    from ..session import Session

# Documents we wrote ourselves; still parsed without entities or network access.
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, remove_comments=True)


def serialize(el: Element) -> str:
    """The element alone, without the namespace declarations it inherited from the stanza."""
    el = copy(el)
    etree.cleanup_namespaces(el)
    return etree.tostring(el, encoding="unicode")


class BadPhoto(ValueError):
    pass


def photo_hash(vcard: Element) -> str:
    """XEP-0153 §3.1: hex SHA-1 of the decoded PHOTO BINVAL, "" when there is no image."""
    photo = get_child(vcard, ns.VCARD, "PHOTO")
    binval = get_child(photo, ns.VCARD, "BINVAL") if photo is not None else None
    text = "".join((binval.text or "").split()) if binval is not None else ""
    if not text:
        return ""
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadPhoto("PHOTO BINVAL is not base64") from exc
    return hashlib.sha1(data).hexdigest()


def load(module: Module) -> None:
    host = module.host
    store = module.open_keyval("vcard")
    max_size: int = module.options["max_size"]
    hashes: dict[str, str] = {}  # bare JID -> photo hash, for accounts with sessions
    module.add_feature(ns.VCARD)

    async def stored(local: str) -> dict | None:
        return await store.get(local)

    async def get_own(event: StanzaEvent) -> bool:
        session = event.origin
        assert session is not None
        doc = await stored(session.jid.local or "")
        return await event.reply(result_with(event, doc))

    async def get_other(event: StanzaEvent) -> bool:
        assert event.to is not None
        local = event.to.local or ""
        doc = await stored(local)
        if doc is None or not await host.auth.user_exists(local):
            # No vCard and no such account get the same answer (§3.3).
            return await event.reply_error("service-unavailable")
        return await event.reply(result_with(event, doc))

    def result_with(event: StanzaEvent, doc: dict | None) -> Element:
        result = reply(event.stanza)
        if doc is None:
            sub(result, ns.VCARD, "vCard")
        else:
            result.append(etree.fromstring(doc["xml"].encode(), _PARSER))
        return result

    async def set_own(event: StanzaEvent) -> bool:
        session, vcard = event.origin, first_child(event.stanza)
        assert session is not None and vcard is not None
        xml = serialize(vcard)
        if len(xml.encode()) > max_size:
            return await event.reply_error("not-acceptable", f"a vCard is at most {max_size} bytes")
        try:
            photo = photo_hash(vcard)
        except BadPhoto as exc:
            return await event.reply_error("bad-request", str(exc))
        doc = {"xml": xml, "photo": photo} if first_child(vcard) is not None else None
        try:
            await store.set(session.jid.local or "", doc)
        except StorageError as exc:
            module.log.error("cannot store the vCard of %s: %s", session.bare, exc)
            return await event.reply_error("internal-server-error")
        hashes[session.bare] = photo
        return await event.reply(reply(event.stanza))

    async def set_other(event: StanzaEvent) -> bool:
        return await event.reply_error("forbidden", "you can only change your own vCard")

    async def avatar_of(bare: str, local: str) -> str:
        if bare not in hashes:
            doc = await stored(local)
            hashes[bare] = doc.get("photo", "") if doc else ""
        return hashes[bare]

    async def add_photo(event: StanzaEvent) -> bool:
        """XEP-0153: the avatar hash in the user's available presence, when the client left it."""
        session, stanza = event.origin, event.stanza
        if session is None or stanza.get("type") is not None:
            return False
        update = get_child(stanza, ns.VCARD_UPDATE, "x")
        if update is not None and get_child(update, ns.VCARD_UPDATE, "photo") is not None:
            return False
        photo = await avatar_of(session.bare, session.jid.local or "")
        stanza = copy(stanza)  # never change what a client sent in place
        update = get_child(stanza, ns.VCARD_UPDATE, "x")
        if update is None:
            update = sub(stanza, ns.VCARD_UPDATE, "x")
        sub(update, ns.VCARD_UPDATE, "photo", photo or None)
        event.stanza = stanza
        return False

    async def closed(session: Session) -> bool:
        if not host.resources_of(session.bare):
            hashes.pop(session.bare, None)
        return False

    module.hook_iq("get/self", ns.VCARD, "vCard", get_own)
    module.hook_iq("get/bare", ns.VCARD, "vCard", get_other)
    module.hook_iq("set/self", ns.VCARD, "vCard", set_own)
    module.hook_iq("set/bare", ns.VCARD, "vCard", set_other)
    # Above the presence module's broadcast (-0.5) so that every copy carries the hash.
    for scope in ("self", "full", "bare", "host"):
        module.hook(f"pre-presence/{scope}", add_photo, 0)
    module.hook("session-closed", closed)

    async def account_deleted(event: AccountDeleted) -> bool:
        await store.set(event.local, None)
        hashes.pop(event.bare, None)
        return False

    module.hook("account-deleted", account_deleted)


spec = ModuleSpec(
    name="vcard",
    summary="stores users' vCards (XEP-0054) and puts their avatar hash in presence (XEP-0153)",
    load=load,
    options={
        "max_size": Option(int, 128 * 1024, "bytes of one vCard, photo included", min=1024),
    },
    implements=(
        Implements("XEP-0054", "1.3.0"),
        Implements("XEP-0153", "1.1.1", note="the server adds the hash when a client leaves it"),
    ),
)
