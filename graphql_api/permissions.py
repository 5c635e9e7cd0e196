"""Who may do what: the one place the API asks "may this user ...?".

Scoping: every object of an organization is looked up through `scope()`, which keeps only the
organizations the caller is a member of. An id from another organization therefore looks exactly
like an id that does not exist (NOT_FOUND): a non-member learns nothing.

Roles: VIEWER reads; EDITOR also writes rules and catalog records and runs rules; ADMIN also
manages members and invitations. `require_role()` raises PERMISSION_DENIED for a member whose role
is too low, saying which role is needed (`extensions.requiredRole`, and the member's `role`). An invitation is the one record a non-member reads: the one addressed to them.
"""

import strawberry
from django.db.models import Q, QuerySet

from accounts.choices import ROLE_RANK, Role
from accounts.invitations import invitations_for
from accounts.middleware import bearer_token
from accounts.models import ApiToken, Membership, Notification
from graphql_api.errors import InvalidInput, NotFound, PermissionDenied, Unauthenticated

READ = Role.VIEWER
WRITE = Role.EDITOR
MANAGE = Role.ADMIN


def current_user(info: strawberry.Info):
    """The authenticated caller, or None when the request carries no credentials.

    A request that presented a bearer token which does not authenticate (unknown, revoked, user
    deactivated) is refused, rather than treated as anonymous, so a client learns its token is
    bad and why; so is one whose Authorization header is not `Bearer <token>` and that has no
    session (the message hints at the right form).
    """
    request = info.context.request
    user = request.user
    if user.is_authenticated:
        return user
    if getattr(request, "token_authenticated", False):
        raw = bearer_token(request.headers.get("Authorization"))
        raise Unauthenticated(ApiToken.refusal_reason(raw))
    problem = getattr(request, "authorization_problem", None)
    if problem:
        raise Unauthenticated(problem)
    return None


def require_user(info: strawberry.Info):
    user = current_user(info)
    if user is None:
        raise Unauthenticated()
    return user


def memberships(info: strawberry.Info) -> dict[int, str]:
    """{organization id: role} of the caller, read once per request."""
    cache = getattr(info.context, "_memberships", None)
    if cache is None:
        user = current_user(info)
        cache = (
            dict(Membership.objects.filter(user=user).values_list("organization_id", "role"))
            if user
            else {}
        )
        info.context._memberships = cache
    return cache


def forget_memberships(info: strawberry.Info) -> None:
    """Drop the per-request cache after a mutation changed the caller's memberships."""
    info.context._memberships = None


def role_in(info: strawberry.Info, organization_id) -> str | None:
    return memberships(info).get(int(organization_id))


def parse_id(value, field: str = "id") -> int:
    """A contract ID (decimal string) as an int. Anything else cannot name a record: NOT_FOUND."""
    text = str(value).strip()
    if not text.isdigit() or len(text) > 18:
        raise NotFound()
    return int(text)


def scope(info: strawberry.Info, queryset: QuerySet, organization_field: str = "organization"):
    """Only the rows of organizations the caller is a member of (none when anonymous)."""
    require_user(info)
    return queryset.filter(**{f"{organization_field}__in": list(memberships(info))})


def own_notifications(info: strawberry.Info, queryset: QuerySet | None = None) -> QuerySet:
    """The caller's notifications, of the organizations they are still a member of: a removed
    member no longer reads (or marks) what the organization sent them. The `notifications`
    subscription applies the same rule per event, with the connection's membership check."""
    if queryset is None:
        queryset = Notification.objects.all()
    return scope(info, queryset.filter(recipient=require_user(info)))


def require_role(info: strawberry.Info, organization_id, minimum: str) -> str:
    """The caller's role in the organization; NOT_FOUND for a non-member, PERMISSION_DENIED when
    the role ranks below `minimum`."""
    require_user(info)
    role = role_in(info, organization_id)
    if role is None:
        raise NotFound()
    if ROLE_RANK[Role(role)] < ROLE_RANK[Role(minimum)]:
        raise PermissionDenied(
            f"This needs the {_roles_from(minimum)} role in this organization; yours is {role}.",
            requiredRole=str(minimum),
            role=role,
        )
    return role


def _roles_from(minimum: str) -> str:
    """ "EDITOR or ADMIN": the roles that rank at least `minimum`."""
    roles = [
        str(r) for r in sorted(Role, key=ROLE_RANK.get) if ROLE_RANK[r] >= ROLE_RANK[Role(minimum)]
    ]
    return " or ".join(roles)


def organization_id(info: strawberry.Info, value, minimum: str = READ) -> int:
    """A given `organization: ID` argument, checked for membership and role."""
    org_id = parse_id(value)
    require_role(info, org_id, minimum)
    return org_id


def get_object(
    info: strawberry.Info,
    queryset: QuerySet,
    id_value,
    minimum: str = READ,
    organization_field: str = "organization",
):
    """One record of the caller's organizations by id, with the role check for the operation."""
    obj = scope(info, queryset, organization_field).filter(pk=parse_id(id_value)).first()
    if obj is None:
        raise NotFound()
    require_role(info, getattr(obj, f"{organization_field}_id"), minimum)
    return obj


def visible_invitations(info: strawberry.Info, queryset: QuerySet) -> QuerySet:
    """The invitations the caller may read: those addressed to them (they are not members of
    the organization yet) and those of the organizations they are ADMIN of."""
    user = require_user(info)
    administered = [org_id for org_id, role in memberships(info).items() if role == MANAGE]
    return queryset.filter(
        Q(pk__in=invitations_for(user).values("pk")) | Q(organization_id__in=administered)
    )


def check_limit(name: str, value: int, maximum: int) -> int:
    """The contract's list caps: an argument above the cap is a VALIDATION_ERROR, not clamped."""
    if value is None or value < 0 or value > maximum:
        raise InvalidInput({name: [f"Must be between 0 and {maximum}."]})
    return value
