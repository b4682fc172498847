"""Shared fixtures; the helpers they use live in tests/support.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support import PASSWORDS, RawClient, ServerProcess


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A shared server with accounts alice, bob and carol (passwords in PASSWORDS)."""
    proc = ServerProcess(tmp_path_factory.mktemp("xmppd"))
    for user, password in PASSWORDS.items():
        proc.add_user(user, password)
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def raw(server: ServerProcess) -> Iterator[RawClient]:
    client = RawClient(server)
    yield client
    client.close()
