"""WebSocket routing for GraphQL on /graphql/: subscriptions over graphql-transport-ws and graphql-ws.

`ApiWebSocketConsumer` is Strawberry's Channels consumer plus:
- authentication at connection_init (graphql_api/live_auth.py). A refused connection is closed
  with 4403 and the reason as the close reason (graphql-transport-ws: Strawberry's own reason is
  always "Forbidden", so `ApiWebSocketAdapter` puts ours in its place), or answered with
  connection_error {"message": reason, "code": "UNAUTHENTICATED"} (graphql-ws);
- a frame that is not a message of the protocol closes the connection with 4400 and the reason
  (after a connection_error on graphql-ws): JSON that nests too deeply to decode (json.loads
  raised RecursionError), or a message that is not an object or whose id, type or payload has
  the wrong type. Strawberry does not catch those errors, and the socket hung;
- at most GRAPHQL_MAX_SUBSCRIPTIONS_PER_CONNECTION operations at once on a connection: one more
  gets an error with GRAPHQL_VALIDATION_FAILED saying so, and the others go on;
- queries and mutations (both protocols allow them) run as over HTTP: in Channels' sync thread
  with `execute_sync`, the same schema extensions (depth, aliases, tokens, cost), the same
  resolvers and permission checks, acting as the connection's user, whose credential is checked
  again first (a revoked token gets UNAUTHENTICATED, as over HTTP). Strawberry ran them on the
  event loop, where the first database read raised SynchronousOnlyOperation (graphql-transport-ws)
  or refused them (graphql-ws). One result (`next` / `data`, then `complete`), shaped like the
  HTTP answer: data, and errors with their codes;
- at most GRAPHQL_MAX_WEBSOCKETS_PER_USER connections per user, across every server process, and
  GRAPHQL_MAX_UNAUTHENTICATED_WEBSOCKETS_PER_ADDRESS per client address while they have not
  authenticated (graphql_api/websocket_slots.py). One more is closed with 4429 and the reason
  (graphql-ws: after a connection_error with code RATE_LIMITED, when at connection_init).

Browser origins: a same-origin page (GraphiQL served by this server) and non-browser clients
(no Origin header) are always let through by Strawberry; other origins must be listed in the
WEBSOCKET_ALLOWED_ORIGINS setting (which, unless set, lists the CORS_ALLOWED_ORIGINS of
/graphql/ over HTTP), since a cross-site page would otherwise ride on the user's session cookie.
"""

import asyncio
import json
import logging

from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.routing import URLRouter
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.urls import re_path
from graphql import GraphQLError, OperationType
from strawberry.channels import GraphQLWSConsumer
from strawberry.channels.handlers.ws_handler import ChannelsWebSocketAdapter
from strawberry.exceptions import ConnectionRejectionError
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType as StrawberryOperationType
from strawberry.types.unset import UNSET

from accounts.current import acting_as
from automation.api import live
from graphql_api.documents import operation_type
from graphql_api.errors import GRAPHQL_VALIDATION_FAILED, RATE_LIMITED, UNAUTHENTICATED
from graphql_api.live_auth import Refused, authenticate
from graphql_api.schema import schema
from graphql_api.websocket_slots import ConnectionSlots
from observability import metrics

logger = logging.getLogger("graphql_api.websocket")

REFUSED_CLOSE_CODE = 4403
LEGACY_REFUSED_CLOSE_CODE = 1011  # Strawberry's close after a graphql-ws connection_error
TOO_MANY_CLOSE_CODE = 4429
# Close reasons hold at most 123 bytes.
TOO_MANY_FOR_USER = (
    "Too many connections: you already have {limit} open (GRAPHQL_MAX_WEBSOCKETS_PER_USER)."
)
TOO_MANY_FOR_ADDRESS = (
    "Too many unauthenticated connections from your address "
    "(GRAPHQL_MAX_UNAUTHENTICATED_WEBSOCKETS_PER_ADDRESS)."
)
INVALID_MESSAGE_CLOSE_CODE = 4400
TOO_DEEP = "WebSocket message nests too deeply"
OPERATION_TYPES = ("subscribe", "start")
ONE_RESULT = (OperationType.QUERY, OperationType.MUTATION)
# The same two as Strawberry names them (execute_sync's allowed_operation_types).
ONE_RESULT_TYPES = (StrawberryOperationType.QUERY, StrawberryOperationType.MUTATION)


class InvalidFrame(Exception):
    """A frame that is not a message of the protocol; the message is the close reason."""


def check_message(message) -> None:
    """Raise InvalidFrame for a decoded frame that is not a well-formed message: each field
    Strawberry's handlers read must have the type they expect."""
    if not isinstance(message, dict):
        raise InvalidFrame("WebSocket message must be a JSON object")
    if not isinstance(message.get("type"), str):
        raise InvalidFrame("Message type must be a string")
    if "id" in message and not isinstance(message["id"], str):
        raise InvalidFrame("Message id must be a string")
    if message["type"] in OPERATION_TYPES:
        payload = message.get("payload")
        if not isinstance(payload, dict) or not isinstance(payload.get("query"), str):
            raise InvalidFrame("An operation's payload must be an object with a query string")
        if not isinstance(payload.get("variables") or {}, dict):
            raise InvalidFrame("An operation's variables must be an object")
        if not isinstance(payload.get("operationName") or "", str):
            raise InvalidFrame("An operation's operationName must be a string")


class ConnectionContext(dict):
    """The context of every operation on one connection.

    A dict, as Strawberry's Channels integration expects ("request", "ws", "connection_params"),
    that also reads like the HTTP context (`context.request.user`) for the API's permission
    helpers. Request-scoped caches (attributes starting with "_") are not kept: a connection
    lives for hours, and a cached membership would outlive its removal.
    """

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        if not name.startswith("_"):
            self[name] = value


class OperationContext(ConnectionContext):
    """The context of one query or mutation: like an HTTP request's, it keeps request-scoped
    caches (`_memberships`), which live only as long as the operation."""

    def __setattr__(self, name, value):
        self[name] = value


class OperationRequest:
    """What the resolvers read of `context.request` (see graphql_api/permissions.py and
    obtainToken), for an operation over WebSocket: the user, and the client's address."""

    token_authenticated = False
    authorization_problem = None

    def __init__(self, user, client_address: str):
        self.user = user
        self.META = {"REMOTE_ADDR": client_address}
        self.headers = {}


def runs_once(query: str | None, operation_name: str | None) -> bool:
    """Is this a query or a mutation (one result), rather than a subscription? Text that does
    not parse is left to Strawberry, which answers it with its own error."""
    return operation_type(query, operation_name, settings.GRAPHQL_MAX_TOKENS) in ONE_RESULT


def too_many_operations(limit: int) -> GraphQLError:
    metrics.refused("GRAPHQL_MAX_SUBSCRIPTIONS_PER_CONNECTION")
    return GraphQLError(
        f"This connection already runs {limit} operations "
        "(GRAPHQL_MAX_SUBSCRIPTIONS_PER_CONNECTION): complete one, or open another connection.",
        extensions={"code": GRAPHQL_VALIDATION_FAILED},
    )


class ApiWebSocketAdapter(ChannelsWebSocketAdapter):
    async def close(self, code: int, reason: str) -> None:
        """Strawberry closes a refused connection_init with 4403 "Forbidden" (graphql-ws: 1011
        and no reason): give the client our reason, and 4429 for a connection over the cap."""
        consumer = self.ws_consumer
        if consumer.refusal is not None:
            if code == REFUSED_CLOSE_CODE:
                reason = consumer.refusal
            if consumer.refusal_code is not None and code in (
                REFUSED_CLOSE_CODE,
                LEGACY_REFUSED_CLOSE_CODE,
            ):
                code, reason = consumer.refusal_code, consumer.refusal
        await super().close(code, reason)


class TransportWSHandler(BaseGraphQLTransportWSHandler):
    """graphql-transport-ws, with the frame checks and a coded operation limit."""

    async def handle(self) -> None:
        try:
            await super().handle()
        except InvalidFrame as invalid:
            await self.websocket.close(code=INVALID_MESSAGE_CLOSE_CODE, reason=str(invalid))

    async def handle_message(self, message) -> None:
        check_message(message)
        await super().handle_message(message)

    async def handle_subscribe(self, message) -> None:
        limit = self.max_subscriptions_per_connection
        if (
            self.connection_acknowledged
            and limit is not None
            and message.get("id") not in self.operations
            and len(self.operations) >= limit
        ):
            error = too_many_operations(limit)
            await self.send_message(
                {"id": message["id"], "type": "error", "payload": [error.formatted]}
            )
            return
        await super().handle_subscribe(message)

    async def run_operation(self, operation) -> None:
        if not runs_once(operation.query, operation.operation_name):
            await super().run_operation(operation)
            return
        try:
            result = await self.view.execute_once(
                operation.query, operation.variables, operation.operation_name
            )
            await operation.send_next(result)
        except Exception as error:  # outside execution (the credential's read): as Strawberry
            await self.handle_task_exception(error)
        await operation.send_operation_message({"id": operation.id, "type": "complete"})


class LegacyWSHandler(BaseGraphQLWSHandler):
    """graphql-ws, with the frame checks and a coded operation limit."""

    async def handle(self) -> None:
        try:
            await super().handle()
        except InvalidFrame as invalid:
            error = {"type": "connection_error", "payload": {"message": str(invalid)}}
            await self.send_message(error)
            await self.websocket.close(code=INVALID_MESSAGE_CLOSE_CODE, reason=str(invalid))

    async def handle_message(self, message) -> None:
        check_message(message)
        await super().handle_message(message)

    async def handle_start(self, message) -> None:
        limit = self.max_subscriptions_per_connection
        if (
            self.connection_acknowledged
            and limit is not None
            and message.get("id") not in self.tasks
            and len(self.tasks) >= limit
        ):
            error = too_many_operations(limit)
            await self.send_message(
                {"type": "error", "id": message["id"], "payload": error.formatted}
            )
            return
        await super().handle_start(message)

    async def handle_async_results(self, operation_id, query, operation_name, variables) -> None:
        if not runs_once(query, operation_name):
            await super().handle_async_results(operation_id, query, operation_name, variables)
            return
        try:
            result = await self.view.execute_once(query, variables, operation_name)
            await self.send_data_message(result, operation_id)
            await self.send_message({"type": "complete", "id": operation_id})
        except asyncio.CancelledError:  # stopped by the client, as Strawberry answers it
            await self.send_message({"type": "complete", "id": operation_id})
        finally:
            self.tasks.pop(operation_id, None)


class ApiWebSocketConsumer(GraphQLWSConsumer):
    """One WebSocket connection. `access` is None until connection_init authenticated it;
    `refusal` is why it was refused, if it was."""

    websocket_adapter_class = ApiWebSocketAdapter
    graphql_transport_ws_handler_class = TransportWSHandler
    graphql_ws_handler_class = LegacyWSHandler
    access = None
    refusal = None
    refusal_code = None
    token_authenticated = False

    async def connect(self) -> None:
        # In embedded mode the publish hook must deliver on this loop (see automation/live/events.py).
        live.attach_event_loop(asyncio.get_running_loop())
        self.max_subscriptions_per_connection = settings.GRAPHQL_MAX_SUBSCRIPTIONS_PER_CONNECTION
        self.user = AnonymousUser()
        self.slots = ConnectionSlots()
        client = self.scope.get("client") or ("unknown", 0)
        self.address_key = f"address:{client[0]}"
        await super().connect()

    async def run(self, request, context=UNSET, root_value=UNSET):
        """The connection's whole life: it holds a slot of its address until it authenticates
        (then one of its user), and gives its slots back when it ends, however it ends."""
        try:
            limit = settings.GRAPHQL_MAX_UNAUTHENTICATED_WEBSOCKETS_PER_ADDRESS
            if not await self.slots.take(self.address_key, limit):
                metrics.refused("GRAPHQL_MAX_UNAUTHENTICATED_WEBSOCKETS_PER_ADDRESS")
                await self.refuse_at_open(TOO_MANY_FOR_ADDRESS)
                return self
            return await super().run(request, context, root_value)
        except GeneratorExit:  # dropped unfinished (a closing loop): nothing may be awaited
            self.slots.abandon()
            raise
        finally:
            await self.slots.give_back_all()

    async def refuse_at_open(self, reason: str) -> None:
        """Accept (a close before accepting is an HTTP 403 without a reason), then close."""
        await self.accept(subprotocol=await self.pick_websocket_subprotocol(self))
        await self.close(code=TOO_MANY_CLOSE_CODE, reason=reason)

    async def get_context(self, request, response) -> ConnectionContext:
        return ConnectionContext(request=request, ws=request)

    def decode_json(self, data: str | bytes) -> object:
        try:
            return json.loads(data)
        except RecursionError:
            raise InvalidFrame(TOO_DEEP) from None

    async def on_ws_connect(self, context):
        try:
            access = await authenticate(context.get("connection_params"), self.scope)
        except Refused as refused:
            self.refusal = str(refused)
            raise ConnectionRejectionError(
                {"message": self.refusal, "code": UNAUTHENTICATED}
            ) from None
        limit = settings.GRAPHQL_MAX_WEBSOCKETS_PER_USER
        if not await self.slots.take(f"user:{access.user.pk}", limit):
            metrics.refused("GRAPHQL_MAX_WEBSOCKETS_PER_USER")
            self.refusal = TOO_MANY_FOR_USER.format(limit=limit)
            self.refusal_code = TOO_MANY_CLOSE_CODE
            raise ConnectionRejectionError({"message": self.refusal, "code": RATE_LIMITED})
        await self.slots.give_back(self.address_key)
        self.access = access
        self.user = access.user
        self.scope["user"] = access.user
        return await super().on_ws_connect(context)

    async def execute_once(self, query: str, variables, operation_name) -> ExecutionResult:
        """Run a query or mutation as the HTTP view does (see the module's docstring)."""
        return await database_sync_to_async(self._execute_once)(query, variables, operation_name)

    def _execute_once(self, query: str, variables, operation_name) -> ExecutionResult:
        refusal = self.access.credential_refusal()
        if refusal is not None:
            error = GraphQLError(refusal, extensions={"code": UNAUTHENTICATED})
            return ExecutionResult(data=None, errors=[error])
        # Read again, as an HTTP request would: the connection's copy may be hours old.
        user = get_user_model().objects.get(pk=self.access.user.pk)
        client = self.scope.get("client") or ("", 0)
        context = OperationContext(request=OperationRequest(user, client[0]), ws=self)
        with acting_as(user):
            return self.schema.execute_sync(
                query,
                variable_values=variables,
                context_value=context,
                operation_name=operation_name,
                allowed_operation_types=ONE_RESULT_TYPES,
            )


def websocket_application():
    consumer = ApiWebSocketConsumer.as_asgi(
        schema=schema,
        allowed_origins=settings.WEBSOCKET_ALLOWED_ORIGINS,
    )
    return AuthMiddlewareStack(URLRouter([re_path(r"^graphql/?$", consumer)]))
