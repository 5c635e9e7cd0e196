"""The automatable-model registry: which models automation may watch, read and write.

Declared in the AUTOMATION_MODELS setting. Condition paths ("category__name") and action targets
are checked against it, so a rule can never hop into users, organizations or any model that is
not listed, and never read a field that is not listed.
"""

import functools
from dataclasses import dataclass

from django.apps import apps
from django.conf import settings
from django.core.signals import setting_changed
from django.db import models
from django.dispatch import receiver


class PathError(ValueError):
    """A field path that does not resolve through allowed hops."""


@dataclass(frozen=True)
class AutomatableModel:
    label: str  # "catalog.product"
    model: type[models.Model]
    readable: tuple[str, ...]
    writable: tuple[str, ...]

    def field(self, name: str):
        return self.model._meta.get_field(name)


@dataclass(frozen=True)
class ResolvedPath:
    """A checked path: the models it hops through and the field it ends on."""

    path: str
    hops: tuple[str, ...]  # the relation names followed, in order
    field: models.Field  # the last field
    through_many: bool  # True when some hop is a to-many relation

    @property
    def is_local(self) -> bool:
        return not self.hops


def model_label(model) -> str:
    return model._meta.label_lower


@functools.cache
def automatable_models() -> dict[str, AutomatableModel]:
    registry = {}
    for label, spec in settings.AUTOMATION_MODELS.items():
        label = label.lower()
        model = apps.get_model(label)
        registry[label] = AutomatableModel(
            label=label,
            model=model,
            readable=tuple(spec.get("fields", ())),
            writable=tuple(spec.get("writable", ())),
        )
    return registry


@receiver(setting_changed)
def _reset_registry(setting, **kwargs):
    if setting == "AUTOMATION_MODELS":
        automatable_models.cache_clear()
        resolve_path.cache_clear()


def get_automatable(label: str) -> AutomatableModel:
    """The registry entry for "app_label.model"; LookupError when the model is not automatable."""
    try:
        return automatable_models()[(label or "").lower()]
    except KeyError:
        raise LookupError(f'"{label}" is not an automatable model.') from None


def automatable_for(model) -> AutomatableModel | None:
    return automatable_models().get(model_label(model))


@functools.cache
def resolve_path(label: str, path: str) -> ResolvedPath:
    """Check that `path` ("category__name") resolves from model `label` through allowed hops.

    Every hop must be a readable relation into another automatable model, and the last part a
    readable field. A to-many relation may be followed but not be the last part.
    """
    if not path or not isinstance(path, str):
        raise PathError("A field path is required.")
    current = get_automatable(label)
    parts = path.split("__")
    hops = []
    through_many = False
    for index, part in enumerate(parts):
        if part not in current.readable:
            raise PathError(f'"{part}" is not a readable field of {current.label}.')
        field = current.field(part)
        is_last = index == len(parts) - 1
        if is_last:
            if field.one_to_many or field.many_to_many:
                raise PathError(
                    f'"{part}" is a list of records: follow it to one of their fields, '
                    f'e.g. "{path}__id".'
                )
            return ResolvedPath(path, tuple(hops), field, through_many)
        if not field.is_relation:
            raise PathError(
                f'"{part}" of {current.label} is not a relation and cannot be followed.'
            )
        target = automatable_for(field.related_model)
        if target is None:
            raise PathError(
                f'"{part}" of {current.label} leads to a model automation may not read.'
            )
        through_many = through_many or field.one_to_many or field.many_to_many
        hops.append(part)
        current = target
    raise PathError("A field path is required.")  # pragma: no cover - the loop always returns


def readable_paths(label: str, max_depth: int = 2) -> list[str]:
    """Every readable path from `label`, relations followed up to `max_depth` hops (no cycles)."""
    paths: list[str] = []

    def walk(entry: AutomatableModel, prefix: str, depth: int, seen: frozenset):
        for name in entry.readable:
            field = entry.field(name)
            target = automatable_for(field.related_model) if field.is_relation else None
            if not (field.one_to_many or field.many_to_many):
                paths.append(prefix + name)
            if target and depth < max_depth and target.label not in seen:
                walk(target, f"{prefix}{name}__", depth + 1, seen | {target.label})

    entry = get_automatable(label)
    walk(entry, "", 0, frozenset({entry.label}))
    return paths
