"""GraphQL inputs of the contract, and their conversion to the services' plain dicts.

The services (automation.rules.services, catalog.services) take snake_case dicts and report errors keyed
by the API's input paths, so resolvers only convert and call.
"""

import datetime
import decimal

import strawberry
from strawberry.scalars import JSON

from graphql_api.types import (
    ActionType,
    ConditionLogic,
    MissedRunPolicy,
    Operator,
    ProductStatus,
    RunStatus,
    TriggerEvent,
    TriggerType,
)


def given(value) -> bool:
    """Omitted or null means "unchanged" in update inputs."""
    return value is not strawberry.UNSET and value is not None


def _value(value):
    # Enums travel to the services as their stored names.
    return value.value if hasattr(value, "value") and not isinstance(value, str) else value


@strawberry.input(name="ConditionInput")
class ConditionInput:
    field: str
    operator: Operator
    value: JSON | None = None
    negate: bool | None = False
    previous: bool | None = strawberry.field(
        default=False,
        description="Test the record as it was before the write (UPDATED rules, the record's "
        "own fields): a field the write did not change had its current value.",
    )
    value_field: str | None = strawberry.field(
        default=None,
        description="Compare with this field path of the record instead of `value` (one or the "
        "other): of the same kind as `field` (numbers, dates, date-times, text, true/false, "
        "references to one model).",
    )

    def to_data(self) -> dict:
        return {
            "field": self.field,
            "operator": _value(self.operator),
            "value": self.value,
            "previous": bool(self.previous),
            "value_field": self.value_field or "",
            "negate": bool(self.negate),
        }


@strawberry.input(name="ConditionGroupInput")
class ConditionGroupInput:
    logic: ConditionLogic | None = ConditionLogic.AND
    negate: bool | None = False
    conditions: list[ConditionInput] | None = strawberry.field(default_factory=list)
    groups: list["ConditionGroupInput"] | None = strawberry.field(default_factory=list)

    def to_data(self) -> dict:
        return {
            "logic": _value(self.logic or ConditionLogic.AND),
            "negate": bool(self.negate),
            "conditions": [c.to_data() for c in self.conditions or []],
            "groups": [g.to_data() for g in self.groups or []],
        }


@strawberry.input(name="ActionInput")
class ActionInput:
    action_type: ActionType
    parameters: JSON
    continue_on_failure: bool | None = False
    when: ConditionGroupInput | None = strawberry.field(
        default=None,
        description="The action's own conditions, evaluated at its turn against the record and "
        "the earlier actions' results (`results.N...` fields); not met: the action is SKIPPED "
        "and the run goes on. Null: it always runs.",
    )

    def to_data(self) -> dict:
        return {
            "action_type": _value(self.action_type),
            "parameters": self.parameters,
            "continue_on_failure": bool(self.continue_on_failure),
            "when": self.when.to_data() if given(self.when) else None,
        }


HOLD_FOR = (
    'Hold before acting: an ISO 8601 duration ("PT30M", "P1D"; weeks, days, hours, minutes, '
    "seconds) the conditions must keep holding. A run whose conditions are met waits that long "
    "(stored WAITING), checks them again against the record as it is then, and runs the actions "
    "only if they still hold (else SKIPPED). Rules with a model, not DELETED ones; at most "
    'AUTOMATION_MAX_WAIT_SECONDS (30 days). "" removes it.'
)

# Rule fields whose input name and service key differ only by case.
_RULE_FIELDS = (
    "name",
    "description",
    "is_active",
    "model",
    "trigger_event",
    "watched_fields",
    "allow_self_trigger",
    "schedule",
    "timezone",
    "missed_run_policy",
    "webhook_secret",
    "hold_for",
)


def _rule_data(source, *, only_given: bool) -> dict:
    data = {}
    for name in _RULE_FIELDS:
        value = getattr(source, name)
        if value is strawberry.UNSET or (only_given and value is None):
            continue
        data[name] = _value(value)
    if given(source.conditions):
        data["conditions"] = source.conditions.to_data()
    if given(source.actions):
        data["actions"] = [action.to_data() for action in source.actions]
    return data


@strawberry.input(name="RuleInput")
class RuleInput:
    organization: strawberry.ID
    name: str
    trigger_type: TriggerType
    description: str | None = ""
    is_active: bool | None = True
    model: str | None = strawberry.UNSET
    trigger_event: TriggerEvent | None = strawberry.UNSET
    watched_fields: list[str] | None = strawberry.field(default_factory=list)
    allow_self_trigger: bool | None = False
    schedule: str | None = strawberry.UNSET
    timezone: str | None = "UTC"
    missed_run_policy: MissedRunPolicy | None = MissedRunPolicy.LATEST
    webhook_secret: str | None = strawberry.field(
        default=strawberry.UNSET,
        description=(
            "WEBHOOK rules: the key callers sign requests with (HMAC-SHA256, at least 16 "
            'characters); write-only, see webhookSecretSet. "" removes it.'
        ),
    )
    hold_for: str | None = strawberry.field(default=strawberry.UNSET, description=HOLD_FOR)
    conditions: ConditionGroupInput | None = strawberry.UNSET
    actions: list[ActionInput] | None = strawberry.field(default_factory=list)

    def to_data(self) -> dict:
        data = _rule_data(self, only_given=False)
        data["trigger_type"] = _value(self.trigger_type)
        return data


@strawberry.input(
    name="RuleUpdateInput",
    description="Omitted or null = unchanged; a given conditions/actions replaces the old whole.",
)
class RuleUpdateInput:
    name: str | None = strawberry.UNSET
    description: str | None = strawberry.UNSET
    is_active: bool | None = strawberry.UNSET
    model: str | None = strawberry.UNSET
    trigger_event: TriggerEvent | None = strawberry.UNSET
    watched_fields: list[str] | None = strawberry.UNSET
    allow_self_trigger: bool | None = strawberry.UNSET
    schedule: str | None = strawberry.UNSET
    timezone: str | None = strawberry.UNSET
    missed_run_policy: MissedRunPolicy | None = strawberry.UNSET
    webhook_secret: str | None = strawberry.field(
        default=strawberry.UNSET,
        description=(
            "WEBHOOK rules: the key callers sign requests with (HMAC-SHA256, at least 16 "
            'characters); write-only, see webhookSecretSet. "" removes it.'
        ),
    )
    hold_for: str | None = strawberry.field(default=strawberry.UNSET, description=HOLD_FOR)
    conditions: ConditionGroupInput | None = strawberry.UNSET
    actions: list[ActionInput] | None = strawberry.UNSET

    def to_data(self) -> dict:
        return _rule_data(self, only_given=True)


@strawberry.input(name="LogFilter")
class LogFilter:
    rule: strawberry.ID | None = strawberry.UNSET
    statuses: list[RunStatus] | None = strawberry.UNSET
    trigger: TriggerType | None = strawberry.UNSET
    object_type: str | None = strawberry.UNSET
    object_id: strawberry.ID | None = strawberry.field(
        default=strawberry.UNSET,
        description=(
            "With objectType, that record's runs; alone, the runs of the record with this id of "
            "every automatable model."
        ),
    )
    created_after: datetime.datetime | None = strawberry.UNSET
    created_before: datetime.datetime | None = strawberry.UNSET
    dry_run: bool | None = strawberry.field(
        default=strawberry.UNSET,
        description="true: dry runs only; false: real runs only; null or left out: both.",
    )


# --- Catalog -------------------------------------------------------------------------------------


@strawberry.input(name="ProductInput")
class ProductInput:
    organization: strawberry.ID
    name: str
    category: strawberry.ID | None = strawberry.UNSET
    description: str | None = ""
    status: ProductStatus | None = ProductStatus.DRAFT
    price: decimal.Decimal | None = decimal.Decimal("0")
    stock: int | None = 0

    def to_data(self) -> dict:
        data = {
            "name": self.name,
            "description": self.description or "",
            "status": _value(self.status or ProductStatus.DRAFT),
            "price": self.price if self.price is not None else decimal.Decimal("0"),
            "stock": self.stock or 0,
        }
        if given(self.category):
            data["category"] = self.category
        return data


@strawberry.input(name="ProductUpdateInput")
class ProductUpdateInput:
    category: strawberry.ID | None = strawberry.UNSET
    name: str | None = strawberry.UNSET
    description: str | None = strawberry.UNSET
    status: ProductStatus | None = strawberry.UNSET
    price: decimal.Decimal | None = strawberry.UNSET
    stock: int | None = strawberry.UNSET

    def to_data(self) -> dict:
        data = {
            name: _value(getattr(self, name))
            for name in ("name", "description", "status", "price", "stock")
            if given(getattr(self, name))
        }
        # category: an explicit null clears it; omitted keeps it.
        if self.category is not strawberry.UNSET:
            data["category"] = self.category
        return data
