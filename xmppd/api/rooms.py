"""`/rooms`: the MUC service's rooms, through the room service's own functions (muc/api.py,
muc/admin.py, muc/moderation.py) so that XMPP and JSON occupants see what any change does."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from lxml import etree

from ..bans import ServiceActor
from ..channels import render
from ..modules.mam_query import Query, QueryError, run_query
from ..muc import admin, messages, moderation
from ..muc.api import apply_config
from ..muc.history import split_author
from ..muc.room import AFF_RANK, MucError, Room
from ..protocol import namespaces as ns
from ..protocol import rsm
from ..protocol.jid import JID, JIDError
from ..protocol.stanza import element, make, sub
from .routes import LIMIT, ApiError, Call, body_obj, not_found, obj, route
from .schema import STAMP, TEXT, parse_time, ref

if TYPE_CHECKING:
    from ..muc.service import MucService

ROOM = ref("Room")
AFFILIATIONS = [a for a in AFF_RANK if a != "none"]
# MucError conditions as HTTP answers.
STATUS = {"item-not-found": 404, "conflict": 409, "forbidden": 403, "not-allowed": 409}
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
OK = obj(["ok"], ok={"type": "boolean"})


def muc_refused(exc: MucError) -> ApiError:
    status = STATUS.get(exc.condition, 422)
    if exc.condition == "forbidden":
        status = 409  # the room's rules refuse it (the key is allowed; 403 is for keys)
    return ApiError(status, exc.condition, exc.text or exc.condition)


def services(call: Call) -> list[MucService]:
    found = [h.services.get("muc") for h in call.server.hosts.values()]
    return [s for s in found if s is not None]


async def service_of(call: Call, room_jid: str) -> tuple[MucService, str]:
    try:
        jid = JID.parse(room_jid)
    except JIDError as exc:
        raise ApiError(422, "bad-jid", f"invalid room JID: {exc}", "room") from None
    if jid.local is None or jid.resource is not None:
        raise ApiError(422, "bad-jid", "a room JID is name@service", "room")
    for service in services(call):
        if service.domain == jid.domain:
            await service.ready()
            return service, jid.local
    raise not_found(f"no group chat service at {jid.domain}")


async def find_room(call: Call) -> Room:
    service, local = await service_of(call, call.path["room"])
    room = service.room(local)
    if room is None:
        raise not_found(f"no room {call.path['room']}")
    return room


def describe(room: Room) -> dict[str, Any]:
    c = room.config
    return {
        "jid": room.jid,
        "name": c.name or room.local,
        "occupants": len(room.occupants),
        "subject": room.subject,
        "config": {
            "name": c.name,
            "description": c.description,
            "members_only": c.members_only,
            "public": c.public,
            "persistent": c.persistent,
            "moderated": c.moderated,
            "password_protected": c.password_protected,
            "whois": c.whois,
        },
    }


@route(
    "GET",
    "/rooms",
    "read",
    "List rooms (all of them, with occupant counts), paged by JID",
    obj(
        ["rooms", "next"], rooms={"type": "array", "items": ROOM}, next={"type": ["string", "null"]}
    ),
    query={
        "q": {"type": "string", "maxLength": 200, "description": "part of the JID or name"},
        "after": {"type": "string", "maxLength": 300, "description": "the `next` of a page"},
        "limit": LIMIT,
    },
)
async def _list_rooms(call: Call) -> Any:
    q, after, limit = call.query.get("q", "").lower(), call.query.get("after"), call.query["limit"]
    found = []
    for service in services(call):
        await service.ready()
        for room in list(service.rooms.values()):
            text = f"{room.jid} {room.config.name}".lower()
            if not room.destroyed and q in text and (after is None or room.jid > after):
                found.append(room)
    found.sort(key=lambda r: r.jid)
    page = found[:limit]
    return {
        "rooms": [describe(r) for r in page],
        "next": page[-1].jid if len(found) > limit else None,
    }


@route(
    "POST",
    "/rooms",
    "rooms",
    "Create a room with its configuration",
    ROOM,
    status=201,
    body=body_obj(
        ["jid"],
        jid={"type": "string", "maxLength": 3071, "description": "name@conference.domain"},
        config=ref("RoomConfig"),
        owners={"type": "array", "items": {"type": "string", "maxLength": 3071}, "maxItems": 100},
        members={"type": "array", "items": {"type": "string", "maxLength": 3071}, "maxItems": 1000},
    ),
    errors=(404, 409),
)
async def _create_room(call: Call) -> Any:
    service, local = await service_of(call, call.body["jid"])
    if await service.settled_room(local) is not None:
        raise ApiError(409, "conflict", f"the room {local}@{service.domain} exists")
    owners = [_bare(j, "owners") for j in call.body.get("owners", [])]
    members = [_bare(j, "members") for j in call.body.get("members", [])]
    creator = JID.parse(owners[0] if owners else next(iter(call.server.hosts)))
    room = service.create(local, creator, check=False)
    room.locked = False
    room.affiliations.clear()
    try:
        apply_config(room, {"persistent": True, **call.body.get("config", {})})
    except MucError as exc:
        await service.destroy_room(room)
        raise muc_refused(exc) from None
    for bare in members:
        room.affiliations[bare] = "member"
    for bare in owners:
        room.affiliations[bare] = "owner"
    await room.save()
    await service.lifecycle(room, "room-created")
    call.audit.append(f"created room {room.jid}")
    return describe(room)


def _bare(text: str, field: str) -> str:
    try:
        jid = JID.parse(text)
    except JIDError as exc:
        raise ApiError(422, "bad-jid", f"invalid JID {text!r}: {exc}", field) from None
    return str(jid.bare)


@route("GET", "/rooms/{room}", "read", "One room and its configuration", ROOM, errors=(404,))
async def _get_room(call: Call) -> Any:
    return describe(await find_room(call))


@route(
    "PATCH",
    "/rooms/{room}",
    "rooms",
    "Change a room's configuration (the fields given)",
    ROOM,
    body=ref("RoomConfig"),
    errors=(404,),
)
async def _configure_room(call: Call) -> Any:
    room = await find_room(call)
    try:
        apply_config(room, {"persistent": room.config.persistent, **call.body})
    except MucError as exc:
        raise muc_refused(exc) from None
    await room.save()
    call.audit.append(f"configured {room.jid}: {json.dumps(sorted(call.body))}")
    return describe(room)


@route(
    "DELETE",
    "/rooms/{room}",
    "rooms",
    "Destroy a room: occupants leave, its history and archive are deleted",
    OK,
    query={"reason": TEXT},
    errors=(404,),
)
async def _destroy_room(call: Call) -> Any:
    room = await find_room(call)
    await room.service.destroy_room(room, reason=call.query.get("reason") or None)
    call.audit.append(f"destroyed {room.jid}")
    return {"ok": True}


AFFILIATION = obj(
    ["jid", "affiliation"],
    jid={"type": "string"},
    affiliation={"type": "string", "enum": AFFILIATIONS},
)


@route(
    "GET",
    "/rooms/{room}/affiliations",
    "read",
    "Owners, admins, members and outcasts",
    obj(["affiliations"], affiliations={"type": "array", "items": AFFILIATION}),
    errors=(404,),
)
async def _get_affiliations(call: Call) -> Any:
    room = await find_room(call)
    items = sorted(room.affiliations.items())
    return {"affiliations": [{"jid": j, "affiliation": a} for j, a in items]}


@route(
    "PUT",
    "/rooms/{room}/affiliations",
    "rooms",
    "Set one account's affiliation (`none` removes it; `outcast` bans and removes it)",
    obj(["jid", "affiliation"], jid={"type": "string"}, affiliation={"type": "string"}),
    body=body_obj(
        ["jid", "affiliation"],
        jid={"type": "string", "maxLength": 3071},
        affiliation={"type": "string", "enum": list(AFF_RANK)},
        reason=TEXT,
    ),
    errors=(404, 409),
)
async def _set_affiliation(call: Call) -> Any:
    room = await find_room(call)
    bare, affiliation = _bare(call.body["jid"], "jid"), call.body["affiliation"]
    item = element(ns.MUC_ADMIN, "item", jid=bare, affiliation=affiliation)
    if call.body.get("reason"):
        sub(item, ns.MUC_ADMIN, "reason", call.body["reason"])
    try:
        change = admin.plan_affiliation(room, ServiceActor(), item, bare, affiliation)  # type: ignore[arg-type]
        await change()
    except MucError as exc:
        raise muc_refused(exc) from None
    call.audit.append(f"{bare} is {affiliation} of {room.jid}")
    return {"jid": bare, "affiliation": affiliation}


@route(
    "GET",
    "/rooms/{room}/occupants",
    "read",
    "Who is in the room",
    obj(
        ["occupants"],
        occupants={
            "type": "array",
            "items": obj(
                ["nick", "role", "affiliation", "jid"],
                nick={"type": "string"},
                role={"type": "string"},
                affiliation={"type": "string"},
                jid={"type": "string"},
            ),
        },
    ),
    errors=(404,),
)
async def _occupants(call: Call) -> Any:
    room = await find_room(call)
    out = []
    for nick, o in sorted(room.occupants.items()):
        out.append(
            {"nick": nick, "role": o.role, "affiliation": room.affiliation(o.bare), "jid": o.bare}
        )
    return {"occupants": out}


MESSAGE_PAGE = obj(
    ["messages", "complete"],
    messages={"type": "array", "items": ref("Message")},
    complete={"type": "boolean", "description": "nothing further in the paging direction"},
)


@route(
    "GET",
    "/rooms/{room}/messages",
    "read",
    "A page of the room's archive, oldest first (XEP-0313 paging)",
    MESSAGE_PAGE,
    query={
        "after": {"type": "string", "maxLength": 128, "description": "page forward after this id"},
        "before": {"type": "string", "maxLength": 128, "description": "page back before this id"},
        "start": {**STAMP, "description": "from this time on (inclusive)"},
        "end": {**STAMP, "description": "up to this time (inclusive)"},
        "limit": {"type": "integer", "minimum": 1, "maximum": 100, "default": 50},
    },
    errors=(404,),
)
async def _messages(call: Call) -> Any:
    """Without `after` or `start` the page is taken from the newest end (the latest messages,
    or those just before `before`); with one of them, from the oldest end forward."""
    room = await find_room(call)
    q = call.query
    forward = "after" in q or ("start" in q and "before" not in q)
    if forward:  # RSM <after/>: from the oldest end, bounded by `before` when given
        page = rsm.Request(max=q["limit"], after=q.get("after"))
    else:  # RSM <before/>: "" asks for the newest page
        page = rsm.Request(max=q["limit"], before=q.get("before", ""))
    query = Query(page=page, limit=q["limit"], start=_time(q, "start"), end=_time(q, "end"))
    if forward:
        query.before_id = q.get("before")
    try:
        result = await run_query(room.service.archive, room.archive_owner, query)
    except QueryError as exc:
        raise not_found(exc.text) from None
    out = []
    for item in result.items:
        stanza, author = split_author(etree.fromstring(item.stanza_xml.encode(), _PARSER))
        rendered = render.room_message(stanza, room.jid, None, False, author)
        if rendered is None:
            retraction = render.room_retraction(stanza)
            if retraction is None:
                continue
            rendered = {"from": "", "body": "", "retract": retraction["id"]}
        rendered.update(id=item.id, stamp=render.stamp_of(item.timestamp))
        rendered.pop("type", None)
        out.append(rendered)
    return {"messages": out, "complete": result.complete}


def _time(query: dict[str, Any], name: str) -> Any:
    if name not in query:
        return None
    try:
        return parse_time(query[name])
    except ValueError as exc:  # checked already; kept for a clear answer
        raise ApiError(422, "invalid", str(exc), name) from None


@route(
    "POST",
    "/rooms/{room}/messages/{id}/retract",
    "moderation",
    "Retract any message (XEP-0425 moderation by the room; XMPP and JSON occupants see it)",
    obj(["id"], id={"type": "string", "description": "the retraction's stanza-id"}),
    body=body_obj(reason=TEXT),
    errors=(404,),
)
async def _retract(call: Call) -> Any:
    room = await find_room(call)
    try:
        retraction = await moderation.moderate_by_service(
            room, call.path["id"], call.body.get("reason", "")
        )
    except MucError as exc:
        raise muc_refused(exc) from None
    call.audit.append(f"retracted {call.path['id']} in {room.jid}")
    return {"id": retraction}


@route(
    "POST",
    "/rooms/{room}/post",
    "post",
    "Post into the room as the room itself: a text, a custom event, or both",
    obj(["id"], id={"type": ["string", "null"], "description": "archive id (texts only)"}),
    body=ref("Post"),
    errors=(404,),
)
async def _post_room(call: Call) -> Any:
    from .system import system_message

    room = await find_room(call)
    out = system_message(make("message"), call.body)
    stanza_id = await messages.from_room(room, out)
    call.audit.append(f"posted to {room.jid} ({call.body.get('ev') or 'text'})")
    return {"id": stanza_id}
