"""Room archives (XEP-0313 §4 queries on the room's bare JID, §6.1.2 MUC archive rules) and
the admin option that hides what deleted accounts said.

Every room message is archived under the room's bare JID with its XEP-0359 stanza-id, and the
archived copy names the sender's real JID (history.with_author). A query is answered with the
account archive's query functions (xmppd.modules.mam); the real JID is shown only to who may
see real JIDs in the room, and messages of deleted accounts are left out when
`hide_deleted_accounts_history` is on. Accounts are deleted by `xmppd deluser` in another
process, so deletion is checked when history is served: one account lookup per author.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from lxml import etree

from auth.base import AuthError

from ..host import Host
from ..modules.mam_query import QueryError, fin, parse_query, query_form, result_messages, run_query
from ..protocol.jid import JID, JIDError
from ..protocol.stanza import Element, reply
from ..storage.base import ArchiveItem
from .history import split_author
from .room import MucError, Room

if TYPE_CHECKING:
    from .service import MucService

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)


def check_access(room: Room, sender: JID) -> bool:
    """§6.1.2: who may enter may read; outcasts never, members-only rooms to members and up,
    password-protected rooms to their occupants and owners. True: real JIDs may be shown."""
    affiliation = room.affiliation(str(sender.bare))
    occupant = room.occupant_of(str(sender))
    if room.locked:
        raise MucError("item-not-found", "no such room")
    if affiliation == "outcast":
        raise MucError("forbidden", "you are banned from this room")
    if room.config.members_only and affiliation == "none":
        raise MucError("forbidden", "only members may read this room's archive")
    if room.config.password_protected and occupant is None and affiliation != "owner":
        raise MucError("forbidden", "enter the room to read its archive")
    moderator = occupant is not None and occupant.role == "moderator"
    return room.config.non_anonymous or moderator or affiliation in ("owner", "admin")


async def query(room: Room, sender: JID, stanza: Element, request: Element) -> Element:
    """Answer a `<query xmlns='urn:xmpp:mam:2'/>` get (the form) or set (results, then fin)."""
    show_jids = check_access(room, sender)
    answer = reply(stanza)
    if stanza.get("type") == "get":
        answer.append(query_form())
        return answer
    service = room.service
    try:
        q = parse_query(request, default_limit=service.page_size, max_limit=service.max_page_size)
        page = await run_query(service.archive, room.archive_owner, q)
    except QueryError as exc:
        raise MucError(exc.condition, exc.text) from None
    items = [(item, _author(item)) for item in page.items]
    hidden = await service.hidden_authors({author for _item, author in items})
    shown = [_for_reader(item, show_jids) for item, author in items if author not in hidden]
    for message in result_messages(shown, q, archive=room.jid, to=str(sender)):
        if not service.deliver_to_full(str(sender), message):
            raise MucError("recipient-unavailable", "the querying session is gone")
    answer.append(fin(page))  # the unfiltered page's bounds, so paging goes on past hidden ones
    return answer


def _author(item: ArchiveItem) -> str:
    stanza = etree.fromstring(item.stanza_xml.encode(), _PARSER)
    return split_author(stanza)[1].partition("/")[0]


def _for_reader(item: ArchiveItem, show_jids: bool) -> ArchiveItem:
    """§6.1.2: the real JID only for who may see it."""
    if show_jids:
        return item
    stanza = split_author(etree.fromstring(item.stanza_xml.encode(), _PARSER))[0]
    return dataclasses.replace(item, stanza_xml=etree.tostring(stanza, encoding="unicode"))


async def hidden_authors(service: MucService, authors: set[str]) -> frozenset[str]:
    """The local accounts among `authors` that no longer exist (when the option is on)."""
    if not service.hide_deleted_accounts_history:
        return frozenset()
    gone = set()
    for bare in authors:
        if bare and not await _exists(service, bare):
            gone.add(bare)
    return frozenset(gone)


async def _exists(service: MucService, bare: str) -> bool:
    try:
        jid = JID.parse(bare)
    except JIDError:
        return True
    host = service.host.hosts.get(jid.domain)
    if not isinstance(host, Host) or jid.local is None:
        return True  # a remote account: not ours to know
    if host.resources_of(bare):
        return True
    try:
        return await host.auth.user_exists(jid.local)
    except AuthError:
        return True  # the account store is unavailable: show rather than lose history
