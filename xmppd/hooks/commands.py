"""Slash commands typed in a room (or to the server's bot, the host JID) that manage
subscriptions from the chat: `/watch`, `/follow`, `/mute`, `/status`, `/help`.

    /watch [target] [word ...] [#tag ...]    every message of the room (that matches)
    /follow [target] [word ...] [#tag ...]   only messages that start a thread
    /mute [id]                               stop one (or all of yours) without deleting it
    /status                                  what this room is subscribed to
    /help

A target is an https URL (generic webhook), `slack:<url>`, or a JID (the in-server bridge);
without one it is you, by a 1:1 message. Subscribing yourself is yours to do; any other
target is the room's, which only a room owner manages. Commands are answered to their author
alone, never archived nor sent to the room; `/me` (XEP-0245) is no command. In a 1:1 with the
bot the room is named first: `/watch room@conference.example.org deploy`.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ..protocol import namespaces as ns
from ..protocol.stanza import make, sub
from .model import Subscription, SubscriptionError

if TYPE_CHECKING:
    from ..muc.messages import RoomCommandEvent
    from ..router import StanzaEvent
    from .service import HookService

NAMES = ("watch", "follow", "mute", "status", "help")
NOT_COMMANDS = ("/me ", "/me\n")
HELP = (
    "Commands: /watch [target] [words] [#tags] - every message here (that matches); "
    "/follow [target] [words] [#tags] - new threads only; /mute [id] - stop one or all of "
    "yours; /status - this room's subscriptions; /help. A target is an https URL, "
    "slack:<url> or a JID; none means you."
)


def is_command(text: str) -> bool:
    return text.startswith("/") and not text.startswith(NOT_COMMANDS) and text != "/me"


class Commands:
    def __init__(self, hooks: HookService) -> None:
        self.hooks = hooks

    async def in_room(self, event: RoomCommandEvent) -> bool:
        if not is_command(event.text):
            return False
        room = event.room
        owner = room.affiliation(event.bare) == "owner"
        name, reply = await self.run(event.text, room.jid, event.bare, owner)
        out = make("message", {"from": room.jid, "to": event.real, "type": "groupchat"})
        _fill(out, name, reply)
        room.service.deliver_to_full(event.real, out)
        return True

    async def to_bot(self, event: StanzaEvent) -> bool:
        stanza, sender = event.stanza, event.sender
        body = stanza.find(f"{{{ns.CLIENT}}}body")
        text = body.text or "" if body is not None else ""
        if sender is None or stanza.get("type") == "error" or not is_command(text):
            return False
        words = text.split()
        room_jid = words[1] if len(words) > 1 and "@" in words[1] else None
        room = await self.hooks.find_room(room_jid) if room_jid else None
        bare = str(sender).partition("/")[0]
        if room is not None and not _may_read(room, bare):
            name, reply = "help", "You may not read that room."
        elif room is None and words[0][1:] not in ("help", "status"):
            name, reply = "help", "Name the room first: /watch room@service [words]. " + HELP
        else:
            rest = " ".join(words[:1] + words[2:]) if room is not None else text
            owner = room is not None and room.affiliation(bare) == "owner"
            name, reply = await self.run(rest, room.jid if room else None, bare, owner)
        out = make("message", {"from": event.host.domain, "to": str(sender), "type": "chat"})
        _fill(out, name, reply)
        await event.host.route(None, out)
        return True

    async def run(self, text: str, room: str | None, bare: str, owner: bool) -> tuple[str, str]:
        """(command name, the answer); unknown commands answer with the help."""
        name, *args = text[1:].split() or ["help"]
        name = name.lower()
        if name not in NAMES or name == "help":
            return "help", HELP
        try:
            if name in ("watch", "follow"):
                return name, await self._subscribe(name, args, room, bare, owner)
            if name == "mute":
                return name, await self._mute(args, room, bare, owner)
            return name, self._status(room, bare, owner)
        except SubscriptionError as exc:
            return name, f"Refused: {exc}"

    async def _subscribe(
        self, mode: str, args: list[str], room: str | None, bare: str, owner: bool
    ) -> str:
        if room is None:
            raise SubscriptionError("room", "name the room")
        provider, target, words, tags = "xmpp", {"jid": bare}, [], []
        for arg in args:
            if arg.startswith(("https://", "http://")):
                provider, target = "webhook", {"url": arg}
            elif arg.startswith("slack:"):
                provider, target = "slack", {"url": arg[6:]}
            elif "@" in arg and not arg.startswith("#"):
                provider, target = "xmpp", {"jid": arg}
            elif arg.startswith("#") and len(arg) > 1:
                tags.append(arg[1:])
            else:
                words.append(arg)
        if target != {"jid": bare} and not owner:
            raise SubscriptionError("target", "only a room owner sends this room elsewhere")
        fields: dict[str, Any] = {
            "source": "room", "room": room, "events": ["message"], "provider": provider,
            "target": target, "keywords": words, "tags": tags,
            "mode": "watch" if mode == "watch" else "follow",
        }  # fmt: skip
        made = await self.hooks.create(fields, bare)
        what = " ".join(words + [f"#{t}" for t in tags]) or "every message"
        where = target.get("jid") or target.get("url")
        return f"Subscribed {made.id}: {what} -> {where}"

    async def _mute(self, args: list[str], room: str | None, bare: str, owner: bool) -> str:
        mine = [s for s in self._visible(room, bare, owner) if self._may_manage(s, bare, owner)]
        if args:
            mine = [s for s in mine if s.id == args[0]]
            if not mine:
                raise SubscriptionError("id", f"no subscription {args[0]} of yours here")
        for found in mine:
            await self.hooks.update(found.id, mode="mute")
        return f"Muted {len(mine)}: " + " ".join(s.id for s in mine) if mine else "Nothing to mute"

    def _status(self, room: str | None, bare: str, owner: bool) -> str:
        subs = self._visible(room, bare, owner)
        if not subs:
            return "No subscriptions here."
        return "\n".join(_line(s) for s in subs)

    def _visible(self, room: str | None, bare: str, owner: bool) -> list[Subscription]:
        subs = sorted(self.hooks.matcher.subs.values(), key=lambda s: s.created)
        if room is not None:
            mine = [s for s in subs if owner or s.owner == bare or s.target.get("jid") == bare]
            return [s for s in mine if s.room == room]
        return [s for s in subs if s.owner == bare]

    @staticmethod
    def _may_manage(sub: Subscription, bare: str, owner: bool) -> bool:
        return owner or sub.owner == bare


def _may_read(room: Any, bare: str) -> bool:
    """From outside the room: what entering it would allow (members-only, password, bans)."""
    affiliation = room.affiliation(bare)
    if affiliation == "outcast":
        return False
    closed = room.config.members_only or room.config.password_protected
    return not (closed and affiliation == "none")


def _line(s: Subscription) -> str:
    what = " ".join(s.keywords + [f"#{t}" for t in s.tags] + s.patterns) or "every message"
    where = s.target.get("jid") or s.target.get("url") or s.provider
    return f"{s.id} {s.mode} {what} -> {s.provider} {where}"


def _fill(out: Any, name: str, reply: str) -> None:
    """Readable body for XMPP clients; the event `command` for JSON-channel clients."""
    sub(out, ns.CLIENT, "body", reply)
    container = sub(out, ns.JSON, "json")
    container.text = json.dumps({"ev": "command", "data": {"command": name, "text": reply}})
