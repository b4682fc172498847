"""`room:<room JID>` topics of one JSON session, through the room service's API (muc/api.py).

The session is an occupant like an XML one: the room sends it stanzas (history, messages,
presence of its own removal), rendered here; occupants come as Tracker diffs of the room topic.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from pubsub import PresenceDiff
from pubsub.topics import room_topic

from ..muc.api import MAX_PAGE, RoomApi
from ..muc.room import MucError
from ..protocol import namespaces as ns
from ..protocol.channels import Join, Push
from ..protocol.jid import JID, JIDError
from ..protocol.stanza import Element, child_text, get_child, make, sub
from ..storage.base import UnknownArchiveId
from . import files, render
from .remote_rooms import RemoteRooms
from .session import MAX_BODY, ChannelError

if TYPE_CHECKING:
    from .session import ChannelSession

REPLAY_MAX = 500
_ROLES = ("moderator", "participant", "visitor")
_AFFILIATIONS = ("owner", "admin", "member", "none", "outcast")


def text_arg(
    payload: dict[str, Any], key: str, *, optional: bool = False, limit: int = 1024
) -> Any:
    value = payload.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value or len(value) > limit:
        raise ChannelError("bad-request", f"{key} must be a string of 1 to {limit} characters")
    return value


def limit_arg(payload: dict[str, Any]) -> int:
    limit = payload.get("limit", 50)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_PAGE:
        raise ChannelError("bad-request", f"limit must be an integer from 1 to {MAX_PAGE}")
    return limit


class Rooms:
    def __init__(self, session: ChannelSession) -> None:
        self.session = session
        self.joined: dict[str, RoomApi] = {}  # topic -> the API of the room's service
        self._held: dict[str, list[tuple[str, dict]]] = {}  # events before the join reply
        self._pushing: str | None = None  # the topic of the request being handled
        self._closing: dict[str, dict[str, Any]] = {}  # closed by that request: after its reply
        self.remote = RemoteRooms(session)  # cluster mode: rooms another node serves

    # ---- lookups ----------------------------------------------------------------------------

    def api_for(self, room_jid: str) -> RoomApi:
        try:
            room = JID.parse(room_jid)
        except JIDError:
            raise ChannelError("jid-malformed", "not a room JID") from None
        if room.local is None or room.resource is not None:
            raise ChannelError("jid-malformed", "not a room JID")
        api = self.api_at(room.domain)
        if api is None:
            raise ChannelError("item-not-found", "no MUC service at that domain")
        return api

    def api_at(self, domain: str | None) -> RoomApi | None:
        for host in self.session.server.hosts.values():
            service = host.services.get("muc")
            if service is not None and (domain is None or service.domain == domain):
                return service.api
        return None

    def owns(self, sender: str) -> bool:
        return room_topic(sender.partition("/")[0]) in self.joined

    # ---- join and leave ---------------------------------------------------------------------

    async def join(self, join: Join, ident: str) -> None:
        s, topic, payload = self.session, join.topic, join.payload
        api = self.api_for(ident)
        room_jid = str(JID.parse(ident))
        nick = payload.get("nick") or s.claims.name or JID.parse(s.bare).local
        password, since = payload.get("password"), payload.get("since")
        history = payload.get("history")
        if not isinstance(nick, str) or (password is not None and not isinstance(password, str)):
            raise ChannelError("bad-request", "nick and password are strings")
        if since is not None and not isinstance(since, str):
            raise ChannelError("bad-request", "since is an archive id")
        if history is not None and (not isinstance(history, int) or history < 0):
            raise ChannelError("bad-request", "history is a number of messages")
        self.joined[topic] = api  # before joining: the welcome stanzas are ours
        self._held[topic] = []
        try:
            if await api.served_by(room_jid) is not None:
                described = await self.remote.join(
                    topic, room_jid, nick, password, 0 if since else history
                )
            else:
                await api.join(
                    room_jid, s.jid, nick, password=password, history=0 if since else history
                )
                described = api.describe(room_jid, s.full)
        except ChannelError:
            del self.joined[topic]
            self._held.pop(topic, None)
            raise
        except (MucError, JIDError) as exc:
            del self.joined[topic]
            self._held.pop(topic, None)
            raise ChannelError(
                getattr(exc, "condition", "jid-malformed"), getattr(exc, "text", None)
            ) from None
        s.protocol.accept(join, described)
        s.server.pubsub.subscribe(room_topic(room_jid), s)
        state = s.server.tracker.list(room_topic(room_jid))
        s.push(topic, "presence_state", self._presences(topic, state))
        if since and self.remote.serves(topic):  # the archive is read on the room's node
            await self._replay_remote(topic, since)
        elif since:
            await self._replay(topic, api, room_jid, since)
        for event, held in self._held.pop(topic, []):  # history after the reply, as expected
            if not (since and event == "new_msg" and held.get("delayed")):
                s.push(topic, event, held)

    async def _replay(self, topic: str, api: RoomApi, room_jid: str, since: str) -> None:
        s, sent, after, complete = self.session, 0, since, False
        try:
            while sent < REPLAY_MAX:
                page, complete, show = await api.history(
                    room_jid, s.jid, after=after, limit=MAX_PAGE
                )
                for item, stanza, author in page:
                    retraction = render.room_retraction(stanza)
                    if retraction is not None:  # the original may be older than `since`
                        s.push(topic, "retract", retraction)
                        after = item.id
                        continue
                    rendered = render.room_message(
                        stanza, room_jid, None, True, author if show else ""
                    )
                    if rendered is not None:
                        files.annotate(rendered, stanza, s)
                        await files.complete([rendered], s)
                        rendered["stamp"] = render.stamp_of(item.timestamp)
                        rendered["id"] = item.id
                        s.push(topic, "new_msg", rendered)
                        sent += 1
                    after = item.id
                if complete or not page:
                    complete = True
                    break
            s.push(topic, "synced", {"last": after, "complete": complete})
        except MucError as exc:
            s.push(topic, "synced", {"last": since, "complete": False, "reason": exc.condition})

    async def _replay_remote(self, topic: str, since: str) -> None:
        s, sent, after, complete = self.session, 0, since, False
        try:
            while sent < REPLAY_MAX and not complete:
                page, complete, last = await self.remote.page(topic, None, after, MAX_PAGE)
                for message in page:
                    s.push(topic, "new_msg", message)
                    sent += 1
                complete = complete or last is None
                after = last or after
            s.push(topic, "synced", {"last": after, "complete": complete})
        except ChannelError as exc:
            s.push(topic, "synced", {"last": since, "complete": False, "reason": exc.reason})

    async def leave(self, topic: str) -> None:
        api = self.joined.pop(topic, None)
        if api is not None:
            self.session.server.pubsub.unsubscribe(topic, self.session)
            if self.remote.serves(topic):
                await self.remote.leave(topic)
                return
            await api.leave(topic.partition(":")[2], self.session.full)

    async def close(self) -> None:
        for topic in list(self.joined):
            await self.leave(topic)

    # ---- requests -------------------------------------------------------------------------------

    async def push(self, push: Push) -> dict[str, Any]:
        api = self.joined.get(push.topic)
        if api is None:
            raise ChannelError("unmatched topic")
        handler = getattr(self, f"_do_{push.event}", None)
        if handler is None:
            raise ChannelError("bad-request", f"unknown event {push.event!r}")
        self._pushing = push.topic
        try:
            if self.remote.serves(push.topic):
                self.remote.check(push.event)
                if push.event == "occupants":
                    return {"occupants": self.remote.occupants(push.topic)}
            return await handler(api, push.topic.partition(":")[2], push.payload) or {}
        except MucError as exc:
            raise ChannelError(exc.condition, exc.text) from None
        finally:
            self._pushing = None

    def settle(self) -> None:
        """Close the channels a request closed (its `destroy`), now that it was answered."""
        for topic, info in self._closing.items():
            self.session.protocol.close(topic, payload=info)
        self._closing.clear()

    async def _do_new_msg(self, api: RoomApi, room: str, p: dict[str, Any]) -> dict[str, Any]:
        url = files.file_arg(p)
        body = url or text_arg(p, "body", limit=MAX_BODY)
        self.session.screen(body)  # rate and word filter
        mid = text_arg(p, "msg_id", optional=True, limit=64) or secrets.token_hex(8)
        topic = room_topic(room)
        if self.remote.serves(topic):
            return await self.remote.send(topic, body, mid, url)
        stanza_id = await api.send(room, self.session.full, body, msg_id=mid, oob=url)
        return {"id": stanza_id, "msg_id": mid}

    async def _do_correct(self, api: RoomApi, room: str, p: dict[str, Any]) -> dict[str, Any]:
        target = text_arg(p, "id", limit=128)
        body = text_arg(p, "body", limit=MAX_BODY)
        self.session.screen(body)
        stanza_id = await api.correct(room, self.session.full, target, body)
        return {"id": stanza_id}

    async def _do_retract(self, api: RoomApi, room: str, p: dict[str, Any]) -> None:
        await api.retract(room, self.session.full, text_arg(p, "id", limit=128))

    async def _do_moderate(self, api: RoomApi, room: str, p: dict[str, Any]) -> None:
        reason = text_arg(p, "reason", optional=True) or ""
        await api.moderate(room, self.session.full, text_arg(p, "id", limit=128), reason)

    async def _do_kick(self, api: RoomApi, room: str, p: dict[str, Any]) -> None:
        reason = text_arg(p, "reason", optional=True) or ""
        await api.kick(room, self.session.full, text_arg(p, "nick"), reason)

    async def _do_ban(self, api: RoomApi, room: str, p: dict[str, Any]) -> None:
        reason = text_arg(p, "reason", optional=True) or ""
        jid = p.get("jid")
        if jid is None:
            jid = api.account_of(room, text_arg(p, "nick"))
        await api.set_affiliation(room, self.session.full, _bare_jid(jid), "outcast", reason)

    async def _do_set_role(self, api: RoomApi, room: str, p: dict[str, Any]) -> None:
        role = p.get("role")
        if role not in _ROLES:
            raise ChannelError("bad-request", f"role is one of {', '.join(_ROLES)}")
        await api.set_role(room, self.session.full, text_arg(p, "nick"), role)

    async def _do_set_affiliation(self, api: RoomApi, room: str, p: dict[str, Any]) -> None:
        affiliation = p.get("affiliation")
        if affiliation not in _AFFILIATIONS:
            raise ChannelError("bad-request", f"affiliation is one of {', '.join(_AFFILIATIONS)}")
        reason = text_arg(p, "reason", optional=True) or ""
        jid = _bare_jid(text_arg(p, "jid"))
        await api.set_affiliation(room, self.session.full, jid, affiliation, reason)

    async def _do_invite(self, api: RoomApi, room: str, p: dict[str, Any]) -> None:
        to = _bare_jid(text_arg(p, "jid"))
        reason = text_arg(p, "reason", optional=True) or ""
        if p.get("direct"):
            api.occupant(api.room(room), self.session.full)  # only occupants invite
            message = make("message", {"to": to})
            x = sub(message, ns.CONFERENCE, "x", jid=room)
            if reason:
                x.set("reason", reason)
            await self.session.route(message)
        else:
            await api.invite(room, self.session.full, to, reason)

    async def _do_occupants(self, api: RoomApi, room: str, p: dict[str, Any]) -> dict[str, Any]:
        views = api.occupants(room, self.session.full)
        out = []
        for v in views:
            entry = {"nick": v.nick, "role": v.role, "affiliation": v.affiliation}
            if v.jid is not None:
                entry["jid"] = v.jid
            out.append(entry)
        return {"occupants": out}

    async def _do_history(self, api: RoomApi, room: str, p: dict[str, Any]) -> dict[str, Any]:
        before = text_arg(p, "before", optional=True, limit=128)
        after = text_arg(p, "after", optional=True, limit=128)
        if self.remote.serves(room_topic(room)):
            return await self.remote.history(room_topic(room), before, after, limit_arg(p))
        page, complete, show = await api.history(
            room, self.session.jid, before=before, after=after, limit=limit_arg(p)
        )
        messages = []
        for item, stanza, author in page:
            if render.room_retraction(stanza) is not None:
                continue  # the original is a tombstone in the archive already
            rendered = render.room_message(stanza, room, None, True, author if show else "")
            if rendered is not None:
                files.annotate(rendered, stanza, self.session)
                rendered["stamp"], rendered["id"] = render.stamp_of(item.timestamp), item.id
                messages.append(rendered)
        await files.complete(messages, self.session)
        return {"messages": messages, "complete": complete}

    async def _do_subject(self, api: RoomApi, room: str, p: dict[str, Any]) -> None:
        await api.subject(room, self.session.full, text_arg(p, "subject", limit=MAX_BODY))

    async def _do_chat_state(self, api: RoomApi, room: str, p: dict[str, Any]) -> None:
        if p.get("state") not in render.CHAT_STATES:
            raise ChannelError("bad-request", "state is a XEP-0085 chat state")
        topic = room_topic(room)
        if self.remote.serves(topic):
            await self.remote.chat_state(topic, p["state"])
            return
        await api.chat_state(room, self.session.full, p["state"])

    async def _do_displayed(self, api: RoomApi, room: str, p: dict[str, Any]) -> dict[str, Any]:
        target = text_arg(p, "id", limit=128)
        s = self.session
        api.occupant(api.room(room), s.full)
        unread, count = s.host.services.get("unread"), 0
        if unread is not None:  # first, so that an unknown id is refused
            try:
                count = await unread.mark_read(s.bare, room, target)
            except UnknownArchiveId:
                raise ChannelError("item-not-found", "no message with that id") from None
        await api.displayed(room, s.full, target)
        return {"unread": count}

    async def _do_configure(self, api: RoomApi, room: str, p: dict[str, Any]) -> None:
        config = p.get("config")
        if not isinstance(config, dict):
            raise ChannelError("bad-request", "config is an object")
        await api.configure(room, self.session.full, config)

    async def _do_destroy(self, api: RoomApi, room: str, p: dict[str, Any]) -> None:
        reason = text_arg(p, "reason", optional=True) or ""
        await api.destroy(room, self.session.full, reason)

    # ---- what rooms send us -------------------------------------------------------------------

    def stanza(self, kind: str, stanza: Element) -> None:
        room_jid = (stanza.get("from") or "").partition("/")[0]
        topic = room_topic(room_jid)
        if kind == "presence":
            self.remote.presence(stanza, topic)
            self._presence(stanza, topic)
        elif kind == "message":
            if self.remote.message(stanza):
                pass  # an answer to a request in a room served elsewhere (remote_rooms.py)
            elif stanza.get("type") == "groupchat":
                self._groupchat(stanza, topic, room_jid)
            else:
                self.session.user.message(stanza)  # private messages, invitations

    def _emit(self, topic: str, event: str, payload: dict[str, Any]) -> None:
        held = self._held.get(topic)
        if held is not None:
            held.append((event, payload))
        else:
            self.session.push(topic, event, payload)

    def _groupchat(self, stanza: Element, topic: str, room_jid: str) -> None:
        if stanza.get("type") == "error":
            return
        retraction = render.room_retraction(stanza)
        if retraction is not None:
            self._emit(topic, "retract", retraction)
            return
        event = render.system_event(stanza) if stanza.get("from") == room_jid else None
        if event is not None:  # the room itself (the admin API): its own event name
            self._emit(topic, event[0], _event_payload(event[1]))
            return
        delayed = render.delay_stamp(stanza) is not None
        message = render.room_message(stanza, room_jid, None, delayed)
        if message is not None:
            files.annotate(message, stanza, self.session)
            self._emit(topic, "new_msg", message)
            return
        nick = (stanza.get("from") or "").partition("/")[2]
        subject = child_text(stanza, ns.CLIENT, "subject")
        if subject is not None:
            self._emit(topic, "subject", {"subject": subject, "from": nick or None})
        for state in render.CHAT_STATES:
            if get_child(stanza, ns.CHATSTATES, state) is not None:
                self._emit(topic, "chat_state", {"from": nick, "state": state})
        displayed = get_child(stanza, ns.MARKERS, "displayed")
        if displayed is not None and displayed.get("id"):
            self._emit(
                topic, "marker", {"from": nick, "type": "displayed", "id": displayed.get("id")}
            )

    def _presence(self, stanza: Element, topic: str) -> None:
        """Only our own removal matters here (kick, ban, room destroyed): close the channel."""
        x = get_child(stanza, ns.MUC_USER, "x")
        if stanza.get("type") != "unavailable" or x is None:
            return
        codes = {st.get("code") for st in x.findall(f"{{{ns.MUC_USER}}}status")}
        if "110" not in codes or "303" in codes:
            return
        reason = "kicked" if "307" in codes else "banned" if "301" in codes else "removed"
        info: dict[str, Any] = {"reason": reason}
        if get_child(x, ns.MUC_USER, "destroy") is not None:
            info["reason"] = "destroyed"
        item = get_child(x, ns.MUC_USER, "item")
        if item is not None:
            actor = get_child(item, ns.MUC_USER, "actor")
            if actor is not None and actor.get("nick"):
                info["by"] = actor.get("nick")
            if (text := child_text(item, ns.MUC_USER, "reason")) is not None:
                info["text"] = text
        self.remote.forget(topic)
        if self.joined.pop(topic, None) is not None:
            self.session.server.pubsub.unsubscribe(topic, self.session)
            if topic == self._pushing:  # our own request: phoenix.js drops replies after a close
                self._closing[topic] = info
            else:
                self.session.protocol.close(topic, payload=info)

    def diff(self, topic: str, message: PresenceDiff) -> None:
        if topic in self.joined:
            payload = {
                "joins": self._presences(topic, message.joins),
                "leaves": self._presences(topic, message.leaves),
            }
            self._emit(topic, "presence_diff", payload)

    def _presences(self, topic: str, entries: dict[str, list[dict]]) -> dict[str, Any]:
        """Tracker entries as Phoenix.Presence renders them: key -> {"metas": [...]}. Real JIDs
        stay hidden unless the room shows them to us (non-anonymous, or we moderate)."""
        api = self.joined.get(topic)
        show = api is not None and api.sees_jids(topic[5:], self.session.full)
        out: dict[str, Any] = {}
        for key, metas in entries.items():
            clean = [{k: v for k, v in m.items() if show or k != "jid"} for m in metas]
            out[key] = {"metas": clean}
        return out


def _event_payload(data: Any) -> dict[str, Any]:
    """Phoenix payloads are objects: any other JSON value comes wrapped as {"data": value}."""
    return data if isinstance(data, dict) else {"data": data}


def _bare_jid(text: Any) -> str:
    try:
        return str(JID.parse(str(text)).bare)
    except JIDError:
        raise ChannelError("jid-malformed", "not a JID") from None
