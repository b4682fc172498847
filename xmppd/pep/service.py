"""The PEP service of one host's accounts (XEP-0163 on XEP-0060): nodes, items, access
models, notifications and last items; `xmppd/modules/pep.py` turns requests into calls here."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio
from lxml import etree

from ..modules.presence import SEES_US, WE_SEE
from ..protocol import namespaces as ns
from ..protocol.stanza import Element, copy, element, make, sub
from .config import Config, default, unmet
from .store import Item, NodeStore

if TYPE_CHECKING:
    from ..module import Module
    from ..session import Session

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, remove_comments=True)


class PubsubError(Exception):
    """A request refused: stanza condition plus an optional pubsub#errors condition."""

    def __init__(
        self, condition: str, app: str | None = None, text: str | None = None, feature: str = ""
    ) -> None:
        super().__init__(text or condition)
        self.condition, self.app, self.text = condition, app, text
        self.feature = feature  # for `<unsupported feature='...'/>` (XEP-0060 §7.1.3)


def elements(parent: Element) -> list[Element]:
    return [child for child in parent if isinstance(child.tag, str)]


def serialize(el: Element) -> str:
    el = copy(el)
    etree.cleanup_namespaces(el)
    return etree.tostring(el, encoding="unicode")


def parse(xml: str) -> Element:
    return etree.fromstring(xml.encode(), _PARSER)


def local_of(bare: str) -> str:
    return bare.partition("@")[0]


class Pep:
    """The PEP services of one host's accounts; also the "pep" service."""

    def __init__(self, module: Module) -> None:
        self.module = module
        self.host = module.host
        opts = module.options
        self.max_nodes: int = opts["max_nodes"]
        self.max_items: int = opts["max_items"]
        self.max_item_size: int = opts["max_item_size"]
        self.max_members: int = opts["max_whitelist"]
        self._locks: dict[str, trio.Lock] = {}
        self._users: dict[str, int] = {}  # tasks using each lock, to drop it when unused
        self.store = NodeStore(module.open_keyval("pep_nodes"), module.open_map("pep_items"))

    @property
    def roster(self) -> Any:
        return self.host.services["roster"]

    def features_of(self, full: str) -> frozenset[str]:
        caps = self.host.services.get("caps")
        return caps.features(full) if caps is not None else frozenset()

    # ---- access ---------------------------------------------------------------------------

    @asynccontextmanager
    async def changing(self, owner: str) -> AsyncIterator[None]:
        """One change at a time per account: two resources publishing at once must not lose an
        item to each other's read-modify-write."""
        lock = self._locks.setdefault(owner, trio.Lock())
        self._users[owner] = self._users.get(owner, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._users[owner] -= 1
            if not self._users[owner]:
                del self._users[owner], self._locks[owner]

    async def check_access(self, owner: str, config: Config, requester: str) -> None:
        """XEP-0060 §6.5.9: raise the error a requester not allowed to read gets."""
        model = config["access_model"]
        if requester == owner or model == "open":
            return
        if model == "presence":
            doc = await self.roster.peek(owner, requester)
            if doc is not None and doc["listed"] and doc["sub"] in SEES_US:
                return
            raise PubsubError("not-authorized", "presence-subscription-required")
        if requester in config.get("members", ()):
            return  # on the whitelist (member affiliation, §8.9)
        raise PubsubError("not-allowed", "closed-node")

    async def node(self, owner: str, node: str | None) -> Config:
        if not node:
            raise PubsubError("bad-request", "nodeid-required")
        config = (await self.store.nodes(local_of(owner))).get(node)
        if config is None:
            raise PubsubError("item-not-found", text=f"no node {node!r}")
        return config

    # ---- owner operations -----------------------------------------------------------------

    async def publish(
        self, owner: str, node: str, item: Element | None, options: Config | None
    ) -> str:
        """Store one item (creating the node), notify, and return its id."""
        if item is None:
            raise PubsubError("bad-request", "item-required")
        payloads = elements(item)
        if not payloads:
            raise PubsubError("bad-request", "payload-required")
        if len(payloads) > 1:
            raise PubsubError("bad-request", "invalid-payload", "one payload per item")
        xml = serialize(payloads[0])
        if len(xml.encode()) > self.max_item_size:
            raise PubsubError("not-acceptable", "payload-too-big")
        item_id = item.get("id") or uuid.uuid4().hex
        user = local_of(owner)
        nodes = await self.store.nodes(user)
        config = nodes.get(node)
        if config is None:
            config = await self.create(owner, node, options or {}, nodes)
        elif options and (mismatch := unmet(config, options)) is not None:
            raise PubsubError("conflict", "precondition-not-met", f"{mismatch} differs")
        items = [i for i in await self.store.items(user, node, config) if i[0] != item_id]
        items = [*items, [item_id, xml]][-config["max_items"] :]
        await self.store.save_items(user, node, config, items)
        await self.notify(owner, node, config, self.items_event(node, config, [[item_id, xml]]))
        return item_id

    async def create(
        self, owner: str, node: str, options: Config, nodes: dict[str, Config] | None = None
    ) -> Config:
        user = local_of(owner)
        nodes = await self.store.nodes(user) if nodes is None else nodes
        if node in nodes:
            raise PubsubError("conflict", text=f"node {node!r} exists")
        if len(nodes) >= self.max_nodes:
            raise PubsubError("not-allowed", "max-nodes-exceeded", f"at most {self.max_nodes}")
        config = {**default(self.max_items), **options}
        await self.store.save_node(user, node, config)
        return config

    async def retract(self, owner: str, node: str, item_ids: list[str], notify: bool) -> None:
        user = local_of(owner)
        config = await self.node(owner, node)
        if not item_ids:
            raise PubsubError("bad-request", "item-required")
        items = await self.store.items(user, node, config)
        if not set(item_ids) <= {i[0] for i in items}:
            raise PubsubError("item-not-found", text="no such item")
        await self.store.save_items(user, node, config, [i for i in items if i[0] not in item_ids])
        if notify or config["notify_retract"]:
            event = element(ns.PUBSUB_EVENT, "items", node=node)
            for item_id in item_ids:
                sub(event, ns.PUBSUB_EVENT, "retract", id=item_id)
            await self.notify(owner, node, config, event)

    async def delete(self, owner: str, node: str) -> None:
        config = await self.node(owner, node)
        await self.store.delete_node(local_of(owner), node)
        if config["notify_delete"]:
            await self.notify(owner, node, config, element(ns.PUBSUB_EVENT, "delete", node=node))

    async def purge(self, owner: str, node: str) -> None:
        config = await self.node(owner, node)
        await self.store.save_items(local_of(owner), node, config, [])
        if config["notify_retract"]:
            await self.notify(owner, node, config, element(ns.PUBSUB_EVENT, "purge", node=node))

    async def configure(self, owner: str, node: str, options: Config) -> None:
        config = {**await self.node(owner, node), **options}
        user = local_of(owner)
        items = await self.store.items(user, node, await self.node(owner, node))
        await self.store.save_node(user, node, config)
        await self.store.save_items(user, node, config, items[-config["max_items"] :])

    async def set_members(self, owner: str, node: str, changes: dict[str, bool]) -> None:
        """XEP-0060 §8.9.2: grant (True) or remove (False) the member affiliation."""
        config = await self.node(owner, node)
        members = set(config.get("members", ()))
        members |= {jid for jid, member in changes.items() if member}
        members -= {jid for jid, member in changes.items() if not member}
        if len(members) > self.max_members:
            raise PubsubError("not-acceptable", text=f"at most {self.max_members} members")
        await self.store.save_node(local_of(owner), node, {**config, "members": sorted(members)})

    async def visible_nodes(self, owner: str, requester: str) -> list[tuple[str, Config]]:
        """The owner's nodes the requester may read (XEP-0060 §5.2 discovery)."""
        visible = []
        for node, config in sorted((await self.store.nodes(local_of(owner))).items()):
            try:
                await self.check_access(owner, config, requester)
            except PubsubError:
                continue
            visible.append((node, config))
        return visible

    # ---- reading --------------------------------------------------------------------------

    async def items(
        self, owner: str, node: str, requester: str, ids: list[str], last: int | None
    ) -> list[Item]:
        config = await self.node(owner, node)
        await self.check_access(owner, config, requester)
        items = await self.store.items(local_of(owner), node, config)
        if ids:
            items = [i for i in items if i[0] in ids]
            if not items:
                raise PubsubError("item-not-found", text="no such item")
        elif last is not None:
            items = items[-last:]
        return items

    # ---- notifications --------------------------------------------------------------------

    def items_event(self, node: str, config: Config, items: list[Item]) -> Element:
        event = element(ns.PUBSUB_EVENT, "items", node=node)
        for item_id, xml in items:
            out = sub(event, ns.PUBSUB_EVENT, "item", id=item_id)
            if config["deliver_payloads"]:
                out.append(parse(xml))
        return event

    def sessions_of(self, bare: str) -> list[Session]:
        domain = bare.partition("@")[2]
        host = self.host.hosts.get(domain)
        if host is None:
            return []  # a remote contact: no server-to-server links yet
        return [s for s in host.resources_of(bare).values() if s.available]

    async def audience(self, owner: str, config: Config) -> list[Session]:
        """Available resources allowed to get the owner's events: its own, then contacts."""
        sessions = self.sessions_of(owner)
        if config["access_model"] == "whitelist":
            for member in config.get("members", ()):
                sessions += self.sessions_of(member)
        else:
            for contact in await self.roster.presence_contacts(owner, SEES_US):
                sessions += self.sessions_of(contact)
        return sessions

    async def notify(self, owner: str, node: str, config: Config, child: Element) -> None:
        wanted = f"{node}+notify"
        for session in await self.audience(owner, config):
            if wanted in self.features_of(session.full):
                await self.send_event(owner, session.full, child)

    async def send_event(self, owner: str, to: str, child: Element) -> None:
        message = make("message", {"from": owner, "to": to, "type": "headline"})
        sub(message, ns.PUBSUB_EVENT, "event").append(copy(child))
        await self.host.route(None, message)

    async def send_last(self, session: Session) -> None:
        """XEP-0163 §6.2: the last item of each node the resource wants, from its own account
        and from every contact whose presence it is subscribed to."""
        suffix = "+notify"
        features = self.features_of(session.full)
        wanted = {f.removesuffix(suffix) for f in features if f.endswith(suffix)}
        if not wanted or not session.available:
            return
        owners = [session.bare, *await self.roster.presence_contacts(session.bare, WE_SEE)]
        for owner in owners:
            host = self.host.hosts.get(owner.partition("@")[2])
            pep = host.services.get("pep") if host is not None else None
            if pep is not None:
                await pep.send_last_of(owner, session, wanted)

    async def send_last_of(self, owner: str, session: Session, wanted: set[str]) -> None:
        user = local_of(owner)
        for node, config in sorted((await self.store.nodes(user)).items()):
            if node not in wanted or config["send_last_published_item"] != "on_sub_and_presence":
                continue
            try:
                await self.check_access(owner, config, session.bare)
            except PubsubError:
                continue
            items = await self.store.items(user, node, config)
            if items:
                event = self.items_event(node, config, items[-1:])
                await self.send_event(owner, session.full, event)
