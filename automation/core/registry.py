"""The automatable-model registry: which models automation may watch, read and write.

A model becomes automatable in one of two ways (docs/own-models.md):

- the AUTOMATION_MODELS setting: {"app_label.model": {"fields": [...], "writable": [...],
  "organization": "organization"}};
- `register(model, fields=..., writable=..., organization=...)` (automation.api), called from the
  model's app's `AppConfig.ready()`.

"fields" are readable (relations may be followed only into other automatable models), "writable"
may be set by record actions, and "organization" is the path of foreign keys from the model to
its `accounts.Organization` ("organization" when the model has the field itself,
"project__organization" when its rows belong to an organization through a project). Condition
paths ("category__name") and action targets are checked against the registry, so a rule can never
hop into users, organizations or any model that is not listed, never read a field that is not
listed, and never see another organization's rows. A mistake in a registration raises
ImproperlyConfigured: register() checks the model's own fields at once, and the system check
`automation.E001` (run by `serve`, `migrate`, `run_huey` and `check`) builds the whole registry,
relations between models included, so the server does not start with a mistake.
"""

import difflib
import functools
from dataclasses import dataclass

from django.apps import apps
from django.conf import settings
from django.core.exceptions import FieldDoesNotExist, ImproperlyConfigured
from django.core.signals import setting_changed
from django.db import models
from django.dispatch import Signal, receiver

# Sent with `entry` each time register() adds a model after the registry was built, so the
# signal receivers (automation.triggers.signals) watch it whatever the order of INSTALLED_APPS.
model_registered = Signal()

ORGANIZATION_MODEL = "accounts.organization"
# Registrations made in code (register()), by label, beside the setting's.
_registered: dict[str, dict] = {}


class PathError(ValueError):
    """A field path that does not resolve through allowed hops."""


@dataclass(frozen=True)
class AutomatableModel:
    label: str  # "catalog.product"
    model: type[models.Model]
    readable: tuple[str, ...]
    writable: tuple[str, ...]
    organization: str = "organization"  # the path of foreign keys to the row's organization

    def field(self, name: str):
        return self.model._meta.get_field(name)

    @property
    def organization_lookup(self) -> str:
        """The filter keyword for "rows of one organization": "project__organization_id"."""
        return f"{self.organization}_id"

    @property
    def owner_field(self) -> str:
        """The model's own field the organization is reached through ("project")."""
        return self.organization.split("__", 1)[0]

    @property
    def owns_organization(self) -> bool:
        """True when the model has the organization foreign key itself."""
        return "__" not in self.organization

    def of_organization(self, organization_id) -> models.QuerySet:
        """The model's rows of one organization (default manager)."""
        return self.model._default_manager.filter(**{self.organization_lookup: organization_id})

    def organization_id_of(self, instance) -> int | None:
        """The organization a record belongs to, None when it has none (yet).

        Through a relation, the related rows are read (and cached on the instance, so a second
        call costs nothing); Django drops that cache when the foreign key changes.
        """
        *hops, last = self.organization.split("__")
        current = instance
        for hop in hops:
            if getattr(current, current._meta.get_field(hop).attname) is None:
                return None
            current = getattr(current, hop)
        return getattr(current, f"{last}_id")


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


# --- Registering --------------------------------------------------------------------------------


def register(model, *, fields, writable=(), organization: str = "organization") -> None:
    """Make `model` (a model class or "app_label.model") automatable; call it from your app's
    `AppConfig.ready()`. See the module docstring for the arguments. A mistake raises
    ImproperlyConfigured at once; registering a model twice, or one AUTOMATION_MODELS lists, too.
    """
    label = model if isinstance(model, str) else model_label(model)
    label = label.lower()
    spec = {"fields": fields, "writable": writable, "organization": organization}
    if label in _registered or label in _setting_labels():
        raise ImproperlyConfigured(f'automation: "{label}" is registered twice.')
    entry = _build_entry(label, spec, f'register("{label}")')
    _registered[label] = spec
    automatable_models.cache_clear()
    resolve_path.cache_clear()
    model_registered.send(sender=AutomatableModel, entry=entry)


def unregister(model) -> None:
    """Undo register() (tests)."""
    label = (model if isinstance(model, str) else model_label(model)).lower()
    _registered.pop(label, None)
    automatable_models.cache_clear()
    resolve_path.cache_clear()


def _setting_labels() -> set[str]:
    return {label.lower() for label in settings.AUTOMATION_MODELS}


@functools.cache
def automatable_models() -> dict[str, AutomatableModel]:
    """Every automatable model by label: the setting's, then register()'s."""
    registry = {}
    for label, spec in settings.AUTOMATION_MODELS.items():
        registry[label.lower()] = _build_entry(label.lower(), spec, f'AUTOMATION_MODELS["{label}"]')
    for label, spec in _registered.items():
        registry[label] = _build_entry(label, spec, f'register("{label}")')
    _check_relations(registry)
    return registry


@receiver(setting_changed)
def _reset_registry(setting, **kwargs):
    if setting == "AUTOMATION_MODELS":
        automatable_models.cache_clear()
        resolve_path.cache_clear()


def _build_entry(label: str, spec, where: str) -> AutomatableModel:
    """One registration, checked against the model's own fields."""
    if not isinstance(spec, dict):
        raise ImproperlyConfigured(f'{where}: expected a dict with "fields", got {spec!r}.')
    unknown = set(spec) - {"fields", "writable", "organization"}
    if unknown:
        raise ImproperlyConfigured(f"{where}: unknown keys {sorted(unknown)}.")
    try:
        model = apps.get_model(label)
    except (LookupError, ValueError):
        raise ImproperlyConfigured(
            f'{where}: "{label}" is not a model of an installed app ("app_label.model").'
        ) from None
    readable = _names(spec.get("fields"), where, "fields")
    writable = _names(spec.get("writable", ()), where, "writable")
    if not readable:
        raise ImproperlyConfigured(f'{where}: "fields" lists no readable field.')
    for name in readable:
        _field_or_fail(model, name, where, "fields")
    for name in writable:
        field = _field_or_fail(model, name, where, "writable")
        if name not in readable:
            raise ImproperlyConfigured(f'{where}: writable "{name}" is not in "fields".')
        if not field.concrete or field.many_to_many or field.primary_key or not field.editable:
            raise ImproperlyConfigured(
                f'{where}: "{name}" cannot be written (only editable fields of the row itself, '
                "not its primary key, to-many relations or reverse relations)."
            )
    organization = spec.get("organization", "organization")
    _check_organization_path(model, organization, where)
    return AutomatableModel(
        label=label,
        model=model,
        readable=tuple(readable),
        writable=tuple(writable),
        organization=organization,
    )


def _names(value, where: str, key: str) -> list[str]:
    if isinstance(value, str) or not all(isinstance(name, str) for name in value or ()):
        raise ImproperlyConfigured(f'{where}: "{key}" must be a list of field names.')
    return list(value or ())


def _field_or_fail(model, name: str, where: str, key: str):
    try:
        return model._meta.get_field(name)
    except FieldDoesNotExist:
        raise ImproperlyConfigured(
            f'{where}: "{key}" names "{name}", which is not a field of {model_label(model)}.'
        ) from None


def _check_organization_path(model, path, where: str) -> None:
    """Every hop a foreign key (or one-to-one) of the row, the last one to the organization."""
    if not isinstance(path, str) or not path:
        raise ImproperlyConfigured(
            f'{where}: "organization" must be a path like "project__organization".'
        )
    current = model
    for hop in path.split("__"):
        field = _field_or_fail(current, hop, where, "organization")
        if not (field.concrete and (field.many_to_one or field.one_to_one)):
            raise ImproperlyConfigured(
                f'{where}: "organization" must follow foreign keys; "{hop}" of '
                f"{model_label(current)} is not one."
            )
        current = field.related_model
    if model_label(current) != ORGANIZATION_MODEL:
        raise ImproperlyConfigured(
            f'{where}: "organization" ({path}) leads to {model_label(current)}, '
            f"not to {ORGANIZATION_MODEL}."
        )


def _check_relations(registry: dict[str, AutomatableModel]) -> None:
    """A writable relation must lead to rows whose organization can be checked."""
    for entry in registry.values():
        for name in entry.writable:
            field = entry.field(name)
            if field.is_relation and organization_lookup_for(field.related_model, registry) is None:
                raise ImproperlyConfigured(
                    f'automation: writable "{name}" of {entry.label} points to '
                    f"{model_label(field.related_model)}, which has no organization automation "
                    "can check: register that model too."
                )


def organization_lookup_for(model, registry=None) -> str | None:
    """How to filter `model`'s rows by organization: its registration's lookup, else
    "organization_id" when it has that foreign key itself, else None (not scoped)."""
    entry = (registry if registry is not None else automatable_models()).get(model_label(model))
    if entry is not None:
        return entry.organization_lookup
    try:
        field = model._meta.get_field("organization")
    except FieldDoesNotExist:
        return None
    if field.many_to_one and model_label(field.related_model) == ORGANIZATION_MODEL:
        return "organization_id"
    return None


def get_automatable(label: str) -> AutomatableModel:
    """The registry entry for "app_label.model"; LookupError when the model is not automatable."""
    models_by_label = automatable_models()
    try:
        return models_by_label[(label or "").lower()]
    except (KeyError, AttributeError):
        hint = did_you_mean(label, models_by_label) if isinstance(label, str) else ""
        raise LookupError(f'"{label}" is not an automatable model.{hint}') from None


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
            # No guess for a field the model has but rules may not read (created_by).
            hint = "" if _has_field(current.model, part) else did_you_mean(part, current.readable)
            raise PathError(f'"{part}" is not a readable field of {current.label}.{hint}')
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


def _has_field(model, name: str) -> bool:
    try:
        model._meta.get_field(name)
    except FieldDoesNotExist:
        return False
    return True


def did_you_mean(name: str, names) -> str:
    """' Did you mean "stock"?' naming the closest of `names` (up to three), or "" when none is
    close: a typo'd field or model name is answered with the one meant."""
    lowered = {candidate.lower(): candidate for candidate in names}
    close = [
        lowered[found]
        for found in difflib.get_close_matches(name.lower(), sorted(lowered), n=3, cutoff=0.7)
    ]
    if not close:
        return ""
    quoted = [f'"{found}"' for found in close]
    listed = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
    return f" Did you mean {listed}?"


def name_field_of(model) -> str | None:
    """The readable text field that names a record of `model` ("name", else the first readable
    text field), for messages that tell a foreign key's id from its record's name."""
    entry = automatable_for(model)
    if entry is None:
        return None
    texts = [
        name
        for name in entry.readable
        if isinstance(entry.field(name), models.CharField) and not entry.field(name).choices
    ]
    return "name" if "name" in texts else (texts[0] if texts else None)


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


def check_registry(app_configs=None, **kwargs):
    """System check automation.E001: the whole registry builds (see the module docstring)."""
    from django.core import checks

    try:
        automatable_models()
    except ImproperlyConfigured as exc:
        return [checks.Error(str(exc), id="automation.E001")]
    return []
