"""One JSON-channel client: an XMPP resource without XML, rendered to Phoenix channel events.

The session is bound in `host.sessions` like an XML session (resource `web-<random>`), so the
modules treat it as one of the account's resources: what it sends is routed with it as the
origin (archived by MAM, copied by carbons, checked by blocking), presence it sends is broadcast
by the presence module, roster pushes and carbons reach it. It has the attributes the modules
read on a session (`available`, `priority`, `presence`, `interested`, `carbons`...).

Topics (docs/channels.md): `user:<own bare JID>` (channels/user.py: contacts, presence, 1:1
chat, unread counts, bookmarks) and `room:<room JID>` (channels/rooms.py, through the room
service's API, xmppd/muc/api.py).

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

from .. import metrics
from ..protocol.channels import PHOENIX, ChannelProtocol, Join, Leave, Push, Refresh
from ..protocol.jid import JID
from ..protocol.stanza import Element, error_reply, local_name

if TYPE_CHECKING:
    from auth.tokens import Claims

    from ..server import Server

log = logging.getLogger("xmppd.channels")
MAX_BODY = 16 * 1024
IQ_TIMEOUT = 10.0


class ChannelError(Exception):
    """A refused request: `reason` (and `text`, and any `details`) go back in the phx_reply
    error response."""

    def __init__(self, reason: str, text: str | None = None, **details: Any) -> None:
        super().__init__(reason if text is None else f"{reason}: {text}")
        self.reason, self.text, self.details = reason, text, details

    def payload(self) -> dict[str, Any]:
        out: dict[str, Any] = {"reason": self.reason}
        if self.text is not None:
            out["text"] = self.text
        return {**out, **self.details}


class JsonChannels:
    """What `session.transport` tells the admin channel (xmppd/admin.py describe)."""

    __slots__ = ("peer",)

    def __init__(self, peer: str) -> None:
        self.peer = peer


class ChannelSession:
    # Its messages are screened by `screen` before they are sent, so the abuse module does not
    # count them again when they are routed (modules/abuse.py).
    abuse_checked = True

    def __init__(self, server: Server, claims: Claims, peer: str, limits: dict[str, Any]) -> None:
        from .rooms import Rooms
        from .user import UserTopic

        bare = JID.parse(claims.jid)
        host = server.hosts.get(bare.domain)
        if host is None:
            raise ChannelError(f"{bare.domain} is not served here")
        self.server, self.host, self.claims, self.peer = server, host, claims, peer
        self.id = f"channels-{secrets.token_hex(3)}"
        # What the modules read on a session (xmppd/session.py).
        self.available, self.priority, self.presence = False, 0, None
        self.interested, self.carbons, self.directed = False, 0.0, None
        self.csi = self.sm = None
        self.out_filters: tuple = ()
        self.transport = JsonChannels(peer)
        self.bound_at = time.time()
        self.closed = self.ended = False
        self.jid = host.bind(self, bare.local or "", f"web-{secrets.token_hex(6)}")
        self.full, self.bare = str(self.jid), str(bare)
        self.protocol = ChannelProtocol(max_channels=limits.get("max_channels", 100))
        self.outbox = Mailbox(
            max_items=limits["queued_stanzas"],
            max_bytes=limits["queued_bytes"],
            on_overflow=self._overflowed,
        )
        self.user = UserTopic(self)
        self.rooms = Rooms(self)
        self._pending: dict[str, tuple[trio.Event, list[Element]]] = {}  # our iq requests
        # Token lifetime: the transport ends the session at `deadline` (trio clock), or when
        # end() is called: the WebSocket's `lifetime` scope is cancelled, or the outbox closes.
        self.deadline = server.tokens.deadline(claims)
        self.end_reason: str | None = None
        self.lifetime: trio.CancelScope | None = None
        server.tokens.sessions.add(self)
        if host.events.has_handlers("session-bound"):  # e.g. cluster mode: reachable anywhere
            server.nursery_soon(host.events.fire, "session-bound", self)
        log.info("%s opened for %s (app %s) from %s", self.id, self.full, claims.app, peer)

    def __repr__(self) -> str:
        return f"<ChannelSession {self.id} {self.full}>"

    def _overflowed(self, _mailbox: Mailbox) -> None:
        log.warning("%s: the client reads too slowly; closing", self.id)
        metrics.overflow(self)
        self.outbox.close()

    # ---- what modules may call on a session ---------------------------------------------------

    def kill(self, condition: str, text: str = "", **_: Any) -> None:
        log.info("%s: %s (%s)", self.id, condition, text)
        self.end(condition)

    def replaced(self) -> None:
        self.end("conflict")

    def screen(self, *texts: str | None) -> None:
        """The per-account rate and the word filter (modules/abuse.py) for a message about to
        be sent; ChannelError naming the limit or the rule when refused."""
        abuse = self.host.services.get("abuse")
        refusal = abuse.check_message(self.bare, *texts) if abuse is not None else None
        if refusal is not None:
            raise ChannelError(refusal.condition, refusal.text)

    # ---- client frames -----------------------------------------------------------------------

    async def receive(self, text: str | bytes) -> None:
        """One frame from the client (FrameError: the transport closes the socket)."""
        metrics.frames(1, 0)
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
                    response = await self._push(event)
                    self.protocol.reply(event.join_ref, event.ref, event.topic, "ok", response)
            except ChannelError as exc:
                self._refuse(event, exc)
            self.rooms.settle()
        self.flush()

    def _refuse(self, event: Join | Leave | Push | Refresh, exc: ChannelError) -> None:
        payload = exc.payload()
        if isinstance(event, Join):
            self.protocol.refuse(event, **payload)
        elif isinstance(event, Push):
            self.protocol.reply(event.join_ref, event.ref, event.topic, "error", payload)
        elif isinstance(event, Refresh):
            self.protocol.reply(None, event.ref, PHOENIX, "error", payload)

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
        await self._vouch()
        if kind == "room":
            await self.rooms.join(join, ident)
        elif kind == "user" and ident == self.bare:
            await self.user.join(join)
        else:
            raise ChannelError("unmatched topic")

    async def _vouch(self) -> None:
        """The app vouches for its user: a user like any account from now on (TokenAuth)."""
        from auth.base import AuthError

        vouch = getattr(self.host.auth, "vouch", None)
        try:
            if vouch is not None:
                await vouch(JID.parse(self.bare).local or "")
        except AuthError as exc:
            raise ChannelError("the server cannot record this user now; try again") from exc

    async def _leave(self, topic: str) -> None:
        if topic.startswith("room:"):
            await self.rooms.leave(topic)
        elif topic == self.user.topic:
            await self.user.leave()

    async def _push(self, push: Push) -> dict[str, Any]:
        if push.topic.startswith("room:"):
            return await self.rooms.push(push)
        if push.topic == self.user.topic:
            return await self.user.push(push)
        raise ChannelError("unmatched topic")

    # ---- XMPP out ----------------------------------------------------------------------------

    async def route(self, stanza: Element) -> None:
        """Send as this resource: the modules see it like a stanza from an XML client."""
        await self.host.route(self, stanza)

    async def request(self, iq: Element) -> Element:
        """Route an iq from this resource and wait for its answer (result or error)."""
        iq_id = f"ch{secrets.token_hex(6)}"
        iq.set("id", iq_id)
        done, answer = trio.Event(), []
        self._pending[iq_id] = (done, answer)
        try:
            await self.route(iq)
            with trio.move_on_after(IQ_TIMEOUT):
                await done.wait()
        finally:
            self._pending.pop(iq_id, None)
        if not answer:
            raise ChannelError("remote-server-timeout", "no answer")
        return answer[0]

    # ---- what the server routes to us --------------------------------------------------------

    def deliver(self, topic: str, message: object) -> None:
        """pubsub Subscriber: stanzas for our full JID, Tracker diffs of our rooms."""
        if self.closed:
            return
        if isinstance(message, PresenceDiff):
            self.rooms.diff(topic, message)
        elif isinstance(message, Element) and isinstance(message.tag, str):
            self._stanza(message)
        self.flush()

    def _stanza(self, stanza: Element) -> None:
        kind, sender = local_name(stanza), stanza.get("from", "")
        if kind == "iq":
            self._iq(stanza)
        elif self.rooms.owns(sender):
            self.rooms.stanza(kind, stanza)
        elif kind == "message":
            self.user.message(stanza)
        elif kind == "presence":
            self.user.presence_in(stanza)

    def _iq(self, stanza: Element) -> None:
        type_ = stanza.get("type")
        if type_ in ("result", "error"):
            pending = self._pending.get(stanza.get("id") or "")
            if pending is not None:
                pending[1].append(stanza)
                pending[0].set()
        elif self.user.roster_push(stanza):
            pass
        elif type_ in ("get", "set"):
            reply = error_reply(stanza, "service-unavailable", "a JSON channel client")
            self.server.nursery_soon(self.host.route, None, reply)  # deliver() must not block

    # ---- output and end ----------------------------------------------------------------------

    def push(self, topic: str, event: str, payload: dict[str, Any]) -> None:
        self.protocol.push(topic, event, payload)

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
            metrics.frames(0, 1)
            if not self.outbox.put(text, len(text)):
                return

    async def close(self) -> None:
        """The client went away: leave every room, stop being available, unbind."""
        if self.closed:
            return
        self.server.tokens.sessions.discard(self)
        try:
            await self.rooms.close()
            await self.user.leave()
        except Exception:
            log.exception("%s: leaving failed", self.id)
        self.closed = True
        self.host.unbind(self)
        try:
            await self.host.events.fire("session-closed", self)
        except Exception:
            log.exception("%s: session-closed handlers failed", self.id)
        self.server.pubsub.unsubscribe_all(self)
        self.outbox.close()
        self.ended = True
        log.info("%s closed (%s)", self.id, self.full)
