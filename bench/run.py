"""The one command: `python -m bench [--quick] [--only N ...] [--mode embedded|redis|all]`.

Runs each mode's benchmarks in a child process (bench/suite.py), then prints one table of figures
(ratios against baselines measured in the same run) with the machine, writes it to
bench/results/latest.md and latest.json, and prints each figure's change against the committed
bench/baseline.json (`--save-baseline` replaces that file with this run's figures).

Modes: embedded (SQLite, SqliteHuey, in-memory layer) and redis (PostgreSQL database h_bench,
Redis database 8, RedisHuey, channels-redis). The default `all` runs embedded, then redis when
PostgreSQL and Redis answer on BENCH_DATABASE_URL / BENCH_REDIS_URL (default 127.0.0.1).
Benchmarks 7 and 11 (throughput) run in redis mode only.
"""

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import env as bench_env
from bench.suite import BENCHMARKS, DEFAULT, QUICK

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
BASELINE_FILE = BENCH_DIR / "baseline.json"


def key(row: dict) -> str:
    return f"{row['bench']}/{row['mode']}/{row['name']}"


def run_mode(mode: str, level: str, only) -> dict:
    environment = bench_env.environment(mode)
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        out = handle.name
    command = [sys.executable, "-m", "bench.suite", "--mode", mode, "--level", level, "--out", out]
    for number in only or ():
        command += ["--only", str(number)]
    completed = subprocess.run(command, cwd=bench_env.REPO_ROOT, env=environment)
    if completed.returncode != 0:
        raise SystemExit(f"the {mode} benchmarks failed (exit {completed.returncode})")
    result = json.loads(Path(out).read_text())
    Path(out).unlink()
    return result


def format_value(row: dict) -> str:
    unit = row["unit"]
    if unit == "x":
        return f"{row['value']:.3f}x" if row["value"] < 0.1 else f"{row['value']:.2f}x"
    if unit == "%":
        return f"{row['value']:.2f} %"
    return f"{row['value']:g} {unit}".strip()


def change(row: dict, baseline: dict) -> str:
    before = baseline.get(key(row))
    if before is None:
        return "new"
    if before == row["value"]:
        return "="
    if not before:
        return f"{before:g} -> {row['value']:g}"
    return f"{(row['value'] - before) / abs(before) * 100:+.0f} %"


def table(rows: list[dict], baseline: dict) -> str:
    lines = [
        "| # | mode | figure | value | goal | met | vs baseline | measured |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        met = {True: "yes", False: "**no**", None: ""}[row["ok"]]
        lines.append(
            f"| {row['bench']} | {row['mode']} | {row['name']} | {format_value(row)} | "
            f"{row['goal']} | {met} | {change(row, baseline)} | {row['detail']} |"
        )
    return "\n".join(lines)


def machine_lines(machines: dict) -> list[str]:
    lines = []
    for mode, machine in machines.items():
        lines.append(
            f"- {mode}: {machine['cores']} cores, Python {machine['python']}, "
            f"{machine['platform']}, database {machine['database']}, broker {machine['broker']}, "
            f"channel layer {machine['channel_layer']}"
        )
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a 1-2 minute run")
    parser.add_argument("--only", type=int, action="append", choices=sorted(BENCHMARKS))
    parser.add_argument("--mode", choices=(*bench_env.MODES, "all"), default="all")
    parser.add_argument(
        "--save-baseline", action="store_true", help="write this run's figures to baseline.json"
    )
    args = parser.parse_args(argv)
    level = QUICK if args.quick else DEFAULT

    modes = list(bench_env.MODES) if args.mode == "all" else [args.mode]
    notes = []
    if bench_env.REDIS in modes:
        why = bench_env.services_reachable(bench_env.environment(bench_env.REDIS))
        if why is not None:
            if args.mode == bench_env.REDIS:
                raise SystemExit(f"redis mode needs PostgreSQL and Redis: {why}")
            modes.remove(bench_env.REDIS)
            notes.append(f"redis mode skipped: PostgreSQL or Redis not reachable ({why})")

    rows, machines = [], {}
    for mode in modes:
        result = run_mode(mode, level, args.only)
        machines[mode] = result["machine"]
        rows.extend(result["rows"])
    rows.sort(key=lambda row: (row["bench"], bench_env.MODES.index(row["mode"])))

    baseline = {}
    if BASELINE_FILE.exists():
        baseline = json.loads(BASELINE_FILE.read_text()).get("figures", {})
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = "python -m bench" + (" --quick" if args.quick else "")
    text = "\n".join(
        [
            f"Benchmarks, {stamp} (`{command}`, mode {args.mode})",
            "",
            *machine_lines(machines),
            *(f"- {note}" for note in notes),
            "",
            table(rows, baseline),
            "",
        ]
    )
    print()
    print(text)
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "latest.md").write_text(text)
    payload = {"when": stamp, "level": level, "machines": machines, "rows": rows}
    (RESULTS_DIR / "latest.json").write_text(json.dumps(payload, indent=2))
    print(f"Written to {RESULTS_DIR / 'latest.md'} and latest.json.")
    if args.save_baseline:
        figures = {key(row): row["value"] for row in rows}
        BASELINE_FILE.write_text(
            json.dumps(
                {"when": stamp, "level": level, "machines": machines, "figures": figures},
                indent=2,
                sort_keys=True,
            )
            + "\n"
        )
        print(f"Baseline saved to {BASELINE_FILE}.")
    missed = [row for row in rows if row["ok"] is False]
    if missed:
        print(f"{len(missed)} figure(s) miss their goal.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
