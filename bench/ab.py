"""A/B of xmppd commits (and Prosody) on logins and room joins, interleaved, with ratios.

    python bench/ab.py --src base=HEAD~1 --src new=worktree --scenario login --rounds 5
    python bench/ab.py --src base=main --src new=worktree --prosody --scenario join --rounds 3

Each `--src label=REV` is a git revision exported with `git archive` into a temporary
directory (`worktree` means this checkout as it is, uncommitted changes included), so both
sides run the same bench code against different server code. Every round starts each server
afresh (pinned to `--server-core`, load generator on `--loadgen-core`), in an order that
alternates per round, and the report gives per-label medians and each label's ratio to the
first one. Scenarios:

- `login`: bench/loadgen.py with `--sessions` logins (100 in flight), no chat phases;
  logins/s and server CPU per login.
- `join`: bench/muc_bench.py's load generator: `--occupants` logins, then every occupant joins
  one room (20 in flight); join wall time and server CPU per join.

Run it under `flock /tmp/bench.lock` on a machine shared with other benchmarks.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from compare import run_loadgen  # noqa: E402
from servers import SERVERS, Accounts, Xmppd, nice_prefix  # noqa: E402

# (key, path into one result, better)
SCENARIO_METRICS: dict[str, list[tuple[str, tuple[str, ...], str]]] = {
    "login": [
        ("logins_per_s", ("login", "sessions_per_s"), "higher"),
        ("cpu_ms_per_login", ("login", "server_cpu_ms_per_login"), "lower"),
        ("server_cpu_frac", ("login", "server_cpu_frac"), "-"),
        ("loadgen_cpu_frac", ("login", "loadgen_cpu_frac"), "-"),
        ("core_others_frac", ("login", "core_others_frac"), "-"),
    ],
    "join": [
        ("join_wall_s", ("join", "wall_s"), "lower"),
        ("join_cpu_s", ("join", "server_cpu_s"), "lower"),
        ("server_cpu_frac", ("join", "server_cpu_frac"), "-"),
        ("loadgen_cpu_frac", ("join", "loadgen_cpu_frac"), "-"),
        ("logins_per_s", ("login", "sessions_per_s"), "higher"),
    ],
}


def export(rev: str, into: Path) -> Path:
    """The server code of `rev` (or of this work tree) in a directory of its own."""
    if rev == "worktree":
        return HERE.parent
    sha = subprocess.run(
        ["git", "-C", str(HERE.parent), "rev-parse", "--short", rev],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    target = into / sha
    if not target.exists():
        target.mkdir(parents=True)
        archive = subprocess.run(
            ["git", "-C", str(HERE.parent), "archive", sha], check=True, capture_output=True
        )
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target


def xmppd_from(src: Path) -> type[Xmppd]:
    class XmppdAt(Xmppd):
        def env(self) -> dict[str, str]:
            env = dict(os.environ)
            env["PYTHONPATH"] = str(src)
            return env

    return XmppdAt


def loadgen_cmd(args: argparse.Namespace, server: Any) -> list[str]:
    base = [*nice_prefix(args.nice), "taskset", "-c", str(args.loadgen_core), sys.executable]
    common = ["--port", str(server.port), "--server-pid", str(server.pid),
              "--server-core", str(args.server_core), "--label", server.name]  # fmt: skip
    if args.scenario == "login":
        cmd = [*base, str(HERE / "loadgen.py"), *common, "--sessions", str(args.sessions),
               "--messages", "0", "--flood-messages", "0", "--idle-seconds", "0"]  # fmt: skip
        return cmd + (["--tls"] if args.tls else [])
    return [*base, str(HERE / "muc_bench.py"), "loadgen", *common,
            "--occupants", str(args.occupants), "--messages", "5", "--rate", "5",
            "--senders", "5"]  # fmt: skip


def run_one(args: argparse.Namespace, label: str, cls: type, round_no: int) -> dict[str, Any]:
    count = args.sessions if args.scenario == "login" else args.occupants
    server = cls(Accounts(count), tls=args.tls, core=args.server_core, nice=args.nice,
                 muc=args.scenario == "join")  # fmt: skip
    try:
        server.start()
        proc = run_loadgen(loadgen_cmd(args, server), args.nice, args.run_timeout)
        if proc.returncode not in (0, 1) or not proc.stdout.strip():
            raise RuntimeError(f"loadgen failed ({proc.returncode}): {proc.stderr[-1500:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    except Exception as exc:  # noqa: BLE001 - one failed run must not lose the others
        result = {"error": f"{type(exc).__name__}: {exc}", "log": server.log_tail()}
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.proc.kill()
        server.stop()
    result.update(label=label, round=round_no, loadavg_1m=round(os.getloadavg()[0], 2))
    return result


def dig(data: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def report(args: argparse.Namespace, labels: list[str], runs: list[dict[str, Any]]) -> str:
    metrics = SCENARIO_METRICS[args.scenario]
    lines = ["| label | " + " | ".join(k for k, _, _ in metrics) + " | runs |",
             "|---" * (len(metrics) + 2) + "|"]  # fmt: skip
    medians: dict[str, dict[str, float]] = {}
    for label in labels:
        mine = [r for r in runs if r["label"] == label and "error" not in r]
        medians[label] = {}
        cells = []
        for key, path, _ in metrics:
            values = [v for r in mine if (v := dig(r, path)) is not None]
            medians[label][key] = statistics.median(values) if values else float("nan")
            cells.append(f"{medians[label][key]:.4g}")
        per_run = ", ".join(f"{dig(r, metrics[0][1])}" for r in mine)
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {per_run} |")
    first = labels[0]
    for label in labels[1:]:
        ratios = [
            f"{medians[label][k] / medians[first][k]:.3f}" if medians[first][k] else "-"
            for k, _, better in metrics
            if better != "-"
        ]
        names = [k for k, _, better in metrics if better != "-"]
        lines.append(
            f"\n{label}/{first}: "
            + ", ".join(f"{n} {r}" for n, r in zip(names, ratios, strict=True))
        )
    errors = [f"{r['label']} round {r['round']}: {r['error'][:300]}" for r in runs if "error" in r]
    return "\n".join(lines + errors)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--src", action="append", required=True, help="label=git-rev|worktree")
    p.add_argument("--prosody", action="store_true", help="run Prosody in every round too")
    p.add_argument("--scenario", choices=tuple(SCENARIO_METRICS), default="login")
    p.add_argument("--sessions", type=int, default=3000)
    p.add_argument("--occupants", type=int, default=1000)
    p.add_argument("--tls", action="store_true")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--nice", type=int, default=0)
    p.add_argument("--server-core", type=int, default=1)
    p.add_argument("--loadgen-core", type=int, default=0)
    p.add_argument("--run-timeout", type=float, default=600.0)
    p.add_argument("--out", type=Path, help="write the runs and the table here (.json, .md)")
    args = p.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-ab-"))
    servers: list[tuple[str, type]] = []
    revs = {}
    try:
        for spec in args.src:
            label, _, rev = spec.partition("=")
            revs[label] = rev
            servers.append((label, xmppd_from(export(rev, tmp))))
        if args.prosody:
            servers.append(("prosody", SERVERS["prosody"]))
        runs = []
        for round_no in range(args.rounds):
            order = servers if round_no % 2 == 0 else servers[::-1]
            for label, cls in order:
                runs.append(run_one(args, label, cls, round_no))
                print(json.dumps({k: runs[-1].get(k) for k in ("label", "round", "login",
                                  "join", "error")}), file=sys.stderr, flush=True)  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    text = report(args, [label for label, _ in servers], runs)
    print(text)
    if args.out:
        meta = {"args": {k: str(v) for k, v in vars(args).items()}, "revs": revs,
                "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}  # fmt: skip
        args.out.with_suffix(".json").write_text(json.dumps({**meta, "runs": runs}, indent=1))
        args.out.with_suffix(".md").write_text(
            f"`{' '.join(sys.argv)}` at {meta['date']}\n\n{text}\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
