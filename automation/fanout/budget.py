"""Fan-out budgets: how many runs and record writes one event, and one organization, may cause.

The chain-depth limit only caps how deep rules trigger rules; a self-triggering rule with three
CREATE_RECORD actions still turned one write into more than a thousand records within its depth
(and with 50 actions the depth allows 50^6). So runs and the writes of record actions are also
counted, and what goes over a budget is recorded, never dropped silently:

- per root: a run tree (its root run and every run its actions' writes cause, transitively)
  creates at most AUTOMATION_MAX_RUNS_PER_ROOT runs, the root included, and its record actions
  write at most AUTOMATION_MAX_WRITES_PER_ROOT records;
- per organization, in fixed one-minute windows (UTC): at most AUTOMATION_MAX_RUNS_PER_MINUTE
  runs of any trigger and AUTOMATION_MAX_WRITES_PER_MINUTE record writes by actions.

A run over a budget is still created, FAILED with the reason (runs.create.create_run), like a chain cut
by depth; a write over a budget fails its action with the reason, and nothing is written.

The root of a tree is the run at its rootLog, or the run itself when it has none: a run caused
by a write outside any run, a manual run. A retry keeps its original's rootLog and depth, so it
counts against the tree it retries (retrying cannot reset a budget). A schedule slot (or a
runSchedule call) fans out to at most AUTOMATION_SCHEDULE_MAX_RECORDS (1,000) record runs under
one finished slot log, their rootLog: the slot is one tree, its record runs and every run they
cause counted together, against budgets of its own (AUTOMATION_MAX_RUNS_PER_SLOT,
AUTOMATION_MAX_WRITES_PER_SLOT), larger than a single write's since a slot starts many runs at
once, yet bounded: a `* * * * *` schedule over many records cannot multiply the per-root budget
by its records. The slot opens its tree with those budgets (`open_tree`), which live with the
counters.
"""

import contextlib
import contextvars
import datetime
import json
import logging
import time
from dataclasses import dataclass

from django.conf import settings

from automation.core.stores import StorePerUrl
from automation.fanout.counters import KEY_PREFIX, WINDOW_SECONDS, MemoryCounters, RedisCounters
from observability import metrics

logger = logging.getLogger("automation.fanout.budget")

ROOT_TTL_SECONDS = 3600
QUOTA_KEY_PREFIX = f"{KEY_PREFIX}stored:"


def root_of(log) -> int:
    """The run whose tree `log` counts against (see the module's docstring)."""
    return log.root_log_id or log.pk


@dataclass(frozen=True)
class _Kind:
    """What is counted, and the words and settings of its budgets."""

    key: str
    title: str
    what: str
    outcome: str
    per_root: str
    per_slot: str
    per_minute: str


RUNS = _Kind(
    "runs",
    "Run",
    "runs",
    "not run",
    "AUTOMATION_MAX_RUNS_PER_ROOT",
    "AUTOMATION_MAX_RUNS_PER_SLOT",
    "AUTOMATION_MAX_RUNS_PER_MINUTE",
)
WRITES = _Kind(
    "writes",
    "Write",
    "record writes",
    "nothing written",
    "AUTOMATION_MAX_WRITES_PER_ROOT",
    "AUTOMATION_MAX_WRITES_PER_SLOT",
    "AUTOMATION_MAX_WRITES_PER_MINUTE",
)


def admit_run(organization_id: int, root_id: int | None = None) -> str:
    """Count a new run; "" when it may run, else the reason it may not.

    `root_id` is the tree a run causes it in; None for a run that starts a tree. The root is a
    run of its tree too, but it is not counted there (its id does not exist yet): one more.
    """
    return _admit(RUNS, organization_id, root_id, uncounted=1)


def admit_write(organization_id: int, root_id: int | None) -> str:
    """Count a record write by an action; "" when it may happen, else the reason it may not."""
    return _admit(WRITES, organization_id, root_id)


def open_tree(root_id: int) -> None:
    """Give the tree of a schedule slot's log `root_id` the slot budgets (see the module's
    docstring); without this, a tree has the per-root ones."""
    _set_limits(
        [
            (_limit_key(root_id, RUNS), settings.AUTOMATION_MAX_RUNS_PER_SLOT),
            (_limit_key(root_id, WRITES), settings.AUTOMATION_MAX_WRITES_PER_SLOT),
        ]
    )


def _limit_key(root_id: int, kind: _Kind) -> str:
    return f"{KEY_PREFIX}root:{root_id}:{kind.key}:limit"


# --- Bytes stored ---------------------------------------------------------------------------------
#
# One 60 KB field value grew the database by megabytes: each run keeps the record's snapshot and
# changes, record actions write it again and keep it in their result, notifications copy it. So
# the bytes runs store are counted too, as JSON text, against AUTOMATION_MAX_BYTES_PER_ROOT (the
# tree) and AUTOMATION_MAX_BYTES_PER_MINUTE (the organization), in the same store and the same
# round trip as a storage quota: AUTOMATION_STORAGE_QUOTA_BYTES, the organization's run logs and
# notifications in all. The quota's counter starts from a measure of what is stored (one SUM
# over the organization's rows, made when the counter is missing: at most once an hour per
# organization, QUOTA_TTL_SECONDS, and after retention deleted logs), and grows with every
# count; it is approximate (it also counts records written, and counts attempts).

RUN_BYTES = _Kind(
    "bytes",
    "Byte",
    "bytes",
    "not run, its snapshot not stored",
    "AUTOMATION_MAX_BYTES_PER_ROOT",
    "AUTOMATION_MAX_BYTES_PER_ROOT",  # a slot's tree too
    "AUTOMATION_MAX_BYTES_PER_MINUTE",
)
ACTION_BYTES = _Kind(
    "bytes",
    "Byte",
    "bytes",
    "nothing written",
    "AUTOMATION_MAX_BYTES_PER_ROOT",
    "AUTOMATION_MAX_BYTES_PER_ROOT",  # a slot's tree too
    "AUTOMATION_MAX_BYTES_PER_MINUTE",
)
QUOTA_TTL_SECONDS = 3600
QUOTA_SETTING = "AUTOMATION_STORAGE_QUOTA_BYTES"


def stored_size(*values) -> int:
    """Bytes of `values` as the JSON text a log keeps (what the byte budgets count)."""
    return sum(
        len(json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str).encode())
        for value in values
        if value is not None
    )


def admit_bytes(
    organization_id: int, root_id: int | None, size: int, *, kind: _Kind = ACTION_BYTES
) -> str:
    """Count `size` bytes about to be stored; "" when they may be, else the reason not.

    `kind` words the refusal: RUN_BYTES for a run's log (the run is not run), ACTION_BYTES for
    what an action writes (nothing is). A store that does not answer counts nothing.
    """
    stored = _Bytes(kind, organization_id, root_id, size)
    try:
        answer = _store().add_amount(*stored.args)
    except Exception as exc:
        logger.warning("byte budget not counted: the counter store failed (%s)", exc)
        return ""
    return stored.refusal(answer)


def count_bytes(organization_id: int, root_id: int | None, size: int) -> None:
    """Count `size` bytes already spent (a webhook's answer: the call was made), refusing
    nothing: what is stored next is refused once a budget is spent. Inside
    `bytes_counted_together`, counted at its end with the others."""
    pending = _counted_later.get()
    if pending is None:
        admit_bytes(organization_id, root_id, size)
    else:
        pending.append(_Bytes(ACTION_BYTES, organization_id, root_id, size))


_counted_later: contextvars.ContextVar[list | None] = contextvars.ContextVar(
    "automation_bytes_counted_later", default=None
)


@contextlib.contextmanager
def bytes_counted_together():
    """`count_bytes` inside is counted when the block ends, every count in one round trip (a
    batch of webhook calls, runs/outside_batch.py: a count each was a round trip per call)."""
    pending: list[_Bytes] = []
    token = _counted_later.set(pending)
    try:
        yield
    finally:
        _counted_later.reset(token)
        if pending:
            try:
                answers = _store().add_amounts([stored.args for stored in pending])
            except Exception as exc:
                logger.warning("byte budget not counted: the counter store failed (%s)", exc)
            else:
                for stored, answer in zip(pending, answers, strict=True):
                    stored.refusal(answer)  # measures a quota never measured, as alone


def admit_run_with_bytes(organization_id: int, root_id: int | None, size: int) -> tuple[str, str]:
    """admit_run and admit_bytes (RUN_BYTES) of a new run, counted in one round trip:
    (the run's refusal, the bytes' refusal), each "" when admitted."""
    run = _Counts(RUNS, organization_id, root_id)
    stored = _Bytes(RUN_BYTES, organization_id, root_id, size)
    try:
        counted, answer = _store().add_with_amount(run.args, stored.args)
    except Exception as exc:
        _not_counted(exc)
        return "", ""
    return run.refusal(counted, uncounted=1), stored.refusal(answer)


def admit_write_with_bytes(organization_id: int, root_id: int | None, size: int) -> str:
    """admit_write, then admit_bytes of what the write stores, counted in one round trip: the
    write's refusal, else the bytes' refusal, else "". A refused write stores nothing, so its
    bytes are taken back (a second round trip, on a refusal only): the counters end as if they
    had been counted one after the other."""
    write = _Counts(WRITES, organization_id, root_id)
    stored = _Bytes(ACTION_BYTES, organization_id, root_id, size)
    try:
        counted, answer = _store().add_with_amount(write.args, stored.args)
    except Exception as exc:
        _not_counted(exc)
        return ""
    refusal = write.refusal(counted)
    if refusal:
        try:
            _store().add_amount(stored.args[0], -size, stored.args[2])
        except Exception as exc:
            logger.warning("byte budget not taken back: the counter store failed (%s)", exc)
        return refusal
    return stored.refusal(answer)


def _not_counted(exc: Exception) -> None:
    logger.warning("fan-out budget not counted: the counter store failed (%s)", exc)
    logger.warning("byte budget not counted: the counter store failed (%s)", exc)


class _Counts:
    """One `kind` counted against the organization's minute and the tree (see _admit)."""

    def __init__(self, kind: _Kind, organization_id: int, root_id: int | None):
        self.kind, self.root_id = kind, root_id
        self.window = int(time.time()) // WINDOW_SECONDS
        # Kept a window past its end, so a clock a little behind another still finds it.
        counters = [
            (f"{KEY_PREFIX}org:{organization_id}:{self.window}:{kind.key}", 2 * WINDOW_SECONDS)
        ]
        if root_id is not None:
            counters.append((f"{KEY_PREFIX}root:{root_id}:{kind.key}", ROOT_TTL_SECONDS))
        limit_key = _limit_key(root_id, kind) if root_id is not None else None
        self.args = (counters, limit_key)

    def refusal(self, counted, *, uncounted: int = 0) -> str:
        counts, opened = counted
        return _refusal(
            self.kind, counts, self.root_id, self.window, uncounted=uncounted, opened=opened
        )


class _Bytes:
    """`size` bytes counted against the byte budgets and the storage quota (see admit_bytes)."""

    def __init__(self, kind: _Kind, organization_id: int, root_id: int | None, size: int):
        self.kind, self.organization_id, self.root_id, self.size = (
            kind,
            organization_id,
            root_id,
            size,
        )
        self.window = int(time.time()) // WINDOW_SECONDS
        counters = [
            (f"{KEY_PREFIX}org:{organization_id}:{self.window}:{kind.key}", 2 * WINDOW_SECONDS)
        ]
        if root_id is not None:
            counters.append((f"{KEY_PREFIX}root:{root_id}:{kind.key}", ROOT_TTL_SECONDS))
        self.quota = settings.AUTOMATION_STORAGE_QUOTA_BYTES
        quota_key = f"{QUOTA_KEY_PREFIX}{organization_id}" if self.quota > 0 else None
        self.args = (counters, size, quota_key)

    def refusal(self, answer) -> str:
        counts, stored = answer
        quota_key = self.args[2]
        if quota_key is not None and stored is None:  # not measured yet: measure it now
            try:
                stored = measure_stored(self.organization_id) + self.size
                _store().set(quota_key, stored, QUOTA_TTL_SECONDS)
            except Exception as exc:
                logger.warning("byte budget not counted: the counter store failed (%s)", exc)
                return ""
        refusal = _refusal(self.kind, counts, self.root_id, self.window)
        if refusal:
            return refusal
        if quota_key is not None and stored > self.quota:
            metrics.refused(QUOTA_SETTING)
            return (
                f"Storage quota of the organization reached (about {stored} of {self.quota} "
                f"bytes of run logs and notifications, {QUOTA_SETTING}); {self.kind.outcome}. "
                "Retention frees room as old logs are deleted."
            )
        return ""


# --- E-mails sent ---------------------------------------------------------------------------------
#
# E-mail leaves the server for good, and every SEND_EMAIL or e-mailing SEND_NOTIFICATION action
# of a bulk edit sends its own: an organization sends at most AUTOMATION_MAX_EMAILS_PER_MINUTE
# e-mails (one per recipient) in a clock minute, whatever run tree they come from.

EMAILS = _Kind(
    "emails",
    "E-mail",
    "e-mails",
    "nothing sent",
    "AUTOMATION_MAX_EMAILS_PER_MINUTE",
    "AUTOMATION_MAX_EMAILS_PER_MINUTE",
    "AUTOMATION_MAX_EMAILS_PER_MINUTE",
)


def admit_emails(organization_id: int, count: int) -> str:
    """Count `count` e-mails an action is about to send; "" when they may go, else the reason
    not (all or none: the action sends nothing then). A store that does not answer counts
    nothing, as for the other budgets."""
    window = int(time.time()) // WINDOW_SECONDS
    counters = [(f"{KEY_PREFIX}org:{organization_id}:{window}:{EMAILS.key}", 2 * WINDOW_SECONDS)]
    try:
        counts, _quota = _store().add_amount(counters, count, None)
    except Exception as exc:
        logger.warning("e-mail budget not counted: the counter store failed (%s)", exc)
        return ""
    return _refusal(EMAILS, counts, None, window)


def measure_stored(organization_id: int) -> int:
    """What the organization's run logs and notifications hold, as text (one SUM each)."""
    from django.db.models import Sum, TextField, Value
    from django.db.models.functions import Cast, Coalesce, Length

    from accounts.models import Notification
    from automation.core.models import AutomationLog

    def length(name):
        return Coalesce(Length(Cast(name, TextField())), Value(0))

    logs = AutomationLog.objects.filter(organization_id=organization_id).aggregate(
        total=Sum(
            length("context")
            + length("changes")
            + length("action_logs")
            + length("condition_trace")
            + length("error")
        )
    )["total"]
    notifications = Notification.objects.filter(organization_id=organization_id).aggregate(
        total=Sum(length("title") + length("body"))
    )["total"]
    return (logs or 0) + (notifications or 0)


def forget_stored() -> None:
    """Drop every organization's quota counter, to be measured again on its next count (after
    retention deleted logs: the counter only ever grows)."""
    try:
        _store().clear(QUOTA_KEY_PREFIX)
    except Exception as exc:
        logger.warning("storage quota counters not reset: the counter store failed (%s)", exc)


def _admit(kind: _Kind, organization_id: int, root_id: int | None, uncounted: int = 0) -> str:
    """Count one `kind` against the organization's minute and the tree; the refusal or ""."""
    count = _Counts(kind, organization_id, root_id)
    found = _count(*count.args)
    if found is None:
        return ""
    return count.refusal(found, uncounted=uncounted)


def _refusal(kind: _Kind, counts, root_id, window: int, *, uncounted=0, opened=None) -> str:
    """The refusal for `counts` ([the organization's minute, the tree's]) or "": the tree's
    budget (a slot's when `opened`), then the organization's minute."""
    if root_id is not None:
        slot = opened is not None
        limit = opened if slot else getattr(settings, kind.per_root)
        setting = kind.per_slot if slot else kind.per_root
        if counts[1] + uncounted > limit:
            metrics.refused(setting)
            tree = "schedule slot" if slot else "root run"
            return (
                f"{kind.title} budget of the {tree} {root_id} reached ({limit} {kind.what}, "
                f"{setting}); {kind.outcome}."
            )
    limit = getattr(settings, kind.per_minute)
    if counts[0] > limit:
        metrics.refused(kind.per_minute)
        start = datetime.datetime.fromtimestamp(window * WINDOW_SECONDS, datetime.UTC)
        end = start + datetime.timedelta(seconds=WINDOW_SECONDS)
        return (
            f"{kind.title} budget of the organization reached ({limit} {kind.what} in the minute "
            f"from {start:%H:%M} UTC, {kind.per_minute}); {kind.outcome}. "
            f"It resets at {end:%H:%M:%S} UTC."
        )
    return ""


def _count(counters: list[tuple[str, int]], limit_key: str | None = None):
    """Add one to each (key, ttl) counter and read `limit_key`: (the new counts, the limit or
    None), or None when the store is down."""
    try:
        return _store().add(counters, limit_key)
    except Exception as exc:
        # Never block a write for want of a counter: this count is lost, the write goes on.
        logger.warning("fan-out budget not counted: the counter store failed (%s)", exc)
        return None


def _set_limits(limits: list[tuple[str, int]]) -> None:
    try:
        _store().set_limits(limits, ROOT_TTL_SECONDS)
    except Exception as exc:
        logger.warning("fan-out budget not opened: the counter store failed (%s)", exc)


def clear() -> None:
    """Forget every counter (tests; an operator lifting a budget cut before it expires)."""
    _store().clear()


# --- Where the counters live: automation/fanout/counters.py -------------------------------------

_store = StorePerUrl(RedisCounters, MemoryCounters)
