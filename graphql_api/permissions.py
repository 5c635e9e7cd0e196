"""Organization membership and role checks: the one place the API asks "may this user ...?"."""

import strawberry

from accounts.models import Membership


def current_user(info: strawberry.Info):
    user = info.context.request.user
    return user if user.is_authenticated else None


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


def role_in(info: strawberry.Info, organization_id) -> str | None:
    return memberships(info).get(int(organization_id))
