"""A Huey worker process for benchmarks 5 (redis) and 7: `python -m bench.worker --workers N`.

`manage.py run_huey` with the bench's tasks registered too (run_huey only discovers the
installed apps' tasks modules). Runs in the environment its parent gives it; never resets data.
"""

import argparse
import os
import subprocess
import sys

from bench.env import REPO_ROOT


def start_workers(env: dict, count: int, handwritten: bool = False) -> list[subprocess.Popen]:
    """`count` worker processes of one thread each (what `run_huey -w 1` is); `handwritten`:
    with benchmark 5's hand-written pipeline (bench/handwritten.py) registered."""
    extra = ["--handwritten"] if handwritten else []
    return [
        subprocess.Popen(
            [sys.executable, "-m", "bench.worker", "--workers", "1", *extra],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(count)
    ]


def stop_workers(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        process.terminate()  # Huey: SIGTERM stops at once
    for process in processes:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.worker")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--handwritten", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from huey.consumer import Consumer
    from huey.contrib.djhuey import HUEY

    import automation.tasks  # noqa: F401
    import bench.tasks  # noqa: F401

    if args.handwritten:
        import bench.handwritten  # noqa: F401
        import bench.recorded  # noqa: F401 - the same, with a run record
    from bench import stages

    stages.install()  # only when BENCH_STAGES_FILE is set (python -m bench.stages)

    Consumer(HUEY, workers=args.workers, worker_type="thread", periodic=False).run()


if __name__ == "__main__":
    main()
