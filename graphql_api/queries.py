"""The contract's queries. Thin: scope and role checks come from `permissions`, reads from the
types' get_queryset (scoping) and the optimizer (prefetching)."""

import strawberry
import strawberry_django
from django.core.exceptions import ValidationError
from django.db.models import Value
from strawberry.scalars import JSON
from strawberry.types.nodes import SelectedField

from accounts import invitations as invitation_services
from accounts.models import ApiToken, Invitation, Membership, Organization
from automation.api import (
    AutomationLog,
    AutomationRule,
    automatable_models,
    get_automatable,
    readable_paths,
    record_snapshot,
    stream,
)
from catalog.models import Category, Product
from graphql_api import permissions as perms
from graphql_api.errors import InvalidInput, NotFound
from graphql_api.inputs import LogFilter, given
from graphql_api.log_types import AutomationLogType, LogConnection, NotificationType
from graphql_api.pagination import log_page
from graphql_api.types import (
    ActionType,
    ActionTypeInfo,
    ApiTokenType,
    AutomatableModelInfo,
    CategoryType,
    InvitationType,
    MemberType,
    OrganizationType,
    ProductType,
    RuleType,
    TriggerType,
    UserType,
)

MAX_PAGE = 200
MAX_OFFSET = 10**9

# Log relations read by almost every client: joined up front (the connection type is written by
# hand, so the optimizer does not see through edges/node).
LOG_JOINS = ("rule", "organization", "triggered_by")


@strawberry.type
class Query:
    @strawberry.field(description="The caller, or null when anonymous.")
    def me(self, info: strawberry.Info) -> UserType | None:
        return perms.current_user(info)

    @strawberry_django.field(description="Organizations the caller is a member of, by name.")
    def organizations(
        self, info: strawberry.Info, offset: int | None = 0, limit: int | None = MAX_PAGE
    ) -> list[OrganizationType]:
        queryset = perms.scope(info, Organization.objects.all(), organization_field="pk")
        return _page(queryset, ("name", "id"), offset, limit)

    @strawberry_django.field(description="An organization's members, by username.")
    def members(
        self,
        info: strawberry.Info,
        organization: strawberry.ID,
        offset: int | None = 0,
        limit: int | None = MAX_PAGE,
    ) -> list[MemberType]:
        org_id = perms.organization_id(info, organization)
        queryset = Membership.objects.filter(organization_id=org_id)
        return _page(queryset, ("user__username", "id"), offset, limit)

    @strawberry_django.field(description="Open invitations to the caller, newest first.")
    def invitations(
        self, info: strawberry.Info, offset: int | None = 0, limit: int | None = MAX_PAGE
    ) -> list[InvitationType]:
        queryset = invitation_services.invitations_for(perms.require_user(info))
        return _page(queryset, ("-created_at", "-id"), offset, limit)

    @strawberry_django.field(
        description="An organization's open invitations (ADMIN), newest first."
    )
    def organization_invitations(
        self,
        info: strawberry.Info,
        organization: strawberry.ID,
        offset: int | None = 0,
        limit: int | None = MAX_PAGE,
    ) -> list[InvitationType]:
        org_id = perms.organization_id(info, organization, perms.MANAGE)
        queryset = Invitation.objects.open().filter(organization_id=org_id)
        return _page(queryset, ("-created_at", "-id"), offset, limit)

    @strawberry_django.field(description="The caller's own API tokens, newest first.")
    def tokens(
        self, info: strawberry.Info, offset: int | None = 0, limit: int | None = MAX_PAGE
    ) -> list[ApiTokenType]:
        queryset = ApiToken.objects.filter(user=perms.require_user(info))
        return _page(queryset, ("-created_at", "-id"), offset, limit)

    @strawberry_django.field(description="Rules not deleted, sorted by name.")
    def rules(
        self,
        info: strawberry.Info,
        organization: strawberry.ID | None = None,
        is_active: bool | None = None,
        trigger_type: TriggerType | None = None,
        offset: int | None = 0,
        limit: int | None = 50,
    ) -> list[RuleType]:
        offset = perms.check_limit("offset", 0 if offset is None else offset, MAX_OFFSET)
        limit = perms.check_limit("limit", 50 if limit is None else limit, MAX_PAGE)
        queryset = AutomationRule.objects.alive()
        if organization is not None:
            queryset = queryset.filter(organization_id=perms.organization_id(info, organization))
        if is_active is not None:
            queryset = queryset.filter(is_active=is_active)
        if trigger_type is not None:
            queryset = queryset.filter(trigger_type=trigger_type)
        return _window(perms.scope(info, queryset), ("name", "id"), offset, limit)

    @strawberry_django.field(description="A rule not deleted.")
    def rule(self, info: strawberry.Info, id: strawberry.ID) -> RuleType:
        return AutomationRule.objects.alive().filter(pk=perms.parse_id(id))

    @strawberry.field(description="Runs, newest first, with keyset cursors.")
    def logs(
        self,
        info: strawberry.Info,
        organization: strawberry.ID | None = None,
        filter: LogFilter | None = None,
        first: int | None = 50,
        after: str | None = None,
    ) -> LogConnection:
        first = perms.check_limit("first", 50 if first is None else first, MAX_PAGE)
        queryset = AutomationLog.objects.select_related(*LOG_JOINS)
        stream_cursor = None
        if organization is not None:
            organization_id = perms.organization_id(info, organization)
            organizations = [organization_id]
            if selects(info, "streamCursor"):
                # Read before the page: an event committed in between is then both in the page
                # and after the cursor (a client drops it by its cursor), never in neither.
                stream_cursor = stream.encode(organization_id, stream.head(organization_id))
        else:
            perms.require_user(info)
            organizations = list(perms.memberships(info))
        # Lists of values are read one value at a time and merged (keyset.split): an IN list
        # would make the database sort every matching log before returning the first.
        by = {"organization_id": organizations}
        if filter is not None:
            queryset = _filter_logs(info, queryset, filter, by)
        return log_page(
            queryset,
            by,
            first,
            after,
            stream_cursor=stream_cursor,
            stream_positions=selects(info, "edges", "node", "cursor"),
        )

    @strawberry_django.field
    def log(self, info: strawberry.Info, id: strawberry.ID) -> AutomationLogType:
        return AutomationLog.objects.filter(pk=perms.parse_id(id))

    @strawberry.field(description="Automatable models and the field paths rules may read.")
    def available_models(self, info: strawberry.Info) -> list[AutomatableModelInfo]:
        perms.require_user(info)
        return [
            AutomatableModelInfo(
                model=label,
                fields=readable_paths(label),
                writable_fields=list(entry.writable),
                organization_path=entry.organization,
            )
            for label, entry in sorted(automatable_models().items())
        ]

    @strawberry.field(
        description="One record of an automatable model, as rules read it: its readable fields "
        "(a relation to one as the related id), of the caller's organizations."
    )
    def record(self, info: strawberry.Info, model: str, id: strawberry.ID) -> JSON:
        entry = _automatable(model)
        perms.require_user(info)
        members_of = list(perms.memberships(info))
        queryset = entry.model._default_manager.filter(
            **{f"{entry.organization_lookup}__in": members_of}
        )
        instance = queryset.filter(pk=_record_pk(entry, id)).first()
        if instance is None:
            raise NotFound()
        return record_snapshot(instance)

    @strawberry.field(
        description="An organization's records of an automatable model, by id, as `record` "
        "shows each."
    )
    def records(
        self,
        info: strawberry.Info,
        model: str,
        organization: strawberry.ID,
        offset: int | None = 0,
        limit: int | None = MAX_PAGE,
    ) -> list[JSON]:
        entry = _automatable(model)
        queryset = entry.of_organization(perms.organization_id(info, organization))
        offset = perms.check_limit("offset", 0 if offset is None else offset, MAX_OFFSET)
        limit = perms.check_limit("limit", MAX_PAGE if limit is None else limit, MAX_PAGE)
        return [record_snapshot(row) for row in queryset.order_by("pk")[offset : offset + limit]]

    @strawberry.field(description="Each action type with its parameters' JSON Schema.")
    def action_types(self, info: strawberry.Info) -> list[ActionTypeInfo]:
        from automation.api import registered_handlers

        perms.require_user(info)
        return [
            ActionTypeInfo(
                action_type=ActionType(handler.action_type),
                parameters_schema=handler.parameters_schema,
            )
            for handler in registered_handlers()
        ]

    @strawberry_django.field(description="The caller's notifications, newest first.")
    def notifications(
        self,
        info: strawberry.Info,
        unread_only: bool | None = False,
        limit: int | None = MAX_PAGE,
    ) -> list[NotificationType]:
        limit = perms.check_limit("limit", MAX_PAGE if limit is None else limit, MAX_PAGE)
        queryset = perms.own_notifications(info)
        if unread_only:
            queryset = queryset.filter(read_at__isnull=True)
        return _window(queryset, ("-created_at", "-id"), 0, limit)

    @strawberry_django.field(description="An organization's products, by name.")
    def products(
        self,
        info: strawberry.Info,
        organization: strawberry.ID,
        offset: int | None = 0,
        limit: int | None = MAX_PAGE,
    ) -> list[ProductType]:
        queryset = Product.objects.filter(organization_id=perms.organization_id(info, organization))
        return _page(queryset, ("name", "id"), offset, limit)

    @strawberry_django.field
    def product(self, info: strawberry.Info, id: strawberry.ID) -> ProductType:
        return Product.objects.filter(pk=perms.parse_id(id))

    @strawberry_django.field(description="An organization's categories, by name.")
    def categories(
        self,
        info: strawberry.Info,
        organization: strawberry.ID,
        offset: int | None = 0,
        limit: int | None = MAX_PAGE,
    ) -> list[CategoryType]:
        queryset = Category.objects.filter(
            organization_id=perms.organization_id(info, organization)
        )
        return _page(queryset, ("name", "id"), offset, limit)


def _page(queryset, ordering, offset: int | None, limit: int | None):
    """One page of a list with `offset` and `limit` (default and cap MAX_PAGE): every list of
    the API is bounded (an organization's 49,000 products used to come in one answer). A value
    over the cap is a VALIDATION_ERROR, not clamped, like `rules(limit)`."""
    offset = perms.check_limit("offset", 0 if offset is None else offset, MAX_OFFSET)
    limit = perms.check_limit("limit", MAX_PAGE if limit is None else limit, MAX_PAGE)
    return _window(queryset, ordering, offset, limit)


def _window(queryset, ordering, offset: int, limit: int):
    """Rows offset..offset+limit, as an unsliced queryset (pk IN a sliced subquery).

    strawberry-django filters the returned queryset again (the type's get_queryset) and lets the
    optimizer add its prefetches; Django refuses to filter a sliced queryset, so the window is a
    subquery: still one SQL statement.
    """
    window = queryset.order_by(*ordering).values("pk")[offset : offset + limit]
    return queryset.model.objects.filter(pk__in=window).order_by(*ordering)


def selects(info: strawberry.Info, *path: str) -> bool:
    """Does the operation select this path of fields below the current one (through
    fragments, under any alias)?"""
    fields = info.selected_fields
    for name in path:
        fields = [child for field in fields for child in _children(field) if child.name == name]
        if not fields:
            return False
    return True


def _children(field):
    for child in field.selections:
        if isinstance(child, SelectedField):
            yield child
        else:  # a fragment, named or inline: its selections are the field's
            yield from _children(child)


def _filter_logs(info, queryset, log_filter: LogFilter, by: dict[str, list]):
    """`queryset` with the filter's single values applied; its lists go into `by`."""
    if given(log_filter.rule):
        # A deleted rule's logs stay readable; another organization's rule is NOT_FOUND.
        rule = perms.get_object(info, AutomationRule.objects.all(), log_filter.rule)
        queryset = queryset.filter(rule=rule)
    if given(log_filter.statuses):
        by["status"] = list(log_filter.statuses)
    if given(log_filter.trigger):
        queryset = queryset.filter(trigger=log_filter.trigger)
    if given(log_filter.object_type):
        content_type = _content_type(log_filter.object_type)
        queryset = queryset.filter(content_type=content_type)
    if given(log_filter.object_id):
        queryset = queryset.filter(object_id=str(log_filter.object_id))
        if not given(log_filter.object_type):
            # The record of that id of each automatable model: each is one range of the
            # record index (content type, object id).
            by["content_type_id"] = _automatable_content_type_ids()
    if given(log_filter.created_after):
        queryset = queryset.filter(created_at__gt=log_filter.created_after)
    if given(log_filter.created_before):
        queryset = queryset.filter(created_at__lt=log_filter.created_before)
    if given(log_filter.dry_run):
        # `= %s`, not Django's bare `WHERE dry_run` for True: SQLite bounds an index with an
        # equality only (log_org_dry_run_idx).
        queryset = queryset.filter(dry_run=Value(log_filter.dry_run))
    return queryset


def _automatable(label: str, argument: str = "model"):
    """The registration of an automatable model argument; VALIDATION_ERROR when there is none."""
    try:
        return get_automatable(label)
    except LookupError as exc:
        raise InvalidInput({argument: [str(exc)]}) from None


def _record_pk(entry, value):
    """A record id in the model's primary key type; anything else names no record."""
    try:
        return entry.model._meta.pk.to_python(str(value).strip())
    except ValidationError:
        raise NotFound() from None


def _content_type(label: str):
    from django.contrib.contenttypes.models import ContentType

    entry = _automatable(label, "filter.objectType")
    return ContentType.objects.get_for_model(entry.model)


def _automatable_content_type_ids() -> list[int]:
    from django.contrib.contenttypes.models import ContentType

    models = [entry.model for entry in automatable_models().values()]
    return sorted(ct.pk for ct in ContentType.objects.get_for_models(*models).values())
