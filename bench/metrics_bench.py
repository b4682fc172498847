"""Cost of the metrics on the message hot path: xmppd with `metrics.enabled` on vs. off.

    python bench/metrics_bench.py --rounds 3                 # ~6 min, prints the table
    python bench/metrics_bench.py one --mode on              # one run, one JSON line
    flock /tmp/bench.lock taskset -c 1 python bench/metrics_bench.py probes   # us per message

Each run starts a fresh xmppd (`servers.Xmppd`, plaintext, SQLite) under `taskset -c 1`, runs
`loadgen.py` under `taskset -c 0` (N sessions, a fixed-rate phase, then a flood) and stops it.
Both run at `--nice -10` (default; the machine is shared, see "Noise"). Rounds interleave on
and off; every run is wrapped in `flock /tmp/bench.lock` (other
benchmarks share the machine). Figures: server CPU per 10,000 delivered messages in each phase
and the flood's delivered msg/s, medians over rounds, and the ratio on / off.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from compare import loadgen_command, run_loadgen  # noqa: E402
from servers import XMPPD_NO_WEB, Accounts, Xmppd  # noqa: E402

FIGURES = (
    ("rate", "server_cpu_s_per_10k"),
    ("flood", "server_cpu_s_per_10k"),
    ("flood", "delivered_per_s"),
    ("rate", "p99_ms"),
)


def one(args: argparse.Namespace) -> dict[str, Any]:
    class Server(Xmppd):
        web_config = XMPPD_NO_WEB + f"\n[metrics]\nenabled = {args.mode == 'on'}\n".lower()

    server = Server(Accounts(args.sessions), tls=False, core=args.server_core, nice=args.nice)
    try:
        server.start()
        proc = run_loadgen(loadgen_command(args, server), args.nice, 900)
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    finally:
        server.stop()
    result["mode"] = args.mode
    return result


def probes(repeat: int = 7, number: int = 200_000) -> dict[str, float]:
    """The probes one message costs (one stanza routed, one sent), in us, best of `repeat`;
    `prometheus_client` is the same with prometheus-client's own Counter and Histogram."""
    import timeit

    from prometheus_client import CollectorRegistry, Counter, Histogram

    from xmppd import metrics

    tag = "{jabber:client}message"

    def one_message() -> None:
        started = metrics.clock()
        metrics.routed(tag, started)
        metrics.sent(tag)

    registry = CollectorRegistry()
    stanzas = Counter("s", "", ["kind"], registry=registry)
    child_in, child_out = stanzas.labels("message"), stanzas.labels("out")
    routing = Histogram("r", "", buckets=metrics.ROUTING_BUCKETS, registry=registry)

    def with_prometheus_client() -> None:
        started = metrics.clock()
        child_in.inc()
        routing.observe(metrics.clock() - started)
        child_out.inc()

    out = {}
    for name, on, fn in (("on", True, one_message), ("off", False, one_message),
                         ("prometheus_client", True, with_prometheus_client)):  # fmt: skip
        metrics.configure(on)
        out[name] = round(min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6, 3)
    return out


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("what", nargs="?", default="all", choices=("all", "one", "probes"))
    p.add_argument("--mode", choices=("on", "off"), default="on")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--sessions", type=int, default=1000)
    p.add_argument("--messages", type=int, default=20_000)
    p.add_argument("--rate", type=float, default=1_000.0)
    p.add_argument("--flood-messages", type=int, default=20_000)
    p.add_argument("--window", type=int, default=500)
    p.add_argument("--concurrency", type=int, default=100)
    p.add_argument("--idle-seconds", type=float, default=1.0)
    p.add_argument("--server-core", type=int, default=1)
    p.add_argument("--loadgen-core", type=int, default=0)
    p.add_argument("--nice", type=int, default=-10, help="both processes (a shared machine)")
    args = p.parse_args()
    args.tls, args.bare_jid = False, False
    if args.what == "probes":  # run it as: flock /tmp/bench.lock taskset -c 1 python ...
        sys.path.insert(0, str(HERE.parent))
        print(json.dumps(probes()), flush=True)
        return 0
    if args.what == "one":
        print(json.dumps(one(args)), flush=True)
        return 0
    runs: list[dict[str, Any]] = []
    for round_no in range(args.rounds):
        for mode in ("on", "off") if round_no % 2 == 0 else ("off", "on"):
            cmd = ["flock", "/tmp/bench.lock", sys.executable, __file__, "one", "--mode", mode]
            for name in ("sessions", "messages", "rate", "flood_messages", "window", "nice"):
                cmd += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            run = json.loads(out.strip().splitlines()[-1])
            runs.append(run)
            print(mode, {f"{ph}.{k}": run[ph].get(k) for ph, k in FIGURES}, flush=True)
    print("\n| figure | metrics on | metrics off | on / off |\n|---|---|---|---|")
    for phase, key in FIGURES:
        med = {
            m: statistics.median(r[phase][key] for r in runs if r["mode"] == m)
            for m in ("on", "off")
        }
        print(f"| {phase} {key} | {med['on']} | {med['off']} | {med['on'] / med['off']:.3f} |")
    results = HERE / "results" / f"metrics-cost-{time.strftime('%Y-%m-%d')}.json"
    results.write_text(json.dumps({"args": vars(args), "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
