"""Roles of accounts: `admin`, `user` (the default) and `limited`.

Where they come from:
- `[server] admins` and `[server] limited`: bare JIDs in the TOML file (any served host);
- with `[auth] backend = "ldap"`: members of `[auth.ldap] admin_group` and `limited_group`,
  as the directory module last read them (`modules/directory.py`, refreshed every
  `refresh_interval`).
Admin wins over limited when an account is listed as both.

What they mean:
- `admin`: sees and runs the XEP-0133 ad-hoc commands (modules/adhoc_admin.py), is an owner of
  every room of the MUC services (XEP-0045 §5.2: service admins have owner privileges), and may
  use whatever the admin HTTP API lets admins do.
- `limited`: chats with its contacts and joins rooms, but may not create rooms nor ask
  strangers for a subscription (modules/abuse.py), and by default refuses messages and
  subscription requests from strangers (`[server] limited_block_strangers`).

One `Roles` object serves every host: `host.services["roles"]` and `server.roles`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from .host import Host

ADMIN, USER, LIMITED = "admin", "user", "limited"
DIRECTORY_WAIT = 5.0  # seconds `role_settled` waits for a first directory read


class Roles:
    def __init__(
        self,
        hosts: dict[str, Host],
        admins: Iterable[str] = (),
        limited: Iterable[str] = (),
        *,
        limited_block_strangers: bool = True,
    ) -> None:
        self.hosts = hosts
        self.admins = frozenset(a.lower() for a in admins)
        self.limited = frozenset(a.lower() for a in limited)
        self.limited_block_strangers = limited_block_strangers

    @classmethod
    def from_config(cls, hosts: dict[str, Host], server: dict[str, Any]) -> Roles:
        return cls(
            hosts,
            server["admins"],
            server["limited"],
            limited_block_strangers=server["limited_block_strangers"],
        )

    def role_of(self, bare: str) -> str:
        """The role of an account (bare JID); `user` for anyone unknown, remote JIDs too."""
        bare = bare.lower()
        if bare in self.admins:
            return ADMIN
        groups = self._directory_groups(bare)
        if groups is not None and groups[0]:
            return ADMIN
        if bare in self.limited or (groups is not None and groups[1]):
            return LIMITED
        return USER

    def is_admin(self, bare: str) -> bool:
        return self.role_of(bare) == ADMIN

    def is_limited(self, bare: str) -> bool:
        return self.role_of(bare) == LIMITED

    async def role_settled(self, bare: str) -> str:
        """`role_of` once the directory of the account's host has been read (at most
        DIRECTORY_WAIT): a decision that refuses (ad-hoc commands) should not be taken on
        the empty view of a server that just started."""
        directory = self._directory(bare)
        ready = getattr(directory, "ready", None)
        if directory is not None and directory.ldap is not None and ready is not None:
            with trio.move_on_after(DIRECTORY_WAIT):
                await ready.wait()
        return self.role_of(bare)

    def _directory(self, bare: str) -> Any:
        host = self.hosts.get(bare.partition("@")[2])
        return host.services.get("directory") if host is not None else None

    def _directory_groups(self, bare: str) -> tuple[bool, bool] | None:
        """(in the admin group, in the limited group) from the last directory read."""
        directory = self._directory(bare)
        snapshot = getattr(directory, "snapshot", None)
        if snapshot is None:
            return None
        local = bare.partition("@")[0]
        return local in snapshot.admins, local in snapshot.limited


def roles_of(host: Host) -> Roles:
    """The roles service of a host (a bare one, with no source, when the server made none:
    hosts built by tests)."""
    roles = host.services.get("roles")
    if roles is None:
        roles = host.services["roles"] = Roles(host.hosts)
    return roles
