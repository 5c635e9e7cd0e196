"""A Huey worker process for benchmarks 5, 7, 8, 10 and 11 (redis): `python -m bench.worker
--workers N`.

`manage.py run_huey` with the bench's tasks registered too (run_huey only discovers the
installed apps' tasks modules). Runs in the environment its parent gives it; never resets data.
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.env import REPO_ROOT


def start_workers(
    env: dict, count: int, handwritten: bool = False, log_to: Path | None = None
) -> list[subprocess.Popen]:
    """`count` worker processes of one thread each (what `run_huey -w 1` is); `handwritten`:
    with benchmark 5's hand-written pipeline (bench/handwritten.py) registered; `log_to`: their
    output appended to that file (else dropped)."""
    extra = ["--handwritten"] if handwritten else []
    output = open(log_to, "a") if log_to else subprocess.DEVNULL  # noqa: SIM115 - the child's
    try:
        return [
            subprocess.Popen(
                [sys.executable, "-m", "bench.worker", "--workers", "1", *extra],
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
            )
            for _ in range(count)
        ]
    finally:
        if log_to:
            output.close()  # each child has its own copy


READY = "bench worker ready"


def wait_ready(log: Path, count: int, timeout: float = 120) -> None:
    """Until `count` workers started with start_workers(log_to=log) are set up (Django loaded,
    tasks registered): a burst must not time their start-up."""
    deadline = time.monotonic() + timeout
    while log.read_text().count(READY) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the workers were not ready in {timeout}s; see {log}")
        time.sleep(0.1)


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
    from bench.receiver import trust_bench_ca

    stages.install()  # only when BENCH_STAGES_FILE is set (python -m bench.stages)

    trust_bench_ca()  # benchmark 10's https receiver

    print(READY, flush=True)  # start_workers(log_to=...) callers wait for it (wait_ready)
    Consumer(HUEY, workers=args.workers, worker_type="thread", periodic=False).run()


if __name__ == "__main__":
    main()
