"""The /graphql/ HTTP endpoint: GraphiQL on GET in a browser, POST (JSON) for clients.

Authentication: `Authorization: Bearer <token>` (accounts.middleware) or a Django session. The view
is not CSRF-exempt: a session-authenticated POST needs the CSRF token (the bundled GraphiQL sends
the csrftoken cookie as X-CSRFToken); token requests are exempt in the middleware. GraphiQL is our
template graphql_api/graphiql.html: Strawberry's page with its JavaScript and CSS served from this
project's static files instead of a public CDN, so it works without internet.

Before Strawberry sees a body: bodies over GRAPHQL_MAX_BODY_BYTES are refused with 413, and JSON
that nests too deeply to decode (RecursionError) or that is not an object (`123`, `"x"`, `null`:
Strawberry answered 500) is a 400. These refusals are GraphQL-shaped JSON
({"errors": [{"message", "extensions": {"code": "GRAPHQL_VALIDATION_FAILED"}}]}) with their HTTP
status. A subscription sent over HTTP is refused with GRAPHQL_VALIDATION_FAILED: this view cannot
stream, WebSocket can.
"""

import json

from cross_web import HTTPException
from django.conf import settings
from django.http import HttpResponse, JsonResponse
from django.middleware.csrf import get_token
from django.template.loader import render_to_string
from graphql import GraphQLError, OperationType
from strawberry.django.views import GraphQLView
from strawberry.types import ExecutionResult

from graphql_api.documents import operation_type
from graphql_api.errors import GRAPHQL_VALIDATION_FAILED
from graphql_api.schema import schema

# Strawberry's GraphiQL page with vendored assets (see the template's header).
GRAPHIQL_TEMPLATE = "graphql_api/graphiql.html"


class ApiGraphQLView(GraphQLView):
    graphql_ide = "graphiql"

    def dispatch(self, request, *args, **kwargs):
        limit = settings.GRAPHQL_MAX_BODY_BYTES
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return refusal(400, "Invalid Content-Length")
        if declared > limit:
            return refusal(413, f"Request body larger than {limit} bytes")
        try:
            return self.run(request=request)
        except HTTPException as exc:
            return refusal(exc.status_code, exc.reason)

    def render_graphql_ide(self, request):
        # GraphiQL posts with the session: give the page the csrftoken cookie it sends back.
        get_token(request)
        return HttpResponse(render_to_string(GRAPHIQL_TEMPLATE, request=request))

    def execute_single(
        self, request, request_adapter, sub_response, context, root_value, request_data
    ):
        if _is_subscription(request_data.query, request_data.operation_name):
            message = (
                "Subscriptions are served over WebSocket at /graphql/ "
                "(graphql-transport-ws or graphql-ws), not over HTTP."
            )
            error = GraphQLError(message, extensions={"code": GRAPHQL_VALIDATION_FAILED})
            return ExecutionResult(data=None, errors=[error])
        return super().execute_single(
            request, request_adapter, sub_response, context, root_value, request_data
        )

    def decode_json(self, data: str | bytes) -> object:
        """JSON of a body (or of a GET's variables): an object, or a list for a batch (which
        Strawberry refuses, batching being off)."""
        try:
            value = json.loads(data)
        except RecursionError:
            raise HTTPException(400, "Request body nests too deeply") from None
        if not isinstance(value, (dict, list)):
            raise HTTPException(400, "The JSON must be an object (query, variables...)")
        return value


graphql_view = ApiGraphQLView.as_view(schema=schema)


def refusal(status: int, message: str) -> JsonResponse:
    """A request refused before GraphQL could read it, in the GraphQL response shape."""
    error = {"message": message, "extensions": {"code": GRAPHQL_VALIDATION_FAILED}}
    return JsonResponse({"data": None, "errors": [error]}, status=status)


def _is_subscription(query: str | None, operation_name: str | None) -> bool:
    """Does the request select a subscription? Unparsable queries are left to Strawberry."""
    kind = operation_type(query, operation_name, settings.GRAPHQL_MAX_TOKENS)
    return kind == OperationType.SUBSCRIPTION
