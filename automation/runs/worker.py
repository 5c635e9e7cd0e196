"""The worker's task: runs are queued per organization (runs/fair_queue.py) with one anonymous
wake-up each on Huey's queue; a woken worker executes the next batch, chosen fairly."""

from huey.contrib.djhuey import HUEY, db_task

from automation.runs import fair_queue
from automation.runs.execute import execute_runs
from automation.runs.queue import fair_queues, take_queued


def enqueue(organization_id: int, log_ids: list[int]) -> None:
    """Queue PENDING runs of one organization (automation/runs/fair_queue.py), and one wake-up each."""
    wakeups = [HUEY.serialize_task(execute_queued_runs_task.s()) for _ in log_ids]
    fair_queues(HUEY).push(organization_id, log_ids, wakeups)  # one round trip for both


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
        execute_runs(batch.log_ids)
    finally:
        if queues.release(batch):
            execute_queued_runs_task()
