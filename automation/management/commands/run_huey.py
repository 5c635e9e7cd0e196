"""`manage.py run_huey`: Huey's worker command, with what operators need of a worker process.

Huey's own command (huey.contrib.djhuey) with:
- `--metrics-port PORT` (and `--metrics-host`, 127.0.0.1 by default): this process's metrics
  (runs, actions, webhooks...) served for Prometheus, behind the same access rule as /metrics
  (observability/exposition.py). Each worker process takes a port of its own;
- a scheduler heartbeat when the consumer starts with its periodic tasks (the worker threads
  beat as they poll the queue: automation/runs/queue.py), read by /healthz;
- logging left to Django's LOGGING (LOG_FORMAT, LOG_LEVEL, HUEY_LOG_LEVEL), as in `serve`: Huey's
  command added a plain-text handler of its own to the "huey" logger, which doubled its lines and
  broke LOG_FORMAT=json;
- `--version`: the engine's version.

It replaces Huey's command because the automation app comes before huey.contrib.djhuey in
INSTALLED_APPS (config/settings.py).
"""

import logging

from django.conf import settings
from django.core.management.base import CommandError
from django.utils.module_loading import autodiscover_modules
from huey.consumer_options import ConsumerConfig
from huey.contrib.djhuey.management.commands import run_huey

import automation
from automation.core import heartbeats
from automation.management import datadir_lock
from observability.exposition import start_metrics_server

logger = logging.getLogger("automation.worker")

# Huey's logging options: Django's LOGGING decides instead.
IGNORED_OPTIONS = ("logfile", "verbose", "simple_log")


class Command(run_huey.Command):
    help = (
        "Run a worker: the Huey consumer executing runs and, unless --no-periodic, the periodic "
        "tasks (schedules, sweeper, retention). --metrics-port serves its metrics."
    )

    def get_version(self):
        return automation.__version__

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument(
            "--metrics-port",
            type=int,
            default=None,
            help="Serve this worker's Prometheus metrics on this port (one per worker process).",
        )
        parser.add_argument(
            "--metrics-host",
            default="127.0.0.1",
            help="Address of the metrics port (127.0.0.1; 0.0.0.0 for a scraper elsewhere, "
            "which METRICS_ALLOWED_NETWORKS or METRICS_TOKEN must then admit).",
        )

    def handle(self, *args, metrics_port, metrics_host, **options):
        from huey.contrib.djhuey import HUEY

        consumer_options = dict(settings.HUEY.get("consumer", {}))
        consumer_options.update({key: value for key, value in options.items() if value is not None})
        for key in IGNORED_OPTIONS:
            consumer_options.pop(key, None)
        if not options.get("disable_autoload"):
            autodiscover_modules("tasks")
        config = ConsumerConfig(**consumer_options)
        config.validate()
        if settings.DATABASES["default"]["ENGINE"] == "config.sqlite":
            self.data_dir_lock = datadir_lock.hold_shared()  # `restore` checks it
        if metrics_port is not None and config.worker_type == "process":
            raise CommandError(
                "--metrics-port serves the counts of this process: its workers must be threads "
                "(-k thread, the default), not processes; run one run_huey per port instead."
            )
        if metrics_port is not None:
            try:
                server = start_metrics_server(metrics_port, metrics_host)
            except OSError as exc:
                raise CommandError(
                    f"The metrics port {metrics_host}:{metrics_port} could not be opened: {exc}"
                ) from None
            logger.info("Metrics on http://%s:%s/metrics", *server.server_address[:2])
        consumer = HUEY.create_consumer(**config.values)
        logger.info(
            "Worker %s %s: %s %s worker(s), periodic tasks %s.",
            heartbeats.process_name(),
            automation.__version__,
            consumer.workers,
            config.worker_type,
            "on" if consumer.periodic else "off",
        )
        if consumer.periodic:
            heartbeats.beat(heartbeats.SCHEDULER, now_required=True)
        consumer.run()
