"""MUC fan-out: one room with N occupants, xmppd side by side with Prosody's MUC.

    python bench/muc_bench.py --sizes 50,200,1000 --rounds 3 --nice -10

Each run starts a server afresh with a MUC service on conference.localhost (servers.py,
`muc=True`: limits raised above the benchmark's load), pinned to core 1, and runs the load
generator (this file, `loadgen` subcommand) pinned to core 0:

  1. login   N sessions (u0..uN-1), SCRAM-SHA-1, bind, initial presence
  2. join    u0 creates the room and submits the instant-room form (XEP-0045 §10.1.2);
             the others join, `--join-concurrency` in flight, each waiting for its own
             presence (status 110). Each join is seen by every occupant already there.
  3. warm-up a few messages, all delivered to everyone: the presence backlog is flushed
  4. measured `--messages` groupchat messages at a fixed rate from `--senders` occupants in
             turn; every occupant (senders included: the room reflects) must receive every
             one. Body: "<seq> <CLOCK_MONOTONIC ns at send>".
             server CPU per 10k deliveries = utime+stime (/proc/<pid>/stat) over the window
             (first send .. last delivery) x 10,000 / deliveries (messages x occupants).
             p50/p99 latency = receipt time at each occupant - send time, over all deliveries.

By default the message rate is `--deliveries-per-s` / N, so every size puts the same delivery
load on the server (5,000/s: 100 msg/s in a room of 50, 5 msg/s in a room of 1,000), and the
window lasts `--window-s` seconds. Rounds interleave servers and sizes; the report gives medians
per (server, size) and xmppd's ratio to Prosody. Writes bench/results/muc-<date>.txt and .json.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from compare import run_loadgen  # noqa: E402
from loadgen import Meter, event_loop_factory, latency_report  # noqa: E402
from servers import SERVERS, Accounts, Xmppd  # noqa: E402
from xmppclient import ChatStats, LoginError, Session  # noqa: E402

NS_MUC = "http://jabber.org/protocol/muc"
NS_MUC_OWNER = "http://jabber.org/protocol/muc#owner"
SELF_PRESENCE = re.compile(rb"code=[\"']110[\"']")  # §7.2.3: status 110 marks one's own presence
PRESENCE_ERROR = re.compile(rb"<presence[^>]*type=[\"']error[\"'].*?</presence>", re.S)
CONFIG_RESULT = re.compile(rb"<iq[^>]*id=[\"']bench-cfg[\"'][^>]*>")
BODY = re.compile(rb"<body>(\d+) (\d+)</body>")
LOGIN, JOINING, CHAT = range(3)
LOADGEN_SATURATED = 0.9  # of one core
SERVER_BUSY = 0.85  # of one core: latency then measures a queue


# -- load generator ----------------------------------------------------------------------------
class Tally:
    """Deliveries seen by all sessions: latencies of measured messages, warm-up count."""

    __slots__ = ("first_measured", "latencies_ns", "warmup", "duplicates")

    def __init__(self, first_measured: int) -> None:
        self.first_measured = first_measured
        self.latencies_ns: list[int] = []
        self.warmup = 0
        self.duplicates = 0


class Occupant(Session):
    """A Session that joins a room and then only counts the groupchat bodies it receives.

    While joining, only a short tail of the stream is kept (a joiner of a room of 1,000 first
    receives 999 presences); while chatting, text without a complete message is trimmed."""

    __slots__ = ("mode", "tail", "joined", "tally", "seen")

    def __init__(self, stats: ChatStats, tally: Tally, total: int) -> None:
        super().__init__(stats)
        self.mode = LOGIN
        self.tail = b""
        self.joined: asyncio.Future[None] | None = None
        self.tally = tally
        self.seen = bytearray(total)  # per message sequence number: received yet?

    def data_received(self, data: bytes) -> None:
        if self.mode == CHAT:
            self._chat(data)
        elif self.mode == JOINING:
            self._joining(data)
        else:
            super().data_received(data)

    def _joining(self, data: bytes) -> None:
        window = self.tail + data
        assert self.joined is not None
        found = SELF_PRESENCE.search(window)
        if found is not None:
            self.mode, self.chatting, self.buf = CHAT, True, b""
            self.joined.set_result(None)
            return
        error = PRESENCE_ERROR.search(window)
        if error is not None:
            self.joined.set_exception(LoginError(error.group(0)[:300].decode(errors="replace")))
            self.mode = LOGIN
            return
        self.tail = window[-1024:]

    def _chat(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        end = buf.rfind(b"</message>")
        if end < 0:
            self.buf = buf if len(buf) < 65536 else buf[-8192:]
            return
        end += 10
        self.buf = buf[end:]
        now = time.monotonic_ns()
        tally, seen = self.tally, self.seen
        for match in BODY.finditer(buf, 0, end):
            seq = int(match.group(1))
            if seen[seq]:
                tally.duplicates += 1
                continue
            seen[seq] = 1
            if seq >= tally.first_measured:
                tally.latencies_ns.append(now - int(match.group(2)))
            else:
                tally.warmup += 1

    async def enter(self, room: str, nick: str, timeout: float) -> None:
        self.mode, self.tail = JOINING, b""
        self.joined = asyncio.get_running_loop().create_future()
        self.send(
            f"<presence to='{room}/{nick}'><x xmlns='{NS_MUC}'>"
            "<history maxstanzas='0'/></x></presence>"
        )
        await asyncio.wait_for(self.joined, timeout)

    async def configure_instant(self, room: str, timeout: float) -> None:
        """§10.1.2: accept the default configuration, which unlocks the new room."""
        self.mode, self.chatting, self.buf = LOGIN, False, b""
        self.send(
            f"<iq type='set' to='{room}' id='bench-cfg'><query xmlns='{NS_MUC_OWNER}'>"
            "<x xmlns='jabber:x:data' type='submit'/></query></iq>"
        )
        found = await asyncio.wait_for(self.expect(CONFIG_RESULT), timeout)
        if b"result" not in found.group(0):
            raise LoginError(f"room configuration refused: {found.group(0)[:200]!r}")
        self.mode, self.chatting, self.buf = CHAT, True, b""


async def login_all(args: argparse.Namespace, make: Any) -> list[Occupant]:
    loop = asyncio.get_running_loop()
    limit = asyncio.Semaphore(args.login_concurrency)

    async def one(i: int) -> Occupant:
        async with limit:
            _, session = await loop.create_connection(make, args.host, args.port)
            login = session.login(args.domain, f"u{i}", args.password, tls=None)
            await asyncio.wait_for(login, args.timeout)
            return session

    return list(await asyncio.gather(*(one(i) for i in range(args.occupants))))


async def join_all(args: argparse.Namespace, sessions: list[Occupant]) -> None:
    creator = sessions[0]
    await creator.enter(args.room, "u0", args.timeout)
    await creator.configure_instant(args.room, args.timeout)
    limit = asyncio.Semaphore(args.join_concurrency)

    async def one(i: int) -> None:
        async with limit:
            await sessions[i].enter(args.room, f"u{i}", args.timeout)

    await asyncio.gather(*(one(i) for i in range(1, len(sessions))))


async def wait_for_count(count: Any, target: int, deadline: float) -> None:
    while count() < target and time.monotonic() < deadline:
        await asyncio.sleep(0.005)


async def send_at_rate(
    senders: list[Occupant], room: str, first: int, count: int, rate: float
) -> float:
    """Messages `first`..`first+count-1` paced at `rate`/s, senders in turn; the send rate."""
    prefix, suffix = f"<message to='{room}' type='groupchat'><body>".encode(), b"</body></message>"
    sent, start, clock = 0, time.monotonic(), time.monotonic_ns
    while sent < count:
        due = min(count, int((time.monotonic() - start) * rate) + 1)
        while sent < due:
            seq = (str(first + sent) + " ").encode()
            transport = senders[sent % len(senders)].transport
            transport.write(prefix + seq + str(clock()).encode() + suffix)  # type: ignore[union-attr]
            sent += 1
        if sent < count:  # message k is due at start + k / rate: sleep until then, no ticking
            await asyncio.sleep(max(0.0, start + sent / rate - time.monotonic()))
    return count / (time.monotonic() - start + 1 / rate)


async def loadgen(args: argparse.Namespace) -> dict[str, Any]:
    n, warm, msgs = args.occupants, args.warmup, args.messages
    tally = Tally(first_measured=warm)
    stats = ChatStats()
    out: dict[str, Any] = {"server": args.label, "occupants": n, "messages": msgs}
    with Meter(args.server_pid, args.server_core) as meter:
        sessions = await login_all(args, lambda: Occupant(stats, tally, warm + msgs))
    out["login"] = {"sessions_per_s": round(n / meter.wall, 1), **meter.report()}
    with Meter(args.server_pid, args.server_core) as meter:
        await join_all(args, sessions)
    out["join"] = {"joins_per_s": round(n / meter.wall, 1), **meter.report()}

    senders = sessions[: args.senders]
    deadline = time.monotonic() + args.timeout
    await send_at_rate(senders, args.room, 0, warm, 10.0)
    await wait_for_count(lambda: tally.warmup, warm * n, deadline)
    out["warmup"] = {"expected": warm * n, "delivered": tally.warmup}

    gc.collect()
    gc.freeze()  # the sessions are static from here on
    gc.disable()
    with Meter(args.server_pid, args.server_core) as meter:
        achieved = await send_at_rate(senders, args.room, warm, msgs, args.rate)
        deadline = time.monotonic() + args.timeout
        await wait_for_count(lambda: len(tally.latencies_ns), msgs * n, deadline)
    gc.enable()
    delivered = len(tally.latencies_ns)
    missing = [i for i, s in enumerate(sessions) if sum(s.seen[warm:]) < msgs]
    out["measured"] = {
        "rate": args.rate,
        "achieved_send_rate": round(achieved, 2),
        "senders": len(senders),
        "expected": msgs * n,
        "delivered": delivered,
        "duplicates": tally.duplicates,
        "occupants_missing_messages": len(missing),
        "lost_connections": stats.lost,
        **meter.report(),
        "deliveries_per_s": round(delivered / meter.wall, 1),
        # The load generator keeps pace with a fan-out only if it reads a delivery faster than
        # the server writes one; otherwise latency measures our own backlog.
        "server_us_per_delivery": round(meter.server_cpu * 1e6 / max(1, delivered), 2),
        "loadgen_us_per_delivery": round(meter.own_cpu * 1e6 / max(1, delivered), 2),
        "server_cpu_s_per_10k": round(meter.server_cpu * 10_000 / delivered, 4)
        if delivered
        else None,
        **latency_report(tally.latencies_ns),
    }
    for s in sessions:
        if s.transport is not None:
            s.transport.abort()
    return out


def loadgen_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="muc_bench.py loadgen")
    p.add_argument("--host", default="127.0.0.1", choices=("127.0.0.1", "localhost"))
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--domain", default="localhost")
    p.add_argument("--password", default="bench-password")
    p.add_argument("--server-pid", type=int, required=True)
    p.add_argument("--server-core", type=int, default=1)
    p.add_argument("--label", default="server")
    p.add_argument("--room", default="bench@conference.localhost")
    p.add_argument("--occupants", type=int, required=True)
    p.add_argument("--messages", type=int, required=True)
    p.add_argument("--rate", type=float, required=True, help="messages per second")
    p.add_argument("--senders", type=int, default=5)
    p.add_argument("--warmup", type=int, default=3, help="messages before the window")
    p.add_argument("--login-concurrency", type=int, default=100)
    p.add_argument("--join-concurrency", type=int, default=20)
    p.add_argument("--timeout", type=float, default=120.0)
    args = p.parse_args(argv)
    if not 2 <= args.occupants <= 19_000:  # one process may open at most 20,000 files
        p.error("--occupants must be 2..19000")
    args.senders = min(args.senders, args.occupants)
    loop_name, factory = event_loop_factory("auto")
    with asyncio.Runner(loop_factory=factory) as runner:
        result = runner.run(loadgen(args))
    result["loadgen_loop"] = loop_name
    print(json.dumps(result), flush=True)
    return 0


# -- driver ------------------------------------------------------------------------------------
def senders_for(rate: float, wanted: int) -> int:
    """At least `wanted` senders, and enough that none goes over 90 % of xmppd's default
    per-account message rate (`[modules.abuse]`, servers.py `Xmppd.account_rate`): the same
    count for every server, so that the default configuration is measured, not its refusals."""
    per_account = 0.9 * Xmppd.account_rate[0]
    return max(wanted, math.ceil(rate / per_account))


def run_one(args: argparse.Namespace, name: str, size: int, round_no: int) -> dict[str, Any]:
    rate = args.deliveries_per_s / size
    senders = senders_for(rate, args.senders)
    messages = max(senders, round(rate * args.window_s))
    server = SERVERS[name](
        Accounts(size), tls=False, core=args.server_core, nice=args.nice, keep=args.keep, muc=True
    )
    load_before = os.getloadavg()[0]
    started = time.monotonic()
    try:
        server.start()
        cmd = [
            *(["nice", "-n", str(args.nice)] if args.nice else []),
            "taskset", "-c", str(args.loadgen_core), sys.executable, __file__, "loadgen",
            "--port", str(server.port), "--server-pid", str(server.pid),
            "--server-core", str(args.server_core), "--label", name,
            "--occupants", str(size), "--messages", str(messages), "--rate", f"{rate:.4f}",
            "--senders", str(senders), "--join-concurrency", str(args.join_concurrency),
        ]  # fmt: skip
        proc = run_loadgen(cmd, args.nice, args.run_timeout)
        if proc.returncode != 0 or not proc.stdout.strip():
            raise RuntimeError(f"loadgen failed ({proc.returncode}): {proc.stderr[-1500:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        result["server_survived"] = server.proc is not None and server.proc.poll() is None
    except Exception as exc:  # noqa: BLE001 - one failed run must not lose the others
        result = {"server": name, "occupants": size, "error": f"{type(exc).__name__}: {exc}"}
        result["log"] = server.log_tail()
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.proc.kill()  # its state is thrown away: no need to wait for 1,000 leaves
        server.stop()
    result.update(round=round_no, run_s=round(time.monotonic() - started, 1))
    result["loadavg_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    return result


def warnings_for(run: dict[str, Any]) -> list[str]:
    if "error" in run:
        return [run["error"][:300]]
    out = []
    m = run["measured"]
    for phase in ("login", "join", "measured"):
        if run[phase]["loadgen_cpu_frac"] > LOADGEN_SATURATED:
            out.append(f"loadgen saturated its core in {phase}")
    if m["delivered"] < m["expected"] or m["occupants_missing_messages"]:
        out.append(
            f"{m['expected'] - m['delivered']} deliveries missing "
            f"({m['occupants_missing_messages']} occupants short)"
        )
    if m["duplicates"] or m["lost_connections"]:
        out.append(f"{m['duplicates']} duplicates, {m['lost_connections']} connections lost")
    if run["warmup"]["delivered"] < run["warmup"]["expected"]:
        out.append("warm-up messages missing")
    if m["achieved_send_rate"] < 0.95 * m["rate"]:
        out.append(f"send rate {m['achieved_send_rate']} < {m['rate']}")
    if m["loadgen_us_per_delivery"] >= m["server_us_per_delivery"]:
        out.append("load generator slower per delivery than the server: latency is ours")
    if m["server_cpu_frac"] > SERVER_BUSY:
        out.append(f"server at {m['server_cpu_frac']:.0%} CPU: latency measures a queue")
    if not run.get("server_survived", True):
        out.append("server died")
    return out


def median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r["measured"][key] for r in runs if "measured" in r]
    return statistics.median(values) if values else None


def summarize(args: argparse.Namespace, runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for size in args.sizes:
        row: dict[str, Any] = {"occupants": size}
        for name in args.servers:
            mine = [r for r in runs if r["server"] == name and r["occupants"] == size]
            for key in ("server_cpu_s_per_10k", "p50_ms", "p99_ms", "server_cpu_frac"):
                row[f"{name}.{key}"] = median_of(mine, key)
            joins = [r["join"]["server_cpu_s"] * 1000 / size for r in mine if "join" in r]
            row[f"{name}.join_cpu_ms"] = statistics.median(joins) if joins else None
            row[f"{name}.loadgen_cpu_frac_max"] = max(
                (r["measured"]["loadgen_cpu_frac"] for r in mine if "measured" in r), default=None
            )
            row[f"{name}.runs"] = sum(1 for r in mine if "measured" in r)
        if "xmppd" in args.servers and "prosody" in args.servers:
            for key in ("server_cpu_s_per_10k", "p99_ms", "p50_ms"):
                x, p = row["xmppd." + key], row["prosody." + key]
                row["ratio." + key] = round(x / p, 3) if x is not None and p else None
        rows.append(row)
    return rows


def table(args: argparse.Namespace, rows: list[dict[str, Any]]) -> str:
    names = args.servers
    head = ["occupants", "msg/s"]
    for key in ("CPU s/10k deliveries", "p99 ms", "p50 ms"):
        head += [f"{n} {key}" for n in names]
        if len(names) == 2 and "xmppd" in names:
            head.append(f"xmppd/prosody {key.split(' ')[0]}")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [str(row["occupants"]), f"{args.deliveries_per_s / row['occupants']:g}"]
        for key in ("server_cpu_s_per_10k", "p99_ms", "p50_ms"):
            cells += [_fmt(row[f"{n}.{key}"]) for n in names]
            if len(names) == 2 and "xmppd" in names:
                cells.append(_fmt(row.get("ratio." + key)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"


def report_text(args: argparse.Namespace, runs: list[dict[str, Any]], env: dict) -> str:
    rows = summarize(args, runs)
    out = [
        f"MUC fan-out, {env['date']} (xmppd commit {env['commit']}); medians of "
        f"{args.rounds} interleaved rounds; {args.deliveries_per_s} deliveries/s for "
        f"{args.window_s} s per run, {args.senders}+ senders (each under xmppd's per-account "
        f"rate); server on core {args.server_core}, "
        f"load generator on core {args.loadgen_core}, nice {args.nice}",
        "",
        table(args, rows),
        "",
        "server CPU fraction during the window (median), highest load generator CPU fraction:",
    ]
    for row in rows:
        parts = [
            f"{n} {_fmt(row[f'{n}.server_cpu_frac'])} / lg {_fmt(row[f'{n}.loadgen_cpu_frac_max'])}"
            for n in args.servers
        ]
        out.append(f"  {row['occupants']:>5}: " + ", ".join(parts))
    out += ["", "server CPU per join (ms; each join is broadcast to every occupant already in):"]
    for row in rows:
        parts = [f"{n} {_fmt(row[f'{n}.join_cpu_ms'])}" for n in args.servers]
        out.append(f"  {row['occupants']:>5}: " + ", ".join(parts))
    out += ["", "runs (round, server, occupants: CPU s/10k, p50, p99 ms, load avg before/after):"]
    for r in runs:
        if "measured" in r:
            m = r["measured"]
            line = (
                f"  r{r['round']} {r['server']:8s} {r['occupants']:>5}: "
                f"{m['server_cpu_s_per_10k']} s, {m['p50_ms']} / {m['p99_ms']} ms, "
                f"server {m['server_cpu_frac']:.0%}, lg {m['loadgen_cpu_frac']:.0%}, "
                f"us/delivery server {m['server_us_per_delivery']} lg "
                f"{m['loadgen_us_per_delivery']}, "
                f"core others {m['core_others_frac']:.0%} steal {m['core_steal_frac']:.0%}, "
                f"joins {r['join']['joins_per_s']}/s, load {r['loadavg_1m']}"
            )
        else:
            line = f"  r{r['round']} {r['server']:8s} {r['occupants']:>5}: ERROR"
        warnings = warnings_for(r)
        out.append(line + (f"  WARNING: {'; '.join(warnings)}" if warnings else ""))
    return "\n".join(out) + "\n"


def environment() -> dict[str, Any]:
    def git(*a: str) -> str:
        res = subprocess.run(["git", *a], cwd=HERE.parent, capture_output=True, text=True)
        return res.stdout.strip()

    prosody = subprocess.run(["dpkg-query", "-W", "prosody"], capture_output=True, text=True)
    return {
        "date": dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "commit": git("rev-parse", "--short", "HEAD") + ("+dirty" if git("status", "-s") else ""),
        "python": platform.python_version(),
        "prosody": prosody.stdout.strip(),
        "cpus": os.cpu_count(),
    }


def driver_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", default="50,200,1000", help="occupants per room, comma-separated")
    p.add_argument("--servers", default="prosody,xmppd")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--deliveries-per-s", type=float, default=5000.0)
    p.add_argument("--window-s", type=float, default=20.0, help="length of the measured phase")
    p.add_argument("--senders", type=int, default=5)
    p.add_argument("--join-concurrency", type=int, default=20)
    p.add_argument("--server-core", type=int, default=1)
    p.add_argument("--loadgen-core", type=int, default=0)
    p.add_argument("--nice", type=int, default=0, help="e.g. -10 on a shared machine")
    p.add_argument("--run-timeout", type=float, default=600.0)
    p.add_argument("--keep", action="store_true", help="keep the servers' directories")
    p.add_argument("--name", default="", help="results file: muc-<date>[-name].txt")
    args = p.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.servers = args.servers.split(",")
    env = environment()
    runs = []
    for round_no in range(1, args.rounds + 1):
        order = args.servers if round_no % 2 else args.servers[::-1]  # alternate who goes first
        for size in args.sizes:
            for name in order:
                run = run_one(args, name, size, round_no)
                runs.append(run)
                m = run.get("measured", {})
                print(
                    f"round {round_no} {name} {size}: {m.get('server_cpu_s_per_10k')} s/10k "
                    f"p99 {m.get('p99_ms')} ms {warnings_for(run)}",
                    file=sys.stderr,
                    flush=True,
                )
    text = report_text(args, runs, env)
    print(text)
    stamp = dt.datetime.now().strftime("%Y-%m-%d-%H%M")
    base = HERE / "results" / (f"muc-{stamp}" + (f"-{args.name}" if args.name else ""))
    base.with_suffix(".txt").write_text(text)
    data = {"config": vars(args), "environment": env, "runs": runs}
    data["summary"] = summarize(args, runs)
    base.with_suffix(".json").write_text(json.dumps(data, indent=1))
    print(f"wrote {base}.txt and .json", file=sys.stderr)
    return 2 if any(warnings_for(r) for r in runs) else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["loadgen"]:
        sys.exit(loadgen_main(sys.argv[2:]))
    sys.exit(driver_main(sys.argv[1:]))
