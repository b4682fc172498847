"""Durable PEP nodes and items.

keyval `pep_nodes`: per account, `{node: config}` (read on every login for contacts' last items,
so it stays small); map `pep_items`: per account, key = node, value `{"items": [[id, xml], ...]}`
oldest first. Nodes with `persist_items` false keep their items in memory only.
"""

from __future__ import annotations

from ..storage.base import KeyValueStore, MapStore
from .config import Config

Item = list[str]  # [id, serialized payload]


class NodeStore:
    def __init__(self, nodes: KeyValueStore, items: MapStore) -> None:
        self._nodes = nodes
        self._items = items
        self._transient: dict[tuple[str, str], list[Item]] = {}

    async def nodes(self, user: str) -> dict[str, Config]:
        doc = await self._nodes.get(user)
        return dict(doc["nodes"]) if doc else {}

    async def save_node(self, user: str, node: str, config: Config) -> None:
        nodes = await self.nodes(user)
        nodes[node] = config
        await self._nodes.set(user, {"nodes": nodes})

    async def delete_node(self, user: str, node: str) -> None:
        await self.save_items(user, node, {"persist_items": True}, [])
        self._transient.pop((user, node), None)
        nodes = await self.nodes(user)
        nodes.pop(node, None)
        await self._nodes.set(user, {"nodes": nodes} if nodes else None)

    async def delete_user(self, user: str) -> None:
        """Every node and item of a deleted account."""
        await self._items.delete_user(user)
        await self._nodes.set(user, None)
        for key in [k for k in self._transient if k[0] == user]:
            del self._transient[key]

    async def items(self, user: str, node: str, config: Config) -> list[Item]:
        if not config["persist_items"]:
            return list(self._transient.get((user, node), []))
        doc = await self._items.get(user, node)
        return [list(item) for item in doc["items"]] if doc else []

    async def save_items(self, user: str, node: str, config: Config, items: list[Item]) -> None:
        if not config["persist_items"]:
            self._transient[(user, node)] = items
            return
        await self._items.set(user, node, {"items": items} if items else None)
