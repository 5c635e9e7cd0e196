"""Keyset reads, newest first by (created_at, id), whose cost does not grow with the table.

Run logs are read newest first: the `logs` pages and the retention's walk over expired logs.
Two things keep each read a bounded index range on PostgreSQL and SQLite alike:

- The position after a cursor is one row-value comparison, `(created_at, id) < (c, i)`, which
  both use as an index bound. Spelled `created_at < c OR (created_at = c AND id < i)` (Django
  5.2's own spelling on SQLite), neither does: PostgreSQL read 300,000 rows to find a page that
  deep (439 ms against 0.09 ms).
- A filter on a list of values (`status IN (...)`, several organizations) cannot read an index
  ending in (created_at, id) in that order: PostgreSQL sorts every matching row before it returns
  the first. Such a read is split into one part per value (`split`), each an ordered index range
  cut at `limit`, and the parts are merged in one statement (UNION ALL of the parts, sorted and
  cut again: at most parts x limit rows).

Each model read this way has an index per filter that ends with (-created_at, -id): see
AutomationLog.Meta.indexes.
"""

import itertools

from django.db import connections
from django.db.models import F, QuerySet
from django.db.models.fields.tuple_lookups import Tuple, TupleLessThan, TupleLookupMixin

ORDER = ("-created_at", "-id")
# Past this many parts a split read is one query with IN lists again (it may sort): a caller in
# dozens of organizations reading all of them at once, say.
MAX_PARTS = 24


class RowBefore(TupleLessThan):
    """`(a, b) < (x, y)` as a row value on every backend. Django 5.2 writes tuple lookups out as
    OR/AND on SQLite, which has row values (3.15+) and bounds an index scan with them."""

    def as_sql(self, compiler, connection):
        return super(TupleLookupMixin, self).as_sql(compiler, connection)


def before(key: tuple | None) -> list:
    """The filter for rows after the cursor `key` = (created_at, id), newest first ([] for
    none)."""
    if key is None:
        return []
    return [RowBefore(Tuple(F("created_at"), F("id")), tuple(key))]


def split(queryset: QuerySet, by: dict[str, list]) -> list[QuerySet]:
    """`queryset` narrowed by `by` ({field: values}) as parts, one per combination of values,
    each readable as one ordered index range (no part when a list is empty: nothing matches);
    a single part with IN lists when there would be more than MAX_PARTS."""
    choices = {name: list(dict.fromkeys(values)) for name, values in by.items()}
    combinations = 1
    for values in choices.values():
        combinations *= len(values)
    if combinations > MAX_PARTS:
        return [queryset.filter(**{f"{name}__in": values for name, values in choices.items()})]
    return [
        queryset.filter(**dict(zip(choices, values, strict=True)))
        for values in itertools.product(*choices.values())
    ]


def page(queryset: QuerySet, by: dict[str, list], limit: int, after: tuple | None = None) -> list:
    """The `limit` newest rows of `queryset` narrowed by `by` (see split) after the cursor
    `after` = (created_at, id): one statement for one part; for more, the merged keys and then
    their rows (two)."""
    parts = split(queryset, by)
    if len(parts) == 1:
        return list(parts[0].filter(*before(after)).order_by(*ORDER)[:limit])
    keys = [row.pk for row in newest(parts, limit, after)]
    if not keys:
        return []
    return list(queryset.filter(pk__in=keys).order_by(*ORDER))


def newest(parts: list[QuerySet], limit: int, after: tuple | None = None, fields=()) -> list:
    """The `limit` newest rows of the parts together after the cursor, newest first, with only
    created_at, id and `fields` loaded: one statement."""
    if not parts:
        return []
    columns = ["created_at", "id", *(name for name in fields if name not in ("created_at", "id"))]
    ordered = [part.filter(*before(after)).order_by(*ORDER)[:limit] for part in parts]
    if len(ordered) == 1:
        return list(ordered[0].only(*columns))
    pieces, params = [], []
    for number, part in enumerate(ordered):
        sql, part_params = part.values_list(*columns).query.sql_with_params()
        pieces.append(f"SELECT * FROM ({sql}) AS part{number}")
        params.extend(part_params)
    sql = " UNION ALL ".join(pieces) + f" ORDER BY 1 DESC, 2 DESC LIMIT {int(limit)}"
    return list(parts[0].model._default_manager.raw(sql, params))


def count(parts: list[QuerySet], cap: int) -> int:
    """How many rows the parts hold together, counted up to `cap` + 1 per part (exact up to
    `cap`; above it, "more than cap"): one statement that reads at most that many index
    entries per part."""
    limited = [part.order_by().values("pk")[: cap + 1] for part in parts]
    if not limited:
        return 0
    if len(limited) == 1:
        return limited[0].count()
    pieces, params = [], []
    for number, part in enumerate(limited):
        sql, part_params = part.query.sql_with_params()
        pieces.append(f"SELECT 1 AS one FROM ({sql}) AS part{number}")
        params.extend(part_params)
    sql = "SELECT COUNT(*) FROM (" + " UNION ALL ".join(pieces) + ") AS parts"
    with connections[parts[0].db].cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()[0]
