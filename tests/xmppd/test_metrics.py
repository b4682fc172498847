"""/metrics on a real server: scraped over HTTP and parsed with prometheus-client's parser,
after real slixmpp logins and messages and a real WebSocket session (xmppd/metrics.py,
xmppd/transports/scrape.py)."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import HEADER, RawClient, ServerProcess, connect, free_port, run
from wssupport import websocket_login

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    metrics_port = free_port()
    server = ServerProcess(
        tmp_path_factory.mktemp("metrics"),
        http_config='trusted_proxies = ["127.0.0.1"]',
        extra_config=f"\n[metrics]\nport = {metrics_port}\n",
    )
    server.metrics_port = metrics_port  # type: ignore[attr-defined]
    for user in ("alice", "bob"):
        server.add_user(user, f"{user}-secret")
    server.start()
    yield server
    server.stop()


def get(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def scrape(server: ServerProcess) -> Samples:
    status, text = get(f"http://127.0.0.1:{server.http_port}/metrics")
    assert status == 200, text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def until(server: ServerProcess, check: Callable[[Samples], bool]) -> Samples:
    """Scrape until `check` holds (counters move right after the stanza is routed)."""
    deadline = time.monotonic() + 10
    while True:
        samples = await asyncio.to_thread(scrape, server)
        if check(samples) or time.monotonic() > deadline:
            return samples
        await asyncio.sleep(0.1)


def test_counters_move_with_real_logins_messages_and_a_websocket(server: ServerProcess) -> None:
    async def scenario() -> None:
        before = await asyncio.to_thread(scrape, server)
        alice = await connect(server, "alice", "phone", password="alice-secret")
        bob = await connect(server, "bob", "laptop", password="bob-secret")
        with pytest.raises(PermissionError):
            await connect(server, "bob", "x", password="wrong", mech="SCRAM-SHA-256")
        ws = await websocket_login(server, "alice", "alice-secret")
        try:
            alice.send_message(mto="bob@localhost/laptop", mbody="hello", mtype="chat")
            assert (await bob.next_message())["body"] == "hello"
            await alice["xep_0199"].send_ping("localhost", timeout=5)

            def moved(s: Samples) -> bool:
                return value(s, "xmppd_stanzas_in_total", kind="message") > value(
                    before, "xmppd_stanzas_in_total", kind="message"
                )

            after = await until(server, moved)
            assert value(after, "xmppd_sessions", transport="tls") == 2  # STARTTLS
            assert value(after, "xmppd_sessions", transport="websocket") == 1
        finally:
            await ws.close()
            await alice.close()
            await bob.close()

        def delta(name: str, **labels: str) -> float:
            return value(after, name, **labels) - value(before, name, **labels)

        assert delta("xmppd_logins_total", mechanism="SCRAM-SHA-256", result="ok") == 2
        assert delta("xmppd_logins_total", mechanism="SCRAM-SHA-256", result="failed") == 1
        assert delta("xmppd_logins_total", mechanism="PLAIN", result="ok") == 1
        assert delta("xmppd_stanzas_in_total", kind="message") == 1
        assert delta("xmppd_stanzas_out_total", kind="message") >= 1
        assert delta("xmppd_stanzas_in_total", kind="presence") >= 2
        assert delta("xmppd_stanzas_in_total", kind="iq") >= 1  # the ping
        kinds = ("message", "presence", "iq", "other")
        received = sum(delta("xmppd_stanzas_in_total", kind=k) for k in kinds)
        assert delta("xmppd_routing_seconds_count") == received  # one observation per stanza
        assert value(after, "xmppd_routing_seconds_bucket", le="+Inf") == value(
            after, "xmppd_routing_seconds_count"
        )
        assert delta("xmppd_storage_seconds_count") > 0  # logins read the accounts
        assert value(after, "xmppd_database_errors_total", kind="unavailable") == 0

        gone = await until(server, lambda s: value(s, "xmppd_sessions", transport="tls") == 0)
        assert value(gone, "xmppd_sessions", transport="websocket") == 0

    run(scenario())


def test_json_channel_frames_are_their_own_kind(server: ServerProcess) -> None:
    from phx import Phx, login

    async def scenario() -> None:
        before = await asyncio.to_thread(scrape, server)
        token = await asyncio.to_thread(login, server, "bob", "bob-secret")
        phx = await Phx.open(server, token)
        try:
            await phx.join("user:bob@localhost")
            after = await until(
                server, lambda s: value(s, "xmppd_sessions", transport="channels") == 1
            )
        finally:
            await phx.close()
        for name in ("xmppd_stanzas_in_total", "xmppd_stanzas_out_total"):
            assert value(after, name, kind="json") - value(before, name, kind="json") >= 1, name
        # the frames are not stanzas: the XMPP kinds did not move for them
        assert value(after, "xmppd_stanzas_in_total", kind="message") == value(
            before, "xmppd_stanzas_in_total", kind="message"
        )

    run(scenario())


def test_non_loopback_clients_are_refused(server: ServerProcess) -> None:
    url = f"http://127.0.0.1:{server.http_port}/metrics"
    # The plain listener trusts 127.0.0.1 as a proxy: the client is the forwarded address.
    status, text = get(url, {"X-Forwarded-For": "203.0.113.7"})
    assert status == 403 and "metrics.allow" in text
    assert get(url, {"X-Forwarded-For": "127.0.0.1"})[0] == 200
    assert get(url, method="POST")[0] == 405
    assert "refused /metrics to 203.0.113.7" in server.log_text()


def test_its_own_port_serves_only_metrics(server: ServerProcess) -> None:
    port = server.metrics_port  # type: ignore[attr-defined]
    status, text = get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    names = {f.name for f in text_string_to_metric_families(text)}
    assert {"xmppd_logins", "xmppd_sessions", "xmppd_bans_active"} <= names
    assert get(f"http://127.0.0.1:{port}/.well-known/host-meta")[0] == 404


def test_rate_limit_pauses_are_counted_and_metrics_can_be_off(tmp_path: Path) -> None:
    (tmp_path / "limited").mkdir(), (tmp_path / "off").mkdir()
    limits = "\n[limits]\nbytes_per_second = 512\nburst_bytes = 1024\n"
    limited = ServerProcess(tmp_path / "limited", extra_config=limits)
    limited.start()
    try:
        client = RawClient(limited)
        client.send(HEADER + " " * 4096)  # 4 KiB at 512 bytes/s after a 1 KiB burst: paused
        client.read_until("</stream:features>")
        deadline = time.monotonic() + 10  # the spaces may arrive in a later read
        while True:
            samples = scrape(limited)
            paused = value(samples, "xmppd_ratelimit_refusals_total", limit="c2s_bytes")
            if paused or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        client.close()
    finally:
        limited.stop()
    assert value(samples, "xmppd_ratelimit_refusals_total", limit="c2s_bytes") >= 1

    off = ServerProcess(tmp_path / "off", extra_config="\n[metrics]\nenabled = false\n")
    off.start()
    try:
        status, text = get(f"http://127.0.0.1:{off.http_port}/metrics")
    finally:
        off.stop()
    assert status == 404 and "metrics.enabled" in text


# ---- errors counted in-process (a real directory client, breaker and SQLite database) ------


def counter(name: str, **labels: str) -> float:
    from xmppd import metrics

    return metrics.REGISTRY.get_sample_value(name, labels or None) or 0.0


async def test_ldap_and_database_errors_are_counted(tmp_path: Path) -> None:
    from auth.ldap import DirectoryUnavailable, LdapAuth
    from xmppd.config import parse
    from xmppd.storage import StorageError, StorageUnavailable, open_database
    from xmppd.storage.breaker import Breaker

    closed = f"ldap://127.0.0.1:{free_port()}"  # nothing listens: every call fails
    toml = f'[auth]\nbackend = "ldap"\n[auth.ldap]\nservers = ["{closed}"]\nbase_dn = "o=x"\n'
    directory = LdapAuth(parse(toml).auth["ldap"])
    before = counter("xmppd_ldap_errors_total")
    for _ in range(2):
        with pytest.raises(DirectoryUnavailable):
            await directory.lookup("alice")
    assert counter("xmppd_ldap_errors_total") == before + 2

    db = await open_database(tmp_path)
    try:
        calls, errors = (
            counter("xmppd_storage_seconds_count"),
            counter("xmppd_database_errors_total", kind="error"),
        )
        await db.run("fine", lambda ex: ex.rows("SELECT 1"))
        with pytest.raises(StorageError):
            await db.run("broken", lambda ex: ex.rows("SELECT * FROM no_such_table"))
        assert counter("xmppd_storage_seconds_count") == calls + 2
        assert counter("xmppd_database_errors_total", kind="error") == errors + 1
    finally:
        await db.close()

    async def still_down() -> None:
        raise StorageUnavailable("still down")

    breaker = Breaker("test", still_down, retry_interval=60)
    refused = counter("xmppd_database_errors_total", kind="refused")
    breaker.failed(StorageUnavailable("connection refused"))
    for _ in range(3):
        with pytest.raises(StorageUnavailable):
            breaker.check()
    assert counter("xmppd_database_errors_total", kind="refused") == refused + 3
    breaker.down = False  # lets its probe task end
