"""`manage.py serve` with benchmark 5's hand-written pipeline connected (and webhooks trusting
benchmark 10's CA when BENCH_WEBHOOK_CA names it): `python -m bench.serve [serve's options]`.

Runs in the environment its parent gives it (bench/server.py); never resets data.
"""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.core.management import execute_from_command_line

    import bench.handwritten  # noqa: F401 - connects the receiver, registers the task
    import bench.recorded  # noqa: F401 - the same, with a run record
    from bench import stages

    stages.install()  # only when BENCH_STAGES_FILE is set (python -m bench.stages)
    from bench.receiver import trust_bench_ca

    trust_bench_ca()  # benchmark 10's https receiver

    execute_from_command_line(["manage.py", "serve", *sys.argv[1:]])


if __name__ == "__main__":
    main()
