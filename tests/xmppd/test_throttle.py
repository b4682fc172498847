"""The login throttle's rules, without sockets: time is a number passed in."""

from __future__ import annotations

import logging

import pytest

from xmppd.config import parse
from xmppd.options import ConfigError
from xmppd.throttle import LoginThrottle

GUESSER, OWNER = "192.0.2.7", "198.51.100.9"
ACCOUNT = "alice@localhost"


def throttle(**settings: object) -> LoginThrottle:
    base = {"slow_after": 3, "ban_after": 6, "delay": 1.0, "max_delay": 4.0, "window": 600.0}
    return LoginThrottle({**base, "ban_seconds": 900.0, **settings})


def fail(t: LoginThrottle, address: str, times: int, now: float = 0.0, account: str = ACCOUNT):
    return [t.record_failure(address, account, now) for _ in range(times)]


def test_an_address_is_slowed_more_and_more_then_banned() -> None:
    t = throttle()
    delays = []
    for _ in range(6):
        delays.append(t.delay_for(GUESSER, ACCOUNT, 0.0))
        assert not t.banned(GUESSER, 0.0)
        started = t.record_failure(GUESSER, ACCOUNT, 0.0)
    assert delays == [0.0, 0.0, 0.0, 1.0, 2.0, 4.0]  # doubling from slow_after, capped
    assert started  # the sixth failure bans
    assert t.banned(GUESSER, 1.0) == 899.0
    assert t.banned(GUESSER, 900.0) == 0.0  # served
    assert t.delay_for(GUESSER, ACCOUNT, 900.0) == 0.0  # and a fresh start after it


def test_ban_start_and_end_are_logged_once_each(caplog: pytest.LogCaptureFixture) -> None:
    t = throttle()
    with caplog.at_level(logging.INFO, logger="xmppd.auth"):
        fail(t, GUESSER, 8)  # more failures after the ban started: no new ban, no new line
        t.banned(GUESSER, 10.0)
        t.sweep(10.0)
        t.sweep(901.0)
        t.banned(GUESSER, 902.0)
        t.sweep(903.0)
    lines = [r.getMessage() for r in caplog.records]
    assert [line for line in lines if "begins" in line] == [
        f"login ban of {GUESSER} for 900 s begins: 6 failed logins within 600 s"
    ]
    assert [line for line in lines if "ends" in line] == [f"login ban of {GUESSER} ends"]


def test_failures_outside_the_window_are_forgotten() -> None:
    t = throttle()
    fail(t, GUESSER, 5, now=0.0)
    assert t.delay_for(GUESSER, ACCOUNT, 10.0) == 4.0
    assert t.delay_for(GUESSER, ACCOUNT, 601.0) == 0.0
    assert not fail(t, GUESSER, 5, now=601.0)[-1]  # 5 in the new window: no ban yet


def test_the_owner_at_a_clean_address_is_never_slowed_by_attacks_on_the_account() -> None:
    t = throttle(account_slow_after=4)
    for n in range(50):  # many addresses, each under its own limits, all on one account
        fail(t, f"203.0.113.{n}", 2)
    assert t.delay_for(OWNER, ACCOUNT, 0.0) == 0.0
    assert not t.banned(OWNER, 0.0)
    # An address with a failure of its own that never logged in to the account waits...
    assert t.delay_for("203.0.113.1", ACCOUNT, 0.0) == 4.0
    # ...but only on that account
    assert t.delay_for("203.0.113.1", "bob@localhost", 0.0) == 0.0


def test_the_owner_who_mistypes_is_not_slowed_by_others_once_known() -> None:
    t = throttle(account_slow_after=4)
    fail(t, "203.0.113.1", 2)
    fail(t, "203.0.113.2", 2)
    t.record_success(OWNER, ACCOUNT, 0.0)
    t.record_failure(OWNER, ACCOUNT, 1.0)  # a typo
    assert t.delay_for(OWNER, ACCOUNT, 1.0) == 0.0  # known here: only its own count applies
    assert t.delay_for("203.0.113.1", ACCOUNT, 1.0) == 2.0  # 5 failures, from 4: 1 s doubled


def test_ipv6_is_counted_per_64_and_mapped_ipv4_as_ipv4() -> None:
    t = throttle()
    for n in range(6):
        t.record_failure(f"2001:db8:1:2::{n + 1}", None, 0.0)
    assert t.banned("2001:db8:1:2:ffff::1", 0.0)  # same /64
    assert not t.banned("2001:db8:1:3::1", 0.0)  # the next /64
    fail(t, "::ffff:192.0.2.7", 6, account="")
    assert t.banned(GUESSER, 0.0)


def test_exempt_addresses_and_networks_are_never_counted() -> None:
    t = throttle(exempt=["127.0.0.1", "10.0.0.0/8", "2001:db8::/32"])
    for address in ("127.0.0.1", "10.9.8.7", "2001:db8::5"):
        fail(t, address, 20)
        assert t.delay_for(address, ACCOUNT, 0.0) == 0.0
        assert not t.banned(address, 0.0)
    fail(t, "127.0.0.2", 6)
    assert t.banned("127.0.0.2", 0.0)
    assert t.tracked == (1, 1, 1)


def test_memory_is_bounded_and_stale_entries_expire() -> None:
    t = throttle(max_tracked=100)
    for n in range(1000):
        t.record_failure(f"10.0.{n // 256}.{n % 256}", f"user{n}@localhost", float(n))
    assert t.tracked[:2] == (100, 100)
    assert t.delay_for("10.0.0.0", None, 1000.0) == 0.0  # the oldest were forgotten first
    t.sweep(1000.0 + 600.0 + 60.0)
    assert t.tracked == (0, 0, 0)


def test_a_ban_survives_when_it_is_the_oldest_entry() -> None:
    t = throttle(max_tracked=10)
    fail(t, GUESSER, 6)
    for n in range(50):
        t.record_failure(f"10.0.0.{n}", None, 1.0)
    assert t.banned(GUESSER, 2.0)  # bans are a table of their own


@pytest.mark.parametrize(
    "text, words",
    [
        ("[limits.login]\nexempt = ['not-an-address']\n", "'not-an-address' is not an address"),
        ("[limits.login]\nban_afterr = 3\n", "did you mean 'ban_after'"),
        ("[limits.login]\nslow_after = 0\n", "at least 1"),
    ],
)
def test_config_errors_name_the_key(text: str, words: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse(text, "x.toml")
    assert raised.value.key.startswith("limits.login.")
    assert raised.value.line == 2
    assert words in str(raised.value)


def test_config_defaults() -> None:
    login = parse("").limits["login"]
    assert (login["slow_after"], login["ban_after"], login["window"]) == (3, 10, 600.0)
    assert (login["ban_seconds"], login["exempt"], login["ipv6_prefix"]) == (900.0, [], 64)
