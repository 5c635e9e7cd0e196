"""Parsed GraphQL documents, once per distinct text: clients send the same few over and over.

Used by the HTTP view's subscription check, by the WebSocket handlers (which run queries and
mutations apart from subscriptions), and by every operation (DocumentCache, a schema
extension). Both parse under the token limit (GRAPHQL_MAX_TOKENS), so a token bomb is cut short
wherever it is parsed first. Only documents that parse are cached: a syntax error is raised
again each time, and the DocumentCache then leaves parsing to Strawberry, whose own error (with
its code) the client gets. Strawberry's ParserCache is not used: with it, a syntax error came
back without a code (tests/api/test_limits.py).
"""

import contextlib
import functools

from graphql import DocumentNode, GraphQLError, get_operation_ast, parse
from strawberry.extensions import SchemaExtension

CACHED_DOCUMENTS = 256


@functools.lru_cache(maxsize=CACHED_DOCUMENTS)
def parse_document(query: str, max_tokens: int | None) -> DocumentNode:
    """The parsed document; GraphQLSyntaxError (or RecursionError) when it does not parse.

    Callers must not change the returned document: it is shared by every request that sends
    the same text.
    """
    return parse(query, max_tokens=max_tokens)


def operation_type(query: str | None, operation_name: str | None, max_tokens: int | None):
    """The OperationType the request selects, or None when the text does not parse or names no
    operation of it (Strawberry then answers with its own error)."""
    if not query:
        return None
    try:
        operation = get_operation_ast(parse_document(query, max_tokens), operation_name)
    except (GraphQLError, RecursionError):
        return None
    return operation.operation if operation is not None else None


class DocumentCache(SchemaExtension):
    """Gives the operation its cached document (after MaxTokensLimiter has set the limit)."""

    def on_parse(self):
        context = self.execution_context
        if context.query and set(context.parse_options) <= {"max_tokens"}:
            with contextlib.suppress(GraphQLError, RecursionError):
                context.graphql_document = parse_document(
                    context.query, context.parse_options.get("max_tokens")
                )
        yield
