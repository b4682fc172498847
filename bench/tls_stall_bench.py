"""Server memory after rounds of stalled TLS handshakes (issue 18 item 10).

    python bench/tls_stall_bench.py [--rounds 5] [--connections 3000] [--target tls|https]
        [--src DIR] [--probe] [--env MALLOC_ARENA_MAX=2]

Starts one xmppd (`--src`: the checkout to import, default this one) with a fresh data dir.
A load generator in a separate process (its own 20,000 open-file budget) opens N connections
to the direct-TLS c2s port or the HTTPS port, from 127.0.0.10.. (100 per source address, the
default per-address cap), sends a real ClientHello on each and then stalls: it never answers
the server's flight. It holds them `--hold` seconds, closes them all, and the bench waits until
the server has closed its side, then reads the server's VmRSS from /proc.

`--probe` runs the server under a wrapper that, on SIGUSR1, writes tracemalloc's traced Python
memory, the RSS after glibc `malloc_trim(0)` (memory it gives back was free but kept in the
heap: fragmentation/retention), then after `gc.collect()` and another trim (memory that comes
back only then was held by uncollected garbage: reference cycles holding OpenSSL state).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROBE = """
import collections, ctypes, gc, json, os, signal, sys, tracemalloc
tracemalloc.start(1)
out = sys.argv.pop(1)

def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS'):
            return int(line.split()[1]) // 1024

def probe(*_):
    row = {'traced_mb': tracemalloc.get_traced_memory()[0] // (1024 * 1024)}
    row['trim_mb'] = (ctypes.CDLL('libc.so.6').malloc_trim(0), rss())[1]
    gc.set_debug(gc.DEBUG_SAVEALL)
    row['gc_found'] = gc.collect()
    kinds = collections.Counter(type(o).__qualname__ for o in gc.garbage)
    row['garbage'] = dict(kinds.most_common(8))
    gc.garbage.clear()
    gc.set_debug(0)
    row['gc_mb'] = rss()
    row['gc_trim_mb'] = (ctypes.CDLL('libc.so.6').malloc_trim(0), rss())[1]
    with open(out, 'a') as f:
        f.write(json.dumps(row) + '\\n')

signal.signal(signal.SIGUSR1, probe)
from xmppd.cli import main
sys.exit(main(sys.argv[1:]))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return 0.0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# ---- load generator (run as a child process) --------------------------------------------------


def client_hello() -> bytes:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def load(port: int, count: int, hold: float) -> None:
    socks = []
    failed = 0
    for i in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        sock.bind((f"127.0.0.{10 + i // 100}", 0))
        with contextlib.suppress(BlockingIOError):
            sock.connect(("127.0.0.1", port))
        socks.append(sock)
    hello = client_hello()  # one per connection would cost the generator, not the server
    deadline = time.monotonic() + 30
    pending = list(socks)
    while pending and time.monotonic() < deadline:
        rest = []
        for sock in pending:
            try:
                sock.send(hello)
            except (BlockingIOError, OSError) as exc:
                if isinstance(exc, BlockingIOError) or exc.errno in (11, 107, 115):
                    rest.append(sock)  # still connecting (accept backlog)
                else:
                    failed += 1
        pending = rest
        if pending:
            time.sleep(0.05)
    time.sleep(hold)
    for sock in socks:
        sock.close()
    print(json.dumps({"opened": count, "hello_sent": count - failed - len(pending)}), flush=True)


# ---- the bench ----------------------------------------------------------------------------------


def start_server(args: argparse.Namespace, base: Path) -> tuple[subprocess.Popen, int, Path]:
    tls_port, https_port = free_port(), free_port()
    config = base / "xmppd.toml"
    extra = "\n".join(args.config)
    config.write_text(
        f"""[server]
domain = "localhost"
data_dir = "{base / "data"}"
log_level = "warning"
demo_account = false
[c2s]
interfaces = ["127.0.0.1"]
port = 0
direct_tls_port = {tls_port}
[http]
interfaces = ["127.0.0.1"]
port = 0
tls_port = {https_port}
{extra}
"""
    )
    env = {**os.environ, "PYTHONPATH": str(args.src)}
    for item in args.env:
        key, _, value = item.partition("=")
        env[key] = value
    probe_out = base / "probe.jsonl"
    command = [sys.executable, "-m", "xmppd", "serve", "-c", str(config)]
    if args.probe:
        command = [sys.executable, "-c", PROBE, str(probe_out), "serve", "-c", str(config)]
    log = (base / "xmppd.log").open("wb")
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=base)
    port = tls_port if args.target == "tls" else https_port
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port, probe_out
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"server did not start: {(base / 'xmppd.log').read_text()[-2000:]}")


def settle(pid: int, baseline_fds: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while open_fds(pid) > baseline_fds + 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=3000)
    parser.add_argument("--hold", type=float, default=5.0, help="seconds each round stalls")
    parser.add_argument("--target", choices=("tls", "https"), default="tls")
    parser.add_argument("--src", type=Path, default=ROOT, help="checkout to run")
    parser.add_argument("--probe", action="store_true", help="tracemalloc + malloc_trim probe")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the server")
    parser.add_argument("--config", action="append", default=[], help="extra [http] TOML line")
    parser.add_argument("--load", nargs=3, help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args()
    if args.load:
        load(int(args.load[0]), int(args.load[1]), float(args.load[2]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        proc, port, probe_out = start_server(args, Path(tmp))
        try:
            time.sleep(1)
            baseline_fds = open_fds(proc.pid)
            rows = [{"round": 0, "rss_mb": round(rss_mb(proc.pid), 1)}]
            print(json.dumps(rows[0]), flush=True)
            for n in range(1, args.rounds + 1):
                peak = 0.0
                child = subprocess.Popen(
                    [sys.executable, __file__, "--load", str(port), str(args.connections),
                     str(args.hold)],
                    stdout=subprocess.PIPE,
                    text=True,
                )  # fmt: skip
                while child.poll() is None:
                    peak = max(peak, rss_mb(proc.pid))
                    time.sleep(0.2)
                loaded = json.loads(child.stdout.read() or "{}")  # type: ignore[union-attr]
                settle(proc.pid, baseline_fds)
                row = {"round": n, "peak_mb": round(peak, 1), "rss_mb": round(rss_mb(proc.pid), 1)}
                row |= loaded
                if args.probe:
                    os.kill(proc.pid, signal.SIGUSR1)
                    time.sleep(1)
                    row |= json.loads(probe_out.read_text().splitlines()[-1])
                rows.append(row)
                print(json.dumps(row), flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=20)


if __name__ == "__main__":
    main()
