"""go-sendxmpp (Debian's package, a Go XMPP client) delivers a message a slixmpp client receives."""

from __future__ import annotations

import asyncio
import shutil
import subprocess

import pytest
from support import PASSWORDS, ServerProcess, connect, run

pytestmark = pytest.mark.skipif(
    shutil.which("go-sendxmpp") is None, reason="go-sendxmpp is installed by scripts/test"
)


def send(port: int, to: str, text: str, *flags: str) -> subprocess.CompletedProcess[str]:
    command = ["go-sendxmpp", "-u", "alice@localhost", "-p", PASSWORDS["alice"]]
    # -n: the test server's certificate is self-signed.
    command += ["-j", f"127.0.0.1:{port}", "-n", "--timeout", "20", *flags, to]
    return subprocess.run(command, input=text, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("direct_tls", [False, True], ids=["starttls", "direct-tls"])
def test_go_sendxmpp_reaches_slixmpp(server: ServerProcess, direct_tls: bool) -> None:
    port = server.tls_port if direct_tls else server.port
    flags = ("-t",) if direct_tls else ()
    text = f"hello from go-sendxmpp over {'direct TLS' if direct_tls else 'STARTTLS'}"

    async def scenario() -> None:
        bob = await connect(server, "bob", f"interop-{direct_tls}")
        result = await asyncio.to_thread(send, port, "bob@localhost", text, *flags)
        assert result.returncode == 0, result.stderr + result.stdout
        message = await bob.next_message(timeout=20)
        assert message["body"].strip() == text
        assert message["from"].bare == "alice@localhost"
        await bob.close()

    run(scenario())
