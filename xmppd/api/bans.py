"""`/bans`: bans with expiry on accounts, room entry and addresses (xmppd/bans.py)."""

from __future__ import annotations

import time
from typing import Any

from ..bans import KINDS, BanError
from ..muc.room import MucError
from .rooms import muc_refused
from .routes import ApiError, Call, body_obj, not_found, obj, route
from .schema import STAMP, TEXT, parse_time, ref

BAN = ref("Ban")
MAX_DURATION = 100 * 365 * 86400  # seconds; longer is "until lifted" (omit until/duration)


def _until(body: dict[str, Any]) -> float | None:
    if "until" in body and "duration" in body:
        raise ApiError(422, "invalid", "give until or duration, not both", "until")
    if "duration" in body:
        return time.time() + body["duration"]
    if "until" in body:
        return parse_time(body["until"]).timestamp()
    return None


@route(
    "GET",
    "/bans",
    "read",
    "Bans in force",
    obj(["bans"], bans={"type": "array", "items": BAN}),
    query={"kind": {"type": "string", "enum": list(KINDS)}},
)
async def _list_bans(call: Call) -> Any:
    return {"bans": [b.public() for b in call.server.bans.list(call.query.get("kind"))]}


@route(
    "POST",
    "/bans",
    "moderation",
    "Ban an account server-wide, an account from a room, or an address/network, until a time "
    "(or for `duration` seconds; neither: until lifted). Banning again replaces the ban.",
    BAN,
    status=201,
    body=body_obj(
        ["kind", "target"],
        kind={"type": "string", "enum": list(KINDS)},
        target={"type": "string", "minLength": 1, "maxLength": 3071},
        room={"type": "string", "maxLength": 3071, "description": "the room JID (kind room)"},
        until=STAMP,
        duration={"type": "integer", "minimum": 1, "maximum": MAX_DURATION},
        reason=TEXT,
    ),
    errors=(404, 409),
)
async def _ban(call: Call) -> Any:
    body = call.body
    if body["kind"] == "room" and "room" not in body:
        raise ApiError(422, "invalid", "a room ban names the room", "room")
    bans = call.server.bans
    try:
        ban = await bans.ban(
            body["kind"],
            body["target"],
            until=_until(body),
            reason=body.get("reason", ""),
            by=call.key.name,
            room=body.get("room"),
        )
    except BanError as exc:
        if exc.code == "no-room":
            raise not_found(str(exc)) from None
        field = {"bad-until": "until", "bad-room": "room"}.get(exc.code, "target")
        raise ApiError(422, exc.code, str(exc), field) from None
    except MucError as exc:
        raise muc_refused(exc) from None
    call.audit.append(f"banned {ban.kind} {ban.key} until {ban.public()['until']}")
    return ban.public()


@route("GET", "/bans/{id}", "read", "One ban", BAN, errors=(404,))
async def _get_ban(call: Call) -> Any:
    ban = call.server.bans.get(call.path["id"])
    if ban is None or not ban.active(time.time()):
        raise not_found("no such ban (lifted or expired)")
    return ban.public()


@route("DELETE", "/bans/{id}", "moderation", "Lift a ban", BAN, errors=(404,))
async def _lift_ban(call: Call) -> Any:
    ban = await call.server.bans.lift(call.path["id"])
    if ban is None:
        raise not_found("no such ban (lifted or expired)")
    call.audit.append(f"lifted the {ban.kind} ban of {ban.key}")
    return ban.public()
