"""Fixtures of the admin API tests (helpers in tests/apisupport.py)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from apisupport import client, start_server
from support import ServerProcess


@pytest.fixture(scope="module")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_server(tmp_path_factory.mktemp("xmppd-api"))
    yield proc
    proc.stop()


@pytest.fixture
def ops(api_server: ServerProcess) -> Iterator[httpx.Client]:
    with client(api_server) as http:
        yield http
