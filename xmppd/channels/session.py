"""One JSON-channel client: an XMPP resource without XML, rendered to Phoenix channel events.

The session binds nothing in `host.sessions`; it is a pubsub subscriber of its own session
topic (`session:<bare>/web-<random>`), so whatever the server routes to that full JID reaches
`deliver()`, like for an XML session. Topics a client can join (docs/channels.md):

* `room:<room JID>`: become an occupant through the MUC Python API (`service.join`); the room's
  groupchat messages come as `new_msg`, its occupants as `presence_state` / `presence_diff`
  from the Tracker (this session also subscribes to the room topic, where the Tracker's diffs
  are broadcast). `new_msg` pushed by the client is sent as a groupchat message.
* `user:<own bare JID>`: 1:1 chat. Joining makes the session an available resource (tracked
  like an XML session's presence, priority 0) so messages to the bare JID reach it; `new_msg`
  with `to` sends a chat message.

A session lives no longer than its token: the transport ends it at `deadline` (the token's
`exp`), and `end()` ends it at once (the token was revoked, xmppd/tokens.py).
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import TYPE_CHECKING, Any

import trio

from pubsub import Mailbox, PresenceDiff
from pubsub.topics import room_topic, session_topic

from ..protocol import namespaces as ns
from ..protocol.channels import PHOENIX, ChannelProtocol, Join, Leave, Push, Refresh
from ..protocol.jid import JID, JIDError
from ..protocol.stanza import Element, child_text, error_reply, get_child, local_name, make, sub

if TYPE_CHECKING:
    from auth.tokens import Claims

    from ..server import Server

log = logging.getLogger("xmppd.channels")
MAX_BODY = 16 * 1024
_DELAY = "{urn:xmpp:delay}delay"


class ChannelError(Exception):
    """A refused request: `reason` goes back in the phx_reply error response."""


class ChannelSession:
    def __init__(self, server: Server, claims: Claims, peer: str, limits: dict[str, Any]) -> None:
        bare = JID.parse(claims.jid)
        host = server.hosts.get(bare.domain)
        if host is None:
            raise ChannelError(f"{bare.domain} is not served here")
        self.server, self.host, self.claims, self.peer = server, host, claims, peer
        self.jid = bare.with_resource(f"web-{secrets.token_hex(6)}")
        self.full, self.bare = str(self.jid), str(bare)
        self.id = f"channels-{secrets.token_hex(3)}"
        self.protocol = ChannelProtocol(max_channels=limits.get("max_channels", 100))
        self.outbox = Mailbox(
            max_items=limits["queued_stanzas"],
            max_bytes=limits["queued_bytes"],
            on_overflow=self._overflowed,
        )
        self.rooms: dict[str, Any] = {}  # topic -> MucService
        self._held: dict[str, list[dict]] = {}  # room history arriving before the join reply
        self.user_joined = False
        self.closed = False
        # Token lifetime: the transport ends the session at `deadline` (trio clock), or when
        # end() is called: the WebSocket's `lifetime` scope is cancelled, or the outbox closes.
        self.deadline = server.tokens.deadline(claims)
        self.end_reason: str | None = None
        self.lifetime: trio.CancelScope | None = None
        server.tokens.sessions.add(self)
        self.server.pubsub.subscribe(session_topic(self.full), self)
        log.info("%s opened for %s (app %s) from %s", self.id, self.full, claims.app, peer)

    def _overflowed(self, _mailbox: Mailbox) -> None:
        log.warning("%s: the client reads too slowly; closing", self.id)
        self.outbox.close()

    # ---- client frames -----------------------------------------------------------------------

    async def receive(self, text: str | bytes) -> None:
        """One frame from the client (FrameError: the transport closes the socket)."""
        for event in self.protocol.receive(text):
            try:
                if isinstance(event, Join):
                    await self._join(event)
                elif isinstance(event, Refresh):
                    self._refresh(event)
                elif isinstance(event, Leave):
                    await self._leave(event.topic)
                    if event.ref is not None:
                        self.protocol.left(event)
                else:
                    await self._push(event)
                    self.protocol.reply(event.join_ref, event.ref, event.topic, "ok")
            except ChannelError as exc:
                self._refuse(event, str(exc))
        self.flush()

    def _refuse(self, event: Join | Leave | Push | Refresh, reason: str) -> None:
        if isinstance(event, Join):
            self.protocol.refuse(event, reason)
        elif isinstance(event, Push):
            self.protocol.reply(event.join_ref, event.ref, event.topic, "error", {"reason": reason})
        elif isinstance(event, Refresh):
            self.protocol.reply(None, event.ref, PHOENIX, "error", {"reason": reason})

    def _refresh(self, event: Refresh) -> None:
        """A new token for the same user and app: the session lives until its exp and may
        join what it opens; channels it no longer opens are closed."""
        from auth.tokens import TokenError

        text = event.payload.get("token")
        if not isinstance(text, str):
            raise ChannelError("token must be a string")
        try:
            claims = self.server.tokens.verify(text, peer=self.peer)
        except TokenError as exc:
            raise ChannelError(f"token refused: {exc}") from None
        if (claims.jid, claims.app) != (self.claims.jid, self.claims.app):
            raise ChannelError("token refused: it is for another user or app")
        self.claims = claims
        self.deadline = self.server.tokens.deadline(claims)
        if self.lifetime is not None:
            self.lifetime.deadline = self.deadline
        for topic in [t for t in self.protocol.joined if not claims.allows(t)]:
            self.protocol.close(topic)
            self.server.nursery_soon(self._leave, topic)
        self.protocol.reply(None, event.ref, PHOENIX, "ok", {"exp": claims.exp})
        log.info("%s: token refreshed, now ends in %d s", self.id, claims.exp - time.time())

    async def _join(self, join: Join) -> None:
        kind, _, ident = join.topic.partition(":")
        if not self.claims.allows(join.topic):
            raise ChannelError("this token does not open that topic")
        if kind == "room":
            await self._join_room(join, ident)
        elif kind == "user" and ident == self.bare:
            self._join_user(join)
        else:
            raise ChannelError("unmatched topic")

    async def _join_room(self, join: Join, ident: str) -> None:
        from ..muc.room import MucError

        room_jid, service = self._room_service(ident)
        nick = join.payload.get("nick") or self.claims.name or JID.parse(self.bare).local
        password = join.payload.get("password")
        if not isinstance(nick, str) or (password is not None and not isinstance(password, str)):
            raise ChannelError("nick and password are strings")
        topic = join.topic
        self.rooms[topic] = service  # before joining: the welcome stanzas are ours
        self._held[topic] = []
        try:
            if password is None:
                await service.join(room_jid, self.jid, nick)
            else:
                await service.join(room_jid, self.jid, nick, password=password)
        except (MucError, JIDError) as exc:
            del self.rooms[topic]
            raise ChannelError(getattr(exc, "condition", "jid-malformed")) from None
        finally:
            held = self._held.pop(topic)
        self.protocol.accept(join, {"nick": nick})
        self.server.pubsub.subscribe(room_topic(room_jid), self)
        state = self.server.tracker.list(room_topic(room_jid))
        self.protocol.push(topic, "presence_state", self._presences(topic, state))
        for payload in held:  # history, after the reply and the state, as clients expect
            self.protocol.push(topic, "new_msg", payload)

    def _room_service(self, ident: str) -> tuple[str, Any]:
        try:
            room = JID.parse(ident)
        except JIDError:
            raise ChannelError("not a room JID") from None
        if room.local is None or room.resource is not None:
            raise ChannelError("not a room JID")
        for host in self.server.hosts.values():
            service = host.services.get("muc")
            if service is not None and service.domain == room.domain:
                return str(room), service
        raise ChannelError("no MUC service at that domain")

    def _join_user(self, join: Join) -> None:
        if not self.user_joined:
            meta = {"resource": self.jid.resource, "priority": 0, "channels": True}
            self.server.tracker.track(self, self.host.presence_topic, self.bare, meta)
            self.user_joined = True
        self.protocol.accept(join, {"jid": self.full})

    async def _leave(self, topic: str) -> None:
        service = self.rooms.pop(topic, None)
        if service is not None:
            room_jid = topic.partition(":")[2]
            self.server.pubsub.unsubscribe(topic, self)
            room = service.rooms.get(JID.parse(room_jid).local or "")
            if room is not None:
                await room.leave(self.full)
        elif topic == f"user:{self.bare}" and self.user_joined:
            self.server.tracker.untrack(self, self.host.presence_topic, self.bare)
            self.user_joined = False

    async def _push(self, push: Push) -> None:
        if push.event != "new_msg":
            raise ChannelError(f"unknown event {push.event!r}")
        body = push.payload.get("body")
        if not isinstance(body, str) or not body or len(body) > MAX_BODY:
            raise ChannelError(f"body must be a non-empty string of at most {MAX_BODY} characters")
        service = self.rooms.get(push.topic)
        if service is not None:
            await self._send_groupchat(service, push.topic, body)
        else:
            await self._send_chat(push.payload, body)

    async def _send_groupchat(self, service: Any, topic: str, body: str) -> None:
        from ..muc import messages
        from ..muc.room import MucError

        room = service.rooms.get(JID.parse(topic.partition(":")[2]).local or "")
        if room is None:
            raise ChannelError("item-not-found")
        try:
            await messages.send(room, self.full, body)
        except MucError as exc:
            raise ChannelError(exc.condition) from None

    async def _send_chat(self, payload: dict[str, Any], body: str) -> None:
        try:
            to = JID.parse(str(payload.get("to", "")))
        except JIDError:
            raise ChannelError("to must be a JID") from None
        message = make("message", {"type": "chat", "to": str(to), "from": self.full})
        message.set("id", secrets.token_hex(8))
        sub(message, ns.CLIENT, "body", body)
        await self.host.route(None, message)

    # ---- what the server routes to us --------------------------------------------------------

    def deliver(self, topic: str, message: object) -> None:
        """pubsub Subscriber: stanzas for our full JID, Tracker diffs of our rooms."""
        if self.closed:
            return
        if isinstance(message, PresenceDiff):
            if topic in self.rooms:
                payload = {
                    "joins": self._presences(topic, message.joins),
                    "leaves": self._presences(topic, message.leaves),
                }
                self.protocol.push(topic, "presence_diff", payload)
        elif isinstance(message, Element) and isinstance(message.tag, str):
            self._stanza(message)
        self.flush()

    def _stanza(self, stanza: Element) -> None:
        kind, sender = local_name(stanza), stanza.get("from", "")
        room_topic_ = room_topic(sender.partition("/")[0])
        if kind == "message":
            self._message(stanza, sender, room_topic_)
        elif kind == "presence" and room_topic_ in self.rooms:
            self._room_presence(stanza, room_topic_)
        elif kind == "iq" and stanza.get("type") in ("get", "set"):
            reply = error_reply(stanza, "service-unavailable", "a JSON channel client")
            self.server.nursery_soon(self.host.route, None, reply)  # deliver() must not block

    def _message(self, stanza: Element, sender: str, topic: str) -> None:
        body = child_text(stanza, ns.CLIENT, "body")
        if body is None or stanza.get("type") == "error":
            return
        if stanza.get("type") == "groupchat" and topic in self.rooms:
            payload: dict[str, Any] = {"from": sender.partition("/")[2], "body": body}
            sid = get_child(stanza, ns.SID, "stanza-id")
            if sid is not None:
                payload["id"] = sid.get("id")
            delay = stanza.find(_DELAY)
            if delay is not None:
                payload["stamp"] = delay.get("stamp")
            if topic in self._held:
                self._held[topic].append(payload)
            else:
                self.protocol.push(topic, "new_msg", payload)
        elif self.user_joined or topic in self.rooms:  # 1:1 (or a private message in a room)
            payload = {"from": sender, "body": body, "type": stanza.get("type", "normal")}
            self.protocol.push(f"user:{self.bare}", "new_msg", payload)

    def _room_presence(self, stanza: Element, topic: str) -> None:
        """Only our own removal matters here (kick, ban, room destroyed): close the channel."""
        x = get_child(stanza, ns.MUC_USER, "x")
        if stanza.get("type") != "unavailable" or x is None:
            return
        codes = {s.get("code") for s in x.findall(f"{{{ns.MUC_USER}}}status")}
        if "110" in codes and "303" not in codes:
            self.rooms.pop(topic, None)
            self.server.pubsub.unsubscribe(topic, self)
            self.protocol.close(topic)

    def _presences(self, topic: str, entries: dict[str, list[dict]]) -> dict[str, Any]:
        """Tracker entries as Phoenix.Presence renders them: key -> {"metas": [...]}. Real JIDs
        stay hidden unless the room shows them to us (non-anonymous, or we moderate)."""
        service = self.rooms.get(topic)
        room = service.rooms.get(JID.parse(topic[5:]).local or "") if service else None
        me = room.occupant_of(self.full) if room is not None else None
        show = room is not None and me is not None and room.sees_jids(me)
        out: dict[str, Any] = {}
        for key, metas in entries.items():
            clean = [{k: v for k, v in m.items() if show or k != "jid"} for m in metas]
            out[key] = {"metas": clean}
        return out

    # ---- output and end ----------------------------------------------------------------------

    def end(self, reason: str) -> None:
        """The token expired or was revoked: the transport closes the client with `reason`."""
        if self.end_reason is not None or self.closed:
            return
        self.end_reason = reason
        log.info("%s (%s): %s", self.id, self.full, reason)
        if self.lifetime is not None:
            self.lifetime.cancel()
        else:
            self.outbox.close()  # long-poll: a held poll wakes up and answers

    def flush(self) -> None:
        for text in self.protocol.frames_to_send():
            if not self.outbox.put(text, len(text)):
                return

    async def close(self) -> None:
        """The client went away: leave every room, stop being available."""
        if self.closed:
            return
        self.closed = True
        self.server.tokens.sessions.discard(self)
        for topic in list(self.rooms):
            try:
                await self._leave(topic)
            except Exception:
                log.exception("%s: leaving %s failed", self.id, topic)
        if self.user_joined:
            self.server.tracker.untrack(self, self.host.presence_topic, self.bare)
        self.server.pubsub.unsubscribe_all(self)
        self.outbox.close()
        log.info("%s closed (%s)", self.id, self.full)
