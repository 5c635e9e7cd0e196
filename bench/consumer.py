"""A real Huey consumer (worker threads) inside the bench process, started and stopped on demand.

The same consumer class `manage.py serve` runs, without the periodic scheduler, so a scheduled
tick or the sweeper never lands in the middle of a measurement.
"""

import contextlib
import threading

from huey.contrib.djhuey import HUEY

from automation.management.commands.serve import EmbeddedConsumer, consumer_options


@contextlib.contextmanager
def running_consumer(workers: int = 1):
    import automation.tasks  # noqa: F401 - registers the engine's tasks
    import bench.tasks  # noqa: F401 - registers the baselines

    HUEY.flush()
    options = consumer_options(workers)
    options["periodic"] = False
    consumer = EmbeddedConsumer(HUEY, **options)
    consumer.start()
    supervisor = threading.Thread(target=consumer.supervise, name="bench-huey", daemon=True)
    supervisor.start()
    try:
        yield consumer
    finally:
        consumer.stop(graceful=True)
        supervisor.join(timeout=10)
        HUEY.flush()
