"""Storage kinds that modules open by name; they never see the driver.

- keyval: one JSON document per (store, user), e.g. accounts, private XML.
- map: many keyed JSON documents per (store, user), e.g. roster items.
An archive kind arrives with MAM.
"""

from __future__ import annotations

from typing import Any, Protocol

Document = dict[str, Any]


class KeyValueStore(Protocol):
    async def get(self, user: str) -> Document | None: ...

    async def set(self, user: str, value: Document | None) -> None:
        """Store `value` durably before returning; None deletes."""

    async def users(self) -> list[str]: ...


class MapStore(Protocol):
    async def get(self, user: str, key: str) -> Document | None: ...

    async def set(self, user: str, key: str, value: Document | None) -> None: ...

    async def get_all(self, user: str) -> dict[str, Document]: ...

    async def delete_user(self, user: str) -> None: ...


class Storage(Protocol):
    """One per virtual host; created by the driver factory from config."""

    def keyval(self, store: str) -> KeyValueStore: ...

    def map(self, store: str) -> MapStore: ...

    async def close(self) -> None: ...
