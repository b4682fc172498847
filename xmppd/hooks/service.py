"""`server.hooks`: subscriptions (stored, indexed), the outbox worker, and the server events
they listen to. Room messages are matched at the MUC event `room-archiving`, so their outbox
rows join the message's archive write, and handed to the worker at `room-posted`, once the
occupants have the message."""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING, Any

import trio

from ..protocol import namespaces as ns
from .commands import Commands
from .incoming import IncomingHooks, find_room
from .model import Event, Matcher, Subscription, SubscriptionError, from_document
from .outbox import Outbox

if TYPE_CHECKING:
    from ..events import AccountCreated, AccountDeleted
    from ..muc.messages import RoomMessageEvent
    from ..router import StanzaEvent
    from ..server import Server

log = logging.getLogger("xmppd.hooks")
SUBS_STORE, OUTBOX_STORE = "hook_subscriptions", "hook_outbox"
SUBS = "all"  # the map-store `user` holding every subscription


class HookService:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.settings = server.config.hooks
        self.matcher = Matcher()
        self.store: Any = None
        self.outbox: Outbox | None = None
        self.incoming: IncomingHooks | None = None
        self.commands = Commands(self)

    async def load(self, storage: Any) -> None:
        self.store = storage.map(SUBS_STORE)
        for doc in (await self.store.get_all(SUBS)).values():
            try:
                self.matcher.add(from_document(doc))
            except SubscriptionError as exc:  # written by an older version: say so, go on
                log.error("subscription %s not loaded: %s", doc.get("id"), exc)
        self.outbox = Outbox(self.server, storage.map(OUTBOX_STORE), self.settings)
        self.outbox.subs = self.matcher.subs
        await self.outbox.load()
        self.incoming = IncomingHooks(self.server, storage.map("hook_incoming"), self.settings)
        await self.incoming.load()

    def install(self) -> None:
        """Listen to the MUC services' room events and to commands for the bot (after the
        hosts are made). Commands to the bot run before delivery (priority 0.5)."""
        for host in self.server.hosts.values():
            host.events.hook("message/host", self.commands.to_bot, 0.5)
            host.events.hook("message/host", self.on_bot_message, 0.4)
            service = host.services.get("muc")
            if service is not None:
                service.component.events.hook("room-archiving", self.on_room_message)
                service.component.events.hook("room-posted", self.on_room_posted)
                service.component.events.hook("room-command", self.commands.in_room)
                service.component.events.hook("room-presence", self.on_room_presence)
                service.component.events.hook("room-lifecycle", self.on_room_lifecycle)
        self.install_accounts()

    def install_accounts(self) -> None:
        """Account events only: also in maintenance mode (`xmppd deluser` on a stopped server),
        whose outbox rows are delivered at the next start."""
        for host in self.server.hosts.values():
            host.events.hook("account-deleted", self.on_account_deleted, -0.5)
            host.events.hook("account-created", self.on_account_created, -0.5)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        import httpx  # the client verifies TLS certificates (the default); anyio runs on trio

        assert self.outbox is not None
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)
        async with httpx.AsyncClient(timeout=self.settings["timeout"], limits=limits) as client:
            task_status.started()
            await self.outbox.run(client)

    # ---- subscriptions -----------------------------------------------------------------

    async def create(self, fields: dict[str, Any], owner: str) -> Subscription:
        if len(self.matcher) >= self.settings["max_subscriptions"]:
            raise SubscriptionError("source", "the server keeps no more subscriptions")
        sub = Subscription(id=secrets.token_hex(8), owner=owner, **fields)
        await self.store.set(SUBS, sub.id, sub.document())
        self.matcher.add(sub)
        return sub

    async def update(self, sub_id: str, **changes: Any) -> Subscription | None:
        old = self.matcher.subs.get(sub_id)
        if old is None:
            return None
        sub = from_document({**old.document(), **changes})
        await self.store.set(SUBS, sub.id, sub.document())
        self.matcher.add(sub)
        return sub

    async def find_room(self, jid: str) -> Any:
        return await find_room(self.server, jid)

    async def delete(self, sub_id: str) -> Subscription | None:
        if sub_id not in self.matcher.subs:
            return None
        await self.store.set(SUBS, sub_id, None)
        return self.matcher.remove(sub_id)

    def page(self, after: str | None, limit: int, **where: Any) -> list[Subscription]:
        subs = sorted(self.matcher.subs.values(), key=lambda s: s.id)
        subs = [s for s in subs if all(getattr(s, k) == v for k, v in where.items() if v)]
        if after is not None:
            subs = [s for s in subs if s.id > after]
        return subs[:limit]

    # ---- events ----------------------------------------------------------------------------

    async def emit(self, event: Event) -> int:
        """One match pass; a durable outbox row per match before returning."""
        matched = self.matcher.match(event)
        assert self.outbox is not None
        for sub in matched:
            await self.outbox.put(sub, event)
        return len(matched)

    async def on_account_deleted(self, deleted: AccountDeleted) -> bool:
        if self.matcher.subs:
            stamp = secrets.token_hex(8)  # the account may come back: each deletion is new
            event = Event(id=f"deleted-{deleted.bare}-{stamp}", type="account-deleted",
                          source="accounts", sender=deleted.bare)  # fmt: skip
            await self.emit(event)
        return False

    async def on_account_created(self, created: AccountCreated) -> bool:
        if self.matcher.subs:
            stamp = secrets.token_hex(8)
            event = Event(id=f"created-{created.bare}-{stamp}", type="account-created",
                          source="accounts", sender=created.bare)  # fmt: skip
            await self.emit(event)
        return False

    async def account_banned(self, bare: str, until: float | None, reason: str) -> None:
        """Called by xmppd/bans.py once the ban is stored and the sessions ended."""
        if self.matcher.subs and self.outbox is not None:  # loaded (also in maintenance)
            event = Event(id=f"banned-{bare}-{secrets.token_hex(8)}", type="account-banned",
                          source="accounts", sender=bare, text=reason, until=until)  # fmt: skip
            await self.emit(event)

    async def on_room_presence(self, event: tuple[Any, str, str, str, str | None]) -> bool:
        """(room, "join" or "leave", bare JID, nick, removal) from muc/room.py."""
        if self.matcher.subs:
            room, kind, bare, nick, removal = event
            stamp = secrets.token_hex(8)
            await self.emit(Event(id=f"{kind}-{stamp}", type=kind, source="room", room=room.jid,
                                  sender=bare, nick=nick, removal=removal))  # fmt: skip
        return False

    async def on_room_lifecycle(self, event: tuple[str, str, str]) -> bool:
        """(room JID, "room-created" or "room-destroyed", creator) from muc/service.py."""
        if self.matcher.subs:
            room, kind, creator = event
            stamp = secrets.token_hex(8)
            await self.emit(Event(id=f"{kind}-{stamp}", type=kind, source="room", room=room,
                                  sender=creator or None))  # fmt: skip
        return False

    async def on_bot_message(self, event: StanzaEvent) -> bool:
        """Source `user`: what an account says to the server's bot (its domain, or a named bot
        `<domain>/<name>`) that is not a command. Taken when a subscription matched;
        otherwise it goes on to the router's answer as before."""
        stanza, sender = event.stanza, event.sender
        kind = stanza.get("type")
        if not self.matcher.subs or sender is None or kind in ("error", "headline", "groupchat"):
            return False
        body = stanza.find(f"{{{ns.CLIENT}}}body")
        if body is None or not body.text:
            return False
        bare = str(sender).partition("/")[0]
        stamp = secrets.token_hex(8)
        matched = await self.emit(Event(id=f"bot-{bare}-{stamp}", type="message",
                                        source="user", sender=bare, text=body.text))  # fmt: skip
        return matched > 0  # a subscription took it: no service-unavailable bounce

    async def on_room_message(self, event: RoomMessageEvent) -> bool:
        """Before the message is archived: its outbox rows join the archive write (one
        transaction), and the worker takes them once the room has posted it."""
        if not self.matcher.subs:
            return False
        assert self.outbox is not None
        hook_event = Event(
            id=event.stanza_id,
            type="retraction" if event.retraction else "message",
            source="room",
            room=event.room.jid,
            sender=event.sender,
            nick=event.nick,
            text=event.text,
            thread=event.thread,
            starts_thread=event.starts_thread,
        )
        for sub in self.matcher.match(hook_event):
            row = self.outbox.row(sub, hook_event)
            event.writes.append(self.outbox.write(row))
            event.rows.append(row)
        return False

    async def on_room_posted(self, event: RoomMessageEvent) -> bool:
        if event.rows and self.outbox is not None:
            self.outbox.adopt(event.rows)
        return False
