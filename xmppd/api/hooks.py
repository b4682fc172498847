"""`/subscriptions`, `/deliveries` and `/incoming-hooks`: event subscriptions and their
delivery (xmppd/hooks/, docs/hooks.md) through the admin API."""

from __future__ import annotations

from typing import Any

from ..hooks.incoming import find_room
from ..hooks.incoming import public as public_hook
from ..hooks.model import EVENT_TYPES, MODES, PROVIDERS, SOURCES, SubscriptionError
from .routes import LIMIT, ApiError, Call, body_obj, not_found, obj, route
from .schema import COMPONENTS, JID_PATTERN, ref

STRINGS = {"type": "array", "maxItems": 50, "items": {"type": "string", "minLength": 1,
                                                      "maxLength": 512}}  # fmt: skip
JID = {"type": "string", "pattern": JID_PATTERN, "maxLength": 3071}
COMPONENTS["Subscription"] = obj(
    ["id", "source", "events", "provider", "target", "mode", "owner", "secret", "created"],
    id={"type": "string"},
    source={"type": "string", "enum": list(SOURCES)},
    events={"type": "array", "items": {"type": "string", "enum": list(EVENT_TYPES)}},
    provider={"type": "string", "enum": list(PROVIDERS)},
    target={"type": "object", "description": "provider settings; tokens shown as ***"},
    room={"type": ["string", "null"]},
    user={"type": ["string", "null"]},
    keywords={"type": "array", "items": {"type": "string"}},
    patterns={"type": "array", "items": {"type": "string"}},
    tags={"type": "array", "items": {"type": "string"}},
    senders={"type": "array", "items": {"type": "string"}},
    mode={"type": "string", "enum": list(MODES)},
    owner={"type": "string"},
    secret={"type": "string", "description": "HMAC-SHA256 key of the webhook signature"},
    created={"type": "number", "description": "epoch seconds"},
)
COMPONENTS["Delivery"] = obj(
    ["key", "subscription", "event", "attempts", "last_error"],
    key={"type": "string", "description": "the idempotency key: <event id>:<subscription id>"},
    subscription={"type": "string"},
    event={"type": "object"},
    attempts={"type": "integer"},
    next_at={"type": "number"},
    last_error={"type": ["string", "null"]},
    created={"type": "number"},
    died={"type": "number"},
)
COMPONENTS["IncomingHook"] = obj(
    ["id", "room", "user", "name", "owner", "created"],
    id={"type": "string"},
    room={"type": ["string", "null"]},
    user={"type": ["string", "null"]},
    name={"type": "string"},
    owner={"type": "string"},
    created={"type": "number"},
    secret={"type": "string", "description": "shown once, at creation"},
    path={"type": "string", "description": "POST here: /hooks/<id>/<secret>"},
)
SUB, DELIVERY, HOOK = ref("Subscription"), ref("Delivery"), ref("IncomingHook")
PAGE = {"after": {"type": "string", "maxLength": 300, "description": "the `next` of a page"},
        "limit": LIMIT}  # fmt: skip


def _page(items: list[Any], limit: int, key: str) -> dict[str, Any]:
    page = items[:limit]
    return {"items": page, "next": page[-1][key] if len(items) > limit else None}


def _listing(item: Any) -> Any:
    return obj(["items", "next"], items={"type": "array", "items": item},
               next={"type": ["string", "null"]})  # fmt: skip


@route(
    "GET",
    "/subscriptions",
    "read",
    "Event subscriptions, paged by id",
    _listing(SUB),
    query={
        **PAGE,
        "room": {"type": "string", "maxLength": 3071},
        "provider": {"type": "string", "enum": list(PROVIDERS)},
    },  # fmt: skip
)
async def _list_subscriptions(call: Call) -> Any:
    q = call.query
    subs = call.server.hooks.page(
        q.get("after"), q["limit"] + 1, room=q.get("room"), provider=q.get("provider")
    )
    return _page([s.public() for s in subs], q["limit"], "id")


@route(
    "POST",
    "/subscriptions",
    "hooks",
    "Subscribe a provider's target to events of a room, all rooms, an account's 1:1 traffic "
    "with the bot, or account events, with an optional filter",
    SUB,
    status=201,
    body=body_obj(
        ["source", "events", "provider", "target"],
        source={"type": "string", "enum": list(SOURCES)},
        events={
            "type": "array",
            "maxItems": len(EVENT_TYPES),
            "items": {"type": "string", "enum": list(EVENT_TYPES)},
        },
        provider={"type": "string", "enum": list(PROVIDERS)},
        target={
            "type": "object",
            "additionalProperties": {"type": ["string", "integer"], "maxLength": 2048},
        },
        room=JID,
        user=JID,
        keywords=STRINGS,
        patterns=STRINGS,
        tags=STRINGS,
        senders=STRINGS,
        mode={"type": "string", "enum": list(MODES)},
    ),
)
async def _create_subscription(call: Call) -> Any:
    try:
        sub = await call.server.hooks.create(dict(call.body), call.key.name)
    except SubscriptionError as exc:
        raise ApiError(422, "invalid", str(exc), exc.field) from None
    call.audit.append(f"subscribed {sub.id}: {sub.source} {sub.room or ''} -> {sub.provider}")
    return sub.public()


@route("GET", "/subscriptions/{id}", "read", "One subscription", SUB, errors=(404,))
async def _get_subscription(call: Call) -> Any:
    sub = call.server.hooks.matcher.subs.get(call.path["id"])
    if sub is None:
        raise not_found("no such subscription")
    return sub.public()


@route("DELETE", "/subscriptions/{id}", "hooks", "Unsubscribe", SUB, errors=(404,))
async def _delete_subscription(call: Call) -> Any:
    sub = await call.server.hooks.delete(call.path["id"])
    if sub is None:
        raise not_found("no such subscription")
    call.audit.append(f"unsubscribed {sub.id}")
    return sub.public()


@route(
    "GET",
    "/deliveries",
    "read",
    "Deliveries waiting in the outbox (pending) or given up after hooks.max_attempts (dead)",
    _listing(DELIVERY),
    query={
        **PAGE,
        "state": {"type": "string", "enum": ["pending", "dead"], "default": "pending"},
    },  # fmt: skip
)
async def _list_deliveries(call: Call) -> Any:
    outbox = call.server.hooks.outbox
    rows = outbox.dead if call.query["state"] == "dead" else outbox.pending
    after = call.query.get("after")
    items = [rows[k] for k in sorted(rows) if after is None or k > after]
    return _page(items, call.query["limit"], "key")


@route(
    "POST",
    "/deliveries/{key}/retry",
    "hooks",
    "Put a dead letter back into the outbox",
    DELIVERY,
    errors=(404,),
)
async def _retry_delivery(call: Call) -> Any:
    row = await call.server.hooks.outbox.retry_dead(call.path["key"])
    if row is None:
        raise not_found("no such dead letter")
    call.audit.append(f"retried {row['key']}")
    return row


@route(
    "DELETE",
    "/deliveries/{key}",
    "hooks",
    "Forget a dead letter",
    obj(["key"], key={"type": "string"}),
    errors=(404,),
)
async def _drop_delivery(call: Call) -> Any:
    if not await call.server.hooks.outbox.drop_dead(call.path["key"]):
        raise not_found("no such dead letter")
    call.audit.append(f"dropped dead letter {call.path['key']}")
    return {"key": call.path["key"]}


@route(
    "GET",
    "/incoming-hooks",
    "read",
    "Incoming webhooks (their secrets are not shown)",
    obj(["items"], items={"type": "array", "items": HOOK}),
)
async def _list_incoming(call: Call) -> Any:
    hooks = call.server.hooks.incoming.hooks
    return {"items": [public_hook(hooks[k]) for k in sorted(hooks)]}


@route(
    "POST",
    "/incoming-hooks",
    "hooks",
    "Make a secret URL that posts into a room or to an account as a named bot",
    HOOK,
    status=201,
    body=body_obj(
        ["name"],
        room=JID,
        user=JID,
        name={"type": "string", "pattern": r"^[^\s/@][^/@]{0,63}$"},
    ),
    errors=(404,),
)
async def _create_incoming(call: Call) -> Any:
    body = call.body
    if ("room" in body) == ("user" in body):
        raise ApiError(422, "invalid", "give a room or a user", "room")
    hooks = call.server.hooks
    if "room" in body and await find_room(call.server, body["room"]) is None:
        raise not_found("no such room")
    made = await hooks.incoming.create(
        body.get("room"), body.get("user"), body["name"], call.key.name
    )
    call.audit.append(f"made incoming hook {made['id']} -> {body.get('room') or body['user']}")
    return made


@route("DELETE", "/incoming-hooks/{id}", "hooks", "Delete an incoming webhook", HOOK, errors=(404,))
async def _delete_incoming(call: Call) -> Any:
    doc = await call.server.hooks.incoming.delete(call.path["id"])
    if doc is None:
        raise not_found("no such incoming hook")
    call.audit.append(f"deleted incoming hook {doc['id']}")
    return public_hook(doc)
