"""Admin verbs that act on the whole cluster (docs/cluster.md, docs/admin.md).

The admin socket reaches one node. For `sessions`, `kick`, `status` (and the session ending
of `deluser` and `revoke-tokens`), that node asks every node that is up over the pubsub
bus (``("ask", id, asker, verb, args)`` on ADMIN_TOPIC) and gathers their answers
(``("answer", id, node, ok, result)``). A node that does not answer within the timeout is
reported as such, never counted as "no sessions".

Stream management uses the same question: a `<resume/>` for a session this node does not
hold asks the others to end it (``sm-end``), so its unacknowledged stanzas are routed again
before the client binds anew, and the answer carries its final h for `<failed h/>`.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from pubsub import PubSub, Tracker

log = logging.getLogger("xmppd.cluster")

ADMIN_TOPIC = "cluster:admin"
ANSWER_TIMEOUT = 3.0  # seconds a node has to answer an admin question

# (verb, args) -> this node's answer; raises for an error the asker reports as is.
LocalVerb = Callable[[str, dict[str, Any]], Awaitable[Any]]


class ClusterAdmin:
    """Asks the other nodes, and answers them with this node's `LocalVerb`."""

    def __init__(
        self, pubsub: PubSub, tracker: Tracker, spawn: Callable[..., None], local: LocalVerb
    ) -> None:
        self.pubsub = pubsub
        self.tracker = tracker
        self.node = pubsub.node
        self._spawn = spawn
        self._local = local
        self._ids = itertools.count(1)
        self._waiting: dict[int, tuple[dict[str, Any], trio.Event, set[str]]] = {}
        self.hosts: dict[str, Any] = {}
        pubsub.subscribe(ADMIN_TOPIC, self)

    def install(self, host: Any) -> None:
        self.hosts[host.domain] = host
        sm = host.services.get("sm")
        if sm is not None:
            sm.resume_elsewhere = self._resume_elsewhere

    async def _resume_elsewhere(self, bare: str, previd: str) -> int | None:
        answers = await self.ask("sm-end", {"jid": bare, "previd": previd})
        found = [a["result"] for a in answers.values() if a["ok"] and a["result"] is not None]
        return found[0] if found else None

    async def _sm_end(self, bare: str, previd: str) -> int | None:
        host = self.hosts.get(bare.partition("@")[2])
        sm = host.services.get("sm") if host is not None else None
        return None if sm is None else await sm.end_for_peer(bare, previd)

    def nodes(self) -> dict[str, str]:
        """The other nodes this one knows: name -> "up" | "down". The Tracker knows
        replicas (``node#incarnation``); a restarted node's old one may linger, down."""
        found: dict[str, str] = {}
        for replica, state in self.tracker.peers().items():
            node = replica.partition("#")[0]
            if node != self.node and found.get(node) != "up":
                found[node] = state
        return found

    async def ask(
        self, verb: str, args: dict[str, Any], timeout: float = ANSWER_TIMEOUT
    ) -> dict[str, Any]:
        """Every other node that is up answers: node -> {"ok": bool, "result": ...}; a node
        that stays silent gets {"ok": False, "result": "no answer"}."""
        up = {n for n, state in self.nodes().items() if state == "up"}
        if not up:
            return {}
        ident = next(self._ids)
        answers: dict[str, Any] = {}
        done = trio.Event()
        self._waiting[ident] = (answers, done, set(up))
        try:
            self.pubsub.broadcast_from(self, ADMIN_TOPIC, ("ask", ident, self.node, verb, args))
            with trio.move_on_after(timeout):
                await done.wait()
        finally:
            del self._waiting[ident]
        for node in up - set(answers):
            answers[node] = {"ok": False, "result": "no answer"}
        return answers

    def deliver(self, topic: str, message: object) -> None:
        kind, ident, node, *rest = message  # type: ignore[misc]
        if kind == "ask":
            self._spawn(self._answer, ident, node, *rest)
        elif kind == "answer":
            waiting = self._waiting.get(ident)
            if waiting is not None:
                answers, done, expected = waiting
                ok, result = rest
                answers[node] = {"ok": ok, "result": result}
                if expected <= set(answers):
                    done.set()

    async def _answer(self, ident: int, asker: str, verb: str, args: dict[str, Any]) -> None:
        try:
            if verb == "sm-end":
                ok, result = True, await self._sm_end(args["jid"], args["previd"])
            else:
                ok, result = True, await self._local(verb, args)
        except Exception as exc:  # the asker reports it; this node goes on
            ok, result = False, str(exc)
        answer = ("answer", ident, self.node, ok, result)
        self.pubsub.direct_broadcast(asker, ADMIN_TOPIC, answer)
