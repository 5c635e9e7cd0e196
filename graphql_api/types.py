"""GraphQL types, close to the models, with the contract's names.

Enums are the Django choices (stored as the contract's enum names) turned into GraphQL enums with
explicit names; model fields holding a choice are annotated with them (strawberry-django would
otherwise expose them as String). Organization scoping of every organization-owned type happens in
its `get_queryset`, which calls `permissions.scope()`.

The condition tree is not resolved relation by relation: `Rule.conditions` prefetches all groups
and all conditions of the rule (two queries for any number of rules, whatever the nesting) and
assembles the tree in Python, so listing rules costs the same number of queries for 1 or 50.
"""

import datetime
import decimal

import strawberry
import strawberry_django
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from strawberry.scalars import JSON

from accounts import models as accounts_models
from accounts.choices import Role as RoleChoice
from automation import api as automation_models
from automation.api import choices, local_isoformat, model_label
from catalog import models as catalog_models
from catalog.choices import ProductStatus as ProductStatusChoice

Role = strawberry.enum(RoleChoice, name="Role")
TriggerType = strawberry.enum(choices.TriggerType, name="TriggerType")
TriggerEvent = strawberry.enum(choices.TriggerEvent, name="TriggerEvent")
ConditionLogic = strawberry.enum(choices.ConditionLogic, name="ConditionLogic")
Operator = strawberry.enum(choices.Operator, name="Operator")
ActionType = strawberry.enum(choices.ActionType, name="ActionType")
RunStatus = strawberry.enum(choices.RunStatus, name="RunStatus")
ActionStatus = strawberry.enum(choices.ActionStatus, name="ActionStatus")
MissedRunPolicy = strawberry.enum(choices.MissedRunPolicy, name="MissedRunPolicy")
ProductStatus = strawberry.enum(ProductStatusChoice, name="ProductStatus")


def _parse_decimal(value) -> decimal.Decimal:
    # "Decimal values travel as strings or numbers": go through str() so 0.1 stays 0.1.
    if isinstance(value, bool) or not isinstance(value, (str, int, float, decimal.Decimal)):
        raise ValueError("A Decimal is a string or a number.")
    try:
        parsed = decimal.Decimal(str(value).strip())
    except decimal.InvalidOperation:
        raise ValueError(f'"{value}" is not a decimal number.') from None
    if not parsed.is_finite():
        raise ValueError("A Decimal must be finite.")
    return parsed


DecimalScalar = strawberry.scalar(
    name="Decimal",
    description="A decimal number, read as a string; written as a string or a number.",
    serialize=str,
    parse_value=_parse_decimal,
)


def label_of(content_type_id) -> str | None:
    """ "app_label.model" of a content type id (Django caches content types: no query)."""
    if not content_type_id:
        return None
    return model_label(ContentType.objects.get_for_id(content_type_id).model_class())


def scoped_to_memberships(queryset, info):
    from graphql_api.permissions import scope

    return scope(info, queryset)


@strawberry_django.type(get_user_model(), name="User")
class UserType:
    id: strawberry.ID
    username: str


@strawberry_django.type(accounts_models.Organization, name="Organization")
class OrganizationType:
    id: strawberry.ID
    name: str
    slug: str

    @strawberry_django.field(only=["id"])
    def viewer_role(self, info: strawberry.Info) -> Role | None:
        from graphql_api.permissions import role_in

        role = role_in(info, self.pk)
        return Role(role) if role else None

    @classmethod
    def get_queryset(cls, queryset, info, **kwargs):
        from graphql_api.permissions import scope

        return scope(info, queryset, organization_field="pk")


def _joined_organization(root) -> OrganizationType:
    return root.organization


@strawberry_django.type(accounts_models.Membership, name="Member")
class MemberType:
    user: UserType
    role: Role

    @classmethod
    def get_queryset(cls, queryset, info, **kwargs):
        return scoped_to_memberships(queryset, info)


@strawberry_django.type(accounts_models.Invitation, name="Invitation")
class InvitationType:
    id: strawberry.ID
    # Joined, not prefetched through OrganizationType's scoping get_queryset: the invited user
    # is not a member yet, and that scoping (members only) would hide it from them.
    organization: OrganizationType = strawberry_django.field(
        resolver=_joined_organization, select_related=["organization"]
    )
    username: str = strawberry_django.field(description="As the inviting ADMIN typed it.")
    role: Role
    invited_by: UserType | None
    created_at: datetime.datetime
    expires_at: datetime.datetime

    @classmethod
    def get_queryset(cls, queryset, info, **kwargs):
        from graphql_api.permissions import visible_invitations

        return visible_invitations(info, queryset)


@strawberry_django.type(accounts_models.ApiToken, name="ApiToken")
class ApiTokenType:
    id: strawberry.ID
    name: str
    created_at: datetime.datetime
    last_used_at: datetime.datetime | None
    revoked_at: datetime.datetime | None

    @classmethod
    def get_queryset(cls, queryset, info, **kwargs):
        from graphql_api.permissions import require_user

        return queryset.filter(user=require_user(info))


# --- Rules ---------------------------------------------------------------------------------------


@strawberry.type(name="Condition")
class ConditionNode:
    id: strawberry.ID
    field: str
    operator: Operator
    value: JSON | None
    negate: bool
    order: int
    previous: bool = strawberry.field(
        default=False, description="Tests the record as it was before the write."
    )
    value_field: str | None = strawberry.field(
        default=None, description="The field path compared with instead of `value`."
    )


@strawberry.type(name="ConditionGroup", description="Every rule has exactly one root group.")
class ConditionGroupNode:
    id: strawberry.ID
    logic: ConditionLogic
    negate: bool
    conditions: list[ConditionNode]
    groups: list["ConditionGroupNode"]


def condition_tree(rule) -> ConditionGroupNode | None:
    """The rule's root group with its nested groups and conditions, from prefetched rows."""
    children: dict[int | None, list] = {}
    for group in rule.condition_groups.all():
        children.setdefault(group.parent_id, []).append(group)
    leaves: dict[int, list] = {}
    for condition in rule.conditions.all():
        leaves.setdefault(condition.group_id, []).append(condition)

    def build(group) -> ConditionGroupNode:
        return ConditionGroupNode(
            id=strawberry.ID(str(group.pk)),
            logic=ConditionLogic(group.logic),
            negate=group.negate,
            conditions=[
                ConditionNode(
                    id=strawberry.ID(str(c.pk)),
                    field=c.field_name,
                    operator=Operator(c.operator),
                    value=c.value,
                    negate=c.negate,
                    order=c.order,
                    previous=c.previous,
                    value_field=c.value_field or None,
                )
                for c in sorted(leaves.get(group.pk, []), key=lambda c: (c.order, c.pk))
            ],
            groups=[
                build(child)
                for child in sorted(children.get(group.pk, []), key=lambda g: (g.order, g.pk))
            ],
        )

    roots = children.get(None, [])
    return build(roots[0]) if roots else None


@strawberry_django.type(automation_models.RuleAction, name="Action")
class ActionNode:
    id: strawberry.ID
    action_type: ActionType
    order: int
    continue_on_failure: bool

    when: JSON | None = strawberry_django.field(
        description="The action's own conditions, as ConditionGroupInput takes them (logic, "
        "negate, conditions, groups); null: it always runs."
    )

    @strawberry_django.field(only=["action_type", "parameters"], description="Secrets masked.")
    def parameters(self) -> JSON:
        from automation.api import mask_parameters

        return mask_parameters(self.action_type, self.parameters)


# The rule's fields automation.triggers.fire_times.upcoming_runs reads (the optimizer loads only these).
UPCOMING_RUNS_READS = [
    "trigger_type",
    "schedule",
    "timezone",
    "next_run_at",
    "last_run_at",
    "is_active",
    "deleted_at",
]


@strawberry_django.type(automation_models.AutomationRule, name="Rule")
class RuleType:
    id: strawberry.ID
    # Joined, not prefetched: OrganizationType's scoping get_queryset would make the optimizer
    # prefetch it (one more query per list), and a rule the caller can see always belongs to one
    # of the caller's organizations.
    organization: OrganizationType = strawberry_django.field(
        resolver=_joined_organization, select_related=["organization"]
    )
    name: str
    description: str
    is_active: bool
    trigger_type: TriggerType
    trigger_event: TriggerEvent | None
    watched_fields: list[str]
    allow_self_trigger: bool
    timezone: str
    missed_run_policy: MissedRunPolicy
    next_run_at: datetime.datetime | None
    last_run_at: datetime.datetime | None
    actions: list[ActionNode]
    revision: int
    deleted_at: datetime.datetime | None
    created_at: datetime.datetime
    created_by: UserType | None
    updated_at: datetime.datetime
    updated_by: UserType | None

    @classmethod
    def get_queryset(cls, queryset, info, **kwargs):
        return scoped_to_memberships(queryset, info)

    @strawberry_django.field(only=["content_type_id"], description='"app_label.model"')
    def model(self) -> str | None:
        return label_of(self.content_type_id)

    @strawberry_django.field(
        only=["trigger_type", "webhook_token", "organization_id"],
        description=(
            "WEBHOOK rules: the URL that runs the rule when a JSON object is POSTed to it. The "
            "token in it is the credential: null for VIEWERs and for other rules; "
            "rotateRuleWebhook replaces it."
        ),
    )
    def webhook_url(self, info: strawberry.Info) -> str | None:
        from graphql_api.webhook_urls import webhook_url

        return webhook_url(info, self)

    @strawberry_django.field(
        only=["webhook_secret"],
        description="Whether requests must be signed with the rule's webhookSecret (write-only).",
    )
    def webhook_secret_set(self) -> bool:
        return bool(self.webhook_secret)

    @strawberry_django.field(
        only=["hold_for"],
        description="How long the conditions must keep holding before the actions run (ISO "
        '8601, "PT30M"); null: no hold.',
    )
    def hold_for(self) -> str | None:
        from automation.api import iso_duration

        return None if self.hold_for is None else iso_duration(self.hold_for)

    @strawberry_django.field(only=["schedule"], description="5-field cron expression")
    def schedule(self) -> str | None:
        return self.schedule or None

    @strawberry_django.field(only=UPCOMING_RUNS_READS)
    def upcoming_runs(self, count: int | None = 5) -> list[datetime.datetime]:
        return _upcoming_runs(self, count)

    @strawberry_django.field(
        only=["next_run_at", "timezone"],
        description=(
            "nextRunAt in the rule's time zone: ISO 8601 with the zone's UTC offset at that "
            'instant, e.g. "2026-12-02T09:00:00+01:00".'
        ),
    )
    def next_run_at_local(self) -> str | None:
        if self.next_run_at is None:
            return None
        return local_isoformat(self.next_run_at, self.timezone)

    @strawberry_django.field(
        only=UPCOMING_RUNS_READS,
        description="upcomingRuns in the rule's time zone (ISO 8601 with each one's UTC offset).",
    )
    def upcoming_runs_local(self, count: int | None = 5) -> list[str]:
        return [local_isoformat(moment, self.timezone) for moment in _upcoming_runs(self, count)]

    @strawberry_django.field(
        prefetch_related=["condition_groups"], description="The root group's logic."
    )
    def condition_logic(self) -> ConditionLogic:
        tree = condition_tree_of(self)
        return tree.logic if tree else ConditionLogic.AND

    @strawberry_django.field(
        prefetch_related=["condition_groups", "conditions"], description="The root group."
    )
    def conditions(self) -> ConditionGroupNode:
        tree = condition_tree_of(self)
        if tree is None:  # pragma: no cover - every rule is created with its root group
            raise RuntimeError(f"Rule {self.pk} has no root condition group.")
        return tree


def _upcoming_runs(rule, count: int | None) -> list[datetime.datetime]:
    """The rule's next fire times (UTC); count checked (1..50, else VALIDATION_ERROR)."""
    from automation.api import upcoming_runs
    from graphql_api.permissions import check_limit

    count = check_limit("count", 5 if count is None else count, 50)
    if count == 0 or rule.trigger_type != choices.TriggerType.SCHEDULE:
        return []
    return upcoming_runs(rule, count)


def condition_tree_of(rule) -> ConditionGroupNode | None:
    """The tree, built once per rule instance per request (conditionLogic and conditions share)."""
    tree = getattr(rule, "_api_condition_tree", None)
    if tree is None:
        tree = condition_tree(rule)
        rule._api_condition_tree = tree
    return tree


@strawberry.type(name="AutomatableModel")
class AutomatableModelInfo:
    model: str
    fields: list[str] = strawberry.field(description="Readable field paths, relations included.")
    writable_fields: list[str] = strawberry.field(
        description="The fields record actions may set (CREATE_RECORD, UPDATE_RECORD)."
    )
    organization_path: str = strawberry.field(
        description='How a record finds its organization: "organization", or a path of foreign '
        'keys such as "project__organization".'
    )


@strawberry.type(name="ActionTypeInfo")
class ActionTypeInfo:
    action_type: ActionType
    parameters_schema: JSON


@strawberry.type(name="TokenPayload")
class TokenPayload:
    token: str = strawberry.field(description="The raw token, shown only here.")
    user: UserType


# --- Catalog -------------------------------------------------------------------------------------


@strawberry_django.type(catalog_models.Category, name="Category")
class CategoryType:
    id: strawberry.ID
    name: str

    @classmethod
    def get_queryset(cls, queryset, info, **kwargs):
        return scoped_to_memberships(queryset, info)


@strawberry_django.type(catalog_models.Product, name="Product")
class ProductType:
    id: strawberry.ID
    organization: OrganizationType
    category: CategoryType | None
    name: str
    description: str
    status: ProductStatus
    price: decimal.Decimal
    stock: int

    @classmethod
    def get_queryset(cls, queryset, info, **kwargs):
        return scoped_to_memberships(queryset, info)
