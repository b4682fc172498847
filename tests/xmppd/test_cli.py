"""The admin verbs, run as an admin would: `python -m xmppd ...` in a subprocess."""

from __future__ import annotations

import functools
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
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


@pytest.mark.parametrize("key", ["tls_port", "port"])
def test_check_reports_a_busy_http_port(tmp_path: Path, key: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = tmp_path / "x.toml"
        config.write_text(
            f"[server]\ndata_dir = '{tmp_path}/d'\n[c2s]\nport = 0\ndirect_tls_port = 0\n"
            f"[http]\ninterfaces = ['127.0.0.1']\nplain_interfaces = ['127.0.0.1']\n{key} = {port}\n"
        )
        result = xmppd_cli("check", "-c", str(config), cwd=tmp_path)
    assert result.returncode == 1
    name = "https" if key == "tls_port" else "http"
    assert f"{name}: cannot listen on 127.0.0.1 port {port}" in result.stdout


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


def _clean_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A newcomer's environment: a home of its own, no XMPPD_* or XDG_* settings."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("XMPPD_", "XDG_")) and k != "HOME"
    }
    env["HOME"] = str(tmp_path / "home")
    return env | extra


def test_verbs_without_c_find_the_same_data_from_any_directory(tmp_path: Path) -> None:
    """A relative data_dir is the config file's, not the current directory's."""
    conf_dir = tmp_path / "home" / ".config" / "xmppd"
    conf_dir.mkdir(parents=True)
    (conf_dir / "xmppd.toml").write_text("[server]\ndata_dir = 'chatdata'\n")
    env = _clean_env(tmp_path)
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    run = functools.partial(subprocess.run, capture_output=True, text=True, env=env, timeout=60)
    first = run(
        [sys.executable, "-m", "xmppd", "adduser", "kim@localhost", "--password", "a"], cwd=one
    )
    assert first.returncode == 0, first.stderr
    again = run(
        [sys.executable, "-m", "xmppd", "adduser", "kim@localhost", "--password", "b"], cwd=two
    )
    assert again.returncode != 0 and "already exists" in again.stderr
    assert (conf_dir / "chatdata" / "xmppd.sqlite").exists()
    assert not list(one.iterdir()) and not list(two.iterdir())


def test_defaults_keep_data_in_the_users_data_directory(tmp_path: Path) -> None:
    env = _clean_env(tmp_path)
    run = functools.partial(subprocess.run, capture_output=True, text=True, env=env, timeout=60)
    made = run(
        [sys.executable, "-m", "xmppd", "adduser", "lee@localhost", "--password", "a"], cwd=tmp_path
    )
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "home" / ".local" / "share" / "xmppd" / "xmppd.sqlite").exists()
    assert not (tmp_path / "data").exists()


def test_serve_names_its_data_directory_and_why_no_demo_account(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path)
    server.config_path.write_text(
        server.config_path.read_text().replace("demo_account = false", "demo_account = true")
    )
    server.add_user("boss", "pw")  # before the first start: no demo account will be made
    server.start()
    server.stop()
    log = server.log_text()
    assert f"data directory: {server.data_dir}" in log
    assert "Demo account:" not in log
    assert f"No demo account made: localhost already has 1 account(s) in {server.data_dir}" in log
