"""The Strawberry schema of the public contract (queries and mutations; subscriptions join later).

Extensions, in order: the optimizer (prefetching for strawberry-django fields), the depth, alias
and token limits (settings GRAPHQL_MAX_*; refused before execution), and ErrorCodes, which gives
every error its `extensions.code` and masks unexpected ones (graphql_api/errors.py). The executor
renders a live event once for all equal subscriptions (graphql_api/shared_render.py).
"""

import decimal

import strawberry
from django.conf import settings
from strawberry.extensions import MaxAliasesLimiter, MaxTokensLimiter, QueryDepthLimiter
from strawberry_django.optimizer import DjangoOptimizerExtension

from graphql_api.errors import ErrorCodes
from graphql_api.mutations import Mutation
from graphql_api.queries import Query
from graphql_api.shared_render import SharedRenderExecutor
from graphql_api.subscriptions import Subscription
from graphql_api.types import DecimalScalar


class ApiSchema(strawberry.Schema):
    def process_errors(self, errors, execution_context=None) -> None:
        # ErrorCodes logs the unexpected errors, with their correlation id. Strawberry's default
        # would log every public error (a wrong password, a NOT_FOUND) as a server error too.
        return None


def build_schema(subscription=None) -> strawberry.Schema:
    """The schema; `subscription` is the Subscription type once live events are served."""
    return ApiSchema(
        query=Query,
        mutation=Mutation,
        subscription=subscription,
        scalar_overrides={decimal.Decimal: DecimalScalar},
        execution_context_class=SharedRenderExecutor,
        extensions=[
            DjangoOptimizerExtension,
            lambda: QueryDepthLimiter(max_depth=settings.GRAPHQL_MAX_DEPTH),
            lambda: MaxAliasesLimiter(max_alias_count=settings.GRAPHQL_MAX_ALIASES),
            lambda: MaxTokensLimiter(max_token_count=settings.GRAPHQL_MAX_TOKENS),
            ErrorCodes,
        ],
    )


schema = build_schema(subscription=Subscription)
