"""All-staff directory groups: what a member of one N-member group costs xmppd (real slapd).

    python bench/ldap_bench.py groups [--sizes 5000 20000] [--online 200] [--rounds 10]

For each size a fresh slapd holds N generated users plus the fixture's 20 named ones, all in the
group "Everyone" (tests/ldap/make_ldif.py). One xmppd process (log level info) serves it:
  roster      one member's roster get: the first one (waits for the directory read) and the
              median of warm ones; bytes and items of the answer
  memory      the server's RSS before the first login, after the directory is read and the
              roster fetched, and with `--online` members online
  fan-out     `--online` members are online; another member sends its initial presence: wall
              time until all of them got it and it got theirs, and the server CPU for that
              (utime+stime of the process, averaged over `--rounds` members coming online)
  walk        in-process: finding the online members of the group by walking the online
              accounts (what xmppd does when they are fewer) versus walking every member
The per-pair rows the earlier approach would store are N x (N - 1), given for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "ldap"))
sys.path.insert(0, str(ROOT / "bench"))
import slapd  # noqa: E402
from servers import free_port, wait_port  # noqa: E402
from xmppclient import ChatStats, Session, unverified_tls_context  # noqa: E402

ITEM = re.compile(rb"<item ")
CLK = os.sysconf("SC_CLK_TCK")

CONFIG = """
[server]
domain = "localhost"
data_dir = "{data}"
log_level = "info"
demo_account = false

[http]
interfaces = ["127.0.0.1"]
plain_interfaces = ["127.0.0.1"]
port = {http}
tls_port = {https}

[c2s]
interfaces = ["127.0.0.1"]
port = {port}
direct_tls_port = {tls}

[limits]
connections_per_ip = 2000
"""


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK  # utime, stime


async def connect(port: int, user: str, presence: bool) -> Session:
    loop = asyncio.get_running_loop()
    _, session = await loop.create_connection(lambda: Session(ChatStats()), "127.0.0.1", port)
    await session.login(
        "localhost",
        user,
        f"{user}-secret",
        tls=unverified_tls_context(),
        mechanism="PLAIN",
        presence=presence,
    )
    return session


async def roster_get(session: Session, ident: str) -> tuple[float, int, int]:
    """(seconds, bytes, items) of one full roster get."""
    session.buf = b""
    start = time.perf_counter()
    session.send(f"<iq type='get' id='{ident}'><query xmlns='jabber:iq:roster'/></iq>")
    # Only the answer arrives (no presence was sent): done when the buffer ends with </iq>.
    # (A regex over the whole buffer at every read would cost the client O(n²) here.)
    while not session.buf.endswith(b"</iq>"):
        await asyncio.sleep(0.0005)
    took = time.perf_counter() - start
    return took, len(session.buf), len(ITEM.findall(session.buf))


async def wait_until(check, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("presence did not arrive")
        await asyncio.sleep(0.002)


async def fan_out(pid: int, port: int, online: list[Session], user: str) -> tuple[float, float]:
    """(wall s, server CPU s) for `user` coming online in front of `online` sessions."""
    newcomer = await connect(port, user, presence=False)
    await asyncio.sleep(0.3)  # let the login's own work settle
    for s in online:
        s.buf = b""
    newcomer.buf = b""
    marker = f"from='{user}@localhost/".encode()
    marker2 = f'from="{user}@localhost/'.encode()
    cpu0, start = cpu_s(pid), time.perf_counter()
    newcomer.send("<presence/>")

    def done() -> bool:
        got = newcomer.buf.count(b"<presence") >= len(online)
        return got and all(marker in s.buf or marker2 in s.buf for s in online)

    await wait_until(done)
    wall, cpu = time.perf_counter() - start, cpu_s(pid) - cpu0
    await newcomer.close(5)
    await asyncio.sleep(0.3)
    return wall, cpu


def snapshot_memory(size: int) -> dict[str, float]:
    """KiB the server keeps for one group of `size` (tracemalloc, in-process): the snapshot
    (members, names, memberships, digests) and the rendered items of the group."""
    from xmppd.modules.directory_groups import Snapshot

    names = {f"bulk{i:04d}": f"Bulk User {i}" for i in range(1, size + 1)}
    tracemalloc.start()
    snap = Snapshot.build(names, {"Everyone": set(names)}, set())
    built = tracemalloc.get_traced_memory()[0]
    snap.render_group("Everyone", "@localhost")
    rendered = tracemalloc.get_traced_memory()[0] - built
    tracemalloc.stop()
    return {"snapshot_kib": round(built / 1024), "rendered_kib": round(rendered / 1024)}


def walk_strategies(size: int, online: int) -> dict[str, float]:
    """µs to find the online members of a `size` group, walking members vs online accounts."""
    suffix = "@localhost"
    members = frozenset(f"bulk{i:04d}" for i in range(1, size + 1))
    on = {f"bulk{i:04d}{suffix}": [] for i in range(2, online + 2)}.keys()
    n = len(suffix)
    by_members = timeit.timeit(lambda: [m + suffix for m in members if m + suffix in on], number=20)
    by_online = timeit.timeit(
        lambda: [b for b in on if b.endswith(suffix) and b[:-n] in members], number=20
    )
    return {"walk_members_us": by_members / 20 * 1e6, "walk_online_us": by_online / 20 * 1e6}


async def one_size(size: int, args: argparse.Namespace, base: Path) -> dict:
    result: dict = {"group_members": size + len(slapd.NAMED), "online": args.online}
    started = time.perf_counter()
    directory = slapd.Slapd(base / f"slapd-{size}", bulk_users=size)
    result["slapadd_s"] = round(time.perf_counter() - started, 1)
    directory.start()
    work = base / f"xmppd-{size}"
    work.mkdir()
    port = free_port()
    config = work / "xmppd.toml"
    config.write_text(
        CONFIG.format(data=work / "data", http=free_port(), https=free_port(), port=port,
                      tls=free_port())
        + directory.settings_toml(group_base=slapd.BASE, refresh_interval=3600.0)
    )  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    log = (work / "xmppd.log").open("ab")
    server = subprocess.Popen(
        [sys.executable, "-m", "xmppd", "serve", "-c", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=work,
    )
    sessions: list[Session] = []
    try:
        wait_port(port, server)
        await asyncio.sleep(1)
        result["rss_start_kib"] = rss_kib(server.pid)
        member = await connect(port, "bulk0001", presence=False)
        sessions.append(member)
        first, size_b, items = await roster_get(member, "first")
        warm = [(await roster_get(member, f"r{i}"))[0] for i in range(args.fetches)]
        result.update(
            roster_items=items,
            roster_bytes=size_b,
            roster_first_ms=round(first * 1000, 1),
            roster_warm_median_ms=round(statistics.median(warm) * 1000, 1),
            rss_after_roster_kib=rss_kib(server.pid),
        )
        limiter = asyncio.Semaphore(16)

        async def online_one(i: int) -> Session:
            async with limiter:
                return await connect(port, f"bulk{i:04d}", presence=True)

        online = await asyncio.gather(*(online_one(i) for i in range(2, args.online + 2)))
        sessions += online
        await asyncio.sleep(2)
        result["rss_online_kib"] = rss_kib(server.pid)
        rounds = [
            await fan_out(server.pid, port, list(online), f"bulk{args.online + 10 + k:04d}")
            for k in range(args.rounds)
        ]
        result["fanout_wall_median_ms"] = round(statistics.median(r[0] for r in rounds) * 1000, 1)
        result["fanout_server_cpu_mean_ms"] = round(statistics.mean(r[1] for r in rounds) * 1000, 1)
        result["fanout_stanzas"] = 2 * args.online  # presence out to each, and each one's back
        result.update({k: round(v, 1) for k, v in walk_strategies(size, args.online).items()})
        result.update(snapshot_memory(result["group_members"]))
        result["old_per_pair_rows"] = result["group_members"] * (result["group_members"] - 1)
    finally:
        for s in sessions:
            if s.transport is not None and not s.closed:
                s.transport.abort()
        server.terminate()
        server.wait(timeout=30)
        directory.stop()
    return result


async def run(args: argparse.Namespace) -> list[dict]:
    base = Path(tempfile.mkdtemp(prefix="ldap-groups-"))
    results = []
    for size in args.sizes:
        print(f"group of {size + len(slapd.NAMED)} members ...", flush=True)
        results.append(await one_size(size, args, base))
        print(json.dumps(results[-1]), flush=True)
    return results


def table(results: list[dict]) -> str:
    rows = [
        ("group members", "group_members"),
        ("roster items", "roster_items"),
        ("roster bytes", "roster_bytes"),
        ("first roster get ms (incl. directory read)", "roster_first_ms"),
        ("warm roster get ms (median)", "roster_warm_median_ms"),
        ("server RSS at start KiB", "rss_start_kib"),
        ("server RSS after read + roster KiB", "rss_after_roster_kib"),
        ("server RSS with members online KiB", "rss_online_kib"),
        ("of which directory snapshot KiB (tracemalloc)", "snapshot_kib"),
        ("of which rendered group items KiB", "rendered_kib"),
        ("members online", "online"),
        ("fan-out wall ms (median)", "fanout_wall_median_ms"),
        ("fan-out server CPU ms (mean)", "fanout_server_cpu_mean_ms"),
        ("walk online accounts µs", "walk_online_us"),
        ("walk all members µs", "walk_members_us"),
        ("rows the per-pair approach stores", "old_per_pair_rows"),
    ]
    lines = [f"{'':44}" + "".join(f"{r['group_members']:>14,}" for r in results)]
    for label, key in rows:
        lines.append(f"{label:44}" + "".join(f"{r[key]:>14,}" for r in results))
    return "\n".join(lines)


def cli(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000])
    parser.add_argument("--online", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--fetches", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None, help="write .json and .txt here")
    args = parser.parse_args(argv)
    results = asyncio.run(run(args))
    text = table(results)
    print(text)
    if args.out is not None:
        args.out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
        args.out.with_suffix(".txt").write_text(text + "\n")
