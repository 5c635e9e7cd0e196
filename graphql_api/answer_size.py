"""The byte limit of an answer, counted while it is built: GRAPHQL_MAX_RESPONSE_BYTES.

The cost (graphql_api/cost.py) counts values, not bytes: a JSON value (a run's `context`,
`changes`, an action's `result`, a trace's `actual`) is one value however large it is stored, so
a 101-byte query of logs with their contexts answered with 23 MB, and 30 aliases of it with
691 MB after holding 2.4 GB in the server. Here the executor adds up the size of the answer's JSON
as it completes each value (every key, every leaf; a JSON value by its encoding), and the moment
the total goes over the limit it stops the whole operation: no further resolver runs, nothing
more is built, and the answer is `data: null` with one RESPONSE_TOO_LARGE error.

The count follows the HTTP view's compact encoding (braces, `"key":` and a comma per field, a
string's characters and quotes); it leaves out the envelope and list brackets and counts an
escaped character once, so it is a close lower bound of the body's size.
"""

import json

from django.conf import settings
from graphql import GraphQLError

from graphql_api.errors import ResponseTooLarge


class _OverLimit(BaseException):  # noqa: N818 - a signal, not an error
    """Unwinds the execution at once. graphql-core turns any Exception raised under a field into
    that field's error and carries on with the next field, so this is a BaseException, and the
    executor's `execute_operation` catches it."""


def json_size(value) -> int:
    """Bytes of a completed leaf in the answer's JSON (compact, as the view writes it)."""
    kind = type(value)
    if kind is str:
        return len(value) + 2
    if kind is bool or value is None:
        return 5
    if kind is int or kind is float:
        return len(repr(value))
    # A JSON scalar's dict or list, a Decimal's string... encoded once, then dropped.
    return len(json.dumps(value, separators=(",", ":"), default=str))


class AnswerSizeLimit:
    """Executor mixin: counts an operation's answer while it is built, and refuses it whole when
    it grows over GRAPHQL_MAX_RESPONSE_BYTES (a subscription: per event)."""

    answer_bytes = 0
    answer_limit = 0

    def execute_operation(self, serially=None):
        self.answer_bytes = 0
        self.answer_limit = settings.GRAPHQL_MAX_RESPONSE_BYTES
        try:
            result = super().execute_operation(serially)
        except _OverLimit:
            return self._too_large()
        if self.is_awaitable(result):
            return self._await_counted(result)
        return result

    async def _await_counted(self, result):
        try:
            return await result
        except _OverLimit:
            return self._too_large()

    def _too_large(self):
        refusal = ResponseTooLarge.for_limit(self.answer_limit)
        error = GraphQLError(str(refusal), nodes=[self.operation], original_error=refusal)
        self.collected_errors = type(self.collected_errors)()
        self.collected_errors.add(error, None)
        return self.build_response(None)

    def _count(self, size: int) -> None:
        self.answer_bytes += size
        if self.answer_bytes > self.answer_limit:
            raise _OverLimit

    def execute_fields(self, parent_type, source_value, path, grouped_field_set, position_context):
        # An object: its braces, and per field `"key":` and a comma.
        self._count(1 + sum(len(name) + 4 for name in grouped_field_set))
        return super().execute_fields(
            parent_type, source_value, path, grouped_field_set, position_context
        )

    def complete_leaf_value(self, return_type, result):
        completed = super().complete_leaf_value(return_type, result)
        self._count(json_size(completed))
        return completed
