"""LDAP costs against a real slapd (the test fixture's directory): logins, and all-staff groups.

    python bench/ldap_bench.py [logins] [--logins 300] [--concurrency 32]
    python bench/ldap_bench.py groups [--sizes 5000 20000] [--online 200] [--rounds 10]

`groups` (bench/ldap_groups.py) runs xmppd against a directory with one group of every user and
measures roster fetch time and server memory for a member, and the presence fan-out when one
member comes online while `--online` others are.

`logins` measures `LdapAuth.check_password` — what a SASL PLAIN login costs the server — in
three modes:
  uncached     every login searches the user (service connection) and binds as the user
  lookup cache the DN comes from the cache (cache_ttl): one bind per login
  password cache a recent login is verified from a salted in-memory MAC (password_cache_ttl)
Sequential runs give latency (median, p95); concurrent runs give throughput.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "ldap"))
import slapd  # noqa: E402

from auth.ldap import LdapAuth  # noqa: E402
from xmppd.config import parse  # noqa: E402

MODES = {
    "uncached": {"cache_ttl": 0.0},
    "lookup cache": {"cache_ttl": 300.0},
    "password cache": {"cache_ttl": 300.0, "password_cache_ttl": 60.0},
}


async def sequential(auth: LdapAuth, users: list[str], n: int) -> list[float]:
    times = []
    for i in range(n):
        user = users[i % len(users)]
        start = time.perf_counter()
        assert await auth.check_password(user, f"{user}-secret")
        times.append(time.perf_counter() - start)
    return times


async def concurrent(auth: LdapAuth, users: list[str], n: int, width: int) -> float:
    limiter = trio.Semaphore(width)

    async def one(user: str) -> None:
        async with limiter:
            assert await auth.check_password(user, f"{user}-secret")

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for i in range(n):
            nursery.start_soon(one, users[i % len(users)])
    return n / (time.perf_counter() - start)


async def main(args: argparse.Namespace) -> None:
    directory = slapd.Slapd(Path(tempfile.mkdtemp(prefix="ldap-bench-")))
    directory.start()
    users = slapd.NAMED
    try:
        print(f"{args.logins} logins per run over {len(users)} users, slapd on loopback")
        print(
            f"{'mode':<15} {'median ms':>10} {'p95 ms':>8} {'logins/s':>9}  (x{args.concurrency})"
        )
        for mode, extra in MODES.items():
            settings = parse(directory.settings_toml(**extra)).auth["ldap"]
            auth = LdapAuth(settings)
            await sequential(auth, users, len(users))  # warm pools and caches
            times = sorted(await sequential(auth, users, args.logins))
            rate = await concurrent(auth, users, args.logins, args.concurrency)
            p95 = times[int(len(times) * 0.95) - 1]
            print(
                f"{mode:<15} {statistics.median(times) * 1000:>10.2f} {p95 * 1000:>8.2f}"
                f" {rate:>9.0f}"
            )
    finally:
        directory.stop()


if __name__ == "__main__":
    if sys.argv[1:2] == ["groups"]:
        import ldap_groups

        ldap_groups.cli(sys.argv[2:])
        sys.exit(0)
    if sys.argv[1:2] == ["logins"]:
        del sys.argv[1]
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--logins", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=32)
    trio.run(main, parser.parse_args())
