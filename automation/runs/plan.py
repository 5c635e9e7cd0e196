"""Executing a run's actions in order: database actions in the open transaction, an action
with outside effects (a webhook) committed RUNNING before it goes out, then the finish."""

import copy
import datetime
import logging
import time

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.current import acting_as
from automation.core.choices import ActionStatus, RunStatus
from automation.core.context import RunContext
from automation.core.snapshots import without_nul
from automation.fanout import budget
from automation.fanout.chain import Chain, running
from automation.runs import waits
from automation.runs.when import evaluate_when
from automation.runs.writer import (
    FINISHED_ACTION_STATUSES,
    LostClaim,
    RunWriter,
    finish,
    internal_error,
    set_entry,
)
from observability import logs

logger = logging.getLogger("automation.runs.plan")


class RedoAlone(Exception):
    """An action of a run executed in a batch failed: the batch rolls back, and its runs are
    executed one by one (see "Executing runs in batches")."""


class Plan:
    """The run's unfinished actions, executed in order, then the finish.

    Database actions run in whatever transaction is open (the claim's, or the one recording the
    outside action before them); an action with outside effects ends it first (see "Executing a
    run" above).
    """

    def __init__(self, writer: RunWriter, ctx: RunContext, actions: list):
        from automation.actions.handlers import get_handler

        self.writer, self.ctx, self.actions = writer, ctx, actions
        self.failures, self.stopped, self.done = 0, False, False
        self.deadline: float | None = None  # a dry run's: actions after it are not rendered
        # The outside action marked RUNNING in the open transaction, to call once it commits.
        self.begun: int | None = None
        # Its call's outcome, made and not recorded yet (call_begun): (outcome, the call's start
        # and end on the monotonic clock, its end as an ISO time).
        self.called: tuple[tuple, float, float, str] | None = None
        self.todo: list[int] = []
        log = writer.log
        for index, action in enumerate(actions):
            entry = log.action_logs[index]
            if entry["status"] in FINISHED_ACTION_STATUSES:  # a resumed run: already done
                ctx.results[index] = entry.get("result")
                if entry["status"] == ActionStatus.FAILED:
                    self.failures += 1
                    self.stopped = self.stopped or not action.continue_on_failure
            else:
                self.todo.append(index)
        self.todo.reverse()  # popped from the end, in order
        self.handlers = {index: get_handler(actions[index].action_type) for index in self.todo}

    def _reaches_outside(self, index: int) -> bool:
        if self.writer.log.dry_run:
            return False
        return self.handlers[index].reaches_outside(self.actions[index].parameters)

    def run_database_actions(self) -> None:
        """Run actions while they are database actions; finish the run if none are left, or
        leave it WAITING at a WAIT action (runs/waits.py)."""
        while self.todo and not self.stopped and not self._reaches_outside(self.todo[-1]):
            index = self.todo.pop()
            if self._resume_wait(index):
                continue  # a WAIT whose time came: the run goes on after it
            started = self._start(index)
            if started is None:
                continue  # its `when` skipped it, or could not be evaluated
            if self._past_deadline():
                outcome = (ActionStatus.FAILED, None, _dry_run_budget_error())
            else:
                outcome = _call(
                    self.writer, self.ctx, self.actions[index], index, self.handlers[index]
                )
            if self._pause(index, outcome):
                return
            self._record(index, started, outcome)
        self._finish_if_over()

    def _pause(self, index: int, outcome: tuple) -> bool:
        """A WAIT action worked out when it ends: still ahead, the run waits there (its entry
        WAITING with the due time, the run WAITING; nothing after it runs now). True then."""
        status, result, _error = outcome
        if status != ActionStatus.SUCCEEDED or self.writer.log.dry_run:
            return False
        if not getattr(self.handlers[index], "pauses_run", False):
            return False
        due = datetime.datetime.fromisoformat(result["until"])
        if due <= timezone.now():
            result["waited"] = False  # its time had come: go on at once
            return False
        entry = self.writer.log.action_logs[index]
        set_entry(self.writer, entry, status=ActionStatus.WAITING, result=result)
        waits.pause(self.writer, due)
        self.done = True
        return True

    def _resume_wait(self, index: int) -> bool:
        """The WAIT the run was woken for: it ends SUCCEEDED (waited) and the run goes on."""
        entry = self.writer.log.action_logs[index]
        if entry["status"] != ActionStatus.WAITING:
            return False
        now = timezone.now()
        started = entry.get("started_at")
        waited_ms = None
        if started:
            waited_ms = (now - datetime.datetime.fromisoformat(started)).total_seconds() * 1000
        result = {**(entry.get("result") or {}), "waited": True}
        set_entry(
            self.writer,
            entry,
            status=ActionStatus.SUCCEEDED,
            result=result,
            finished_at=now.isoformat(),
            duration_ms=None if waited_ms is None else round(waited_ms, 3),
        )
        self.ctx.results[index] = result
        return True

    def _finish_if_over(self) -> None:
        """Once a failure stopped the run or nothing is left: skip the rest and finish."""
        if self.stopped or not self.todo:
            _conclude(self.writer, self.failures, self.stopped)
            self.done = True

    def begin_outside_action(self) -> None:
        """In the open transaction, when the next action reaches outside (a webhook): mark it
        RUNNING, so it commits with what came before it (the claim, the database actions before
        it, or the previous outside action's result) and the call goes out after that one
        commit, not after a commit of its own. A crash after the commit shows the call as
        possibly made, as it always has."""
        if self.done or self.begun is not None or not self._reaches_outside(self.todo[-1]):
            return
        index = self.todo.pop()
        started = self._start(index)
        if started is None:  # its `when` decided
            self._finish_if_over()
        else:
            self.begun = index

    def run_the_rest(self) -> None:
        """After the claim's transaction: each outside action, then the database actions after it.

        An outside action's result commits on its own (with the finish when it is the last, or
        the next outside action's start), so a crash in a later database action does not make it
        run again.
        """
        while not self.done:
            if self.begun is None and self._reaches_outside(self.todo[-1]):
                with self.writer.step():  # RUNNING is committed before the call goes out
                    self.begin_outside_action()
            if self.begun is not None:
                if self.called is None:
                    self.call_begun()
                with self.writer.step():
                    self.record_call()
            if not self.done and self.begun is None and not self._reaches_outside(self.todo[-1]):
                with self.writer.step():
                    self.run_database_actions()
                    self.begin_outside_action()

    def call_begun(self, before_attempt=None) -> None:
        """The begun outside action's call, in no transaction (its RUNNING entry committed):
        its outcome is kept for record_call. `before_attempt(attempt)` is called before each
        attempt (a batch keeps its runs' heartbeats with it: runs/outside_batch.py)."""
        index = self.begun
        handler = self.handlers[index]
        started = time.monotonic()
        outcome = _call(self.writer, self.ctx, self.actions[index], index, handler, before_attempt)
        self.called = (outcome, started, time.monotonic(), timezone.now().isoformat())

    def record_call(self) -> None:
        """In the open transaction: the call's outcome, then the finish when nothing is left,
        or the next outside action's RUNNING entry."""
        index, self.begun = self.begun, None
        (outcome, started, ended, finished_at), self.called = self.called, None
        self._record(index, started, outcome, ended=(ended, finished_at))
        self._finish_if_over()
        self.begin_outside_action()

    def checkpoint(self) -> tuple:
        """What recording a call changes in the plan, its log and its writer (see restore)."""
        log, writer = self.writer.log, self.writer
        return (
            copy.deepcopy(log.action_logs),
            (log.status, log.finished_at, log.error, log.heartbeat_at),
            writer.stored_seq,
            (self.failures, self.stopped, self.done, list(self.todo), self.begun, self.called),
            (dict(self.ctx.results), self.ctx.action_order),
        )

    def restore(self, saved: tuple) -> None:
        """Back to `saved` (checkpoint), once the transaction that changed them rolled back."""
        log, writer = self.writer.log, self.writer
        action_logs, run, writer.stored_seq, plan, ctx = saved
        log.action_logs = copy.deepcopy(action_logs)
        log.status, log.finished_at, log.error, log.heartbeat_at = run
        self.failures, self.stopped, self.done, todo, self.begun, self.called = plan
        self.todo = list(todo)
        results, self.ctx.action_order = ctx
        self.ctx.results.clear()
        self.ctx.results.update(results)
        writer.rollback()  # the seq back to the stored one, nothing pending

    def _past_deadline(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def _start(self, index: int) -> float | None:
        """Evaluate the action's `when` (runs/when.py), then mark it RUNNING: its start on the
        monotonic clock. None when its `when` ended it (SKIPPED, or FAILED to evaluate)."""
        verdict = None
        if not self._past_deadline():  # past a dry run's deadline the action fails unrendered
            budget = None if self.deadline is None else self.deadline - time.monotonic()
            verdict = evaluate_when(
                self.writer.log.rule, self.ctx, self.actions[index], index, budget
            )
        if verdict is None:
            return _begin(self.writer, self.ctx, index)
        entry = self.writer.log.action_logs[index]
        entry.update(verdict.fields)
        if verdict.status is None:
            return _begin(self.writer, self.ctx, index)
        if verdict.status == ActionStatus.FAILED:
            self._record(index, time.monotonic(), (verdict.status, None, verdict.error))
        else:
            now = timezone.now().isoformat()
            set_entry(
                self.writer,
                entry,
                status=verdict.status,
                error=verdict.error,
                started_at=now,
                finished_at=now,
            )
        return None

    def _record(self, index: int, started: float, outcome: tuple, ended=None) -> None:
        """The action's outcome; `ended`: when it ended (monotonic, ISO time), if not now."""
        status, result, error = outcome
        result, error = without_nul(result), without_nul(error)  # outside text, for PostgreSQL
        ended_at, finished_at = ended or (time.monotonic(), timezone.now().isoformat())
        set_entry(
            self.writer,
            self.writer.log.action_logs[index],
            status=status,
            result=result,
            error=error,
            finished_at=finished_at,
            duration_ms=round((ended_at - started) * 1000, 3),
        )
        if status == ActionStatus.SUCCEEDED:
            self.ctx.results[index] = result
        else:
            self.failures += 1
            self.stopped = not self.actions[index].continue_on_failure


def log_context(log):
    """Log records written while the run executes carry its ids (observability/logs.py)."""
    return logs.context(
        run_id=log.pk,
        rule_id=log.rule_id,
        organization_id=log.organization_id,
        correlation_id=log.run_key(),
    )


def _dry_run_budget_error() -> str:
    return (
        "Not rendered: the dry run's time budget of "
        f"{settings.AUTOMATION_DRY_RUN_BUDGET_SECONDS:g} s (AUTOMATION_DRY_RUN_BUDGET_SECONDS) "
        "was spent."
    )


def _begin(writer: RunWriter, ctx: RunContext, index: int) -> float:
    """Mark an action RUNNING (a new attempt); returns its start on the monotonic clock."""
    entry = writer.log.action_logs[index]
    entry.update(status=ActionStatus.RUNNING, started_at=timezone.now().isoformat(), error=None)
    if not writer.log.dry_run:
        entry["attempt"] = entry.get("attempt", 0) + 1
    set_entry(writer, entry)
    ctx.action_order = index
    return time.monotonic()


def _call(
    writer: RunWriter, ctx: RunContext, action, index: int, handler, before_attempt=None
) -> tuple:
    """Execute (or dry-run) one action: (status, result, error).

    A database action runs in a savepoint, so a failure leaves none of its writes behind; in a
    batch it takes none (two round trips per run on PostgreSQL) and a failure raises RedoAlone
    instead: the whole batch rolls back, and each run is executed again alone.
    """
    from automation.actions.base import ActionError

    log = writer.log
    entry = log.action_logs[index]

    def on_attempt(attempt: int) -> None:
        if before_attempt is not None:
            before_attempt(attempt)
        if attempt != entry["attempt"]:
            with writer.step():
                set_entry(writer, entry, attempt=attempt)

    try:
        if log.dry_run:
            return ActionStatus.SUCCEEDED, handler.dry_run(action.parameters, ctx), None
        chain = Chain(
            log_id=log.pk,
            root_log_id=budget.root_of(log),
            depth=log.depth,
            rule_id=log.rule_id,
            rule_names=(*(log.context or {}).get("chain", ()), log.rule.name),
            user_id=log.triggered_by_id,
        )
        with running(chain), acting_as(log.triggered_by):
            if not handler.reaches_outside(action.parameters):
                with transaction.atomic(savepoint=not writer.together):
                    return ActionStatus.SUCCEEDED, handler.execute(action.parameters, ctx), None
            result = handler.execute(action.parameters, ctx, on_attempt=on_attempt)
            return ActionStatus.SUCCEEDED, result, None
    except LostClaim:
        raise
    except Exception as exc:
        if writer.together:
            raise RedoAlone(f"action {index} of run {log.pk}: {type(exc).__name__}") from exc
        if isinstance(exc, ActionError):
            return ActionStatus.FAILED, exc.result, str(exc)
        return (
            ActionStatus.FAILED,
            None,
            internal_error(f"action {index} of run {log.pk} failed unexpectedly", exc),
        )


def _conclude(writer: RunWriter, failures: int, stopped: bool) -> None:
    """Skip what a failure stopped, then finish with the run's overall status (a FAILED or
    PARTIAL run's error names its failed actions)."""
    if stopped:
        for entry in writer.log.action_logs:
            if entry["status"] not in FINISHED_ACTION_STATUSES:
                set_entry(
                    writer, entry, status=ActionStatus.SKIPPED, error="An earlier action failed."
                )
        status = RunStatus.FAILED
    elif failures:
        status = RunStatus.PARTIAL
    else:
        status = RunStatus.SUCCEEDED
    finish(writer, status, error=_failed_actions(writer.log.action_logs))


# An action's error in the run's error (the action log keeps it whole).

RUN_ERROR_MAX_ACTION_ERROR = 500


def _failed_actions(action_logs: list[dict]) -> str:
    """One 'Action 2 of 3 (actions.1, CALL_WEBHOOK) failed: HTTP 502' per failed action; ""
    when none failed. Counted from 1 as conditions are ("Condition 2 of 3 (conditions...)"),
    with the 0-based input path beside."""
    failed = []
    total = len(action_logs)
    for entry in action_logs:
        if entry["status"] != ActionStatus.FAILED:
            continue
        reason = entry.get("error") or "no reason recorded"
        if len(reason) > RUN_ERROR_MAX_ACTION_ERROR:
            reason = f"{reason[:RUN_ERROR_MAX_ACTION_ERROR]}... ({len(reason)} characters)"
        order = entry["order"]
        failed.append(
            f"Action {order + 1} of {total} (actions.{order}, {entry['action_type']}) failed: "
            f"{reason}"
        )
    return "; ".join(failed)
