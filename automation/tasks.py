"""Huey tasks: execute a run, and the periodic sweeper that makes sure no run is lost."""

import logging

from huey import crontab
from huey.contrib.djhuey import HUEY, db_periodic_task, db_task

from automation.runs import execute as runs
from automation.runs import fair_queue
from automation.runs.queue import fair_queues, take_queued

logger = logging.getLogger("automation.tasks")


@HUEY.on_startup()
def load_the_engine() -> None:
    """Import what a run needs as each worker starts. The action handlers pull in httpx: about
    130 ms that the first run of every worker would otherwise spend importing."""
    import automation.actions.handlers  # noqa: F401
    import automation.conditions.evaluate  # noqa: F401


def enqueue_runs(organization_id: int, log_ids: list[int]) -> None:
    """Queue PENDING runs of one organization (automation/fair_queue.py), and one wake-up each."""
    fair_queues(HUEY).push(organization_id, log_ids)
    for _ in log_ids:
        execute_queued_runs_task()


@db_task()
def execute_queued_runs_task() -> None:
    """Execute the next batch of runs, chosen fairly across organizations (fair_queue.py).

    Every queued run brought a wake-up: a batch of n runs takes the n - 1 wake-ups it made
    surplus off the queue. A wake-up that finds only organizations at their worker cap takes
    nothing; the batch that frees a cap wakes a worker again when runs still wait. A duplicate
    delivery of a run finds nothing to claim and does nothing."""
    queues = fair_queues(HUEY)
    batch = queues.pop(fair_queue.Policy.from_settings())
    if batch is None:
        return
    try:
        take_queued(HUEY, execute_queued_runs_task, len(batch.log_ids) - 1)
        runs.execute_runs(batch.log_ids)
    finally:
        if queues.release(batch):
            execute_queued_runs_task()


@db_periodic_task(crontab(minute="*"))
def sweep_runs_task() -> None:
    """Every minute: revive runs whose worker died and re-enqueue runs nobody picked up."""
    runs.sweep()


@db_periodic_task(crontab(minute="*"))
def schedule_tick_task() -> None:
    """Every minute: fire the due slots of SCHEDULE rules (once per slot, however many workers)."""
    from automation.triggers import schedules

    schedules.tick()


@db_periodic_task(crontab(minute="17"))
def purge_logs_task() -> None:
    """Every hour: delete run logs past their retention age, in small batches."""
    from automation.runs import retention

    retention.purge_logs()
