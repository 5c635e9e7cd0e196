"""The contract's mutations: check access (permissions), convert input, call one service."""

from typing import Annotated

import strawberry
from django.conf import settings
from django.contrib.auth import authenticate
from django.db import transaction
from django.utils import timezone
from strawberry.scalars import JSON

from accounts import invitations as invitation_services
from accounts.choices import Role as RoleChoice
from accounts.models import ApiToken, Invitation, Membership, Organization
from accounts.ratelimit import login_username
from automation import api as rule_services
from automation.api import AutomationLog, AutomationRule
from catalog import services as catalog_services
from catalog.models import Product
from graphql_api import permissions as perms
from graphql_api.errors import Conflict, InvalidInput, NotFound, Unauthenticated
from graphql_api.inputs import ProductInput, ProductUpdateInput, RuleInput, RuleUpdateInput
from graphql_api.log_types import AutomationLogType, NotificationType
from graphql_api.ratelimit import (
    check_add_member,
    check_create_organization,
    check_obtain_token,
    check_retry,
    dry_run_slot,
)
from graphql_api.types import (
    ApiTokenType,
    CategoryType,
    MemberType,
    OrganizationType,
    ProductType,
    Role,
    RuleType,
    TokenPayload,
)


def _organization(info, id_value, minimum) -> Organization:
    return Organization.objects.get(pk=perms.organization_id(info, id_value, minimum))


def _membership(organization, username: str) -> Membership:
    membership = (
        Membership.objects.select_related("user")
        .filter(organization=organization, user__username=username)
        .first()
    )
    if membership is None:
        raise InvalidInput({"username": ["This user is not a member of the organization."]})
    return membership


def _ensure_another_admin(membership: Membership) -> None:
    """An organization keeps at least one ADMIN: nobody could manage its members otherwise."""
    others = (
        Membership.objects.select_for_update()
        .filter(organization_id=membership.organization_id, role=RoleChoice.ADMIN)
        .exclude(pk=membership.pk)
    )
    if membership.role == RoleChoice.ADMIN and not others.exists():
        raise Conflict("An organization must keep at least one ADMIN.")


@strawberry.type
class Mutation:
    # --- Accounts ---------------------------------------------------------------------------

    @strawberry.mutation(description="The raw token is shown only in this answer.")
    def obtain_token(
        self, info: strawberry.Info, username: str, password: str, name: str | None = "api"
    ) -> TokenPayload:
        request = info.context.request
        # Resolved as the login pages resolve it (NFKC), so every door finds the same user.
        username = login_username(username)
        check_obtain_token(username, request.META.get("REMOTE_ADDR", ""))
        user = authenticate(request, username=username, password=password)
        if user is None or not user.is_active:
            raise Unauthenticated("Invalid username or password.")
        name = "api" if name is None else name
        if not name or len(name) > 100:
            raise InvalidInput({"name": ["A token name has 1 to 100 characters."]})
        _token, raw = ApiToken.issue(user=user, name=name)
        return TokenPayload(token=raw, user=user)

    @strawberry.mutation
    def revoke_token(self, info: strawberry.Info, id: strawberry.ID) -> ApiTokenType:
        user = perms.require_user(info)
        token = ApiToken.objects.filter(user=user, pk=perms.parse_id(id)).first()
        if token is None:
            raise NotFound()
        token.revoke()
        return token

    @strawberry.mutation(
        description="The caller becomes its ADMIN. RATE_LIMITED beyond "
        "ACCOUNTS_ORGANIZATIONS_PER_USER_PER_DAY."
    )
    def create_organization(self, info: strawberry.Info, name: str, slug: str) -> OrganizationType:
        user = perms.require_user(info)
        with transaction.atomic():
            organization = Organization(name=name, slug=slug)
            organization.full_clean()
            # Counted once the input is valid: a mistyped slug costs nothing.
            check_create_organization(user.pk)
            organization.save()
            Membership.objects.create(user=user, organization=organization, role=RoleChoice.ADMIN)
        perms.forget_memberships(info)
        return organization

    @strawberry.mutation(
        description="Invites the user, who joins with acceptInvitation. The same answer whether "
        "or not the username exists; CONFLICT for a member, or for a username holding "
        "ACCOUNTS_OPEN_INVITATIONS_PER_USERNAME open invitations; RATE_LIMITED beyond the "
        "inviter's or the organization's invitations per hour."
    )
    def add_member(
        self, info: strawberry.Info, organization: strawberry.ID, username: str, role: Role
    ) -> OrganizationType:
        org = _organization(info, organization, perms.MANAGE)
        inviter = perms.require_user(info)
        check_add_member(inviter.pk, org.pk)
        try:
            invitation_services.invite(org, username, role, invited_by=inviter)
        except (
            invitation_services.AlreadyMember,
            invitation_services.TooManyOpenInvitations,
        ) as exc:
            raise Conflict(str(exc)) from None
        return org

    @strawberry.mutation(
        description="Joins with the invitation's role. NOT_FOUND unless it is the caller's and open."
    )
    def accept_invitation(self, info: strawberry.Info, id: strawberry.ID) -> OrganizationType:
        user = perms.require_user(info)
        try:
            membership = invitation_services.accept(user, perms.parse_id(id))
        except invitation_services.AlreadyMember as exc:
            raise Conflict(str(exc)) from None
        perms.forget_memberships(info)
        return membership.organization

    @strawberry.mutation(description="NOT_FOUND unless it is the caller's and open.")
    def decline_invitation(self, info: strawberry.Info, id: strawberry.ID) -> strawberry.ID:
        invitation = invitation_services.decline(perms.require_user(info), perms.parse_id(id))
        return strawberry.ID(str(invitation.pk))

    @strawberry.mutation(description="Withdraws an open invitation (ADMIN).")
    def revoke_invitation(self, info: strawberry.Info, id: strawberry.ID) -> strawberry.ID:
        invitation = perms.get_object(info, Invitation.objects.open(), id, perms.MANAGE)
        invitation_services.revoke(invitation)
        return strawberry.ID(str(invitation.pk))

    @strawberry.mutation(description="Refused (CONFLICT) when it would leave no ADMIN.")
    def set_member_role(
        self, info: strawberry.Info, organization: strawberry.ID, username: str, role: Role
    ) -> MemberType:
        org = _organization(info, organization, perms.MANAGE)
        with transaction.atomic():
            membership = _membership(org, username)
            if role != RoleChoice.ADMIN:
                _ensure_another_admin(membership)
            membership.role = role
            membership.save(update_fields=["role", "updated_at"])
        perms.forget_memberships(info)
        return membership

    @strawberry.mutation(
        description="The removed user's id. CONFLICT when it removes the last ADMIN."
    )
    def remove_member(
        self, info: strawberry.Info, organization: strawberry.ID, username: str
    ) -> strawberry.ID:
        org = _organization(info, organization, perms.MANAGE)
        with transaction.atomic():
            membership = _membership(org, username)
            _ensure_another_admin(membership)
            membership.delete()
        perms.forget_memberships(info)
        return strawberry.ID(str(membership.user_id))

    # --- Rules ------------------------------------------------------------------------------

    @strawberry.mutation
    def create_rule(self, info: strawberry.Info, input: RuleInput) -> RuleType:
        org = _organization(info, input.organization, perms.WRITE)
        rule = rule_services.create_rule(org, input.to_data())
        return _reload_rule(rule)

    @strawberry.mutation
    def update_rule(
        self, info: strawberry.Info, id: strawberry.ID, input: RuleUpdateInput
    ) -> RuleType:
        rule = perms.get_object(info, AutomationRule.objects.alive(), id, perms.WRITE)
        rule = rule_services.update_rule(rule, input.to_data())
        return _reload_rule(rule)

    @strawberry.mutation(description="Soft delete: the rule's logs keep it.")
    def delete_rule(self, info: strawberry.Info, id: strawberry.ID) -> strawberry.ID:
        rule = perms.get_object(info, AutomationRule.objects.alive(), id, perms.WRITE)
        rule_services.delete_rule(rule)
        return strawberry.ID(str(rule.pk))

    @strawberry.mutation(
        description=(
            "Give a WEBHOOK rule a new webhookUrl; the old one stops working at once. Other "
            "rules: VALIDATION_ERROR."
        )
    )
    def rotate_rule_webhook(self, info: strawberry.Info, id: strawberry.ID) -> RuleType:
        rule = perms.get_object(info, AutomationRule.objects.alive(), id, perms.WRITE)
        return _reload_rule(rule_services.rotate_webhook(rule))

    @strawberry.mutation(
        description=(
            "Run the rule now, by hand (trigger MANUAL), on objectId when the rule has a model. "
            "A real run is queued and returned PENDING. With dryRun: true the conditions are "
            "evaluated and the actions rendered now, and nothing is written but the run's log "
            "(dryRun true): a dry run of an EVENT rule stands for its event, and may be given "
            "simulated changes and a record."
        )
    )
    def run_rule(
        self,
        info: strawberry.Info,
        id: strawberry.ID,
        object_id: strawberry.ID | None = None,
        dry_run: bool | None = False,
        changes: Annotated[
            JSON | None,
            strawberry.argument(
                description=(
                    'Dry runs only: {"field": {"old": .., "new": ..}} as an update would '
                    "record it (UPDATED rules); the record holds the new values."
                )
            ),
        ] = None,
        record: Annotated[
            JSON | None,
            strawberry.argument(
                description=(
                    'Dry runs only: {"field": value} over the record of objectId, or without '
                    "objectId the whole simulated record."
                )
            ),
        ] = None,
        payload: Annotated[
            JSON | None,
            strawberry.argument(
                description=(
                    "WEBHOOK rules: the JSON object a request would send (its sample in a dry "
                    "run); {} when left out."
                )
            ),
        ] = None,
    ) -> AutomationLogType:
        from automation.api import run_rule

        rule = perms.get_object(info, AutomationRule.objects.alive(), id, perms.WRITE)
        user = info.context.request.user
        given = {"changes": changes, "record": record, "payload": payload}
        if not dry_run:
            return run_rule(rule, object_id=object_id, user=user, **given)
        # Executed here, in this request: at most a few at once per organization.
        with dry_run_slot(rule.organization_id, user.pk):
            return run_rule(rule, object_id=object_id, user=user, dry_run=True, **given)

    @strawberry.mutation(
        description=(
            "Fire a SCHEDULE rule now, as one of its slots would, without moving its schedule: "
            "without a model one PENDING run; with a model a finished fan-out log (returned) "
            "and one PENDING run per matching record. The runs' trigger is MANUAL, so a paused "
            "rule runs too. Other rules: runRule."
        )
    )
    def run_schedule(self, info: strawberry.Info, id: strawberry.ID) -> AutomationLogType:
        from automation.api import fire_now, fires_by_hand

        rule = perms.get_object(info, AutomationRule.objects.alive(), id, perms.WRITE)
        user = info.context.request.user
        fires_by_hand(rule)
        if rule.content_type_id is None:
            return fire_now(rule, user=user)
        # Its records are evaluated here, in this request: bounded like a dry run.
        with dry_run_slot(rule.organization_id, user.pk):
            return fire_now(rule, user=user, budget=settings.AUTOMATION_DRY_RUN_BUDGET_SECONDS)

    @strawberry.mutation(
        description=(
            "A new run with the same context, retryOf set: queued and returned PENDING, or, "
            "for a dry run, a dry run executed now."
        )
    )
    def retry_run(self, info: strawberry.Info, log_id: strawberry.ID) -> AutomationLogType:
        from automation.api import retry_run

        log = perms.get_object(info, AutomationLog.objects.all(), log_id, perms.WRITE)
        check_retry(info.context.request.user.pk)
        if not log.dry_run:
            return retry_run(log, user=info.context.request.user)
        # The retry of a dry run is a dry run, executed in this request like runRule's.
        with dry_run_slot(log.organization_id, info.context.request.user.pk):
            return retry_run(log, user=info.context.request.user)

    @strawberry.mutation
    def mark_notification_read(self, info: strawberry.Info, id: strawberry.ID) -> NotificationType:
        notification = perms.own_notifications(info).filter(pk=perms.parse_id(id)).first()
        if notification is None:
            raise NotFound()
        if notification.read_at is None:
            notification.read_at = timezone.now()
            notification.save(update_fields=["read_at", "updated_at"])
        return notification

    # --- Catalog ----------------------------------------------------------------------------

    @strawberry.mutation
    def create_category(
        self, info: strawberry.Info, organization: strawberry.ID, name: str
    ) -> CategoryType:
        org = _organization(info, organization, perms.WRITE)
        return catalog_services.create_category(org, name)

    @strawberry.mutation
    def create_product(self, info: strawberry.Info, input: ProductInput) -> ProductType:
        org = _organization(info, input.organization, perms.WRITE)
        return catalog_services.create_product(org, input.to_data())

    @strawberry.mutation
    def update_product(
        self, info: strawberry.Info, id: strawberry.ID, input: ProductUpdateInput
    ) -> ProductType:
        with transaction.atomic():
            # The scoped read is the row lock too: one read of the product, not two.
            product = perms.get_object(info, Product.objects.select_for_update(), id, perms.WRITE)
            return catalog_services.update_product(product, input.to_data(), locked=True)

    @strawberry.mutation
    def delete_product(self, info: strawberry.Info, id: strawberry.ID) -> strawberry.ID:
        product = perms.get_object(info, Product.objects.all(), id, perms.WRITE)
        return strawberry.ID(str(catalog_services.delete_product(product)))


def _reload_rule(rule) -> AutomationRule:
    # A fresh instance, so the answer shows the rows as written (tree, actions, revision).
    return AutomationRule.objects.get(pk=rule.pk)
