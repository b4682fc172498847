"""SIGHUP on a real server: live log level and login limits, restart-only keys reported, a
broken file refused while the server keeps serving (xmppd/reload.py)."""

from __future__ import annotations

import base64
import os
import signal
import time
from collections.abc import Iterator

import pytest
from support import HEADER, RawClient, ServerProcess, connect, run

SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
LOGIN = 'exempt = ["127.0.0.1"]\nslow_after = 10\nban_after = 10'
GUESSER = "127.0.0.2"


@pytest.fixture()
def server(tmp_path: object) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path, login_config=LOGIN)  # type: ignore[arg-type]
    edit(proc, 'log_level = "debug"', 'log_level = "info"')
    proc.add_user("alice", "alice-secret")
    proc.start()
    yield proc
    proc.stop()


def edit(server: ServerProcess, old: str, new: str) -> None:
    text = server.config_path.read_text()
    assert old in text
    server.config_path.write_text(text.replace(old, new))


def hup(server: ServerProcess, expect: str) -> str:
    """Send SIGHUP; wait for the log line `expect` that the reload writes; the new log text."""
    assert server.proc is not None
    deadline = time.monotonic() + 10
    while "xmppd serving" not in server.log_text():  # SIGHUP is ignored while starting
        assert time.monotonic() < deadline, "the server did not finish starting"
        time.sleep(0.05)
    seen = server.log_text().count(expect)
    os.kill(server.proc.pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while server.log_text().count(expect) == seen:
        assert time.monotonic() < deadline, f"no {expect!r} after SIGHUP:\n{server.log_text()}"
        time.sleep(0.05)
    return server.log_text()


def failed_login(server: ServerProcess) -> bytes:
    """One wrong password over STARTTLS from the guesser's address; what the server answered."""
    client = RawClient(server, source=GUESSER)
    try:
        client.starttls()
        client.send(HEADER)
        client.read_until("</stream:features>")
        token = base64.b64encode(b"\0alice\0wrong").decode()
        client.send(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{token}</auth>")
        return client.read_until("</failure>")
    finally:
        client.close()


def logged_connections(server: ServerProcess) -> int:
    return server.log_text().count(" connected from 127.0.0.1")


def wait_connections(server: ServerProcess, count: int) -> int:
    deadline = time.monotonic() + 5
    while logged_connections(server) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return logged_connections(server)


def test_sighup_changes_the_log_level_and_a_login_limit_live(server: ServerProcess) -> None:
    time.sleep(0.3)  # start() probed the ports: those connections are logged first
    before = logged_connections(server)
    RawClient(server).close()
    assert wait_connections(server, before + 1) == before + 1  # info lines are written

    assert b"not-authorized" in failed_login(server)  # failure 1 of ban_after = 10
    edit(server, 'log_level = "info"', 'log_level = "warning"')
    edit(server, "ban_after = 10", "ban_after = 2")
    edit(server, "[c2s]", "[c2s]\nrequire_encryption = false  # needs a restart")
    text = hup(server, "changed in")
    assert "applied server.log_level, limits.login.ban_after" in text
    assert "needing a restart: c2s.require_encryption" in text

    RawClient(server).close()
    failed_login(server)  # failure 2: bans the address now that ban_after is 2
    time.sleep(0.5)
    assert logged_connections(server) == before + 1  # the new connection wrote no info line
    assert f"login ban of {GUESSER} for" in server.log_text()  # a warning: still written
    banned = RawClient(server, source=GUESSER)
    assert b"policy-violation" in banned.read_to_close(timeout=5)

    async def still_serving() -> None:  # the restart-only key kept its running value
        client = await connect(server, "alice", password="alice-secret")
        await client.close()

    run(still_serving())


def test_a_broken_file_is_refused_and_the_old_config_keeps_running(server: ServerProcess) -> None:
    edit(server, 'log_level = "info"', 'log_level = "loud"')
    text = hup(server, "reload refused")
    line = next(t for t in text.splitlines() if "reload refused" in t)
    lines = server.config_path.read_text().splitlines()
    number = lines.index('log_level = "loud"') + 1
    assert f"xmppd.toml:{number}: server.log_level: must be one of" in line  # line and key
    assert "the running configuration stays" in line
    edit(server, 'log_level = "loud"', 'log_level = "info"\nbogus = 1')
    line = hup(server, "reload refused").splitlines()[-1]
    assert "server.bogus" in line and "unknown option" in line
    edit(server, "bogus = 1", "[[[")
    assert "TOML syntax error" in hup(server, "reload refused").splitlines()[-1]

    async def still_serving() -> None:
        client = await connect(server, "alice", password="alice-secret")
        await client.close()

    run(still_serving())
    assert server.alive()
    before = logged_connections(server)
    RawClient(server).close()
    assert wait_connections(server, before + 1) == before + 1  # still at the running level
