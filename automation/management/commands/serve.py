"""`manage.py serve`: migrate, then serve HTTP + WebSocket with the Huey consumer in-process.

One command is the whole embedded deployment: uvicorn runs the ASGI application in the main
thread while the Huey workers and the periodic scheduler run as threads of the same process, so
live events published by a run reach WebSocket subscribers through the in-memory channel layer.

With --skip-migrate (web processes of a distributed deployment, after `migrate` ran once) it
refuses to start while migrations are unapplied: new code on an old schema fails on every query
that reads a new column. On SQLite it holds a shared lock on the data directory while it runs
(management/datadir_lock.py), which `restore` checks.

Shutdown: uvicorn owns SIGINT/SIGTERM while it serves. When it has stopped, the consumer's
threads are stopped gracefully (a run in progress finishes) and the command returns, so the
process exits 0.
"""

import gc
import io
import logging
import signal
import threading
import time

import uvicorn
from django.conf import settings
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils.module_loading import autodiscover_modules, import_string
from huey.consumer import Consumer, ConsumerStopped
from huey.consumer_options import ConsumerConfig

import automation
from automation.core import heartbeats
from automation.management import datadir_lock

logger = logging.getLogger("automation.serve")


class EmbeddedConsumer(Consumer):
    """A Huey consumer that runs beside a server instead of owning the process.

    The stock consumer installs signal handlers in start(), which only the main thread may do and
    which would take SIGINT/SIGTERM away from uvicorn. Here the server owns the signals and stops
    the consumer itself, so installing them is skipped.
    """

    def _set_signal_handlers(self):
        pass

    def supervise(self):
        """Restart dead workers until stopped (the stock run loop, without signals or exec)."""
        health_check_ts = time.monotonic() if self._health_check else None
        while True:
            try:
                health_check_ts = self.loop(health_check_ts)
            except ConsumerStopped:
                return


def consumer_options(workers: int | None) -> dict:
    """settings.HUEY["consumer"], with --workers applied, checked by Huey's own validator."""
    options = dict(settings.HUEY.get("consumer", {})) if isinstance(settings.HUEY, dict) else {}
    if workers is not None:
        options["workers"] = workers
    # Logging is Django's (settings.LOGGING); the consumer must not add handlers of its own.
    for key in ("logfile", "verbose", "simple_log"):
        options.pop(key, None)
    config = ConsumerConfig(**options)
    config.validate()
    values = dict(config.values)
    if values["worker_type"] != "thread":
        raise CommandError(
            'serve runs the consumer in its own process: HUEY["consumer"]["worker_type"] must be '
            '"thread" (use `manage.py run_huey -k process` for a separate worker).'
        )
    return values


def unapplied_migrations() -> list[str]:
    """The migrations `migrate` would apply now ("app.name"), in order."""
    executor = MigrationExecutor(connection)
    targets = executor.loader.graph.leaf_nodes()
    return [
        f"{migration.app_label}.{migration.name}"
        for migration, _ in executor.migration_plan(targets)
    ]


def uses_sqlite() -> bool:
    return settings.DATABASES["default"]["ENGINE"] == "config.sqlite"


class Command(BaseCommand):
    help = (
        "Apply migrations, then serve HTTP and WebSocket (uvicorn) with the Huey consumer and "
        "its periodic scheduler running in the same process."
    )

    def get_version(self):
        return automation.__version__

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1", help="Address to bind (127.0.0.1).")
        parser.add_argument("--port", type=int, default=8000, help="Port to bind (8000).")
        parser.add_argument(
            "--workers",
            type=int,
            default=None,
            help='Huey worker threads (default: HUEY["consumer"]["workers"], env HUEY_WORKERS).',
        )
        parser.add_argument(
            "--no-worker",
            action="store_true",
            help="Serve only; runs are executed by separate `manage.py run_huey` workers "
            "(distributed mode).",
        )
        parser.add_argument(
            "--skip-migrate", action="store_true", help="Do not apply migrations first."
        )

    def handle(self, *args, host, port, workers, no_worker, skip_migrate, **options):
        if workers is not None and workers < 1:
            raise CommandError("--workers must be at least 1.")
        if no_worker and settings.EMBEDDED:
            logger.warning(
                "--no-worker in embedded mode: runs wait in the SQLite queue until a "
                "`manage.py run_huey` process on this machine picks them up."
            )
        lock = datadir_lock.hold_shared() if uses_sqlite() else None  # noqa: F841 - held
        if not skip_migrate:
            self._migrate(options["verbosity"])
        else:
            pending = unapplied_migrations()
            if pending:
                raise CommandError(
                    f"{len(pending)} migration(s) not applied ({', '.join(pending[:5])}"
                    f"{', ...' if len(pending) > 5 else ''}): run `manage.py migrate` first "
                    "(README, Upgrading)."
                )
        logger.info("automation %s on %s:%s.", automation.__version__, host, port)

        consumer = None if no_worker else self._start_consumer(workers)
        server = self._make_server(host, port)
        # Everything loaded so far (Django, the schema, the app) lives as long as the process:
        # keep it out of the garbage collector's full passes, which otherwise walk it all and
        # stalled the event loop (every live event) for 70-180 ms at a time.
        gc.collect()
        gc.freeze()
        logger.info("%s start-up objects kept out of garbage collection.", gc.get_freeze_count())
        # uvicorn re-raises the signal that stopped it once it has shut down; with these handlers
        # in place that re-raise is a no-op and the consumer can be stopped cleanly below.
        previous = {
            sig: signal.signal(sig, _note_signal) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            server.run()
        finally:
            if consumer is not None:
                self._stop_consumer(consumer)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if not server.started:
            raise CommandError(f"The server could not start on {host}:{port}.")
        logger.info("Stopped.")

    def _migrate(self, verbosity: int) -> None:
        """Apply the migrations; with LOG_FORMAT=json, what migrate prints becomes log records
        (its plain lines would break a log read one JSON object per line)."""
        if settings.LOG_FORMAT != "json":
            call_command("migrate", interactive=False, verbosity=verbosity)
            return
        printed = io.StringIO()
        call_command("migrate", interactive=False, verbosity=verbosity, stdout=printed)
        for line in printed.getvalue().splitlines():
            if line.strip():
                logger.info("migrate: %s", line.strip())

    def _start_consumer(self, workers):
        from huey.contrib.djhuey import HUEY

        if HUEY.immediate:
            raise CommandError('HUEY["immediate"] is on: there is no queue to consume.')
        autodiscover_modules("tasks")
        consumer = EmbeddedConsumer(HUEY, **consumer_options(workers))
        consumer.start()
        supervisor = threading.Thread(
            target=consumer.supervise, name="huey-supervisor", daemon=True
        )
        supervisor.start()
        consumer.supervisor_thread = supervisor
        if consumer.periodic:
            heartbeats.beat(heartbeats.SCHEDULER, now_required=True)
        logger.info(
            "Huey consumer running in-process: %s worker thread(s), periodic tasks %s.",
            consumer.workers,
            "on" if consumer.periodic else "off",
        )
        return consumer

    def _stop_consumer(self, consumer):
        logger.info("Stopping the Huey consumer (waiting for runs in progress).")
        consumer.stop(graceful=True)
        consumer.supervisor_thread.join(timeout=5)

    def _make_server(self, host, port):
        # The project's application, named by its settings as Django and Channels name it.
        application = import_string(settings.ASGI_APPLICATION)

        # No web server sits in front of the embedded deployment, so the admin's static files
        # are served here (ASGIStaticFilesHandler passes every other request through).
        app = ASGIStaticFilesHandler(application)
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            lifespan="off",  # Django's ASGI handler has no lifespan protocol
            log_config=None,  # keep Django's LOGGING
            ws="auto",
            proxy_headers=False,
            timeout_graceful_shutdown=10,
        )
        return uvicorn.Server(config)


def _note_signal(signum, frame):
    logger.debug("Received %s after the server stopped.", signal.Signals(signum).name)
