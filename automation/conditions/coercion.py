"""Coercing both sides of a comparison to the final field's type (and relative dates to the
evaluation's clock), so a value that cannot be compared is an error of its leaf, never a false."""

import datetime
import decimal
import math

from django.core.exceptions import ValidationError
from django.db import models

from automation.conditions import relative_dates
from automation.conditions.tree import Clock, ConditionError
from automation.core.registry import model_label, name_field_of


def base_field(model_field):
    """The field whose type values have: a foreign key compares as its target's id."""
    while model_field.is_relation and model_field.concrete:
        model_field = model_field.target_field
    return model_field


def coerce_expected(model_field, value, clock: Clock):
    """An expected (rule-side) value: coerced, and for a choice field one of its choices; on a
    date or date-time field a relative value ("now", "-P7D") is resolved against `clock`."""
    base = base_field(model_field)
    if isinstance(base, models.DateField):
        coerced = _coerce_expected_date(model_field, value, clock)
    else:
        coerced = coerce_value(model_field, value)
    if base.choices:
        valid = [key for key, _label in base.flatchoices]
        if coerced not in valid:
            raise ConditionError(
                f'"{value}" is not a choice of {model_field.name} ({", ".join(map(str, valid))}).'
            )
    return coerced


def _coerce_expected_date(model_field, value, clock: Clock):
    """A date or date-time expected value: fixed (ISO 8601) or relative; a message that names
    both forms when it is neither."""
    if relative_dates.is_relative(value):
        return resolve_relative(model_field, value, clock)
    try:
        return coerce_value(model_field, value)
    except ConditionError as exc:
        if isinstance(base_field(model_field), models.DateTimeField):
            kind, example = "date-time", "2026-01-31T09:00:00Z"
        else:
            kind, example = "date", "2026-01-31"
        raise ConditionError(
            f'{exc} A {kind} value is ISO 8601 ("{example}") or relative to the evaluation: '
            f"{relative_dates.ACCEPTED_FORMS}."
        ) from None


def resolve_relative(model_field, value: str, clock: Clock):
    """A relative value as the date or aware instant it stands for at `clock`."""
    try:
        if isinstance(base_field(model_field), models.DateTimeField):
            return relative_dates.resolve_datetime(value, clock.now, clock.zone)
        return relative_dates.resolve_date(value, clock.today())
    except relative_dates.RelativeDateError as exc:
        raise ConditionError(f"{model_field.name}: {exc}") from None


def coerce_value(model_field, value):
    """`value` (JSON from a snapshot or a rule, or a Python value from the database) as the
    field's type; ConditionError when it is not one."""
    base = base_field(model_field)
    kind = base.get_internal_type()
    try:
        if isinstance(base, models.BooleanField):
            return _to_bool(value)
        if isinstance(base, models.IntegerField):  # AutoField and the other integers too
            return _to_int(value)
        if isinstance(base, models.DecimalField):
            return _to_decimal(value)
        if isinstance(base, models.FloatField):
            return _to_float(value)
        if isinstance(base, models.DateTimeField):  # before DateField, its parent
            return _to_datetime(value)
        if isinstance(base, models.DateField):
            return _to_date(value)
        if isinstance(base, models.CharField | models.TextField):
            if not isinstance(value, str):
                raise ValueError
            return value
        return base.to_python(value)
    except (ValueError, TypeError, ArithmeticError, ValidationError):
        if model_field.is_relation and isinstance(value, str):
            raise ConditionError(_not_an_id(model_field, value)) from None
        raise ConditionError(
            f"{value!r} cannot be compared with {model_field.name} ({kind})."
        ) from None


def _not_an_id(model_field, value: str) -> str:
    """A foreign key compared with text that is no id: most likely the related record's name."""
    related = model_field.related_model
    message = (
        f"{value!r} is not an id: {model_field.name} refers to a {model_label(related)} by its "
        "id, so compare it with the id (a number)"
    )
    name = name_field_of(related)
    if name is None:
        return f"{message}."
    return f'{message}, or compare "{model_field.name}__{name}" with the {name}.'


def _to_bool(value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ValueError


def _to_int(value) -> int:
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        return int(value.strip())
    raise ValueError


def _to_decimal(value) -> decimal.Decimal:
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, decimal.Decimal):
        result = value
    elif isinstance(value, int | float | str):
        # str() of a float keeps its short form: 9.99 stays 9.99, not 9.9900000000000002131...
        result = decimal.Decimal(str(value).strip())
    else:
        raise ValueError
    if not result.is_finite():
        raise ValueError
    return result


def _to_float(value) -> float:
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, int | float | decimal.Decimal | str):
        result = float(value)
        if math.isfinite(result):
            return result
    raise ValueError


def _to_datetime(value) -> datetime.datetime:
    if isinstance(value, datetime.datetime):
        result = value
    elif isinstance(value, str):
        result = datetime.datetime.fromisoformat(value.strip())
    else:
        raise ValueError
    if result.tzinfo is None:  # naive means UTC, as the contract's values do
        result = result.replace(tzinfo=datetime.UTC)
    return result


def _to_date(value) -> datetime.date:
    if isinstance(value, datetime.datetime):
        raise ValueError
    if isinstance(value, datetime.date):
        return value
    if isinstance(value, str):
        return datetime.date.fromisoformat(value.strip())
    raise ValueError
