"""Huey's tasks (djhuey finds them here): the worker's start-up, the task that executes runs
(automation/runs/worker.py), and the periodic ones: the sweeper that makes sure no run is lost,
the scheduler tick and retention."""

import logging

from huey import crontab
from huey.contrib.djhuey import HUEY, db_periodic_task

from automation.runs import sweeper
from automation.runs.wakeups import wake_due_runs_task  # noqa: F401 - registers the task
from automation.runs.worker import execute_queued_runs_task  # noqa: F401 - registers the task

logger = logging.getLogger("automation.tasks")


@HUEY.on_startup()
def load_the_engine() -> None:
    """Import what a run needs as each worker starts. The action handlers pull in httpx: about
    130 ms that the first run of every worker would otherwise spend importing."""
    import automation.actions.handlers  # noqa: F401
    import automation.conditions.evaluate  # noqa: F401


@db_periodic_task(crontab(minute="*"))
def sweep_runs_task() -> None:
    """Every minute: revive runs whose worker died, re-enqueue runs nobody picked up and wake
    waiting runs that are due (whose hint was lost)."""
    sweeper.sweep()


@db_periodic_task(crontab(minute="*"))
def schedule_tick_task() -> None:
    """Every minute: fire the due slots of SCHEDULE rules (once per slot, however many workers),
    then record the tick (the scheduler's heartbeat, which /healthz reads)."""
    from automation.core import heartbeats
    from automation.triggers import schedules

    schedules.tick()
    heartbeats.beat(heartbeats.SCHEDULER, now_required=True)


@db_periodic_task(crontab(minute="17"))
def purge_logs_task() -> None:
    """Every hour: delete run logs past their retention age, in small batches."""
    from automation.runs import retention

    retention.purge_logs()
