"""The word filter's rules (xmppd/wordfilter.py): matching, runtime edits, refusals naming the
rule, and the configuration error naming `filter.rules.<name>` and its line."""

from __future__ import annotations

import pytest

from xmppd.config import parse
from xmppd.options import ConfigError
from xmppd.wordfilter import RuleError, WordFilter, refusal_text


def test_match_names_the_rule_and_ignores_case_by_default() -> None:
    rules = WordFilter({"spam": r"buy-now\.example", "insult": r"\bnitwit\b"})
    assert rules.match("visit BUY-NOW.example today").name == "spam"
    assert rules.match(None, "you Nitwit").name == "insult"
    assert rules.match("nitwits unite", "hello") is None
    assert refusal_text(rules.match("nitwit")) == (
        "the message was refused by the word filter (rule 'insult')"
    )
    strict = WordFilter({"shout": "HELLO"}, ignore_case=False)
    assert strict.match("hello") is None and strict.match("HELLO").name == "shout"


def test_rules_are_edited_at_runtime() -> None:
    rules = WordFilter()
    assert not rules and rules.match("anything") is None
    rules.set_rule("b-rule", "bad")
    rules.set_rule("a-rule", "worse")
    assert rules.listing() == {"a-rule": "worse", "b-rule": "bad"}
    assert rules.match("worse and bad").name == "a-rule"  # name order
    with pytest.raises(RuleError) as raised:
        rules.set_rule("broken", "(unclosed")
    assert raised.value.rule == "broken" and "not a regular expression" in str(raised.value)
    with pytest.raises(RuleError):
        rules.set_rule("bad name!", "x")
    assert rules.remove_rule("b-rule") and not rules.remove_rule("b-rule")
    with pytest.raises(RuleError):
        rules.replace({"ok": "fine", "broken": "["})
    assert rules.listing() == {"a-rule": "worse"}  # nothing changed by a failed replace
    rules.replace({"new": "x+"})  # a reloaded configuration keeps the runtime edits
    assert rules.listing() == {"a-rule": "worse", "new": "x+"}


def test_edits_lie_over_the_configured_rules() -> None:
    rules = WordFilter({"spam": "buy now", "link": "http://"})
    rules.remove_rule("link")
    rules.set_rule("spam", "cheap pills")
    assert rules.edits == {"link": None, "spam": "cheap pills"}
    rules.replace({"spam": "buy now", "link": "http://", "more": "x"})
    assert rules.listing() == {"more": "x", "spam": "cheap pills"}
    fresh = WordFilter({"spam": "buy now", "link": "http://"})  # a restart: the stored edits
    fresh.load_edits(rules.edits)
    assert fresh.listing() == {"spam": "cheap pills"}
    assert fresh.match("a link http://x") is None and fresh.match("cheap pills").name == "spam"


def test_a_bad_rule_in_the_config_names_its_key_and_line() -> None:
    text = '[filter]\nrules = { fine = "ok", broken = "(" }\n'
    with pytest.raises(ConfigError) as raised:
        parse(text, "test.toml")
    assert (raised.value.key, raised.value.line) == ("filter.rules.broken", 2)
    assert "not a regular expression" in str(raised.value)
    config = parse('[filter]\nrules = { fine = "ok" }\nignore_case = false\n', "test.toml")
    assert config.filter == {"rules": {"fine": "ok"}, "ignore_case": False}


def test_one_scan_for_all_rules_unless_a_rule_needs_its_own() -> None:
    rules = WordFilter({"a": r"\bfoo\b", "b": "ba[rz]"})
    assert rules.any_rule is not None  # one alternation
    assert rules.match("a baz here").name == "b" and rules.match("food") is None
    # a back-reference would point at another rule's group inside one alternation
    echo = WordFilter({"a": "x", "twice": r"(\w+) \1"})
    assert echo.any_rule is None
    assert echo.match("no no").name == "twice" and echo.match("no yes") is None
    # a flag only allowed at the start of a pattern: the rule still works on its own
    flagged = WordFilter({"a": "x", "b": "(?s)a.b"}, ignore_case=False)
    assert flagged.any_rule is None and flagged.match("a\nb").name == "b"
    rules.remove_rule("b")
    assert rules.match("a baz here") is None and rules.match("foo").name == "a"
