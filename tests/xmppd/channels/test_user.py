"""The user topic's `resolve` request (xmppd/channels/user.py): mail addresses to JIDs through
the directory's LDAP `mail` attribute (a real slapd), for the widget's presence dots
(docs/widget.md)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import pytest
from joserfc import jws
from joserfc.jwk import OctKey
from phx import Phx
from support import ServerProcess, run

sys.path.insert(0, str(Path(__file__).parents[2] / "ldap"))
import slapd as fixture  # noqa: E402

SECRET = "a-webmail-secret-of-at-least-32-bytes!"
ALICE = "alice@localhost"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    directory = fixture.Slapd(tmp_path_factory.mktemp("slapd"), bulk_users=10)
    directory.start()
    config = directory.settings_toml() + (
        f'[auth.tokens.apps.webmail]\nalgorithm = "HS256"\nkey = "{SECRET}"\n'
    )
    xmppd = ServerProcess(tmp_path_factory.mktemp("xmppd"), config)
    xmppd.start()
    yield xmppd
    xmppd.stop()
    directory.stop()


def token(sub: str) -> str:
    claims = {"sub": sub, "aud": "localhost", "exp": int(time.time()) + 600}
    return jws.serialize_compact(
        {"alg": "HS256", "kid": "webmail"}, json.dumps(claims), OctKey.import_key(SECRET)
    )


def test_resolve_maps_directory_mail_addresses_to_jids(server: ServerProcess) -> None:
    async def scenario() -> None:
        alice = await Phx.open(server, token("alice"))
        try:
            await alice.join(f"user:{ALICE}")
            asked = ["Bob@Example.org", "nobody@example.org", "carol@localhost", "x@else.net"]
            for _ in range(50):  # the directory's first read may still be under way
                jids = (await alice.push(f"user:{ALICE}", "resolve", {"addresses": asked}))["jids"]
                if jids["Bob@Example.org"]:
                    break
                await asyncio.sleep(0.2)
            assert jids == {
                "Bob@Example.org": "bob@localhost",  # LDAP mail, any case
                "nobody@example.org": None,  # in no entry
                "carol@localhost": "carol@localhost",  # the user's own domain: the address
                "x@else.net": None,
            }
            for bad in ([], ["a@b"] * 101, [7], "bob@example.org", ["x" * 300]):
                answer = await alice.request(f"user:{ALICE}", "resolve", {"addresses": bad})
                assert answer["error"]["reason"] == "bad-request", (bad, answer)
        finally:
            alice.proc.kill()
            await alice.proc.wait()

    run(scenario())
