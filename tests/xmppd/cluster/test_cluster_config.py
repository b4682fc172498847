"""[cluster] in the TOML file, and what `xmppd check` says about it."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import RawClient
from support_cluster import HEARTBEAT, cluster_config, make_node, users

from xmppd.config import parse
from xmppd.options import ConfigError

PG = "postgresql://postgres@127.0.0.1:5432/nothing"


def test_cluster_is_off_by_default() -> None:
    config = parse("")
    assert config.cluster["enabled"] is False
    assert config.cluster["node"] == socket.gethostname()


def test_cluster_needs_postgres_and_names_the_key() -> None:
    text = "[cluster]\nenabled = true\n"
    with pytest.raises(ConfigError) as raised:
        parse(text, "x.toml")
    assert raised.value.key == "storage.driver"
    assert "postgres" in str(raised.value)
    sqlite = "[storage]\ndriver = 'sqlite'\n\n" + text
    with pytest.raises(ConfigError) as raised:
        parse(sqlite, "x.toml")
    assert (raised.value.key, raised.value.line) == ("storage.driver", 2)


@pytest.mark.parametrize(
    "extra, key",
    [
        ("redis = ['http://x']", "cluster.redis"),
        ("redis = []", "cluster.redis"),
        ("node = 'a b'", "cluster.node"),
        ("heartbeat = 2.0\ndown_period = 3.0", "cluster.down_period"),
        ("down_period = 30.0\npermdown_period = 20.0", "cluster.permdown_period"),
    ],
)
def test_bad_cluster_settings_name_the_key(extra: str, key: str) -> None:
    text = f"[storage]\ndriver = 'postgres'\ndsn = '{PG}'\n[cluster]\nenabled = true\n{extra}\n"
    with pytest.raises(ConfigError) as raised:
        parse(text)
    assert raised.value.key == key


def test_a_valid_cluster_section() -> None:
    config = parse(cluster_config(PG, "node-1", "p"))
    assert config.cluster["enabled"] and config.cluster["node"] == "node-1"
    assert config.storage["driver"] == "postgres"


def check(proc) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xmppd", "check", "-c", str(proc.config_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_reaches_redis_and_lists_the_nodes(nodes, tmp_path: Path, pg_url, prefix) -> None:
    (alice,) = users(nodes[1], "alice")
    raw = RawClient(nodes[1])
    raw.login(alice, "pw")  # one session on n2
    time.sleep(4 * HEARTBEAT)  # registered with the next liveness write
    other = make_node(tmp_path, pg_url, "n3", prefix)  # not started: checks only
    result = check(other)
    raw.close()
    assert "cluster: Redis ok (single Redis); this node: n3" in result.stdout, result.stdout
    assert "cluster node: n1 up" in result.stdout
    assert "cluster node: n2 up" in result.stdout
    assert "sessions: 0)" in result.stdout.split("cluster node: n1")[1].splitlines()[0]
    assert "sessions: 1)" in result.stdout.split("cluster node: n2")[1].splitlines()[0]
    assert "cluster.redis" not in result.stdout


def test_check_reports_unreachable_redis(tmp_path: Path, prefix) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    node = make_node(tmp_path, PG, "n1", prefix)
    text = node.config_path.read_text().replace(
        "redis://127.0.0.1:6379/0", f"redis://127.0.0.1:{port}/0"
    )
    node.config_path.write_text(text)
    result = check(node)
    assert result.returncode == 1
    assert (
        f"problem: cluster.redis: cannot reach Redis (redis://127.0.0.1:{port}/0)" in result.stdout
    )
