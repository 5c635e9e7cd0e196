"""The Strawberry schema of the public contract (queries and mutations; subscriptions join later).

Extensions, in order: the optimizer (prefetching for strawberry-django fields), the depth, alias
and token limits (settings GRAPHQL_MAX_*; refused before execution), caches of parsed documents
(graphql_api/documents.py) and of validation results (clients send the same few documents again
and again, and validating one was milliseconds of every request), the checks that need the
variables (cost and NUL characters, graphql_api/guards.py: after the validation cache, which
validates the document first), and ErrorCodes, which gives every error its `extensions.code`
and masks unexpected ones (graphql_api/errors.py). The executor
renders a live event once for all equal subscriptions (graphql_api/shared_render.py).
"""

import decimal
import functools

import strawberry
from django.conf import settings
from strawberry.extensions import (
    AddValidationRules,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    QueryDepthLimiter,
    ValidationCache,
)
from strawberry_django.optimizer import DjangoOptimizerExtension

from graphql_api.documents import DocumentCache
from graphql_api.errors import ErrorCodes
from graphql_api.guards import PreExecutionChecks
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


@functools.cache
def _limit_rules(max_depth: int, max_aliases: int) -> tuple:
    """The depth and alias validation rules, made once per limit value: each limiter makes a new
    rule class when built, and the validation cache recognises a document's rules by identity."""
    return (
        *QueryDepthLimiter(max_depth=max_depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=max_aliases).validation_rules,
    )


class RequestLimits(AddValidationRules):
    """The depth and alias limits of the settings (GRAPHQL_MAX_DEPTH, GRAPHQL_MAX_ALIASES)."""

    def __init__(self):
        rules = _limit_rules(settings.GRAPHQL_MAX_DEPTH, settings.GRAPHQL_MAX_ALIASES)
        super().__init__(list(rules))


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
            RequestLimits,
            lambda: MaxTokensLimiter(max_token_count=settings.GRAPHQL_MAX_TOKENS),
            DocumentCache,
            lambda: ValidationCache(maxsize=256),
            PreExecutionChecks,
            ErrorCodes,
        ],
    )


schema = build_schema(subscription=Subscription)
