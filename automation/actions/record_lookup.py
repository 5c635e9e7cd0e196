"""The run's own record (a record action's target "trigger"), read with SQL compiled once per
process and model (automation/core/compiled.py).

An UPDATE_RECORD or DELETE_RECORD of the triggering record reads it by primary key, within the
run's organization, locked in the run's transaction. Through the QuerySet, Django compiled that
statement again for every run's action: most of the lookup's CPU, about a fifth of a one-action
run in a worker (benchmark 5's profile, docs/benchmarks.md). The statement is compiled once
from the same QuerySet, with stand-in values for the organization and the key, and executed
with the run's; the organization's condition is in it as the QuerySet put it, so a record of
another organization is never found. A model whose statement does not take exactly those two
values where the stand-ins were (another kind of key, a scope written some other way) is read
through its QuerySet, as before.
"""

from django.core.exceptions import ValidationError
from django.db import connections, models, transaction

from automation.core.compiled import Compiled, span

# Stand-ins for the organization and the key while the statement is compiled: integers no real
# row has, found again among the compiled parameters.
_ORGANIZATION, _KEY = -734_019_001, -734_019_002
_INTEGER_KEYS = (models.AutoField, models.BigAutoField, models.SmallAutoField, models.IntegerField)
_compiled: dict[tuple, "_Lookup | None"] = {}


class _Lookup:
    """A model's compiled lookup: the statement, where its two values go, how rows become
    instances."""

    def __init__(self, compiled: Compiled, organization_at: int, key_at: int):
        self.compiled = compiled
        self.organization_at, self.key_at = organization_at, key_at
        self.start, self.end = span(compiled.klass_info)
        self.names = compiled.names(self.start, self.end)
        self.model = compiled.klass_info["model"]

    def records(self, organization_id, key) -> list:
        params = list(self.compiled.params)
        params[self.organization_at], params[self.key_at] = organization_id, key
        using = self.compiled.using
        return [
            self.model.from_db(using, self.names, row[self.start : self.end])
            for row in self.compiled.rows(params)
        ]


def queryset(entry, organization_id, filters: dict, *, lock: bool) -> models.QuerySet:
    """The QuerySet of a record action's target: `filters` in the organization, at most two (so
    a caller can tell one from many), without ORDER BY (one record is wanted: the model's
    default ordering only added a sort), locked when `lock`."""
    found = entry.of_organization(organization_id).filter(**filters).order_by()
    return (found.select_for_update() if lock else found)[:2]


def trigger_records(entry, organization_id, object_id, *, lock: bool) -> list:
    """The organization's record of `entry`'s model whose key is `object_id` (a list of at most
    one), locked for the open transaction when `lock`."""
    using = transaction.get_connection().alias
    key = (entry.model, entry.organization_lookup, lock, using, connections[using].vendor)
    if key not in _compiled:
        _compiled[key] = _compile(entry, lock, using)
    lookup = _compiled[key]
    if lookup is not None:
        try:
            value = entry.model._meta.pk.to_python(object_id)
        except ValidationError:
            value = None  # the QuerySet says what is wrong with it, as before
        if isinstance(value, int):
            return lookup.records(organization_id, value)
    return list(queryset(entry, organization_id, {"pk": object_id}, lock=lock))


def _compile(entry, lock: bool, using: str) -> _Lookup | None:
    if not isinstance(entry.model._meta.pk, _INTEGER_KEYS):
        return None
    compiled = Compiled(queryset(entry, _ORGANIZATION, {"pk": _KEY}, lock=lock), using)
    params = compiled.params
    if params.count(_ORGANIZATION) != 1 or params.count(_KEY) != 1:
        return None
    if compiled.klass_info is None or compiled.klass_info.get("related_klass_infos"):
        return None
    return _Lookup(compiled, params.index(_ORGANIZATION), params.index(_KEY))
