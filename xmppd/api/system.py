"""Posting as the system (to a user, to every online user) and the server's statistics.

A system post is a message from the server's domain (to users) or the room's bare JID (rooms;
rooms.py), neither of which a client can send as. A custom event travels as a XEP-0335 JSON
container `<json xmlns="urn:xmpp:json:0">{"ev": ..., "data": ...}</json>`, with the `body` as
the readable fallback for XMPP clients; JSON-channel clients get it as the event `ev` with
`data` as the payload (channels/render.py `system_event`).
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from .. import admin
from ..protocol import namespaces as ns
from ..protocol.stanza import Element, make, sub
from .routes import ApiError, Call, body_obj, obj, route
from .schema import BODY, EVENT_NAME, ref
from .users import existing

if TYPE_CHECKING:
    from ..router import StanzaEvent
    from ..server import Server

# The JSON protocol's own events (docs/channels.md): a custom event may not pose as one.
RESERVED = {
    "new_msg", "presence_state", "presence_diff", "retract", "subject", "chat_state", "marker",
    "synced", "unread", "invite", "roster", "roster_push", "subscribe_request", "presence",
}  # fmt: skip


def system_message(out: Element, post: dict[str, Any]) -> Element:
    """Fill a message with a post's body and/or JSON event; 422 when neither is given."""
    if "body" not in post and "ev" not in post:
        raise ApiError(422, "invalid", "give a body, an event (ev), or both", "body")
    ev = post.get("ev")
    if ev is not None and (ev in RESERVED or ev.startswith("phx_")):
        raise ApiError(422, "reserved-event", f"{ev!r} is an event of the JSON protocol", "ev")
    if "data" in post and ev is None:
        raise ApiError(422, "invalid", "data goes with an event name (ev)", "ev")
    if "body" in post:
        sub(out, ns.CLIENT, "body", post["body"])
    if ev is not None:
        container = sub(out, ns.JSON, "json")
        container.text = json.dumps({"ev": ev, "data": post.get("data")})
    return out


@route(
    "POST",
    "/users/{jid}/post",
    "post",
    "Send a message from the server to an account: a text, a custom event, or both",
    obj(["jid"], jid={"type": "string"}),
    body=ref("Post"),
    errors=(404,),
)
async def _post_user(call: Call) -> Any:
    host, bare = await existing(call)
    out = system_message(
        make("message", {"from": host.domain, "to": bare, "type": "chat"}), call.body
    )
    await host.route(None, out)
    call.audit.append(f"posted to {bare} ({call.body.get('ev') or 'text'})")
    return {"jid": bare}


@route(
    "POST",
    "/announce",
    "post",
    "Announce to every online user (XEP-0133 'announce': a headline from the server)",
    obj(["sent"], sent={"type": "integer", "description": "sessions it was sent to"}),
    body=body_obj(subject={"type": "string", "maxLength": 200}, body=BODY, ev=EVENT_NAME, data={}),
)
async def _announce(call: Call) -> Any:
    post = {k: v for k, v in call.body.items() if k != "subject"}
    sent = 0
    for host in call.server.hosts.values():
        for bare, resources in list(host.sessions.items()):
            for resource in list(resources):
                out = make("message", {"from": host.domain, "to": f"{bare}/{resource}"})
                out.set("type", "headline")
                if call.body.get("subject"):
                    sub(out, ns.CLIENT, "subject", call.body["subject"])
                await host.route(None, system_message(out, post))
                sent += 1
    call.audit.append(f"announced to {sent} sessions")
    return {"sent": sent}


# ---- statistics -------------------------------------------------------------------------------


class MessageCounter:
    """Messages sent by our clients, in one-second buckets over the last minute."""

    def __init__(self) -> None:
        self.buckets: deque[list[int]] = deque(maxlen=61)  # [second, count]

    def install(self, server: Server) -> None:
        for host in server.hosts.values():
            for scope in ("bare", "full", "host"):
                host.events.hook(f"pre-message/{scope}", self._count, 0)

    async def _count(self, event: StanzaEvent) -> bool:
        self.add(int(time.monotonic()))
        return False

    def add(self, second: int) -> None:
        if self.buckets and self.buckets[-1][0] == second:
            self.buckets[-1][1] += 1
        else:
            self.buckets.append([second, 1])

    def last_minute(self) -> int:
        now = int(time.monotonic())
        return sum(c for s, c in self.buckets if now - 60 < s <= now)


@route(
    "GET",
    "/stats",
    "read",
    "Online sessions by transport, accounts, rooms, messages per minute, storage size",
    obj(
        ["sessions", "accounts", "accounts_online", "rooms", "occupants", "messages_per_minute"],
        sessions=obj(
            ["total", "by_transport"],
            total={"type": "integer"},
            by_transport={"type": "object", "description": "transport name -> sessions"},
        ),
        accounts={"type": "integer"},
        accounts_online={"type": "integer"},
        rooms={"type": "integer"},
        occupants={"type": "integer"},
        messages_per_minute={"type": "integer", "description": "sent by clients, last 60 s"},
        bans={"type": "integer"},
        storage_bytes={"type": ["integer", "null"], "description": "database size"},
        uptime={"type": "number", "description": "seconds"},
    ),
)
async def _stats(call: Call) -> Any:
    server = call.server
    by_transport: dict[str, int] = {}
    sessions = admin.list_sessions(server)
    for session in sessions:
        by_transport[session["transport"]] = by_transport.get(session["transport"], 0) + 1
    accounts = sum([len(await h.auth.list_users()) for h in server.hosts.values()])
    services = [h.services.get("muc") for h in server.hosts.values()]
    rooms = [r for s in services if s is not None for r in s.rooms.values()]
    status = admin.status(server)
    return {
        "sessions": {"total": len(sessions), "by_transport": by_transport},
        "accounts": accounts,
        "accounts_online": status["accounts_online"],
        "rooms": len(rooms),
        "occupants": sum(len(r.occupants) for r in rooms),
        "messages_per_minute": call.api.counter.last_minute(),
        "bans": len(server.bans.list()),
        "storage_bytes": await storage_bytes(server),
        "uptime": status["uptime"],
    }


async def storage_bytes(server: Server) -> int | None:
    config = server.config
    if config.storage["driver"] == "sqlite":
        path = config.database_path
        files = [path, path.with_name(path.name + "-wal")]
        return sum(os.path.getsize(p) for p in files if p.exists())
    db: Any = server.db
    try:
        rows = await db.run(
            "size", lambda ex: ex.rows("SELECT pg_database_size(current_database())")
        )
    except Exception:  # noqa: BLE001 - a statistic is not worth failing the call for
        return None
    return int(rows[0][0])
