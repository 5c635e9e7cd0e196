"""Runs that reach outside (a webhook, an e-mail) executed in batches, as database-only runs are.

Executed alone, such a run was two transactions of its own around its call: the claim with the
call's RUNNING entry, then the result (about seven PostgreSQL round trips, most of a webhook
run's time in a worker: docs/benchmarks.md, benchmark 11). A worker's batch of them now shares
both:

1. One transaction claims the batch (runs/execute.py, `_execute_together(..., outside=True)`):
   each run as alone up to its first outside action, whose entry it marks RUNNING; a database
   action that fails there rolls the batch back and its runs go alone (RedoAlone), as for a
   database-only batch. One guarded UPDATE per run, sent together, one commit: every call that
   follows is known as possibly made, as alone.
2. The calls, one after another in the worker's thread (`call_and_record`), each with its own
   deadline, retries, address guard and Idempotency-Key. The writers have left batch mode: a
   failed call is the action's FAILED, never RedoAlone. The runs' heartbeats are written again
   while the calls last (`_Heartbeat`), so a long batch is not taken for a dead worker's.
3. One transaction records the outcomes (`_record_together`): the runs are locked again (SELECT
   ... FOR UPDATE SKIP LOCKED by primary key); a run whose (status, seq) is no longer what this
   worker wrote was taken over (the sweeper revived it) and is left to its new owner, as alone;
   the others get their outcome, their finish or their next outside action's RUNNING entry, one
   guarded UPDATE each, sent together, one commit. Should that transaction fail, each run is
   put back as it was before it (`Plan.checkpoint`) and records its outcome alone: no outcome
   lost, none counted twice.

What is left of a run after that (database actions after its webhook, a second webhook)
continues alone (`continue_alone`). A worker that dies between 1 and 3 leaves the batch's
outside actions RUNNING, as one run's: the sweeper revives them and they are sent again with
the same Idempotency-Key (at least once).
"""

import logging
import time

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from automation.core.choices import RunStatus
from automation.core.models import AutomationLog
from automation.fanout import budget
from automation.runs import reads
from automation.runs.plan import Plan, log_context
from automation.runs.writer import LostClaim, RunWriter, fail_unexpectedly

logger = logging.getLogger("automation.runs.outside_batch")

# The batch's heartbeats are written again once the last write is older than this share of
# AUTOMATION_HEARTBEAT_STALE_SECONDS; it is checked before each call and each webhook attempt,
# at most one attempt apart (timeoutSeconds, at most 60 s, and a backoff of at most 10 s), as a
# run alone writes its own at each attempt.
HEARTBEAT_SHARE = 0.25


def call_and_record(plans: list[Plan]) -> None:
    """After the batch's claim committed (phase 1): the calls, their outcomes in one
    transaction, then whatever is left of each run, alone."""
    for plan in plans:
        plan.writer.together = False  # a call's failure is now the action's FAILED
    begun = [plan for plan in plans if plan.begun is not None]
    heartbeat = _Heartbeat(begun)
    called = []
    with budget.bytes_counted_together():  # the answers' bytes: one round trip, not one a call
        for plan in begun:
            heartbeat()
            if plan in heartbeat.lost:
                continue
            with log_context(plan.writer.log):
                try:
                    plan.call_begun(before_attempt=heartbeat)
                except LostClaim:
                    _taken_over(plan)
                    continue
            called.append(plan)
    rest = _record_together([plan for plan in called if plan not in heartbeat.lost])
    # A run whose outside action its `when` skipped, with more to do, is left too.
    rest += [plan for plan in plans if plan.begun is None and not plan.done]
    for plan in rest:
        continue_alone(plan)


def continue_alone(plan: Plan) -> None:
    """The rest of a run whose claim committed, alone (runs/plan.py, `run_the_rest`)."""
    with log_context(plan.writer.log):
        try:
            plan.run_the_rest()
        except LostClaim:
            _taken_over(plan)
        except Exception as exc:
            fail_unexpectedly(plan.writer, exc)


def _taken_over(plan: Plan) -> None:
    logger.warning("run %s was taken over by another worker; stopping here", plan.writer.log.pk)


def _record_together(called: list[Plan]) -> list[Plan]:
    """Phase 3: record the calls' outcomes in one transaction; returns the runs to continue
    alone (those with more to do, those whose lock another transaction held, or all of them
    when the transaction failed)."""
    if not called:
        return []
    saved = [plan.checkpoint() for plan in called]
    recorded, unsure = [], []
    try:
        with transaction.atomic():
            locked = reads.lock_states([plan.writer.log.pk for plan in called])
            for plan in called:
                writer = plan.writer
                state = locked.get(writer.log.pk)
                if state is None:  # locked by someone else for now: its guarded write will tell
                    unsure.append(plan)
                    continue
                if state != (RunStatus.RUNNING, writer.stored_seq):
                    _taken_over(plan)
                    continue
                with log_context(writer.log):
                    plan.record_call()
                writer.publish_pending()  # each run's events together, as alone
                recorded.append(plan)
            RunWriter.flush_many([plan.writer for plan in recorded])
    except Exception:
        logger.exception("recording a batch of %s calls failed; recording them alone", len(called))
        for plan, checkpoint in zip(called, saved, strict=True):
            plan.restore(checkpoint)
        return called
    return [plan for plan in recorded if not plan.done] + unsure


class _Heartbeat:
    """Keeps a batch's claims alive while its calls go out: the runs' heartbeats, written in
    the claim's transaction, are written again (one UPDATE of the runs still this worker's)
    when the last write is older than HEARTBEAT_SHARE of the staleness limit, so the sweeper
    does not revive a run whose call is yet to come. A run found taken over meanwhile is not
    called (`lost`)."""

    def __init__(self, plans: list[Plan]):
        self.plans = plans
        self.lost: set[Plan] = set()
        self.written = time.monotonic()

    def __call__(self, _attempt: int | None = None) -> None:
        limit = settings.AUTOMATION_HEARTBEAT_STALE_SECONDS * HEARTBEAT_SHARE
        if time.monotonic() - self.written < limit:
            return
        self.written = time.monotonic()
        try:
            self._write()
        except Exception:  # the calls go on: a run revived meanwhile is left in phase 3
            logger.warning("writing a batch's heartbeats failed", exc_info=True)

    def _write(self) -> None:
        plans = {plan.writer.log.pk: plan for plan in self.plans if plan not in self.lost}
        with transaction.atomic():
            # Waiting for a lock another transaction holds (it is brief): SKIP LOCKED would
            # leave that run's heartbeat unwritten, for the sweeper to find stale.
            locked = (
                AutomationLog.objects.select_for_update()
                .filter(pk__in=list(plans))
                .order_by("pk")
                .values_list("pk", "status", "seq")
            )
            kept = []
            for pk, status, seq in locked:
                plan = plans[pk]
                if (status, seq) == (RunStatus.RUNNING, plan.writer.stored_seq):
                    kept.append(pk)
                else:
                    self.lost.add(plan)
                    _taken_over(plan)
            AutomationLog.objects.filter(pk__in=kept).update(heartbeat_at=timezone.now())
