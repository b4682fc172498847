"""JSON sessions in rooms another cluster node serves (docs/cluster.md).

The room's state lives on its owner node, so the session takes part the way an XMPP client
does: its join, messages and leave are the stanzas a client would send from its full JID,
which the room placement forwards to the owner; the owner's answers come back addressed to
that JID and are rendered by channels/rooms.py as for a local room. Occupants come from the
Tracker's cluster-wide view of the room topic, the archive from a XEP-0313 query. What
needs the room's state otherwise (corrections, moderation, configuration) is refused.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

import trio

from ..muc.api import stanza_id_of
from ..protocol import namespaces as ns
from ..protocol.stanza import Element, child_text, get_child, local_name, make, sub
from . import files, render
from .session import ChannelError

if TYPE_CHECKING:
    from .session import ChannelSession

ANSWER_TIMEOUT = 10.0  # the owner's answer to a join or a message
# What a session does in a room served elsewhere.
REMOTE_EVENTS = ("new_msg", "occupants", "chat_state", "history")


class _Wait:
    """One stanza sent to the owner, waiting for its answer (the room's echo or an error)."""

    def __init__(self) -> None:
        self.done = trio.Event()
        self.answer: Element | None = None

    def settle(self, stanza: Element) -> None:
        if not self.done.is_set():
            self.answer = stanza
            self.done.set()


class RemoteRooms:
    def __init__(self, session: ChannelSession) -> None:
        self.session = session
        self.nicks: dict[str, str] = {}  # topic -> our nick, rooms served elsewhere
        self._joins: dict[str, _Wait] = {}  # topic -> the join in flight
        self._sends: dict[str, _Wait] = {}  # message id -> the message in flight
        self._pages: dict[str, list[Element]] = {}  # MAM query id -> its results so far

    def serves(self, topic: str) -> bool:
        return topic in self.nicks or topic in self._joins

    async def _ask(self, table: dict[str, _Wait], key: str, stanza: Element) -> Element:
        wait = table[key] = _Wait()
        try:
            await self.session.route(stanza)
            with trio.move_on_after(ANSWER_TIMEOUT):
                await wait.done.wait()
        finally:
            table.pop(key, None)
        if wait.answer is None:
            raise ChannelError("remote-server-timeout", "the room's node did not answer")
        if wait.answer.get("type") == "error":
            raise ChannelError(*_error_of(wait.answer))
        return wait.answer

    # ---- join and leave ---------------------------------------------------------------------

    async def join(
        self, topic: str, room_jid: str, nick: str, password: str | None, history: int | None
    ) -> dict[str, Any]:
        """The XEP-0045 §7.2 join presence; what the room said about us in its answer."""
        presence = make("presence", {"to": f"{room_jid}/{nick}"})
        x = sub(presence, ns.MUC, "x")
        if history is not None:
            sub(x, ns.MUC, "history", maxstanzas=str(history))
        if password is not None:
            sub(x, ns.MUC, "password", password)
        try:
            answer = await self._ask(self._joins, topic, presence)
        except ChannelError as exc:
            if exc.reason == "remote-server-timeout":  # in case the join arrives after all
                gone = make("presence", {"to": f"{room_jid}/{nick}", "type": "unavailable"})
                await self.session.route(gone)
            raise
        item = get_child(get_child(answer, ns.MUC_USER, "x"), ns.MUC_USER, "item")
        mine = (answer.get("from") or "").partition("/")[2] or nick  # the room may change it
        self.nicks[topic] = mine
        return {
            "nick": mine,
            "role": item.get("role") if item is not None else None,
            "affiliation": item.get("affiliation") if item is not None else None,
            "subject": None,  # comes as a `subject` event, as the room sends it
            "config": None,  # the room's configuration is read on the node serving it
        }

    async def leave(self, topic: str) -> None:
        nick = self.nicks.pop(topic, None)
        if nick is not None:
            room_jid = topic.partition(":")[2]
            await self.session.route(
                make("presence", {"to": f"{room_jid}/{nick}", "type": "unavailable"})
            )

    def forget(self, topic: str) -> None:
        """Removed by the room (kicked, banned, destroyed): nothing to send."""
        self.nicks.pop(topic, None)

    # ---- what the owner sends back ----------------------------------------------------------

    def presence(self, stanza: Element, topic: str) -> None:
        """Our own presence (status 110) or an error answers the join in flight."""
        wait = self._joins.get(topic)
        if wait is None:
            return
        if stanza.get("type") == "error":
            wait.settle(stanza)
            return
        x = get_child(stanza, ns.MUC_USER, "x")
        statuses = x.findall(f"{{{ns.MUC_USER}}}status") if x is not None else []
        codes = {st.get("code") for st in statuses}
        if "110" in codes and stanza.get("type") != "unavailable":
            wait.settle(stanza)

    def message(self, stanza: Element) -> bool:
        """A result of our archive query (taken: True), the room's echo of a message we sent
        (rendered as any message: False) or its refusal (taken)."""
        result = get_child(stanza, ns.MAM, "result")
        if result is not None and result.get("queryid") in self._pages:
            self._pages[result.get("queryid") or ""].append(result)
            return True
        wait = self._sends.get(stanza.get("id") or "")
        if wait is None:
            return False
        wait.settle(stanza)
        return stanza.get("type") == "error"  # an echo is rendered as any message

    # ---- requests ---------------------------------------------------------------------------

    def check(self, event: str) -> None:
        if event not in REMOTE_EVENTS:
            raise ChannelError(
                "service-unavailable",
                f"{event} is not available in a room served by another cluster node",
            )

    async def send(self, topic: str, body: str, msg_id: str, url: str | None) -> dict[str, Any]:
        room_jid = topic.partition(":")[2]
        stanza = make("message", {"type": "groupchat", "to": room_jid, "id": msg_id})
        sub(stanza, ns.CLIENT, "body", body)
        if url is not None:
            sub(sub(stanza, ns.OOB, "x"), ns.OOB, "url", url)
        sub(stanza, ns.SID, "origin-id", id=msg_id)
        echo = await self._ask(self._sends, msg_id, stanza)
        return {"id": stanza_id_of(echo, room_jid), "msg_id": msg_id}

    async def chat_state(self, topic: str, state: str) -> None:
        """XEP-0085 in the room: nothing comes back to wait for."""
        stanza = make("message", {"type": "groupchat", "to": topic.partition(":")[2]})
        sub(stanza, ns.CHATSTATES, state)
        await self.session.route(stanza)

    async def history(
        self, topic: str, before: str | None, after: str | None, limit: int
    ) -> dict[str, Any]:
        messages, complete, _last = await self.page(topic, before, after, limit)
        return {"messages": messages, "complete": complete}

    async def page(
        self, topic: str, before: str | None, after: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], bool, str | None]:
        """A page of the room's archive, asked of its node with XEP-0313 (a RSM page after
        `after`, else the one before `before`, else the newest): the messages as the local
        `history` renders them, whether it is the last page that way, its newest id."""
        room_jid, qid = topic.partition(":")[2], secrets.token_hex(6)
        iq = make("iq", {"type": "set", "to": room_jid})
        query = sub(iq, ns.MAM, "query", queryid=qid)
        page = sub(query, ns.RSM, "set")
        sub(page, ns.RSM, "max", str(limit))
        if after is not None:
            sub(page, ns.RSM, "after", after)
        else:
            sub(page, ns.RSM, "before", before or "")
        self._pages[qid] = []
        try:
            answer = await self.session.request(iq)
        finally:
            results = self._pages.pop(qid)
        if answer.get("type") == "error":
            raise ChannelError(*_error_of(answer))
        messages = []
        for result in results:
            forwarded = get_child(result, ns.FORWARD, "forwarded")
            inner = get_child(forwarded, ns.CLIENT, "message") if forwarded is not None else None
            if inner is None or render.room_retraction(inner) is not None:
                continue  # the original is a tombstone in the archive already
            rendered = render.room_message(inner, room_jid, None, True)
            if rendered is not None:
                files.annotate(rendered, inner, self.session)
                rendered["stamp"] = render.delay_stamp(forwarded) or rendered["stamp"]
                rendered["id"] = result.get("id")
                messages.append(rendered)
        await files.complete(messages, self.session)
        fin = get_child(answer, ns.MAM, "fin")
        last = results[-1].get("id") if results else None
        return messages, fin is not None and fin.get("complete") == "true", last

    def occupants(self, topic: str) -> list[dict[str, Any]]:
        """From the Tracker's cluster-wide view; real JIDs stay hidden (the room's whois
        setting is known on its node only)."""
        out = []
        for nick, metas in sorted(self.session.server.tracker.list(topic).items()):
            meta = metas[0] if metas else {}
            out.append(
                {"nick": nick, "role": meta.get("role"), "affiliation": meta.get("affiliation")}
            )
        return out


def _error_of(stanza: Element) -> tuple[str, str | None]:
    error = get_child(stanza, ns.CLIENT, "error")
    condition, text = "undefined-condition", None
    if error is not None:
        for child in error:
            if isinstance(child.tag, str) and local_name(child) != "text":
                condition = local_name(child)
                break
        text = child_text(error, ns.STANZA_ERRORS, "text")
    return condition, text
