"""Run the same load against Prosody and xmppd, interleaved, and report medians and ratios.

    python bench/compare.py --sessions 5000 --rounds 3

Each round starts every server afresh (pinned with `taskset -c 1`), runs bench/loadgen.py
against it (pinned with `taskset -c 0`) and stops it; rounds interleave the servers
(prosody, xmppd, prosody, xmppd, ...). Writes bench/results/<date>-<name>.json and .md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from servers import SERVERS, Accounts, nice_prefix, set_autogroup_nice  # noqa: E402

# (key, label, unit, better, path into one loadgen result)
METRICS: list[tuple[str, str, str, str, tuple[str, ...]]] = [
    ("rss_kib_per_session", "RSS per idle session", "KiB", "lower", ("idle", "kib_per_session")),
    ("cpu_s_per_10k", "server CPU per 10k msgs", "s", "lower", ("rate", "server_cpu_s_per_10k")),
    ("login_rate", "login rate", "sessions/s", "higher", ("login", "sessions_per_s")),
    ("p99_ms", "p99 latency at fixed rate", "ms", "lower", ("rate", "p99_ms")),
    ("p50_ms", "p50 latency at fixed rate", "ms", "lower", ("rate", "p50_ms")),
    ("login_cpu_ms", "server CPU per login", "ms", "lower", ("login", "server_cpu_ms_per_login")),
    ("flood_rate", "max delivered (flood)", "msg/s", "higher", ("flood", "delivered_per_s")),
    ("flood_p99_ms", "p99 latency (flood)", "ms", "lower", ("flood", "p99_ms")),
    (
        "flood_cpu_s_per_10k",
        "server CPU per 10k msgs (flood)",
        "s",
        "lower",
        ("flood", "server_cpu_s_per_10k"),
    ),
]
PHASES = ("login", "rate", "flood", "close")
LOADGEN_SATURATED = 0.9  # of one core


def dig(data: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def loadgen_command(args: argparse.Namespace, server: Any) -> list[str]:
    cmd = [
        *nice_prefix(args.nice), "taskset", "-c", str(args.loadgen_core),
        sys.executable, str(HERE / "loadgen.py"),
        "--port", str(server.port), "--server-pid", str(server.pid),
        "--server-core", str(args.server_core), "--label", server.name,
        "--sessions", str(args.sessions), "--password", server.accounts.password,
        "--concurrency", str(args.concurrency), "--idle-seconds", str(args.idle_seconds),
        "--messages", str(args.messages), "--rate", str(args.rate),
        "--flood-messages", str(args.flood_messages), "--window", str(args.window),
    ]  # fmt: skip
    if server.account_rate is not None:
        rate, burst = server.account_rate
        cmd += ["--account-rate", str(rate), "--account-burst", str(burst)]
    if args.tls:
        cmd.append("--tls")
    if args.bare_jid:
        cmd.append("--bare-jid")
    return cmd


def run_loadgen(cmd: list[str], nice: int, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run the load generator in its own session, so that it gets its own scheduler group."""
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    ) as proc:
        set_autogroup_nice(proc.pid, nice)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def run_one(args: argparse.Namespace, name: str, round_no: int) -> dict[str, Any]:
    accounts = Accounts(args.sessions)
    server = SERVERS[name](
        accounts, tls=args.tls, core=args.server_core, nice=args.nice, keep=args.keep
    )
    started = time.monotonic()
    try:
        server.start()
        proc = run_loadgen(loadgen_command(args, server), args.nice, args.run_timeout)
        if proc.returncode not in (0, 1) or not proc.stdout.strip():
            raise RuntimeError(f"loadgen failed ({proc.returncode}): {proc.stderr[-1500:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        if proc.stderr.strip():
            result["loadgen_stderr"] = proc.stderr[-1500:]
        alive = server.proc is not None and server.proc.poll() is None
        result["server_survived"] = alive
    except Exception as exc:  # noqa: BLE001 - one failed run must not lose the others
        result = {"server": name, "error": f"{type(exc).__name__}: {exc}", "log": server.log_tail()}
    finally:
        server.stop()
    result["round"] = round_no
    result["run_s"] = round(time.monotonic() - started, 1)
    return result


def warnings_for(run: dict[str, Any], args: argparse.Namespace) -> list[str]:
    out = []
    if "error" in run:
        return [run["error"]]
    for phase in PHASES:
        frac = dig(run, (phase, "loadgen_cpu_frac"))
        if frac is not None and frac > LOADGEN_SATURATED:
            out.append(f"loadgen saturated its core in {phase} ({frac:.0%})")
    if dig(run, ("login", "failed")):
        out.append(f"{run['login']['failed']} logins failed")
    for phase in ("rate", "flood"):
        sent, delivered = dig(run, (phase, "sent")), dig(run, (phase, "delivered"))
        if sent and delivered is not None and delivered < sent:
            out.append(f"{phase}: {sent - delivered} of {sent} messages not delivered")
        if dig(run, (phase, "refused")):
            out.append(f"{phase}: {run[phase]['refused']} messages refused by the server")
    cap = dig(run, ("flood", "account_rate_cap"))
    flood_rate = dig(run, ("flood", "delivered_per_s"))
    if cap and flood_rate and flood_rate > 0.8 * cap:
        out.append(
            f"flood near the per-account rate cap ({flood_rate:g} of {cap:g} msg/s): "
            "more sessions measure more"
        )
    achieved = dig(run, ("rate", "achieved_send_rate"))
    if achieved is not None and achieved < 0.95 * args.rate:
        out.append(f"fixed rate not reached: {achieved} < {args.rate}")
    frac = dig(run, ("rate", "server_cpu_frac"))
    if frac is not None and frac > 0.85:
        out.append(
            f"server near saturation at the fixed rate ({frac:.0%} CPU): latency is queueing"
        )
    if not run.get("server_survived", True):
        out.append("server process died during the run")
    return out


def ratio_pairs(servers: list[str]) -> list[tuple[str, str]]:
    """(subject, reference): xmppd against every other server; else all against Prosody."""
    if "xmppd" in servers:
        return [("xmppd", other) for other in servers if other != "xmppd"]
    return [(s, "prosody") for s in servers if s != "prosody" and "prosody" in servers]


def default_servers() -> str:
    names = ["prosody", "xmppd", "prosody-gengc"]
    if shutil.which("ejabberdctl") and any(Path("/usr/lib/erlang/lib").glob("luerl*")):
        names.append("ejabberd")
    return ",".join(names)


def summarize(runs: list[dict[str, Any]], servers: list[str]) -> dict[str, Any]:
    medians: dict[str, dict[str, float | None]] = {}
    for name in servers:
        ok = [r for r in runs if r.get("server") == name and "error" not in r]
        medians[name] = {}
        for key, _, _, _, path in METRICS:
            values = [v for v in (dig(r, path) for r in ok) if isinstance(v, int | float)]
            medians[name][key] = round(statistics.median(values), 3) if values else None
        loadgen = [dig(r, (p, "loadgen_cpu_frac")) or 0.0 for r in ok for p in PHASES]
        medians[name]["loadgen_cpu_frac_max"] = max(loadgen) if loadgen else None
        others = [dig(r, (p, "core_others_frac")) or 0.0 for r in ok for p in ("rate", "flood")]
        medians[name]["server_core_others_frac_max"] = max(others) if others else None
        medians[name]["runs_ok"] = len(ok)
    ratios: dict[str, dict[str, float | None]] = {}
    for name, base in ratio_pairs(servers):
        pair = ratios[f"{name}/{base}"] = {}
        for key, *_ in METRICS:
            mine, theirs = medians[name].get(key), medians[base].get(key)
            pair[key] = round(mine / theirs, 3) if mine is not None and theirs else None
    return {"medians": medians, "ratios": ratios}


def fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def markdown(
    summary: dict[str, Any], servers: list[str], meta: dict[str, Any], runs: list[dict[str, Any]]
) -> str:
    pairs = [f"{s}/{b}" for s, b in ratio_pairs(servers)]
    head = ["metric", "unit", "better", *servers, *pairs]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, label, unit, better, _ in METRICS:
        row = [label, unit, better]
        row += [fmt(summary["medians"][s].get(key)) for s in servers]
        row += [fmt(summary["ratios"][pair].get(key)) for pair in pairs]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    for s in servers:
        m = summary["medians"][s]
        loops = sorted({str(r.get("loadgen_loop")) for r in runs if r.get("server") == s})
        lines.append(
            f"- {s}: {m['runs_ok']} good runs; load generator ({', '.join(loops)}) max CPU "
            f"{fmt(m['loadgen_cpu_frac_max'])} of its core; other load on the server core "
            f"up to {fmt(m['server_core_others_frac_max'])}"
        )
    cfg = meta["config"]
    lines.append(
        f"- {cfg['sessions']} sessions, {'STARTTLS' if cfg['tls'] else 'plaintext'}, "
        f"SCRAM-SHA-1, {cfg['messages']} msgs at {cfg['rate']:.0f}/s "
        f"({'bare' if cfg['bare_jid'] else 'full'} JIDs), flood {cfg['flood_messages']} msgs "
        f"window {cfg['window']}; medians of {cfg['rounds']} interleaved rounds; "
        f"nice {cfg['nice']}"
    )
    return "\n".join(lines) + "\n"


def environment() -> dict[str, Any]:
    def out(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    prosody_version = Path("/usr/lib/prosody/prosody.version")
    return {
        "host": platform.node(),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "prosody": prosody_version.read_text().strip() if prosody_version.exists() else None,
        "xmppd_commit": out(["git", "-C", str(HERE.parent), "rev-parse", "--short", "HEAD"]),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--servers",
        default=default_servers(),
        help="comma-separated, in run order within each round "
        "(default: prosody,xmppd,prosody-gengc and ejabberd if installed)",
    )
    p.add_argument("--sessions", type=int, default=5000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--tls", action="store_true", help="STARTTLS on every session")
    p.add_argument("--bare-jid", action="store_true")
    p.add_argument("--concurrency", type=int, default=100)
    p.add_argument("--idle-seconds", type=float, default=5.0)
    p.add_argument("--messages", type=int, default=20_000)
    p.add_argument("--rate", type=float, default=1_000.0)
    p.add_argument("--flood-messages", type=int, default=20_000)
    p.add_argument("--window", type=int, default=500)
    p.add_argument("--server-core", type=int, default=1)
    p.add_argument("--loadgen-core", type=int, default=0)
    p.add_argument(
        "--nice",
        type=int,
        default=0,
        help="nice level for server and load generator (e.g. -10 on a busy shared machine)",
    )
    p.add_argument("--run-timeout", type=float, default=900.0)
    p.add_argument("--name", default="", help="suffix of the result files")
    p.add_argument("--keep", action="store_true", help="keep the servers' temp dirs")
    p.add_argument("--out", type=Path, default=HERE / "results")
    args = p.parse_args(argv)
    args.server_list = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = set(args.server_list) - set(SERVERS)
    if unknown:
        p.error(f"unknown servers {sorted(unknown)}; known: {sorted(SERVERS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runs: list[dict[str, Any]] = []
    for round_no in range(1, args.rounds + 1):
        for name in args.server_list:
            print(f"round {round_no}/{args.rounds}: {name} ...", file=sys.stderr, flush=True)
            run = run_one(args, name, round_no)
            run["warnings"] = warnings_for(run, args)
            runs.append(run)
            brief = {key: dig(run, path) for key, _, _, _, path in METRICS[:4]}
            print(f"  {brief} {run['warnings'] or ''}", file=sys.stderr, flush=True)
    config = {k: v for k, v in vars(args).items() if k not in ("out",)}
    config["out"] = str(args.out)
    meta = {"config": config, "environment": environment()}
    summary = summarize(runs, args.server_list)
    text = markdown(summary, args.server_list, meta, runs)
    print(text)
    stamp = dt.datetime.now().strftime("%Y-%m-%d-%H%M")
    name = args.name or f"{args.sessions}s-{'tls' if args.tls else 'plain'}"
    args.out.mkdir(parents=True, exist_ok=True)
    base = args.out / f"{stamp}-{name}"
    base.with_suffix(".json").write_text(json.dumps({**meta, **summary, "runs": runs}, indent=1))
    base.with_suffix(".md").write_text(f"# {stamp} {name}\n\n{text}")
    print(f"wrote {base}.json and .md", file=sys.stderr)
    return 0 if all(not r["warnings"] for r in runs) else 2


if __name__ == "__main__":
    sys.exit(main())
