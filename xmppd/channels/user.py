"""`user:<own bare JID>`: contacts with presence, 1:1 chat, unread counts, rooms and bookmarks.

Everything goes through the XMPP modules with the session as a resource of the account
(docs/channels.md, "XMPP mapping"): presence and subscriptions are presence stanzas, roster
edits roster iqs, chat messages are routed (archived, carbon-copied), and what comes back
(presence, roster pushes, carbons, receipts) is rendered here. History and archive ids come
from the account's archive (the MAM store), unread counts from the `unread` module.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from lxml import etree

from ..protocol import namespaces as ns
from ..protocol.jid import JID, JIDError
from ..protocol.stanza import Element, child_text, get_child, local_name, make, sub
from ..storage.base import UnknownArchiveId
from . import files, render
from .calls import Calls
from .rooms import REPLAY_MAX, limit_arg, text_arg
from .session import MAX_BODY, ChannelError

if TYPE_CHECKING:
    from .session import ChannelSession

MAX_RESOLVE = 100  # addresses per `resolve` request (each is a dictionary lookup)
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
_SUBSCRIPTION_TYPES = {
    "approve": "subscribed",
    "deny": "unsubscribed",
    "unsubscribe": "unsubscribe",
}


class UserTopic:
    def __init__(self, session: ChannelSession) -> None:
        self.session = session
        self.topic = f"user:{session.bare}"
        self.joined = False
        self.seen: dict[str, dict[str, dict[str, Any]]] = {}  # bare -> resource -> meta
        self._held: list[tuple[str, dict[str, Any]]] | None = None  # events during the join
        self.show: str | None = None
        self.status: str | None = None
        self.calls = Calls(self)

    @property
    def host(self) -> Any:
        return self.session.host

    def service(self, name: str) -> Any:
        service = self.host.services.get(name)
        if service is None:
            raise ChannelError("service-unavailable", f"the {name} module is not loaded")
        return service

    # ---- join ---------------------------------------------------------------------------------

    async def join(self, join: Any) -> None:
        s, p = self.session, join.payload
        show, status = _show(p.get("show")), text_arg(p, "status", optional=True)
        since = text_arg(p, "since", optional=True, limit=128)
        if self.joined:
            await self.leave()
        self.joined, self._held, self.seen = True, [], {}
        s.interested = True  # roster pushes
        self._carbons(1.0)  # both sides of chats (copies from the account's other clients)
        unread = self.host.services.get("unread")
        if unread is not None:
            unread.watch(s.bare, self._unread_changed)
        if p.get("available", True) is not False:
            await self._send_presence(show, status)
        counts = await unread.counts(s.bare) if unread is not None else {}
        s.protocol.accept(
            join,
            {
                "jid": s.full,
                "show": self.show,
                "status": self.status,
                "unread": counts,
                **files.join_info(s),
            },
        )
        held, self._held = self._held, None
        s.push(self.topic, "roster", {"items": await self._roster_items()})
        s.push(self.topic, "presence_state", self._state(self.seen))
        for request in await self._pending_requests():
            s.push(self.topic, "subscribe_request", request)
        seen_ids: set[str] = set()
        if since is not None:
            seen_ids = await self._replay(since)
        for event, payload in held:
            if event in ("new_msg", "retract") and payload.get("id") in seen_ids:
                continue  # replayed already
            if event != "presence_diff":  # already in presence_state
                s.push(self.topic, event, payload)

    async def _replay(self, since: str) -> set[str]:
        s, sent, after, complete = self.session, set(), since, False
        archive = self.service("mam").store
        try:
            while len(sent) < REPLAY_MAX:
                page = await archive.query(_local(s.bare), after_id=after, limit=100)
                for item in page.items:
                    message = self._archived(item)
                    if message is not None and "file" in message:
                        await files.complete([message], s)
                    if message is not None and "retract" in message:
                        retract = {k: message[k] for k in ("from", "with", "id")}
                        s.push(self.topic, "retract", {**retract, "msg_id": message["retract"]})
                        sent.add(item.id)
                    elif message is not None:
                        s.push(self.topic, "new_msg", message)
                        sent.add(item.id)
                    after = item.id
                if page.complete or not page.items:
                    complete = True
                    break
            s.push(self.topic, "synced", {"last": after, "complete": complete})
        except UnknownArchiveId:
            payload = {"last": since, "complete": False, "reason": "item-not-found"}
            s.push(self.topic, "synced", payload)
        return sent

    async def leave(self) -> None:
        if not self.joined:
            return
        s = self.session
        self.joined = False
        unread = self.host.services.get("unread")
        if unread is not None:
            unread.unwatch(s.bare, self._unread_changed)
        if s.available:
            await s.route(make("presence", {"type": "unavailable"}))
        s.interested = False
        self._carbons(0.0)

    def _carbons(self, since: float) -> None:
        switch = self.host.services.get("carbons-switch")
        if switch is not None:
            switch(self.session, since)  # tracked: copies come from every node
        else:
            self.session.carbons = since

    def _emit(self, event: str, payload: dict[str, Any]) -> None:
        if not self.joined:
            return
        if self._held is not None:
            self._held.append((event, payload))
        else:
            self.session.push(self.topic, event, payload)

    # ---- contacts and presence ----------------------------------------------------------------

    async def _roster_items(self) -> list[dict[str, Any]]:
        rosters = self.service("roster")
        bare = self.session.bare
        stored = {jid for jid, d in (await rosters.load(bare)).listed().items()}
        items = []
        for item in await rosters.items(bare):
            items.append(_contact(item, rosters, bare, item["jid"] in stored))
        return items

    async def _pending_requests(self) -> list[dict[str, Any]]:
        roster = await self.service("roster").load(self.session.bare)
        out = []
        for contact, doc in roster.items.items():
            if doc.get("pending_in"):
                request: dict[str, Any] = {"from": contact}
                if doc.get("request"):
                    stanza = etree.fromstring(doc["request"].encode(), _PARSER)
                    if (status := child_text(stanza, ns.CLIENT, "status")) is not None:
                        request["status"] = status
                out.append(request)
        return out

    async def _send_presence(self, show: str | None, status: str | None) -> None:
        self.show, self.status = show, status
        await self.session.route(render.own_presence(show, status))

    def presence_in(self, stanza: Element) -> None:
        sender = stanza.get("from") or ""
        bare, _, resource = sender.partition("/")
        type_ = stanza.get("type")
        if type_ == "subscribe":
            request: dict[str, Any] = {"from": bare}
            if (status := child_text(stanza, ns.CLIENT, "status")) is not None:
                request["status"] = status
            self._emit("subscribe_request", request)
        elif type_ is None and resource:
            if resource == self.session.jid.resource:
                return
            meta = render.presence_meta(stanza)
            old = self.seen.setdefault(bare, {}).get(resource)
            if old is not None and _same(old, meta):
                return
            meta["phx_ref"] = secrets.token_urlsafe(6)
            self.seen[bare][resource] = meta
            self._diff(bare, meta, old)
        elif type_ == "unavailable":
            gone = self.seen.get(bare, {}).pop(resource, None) if resource else None
            if resource == "":
                gone_all = self.seen.pop(bare, {})
                if gone_all:
                    self._emit(
                        "presence_diff", {"joins": {}, "leaves": self._state({bare: gone_all})}
                    )
                return
            if gone is not None:
                self._diff(bare, None, gone)

    def _diff(self, bare: str, join: dict | None, leave: dict | None) -> None:
        if self._held is not None:
            return  # the join's presence_state will have it
        joins = {bare: {"metas": [join]}} if join is not None else {}
        leaves = {bare: {"metas": [leave]}} if leave is not None else {}
        self._emit("presence_diff", {"joins": joins, "leaves": leaves})

    @staticmethod
    def _state(seen: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
        return {b: {"metas": list(r.values())} for b, r in seen.items() if r}

    def roster_push(self, iq: Element) -> bool:
        """A roster push (RFC 6121 §2.1.6) becomes `roster_push`; True if it was one."""
        query = get_child(iq, ns.ROSTER, "query")
        if iq.get("type") != "set" or query is None:
            return False
        sender = iq.get("from")
        if sender not in (None, self.session.bare):
            return False
        rosters = self.host.services.get("roster")
        for item in query.iterchildren(f"{{{ns.ROSTER}}}item"):
            jid = item.get("jid") or ""
            if item.get("subscription") == "remove":
                self.seen.pop(jid, None)
                self._emit("roster_push", {"item": {"jid": jid, "subscription": "remove"}})
                continue
            public = {
                "jid": jid,
                "name": item.get("name"),
                "groups": [g.text or "" for g in item.iterchildren(f"{{{ns.ROSTER}}}group")],
                "subscription": item.get("subscription", "none"),
                "ask": item.get("ask") == "subscribe",
                "approved": item.get("approved") == "true",
            }
            self._emit("roster_push", {"item": _contact(public, rosters, self.session.bare, True)})
        return True

    # ---- messages in --------------------------------------------------------------------------

    def message(self, stanza: Element) -> None:
        """A message for this resource: direct, or a carbon of one to or from the account."""
        carbon = render.unwrap_carbon(stanza)
        direct = carbon is None
        if carbon is not None:
            if (stanza.get("from") or self.session.bare) != self.session.bare:
                return  # XEP-0280 §11: only the account's own server sends carbons
            stanza = carbon[0]
        if self.calls.message(stanza, carbon=not direct) or stanza.get("type") == "error":
            return
        if self._invitation(stanza):
            return
        event = render.system_event(stanza) if direct and self._from_server(stanza) else None
        if event is not None:  # the server itself (the admin API): its own event name
            data = event[1]
            self._emit(event[0], data if isinstance(data, dict) else {"data": data})
            return
        s = self.session
        archive_id = render.stanza_id(stanza, s.bare)
        rendered = render.chat_message(stanza, s.bare, archive_id, None, False)
        files.annotate(rendered, stanza, s)
        extras = render.chat_extras(stanza, s.bare)
        for event, payload in extras:
            if event == "retract" and archive_id is not None:
                payload["id"] = archive_id
            self._emit(event, payload)
        echoed = direct and stanza.get("from") == s.full  # to ourselves: echoed when sent
        if rendered is not None and not echoed and not any(e == "retract" for e, _ in extras):
            self._emit("new_msg", rendered)
        if direct and rendered is not None and self.joined:  # the user sees it: say so
            self._acknowledge(stanza)

    def _from_server(self, stanza: Element) -> bool:
        return (stanza.get("from") or "") in self.session.server.hosts

    def _acknowledge(self, stanza: Element) -> None:
        """XEP-0184 receipt and XEP-0333 received marker for a message this session got."""
        sender, mid = stanza.get("from"), stanza.get("id")
        if not sender or not mid or stanza.get("type") == "groupchat":
            return
        s = self.session
        if get_child(stanza, ns.RECEIPTS, "request") is not None:
            s.server.nursery_soon(s.route, render.signal(sender, ns.RECEIPTS, "received", id=mid))
        if get_child(stanza, ns.MARKERS, "markable") is not None:
            target = render.msg_id(stanza) or mid
            marker = render.signal(sender, ns.MARKERS, "received", id=target)
            s.server.nursery_soon(s.route, marker)

    def _invitation(self, stanza: Element) -> bool:
        """XEP-0045 mediated or XEP-0249 direct invitation: `invite`."""
        sender = stanza.get("from") or ""
        x = get_child(stanza, ns.MUC_USER, "x")
        invite = get_child(x, ns.MUC_USER, "invite") if x is not None else None
        if invite is not None:
            payload: dict[str, Any] = {
                "room": render.bare(sender),
                "from": render.bare(invite.get("from") or ""),
                "mediated": True,
            }
            if (reason := child_text(invite, ns.MUC_USER, "reason")) is not None:
                payload["reason"] = reason
            if (password := child_text(x, ns.MUC_USER, "password")) is not None:
                payload["password"] = password
            self._emit("invite", payload)
            return True
        direct = get_child(stanza, ns.CONFERENCE, "x")
        if direct is not None and direct.get("jid"):
            payload = {"room": direct.get("jid"), "from": render.bare(sender), "mediated": False}
            for key in ("reason", "password"):
                if direct.get(key):
                    payload[key] = direct.get(key)
            self._emit("invite", payload)
            return True
        return False

    def _unread_changed(self, peer: str, count: int, read: str | None) -> None:
        self._emit("unread", {"with": peer, "count": count, "read": read})
        self.session.flush()

    def _archived(self, item: Any) -> dict[str, Any] | None:
        stanza = etree.fromstring(item.stanza_xml.encode(), _PARSER)
        if stanza.get("type") == "groupchat":
            return None
        stamp = render.stamp_of(item.timestamp)
        message = render.chat_message(stanza, self.session.bare, item.id, stamp, True)
        if message is not None and "from" not in stanza.attrib:
            message["from"] = render.bare(item.with_jid)
        files.annotate(message, stanza, self.session)
        return message

    # ---- requests -----------------------------------------------------------------------------

    async def push(self, push: Any) -> dict[str, Any]:
        if not self.joined:
            raise ChannelError("unmatched topic")
        from . import own_rooms

        handler = getattr(self, f"_do_{push.event}", None)
        if handler is not None:
            return await handler(push.payload) or {}
        if push.event.startswith("call_") or push.event == "ice_servers":
            return await self.calls.request(push.event, push.payload) or {}
        request = own_rooms.REQUESTS.get(push.event) or files.REQUESTS.get(push.event)
        if request is None:
            raise ChannelError("bad-request", f"unknown event {push.event!r}")
        return await request(self, push.payload) or {}

    async def _do_presence(self, p: dict[str, Any]) -> None:
        await self._send_presence(_show(p.get("show")), text_arg(p, "status", optional=True))

    async def _send_chat(self, message: Element, to: str) -> dict[str, Any]:
        s = self.session
        s.screen(message.findtext(f"{{{ns.CLIENT}}}body"))  # rate and word filter
        mid = message.get("id") or ""
        await s.route(message)
        found = await self._find_sent(to, mid)
        reply: dict[str, Any] = {"msg_id": mid}
        if found is not None:
            rendered = self._archived(found)
            reply.update(id=found.id, stamp=render.stamp_of(found.timestamp))
            if rendered is not None:
                rendered.pop("delayed", None)
                rendered["resource"] = s.jid.resource
                self._emit("new_msg", rendered)
        return reply

    async def _find_sent(self, to: str, mid: str) -> Any:
        """The archived copy of what this session just sent (its archive id and time)."""
        mam = self.host.services.get("mam")
        if mam is None:
            return None
        page = await mam.store.query(
            _local(self.session.bare), with_jid=to, limit=20, backward=True
        )
        for item in reversed(page.items):
            stanza = etree.fromstring(item.stanza_xml.encode(), _PARSER)
            if (
                stanza.get("id") == mid
                and render.bare(stanza.get("from") or "") == self.session.bare
            ):
                return item
        return None

    async def _do_new_msg(self, p: dict[str, Any]) -> dict[str, Any]:
        to = _jid(p.get("to"))
        url = files.file_arg(p)
        body = url or text_arg(p, "body", limit=MAX_BODY)
        mid = text_arg(p, "msg_id", optional=True, limit=64)
        type_ = p.get("type", "chat")
        if type_ not in ("chat", "normal"):
            raise ChannelError("bad-request", "type is chat or normal")
        message = render.outgoing_chat(to, body, mid, type_)
        return await self._send_chat(files.add_oob(message, url) if url else message, to)

    async def _do_correct(self, p: dict[str, Any]) -> dict[str, Any]:
        to = _jid(p.get("to"))
        target = text_arg(p, "replace", limit=64)
        body = text_arg(p, "body", limit=MAX_BODY)
        message = render.outgoing_chat(to, body, text_arg(p, "msg_id", optional=True, limit=64))
        sub(message, ns.CORRECT, "replace", id=target)
        return await self._send_chat(message, to)

    async def _do_retract(self, p: dict[str, Any]) -> None:
        to = _jid(p.get("to"))
        target = text_arg(p, "msg_id", limit=64)
        await self.session.route(render.retraction(to, target))
        self._emit(
            "retract", {"from": self.session.bare, "with": render.bare(to), "msg_id": target}
        )

    async def _do_chat_state(self, p: dict[str, Any]) -> None:
        state = p.get("state")
        if state not in render.CHAT_STATES:
            raise ChannelError("bad-request", "state is a XEP-0085 chat state")
        await self.session.route(render.signal(_jid(p.get("to")), ns.CHATSTATES, state))

    async def _do_displayed(self, p: dict[str, Any]) -> dict[str, Any]:
        peer = render.bare(_jid(p.get("with")))
        archive_id = text_arg(p, "id", limit=128)
        s = self.session
        unread = self.service("unread")
        try:
            count = await unread.mark_read(s.bare, peer, archive_id)
        except UnknownArchiveId:
            raise ChannelError("item-not-found", "no message with that id") from None
        item = await _fetch(self.service("mam").store, s.bare, archive_id)
        if item is not None:
            stanza = etree.fromstring(item.stanza_xml.encode(), _PARSER)
            sender = render.bare(stanza.get("from") or "")
            if sender == peer and (mid := render.msg_id(stanza)):
                await s.route(render.signal(peer, ns.MARKERS, "displayed", id=mid))
        return {"unread": count}

    async def _do_history(self, p: dict[str, Any]) -> dict[str, Any]:
        peer = p.get("with")
        with_jid = render.bare(_jid(peer)) if peer is not None else None
        before = text_arg(p, "before", optional=True, limit=128)
        after = text_arg(p, "after", optional=True, limit=128)
        try:
            page = await self.service("mam").store.query(
                _local(self.session.bare),
                with_jid=with_jid,
                before_id=before,
                after_id=after,
                limit=limit_arg(p),
                backward=after is None,
            )
        except UnknownArchiveId:
            raise ChannelError("item-not-found", "no message with that id") from None
        messages = [m for m in (self._archived(i) for i in page.items) if m is not None]
        await files.complete(messages, self.session)
        return {"messages": messages, "complete": page.complete}

    async def _do_unread(self, p: dict[str, Any]) -> dict[str, Any]:
        return {"unread": await self.service("unread").counts(self.session.bare)}

    # ---- contacts -------------------------------------------------------------------------------

    async def _do_resolve(self, p: dict[str, Any]) -> dict[str, Any]:
        """Mail addresses -> JIDs: the directory's `mail` attribute, else the address itself
        when its domain is this user's (for pages that show addresses, e.g. webmail)."""
        addresses = p.get("addresses")
        if not isinstance(addresses, list) or not 1 <= len(addresses) <= MAX_RESOLVE:
            raise ChannelError("bad-request", f"addresses is a list of 1 to {MAX_RESOLVE}")
        if not all(isinstance(a, str) and 3 <= len(a) <= 254 for a in addresses):
            raise ChannelError("bad-request", "addresses are strings of 3 to 254 characters")
        directory = self.host.services.get("directory")
        domain = JID.parse(self.session.bare).domain
        jids: dict[str, str | None] = {}
        for address in addresses:
            local, at, where = address.strip().lower().rpartition("@")
            user = directory.user_for_mail(address.strip()) if directory is not None else None
            if user is not None:
                jids[address] = f"{user}@{domain}"
            elif at and local and where == domain:
                jids[address] = _valid_jid(f"{local}@{where}")
            else:
                jids[address] = None
        return {"jids": jids}

    async def _do_subscribe(self, p: dict[str, Any]) -> None:
        contact = render.bare(_jid(p.get("jid")))
        abuse = self.host.services.get("abuse")  # limited accounts ask no stranger
        refusal = await abuse.subscription_refusal(self.session.bare, contact) if abuse else None
        if refusal is not None:
            raise ChannelError("not-allowed", refusal)
        if "name" in p or "groups" in p:
            await self._roster_set(contact, p)
        presence = make("presence", {"type": "subscribe", "to": contact})
        if (status := text_arg(p, "status", optional=True)) is not None:
            sub(presence, ns.CLIENT, "status", status)
        await self.session.route(presence)

    async def _do_approve(self, p: dict[str, Any]) -> None:
        await self._subscription("approve", p)

    async def _do_deny(self, p: dict[str, Any]) -> None:
        await self._subscription("deny", p)

    async def _do_unsubscribe(self, p: dict[str, Any]) -> None:
        await self._subscription("unsubscribe", p)

    async def _subscription(self, action: str, p: dict[str, Any]) -> None:
        contact = render.bare(_jid(p.get("jid")))
        type_ = _SUBSCRIPTION_TYPES[action]
        await self.session.route(make("presence", {"type": type_, "to": contact}))

    async def _do_roster_set(self, p: dict[str, Any]) -> None:
        await self._roster_set(render.bare(_jid(p.get("jid"))), p)

    async def _do_roster_remove(self, p: dict[str, Any]) -> None:
        iq = make("iq", {"type": "set"})
        query = sub(iq, ns.ROSTER, "query")
        sub(query, ns.ROSTER, "item", jid=render.bare(_jid(p.get("jid"))), subscription="remove")
        await self._iq(iq)

    async def _roster_set(self, contact: str, p: dict[str, Any]) -> None:
        name, groups = p.get("name"), p.get("groups", [])
        if name is not None and not isinstance(name, str):
            raise ChannelError("bad-request", "name is a string")
        if not isinstance(groups, list) or not all(isinstance(g, str) and g for g in groups):
            raise ChannelError("bad-request", "groups is a list of names")
        iq = make("iq", {"type": "set"})
        query = sub(iq, ns.ROSTER, "query")
        item = sub(query, ns.ROSTER, "item", jid=contact)
        if name:
            item.set("name", name)
        for group in groups:
            sub(item, ns.ROSTER, "group", group)
        await self._iq(iq)

    async def _iq(self, iq: Element) -> Element:
        answer = await self.session.request(iq)
        if answer.get("type") == "error":
            error = get_child(answer, ns.CLIENT, "error")
            condition = "undefined-condition"
            if error is not None:
                for child in error:
                    if isinstance(child.tag, str) and local_name(child) != "text":
                        condition = local_name(child)
                        break
            raise ChannelError(condition)
        return answer


def _contact(item: dict[str, Any], rosters: Any, user: str, stored: bool) -> dict[str, Any]:
    shared = rosters is not None and rosters.shared is not None
    directory = shared and rosters.shared.item(user, item["jid"]) is not None
    source = "both" if directory and stored else "directory" if directory else "roster"
    return {**item, "source": source}


def _same(old: dict[str, Any], new: dict[str, Any]) -> bool:
    return all(old.get(k) == new.get(k) for k in ("show", "status", "priority"))


def _show(value: Any) -> str | None:
    if value in (None, "", "online"):
        return None
    if value not in render.SHOWS:
        raise ChannelError("bad-request", f"show is one of {', '.join(render.SHOWS)} or null")
    return value


def _jid(value: Any) -> str:
    try:
        return str(JID.parse(str(value or "")))
    except JIDError:
        raise ChannelError("jid-malformed", "not a JID") from None


def _valid_jid(text: str) -> str | None:
    try:
        return str(JID.parse(text))
    except JIDError:
        return None


def _local(bare: str) -> str:
    return JID.parse(bare).local or ""


async def _fetch(store: Any, bare: str, archive_id: str) -> Any:
    from ..modules.mam_query import Query, QueryError, run_query

    try:
        page = await run_query(store, _local(bare), Query(ids=[archive_id], limit=1))
    except QueryError:
        return None
    return page.items[0] if page.items else None
