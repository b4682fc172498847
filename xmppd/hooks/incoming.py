"""Incoming webhooks: `POST /hooks/<id>/<secret>` with `{"body": ..., "ev": ..., "data": ...}`
(the admin API's post format) posts into a room or to an account as a named bot.

The secret is stored as a SHA-256 digest and compared in constant time; each hook has its own
rate (`hooks.incoming_per_minute`) and size limit (`hooks.incoming_max_bytes`). Answers are
JSON `{"error", "message"}` with 400/404/405/413/415/422/429, like the admin API's.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
import uuid
from typing import TYPE_CHECKING, Any

from ..protocol import namespaces as ns
from ..protocol.stanza import make, sub
from ..ratelimit import TokenBucket

if TYPE_CHECKING:
    from ..storage.base import MapStore

PATH_PREFIX = "/hooks/"
ALL = "all"
NAME_MAX = 64


class IncomingError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class IncomingHooks:
    def __init__(self, server: Any, store: MapStore, settings: dict[str, Any]) -> None:
        self.server = server
        self.store = store
        self.settings = settings
        self.hooks: dict[str, dict[str, Any]] = {}
        self.buckets: dict[str, TokenBucket] = {}

    async def load(self) -> None:
        self.hooks = await self.store.get_all(ALL)

    async def create(self, room: str | None, user: str | None, name: str, owner: str) -> dict:
        """A new hook; the answer holds the secret, which is never shown again."""
        hook_id, secret = secrets.token_hex(6), secrets.token_urlsafe(24)
        doc = {
            "id": hook_id, "room": room, "user": user, "name": name, "owner": owner,
            "digest": _digest(secret), "created": time.time(),
        }  # fmt: skip
        await self.store.set(ALL, hook_id, doc)
        self.hooks[hook_id] = doc
        return {**public(doc), "secret": secret, "path": f"{PATH_PREFIX}{hook_id}/{secret}"}

    async def delete(self, hook_id: str) -> dict | None:
        doc = self.hooks.pop(hook_id, None)
        if doc is not None:
            await self.store.set(ALL, hook_id, None)
        return doc

    async def handle(self, request: Any) -> tuple[int, list[tuple[str, str]], bytes]:
        try:
            result = await self._post(request)
        except IncomingError as exc:
            body = json.dumps({"error": exc.code, "message": str(exc)}).encode()
            headers = [("Content-Type", "application/json")]
            if exc.status == 429:
                headers.append(("Retry-After", "1"))
            return exc.status, headers, body
        return 200, [("Content-Type", "application/json")], json.dumps(result).encode()

    async def _post(self, request: Any) -> dict[str, Any]:
        hook_id, _, secret = request.path[len(PATH_PREFIX) :].partition("/")
        doc = self.hooks.get(hook_id)
        if doc is None or not hmac.compare_digest(doc["digest"], _digest(secret)):
            raise IncomingError(404, "not-found", "no such hook")
        if request.method != "POST":
            raise IncomingError(405, "method-not-allowed", "use POST")
        limit = self.settings["incoming_max_bytes"]
        if len(request.body) > limit:
            raise IncomingError(413, "too-big", f"the body is limited to {limit} bytes")
        kind = request.headers.get("content-type", "application/json").partition(";")[0]
        if kind.strip().lower() != "application/json":
            raise IncomingError(415, "unsupported-media-type", "send application/json")
        now = time.monotonic()
        bucket = self.buckets.get(hook_id)
        if bucket is None:
            rate = self.settings["incoming_per_minute"] / 60
            bucket = self.buckets[hook_id] = TokenBucket(rate, max(1.0, rate * 60 / 4), now)
        if not bucket.allow(now):
            raise IncomingError(429, "rate-limited", "this hook posts too often")
        try:
            post = json.loads(request.body)
        except (ValueError, UnicodeDecodeError):
            raise IncomingError(400, "bad-json", "the body is not JSON") from None
        if not isinstance(post, dict) or set(post) - {"body", "ev", "data"}:
            raise IncomingError(422, "invalid", "send an object with body, ev and/or data")
        if "body" in post and (not isinstance(post["body"], str) or not post["body"]):
            raise IncomingError(422, "invalid", "body is a non-empty string")
        return await self._deliver(doc, post)

    async def _deliver(self, doc: dict[str, Any], post: dict[str, Any]) -> dict[str, Any]:
        from ..api.routes import ApiError
        from ..api.system import system_message

        out = make("message", {})
        try:
            system_message(out, post)
        except ApiError as exc:
            raise IncomingError(422, exc.code, exc.message) from None
        if doc["room"]:
            room = await find_room(self.server, doc["room"])
            if room is None:
                raise IncomingError(404, "not-found", "the hook's room is gone")
            return {"id": await post_as_bot(room, out, doc["name"])}
        host = next(iter(self.server.hosts.values()))
        out.set("from", f"{host.domain}/{doc['name']}")
        out.set("to", doc["user"])
        out.set("type", "chat")
        await host.route(None, out)
        return {"id": None}


async def post_as_bot(room: Any, out: Any, name: str) -> str:
    """Into a room from `room@service/<name>`: archived and kept in history like a message."""
    from ..muc.room import RoomMessage

    out.set("type", "groupchat")
    out.set("from", f"{room.jid}/{name}")
    stanza_id = str(uuid.uuid4())
    out.set("id", stanza_id)
    sub(out, ns.SID, "stanza-id", id=stanza_id, by=room.jid)
    await room.service.archive_message(room, out, stanza_id)
    room.history.add(out)
    room.service.pubsub.broadcast(room.topic, RoomMessage(out))
    return stanza_id


async def find_room(server: Any, jid: str) -> Any:
    local, _, domain = jid.partition("@")
    for host in server.hosts.values():
        service = host.services.get("muc")
        if service is not None and service.domain == domain:
            await service.ready()
            return service.rooms.get(local)
    return None


def public(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: doc[k] for k in ("id", "room", "user", "name", "owner", "created")}
