"""iq requests to a room: discovery, moderator and admin use cases (muc#admin, XEP-0045 §8-9),
owner use cases (muc#owner, §10: configuration, destruction).

A set carrying several items is checked in full before any item is applied.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from ..protocol import namespaces as ns
from ..protocol.forms import FormError, parse_submission
from ..protocol.jid import JID, JIDError
from ..protocol.stanza import Element, element, get_child, local_name, namespace_of, reply, sub
from ..storage.base import StorageError
from . import archive, disco
from .config import apply_submission, form
from .room import AFF_RANK, ROLE_RANK, MucError, Occupant, Room

Change = Callable[[], Awaitable[None]]


async def handle(room: Room, sender: JID, stanza: Element, child: Element) -> Element:
    key = (stanza.get("type"), namespace_of(child), local_name(child))
    if key == ("get", ns.DISCO_INFO, "query"):
        return disco.room_info(room, stanza)
    if key == ("get", ns.DISCO_ITEMS, "query"):
        return disco.room_items(room, stanza, room.occupant_of(str(sender)) is not None)
    if key[1:] == (ns.MAM, "query"):
        return await archive.query(room, sender, stanza, child)
    if key == ("get", ns.PING, "ping"):
        return reply(stanza)
    # What changes the room is the room service's (api.py), for XMPP and JSON clients alike.
    actor, api, real = Actor(room, sender), room.service.api, str(sender)
    if key == ("set", ns.MODERATE, "moderate"):
        await api.moderate_request(room.jid, real, child)
        return reply(stanza)
    if key == ("get", ns.MUC_ADMIN, "query"):
        return _answer(stanza, ns.MUC_ADMIN, list_items(room, actor, child))
    if key == ("set", ns.MUC_ADMIN, "query"):
        await api.change(room.jid, real, _items(child))
        return reply(stanza)
    if key[1] == ns.MUC_OWNER and key[2] == "query":
        if key[0] == "get":
            if actor.affiliation != "owner":
                raise MucError("forbidden", "only owners may do this")
            config = form(room.config, room.service.max_occupants, room.service.max_history)
            return _answer(stanza, ns.MUC_OWNER, [config])
        await api.owner_request(room.jid, real, child)
        return reply(stanza)
    raise MucError("service-unavailable")


class Actor:
    """Who sends the request: affiliation always, role when joined with that session."""

    def __init__(self, room: Room, sender: JID) -> None:
        self.bare = str(sender.bare)
        self.occupant = room.occupant_of(str(sender))
        self.affiliation = room.affiliation(self.bare)
        self.role = self.occupant.role if self.occupant is not None else "none"

    def actor_element(self) -> Element:
        actor = element(ns.MUC_USER, "actor")
        if self.occupant is not None:
            actor.set("nick", self.occupant.nick)
        return actor


def _items(query: Element) -> list[Element]:
    return [c for c in query if isinstance(c.tag, str) and local_name(c) == "item"]


def _answer(stanza: Element, namespace: str, children: list[Element]) -> Element:
    answer = reply(stanza)
    query = sub(answer, namespace, "query")
    for child in children:
        query.append(child)
    return answer


def _extras(actor: Actor, item: Element) -> list[Element]:
    extras = [actor.actor_element()]
    reason = get_child(item, ns.MUC_ADMIN, "reason")
    if reason is not None:
        extras.append(element(ns.MUC_USER, "reason"))
        extras[-1].text = reason.text or ""
    return extras


# ---- lists (§8.5, §9.5, §9.8, §10.5, §10.8) -----------------------------------------------


def list_items(room: Room, actor: Actor, query: Element) -> list[Element]:
    items = _items(query)
    if len(items) != 1:
        raise MucError("bad-request", "ask for one list")
    wanted_aff, wanted_role = items[0].get("affiliation"), items[0].get("role")
    out = []
    if wanted_aff is not None:
        if wanted_aff not in AFF_RANK or wanted_aff == "none":
            raise MucError("bad-request", "unknown affiliation list")
        if AFF_RANK[actor.affiliation] < AFF_RANK["admin"]:
            raise MucError("forbidden", "only admins and owners see affiliation lists")
        for bare, affiliation in sorted(room.affiliations.items()):
            if affiliation == wanted_aff:
                out.append(element(ns.MUC_ADMIN, "item", affiliation=affiliation, jid=bare))
        return out
    if wanted_role not in ROLE_RANK or wanted_role == "none":
        raise MucError("bad-request", "ask for an affiliation or a role list")
    if actor.role != "moderator":
        raise MucError("forbidden", "only moderators see role lists")
    for nick, occupant in sorted(room.occupants.items()):
        if occupant.role == wanted_role:
            attrs = room.item(occupant, actor.occupant or occupant)
            out.append(element(ns.MUC_ADMIN, "item", nick=nick, **attrs))
    return out


# ---- changes ------------------------------------------------------------------------------


def plan_item(room: Room, actor: Actor, item: Element) -> Change:
    role, affiliation = item.get("role"), item.get("affiliation")
    if role is not None and item.get("nick") is not None:
        return plan_role(room, actor, item, item.get("nick") or "", role)
    if affiliation is not None and item.get("jid") is not None:
        return plan_affiliation(room, actor, item, item.get("jid") or "", affiliation)
    raise MucError("bad-request", "an item needs nick and role, or jid and affiliation")


def plan_role(room: Room, actor: Actor, item: Element, nick: str, role: str) -> Change:
    """§8.2 kick, §8.3-8.4 voice, §9.6-9.7 moderator status."""
    if role not in ROLE_RANK:
        raise MucError("bad-request", f"unknown role {role!r}")
    if actor.role != "moderator":
        raise MucError("forbidden", "only moderators change roles")
    target = room.occupants.get(nick)
    if target is None:
        raise MucError("item-not-found", "no such occupant")
    target_aff = room.affiliation(target.bare)
    if (role == "moderator" or target.role == "moderator") and AFF_RANK[actor.affiliation] < 2:
        raise MucError("forbidden", "only admins grant or revoke moderator status")
    if role != "moderator" and target_aff in ("admin", "owner"):
        raise MucError("not-allowed", "admins and owners keep their role")
    if role == "none" and AFF_RANK[target_aff] > AFF_RANK[actor.affiliation]:
        raise MucError("not-allowed", "you may not kick this occupant")
    extras = _extras(actor, item)

    async def apply() -> None:
        if role == "none":
            await room.remove(target, ["307"], extras)
        elif room.occupants.get(nick) is target:
            await room.set_role(target, role)

    return apply


def plan_affiliation(room: Room, actor: Actor, item: Element, jid: str, affiliation: str) -> Change:
    """§9.1 ban, §9.3-9.4 members, §10.3-10.4/10.6-10.7 owners and admins."""
    if affiliation not in AFF_RANK:
        raise MucError("bad-request", f"unknown affiliation {affiliation!r}")
    try:
        bare = str(JID.parse(jid).bare)
    except JIDError:
        raise MucError("jid-malformed", "not a valid JID") from None
    current = room.affiliation(bare)
    if AFF_RANK[actor.affiliation] < AFF_RANK["admin"]:
        raise MucError("forbidden", "only admins and owners change affiliations")
    high = ("admin", "owner")
    if actor.affiliation != "owner" and (affiliation in high or current in high):
        raise MucError("not-allowed", "only owners change admins and owners")
    owners = [b for b, a in room.affiliations.items() if a == "owner"]
    if current == "owner" and affiliation != "owner" and owners == [bare]:
        raise MucError("conflict", "a room keeps at least one owner")
    if current == "none" and affiliation != "none":
        room.check_affiliation_room()
    extras = _extras(actor, item)

    async def apply() -> None:
        if affiliation == "none":
            room.affiliations.pop(bare, None)
        else:
            room.affiliations[bare] = affiliation
        await room.save()
        for occupant in [o for o in room.occupants.values() if o.bare == bare]:
            await _affiliation_took_effect(room, occupant, affiliation, extras)

    return apply


async def _affiliation_took_effect(
    room: Room, occupant: Occupant, affiliation: str, extras: list[Element]
) -> None:
    if affiliation == "outcast":
        await room.remove(occupant, ["301"], extras)
    elif affiliation == "none" and room.config.members_only:
        await room.remove(occupant, ["321"], extras)
    else:
        await room.set_role(occupant, room.default_role(affiliation))


# ---- owner: configuration and destruction (§10.1-10.2, §10.9) ------------------------------


async def owner_set(room: Room, query: Element) -> None:
    destroy = get_child(query, ns.MUC_OWNER, "destroy")
    if destroy is not None:
        await destroy_room(room, destroy)
        return
    x = get_child(query, ns.DATA_FORMS, "x")
    if x is None:
        raise MucError("bad-request", "expected a data form or destroy")
    if x.get("type") == "cancel":
        if room.locked:  # §10.1.3: cancelling the initial configuration destroys the room
            await destroy_room(room, element(ns.MUC_OWNER, "destroy"))
        return
    service = room.service
    try:
        values = parse_submission(x, ns.MUC_ROOMCONFIG)
        new = apply_submission(room.config, values, service.max_occupants, service.max_history)
    except FormError as exc:
        raise MucError("not-acceptable", str(exc)) from None
    old, was_locked = room.config, room.locked
    room.config, room.locked = new, False
    room.history.resize(new.history_length)
    if old.persistent and not new.persistent:
        await service.store.set(room.local, None)
    await room.save()
    await _config_took_effect(room, old, was_locked)


async def _config_took_effect(room: Room, old: object, was_locked: bool) -> None:
    new = room.config
    if new.members_only:  # §9.? 322: non-members leave a room that became members-only
        for occupant in list(room.occupants.values()):
            if room.affiliation(occupant.bare) == "none":
                await room.remove(occupant, ["322"])
    if not was_locked:
        codes = ["104"]
        if new.non_anonymous != getattr(old, "non_anonymous", new.non_anonymous):
            codes.append("172" if new.non_anonymous else "173")
        await room.status_message(codes)
    await room.service.room_emptied(room)


async def destroy_room(room: Room, destroy: Element) -> None:
    """§10.9: the owner's <destroy/> (alternate venue, reason, password) to the service."""
    texts = {
        local_name(child): child.text or ""
        for child in destroy
        if isinstance(child.tag, str) and local_name(child) in ("reason", "password")
    }
    try:
        await room.service.destroy_room(
            room,
            reason=texts.get("reason"),
            venue=destroy.get("jid"),
            password=texts.get("password"),
        )
    except StorageError as exc:
        room.service.log.error("destroying %s: %s", room.jid, exc)
        raise MucError("internal-server-error", "the room could not be deleted", "wait") from None
