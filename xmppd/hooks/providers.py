"""The providers: each turns a matched event into one request in its service's documented wire
format and reports success or a failure. They never decide what to deliver (model.py does).

* `webhook`: POST of the versioned JSON document `xmppd.hook/1` (docs/hooks.md), signed with
  `X-Xmppd-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>` and
  `X-Xmppd-Timestamp` (seconds) so that a receiver refuses replays.
* `slack`: Slack incoming webhook `{"text": ...}` (Mattermost and Rocket.Chat take it too).
* `matrix`: client-server API `PUT /_matrix/client/v3/rooms/{roomId}/send/m.room.message/
  {txnId}` with `Authorization: Bearer <access_token>`; txnId is the idempotency key, so a
  retry is deduplicated by the homeserver.
* `telegram`: Bot API `POST /bot<token>/sendMessage` `{"chat_id", "text"}`.
* `xmpp`: a message into a room of this server or to an account, from the server (no HTTP).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

if TYPE_CHECKING:
    import httpx

    from .model import Event, Subscription

SCHEMA = "xmppd.hook/1"
LOOPBACK_NAMES = ("localhost",)


class DeliveryFailed(Exception):
    """The receiver did not take it; `retry` False for answers that will never change."""

    def __init__(self, message: str, retry: bool = True) -> None:
        super().__init__(message)
        self.retry = retry


def check_target(provider: str, target: dict[str, Any]) -> None:
    from .model import SubscriptionError

    needs = {
        "webhook": ("url",),
        "slack": ("url",),
        "matrix": ("homeserver", "room_id", "access_token"),
        "telegram": ("chat_id", "token"),
        "xmpp": ("jid",),
    }[provider]
    for name in needs:
        if not isinstance(target.get(name), str | int) or target.get(name) in ("", None):
            raise SubscriptionError("target", f"a {provider} target needs {', '.join(needs)}")
    for name in ("url", "homeserver", "api_base"):
        if name in target:
            _check_url(str(target[name]))


def _check_url(url: str) -> None:
    """https anywhere; plain http only to this machine (a local relay, the tests)."""
    from .model import SubscriptionError

    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname and _loopback(parts.hostname):
        return
    raise SubscriptionError("target", f"{url!r}: use https (http only to a loopback address)")


def _loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def summary(event: Event) -> str:
    """One readable line for chat providers."""
    where = f"[{event.room}] " if event.room else ""
    who = event.nick or event.sender or "xmppd"
    if event.type == "message":
        return f"{where}{who}: {event.text}"
    kind = f"{event.type} ({event.removal})" if event.removal else event.type
    return f"{where}{kind}: {who}"


def webhook_body(sub: Subscription, event: Event, key: str) -> bytes:
    document = {"schema": SCHEMA, "id": key, "subscription": sub.id, "event": event.public()}
    return json.dumps(document, separators=(",", ":")).encode()


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


async def deliver(
    client: httpx.AsyncClient, server: Any, sub: Subscription, event: Event, key: str
) -> None:
    target = sub.target
    if sub.provider == "xmpp":
        await _xmpp(server, target["jid"], summary(event))
        return
    headers = {"Content-Type": "application/json", "Idempotency-Key": key}
    method = "POST"
    if sub.provider == "webhook":
        body = webhook_body(sub, event, key)
        stamp = str(int(time.time()))
        headers["X-Xmppd-Timestamp"] = stamp
        headers["X-Xmppd-Signature"] = sign(sub.secret, stamp, body)
        headers["X-Xmppd-Event"] = event.type
        url = target["url"]
    elif sub.provider == "slack":
        body = json.dumps({"text": summary(event)}).encode()
        url = target["url"]
    elif sub.provider == "matrix":
        body = json.dumps({"msgtype": "m.text", "body": summary(event)}).encode()
        room, txn = quote(str(target["room_id"]), safe=""), quote(key, safe="")
        url = f"{target['homeserver'].rstrip('/')}/_matrix/client/v3/rooms/{room}/send/"
        url += f"m.room.message/{txn}"
        headers["Authorization"] = f"Bearer {target['access_token']}"
        method = "PUT"
    else:  # telegram
        body = json.dumps({"chat_id": target["chat_id"], "text": summary(event)}).encode()
        base = str(target.get("api_base", "https://api.telegram.org")).rstrip("/")
        url = f"{base}/bot{target['token']}/sendMessage"
    answer = await client.request(method, url, content=body, headers=headers)
    if answer.status_code >= 300:
        # 4xx but 408/429 will answer the same next time: no point retrying those.
        permanent = 400 <= answer.status_code < 500 and answer.status_code not in (408, 429)
        raise DeliveryFailed(f"{url.split('?')[0]} answered {answer.status_code}", not permanent)


async def _xmpp(server: Any, jid: str, text: str) -> None:
    from ..protocol import namespaces as ns
    from ..protocol.stanza import make, sub

    domain = jid.partition("@")[2].partition("/")[0]
    for host in server.hosts.values():
        service = host.services.get("muc")
        if service is not None and service.domain == domain:
            room = service.rooms.get(jid.partition("@")[0])
            if room is None:
                raise DeliveryFailed(f"no room {jid}", retry=False)
            from ..muc.messages import from_room

            out = make("message", {"type": "groupchat"})
            sub(out, ns.CLIENT, "body", text)
            await from_room(room, out)
            return
    host = next(iter(server.hosts.values()))
    out = make("message", {"from": host.domain, "to": jid, "type": "chat"})
    sub(out, ns.CLIENT, "body", text)
    await host.route(None, out)
