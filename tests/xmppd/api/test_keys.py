"""API keys: the `[api]` options with errors naming key and line, hashing, constant-time
lookup, and `xmppd api-key` whose output pasted into a config file works."""

from __future__ import annotations

import subprocess
import sys

import pytest

from xmppd.api.keys import find_key, hash_key, new_key
from xmppd.config import parse
from xmppd.options import ConfigError

GOOD = hash_key("xak_example")


@pytest.mark.parametrize(
    ("text", "key", "line", "words"),
    [
        ('[api.keys.a]\nhash = "md5:abc"\n', "api.keys.a.hash", 2, "sha256:"),
        (f'[api.keys.a]\nhash = "{GOOD}"\nscopes = ["root"]\n', "api.keys.a.scopes", 3, "read"),
        (f'[api.keys.a]\nhash = "{GOOD}"\nscopes = []\n', "api.keys.a.scopes", 3, "scopes"),
        (f'[api.keys.a]\nhash = "{GOOD}"\nscope = ["read"]\n', "api.keys.a.scope", 3, "scopes"),
        ('[api]\nallow = ["10.0.0.0/33"]\n', "api.allow", 2, "entry 1"),
        ("[api]\nburst = 0\n", "api.burst", 2, "at least 1"),
    ],
)
def test_config_errors_name_the_key_and_line(text: str, key: str, line: int, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(text, "test.toml")
    assert str(caught.value).startswith(f"test.toml:{line}: {key}:"), caught.value
    assert words in str(caught.value)


def test_keys_are_found_by_hash_only() -> None:
    key, digest = new_key()
    assert key.startswith("xak_") and len(key) > 40 and digest == hash_key(key)
    config = parse(f'[api.keys.ops]\nhash = "{digest}"\nscopes = ["users", "read"]\n')
    keys = config.api["keys"]
    found = find_key(keys, key)
    assert found is not None and found.name == "ops"
    assert found.allows("users") and not found.allows("rooms")
    assert find_key(keys, key[:-1]) is None and find_key(keys, "") is None
    assert key not in repr(config.api)


def test_cli_prints_a_working_config_snippet(tmp_path) -> None:  # noqa: ANN001
    answer = subprocess.run(
        [sys.executable, "-m", "xmppd", "api-key", "intranet", "--scopes", "rooms,post"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert answer.returncode == 0, answer.stderr
    key = answer.stdout.split("give it to the client): ")[1].split()[0]
    snippet = answer.stdout[answer.stdout.index("[api.keys.intranet]") :]
    found = find_key(parse(snippet).api["keys"], key)
    assert found is not None and found.scopes == {"rooms", "post"}
    bad = subprocess.run(
        [sys.executable, "-m", "xmppd", "api-key", "x", "--scopes", "root"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert bad.returncode == 2
