"""What kind of JSON value a placeholder gives, when a rule is saved, and which fields take it.

A run's values are plain JSON, but many are known before any run: `object.stock` is a number
(IntegerField), `object.price` a decimal number as text, `now` a date-time as text,
`{{ object.name | length }}` a number. Knowing it lets a rule be refused when it is saved rather
than fail on every run: `stock: "{{ object.name }}"`, `{{ object.name | round }}`. What cannot
be known (`payload.*`, `results.*`, a JSON field) is ANY, and always allowed; runs check it.
"""

from django.db import models

# The kinds. DECIMAL, DATE and DATETIME are text of a known form (a snapshot's decimals, dates
# and date-times are ISO text).
NUMBER = "number"
DECIMAL = "decimal"
TEXT = "text"
DATE = "date"
DATETIME = "datetime"
BOOL = "bool"
LIST = "list"
OBJECT = "object"
NULL = "null"
ANY = "any"

DESCRIBED = {
    NUMBER: "a number",
    DECIMAL: "a decimal number (as text)",
    TEXT: "text",
    DATE: "a date (as text)",
    DATETIME: "a date-time (as text)",
    BOOL: "true/false",
    LIST: "a list",
    OBJECT: "an object",
    NULL: "null",
    ANY: "any value",
}

NUMERIC = frozenset({NUMBER, DECIMAL})
TEXTUAL = frozenset({TEXT, DECIMAL, DATE, DATETIME})
DATED = frozenset({TEXT, DATE, DATETIME})


def of_value(value) -> str:
    """The kind of a literal value."""
    if value is None:
        return NULL
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, int | float):
        return NUMBER
    if isinstance(value, str):
        return TEXT
    if isinstance(value, list):
        return LIST
    return OBJECT if isinstance(value, dict) else ANY


def of_field(field) -> str:
    """The kind of a model field's value in a snapshot (core/snapshots.py json_value)."""
    if field.is_relation:
        target = getattr(field, "target_field", None)
        return of_field(target) if target is not None else ANY
    if isinstance(field, models.JSONField):
        return ANY
    if isinstance(field, models.BooleanField):
        return BOOL
    if isinstance(field, models.DecimalField):
        return DECIMAL
    if isinstance(field, models.IntegerField | models.FloatField | models.DurationField):
        return NUMBER
    if isinstance(field, models.DateTimeField):
        return DATETIME
    if isinstance(field, models.DateField):
        return DATE
    if isinstance(field, models.CharField | models.TextField):
        return TEXT
    return ANY


def fill_refusal(field, kind: str) -> str | None:
    """Why a value of `kind` cannot be written to model `field` (a record action's `fields`), or
    None when it can or it cannot be known. Decided as the write would: an integer field takes
    numbers, not text, nor a decimal's text; a date field takes no date-time text."""
    if kind in (ANY, NULL):
        return None
    target = field.target_field if field.is_relation else field
    wanted = of_field(target)
    if wanted == ANY:
        return None
    takes = {
        NUMBER: (frozenset({NUMBER}), "a whole number")
        if isinstance(target, models.IntegerField)
        else (NUMERIC, "a number"),
        DECIMAL: (NUMERIC, "a number"),
        BOOL: (frozenset({BOOL}), "true or false"),
        DATE: (frozenset({DATE, TEXT}), "a date"),
        DATETIME: (frozenset({DATETIME, DATE, TEXT}), "a date-time"),
        TEXT: (frozenset({NUMBER, DECIMAL, TEXT, DATE, DATETIME, BOOL}), "a single value"),
    }
    accepted, described = takes[wanted]
    if kind in accepted:
        return None
    what = "the id of a related record" if field.is_relation else described
    hint = ""
    if wanted == DATE and kind == DATETIME:
        hint = ' Format it as a date: | date("%Y-%m-%d").'
    elif wanted == NUMBER and kind == DECIMAL:
        hint = " Round it: | round."
    return f"gives {DESCRIBED[kind]}, and {field.name} ({type(field).__name__}) takes {what}.{hint}"
