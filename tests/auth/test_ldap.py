"""LDAP authentication against a real slapd (tests/ldap/slapd.py) and a real xmppd process.

AD-style range retrieval (`member;range=0-1499`) is not served by OpenLDAP (it returns every
value, and attribute options cannot contain '='), so the range loop is tested sans-IO below with
the attribute shapes ldap3 returns from Active Directory; the 1,620-member group is read from
slapd for real.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio
from support import Client, ServerProcess, run

from auth.ldap import (
    DirectoryUnavailable,
    LdapAuth,
    all_values,
    ranged_values,
    username_from,
)
from xmppd.config import parse

sys.path.insert(0, str(Path(__file__).parents[1] / "ldap"))
import slapd as fixture  # noqa: E402


@pytest.fixture(scope="module")
def directory(tmp_path_factory):
    d = fixture.Slapd(tmp_path_factory.mktemp("slapd"))
    d.start()
    yield d
    d.stop()


@pytest.fixture(scope="module")
def xmppd(directory, tmp_path_factory):
    server = ServerProcess(tmp_path_factory.mktemp("xmppd"), directory.settings_toml())
    server.add_user("admin", "local-admin-secret")  # an internal account beside the directory
    server.start()
    yield server
    server.stop()


def settings(directory, **overrides):
    return parse(directory.settings_toml(**overrides)).auth["ldap"]


async def login(server: ServerProcess, user: str, password: str, mech: str = "PLAIN"):
    """(client or None, SASL failure conditions seen)."""
    client = Client(f"{user}@localhost", password, mech, server.ca_file)
    failures: list[str] = []
    client.add_event_handler("failed_auth", lambda stanza: failures.append(stanza["condition"]))
    client.enable_direct_tls = False
    client.enable_starttls = True
    client.connect("127.0.0.1", server.port)
    try:
        # 30 s: the first login after a start may wait (up to 10 s) for the first read of the
        # 1,620-user directory, which a loaded CI machine makes slower still.
        await asyncio.wait_for(client.started, 30)
    except PermissionError:
        client.abort()
        return None, failures
    return client, failures


# ---- range retrieval, sans-IO ------------------------------------------------------------------


def ad_entry(values: list[bytes], start: int, page: int = 1500) -> dict[str, list[bytes]]:
    """raw_attributes as ldap3 gives them for an AD group read with `member` or a range."""
    chunk = values[start : start + page]
    end = "*" if start + page >= len(values) else str(start + len(chunk) - 1)
    return {"cn": [b"Big"], f"member;range={start}-{end}": chunk, "member": []}


def test_range_parsing_of_ad_shapes() -> None:
    values = [f"CN=u{i},OU=People,DC=corp".encode() for i in range(3200)]
    first = ad_entry(values, 0)
    got, start = ranged_values(first, "member")
    assert len(got) == 1500 and start == 1500
    last, start = ranged_values(ad_entry(values, 3000), "Member")
    assert len(last) == 200 and start is None
    plain, start = ranged_values({"member": values[:3]}, "member")
    assert plain == values[:3] and start is None


def test_range_loop_fetches_every_page() -> None:
    values = [f"CN=u{i},OU=People,DC=corp".encode() for i in range(3200)]
    asked: list[str] = []

    def fetch(attr: str) -> dict[str, list[bytes]]:
        asked.append(attr)
        start = int(attr.split("=")[1].split("-")[0])
        return ad_entry(values, start)

    assert all_values(ad_entry(values, 0), "member", fetch) == values
    assert asked == ["member;range=1500-*", "member;range=3000-*"]
    # A server that answers a range with nothing ends the loop instead of spinning.
    assert len(all_values(ad_entry(values, 0), "member", lambda _a: {})) == 1500


def test_username_from_mail_or_uid() -> None:
    assert username_from([b"Alice@Example.org"]) == "alice"
    assert username_from([b"bob"]) == "bob"
    assert username_from(None) is None


# ---- the backend in-process against slapd --------------------------------------------------------


async def test_search_then_bind_and_direct_bind(directory) -> None:
    auth = LdapAuth(settings(directory))
    assert await auth.check_password("alice", "alice-secret")
    assert not await auth.check_password("alice", "wrong")
    assert not await auth.check_password("alice", "")  # never an anonymous bind
    assert not await auth.check_password("nobody", "x")
    assert await auth.user_exists("bob") and not await auth.user_exists("nobody")
    direct = LdapAuth(
        settings(directory, dn_template="uid={user},ou=people,dc=example,dc=org", bind_dn="")
    )
    assert await direct.check_password("carol", "carol-secret")
    assert not await direct.check_password("carol", "bob-secret")


async def test_filter_by_mail(directory) -> None:
    auth = LdapAuth(
        settings(
            directory,
            user_filter="(&(objectClass=inetOrgPerson)(mail={user}@example.org))",
            username_attribute="mail",
        )
    )
    assert await auth.check_password("dave", "dave-secret")
    assert "dave" in await auth.list_users()
    # Filter metacharacters in a username are escaped, not interpreted.
    assert not await auth.user_exists("*")


@pytest.mark.parametrize("mode", ["ldaps", "starttls"])
async def test_tls_with_ca_file(directory, mode) -> None:
    extra = {"servers": [directory.ldaps_url]} if mode == "ldaps" else {"starttls": True}
    trusted = LdapAuth(settings(directory, ca_file=str(directory.ca_file), **extra))
    assert await trusted.check_password("erin", "erin-secret")
    untrusted = LdapAuth(settings(directory, **extra))  # system CAs do not know slapd's cert
    with pytest.raises(DirectoryUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        await untrusted.check_password("erin", "erin-secret")


async def test_failover_to_the_second_server(directory) -> None:
    auth = LdapAuth(settings(directory, servers=["ldap://127.0.0.1:1", directory.url]))
    assert await auth.check_password("frank", "frank-secret")


async def test_lookup_cache_and_password_cache(directory) -> None:
    auth = LdapAuth(settings(directory, password_cache_ttl=60.0))
    for _ in range(3):
        assert await auth.check_password("grace", "grace-secret")
    assert auth.stats == {"lookups": 1, "binds": 1}
    assert not await auth.check_password("grace", "wrong")  # the cache never says yes to this
    stored = auth._passwords["grace"]
    assert b"grace-secret" not in stored[1] + stored[2]  # a salted MAC, not the password
    uncached = LdapAuth(settings(directory, cache_ttl=0.0))
    for _ in range(2):
        assert await uncached.check_password("grace", "grace-secret")
    assert uncached.stats == {"lookups": 2, "binds": 2}


async def test_big_group_read_completely(directory) -> None:
    auth = LdapAuth(settings(directory))
    d = auth.directory

    def read(conn):
        users = d.list_users(conn)
        return users, d.read_group(conn, fixture.BIG_GROUP_DN, users)

    users, group = await auth.run(d.with_service, read)
    assert len(users) == len(fixture.NAMED) + fixture.BULK_USERS
    assert len(group.members) == len(users) > 1500


async def test_pool_is_bounded_and_concurrent(directory) -> None:
    auth = LdapAuth(settings(directory, pool_size=2, cache_ttl=0.0))
    results = []

    async def one(user: str) -> None:
        results.append(await auth.check_password(user, f"{user}-secret"))

    async with trio.open_nursery() as nursery:
        for user in fixture.NAMED[:8]:
            nursery.start_soon(one, user)
    assert results == [True] * 8
    assert auth.directory._idle.qsize() <= 2


async def test_pooled_connection_dead_after_a_restart_is_replaced(directory) -> None:
    auth = LdapAuth(settings(directory, cache_ttl=0.0))
    assert await auth.check_password("heidi", "heidi-secret")
    assert auth.directory._idle.qsize() == 1  # a service connection waits in the pool
    directory.stop()
    directory.start()
    # The pooled connection died with the old slapd: the first login after it still works.
    assert await auth.check_password("ivan", "ivan-secret")


# ---- through xmppd ---------------------------------------------------------------------------


def test_directory_login_and_wrong_password(xmppd) -> None:
    async def scenario() -> None:
        client, _ = await login(xmppd, "alice", "alice-secret")
        assert client is not None
        await client.close()
        client, failures = await login(xmppd, "alice", "bob-secret")
        assert client is None and failures == ["not-authorized"]
        # Only PLAIN is offered: a client insisting on SCRAM finds no mechanism.
        client, _ = await login(xmppd, "alice", "alice-secret", mech="SCRAM-SHA-256")
        assert client is None

    run(scenario())


def test_internal_admin_account_beside_the_directory(xmppd) -> None:
    async def scenario() -> None:
        client, _ = await login(xmppd, "admin", "local-admin-secret")
        assert client is not None
        await client.close()

    run(scenario())


def test_user_added_and_removed_without_restart(xmppd, directory) -> None:
    async def scenario() -> None:
        directory.add_user("zoe", "Zoe Washburne", "zoe-secret")
        client, _ = await login(xmppd, "zoe", "zoe-secret")
        assert client is not None
        await client.close()
        directory.delete("uid=zoe,ou=people,dc=example,dc=org")
        client, failures = await login(xmppd, "zoe", "zoe-secret")
        assert client is None and failures == ["not-authorized"]

    run(scenario())


def test_directory_outage(xmppd, directory) -> None:
    async def scenario() -> None:
        alice, _ = await login(xmppd, "alice", "alice-secret")
        bob, _ = await login(xmppd, "bob", "bob-secret")
        assert alice is not None and bob is not None
        directory.stop()
        try:
            for _ in range(3):
                client, failures = await login(xmppd, "carol", "carol-secret")
                assert client is None and failures == ["temporary-auth-failure"]
            # Sessions that exist keep working.
            alice.send_message(mto=bob.boundjid.full, mbody="still here", mtype="chat")
            assert (await bob.next_message())["body"] == "still here"
        finally:
            directory.start()
        client, _ = await login(xmppd, "carol", "carol-secret")
        assert client is not None
        for c in (client, alice, bob):
            await c.close()

    run(scenario())
    log = xmppd.log_text()
    assert log.count("LDAP directory unavailable") == 1  # once per outage, not per attempt
    assert "LDAP directory reachable again" in log


def test_first_login_after_a_directory_restart(xmppd, directory) -> None:
    async def scenario() -> None:
        client, _ = await login(xmppd, "mallory", "mallory-secret")
        assert client is not None  # the service connection is pooled now
        await client.close()
        directory.stop()
        directory.start()
        client, failures = await login(xmppd, "niaj", "niaj-secret")
        assert client is not None, failures
        await client.close()

    run(scenario())


def test_user_added_after_a_failed_login_logs_in_within_10_s(xmppd, directory) -> None:
    async def scenario() -> None:
        client, failures = await login(xmppd, "yara", "yara-secret")
        failed_at = time.monotonic()  # the lookup that found nobody is behind us
        assert client is None and failures == ["not-authorized"]  # unknown: remembered as such
        directory.ldapadd(
            "dn: uid=yara,ou=people,dc=example,dc=org\nobjectClass: inetOrgPerson\n"
            "uid: yara\ncn: Yara Flor\nsn: Flor\nuserPassword: yara-secret\n"
        )
        try:
            # One more attempt, 10 s after the failed one (not a stream of failures that a
            # guessing limit might slow down).
            await asyncio.sleep(max(0.0, failed_at + 10.2 - time.monotonic()))
            client, failures = await login(xmppd, "yara", "yara-secret")
            assert client is not None, f"still refused 10 s after the failed login: {failures}"
            await client.close()
        finally:
            directory.delete("uid=yara,ou=people,dc=example,dc=org")

    run(scenario())


# ---- xmppd check ldap ------------------------------------------------------------------------


def check(directory, tmp_path, **overrides) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "check.toml"
    config.write_text(directory.settings_toml(**overrides))
    return subprocess.run(
        [sys.executable, "-m", "xmppd", "check", "ldap", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_ldap_good(directory, tmp_path) -> None:
    result = check(directory, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert f"server {directory.url}: reachable" in out
    assert "service account: bound as cn=xmpp,ou=services,dc=example,dc=org" in out
    assert "users: 1620 found" in out and "alice (Alice Liddell)" in out
    assert "groups: 3 found, 3 shown as roster groups" in out and "Engineering (5 members)" in out
    assert "admin group: 1 member(s): alice" in out
    assert out.rstrip().endswith("all checks passed")


@pytest.mark.parametrize(
    ("overrides", "explanation"),
    [
        ({"base_dn": "ou=nobody,dc=example,dc=org"}, "the base DN does not exist"),
        ({"user_filter": "(&(uid={user})"}, "not valid LDAP filter syntax"),
        ({"bind_password": "wrong"}, "wrong bind_dn or bind_password"),
        ({"servers": ["ldap://127.0.0.1:1"]}, "connection refused"),
        ({"starttls": True}, "TLS certificate is not trusted: set ca_file"),
    ],
)
def test_check_ldap_explains_failures(directory, tmp_path, overrides, explanation) -> None:
    result = check(directory, tmp_path, **overrides)
    assert result.returncode == 1
    assert explanation in result.stdout, result.stdout
    assert "problem(s) found" in result.stdout


def test_check_ldap_timeout(tmp_path) -> None:
    # A listener that accepts and never answers: the operation timeout is what fires.
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        config = tmp_path / "t.toml"
        config.write_text(
            '[auth]\nbackend = "ldap"\n[auth.ldap]\n'
            f'servers = ["ldap://127.0.0.1:{port}"]\nbase_dn = "dc=example,dc=org"\n'
            'bind_dn = "cn=x,dc=example,dc=org"\nbind_password = "x"\ntimeout = 1.0\n'
        )
        result = subprocess.run(
            [sys.executable, "-m", "xmppd", "check", "ldap", "-c", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert "no answer within" in result.stdout, result.stdout


def test_config_errors_name_the_key() -> None:
    from xmppd.options import ConfigError

    with pytest.raises(ConfigError, match="auth.ldap.base_dn"):
        parse('[auth]\nbackend = "ldap"\n[auth.ldap]\nservers = ["ldap://x"]\n')
    with pytest.raises(ConfigError, match="user_filter"):
        parse(
            '[auth]\nbackend = "ldap"\n[auth.ldap]\nservers = ["ldap://x"]\nbase_dn = "dc=x"\n'
            'user_filter = "(uid=alice)"\n'
        )
