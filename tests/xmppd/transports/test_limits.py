"""Every listener limit, each on a server configured tight enough to hit it in a test."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import HEADER, NO_ACCOUNT_RATE, PASSWORDS, RawClient, ServerProcess, connect, run

LIMITS = """
[limits]
login_timeout = 2
idle_timeout = 3
keepalive_interval = 1
connections_per_ip = 6
bytes_per_second = 4096
burst_bytes = 2048
"""


def start_with(tmp: Path, config: str) -> ServerProcess:
    server = ServerProcess(tmp, config)
    for user, password in PASSWORDS.items():
        server.add_user(user, password)
    server.start()
    return server


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_with(tmp_path_factory.mktemp("tight"), LIMITS)
    yield server
    server.stop()


def test_login_timeout(tight: ServerProcess) -> None:
    client = RawClient(tight)
    client.send(HEADER)
    started = time.monotonic()
    reply = client.read_to_close(timeout=10)
    client.close()
    assert b"<connection-timeout" in reply
    assert 1.5 < time.monotonic() - started < 6
    # The log says what happened and which option sets it, in words.
    assert "login not finished within 2 s (limits.login_timeout); closing" in tight.log_text()


def test_keepalives_then_idle_timeout(tight: ServerProcess) -> None:
    client = RawClient(tight)
    client.login("alice", resource="idle")
    reply = client.read_to_close(timeout=15)
    client.close()
    assert reply.startswith(b" ")  # whitespace keepalives came first
    assert b"<connection-timeout" in reply


def test_connections_per_address(tight: ServerProcess) -> None:
    clients = [RawClient(tight) for _ in range(6)]
    try:
        refused = RawClient(tight)
        reply = refused.read_to_close()
        refused.close()
        assert b"<policy-violation" in reply
    finally:
        for client in clients:
            client.close()
    time.sleep(0.3)
    again = RawClient(tight)
    again.send(HEADER)
    assert b"<stream:features" in again.read_until("</stream:features>")
    again.close()


def test_fast_sender_is_paused_not_disconnected(tight: ServerProcess) -> None:
    async def scenario() -> None:
        alice = await connect(tight, "alice", "fast")
        bob = await connect(tight, "bob", "receiver")
        started = time.monotonic()
        for i in range(40):  # ~8 KiB on the wire: about 2 s at 4 KiB/s after a 2 KiB burst
            alice.send_message(mto="bob@localhost/receiver", mbody=f"{i:03d} " + "x" * 150)
        bodies = [(await bob.next_message(timeout=20))["body"][:3] for _ in range(40)]
        assert bodies == [f"{i:03d}" for i in range(40)]
        assert time.monotonic() - started > 1.0
        assert alice.is_connected()
        await alice.close()
        await bob.close()

    run(scenario())


@pytest.fixture(scope="module")
def small_queues(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_with(
        tmp_path_factory.mktemp("queues"),
        "[limits]\nqueued_bytes = 4096\nqueued_stanzas = 50\n"
        "bytes_per_second = 100000000\nburst_bytes = 100000000\n" + NO_ACCOUNT_RATE,
    )
    yield server
    server.stop()


def test_slow_reader_is_disconnected_and_its_stanzas_bounce(small_queues: ServerProcess) -> None:
    tight = small_queues
    sleeper = RawClient(tight)
    full = sleeper.login("carol", resource="asleep")
    sleeper.send("<presence/>")
    # carol stops reading; her socket buffers fill, then her mailbox overflows.

    async def scenario() -> None:
        bob = await connect(tight, "bob", "flooder")
        # Bounces of big messages carry no payload (protocol/stanza.py MAX_ERROR_PAYLOAD), and
        # slixmpp reports a message without a body only as message_error.
        bob.add_event_handler("message_error", bob.messages.put_nowait)
        body = "y" * 3000
        for _ in range(3000):  # ~9 MB: more than the kernel's socket buffers hold
            bob.send_message(mto=full, mbody=body, mtype="chat")
        # Every message either sat in carol's buffers, went to her offline storage or comes
        # back to bob as an error (storage full): none may vanish silently once carol is gone.
        error = await bob.next_message(timeout=120)  # after ~1,000 fsynced offline writes
        assert error["type"] == "error"
        assert error["error"]["condition"] in ("service-unavailable", "resource-constraint")
        await bob.close()

    try:
        run(scenario())
    finally:
        sleeper.close()
    assert "stopped reading" in tight.log_text()
