"""README's two commands, run the way a newcomer runs them: verbatim, from a fresh clone.

The second command is what CI runs (`.ci/run`), so here it is only checked to be that one; the
first is run for real in a clone with an empty home: it must install into a virtual
environment (PEP 668), start on the embedded defaults and print a demo account that logs in.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from support import RawClient

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PORTS = (5222, 5223, 5443, 5280)


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```sh\n(.*?)```", text, re.S)[:2]


def test_readme_opens_with_exactly_two_commands_and_ci_runs_the_second() -> None:
    head = (ROOT / "README.md").read_text().split("\n\n", 1)[1]
    serve, test = readme_commands()
    assert head.startswith(f"```sh\n{serve}```\n```sh\n{test}```")
    assert len(serve.strip().splitlines()) == 1 and len(test.strip().splitlines()) == 1
    assert f"exec {test.strip()}" in (ROOT / ".ci" / "run").read_text()
    assert "pip install" not in serve  # a bare system pip install is refused by PEP 668


class _Defaults:
    """Where the embedded defaults put the server, for RawClient."""

    def __init__(self, home: Path) -> None:
        self.port = 5222
        self.ca_file = str(home / ".local" / "share" / "xmppd" / "certs" / "self-signed.crt")


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="needs the git checkout to clone")
def test_first_command_from_a_fresh_clone(tmp_path: Path) -> None:
    busy = [port for port in DEFAULT_PORTS if _listening(port)]
    if busy:  # another server on this machine; CI machines have them free
        pytest.skip(f"the default ports {busy} are taken by another program")
    clone, home = tmp_path / "xmppd", tmp_path / "home"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True, timeout=120)
    home.mkdir()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("XMPPD_", "XDG_", "VIRTUAL", "PYTHON"))
    }
    env["HOME"] = str(home)
    env["PATH"] = os.pathsep.join(  # not the test run's own venv
        p for p in env["PATH"].split(os.pathsep) if not p.startswith(str(ROOT))
    )
    output = tmp_path / "serve.log"
    command = readme_commands()[0].strip()
    with output.open("wb") as log:
        proc = subprocess.Popen(
            ["bash", "-c", command],
            cwd=clone,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        password = _wait_for_demo_password(proc, output, timeout=600)
        client = RawClient(_Defaults(home))  # type: ignore[arg-type]
        assert client.login("demo", password).startswith("demo@localhost/")
        client.close()
        assert (clone / ".venv" / "bin" / "xmppd").exists()
        assert "data directory: " + str(home / ".local/share/xmppd") in output.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        shutil.rmtree(clone, ignore_errors=True)


def _wait_for_demo_password(proc: subprocess.Popen[bytes], output: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = output.read_text(errors="replace")
        found = re.search(r"Demo account: demo@localhost\s+password: (\S+)", text)
        if found and "xmppd serving" in text:
            return found.group(1)
        if proc.poll() is not None:
            raise AssertionError(f"the first README command exited:\n{text[-4000:]}")
        time.sleep(0.5)
    raise AssertionError(f"no demo account within {timeout} s:\n{output.read_text()[-4000:]}")


def _listening(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False
