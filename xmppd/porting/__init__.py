"""Moving accounts between servers: XEP-0227 (Portable Import/Export Format) files.

`xmppd import FILE|DIR` and `xmppd export FILE` load each host's modules exactly as `serve`
does, but start no listener, so data goes in and out through the same services and storage
formats the running server uses (the roster service, the vCard, private and offline stores,
the account store of auth/internal.py). Run them while the server is stopped: a running server
keeps the rosters of online accounts cached and would not see an import.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import Config
    from ..host import Host


@asynccontextmanager
async def loaded_hosts(config: Config) -> AsyncIterator[dict[str, Host]]:
    """Every configured host with its modules loaded, on the configured database; no sockets."""
    from ..server import Server
    from ..storage import open_database

    server = Server(config)
    server.db = await open_database(config.data_dir, **config.database_options)
    try:
        server._make_hosts()  # the same hosts, auth backends and modules as `serve`
        yield server.hosts
    finally:
        await server.db.close()
