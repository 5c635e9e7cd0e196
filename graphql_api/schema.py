"""The Strawberry schema: queries, mutations and subscriptions of the public contract."""

import strawberry
import strawberry_django
from django.conf import settings
from strawberry.extensions import MaxAliasesLimiter, MaxTokensLimiter, QueryDepthLimiter
from strawberry_django.optimizer import DjangoOptimizerExtension

from accounts.models import Organization
from graphql_api.permissions import current_user, memberships
from graphql_api.types import OrganizationType, UserType


@strawberry.type
class Query:
    @strawberry.field(description="The caller, or null when anonymous.")
    def me(self, info: strawberry.Info) -> UserType | None:
        return current_user(info)

    @strawberry_django.field(description="Organizations the caller is a member of.")
    def organizations(self, info: strawberry.Info) -> list[OrganizationType]:
        return Organization.objects.filter(pk__in=memberships(info).keys())


schema = strawberry.Schema(
    query=Query,
    extensions=[
        DjangoOptimizerExtension,
        lambda: QueryDepthLimiter(max_depth=settings.GRAPHQL_MAX_DEPTH),
        lambda: MaxAliasesLimiter(max_alias_count=settings.GRAPHQL_MAX_ALIASES),
        lambda: MaxTokensLimiter(max_token_count=settings.GRAPHQL_MAX_TOKENS),
    ],
)
