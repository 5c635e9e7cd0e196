"""A Huey worker process for benchmark 7: `python -m bench.worker --workers N`.

`manage.py run_huey` with the bench's tasks registered too (run_huey only discovers the
installed apps' tasks modules). Runs in the environment its parent gives it; never resets data.
"""

import argparse
import os


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.worker")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from huey.consumer import Consumer
    from huey.contrib.djhuey import HUEY

    import automation.tasks  # noqa: F401
    import bench.tasks  # noqa: F401

    Consumer(HUEY, workers=args.workers, worker_type="thread", periodic=False).run()


if __name__ == "__main__":
    main()
