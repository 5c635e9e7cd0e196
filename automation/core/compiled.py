"""QuerySets compiled to SQL once per process, for the statements every run sends.

Through a QuerySet, Django builds the same SQL again for every execution (`as_sql`, the joins,
the select list, the converters): on the run path that was most of a read's CPU, more than the
database's answer (profiles of benchmarks 2 and 5, docs/benchmarks.md). A `Compiled` keeps what
Django built for one QuerySet and executes it with other parameters; rows come back through the
fields' converters and become instances with `Model.from_db`, as Django's iterable makes them.
Users: the run's reads of its logs (automation/runs/reads.py) and a record action's lookup of
the run's record (automation/actions/record_lookup.py).
"""

from django.db import connections


class Compiled:
    """A QuerySet's SQL, its parameters as compiled, its converters and its select list."""

    def __init__(self, queryset, using: str):
        compiler = queryset.query.get_compiler(using=using)
        self.sql, params = compiler.as_sql()
        self.params = list(params)
        self.compiler = compiler
        self.converters = compiler.get_converters([column for column, _, _ in compiler.select])
        self.klass_info = compiler.klass_info
        self.select = compiler.select

    @property
    def using(self) -> str:
        return self.compiler.using

    def rows(self, params: list) -> list:
        connection = connections[self.compiler.using]
        with connection.cursor() as cursor:
            cursor.execute(self.sql, params)
            rows = cursor.fetchall()
        if self.converters:
            rows = list(self.compiler.apply_converters(rows, self.converters))
        return rows

    def names(self, start: int, end: int) -> list[str]:
        """The attribute names of the selected columns start..end (one model's, in order)."""
        return [column[0].target.attname for column in self.select[start:end]]


def span(klass_info: dict) -> tuple[int, int]:
    """(start, end) of one model's columns in a row, from the compiler's klass_info."""
    columns = klass_info["select_fields"]
    return columns[0], columns[-1] + 1
