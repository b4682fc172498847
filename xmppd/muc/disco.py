"""Service discovery of the MUC service and its rooms (XEP-0045 §6, XEP-0030)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..protocol import namespaces as ns
from ..protocol.forms import Field, build
from ..protocol.stanza import Element, reply, sub
from ..storage.base import StorageError
from .config import RoomConfig

# Room archive (XEP-0313), retraction with tombstones (XEP-0424), moderation (XEP-0425).
FEATURES = (ns.MAM, ns.MAM_EXTENDED, ns.RETRACT, ns.RETRACT_TOMBSTONE, ns.MODERATE)

if TYPE_CHECKING:
    from .room import Room
    from .service import MucService


def result(stanza: Element) -> Element:
    return reply(stanza)


def _query(stanza: Element, namespace: str) -> tuple[Element, Element]:
    answer = reply(stanza)
    query = sub(answer, namespace, "query")
    if node := stanza[0].get("node"):
        query.set("node", node)
    return answer, query


def service_info(service: MucService, stanza: Element) -> Element:
    """§6.2: a conference/text identity and the MUC feature."""
    answer, query = _query(stanza, ns.DISCO_INFO)
    sub(query, ns.DISCO_INFO, "identity", category="conference", type="text", name=service.name)
    for var in sorted((ns.DISCO_INFO, ns.DISCO_ITEMS, ns.MUC, ns.PING, ns.MUC_STABLE_ID)):
        sub(query, ns.DISCO_INFO, "feature", var=var)
    return answer


async def service_items(service: MucService, stanza: Element) -> Element:
    """§6.3: the public rooms (hidden, unconfigured and vanishing rooms are left out)."""
    answer, query = _query(stanza, ns.DISCO_ITEMS)
    rooms = await public_rooms(service)
    for local in sorted(rooms):
        item = sub(query, ns.DISCO_ITEMS, "item", jid=f"{local}@{service.domain}")
        item.set("name", rooms[local])
    return answer


async def public_rooms(service: MucService) -> dict[str, str]:
    """Room localpart -> name: the public rooms this node serves and, in cluster mode, every
    stored public room served elsewhere."""
    found = {local: config.name or local for local, config in (await stored_elsewhere(service))}
    for local, room in service.rooms.items():
        if room.config.public and not room.locked and not room.destroyed:
            found[local] = room.config.name or local
    return found


async def stored_elsewhere(service: MucService) -> list[tuple[str, RoomConfig]]:
    """Cluster mode: the stored (persistent) public rooms this node does not serve, with their
    stored configuration. A temporary room served by another node is in no storage."""
    found: list[tuple[str, RoomConfig]] = []
    if service.placement is None:
        return found
    try:
        for local in await service.store.users():
            doc = await service.store.get(local) if local not in service.rooms else None
            config = RoomConfig.from_doc(doc.get("config", {})) if doc else None
            if config is not None and config.public:
                found.append((local, config))
    except StorageError as exc:  # this node's rooms still answer
        service.log.error("cannot list the stored rooms: %s", exc)
    return found


def room_features(room: Room) -> list[str]:
    config = room.config
    return [
        ns.MUC,
        ns.MUC_STABLE_ID,
        ns.MUC_SELF_PING,
        "muc_public" if config.public else "muc_hidden",
        "muc_persistent" if config.persistent else "muc_temporary",
        "muc_membersonly" if config.members_only else "muc_open",
        "muc_moderated" if config.moderated else "muc_unmoderated",
        "muc_nonanonymous" if config.non_anonymous else "muc_semianonymous",
        "muc_passwordprotected" if config.password_protected else "muc_unsecured",
        *FEATURES,
    ]


def room_info(room: Room, stanza: Element) -> Element:
    """§6.4: the room's identity, its features by configuration, and muc#roominfo (§15.5.4)."""
    answer, query = _query(stanza, ns.DISCO_INFO)
    name = room.config.name or room.local
    sub(query, ns.DISCO_INFO, "identity", category="conference", type="text", name=name)
    for var in sorted({ns.DISCO_INFO, ns.DISCO_ITEMS, *room_features(room)}):
        sub(query, ns.DISCO_INFO, "feature", var=var)
    info = [
        Field("muc#roominfo_description", values=[room.config.description], label="Description"),
        Field("muc#roominfo_subject", values=[room.subject], label="Subject"),
        Field("muc#roominfo_occupants", values=[str(len(room.occupants))], label="Occupants"),
        Field("muc#roomconfig_roomname", values=[name], label="Name"),
    ]
    query.append(build(ns.MUC_ROOMINFO, info, kind="result"))
    return answer


def room_items(room: Room, stanza: Element, occupant: bool) -> Element:
    """§6.5: the occupants when the list is public, else an empty list. It is public only when
    the service's `list_occupants` is on (off by default, as §6.5 advises), and then to the
    occupants, or to anyone for a public room that everyone may enter."""
    answer, query = _query(stanza, ns.DISCO_ITEMS)
    config = room.config
    open_room = config.public and not config.members_only and not config.password_protected
    if room.service.list_occupants and (occupant or open_room):
        for nick in sorted(room.occupants):
            sub(query, ns.DISCO_ITEMS, "item", jid=f"{room.jid}/{nick}")
    return answer
