"""XMPP load generator: many authenticated sessions, then 1:1 messages between pairs.

Phases (all bounded; traffic only to 127.0.0.1):
  1. login   N sessions at bounded concurrency -> sessions/s
  2. idle    server RSS before any session vs. after N idle sessions -> KiB per session
  3. rate    `--messages` 1:1 messages at `--rate` msg/s, session i -> session i+1
             -> p50/p99 latency, server CPU per 10,000 delivered messages
  4. flood   `--flood-messages` with at most `--window` in flight -> max msg/s, CPU/10k
  5. close   `</stream:stream>` on every session, wait for the server to close
Prints one JSON object on stdout. Server figures come from /proc/<--server-pid>.

Every session sends in turn, so one account sends `rate / sessions` msg/s. A server with a
per-account message rate (xmppd's `[modules.abuse]`, on by default) would refuse the excess
and the figures would measure refusals: `--account-rate`/`--account-burst` give that limit,
the fixed rate must stay under it (else: more sessions) and the flood is paced below
`sessions x account-rate`. Refused messages (`type='error'`) are counted, never timed.

Run it pinned to a core other than the server's, e.g.
  taskset -c 0 python bench/loadgen.py --port 5222 --server-pid 1234 --sessions 5000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from xmppclient import ChatStats, Session, unverified_tls_context  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
MAX_SESSIONS = 19_000  # one process may open at most 20,000 files


# -- measurements from /proc -------------------------------------------------------------------
def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def core_times(core: int) -> tuple[float, float]:
    """(busy, steal) seconds of one CPU core since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{core} "):
                v = [int(x) for x in line.split()[1:9]]
                busy = v[0] + v[1] + v[2] + v[5] + v[6]  # user nice system irq softirq
                return busy / CLK_TCK, v[7] / CLK_TCK
    return 0.0, 0.0


def self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Meter:
    """Wall time, server CPU and our own CPU over one phase."""

    server_pid: int
    server_core: int
    wall: float = 0.0
    server_cpu: float = 0.0
    own_cpu: float = 0.0
    core_busy: float = 0.0
    core_steal: float = 0.0
    _start: tuple[float, ...] = field(default=())

    def __enter__(self) -> Meter:
        busy, steal = core_times(self.server_core)
        self._start = (
            time.monotonic(),
            proc_cpu_seconds(self.server_pid),
            self_cpu_seconds(),
            busy,
            steal,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        t0, s0, o0, b0, st0 = self._start
        self.wall = time.monotonic() - t0
        self.server_cpu = proc_cpu_seconds(self.server_pid) - s0
        self.own_cpu = self_cpu_seconds() - o0
        busy, steal = core_times(self.server_core)
        self.core_busy, self.core_steal = busy - b0, steal - st0

    def report(self) -> dict[str, float]:
        wall = self.wall or 1e-9
        return {
            "wall_s": round(self.wall, 3),
            "server_cpu_s": round(self.server_cpu, 3),
            "server_cpu_frac": round(self.server_cpu / wall, 3),
            "loadgen_cpu_s": round(self.own_cpu, 3),
            "loadgen_cpu_frac": round(self.own_cpu / wall, 3),
            # Time the server's core spent on other processes, or stolen by the hypervisor:
            # both shrink what the server can do per wall second.
            "core_others_frac": round(max(0.0, self.core_busy - self.server_cpu) / wall, 3),
            "core_steal_frac": round(self.core_steal / wall, 3),
        }


def percentile(sorted_values: list[int], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


# -- phases ------------------------------------------------------------------------------------
async def login_all(args: argparse.Namespace, stats: ChatStats) -> tuple[list[Session], int]:
    loop = asyncio.get_running_loop()
    tls = unverified_tls_context() if args.tls else None
    limit = asyncio.Semaphore(args.concurrency)
    sessions: list[Session | None] = [None] * args.sessions
    failures: list[str] = []

    async def one(i: int) -> None:
        async with limit:
            session: Session | None = None
            try:
                _, session = await loop.create_connection(
                    lambda: Session(stats), args.host, args.port
                )
                await asyncio.wait_for(
                    session.login(
                        args.domain,
                        f"{args.user_prefix}{i}",
                        args.password,
                        tls=tls,
                        mechanism=args.mechanism,
                        presence=not args.no_presence,
                    ),
                    args.login_timeout,
                )
                sessions[i] = session
            except Exception as exc:  # noqa: BLE001 - counted and reported
                failures.append(f"{type(exc).__name__}: {exc}"[:300])
                if session is not None and session.transport is not None:
                    session.transport.abort()

    await asyncio.gather(*(one(i) for i in range(args.sessions)))
    if failures:
        print(f"loadgen: {len(failures)} logins failed, first: {failures[0]}", file=sys.stderr)
    return [s for s in sessions if s is not None], len(failures)


def message_templates(sessions: list[Session], bare: bool) -> list[tuple[bytes, bytes]]:
    """Per sender: (prefix, suffix) bytes of a message to the next session; the send time goes
    between them."""
    out = []
    for i in range(len(sessions)):
        to = sessions[(i + 1) % len(sessions)].jid
        if bare:
            to = to.split("/", 1)[0]
        out.append((f"<message to='{to}' type='chat'><body>".encode(), b"</body></message>"))
    return out


async def wait_delivered(stats: ChatStats, target: int, deadline: float) -> None:
    while len(stats.latencies_ns) < target and time.monotonic() < deadline:
        await asyncio.sleep(0.005)


async def send_at_rate(
    sessions: list[Session], templates: list[tuple[bytes, bytes]], count: int, rate: float
) -> float:
    """Send `count` messages paced at `rate`/s; returns the achieved send rate."""
    n = len(sessions)
    sent = 0
    start = time.monotonic()
    clock = time.monotonic_ns
    while sent < count:
        due = min(count, int((time.monotonic() - start) * rate) + 1)
        while sent < due:
            s = sent % n
            prefix, suffix = templates[s]
            sessions[s].transport.write(prefix + str(clock()).encode() + suffix)  # type: ignore[union-attr]
            sent += 1
        await asyncio.sleep(0.001)
    return count / max(time.monotonic() - start, 1e-9)


def account_budget(sessions: int, rate: float, burst: int) -> Callable[[float], float]:
    """Messages all accounts together may have sent `elapsed` s into the flood without any one
    going over its bucket: round-robin sending spreads them evenly, the margin keeps half the
    burst and 5 % of the rate for the rounding and for what the fixed-rate phase drained."""
    if rate <= 0:
        return lambda elapsed: float("inf")
    return lambda elapsed: sessions * (burst / 2 + 0.95 * rate * elapsed)


async def send_flood(
    sessions: list[Session],
    templates: list[tuple[bytes, bytes]],
    stats: ChatStats,
    count: int,
    window: int,
    deadline: float,
    budget: Callable[[float], float],
) -> None:
    """Send as fast as the server delivers, keeping at most `window` messages in flight and
    each account within `budget`."""
    n = len(sessions)
    sent = 0
    base = len(stats.latencies_ns)
    clock = time.monotonic_ns
    start = time.monotonic()
    while sent < count and time.monotonic() < deadline:
        in_budget = int(budget(time.monotonic() - start))
        allowed = min(count, len(stats.latencies_ns) - base + window, in_budget)
        while sent < allowed:
            s = sent % n
            prefix, suffix = templates[s]
            sessions[s].transport.write(prefix + str(clock()).encode() + suffix)  # type: ignore[union-attr]
            sent += 1
        await asyncio.sleep(0.001)  # libuv timers tick in ms: less would spin


def latency_report(latencies_ns: list[int]) -> dict[str, float]:
    ordered = sorted(latencies_ns)
    return {
        "p50_ms": round(percentile(ordered, 0.50) / 1e6, 3),
        "p90_ms": round(percentile(ordered, 0.90) / 1e6, 3),
        "p99_ms": round(percentile(ordered, 0.99) / 1e6, 3),
        "max_ms": round(ordered[-1] / 1e6, 3) if ordered else float("nan"),
    }


async def chat_phase(
    args: argparse.Namespace, sessions: list[Session], stats: ChatStats, flood: bool
) -> dict[str, object]:
    templates = message_templates(sessions, args.bare_jid)
    stats.latencies_ns = []
    stats.refused = 0
    count = args.flood_messages if flood else args.messages
    budget = account_budget(len(sessions), args.account_rate, args.account_burst)
    with Meter(args.server_pid, args.server_core) as meter:
        if flood:
            deadline = time.monotonic() + args.phase_timeout
            await send_flood(sessions, templates, stats, count, args.window, deadline, budget)
            send_rate = None
        else:
            send_rate = await send_at_rate(sessions, templates, count, args.rate)
            deadline = time.monotonic() + args.phase_timeout
        await wait_delivered(stats, count, deadline)
    delivered = len(stats.latencies_ns)
    out: dict[str, object] = {
        "sent": count,
        "delivered": delivered,
        "refused": stats.refused,
        **meter.report(),
        "delivered_per_s": round(delivered / meter.wall, 1) if meter.wall else 0.0,
        "server_cpu_s_per_10k": round(meter.server_cpu * 10_000 / delivered, 4)
        if delivered
        else None,
        **latency_report(stats.latencies_ns),
    }
    if flood and args.account_rate > 0:
        out["account_rate_cap"] = round(len(sessions) * args.account_rate, 1)
    if send_rate is not None:
        out["target_rate"] = args.rate
        out["achieved_send_rate"] = round(send_rate, 1)
    return out


async def run(args: argparse.Namespace) -> dict[str, object]:
    stats = ChatStats()
    result: dict[str, object] = {"server": args.label, "sessions_wanted": args.sessions}
    rss_base = proc_rss_kib(args.server_pid)

    with Meter(args.server_pid, args.server_core) as meter:
        sessions, failed = await login_all(args, stats)
    result["login"] = {
        "ok": len(sessions),
        "failed": failed,
        "concurrency": args.concurrency,
        "sessions_per_s": round(len(sessions) / meter.wall, 1),
        "server_cpu_ms_per_login": round(meter.server_cpu * 1000 / max(1, len(sessions)), 3),
        **meter.report(),
    }
    gc.collect()
    gc.freeze()  # keep the collector off the (now static) session objects

    await asyncio.sleep(args.idle_seconds)
    rss_idle = proc_rss_kib(args.server_pid)
    result["idle"] = {
        "rss_base_kib": rss_base,
        "rss_idle_kib": rss_idle,
        "kib_per_session": round((rss_idle - rss_base) / max(1, len(sessions)), 2),
        "after_s": args.idle_seconds,
    }

    if len(sessions) >= 2:
        for s in sessions:
            s.start_chat()
        gc.disable()
        if args.messages:
            result["rate"] = await chat_phase(args, sessions, stats, flood=False)
        if args.flood_messages:
            result["flood"] = await chat_phase(args, sessions, stats, flood=True)
        gc.enable()
        result["lost_connections"] = stats.lost
        result["rss_after_chat_kib"] = proc_rss_kib(args.server_pid)

    with Meter(args.server_pid, args.server_core) as meter:
        closed = await asyncio.gather(*(s.close(args.close_timeout) for s in sessions))
    result["close"] = {"clean": sum(closed), "unclean": len(closed) - sum(closed), **meter.report()}
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--domain", default="localhost")
    p.add_argument("--server-pid", type=int, required=True, help="pid to sample in /proc")
    p.add_argument("--server-core", type=int, default=1, help="core the server is pinned to")
    p.add_argument("--label", default="server", help="name put in the JSON output")
    p.add_argument("--sessions", type=int, default=1000)
    p.add_argument("--user-prefix", default="u", help="accounts are <prefix>0..<prefix>N-1")
    p.add_argument("--password", default="bench-password")
    p.add_argument("--mechanism", default="SCRAM-SHA-1")
    p.add_argument("--tls", action="store_true", help="STARTTLS (certificate not verified)")
    p.add_argument("--no-presence", action="store_true", help="skip initial <presence/>")
    p.add_argument("--bare-jid", action="store_true", help="address messages to bare JIDs")
    p.add_argument("--concurrency", type=int, default=100, help="logins in flight")
    p.add_argument("--login-timeout", type=float, default=60.0)
    p.add_argument("--idle-seconds", type=float, default=5.0)
    p.add_argument("--messages", type=int, default=20_000, help="fixed-rate phase size")
    p.add_argument("--rate", type=float, default=1_000.0, help="fixed-rate msg/s")
    p.add_argument("--flood-messages", type=int, default=0, help="flood phase size (0: skip)")
    p.add_argument("--window", type=int, default=500, help="flood: messages in flight")
    p.add_argument(
        "--account-rate", type=float, default=0.0,
        help="the server's per-account msg/s limit (xmppd default 10; 0: none)",
    )  # fmt: skip
    p.add_argument("--account-burst", type=int, default=60, help="... and its burst")
    p.add_argument("--phase-timeout", type=float, default=60.0, help="max wait for delivery")
    p.add_argument("--close-timeout", type=float, default=10.0)
    p.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto")
    args = p.parse_args(argv)
    if not 1 <= args.sessions <= MAX_SESSIONS:
        p.error(f"--sessions must be 1..{MAX_SESSIONS} (file limit per process)")
    if args.account_rate > 0 and args.messages and args.rate > args.sessions * args.account_rate:
        p.error(
            f"--rate {args.rate:g} over {args.sessions} sessions is {args.rate / args.sessions:g}"
            f" msg/s per account, above --account-rate {args.account_rate:g}: use at least "
            f"{math.ceil(args.rate / args.account_rate)} sessions"
        )
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        p.error("traffic only to the local machine")
    return args


def event_loop_factory(choice: str) -> tuple[str, Callable[[], asyncio.AbstractEventLoop]]:
    """uvloop when installed (about half the CPU per login and per message), else asyncio."""
    if choice in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise
        else:
            return "uvloop", uvloop.new_event_loop
    return "asyncio", asyncio.new_event_loop


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    loop_name, factory = event_loop_factory(args.loop)
    with asyncio.Runner(loop_factory=factory) as runner:
        result = runner.run(run(args))
    result["loadgen_loop"] = loop_name
    print(json.dumps(result), flush=True)
    return 0 if result["login"]["failed"] == 0 else 1  # type: ignore[index]


if __name__ == "__main__":
    sys.exit(main())
