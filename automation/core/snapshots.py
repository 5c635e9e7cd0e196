"""JSON snapshots of records: what conditions and templates see instead of live instances.

A snapshot holds the readable local fields of an automatable model, JSON-typed: foreign keys as
the related id under the field's name ("category": 7), decimals as strings ("9.99"), dates and
datetimes as ISO 8601 strings, choices as their stored (enum name) value.
"""

import datetime
import decimal
import enum
import uuid

from automation.core.registry import automatable_for


def json_value(value):
    """A model field value as JSON."""
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    return value


def local_fields(model):
    """The readable fields of `model` stored on its own row (relations to one included)."""
    entry = automatable_for(model)
    if entry is None:
        return []
    fields = []
    for name in entry.readable:
        field = entry.field(name)
        if field.concrete and not field.many_to_many:
            fields.append(field)
    return fields


def snapshot(instance) -> dict:
    """The record's readable fields as JSON (see the module docstring)."""
    return {
        field.name: json_value(getattr(instance, field.attname))
        for field in local_fields(type(instance))
    }


def diff(old: dict | None, new: dict | None) -> dict:
    """{"field": {"old": .., "new": ..}} for every field whose value differs."""
    old = old or {}
    new = new or {}
    return {
        name: {"old": old.get(name), "new": new.get(name)}
        for name in sorted(set(old) | set(new))
        if old.get(name) != new.get(name)
    }


def without_nul(value):
    """`value` with U+0000 removed from every string, dict keys included (containers are
    copied).

    PostgreSQL's text and jsonb refuse the character, so outside text that carries one (a
    webhook's answer, a record value read on SQLite, template output) would fail the write of a
    run's state. What a run stores from outside goes through here first.
    """
    if isinstance(value, str):
        return value.replace("\x00", "") if "\x00" in value else value
    if isinstance(value, dict):
        return {without_nul(key): without_nul(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [without_nul(item) for item in value]
    return value
