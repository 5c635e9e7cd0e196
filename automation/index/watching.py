"""Which active rules watch a model event: an in-process index, so most saves cost no SQL.

Every save of an automatable model asks "which active EVENT rules watch (model, event) in this
organization?". Answering with a query would tax every write in the system, so each process keeps
the answer in memory, keyed by (model label, event) then organization, and rebuilds it (one query)
only when the rules changed.

"The rules changed" is a version token (automation/index/version.py: a file embedded, a Redis key
whose changes Redis pushes to each process distributed), so a rule created through one process is
seen on the next save handled by any other process or worker, a separate `run_huey` of the
embedded mode included. A change to a rule, its conditions or its actions bumps the token when its
transaction commits (`rules_changed`, called by the receivers in signals.py). Reading the token
costs no SQL and, most of the time, no round trip. While Redis does not answer, each lookup reads
the rules from the database instead, so writes go on during the outage.

Inside the transaction that changes rules, other processes must not see the change yet, but that
transaction itself should (a rule created and a record saved in the same transaction, as tests and
scripts do). So that transaction gets a private index built from what it can see; it is dropped
as soon as the transaction ends, whether it committed or rolled back, so a rolled-back rule never
lingers in the shared index.

Code that changes rules with `QuerySet.update()` (no signals) must call `rules_changed()` itself;
the scheduler's updates of next_run_at / last_run_at need not, since the index does not hold them.
"""

import logging
import threading
from dataclasses import dataclass

from django.db import DEFAULT_DB_ALIAS, connections, transaction

from automation.core.choices import TriggerEvent, TriggerType
from automation.core.models import AutomationRule
from automation.core.registry import automatable_for
from automation.core.snapshots import snapshot
from automation.index import version as rule_version
from automation.index.version import bump_version, current_version

logger = logging.getLogger("automation.index.watching")


@dataclass(frozen=True)
class IndexedRule:
    """What emit_event needs of a rule, kept in memory."""

    pk: int
    name: str
    organization_id: int
    revision: int
    watched_fields: tuple[str, ...]
    allow_self_trigger: bool
    content_type_id: int
    trigger_event: str

    def as_rule(self) -> AutomationRule:
        """A fresh, unshared AutomationRule with these values (enough for a log's foreign key)."""
        rule = AutomationRule(
            pk=self.pk,
            name=self.name,
            organization_id=self.organization_id,
            revision=self.revision,
            watched_fields=list(self.watched_fields),
            allow_self_trigger=self.allow_self_trigger,
            content_type_id=self.content_type_id,
            trigger_type=TriggerType.EVENT,
            trigger_event=self.trigger_event,
            is_active=True,
        )
        rule._state.adding = False
        rule._state.db = DEFAULT_DB_ALIAS
        return rule


# {(model label, event): {organization id: [IndexedRule, ...]}}
Index = dict[tuple[str, str], dict[int, list[IndexedRule]]]


class _Shared:
    """The process-wide index and the version it was built for."""

    def __init__(self):
        self.version: str | bytes | None = None
        self.index: Index = {}
        self.lock = threading.Lock()


class _Private(threading.local):
    """Per thread, like Django's database connections (the ORM always runs on a sync thread):
    the private index of a transaction that changed rules, and the markers (its on-commit
    callbacks) that tell whether that transaction is still open. A plain threading.local: read on
    every save, it costs a tenth of asgiref's Local."""

    def __init__(self):
        self.markers: list = []
        self.index: Index | None = None
        self.commit: dict | None = None


_shared = _Shared()
_private = _Private()


# --- Lookups ------------------------------------------------------------------------------------


def rules_watching(model_label: str, event: str, organization_id: int) -> list[AutomationRule]:
    """Active, live EVENT rules of `organization_id` watching `event` on `model_label`, by id."""
    found = _current_index().get((model_label, event), {}).get(organization_id)
    if not found:
        return []
    return [entry.as_rule() for entry in found]


def is_watched(model_label: str, event: str, organization_id: int) -> bool:
    """True when some active rule of the organization watches this event (no objects built)."""
    watching = _current_index().get((model_label, event))
    return watching is not None and organization_id in watching  # only non-empty lists


def watched_anywhere(model_label: str, event: str) -> bool:
    """True when some active rule of any organization watches this event: a model owned through
    a relation asks this before reading the related row its organization is found through."""
    return bool(_current_index().get((model_label, event)))


def _current_index() -> Index:
    if _private.markers:  # this thread's transaction may have changed rules
        private = _private_index()
        if private is not None:
            return private
    try:
        version = current_version()
    except Exception:
        # Redis is down: the version is unknown, so the shared index may be stale.
        # Answer from the database instead of failing the caller's write; the run's PENDING log
        # still commits with it, and the sweeper enqueues it once the broker is back.
        logger.warning("rule index version unreadable (Redis down); reading the rules from SQL")
        return _build()
    if version != _shared.version:
        with _shared.lock:
            if version != _shared.version:
                # Read the version before the rules: a bump racing with this build leaves the
                # older version recorded, so the next lookup rebuilds again.
                _shared.index = _build()
                _shared.version = version
                logger.debug("rule index rebuilt for version %s", version)
    return _shared.index


def rules_changed_in_this_transaction() -> bool:
    """True while this thread's open transaction has changed rules (not committed yet)."""
    markers = _private.markers
    return bool(markers) and any(_transaction_open(marker) for marker in markers)


def _private_index() -> Index | None:
    markers = _private.markers
    if not markers:
        return None
    if not _transaction_open(markers[-1]):
        # The transaction ended, or a savepoint holding a change rolled back: what was built
        # may hold rules that no longer exist. Rollbacks drop the newest callbacks, so the
        # markers still open are a prefix of the list.
        while markers and not _transaction_open(markers[-1]):
            markers.pop()
        _private.index = None
        if not markers:
            return None
    if _private.index is None:
        _private.index = _build()
    return _private.index


def _transaction_open(marker) -> bool:
    """Is the transaction that registered `marker` as an on-commit callback still open?

    Django runs (and forgets) the callbacks on commit and drops those of a rolled-back
    transaction or savepoint, so the callback is present exactly while its transaction (and
    savepoint) is in progress. A savepoint rollback only drops the newest callbacks, so a
    surviving one stays at the position it was registered at: an O(1) check.
    """
    position, callback = marker
    pending = connections[DEFAULT_DB_ALIAS].run_on_commit
    return position < len(pending) and pending[position][1] is callback


def _build() -> Index:
    index: Index = {}
    rows = (
        AutomationRule.objects.live()
        .filter(trigger_type=TriggerType.EVENT, content_type__isnull=False)
        .order_by("id")
        .values_list(
            "pk",
            "name",
            "organization_id",
            "revision",
            "watched_fields",
            "allow_self_trigger",
            "content_type_id",
            "content_type__app_label",
            "content_type__model",
            "trigger_event",
        )
    )
    for pk, name, org_id, revision, watched, self_trigger, ct_id, app, model, event in rows:
        entry = IndexedRule(
            pk=pk,
            name=name,
            organization_id=org_id,
            revision=revision,
            watched_fields=tuple(watched or ()),
            allow_self_trigger=self_trigger,
            content_type_id=ct_id,
            trigger_event=event,
        )
        index.setdefault((f"{app}.{model}", event), {}).setdefault(org_id, []).append(entry)
    return index


def rules_changed() -> None:
    """Record a change to rules: bump the shared version on commit, and let the changing
    transaction see its own change at once through a private index.

    Outside a transaction the bump happens immediately.
    """
    connection = connections[DEFAULT_DB_ALIAS]
    if not connection.in_atomic_block:
        bump_version()
        return

    markers = _private.markers
    if not markers or not _transaction_open(markers[-1]):
        markers = _private.markers = []
        _private.commit = {"bumped": False}  # one bump per commit, however many changes
    commit = _private.commit

    def on_commit():
        if not commit["bumped"]:
            commit["bumped"] = True
            bump_version()

    markers.append((len(connection.run_on_commit), on_commit))
    transaction.on_commit(on_commit)
    _private.index = None


def reset_local_state() -> None:
    """Forget this process's index (tests: behave like a process that just started; with
    definitions.forget() for the rules' definitions)."""
    rule_version.reset()
    with _shared.lock:
        _shared.version = None
        _shared.index = {}
    _private.markers = []
    _private.index = None


# --- A row its writer has just read ---------------------------------------------------------------

# Set by remember_stored_row: the row as its caller just read it, so the UPDATED signal's pre_save
# (automation/triggers/signals.py) need not read it again.
STORED_SNAPSHOT_ATTR = "_automation_stored_snapshot"


def remember_stored_row(instance) -> None:
    """The caller has just read `instance` under a row lock and will change and save it: let
    its pre_save take the old values from this read instead of reading the row again."""
    entry = automatable_for(type(instance))
    if entry is None:
        return
    if not entry.owns_organization and not watched_anywhere(entry.label, TriggerEvent.UPDATED):
        return
    organization_id = entry.organization_id_of(instance)
    if is_watched(entry.label, TriggerEvent.UPDATED, organization_id):
        instance.__dict__[STORED_SNAPSHOT_ATTR] = snapshot(instance)
