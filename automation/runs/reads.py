"""The run path's two reads of its logs, as SQL compiled once per process (core/compiled.py).

A worker reads each run it takes (to evaluate its conditions) and then locks it (the claim).
Through QuerySets, Django compiled the same two statements again for every run: building the
SQL (`as_sql`, `get_select`, the joins, the converters) was most of the read's CPU, more than the
database's answer (profiles of benchmarks 2 and 5, docs/benchmarks.md). Here each statement is
compiled once per database connection vendor and number of ids, from the same QuerySet as
before, and executed with the ids as parameters; rows become model instances the way Django's
iterable does (`Model.from_db`, the fields' converters, the joined user cached on its log), so
what callers get is what the QuerySet gave.
"""

from django.db import connections, transaction

from automation.core.compiled import Compiled, span
from automation.core.models import AutomationLog

_compiled: dict[tuple, Compiled] = {}


def _statement(name: str, make, count: int) -> Compiled:
    using = transaction.get_connection().alias
    key = (name, using, connections[using].vendor, count)
    compiled = _compiled.get(key)
    if compiled is None:
        # Distinct placeholder ids: the IN lookup drops repeated values.
        compiled = _compiled[key] = Compiled(make(list(range(-count, 0))), using)
        if len(compiled.params) != count:  # the ids must be the statement's only parameters
            raise RuntimeError(f"{name}: {len(compiled.params)} parameters for {count} ids")
    return compiled


def _logs_with_user(ids):
    # By primary key only (see RunWriter): never by status, whose index misled the planner.
    return AutomationLog.objects.select_related("triggered_by").filter(pk__in=ids).order_by("pk")


def read_logs(log_ids) -> list[AutomationLog]:
    """The logs of `log_ids` with the user each run acts for, in id order, without a lock."""
    ids = list(log_ids)
    if not ids:
        return []
    compiled = _statement("read", _logs_with_user, len(ids))
    using = compiled.using
    log_start, log_end = span(compiled.klass_info)
    (user_info,) = compiled.klass_info["related_klass_infos"]
    user_start, user_end = span(user_info)
    log_names = compiled.names(log_start, log_end)
    user_names = compiled.names(user_start, user_end)
    user_model = user_info["model"]
    user_pk = user_start + user_names.index(user_model._meta.pk.attname)
    cache_user = user_info["local_setter"]  # what select_related's populator calls
    logs = []
    for row in compiled.rows(ids):
        log = AutomationLog.from_db(using, log_names, row[log_start:log_end])
        user = None
        if row[user_pk] is not None:
            user = user_model.from_db(using, user_names, row[user_start:user_end])
        cache_user(log, user)
        logs.append(log)
    return logs


def _states(ids):
    return (
        AutomationLog.objects.select_for_update(skip_locked=True)
        .filter(pk__in=ids)
        .order_by()
        .values_list("pk", "status", "seq")
    )


def lock_states(log_ids) -> dict[int, tuple[str, int]]:
    """Lock the logs nobody else has locked, for the open transaction: {id: (status, seq)}
    (SELECT ... FOR UPDATE SKIP LOCKED, by primary key)."""
    ids = list(log_ids)
    if not ids:
        return {}
    compiled = _statement("lock", _states, len(ids))
    return {pk: (status, seq) for pk, status, seq in compiled.rows(ids)}
