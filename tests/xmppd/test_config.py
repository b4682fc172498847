from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from xmppd import loader
from xmppd.config import DEFAULT_MODULES, SECTIONS, load, parse
from xmppd.options import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_without_a_file() -> None:
    config = parse("")
    assert config.server["domain"] == "localhost"
    assert config.c2s["port"] == 5222 and config.c2s["direct_tls_port"] == 5223
    assert config.c2s["require_encryption"] is True
    assert config.limits["stanza_size"] == 256 * 1024
    assert [h.domain for h in config.hosts] == ["localhost"]


def test_shipped_config_lists_every_option_and_parses() -> None:
    text = (ROOT / "conf" / "xmppd.toml").read_text()
    load(ROOT / "conf" / "xmppd.toml")
    for section, schema in SECTIONS.items():
        assert f"[{section}]" in text
        for key in schema:
            assert f"# {key} = " in text, f"{section}.{key} is not documented in conf/xmppd.toml"


def test_shipped_config_documents_the_default_modules_and_their_options() -> None:
    text = (ROOT / "conf" / "xmppd.toml").read_text()
    commented = text.split("# enabled = ", 1)[1].split("\n\n", 1)[0]
    listed = tomllib.loads("enabled = " + commented.replace("\n#", "\n"))["enabled"]
    assert listed == DEFAULT_MODULES
    for name, spec in loader.available().items():
        for key in spec.options:
            assert f"# {key} = " in text, f"modules.{name}.{key} is not in conf/xmppd.toml"


@pytest.mark.parametrize(
    "text, key, line, words",
    [
        ("[c2s]\nport = 'x'\n", "c2s.port", 2, "expected an integer"),
        ("\n\n[c2s]\n\nprot = 5222\n", "c2s.prot", 5, "did you mean 'port'"),
        ("[limits]\nstanza_size = 10\n", "limits.stanza_size", 2, "at least"),
        ("[server]\nlog_level = 'loud'\n", "server.log_level", 2, "must be one of"),
        ("[server]\ndomain = 'a b'\n", "server.domain", 2, "not a valid domain"),
        ("[nonsense]\nx = 1\n", "nonsense", 1, "unknown section"),
        ("[modules]\nenabled = ['disco', 'nope']\n", "modules.enabled", 2, "unknown module 'nope'"),
        ("[modules.version]\nhide_os = 3\n", "modules.version.hide_os", 2, "true or false"),
    ],
)
def test_errors_name_the_key_and_line(text: str, key: str, line: int, words: str) -> None:
    with pytest.raises(ConfigError) as raised:
        loader.check(parse(text, "test.toml"))
    error = raised.value
    assert error.key == key
    assert error.line == line
    assert words in str(error)
    assert str(error).startswith(f"test.toml:{line}: {key}:")


def test_toml_syntax_error_names_the_line() -> None:
    with pytest.raises(ConfigError) as raised:
        parse("[server]\ndomain = \n", "bad.toml")
    assert "line 2" in str(raised.value)


def test_per_host_module_list() -> None:
    config = parse(
        "[server]\ndomain = 'a.example'\nextra_domains = ['b.example']\n"
        "[hosts.'b.example']\nmodules = ['disco']\n"
    )
    assert config.host("b.example").modules == ["disco"]
    assert "ping" in config.host("a.example").modules


def test_compliance_doc_is_generated_from_the_modules() -> None:
    from xmppd import compliance

    assert (ROOT / "docs" / "compliance.md").read_text() == compliance.render(), (
        "docs/compliance.md is stale: run python -m xmppd.compliance > docs/compliance.md"
    )
