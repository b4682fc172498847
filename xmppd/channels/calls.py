"""1:1 audio and video calls on the user topic (docs/channels.md, "Calls").

Call setup is XEP-0353 (Jingle Message Initiation): `call_propose` is a `<propose/>` to the
callee's bare JID, which the router rings on every resource (router.rings_everywhere), so a
callee's Conversations or Gajim rings beside its web tabs; answers are `<ringing/>`,
`<proceed/>`, `<reject/>`, `<retract/>`, `<finish/>`, copied by carbons to the account's other
clients so they stop ringing when the call is taken elsewhere. Every signal is a routed
message from the session, so blocking, the archive and offline storage apply as to any chat.

Media between two web sessions is WebRTC: SDP and ICE candidates travel as `headline`
messages to the peer's full JID with one `<signal xmlns="urn:xmppd:webrtc:0"/>` child (JSON
text): not archived, not carbon-copied, dropped when that session is gone. XMPP clients
negotiate media with Jingle iqs, which JSON sessions do not speak: they ring and hang up
together, but cannot talk (the web side is told through `webrtc` in proposals and answers).
"""

from __future__ import annotations

import json
import secrets
from typing import TYPE_CHECKING, Any

import trio

from ..protocol import namespaces as ns
from ..protocol.jid import JID, JIDError
from ..protocol.stanza import Element, get_child, local_name, make, sub
from ..ratelimit import TokenBucket
from . import render
from .rooms import text_arg
from .session import ChannelError

if TYPE_CHECKING:
    from .user import UserTopic

MEDIA = ("audio", "video")
# XEP-0166 reason conditions a web client may give (XEP-0353 <reject/>, <retract/>, <finish/>).
REASONS = (
    "success", "busy", "decline", "cancel", "timeout", "connectivity-error", "failed-application",
    "general-error", "media-error", "security-error",
)  # fmt: skip
DEFAULT_REASON = {"reject": "decline", "retract": "cancel", "finish": "success"}
# JSON request -> XEP-0353 element, and back (`accept` is what clients of XEP-0353 0.3 sent
# their own account when they took a call: the same news as a carbon of `proceed`).
ACTIONS = {
    "ring": "ringing", "accept": "proceed", "reject": "reject", "retract": "retract",
    "finish": "finish",
}  # fmt: skip
EVENTS = {v: f"call_{k}" for k, v in ACTIONS.items()}
EVENTS |= {"propose": "call_propose", "accept": "call_accept"}
MAX_SDP = 64 * 1024  # a video offer from Chromium is ~6 KB; many codecs and simulcast grow it
MAX_CANDIDATE = 1024
# Per session: how often a call may be proposed (ringing someone is loud), and how many
# signals (one SDP each way, then ICE candidates in bursts of tens) may be relayed.
PROPOSE_RATE, PROPOSE_BURST = 0.2, 5
SIGNAL_RATE, SIGNAL_BURST = 20.0, 200


class Calls:
    def __init__(self, user: UserTopic) -> None:
        self.user = user
        now = trio.current_time()
        self.proposals = TokenBucket(PROPOSE_RATE, PROPOSE_BURST, now)
        self.signals = TokenBucket(SIGNAL_RATE, SIGNAL_BURST, now)

    @property
    def session(self) -> Any:
        return self.user.session

    # ---- requests -----------------------------------------------------------------------------

    async def request(self, event: str, p: dict[str, Any]) -> dict[str, Any] | None:
        if event == "ice_servers":
            return self.ice_servers()
        if event == "call_propose":
            return await self.propose(p)
        if event == "call_signal":
            return await self.signal(p)
        action = event.removeprefix("call_")
        if action not in ACTIONS:
            raise ChannelError("bad-request", f"unknown event {event!r}")
        return await self.answer(action, p)

    def ice_servers(self) -> dict[str, Any]:
        if self.session.claims.role == "guest":  # like XEP-0215: relay access for accounts only
            raise ChannelError("forbidden", "guests get no TURN credentials")
        turn = self.session.host.services.get("turn")
        if turn is None:  # no TURN server configured: direct connections only
            return {"ice_servers": [], "expires": None, "relay_only": False}
        return turn.ice_servers(self.session.bare)

    async def propose(self, p: dict[str, Any]) -> dict[str, Any]:
        s = self.session
        to = _peer(p.get("to"))
        if to.bare == JID.parse(s.bare).bare:
            raise ChannelError("bad-request", "a call to oneself")
        media = p.get("media")
        if media not in MEDIA:
            raise ChannelError("bad-request", "media is audio or video")
        call_id = text_arg(p, "call_id", optional=True, limit=64) or secrets.token_urlsafe(12)
        self._check_blocked(str(to.bare))
        if not self.proposals.allow(trio.current_time()):
            raise ChannelError("resource-constraint", "too many calls; wait a little")
        message, propose = _jmi(str(to.bare), "propose", call_id)
        for kind in ("audio", "video") if media == "video" else ("audio",):
            sub(propose, ns.JINGLE_RTP, "description", media=kind)
        sub(propose, ns.WEBRTC, "webrtc")  # the caller speaks WebRTC signals, not Jingle
        await s.route(message)
        return {"call_id": call_id}

    async def answer(self, action: str, p: dict[str, Any]) -> dict[str, Any]:
        to = _peer(p.get("to"))
        call_id = text_arg(p, "call_id", limit=64)
        reason = p.get("reason")
        if reason is not None and (action not in DEFAULT_REASON or reason not in REASONS):
            raise ChannelError("bad-request", f"reason is one of {', '.join(REASONS)}")
        self._check_blocked(str(to.bare))
        message, signal = _jmi(str(to), ACTIONS[action], call_id)
        if action in DEFAULT_REASON:
            why = sub(signal, ns.JINGLE, "reason")
            sub(why, ns.JINGLE, reason or DEFAULT_REASON[action])
        if action == "accept":
            sub(signal, ns.WEBRTC, "webrtc")
        await self.session.route(message)
        return {}

    async def signal(self, p: dict[str, Any]) -> dict[str, Any]:
        to = _peer(p.get("to"))
        if not to.resource:
            raise ChannelError("bad-request", "to is the peer's full JID (from its call events)")
        call_id = text_arg(p, "call_id", limit=64)
        relayed = _signal_body(p)
        if not self.signals.allow(trio.current_time()):
            raise ChannelError("resource-constraint", "too many call signals")
        message = make("message", {"to": str(to), "type": "headline", "id": _id()})
        sub(message, ns.WEBRTC, "signal", json.dumps(relayed, separators=(",", ":")), id=call_id)
        sub(message, ns.HINTS, "no-store")
        await self.session.route(message)
        return {}

    def _check_blocked(self, peer: str) -> None:
        blocking = self.session.host.services.get("blocking")
        if blocking is not None and blocking.is_blocked(self.session.bare, peer):
            raise ChannelError("not-acceptable", "you blocked this contact")

    # ---- messages in --------------------------------------------------------------------------

    def message(self, stanza: Element, carbon: bool) -> bool:
        """A call signal for this session (direct, or a carbon of the account's other client):
        emit its event; True if the message was one."""
        jmi = _jmi_child(stanza)
        relay = get_child(stanza, ns.WEBRTC, "signal")
        if jmi is None and relay is None:
            return False
        if stanza.get("type") == "error":
            self._error(stanza, jmi if jmi is not None else relay)
        elif jmi is not None:
            self._jmi_in(stanza, jmi, carbon)
        elif not carbon:
            self._signal_in(stanza, relay)
        return True

    def _parties(self, stanza: Element) -> dict[str, Any]:
        own = self.session.bare
        sender = stanza.get("from") or self.session.full
        peer = render.bare(stanza.get("to") or own)
        if render.bare(sender) != own:
            peer = render.bare(sender)
        return {"from": render.bare(sender), "resource": sender.partition("/")[2], "with": peer}

    def _jmi_in(self, stanza: Element, jmi: Element, carbon: bool) -> None:
        action = local_name(jmi)
        event, call_id = EVENTS.get(action), jmi.get("id")
        if event is None or not call_id:
            return
        payload = {"call_id": call_id, **self._parties(stanza)}
        if action == "propose":
            found = {d.get("media") for d in jmi.iterchildren(f"{{{ns.JINGLE_RTP}}}description")}
            payload["media"] = "video" if "video" in found else "audio"
        if action in ("propose", "proceed"):
            payload["webrtc"] = get_child(jmi, ns.WEBRTC, "webrtc") is not None
        why = get_child(jmi, ns.JINGLE, "reason")
        if why is not None:
            conditions = [local_name(c) for c in why if isinstance(c.tag, str)]
            payload["reason"] = next((c for c in conditions if c != "text"), "general-error")
        if render.delay_stamp(stanza) is not None:
            payload["delayed"] = True  # from offline storage: a missed call, not a ringing one
        if carbon:
            payload["carbon"] = True
        self.user._emit(event, payload)

    def _signal_in(self, stanza: Element, relay: Element) -> None:
        try:
            body = json.loads(relay.text or "")
        except ValueError:
            return
        if not isinstance(body, dict) or not relay.get("id"):
            return
        parties = self._parties(stanza)
        payload = {"call_id": relay.get("id"), "from": parties["from"]}
        payload["resource"] = parties["resource"]
        for key in ("sdp", "candidate"):
            if key in body:
                payload[key] = body[key]
        self.user._emit("call_signal", payload)

    def _error(self, stanza: Element, child: Element) -> None:
        error = get_child(stanza, ns.CLIENT, "error")
        condition = "undefined-condition"
        if error is not None:
            names = [local_name(c) for c in error if isinstance(c.tag, str)]
            condition = next((n for n in names if n != "text"), condition)
        payload = {"call_id": child.get("id"), **self._parties(stanza), "reason": condition}
        self.user._emit("call_error", payload)


def _jmi(to: str, action: str, call_id: str) -> tuple[Element, Element]:
    """A XEP-0353 message: type chat, kept by offline storage and the archive (<store/>)."""
    message = make("message", {"to": to, "type": "chat", "id": _id()})
    signal = sub(message, ns.JINGLE_MESSAGE, action, id=call_id)
    sub(message, ns.HINTS, "store")
    return message, signal


def _jmi_child(stanza: Element) -> Element | None:
    for child in stanza:
        if isinstance(child.tag, str) and child.tag.startswith(f"{{{ns.JINGLE_MESSAGE}}}"):
            return child
    return None


def _signal_body(p: dict[str, Any]) -> dict[str, Any]:
    """Exactly one of `sdp` {type, sdp} or `candidate` ({candidate, sdpMid, sdpMLineIndex,
    usernameFragment}, or null: the end of candidates); only those fields are relayed."""
    if ("sdp" in p) == ("candidate" in p):
        raise ChannelError("bad-request", "give sdp or candidate")
    if "sdp" in p:
        sdp = p["sdp"]
        if not isinstance(sdp, dict) or sdp.get("type") not in ("offer", "answer"):
            raise ChannelError("bad-request", "sdp is {type: offer|answer, sdp}")
        return {"sdp": {"type": sdp["type"], "sdp": text_arg(sdp, "sdp", limit=MAX_SDP)}}
    candidate = p["candidate"]
    if candidate is None:
        return {"candidate": None}
    if not isinstance(candidate, dict):
        raise ChannelError("bad-request", "candidate is an RTCIceCandidateInit or null")
    out: dict[str, Any] = {"candidate": text_arg(candidate, "candidate", limit=MAX_CANDIDATE)}
    for key in ("sdpMid", "usernameFragment"):
        if candidate.get(key) is not None:
            out[key] = text_arg(candidate, key, limit=256)
    index = candidate.get("sdpMLineIndex")
    if index is not None:
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < 1024:
            raise ChannelError("bad-request", "sdpMLineIndex is an integer from 0 to 1023")
        out["sdpMLineIndex"] = index
    return {"candidate": out}


def _peer(value: Any) -> JID:
    try:
        jid = JID.parse(str(value or ""))
    except JIDError:
        raise ChannelError("jid-malformed", "not a JID") from None
    if not jid.local:
        raise ChannelError("bad-request", "calls go to a user's JID")
    return jid


def _id() -> str:
    return secrets.token_urlsafe(9)
