"""Fixtures of the hook tests: a server with API keys and quick retries."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from apisupport import client, start_server
from support import ServerProcess

HOOKS = """
[hooks]
retry_base = 0.1
retry_max = 0.5
timeout = 1.0
max_attempts = 4
"""


@pytest.fixture(scope="module")
def hook_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_server(tmp_path_factory.mktemp("xmppd-hooks"), HOOKS)
    yield proc
    proc.stop()


@pytest.fixture
def ops(hook_server: ServerProcess) -> Iterator[httpx.Client]:
    with client(hook_server) as http:
        yield http
