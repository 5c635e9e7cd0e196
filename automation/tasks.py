"""Huey tasks: execute a run, and the periodic sweeper that makes sure no run is lost."""

import logging

from django.conf import settings
from huey import crontab
from huey.contrib.djhuey import HUEY, db_periodic_task, db_task

from automation import runs
from automation.queue import take_queued

logger = logging.getLogger("automation.tasks")


@HUEY.on_startup()
def load_the_engine() -> None:
    """Import what a run needs as each worker starts. The action handlers pull in httpx: about
    130 ms that the first run of every worker would otherwise spend importing."""
    import automation.actions  # noqa: F401
    import automation.conditions  # noqa: F401


@db_task()
def execute_run_task(log_id: int) -> None:
    """Execute one PENDING run, with the runs queued right behind it (up to
    AUTOMATION_RUN_BATCH_SIZE in all; see runs.execute_runs). A duplicate delivery finds nothing
    to claim and does nothing."""
    queued = take_queued(HUEY, execute_run_task, settings.AUTOMATION_RUN_BATCH_SIZE - 1)
    runs.execute_runs([log_id, *(args[0] for args in queued)])


@db_periodic_task(crontab(minute="*"))
def sweep_runs_task() -> None:
    """Every minute: revive runs whose worker died and re-enqueue runs nobody picked up."""
    runs.sweep()


@db_periodic_task(crontab(minute="*"))
def schedule_tick_task() -> None:
    """Every minute: fire the due slots of SCHEDULE rules (once per slot, however many workers)."""
    from automation import schedules

    schedules.tick()


@db_periodic_task(crontab(minute="17"))
def purge_logs_task() -> None:
    """Every hour: delete run logs past their retention age, in small batches."""
    from automation import retention

    retention.purge_logs()
