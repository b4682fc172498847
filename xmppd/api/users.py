"""`/users`: accounts and their sessions, through the same functions as the admin socket
(xmppd/admin.py) and the ban service (xmppd/bans.py)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .. import admin
from ..admin import AdminError
from ..protocol.jid import JID, JIDError
from .routes import LIMIT, ApiError, Call, body_obj, not_found, obj, route
from .schema import TEXT, ref

if TYPE_CHECKING:
    from ..host import Host

JID_PARAM = {"type": "string"}
PASSWORD = {"type": "string", "minLength": 1, "maxLength": 1024}
USER = ref("User")
ENDED = obj(["jid", "sessions_ended"], jid={"type": "string"}, sessions_ended={"type": "integer"})
# AdminError codes as HTTP answers.
STATUS = {"exists": 409, "no-account": 404, "not-served": 404, "no-session": 404}


def refused(exc: AdminError, field: str | None = None) -> ApiError:
    status = STATUS.get(exc.code, 422)
    return ApiError(status, exc.code, exc.message, field if status == 422 else None)


def account(call: Call, jid: str | None = None) -> tuple[Host, str]:
    """The host and bare JID of the `{jid}` path parameter; 422 malformed, 404 not served."""
    text = jid if jid is not None else call.path["jid"]
    try:
        parsed = JID.parse(text)
    except JIDError as exc:
        raise ApiError(422, "bad-jid", f"invalid JID: {exc}", "jid") from None
    if parsed.local is None or parsed.resource is not None:
        raise ApiError(422, "bad-jid", "an account JID is user@domain", "jid")
    host = call.server.hosts.get(parsed.domain)
    if host is None:
        raise not_found(f"{parsed.domain} is not served here")
    return host, str(parsed)


async def existing(call: Call, jid: str | None = None) -> tuple[Host, str]:
    host, bare = account(call, jid)
    if not await host.auth.user_exists(bare.partition("@")[0]):
        raise not_found(f"no account {bare}")
    return host, bare


def describe(call: Call, host: Host, bare: str) -> dict[str, Any]:
    bans = call.server.bans
    ban = bans.bans.get(("account", bare))
    return {
        "jid": bare,
        "role": call.server.roles.role_of(bare),
        "disabled": bare in bans.disabled,
        "sessions": len(host.resources_of(bare)),
        "ban": ban.public() if ban is not None and ban.active(time.time()) else None,
    }


@route(
    "GET",
    "/users",
    "read",
    "List or search accounts, paged by JID",
    obj(
        ["users", "next"], users={"type": "array", "items": USER}, next={"type": ["string", "null"]}
    ),
    query={
        "q": {"type": "string", "maxLength": 200, "description": "part of the JID"},
        "after": {"type": "string", "maxLength": 300, "description": "the `next` of a page"},
        "limit": LIMIT,
    },
)
async def _list_users(call: Call) -> Any:
    q, after, limit = call.query.get("q", "").lower(), call.query.get("after"), call.query["limit"]
    found = []
    for domain, host in sorted(call.server.hosts.items()):
        for local in await host.auth.list_users():
            bare = f"{local}@{domain}"
            if q in bare.lower() and (after is None or bare > after):
                found.append((bare, host))
    found.sort(key=lambda pair: pair[0])
    page = found[:limit]
    users = [describe(call, host, bare) for bare, host in page]
    return {"users": users, "next": page[-1][0] if len(found) > limit else None}


@route(
    "POST",
    "/users",
    "users",
    "Create an account",
    USER,
    status=201,
    body=body_obj(
        ["jid", "password"], jid={"type": "string", "maxLength": 3071}, password=PASSWORD
    ),
    errors=(404, 409),
)
async def _create_user(call: Call) -> Any:
    host, bare = account(call, call.body["jid"])
    try:
        await admin.add_user(call.server, bare, call.body["password"])
    except AdminError as exc:
        raise refused(exc, "password" if exc.code == "bad-password" else "jid") from None
    call.audit.append(f"created {bare}")
    return describe(call, host, bare)


@route("GET", "/users/{jid}", "read", "One account", USER, errors=(404,))
async def _get_user(call: Call) -> Any:
    host, bare = await existing(call)
    return describe(call, host, bare)


@route(
    "PUT",
    "/users/{jid}/password",
    "users",
    "Change a password (ends the account's sessions, voids one-time passwords)",
    ENDED,
    body=body_obj(["password"], password=PASSWORD),
    errors=(404,),
)
async def _set_password(call: Call) -> Any:
    _host, bare = await existing(call)
    try:
        result = await admin.set_password(call.server, bare, call.body["password"])
    except AdminError as exc:
        raise refused(exc, "password") from None
    call.audit.append(f"password of {bare} changed")
    return result


@route(
    "POST",
    "/users/{jid}/disable",
    "users",
    "Disable an account: its sessions end, logins are refused until it is enabled",
    ENDED,
    body=body_obj(reason=TEXT),
    errors=(404,),
)
async def _disable_user(call: Call) -> Any:
    _host, bare = await existing(call)
    reason = call.body.get("reason", "")
    ended = await call.server.bans.disable(bare, reason=reason, by=call.key.name)
    call.audit.append(f"disabled {bare} ({reason})")
    return {"jid": bare, "sessions_ended": ended}


@route("POST", "/users/{jid}/enable", "users", "Enable a disabled account", USER, errors=(404,))
async def _enable_user(call: Call) -> Any:
    host, bare = await existing(call)
    await call.server.bans.enable(bare)
    call.audit.append(f"enabled {bare}")
    return describe(call, host, bare)


@route(
    "DELETE",
    "/users/{jid}",
    "users",
    "Delete an account and everything it had (docs/admin.md)",
    ENDED,
    errors=(404,),
)
async def _delete_user(call: Call) -> Any:
    _host, bare = account(call)
    try:
        result = await admin.delete_user(call.server, bare)
    except AdminError as exc:
        raise refused(exc) from None
    call.audit.append(f"deleted {bare}")
    return result


@route(
    "GET",
    "/users/{jid}/sessions",
    "read",
    "The account's sessions",
    obj(["sessions"], sessions={"type": "array", "items": ref("Session")}),
    errors=(404,),
)
async def _user_sessions(call: Call) -> Any:
    _host, bare = account(call)
    return {"sessions": admin.list_sessions(call.server, bare)}


@route(
    "POST",
    "/users/{jid}/kick",
    "users",
    "End the account's sessions (or one, by resource) with policy-violation",
    ENDED,
    body=body_obj(text=TEXT, resource={"type": "string", "minLength": 1, "maxLength": 1023}),
    errors=(404,),
)
async def _kick_user(call: Call) -> Any:
    _host, bare = account(call)
    resource = call.body.get("resource")
    target = f"{bare}/{resource}" if resource else bare
    try:
        ended = await admin.kick(call.server, target, call.body.get("text", ""))
    except AdminError as exc:
        raise refused(exc, "resource") from None
    call.audit.append(f"kicked {target}")
    return {"jid": bare, "sessions_ended": ended}
