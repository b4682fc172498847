"""Stanzas as the JSON objects of docs/channels.md ("The message object"), and back.

Pure functions: no session, no I/O. `chat_*` are 1:1 (user topic), `room_*` group chat.
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from typing import Any

from ..protocol import namespaces as ns
from ..protocol.stanza import Element, child_text, get_child, make, sub

CHAT_STATES = ("active", "composing", "paused", "inactive", "gone")
SHOWS = ("chat", "away", "xa", "dnd")
RETRACT_FALLBACK = "This person attempted to retract a previous message."
_DELAY = f"{{{ns.DELAY}}}delay"


def now_stamp() -> str:
    return stamp_of(datetime.now(UTC))


def stamp_of(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def bare(jid: str) -> str:
    return jid.partition("/")[0]


def stanza_id(stanza: Element, by: str) -> str | None:
    for sid in stanza.iterchildren(f"{{{ns.SID}}}stanza-id"):
        if sid.get("by") == by:
            return sid.get("id")
    return None


def msg_id(stanza: Element) -> str | None:
    origin = get_child(stanza, ns.SID, "origin-id")
    if origin is not None and origin.get("id"):
        return origin.get("id")
    return stanza.get("id")


def delay_stamp(stanza: Element) -> str | None:
    delay = stanza.find(_DELAY)
    return delay.get("stamp") if delay is not None else None


def unwrap_carbon(stanza: Element) -> tuple[Element, str] | None:
    """(the forwarded message, "sent"|"received") of a XEP-0280 carbon, else None."""
    for direction in ("sent", "received"):
        wrapper = get_child(stanza, ns.CARBONS, direction)
        if wrapper is not None:
            forwarded = get_child(wrapper, ns.FORWARD, "forwarded")
            inner = get_child(forwarded, ns.CLIENT, "message") if forwarded is not None else None
            if inner is not None:
                return inner, direction
    return None


def system_event(stanza: Element) -> tuple[str, Any] | None:
    """(ev, data) of a system event: a XEP-0335 JSON container holding `{"ev", "data"}`, put
    there by the admin API (docs/api.md). Callers honour it only from the server itself or a
    room's bare JID, which no client can send as."""
    container = get_child(stanza, ns.JSON, "json")
    if container is None or not container.text:
        return None
    try:
        doc = json.loads(container.text)
    except ValueError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("ev"), str):
        return None
    return doc["ev"], doc.get("data")


# ---- 1:1 ----------------------------------------------------------------------------------------


def chat_message(
    stanza: Element, own: str, archive_id: str | None, stamp: str | None, delayed: bool
) -> dict[str, Any] | None:
    """A 1:1 message with a body as a message object (None without a body)."""
    body = child_text(stanza, ns.CLIENT, "body")
    if body is None:
        return None
    sender, to = stanza.get("from") or own, stanza.get("to") or own
    out: dict[str, Any] = {
        "from": bare(sender),
        "to": bare(to),
        "with": bare(to) if bare(sender) == own else bare(sender),
        "body": body,
        "type": stanza.get("type", "normal"),
        "stamp": stamp or delay_stamp(stanza) or now_stamp(),
    }
    if archive_id is not None:
        out["id"] = archive_id
    if (mid := msg_id(stanza)) is not None:
        out["msg_id"] = mid
    if not delayed and "/" in sender:
        out["resource"] = sender.partition("/")[2]
    replace = get_child(stanza, ns.CORRECT, "replace")
    if replace is not None and replace.get("id"):
        out["replace"] = replace.get("id")
    retract = get_child(stanza, ns.RETRACT, "retract")
    if retract is not None and retract.get("id"):  # archived retraction: no body to show
        del out["body"]
        out["retract"] = retract.get("id")
    if delayed:
        out["delayed"] = True
    return out


def chat_extras(stanza: Element, own: str) -> list[tuple[str, dict[str, Any]]]:
    """The events a 1:1 message carries besides its body: chat state, receipts and markers,
    a retraction. `with` is always the conversation (the peer)."""
    sender, to = bare(stanza.get("from") or own), bare(stanza.get("to") or own)
    peer = to if sender == own else sender
    events: list[tuple[str, dict[str, Any]]] = []
    retract = get_child(stanza, ns.RETRACT, "retract")
    if retract is not None and retract.get("id"):
        events.append(("retract", {"from": sender, "with": peer, "msg_id": retract.get("id")}))
        return events
    for state in CHAT_STATES:
        if get_child(stanza, ns.CHATSTATES, state) is not None and sender != own:
            resource = (stanza.get("from") or "").partition("/")[2]
            events.append(("chat_state", {"from": sender, "resource": resource, "state": state}))
    receipt = get_child(stanza, ns.RECEIPTS, "received")
    if receipt is not None and receipt.get("id"):
        marker = {"from": sender, "with": peer, "type": "received", "msg_id": receipt.get("id")}
        events.append(("marker", marker))
    for kind in ("received", "displayed", "acknowledged"):
        marker_el = get_child(stanza, ns.MARKERS, kind)
        if marker_el is not None and marker_el.get("id"):
            marker = {"from": sender, "with": peer, "type": kind, "msg_id": marker_el.get("id")}
            events.append(("marker", marker))
    return events


def outgoing_chat(to: str, body: str, mid: str | None, type_: str = "chat") -> Element:
    """What a JSON `new_msg` sends: body, origin-id, and asks for receipts and markers."""
    mid = mid or secrets.token_hex(8)
    message = make("message", {"type": type_, "to": to, "id": mid})
    sub(message, ns.CLIENT, "body", body)
    sub(message, ns.SID, "origin-id", id=mid)
    sub(message, ns.MARKERS, "markable")
    sub(message, ns.RECEIPTS, "request")
    sub(message, ns.CHATSTATES, "active")
    return message


def retraction(to: str, target: str, type_: str = "chat") -> Element:
    message = make("message", {"type": type_, "to": to, "id": secrets.token_hex(8)})
    sub(message, ns.RETRACT, "retract", id=target)
    sub(message, ns.FALLBACK, "fallback", **{"for": ns.RETRACT})
    sub(message, ns.CLIENT, "body", RETRACT_FALLBACK)
    sub(message, ns.HINTS, "store")
    return message


def signal(to: str, namespace: str, local: str, type_: str = "chat", **attrs: str) -> Element:
    """A body-less message (chat state, receipt, marker): not stored offline."""
    message = make("message", {"type": type_, "to": to, "id": secrets.token_hex(8)})
    sub(message, namespace, local, **attrs)
    sub(message, ns.HINTS, "no-store")
    return message


# ---- presence ---------------------------------------------------------------------------------


def presence_meta(stanza: Element) -> dict[str, Any]:
    show = child_text(stanza, ns.CLIENT, "show")
    priority = child_text(stanza, ns.CLIENT, "priority")
    try:
        prio = int(priority) if priority is not None else 0
    except ValueError:
        prio = 0
    return {
        "resource": (stanza.get("from") or "").partition("/")[2],
        "show": show if show in SHOWS else None,
        "status": child_text(stanza, ns.CLIENT, "status"),
        "priority": prio,
    }


def own_presence(show: str | None, status: str | None) -> Element:
    presence = make("presence")
    if show:
        sub(presence, ns.CLIENT, "show", show)
    if status:
        sub(presence, ns.CLIENT, "status", status)
    return presence


# ---- rooms --------------------------------------------------------------------------------------


def room_message(
    stanza: Element, room_jid: str, show_jid: str | None, delayed: bool, author: str = ""
) -> dict[str, Any] | None:
    body = child_text(stanza, ns.CLIENT, "body")
    if body is None and get_child(stanza, ns.RETRACT, "retracted") is None:
        return None  # a tombstone has no body but is shown
    out: dict[str, Any] = {
        "from": (stanza.get("from") or "").partition("/")[2],
        "body": body or "",
        "type": "groupchat",
        "stamp": delay_stamp(stanza) or now_stamp(),
    }
    if (sid := stanza_id(stanza, room_jid)) is not None:
        out["id"] = sid
    if (mid := msg_id(stanza)) is not None:
        out["msg_id"] = mid
    if show_jid:
        out["jid"] = show_jid
    elif author:
        out["jid"] = bare(author)
    replace = get_child(stanza, ns.CORRECT, "replace")
    if replace is not None and replace.get("id"):
        out["replace"] = replace.get("id")
    retracted = get_child(stanza, ns.RETRACT, "retracted")
    if retracted is not None:
        info: dict[str, Any] = {"stamp": retracted.get("stamp")}
        moderated = get_child(retracted, ns.MODERATE, "moderated")
        if moderated is not None:
            info["by"] = (moderated.get("by") or "").partition("/")[2]
        if (reason := child_text(retracted, ns.RETRACT, "reason")) is not None:
            info["reason"] = reason
        out["body"], out["retracted"] = "", info
    event = system_event(stanza) if "/" not in (stanza.get("from") or "/") else None
    if event is not None:  # a system post of the room with a fallback body, in history
        out["event"] = {"ev": event[0], "data": event[1]}
    if delayed:
        out["delayed"] = True
    return out


def room_retraction(stanza: Element) -> dict[str, Any] | None:
    """A XEP-0424 / XEP-0425 retraction reflected by the room."""
    retract = get_child(stanza, ns.RETRACT, "retract")
    if retract is None or not retract.get("id"):
        return None
    out: dict[str, Any] = {"id": retract.get("id"), "moderated": False}
    moderated = get_child(retract, ns.MODERATE, "moderated")
    if moderated is not None:
        out["moderated"] = True
        out["by"] = (moderated.get("by") or "").partition("/")[2]
    else:
        out["from"] = (stanza.get("from") or "").partition("/")[2]
    if (reason := child_text(retract, ns.RETRACT, "reason")) is not None:
        out["reason"] = reason
    return out
