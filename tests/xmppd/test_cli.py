"""The admin verbs, run as an admin would: `python -m xmppd ...` in a subprocess."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

from support import RawClient, ServerProcess

import xmppd


def xmppd_cli(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xmppd", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
    )


def test_version(tmp_path: Path) -> None:
    result = xmppd_cli("--version", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip() == f"xmppd {xmppd.__version__}"


def test_account_verbs(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path)
    assert server.cli("adduser", "dave@localhost", "--password", "one").returncode == 0
    again = server.cli("adduser", "dave@localhost", "--password", "two")
    assert again.returncode != 0 and "already exists" in again.stderr
    # Password from stdin when --password is omitted (scripts pipe it in).
    assert server.cli("adduser", "erin@localhost", stdin="from-stdin\n").returncode == 0
    assert server.cli("passwd", "dave@localhost", stdin="changed\n").returncode == 0
    missing = server.cli("passwd", "nobody@localhost", "--password", "x")
    assert missing.returncode != 0 and "no account" in missing.stderr
    assert server.cli("deluser", "erin@localhost").returncode == 0
    assert server.cli("deluser", "erin@localhost").returncode != 0
    bad = server.cli("adduser", "not a jid@localhost", "--password", "x")
    assert bad.returncode != 0 and "invalid JID" in bad.stderr
    other = server.cli("adduser", "x@elsewhere.example", "--password", "x")
    assert other.returncode != 0 and "not served here" in other.stderr


def test_check_good_and_broken_configs(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path)
    good = server.cli("check")
    assert good.returncode == 0, good.stdout + good.stderr
    assert "all checks passed" in good.stdout
    broken = tmp_path / "broken.toml"
    broken.write_text("[c2s]\nport = 5222\nrequire_encryption = 'yes'\n")
    result = xmppd_cli("check", "-c", str(broken), cwd=tmp_path)
    assert result.returncode == 78
    assert f"{broken}:3: c2s.require_encryption: expected true or false" in result.stderr


def test_check_reports_a_busy_port(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = tmp_path / "x.toml"
        config.write_text(
            f"[server]\ndata_dir = '{tmp_path}/d'\n[c2s]\ninterfaces = ['127.0.0.1']\nport = {port}\n"
        )
        result = xmppd_cli("check", "-c", str(config), cwd=tmp_path)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1 port {port}" in result.stdout


def test_first_start_prints_the_demo_account_once(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path)
    server.config_path.write_text(
        server.config_path.read_text().replace("demo_account = false", "demo_account = true")
    )
    server.start()
    try:
        printed = re.search(r"Demo account: demo@localhost\s+password: (\S+)", server.log_text())
        assert printed, server.log_text()
        client = RawClient(server)
        assert client.login("demo", printed.group(1)).startswith("demo@localhost/")
        client.close()
    finally:
        server.stop()
    server.log_path.write_text("")
    server.start()
    server.stop()
    assert "Demo account" not in server.log_text()


def test_serve_on_a_busy_port_says_so_in_one_line(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path)
    server.start()
    # Same ports, its own data directory (one directory serves one server: test_admin.py).
    other = tmp_path / "other.toml"
    other.write_text(server.config_path.read_text().replace(str(server.data_dir), f"{tmp_path}/d2"))
    try:
        second = subprocess.run(
            [sys.executable, "-m", "xmppd", "serve", "-c", str(other)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        server.stop()
    assert second.returncode == 1
    assert second.stderr.strip().splitlines()[-1] == (
        f"xmppd: cannot listen for c2s on 127.0.0.1 port {server.port}: Address already in use"
    )
    assert "Traceback" not in second.stderr
