"""Web gateway figures: idle WebSocket sessions (xmppd and Prosody) and JSON-channel fan-out.

    python bench/web_bench.py --rounds 3 --nice -10        # both parts, ~10 min
    python bench/web_bench.py --parts idle --servers prosody,xmppd --sessions 5000
    python bench/web_bench.py --parts fanout --occupants 1000 --rate 10 --seconds 20

idle: N XMPP-over-WebSocket sessions (RFC 7395, subprotocol `xmpp`, no permessage-deflate)
log in with SCRAM-SHA-1, bind and send `<presence/>`; after 5 s idle, (server VmRSS - VmRSS
before the first connection) / N. Prosody 0.12 runs with its built-in mod_websocket.
fanout (xmppd only: Prosody has no JSON channels): M Phoenix-channel sockets
(`/socket/websocket?vsn=2.0.0`, HS256 host-app tokens) join `room:bench@conference.localhost`;
one of them pushes `new_msg` at a fixed rate, the body being its CLOCK_MONOTONIC send time.
Server CPU (utime+stime) from the first push until every occupant has every message,
per 10,000 deliveries (messages x occupants, the sender's own echo included), and p50/p99.
Each run starts a fresh server under `taskset -c 1` and a load generator (this file,
subcommand `idle-lg` / `fanout-lg`) under `taskset -c 0`; results are medians over rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from compare import run_loadgen  # noqa: E402
from loadgen import core_times, proc_cpu_seconds, proc_rss_kib, self_cpu_seconds  # noqa: E402
from servers import Accounts, Prosody, Xmppd, free_port, nice_prefix, wait_port  # noqa: E402
from xmppclient import NS_BIND, NS_SASL, LoginError, ScramClient  # noqa: E402

ROOM = "bench@conference.localhost"
SECRET = "web-bench-shared-secret-0123456789abcdef"
OPEN = "<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='localhost' version='1.0'/>"
CHALLENGE = re.compile(r"<challenge[^>]*>([^<]*)</challenge>")
SUCCESS = re.compile(r"<success[^>]*/>|<success[^>]*>([^<]*)</success>")

PROSODY_WEB = """\
http_ports = {{ {http_port} }}
http_interfaces = {{ "127.0.0.1" }}
https_ports = {{ }}
http_default_host = "localhost"
consider_websocket_secure = true
cross_domain_websocket = true
"""

XMPPD_WEB = """
[http]
tls_port = 0
port = {http_port}
plain_interfaces = ["127.0.0.1"]
sessions_per_ip = {cap}
# 50 logins in flight from one address: on a loaded machine more than the default 16 are
# still in their request head at once, and the oldest would be dropped.
pending_per_ip = {cap}
messages_per_second = 100000.0

[auth.tokens.apps.bench]
algorithm = "HS256"
key = "{secret}"

[modules.muc]
max_occupants = {cap}
message_rate = 100000.0
message_burst = 100000
lock_new_rooms = false
"""


class WebProsody(Prosody):
    name = "prosody"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.http_port = free_port()
        self.extra_config = PROSODY_WEB.format(http_port=self.http_port)

    def prepare(self) -> None:
        super().prepare()
        cfg = self.dir / "prosody.cfg.lua"
        text = cfg.read_text().replace('"ping" }', '"ping", "websocket" }', 1)
        assert '"websocket"' in text
        cfg.write_text(text)

    def start(self) -> None:
        super().start()
        assert self.proc is not None
        wait_port(self.http_port, self.proc)


class WebXmppd(Xmppd):
    name = "xmppd"
    web_config = ""  # XMPPD_WEB below has the [http] table

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.http_port = free_port()

    def prepare(self) -> None:
        super().prepare()
        web = XMPPD_WEB.format(
            http_port=self.http_port, cap=self.accounts.count + 1000, secret=SECRET
        )
        with open(self.dir / "xmppd.toml", "a") as f:
            f.write(web)

    def start(self) -> None:
        super().start()
        assert self.proc is not None
        wait_port(self.http_port, self.proc)


SERVERS = {"prosody": WebProsody, "xmppd": WebXmppd}


# -- load generator side -------------------------------------------------------------------------
def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(20_000, hard), hard))


async def connect(url: str, **kw: Any) -> Any:
    from websockets.asyncio.client import connect as ws_connect

    return await ws_connect(
        url, host="127.0.0.1", compression=None, ping_interval=None, max_size=None,
        open_timeout=120, close_timeout=5, **kw,
    )  # fmt: skip


async def expect(ws: Any, needle: str | re.Pattern[str]) -> Any:
    """Read messages until one contains `needle`; a SASL failure or stream end raises."""
    while True:
        msg = await ws.recv()
        found = needle.search(msg) if isinstance(needle, re.Pattern) else (needle in msg or None)
        if found:
            return found
        if "<failure" in msg or "stream:error" in msg or msg.startswith("<close"):
            raise LoginError(msg[:300])


async def ws_login(url: str, user: str, password: str) -> Any:
    ws = await connect(url, subprotocols=["xmpp"])
    await ws.send(OPEN)
    await expect(ws, "features")
    scram = ScramClient("SHA-1", user, password)
    first = base64.b64encode(scram.first()).decode()
    await ws.send(f"<auth xmlns='{NS_SASL}' mechanism='SCRAM-SHA-1'>{first}</auth>")
    challenge = await expect(ws, CHALLENGE)
    final = base64.b64encode(scram.final(base64.b64decode(challenge.group(1)))).decode()
    await ws.send(f"<response xmlns='{NS_SASL}'>{final}</response>")
    success = await expect(ws, SUCCESS)
    scram.check_success(base64.b64decode(success.group(1) or ""))
    await ws.send(OPEN)
    await expect(ws, "features")
    # Framed elements carry their namespace: there is no stream root to inherit it from.
    bind = f"<bind xmlns='{NS_BIND}'><resource>r</resource></bind>"
    await ws.send(f"<iq xmlns='jabber:client' type='set' id='b'>{bind}</iq>")
    await expect(ws, "<jid>")
    await ws.send("<presence xmlns='jabber:client'/>")
    return ws


class Phase:
    """Wall, server CPU, own CPU and the server core's other load over one phase."""

    def __init__(self, pid: int, core: int) -> None:
        self.pid, self.core = pid, core
        self.t0, self.s0, self.l0 = time.monotonic(), proc_cpu_seconds(pid), self_cpu_seconds()
        self.c0 = core_times(core)

    def end(self) -> dict[str, float]:
        wall = time.monotonic() - self.t0
        server = proc_cpu_seconds(self.pid) - self.s0
        busy, steal = (a - b for a, b in zip(core_times(self.core), self.c0, strict=True))
        return {
            "wall_s": wall, "server_cpu_s": server,
            "loadgen_cpu_frac": (self_cpu_seconds() - self.l0) / wall,
            "core_others_frac": max(0.0, busy - server) / wall, "core_steal_frac": steal / wall,
        }  # fmt: skip


async def idle_lg(a: argparse.Namespace) -> dict[str, Any]:
    accounts = Accounts(a.sessions)
    rss0 = proc_rss_kib(a.server_pid)
    sem = asyncio.Semaphore(a.concurrency)

    async def one(name: str) -> Any:
        async with sem:
            return await ws_login(a.url, name, accounts.password)

    phase = Phase(a.server_pid, a.server_core)
    sockets = await asyncio.gather(*(one(n) for n in accounts.names()))
    login = phase.end()
    await asyncio.sleep(5)
    rss1 = proc_rss_kib(a.server_pid)
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
    return {
        "sessions": a.sessions, "rss_before_kib": rss0, "rss_idle_kib": rss1,
        "rss_per_session_kib": (rss1 - rss0) / a.sessions,
        "login_rate": a.sessions / login["wall_s"], "login": login,
    }  # fmt: skip


def token(user: str) -> str:
    from joserfc import jwt
    from joserfc.jwk import OctKey

    claims = {"sub": user, "aud": "localhost", "exp": int(time.time()) + 3600, "rooms": [ROOM]}
    return jwt.encode({"alg": "HS256"}, claims, OctKey.import_key(SECRET))


class Occupant:
    def __init__(self, ws: Any, expected: int) -> None:
        self.ws, self.expected = ws, expected
        self.got: list[int] = []  # latencies, ns
        self.done = asyncio.get_running_loop().create_future()

    async def join(self, nick: str) -> None:
        await self.ws.send(json.dumps(["1", "1", f"room:{ROOM}", "phx_join", {"nick": nick}]))
        while True:
            frame = json.loads(await self.ws.recv())
            if frame[3] == "phx_reply" and frame[1] == "1":
                if frame[4].get("status") != "ok":
                    raise RuntimeError(f"join refused: {frame}")
                return

    async def read(self) -> None:
        # Only new_msg frames are decoded; presence_diff and replies are skipped unparsed.
        async for msg in self.ws:
            if '"new_msg"' not in msg:
                continue
            now = time.monotonic_ns()
            self.got.append(now - int(json.loads(msg)[4]["body"]))
            if len(self.got) >= self.expected and not self.done.done():
                self.done.set_result(None)


async def fanout_lg(a: argparse.Namespace) -> dict[str, Any]:
    messages = int(a.rate * a.seconds)
    base = f"{a.url}?vsn=2.0.0&token="
    sem = asyncio.Semaphore(a.concurrency)
    occupants: list[Occupant] = []
    readers: list[asyncio.Task[None]] = []

    async def one(i: int) -> None:
        async with sem:
            occ = Occupant(await connect(base + token(f"u{i}")), messages)
            await occ.join(f"u{i}")
            occupants.append(occ)
            readers.append(asyncio.create_task(occ.read()))  # read at once: no backpressure

    join = Phase(a.server_pid, a.server_core)
    await asyncio.gather(*(one(i) for i in range(a.occupants)))
    joined = join.end()
    await asyncio.sleep(3)  # the last joins' presence_diff frames drain
    sender = occupants[0].ws
    phase = Phase(a.server_pid, a.server_core)
    start = time.monotonic()
    for k in range(messages):
        await asyncio.sleep(max(0.0, start + k / a.rate - time.monotonic()))
        body = str(time.monotonic_ns())
        await sender.send(json.dumps(["1", str(k + 2), f"room:{ROOM}", "new_msg", {"body": body}]))
    _, pending = await asyncio.wait([o.done for o in occupants], timeout=30)
    window = phase.end()
    for task in readers:
        task.cancel()
    lat = sorted(x for o in occupants for x in o.got)
    delivered = len(lat)
    await asyncio.gather(*(o.ws.close() for o in occupants), return_exceptions=True)
    return {
        "occupants": a.occupants, "messages": messages, "rate": a.rate,
        "deliveries": delivered, "expected": messages * a.occupants,
        "incomplete_occupants": len(pending),
        "cpu_s_per_10k": window["server_cpu_s"] * 10_000 / max(1, delivered),
        "p50_ms": lat[len(lat) // 2] / 1e6 if lat else None,
        "p99_ms": lat[int(len(lat) * 0.99)] / 1e6 if lat else None,
        "server_cpu_frac": window["server_cpu_s"] / window["wall_s"],
        "join_ms_server_cpu": joined["server_cpu_s"] * 1000 / a.occupants,
        "join": joined, "window": window,
    }  # fmt: skip


def loadgen_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["idle-lg", "fanout-lg"])
    p.add_argument("--url", required=True)
    p.add_argument("--server-pid", type=int, required=True)
    p.add_argument("--server-core", type=int, default=1)
    p.add_argument("--sessions", type=int, default=5000)
    p.add_argument("--occupants", type=int, default=1000)
    p.add_argument("--rate", type=float, default=10.0)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--concurrency", type=int, default=50)
    a = p.parse_args(argv)
    raise_nofile()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    coro = idle_lg(a) if a.mode == "idle-lg" else fanout_lg(a)
    print(json.dumps(asyncio.run(coro)))
    return 0


# -- orchestrator --------------------------------------------------------------------------------
def run(a: argparse.Namespace, part: str, name: str) -> dict[str, Any]:
    count = a.sessions if part == "idle" else a.occupants
    server = SERVERS[name](Accounts(count), tls=False, core=a.server_core, nice=a.nice)
    try:
        server.start()
        if part == "idle":
            url, extra = f"ws://localhost:{server.http_port}/xmpp-websocket", ["--sessions"]
        else:
            url, extra = f"ws://localhost:{server.http_port}/socket/websocket", ["--occupants"]
        cmd = [
            *nice_prefix(a.nice), "taskset", "-c", str(a.loadgen_core), sys.executable, __file__,
            f"{part}-lg", "--url", url, "--server-pid", str(server.pid),
            "--server-core", str(a.server_core), *extra, str(count),
            "--rate", str(a.rate), "--seconds", str(a.seconds),
        ]  # fmt: skip
        proc = run_loadgen(cmd, a.nice, 900)
        if proc.returncode != 0 or not proc.stdout.strip():
            raise RuntimeError(f"{name} {part}: {proc.stderr[-2000:]}\n{server.log_tail()}")
        result = json.loads(proc.stdout)
    finally:
        server.stop()
    result["load_avg"] = os.getloadavg()[0]
    return result


def median(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def report(a: argparse.Namespace, runs: dict[str, list[dict[str, Any]]]) -> str:
    lines = [f"Web gateway bench, {time.strftime('%Y-%m-%d %H:%M')}; medians of {a.rounds} "
             f"rounds; server on core {a.server_core}, load generator on core "
             f"{a.loadgen_core}, nice {a.nice}", ""]  # fmt: skip
    idle = {k.split(":")[1]: v for k, v in runs.items() if k.startswith("idle:")}
    if idle:
        lines.append(f"Idle XMPP-over-WebSocket sessions ({a.sessions}, SCRAM-SHA-1, bound, "
                     "available, no deflate): RSS per session, KiB")  # fmt: skip
        med = {n: median(r, "rss_per_session_kib") for n, r in idle.items()}
        for n, r in idle.items():
            lg = max(x["login"]["loadgen_cpu_frac"] for x in r)
            each = [round(x["rss_per_session_kib"], 1) for x in r]
            lines.append(f"  {n:8} {med[n]:.1f} KiB (runs {each}), "
                         f"login {median(r, 'login_rate'):.0f}/s, max lg CPU {lg:.2f}")  # fmt: skip
        if "prosody" in med and "xmppd" in med:
            lines.append(f"  xmppd/prosody = {med['xmppd'] / med['prosody']:.3f}")
        lines.append("")
    fan = runs.get("fanout:xmppd")
    if fan:
        lines.append(f"JSON-channel fan-out, xmppd: {a.occupants} occupants, {a.rate:g} msg/s "
                     f"for {a.seconds:g} s")  # fmt: skip
        lines.append(f"  server CPU per 10k deliveries: {median(fan, 'cpu_s_per_10k'):.3f} s; "
                     f"p50 {median(fan, 'p50_ms'):.2f} ms, p99 {median(fan, 'p99_ms'):.2f} ms; "
                     f"server CPU per join {median(fan, 'join_ms_server_cpu'):.1f} ms")  # fmt: skip
        for r in fan:
            w = r["window"]
            lines.append(
                f"  run: {r['cpu_s_per_10k']:.3f} s/10k, p50 {r['p50_ms']:.2f} p99 "
                f"{r['p99_ms']:.2f} ms, delivered {r['deliveries']}/{r['expected']}, server "
                f"{r['server_cpu_frac']:.0%}, lg {w['loadgen_cpu_frac']:.0%}, core others "
                f"{w['core_others_frac']:.0%}, steal {w['core_steal_frac']:.0%}, "
                f"load {r['load_avg']:.1f}"
            )
    return "\n".join(lines) + "\n"


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1].endswith("-lg"):
        return loadgen_main(sys.argv[1:])
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--parts", default="idle,fanout")
    p.add_argument("--servers", default="prosody,xmppd", help="for the idle part")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--sessions", type=int, default=5000)
    p.add_argument("--occupants", type=int, default=1000)
    p.add_argument("--rate", type=float, default=10.0)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--nice", type=int, default=0)
    p.add_argument("--server-core", type=int, default=1)
    p.add_argument("--loadgen-core", type=int, default=0)
    p.add_argument("--name", default="")
    a = p.parse_args()
    plan = [("idle", n) for n in a.servers.split(",") if "idle" in a.parts]
    plan += [("fanout", "xmppd")] if "fanout" in a.parts else []
    runs: dict[str, list[dict[str, Any]]] = {}
    for rnd in range(a.rounds):
        for part, name in plan:
            result = run(a, part, name)
            runs.setdefault(f"{part}:{name}", []).append(result)
            print(f"round {rnd + 1} {part} {name}: {json.dumps(result)}", flush=True)
    text = report(a, runs)
    print(text)
    stamp = time.strftime("%Y-%m-%d-%H%M") + (f"-{a.name}" if a.name else "")
    out = HERE / "results" / f"web-{stamp}"
    out.with_suffix(".txt").write_text(text)
    out.with_suffix(".json").write_text(json.dumps({"args": vars(a), "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
