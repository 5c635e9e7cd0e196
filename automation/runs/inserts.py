"""A new run's log inserted with SQL compiled once per process.

Every watched write creates its runs' logs inside its own transaction, before its commit: the
time it takes delays the write's answer and everything the run does after it. Through
`AutomationLog.objects.create` Django compiled the same INSERT of some thirty columns again
for every run, which was most of the insert's CPU (profile of benchmark 5's mutation,
docs/benchmarks.md). Here the INSERT Django compiles for the first log (the same statement,
the same columns, RETURNING the id) is kept per database, and each log after it is written with
its own values, prepared as Django prepares them (`pre_save` with auto_now, `get_db_prep_save`),
after the same checks of related objects and the same auditing (accounts.models.Auditable).

Django's save() remains the path when anything would make it differ: a receiver of
AutomationLog's pre_save or post_save (whose signals it sends), a value that is an expression,
a backend that cannot return the new id, a statement whose parameters are not one per column.
"""

from django.db import connections, router
from django.db.models.signals import post_save, pre_save
from django.db.models.sql import InsertQuery

from automation.core.models import AutomationLog


class _Compiled:
    """The INSERT of one log, as Django compiled it, for one database."""

    def __init__(self, compiler, sql: str, fields: list):
        self.compiler, self.sql, self.fields = compiler, sql, fields

    def params(self, log: AutomationLog) -> list:
        """The log's values, prepared as Django's compiler prepares them (auto_now included)."""
        compiler = self.compiler
        return [
            compiler.prepare_value(field, compiler.pre_save_val(field, log))
            for field in self.fields
        ]


_compiled: dict[str, _Compiled | None] = {}


def insert_log(log: AutomationLog) -> AutomationLog:
    """Save the new `log` (force_insert, as objects.create does) and return it."""
    using = router.db_for_write(AutomationLog, instance=log)
    if _with_signals() or not connections[using].features.can_return_columns_from_insert:
        log.save(force_insert=True, using=using)
        return log
    log._prepare_related_fields_for_save(operation_name="save")
    log.stamp_auditor()
    if using not in _compiled:
        sql, params, compiled = _compile(log, using)
        _compiled[using] = compiled
    else:
        compiled = _compiled[using]
        if compiled is None:
            log.save(force_insert=True, using=using)
            return log
        sql, params = compiled.sql, compiled.params(log)
        if any(hasattr(value, "as_sql") for value in params):
            log.save(force_insert=True, using=using)  # an expression: Django compiles it
            return log
    connection = connections[using]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        returning = compiled.compiler.returning_params if compiled else ()
        (pk,) = connection.ops.fetch_returned_insert_columns(cursor, returning)
    log.pk = pk
    log._state.adding = False
    log._state.db = using
    return log


def _with_signals() -> bool:
    return pre_save.has_listeners(AutomationLog) or post_save.has_listeners(AutomationLog)


def _compile(log: AutomationLog, using: str) -> tuple:
    """(sql, params) of `log`'s INSERT as Django's save() builds it, and the statement to reuse
    for the next logs (None when it cannot be: then they are saved by Django)."""
    meta = AutomationLog._meta
    fields = [field for field in meta.local_concrete_fields if field is not meta.auto_field]
    query = InsertQuery(AutomationLog)
    query.insert_values(fields, [log], raw=False)
    compiler = query.get_compiler(using=using)
    compiler.returning_fields = meta.db_returning_fields
    ((sql, params),) = compiler.as_sql()
    reusable = (
        len(params) == len(fields)
        and sql.count("%s") == len(fields)
        and all(getattr(field, "get_placeholder", None) is None for field in fields)
        and not any(hasattr(value, "as_sql") for value in params)
    )
    return sql, params, _Compiled(compiler, sql, fields) if reusable else None
