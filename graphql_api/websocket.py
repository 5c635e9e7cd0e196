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
  gets an error with GRAPHQL_VALIDATION_FAILED saying so, and the others go on.

Browser origins: a same-origin page (GraphiQL served by this server) and non-browser clients
(no Origin header) are always let through by Strawberry; other origins must be listed in the
WEBSOCKET_ALLOWED_ORIGINS setting, since a cross-site page would otherwise ride on the user's
session cookie.
"""

import asyncio
import json
import logging

from channels.auth import AuthMiddlewareStack
from channels.routing import URLRouter
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.urls import re_path
from graphql import GraphQLError
from strawberry.channels import GraphQLWSConsumer
from strawberry.channels.handlers.ws_handler import ChannelsWebSocketAdapter
from strawberry.exceptions import ConnectionRejectionError
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler

from automation.live import attach_event_loop
from graphql_api.errors import GRAPHQL_VALIDATION_FAILED, UNAUTHENTICATED
from graphql_api.live_auth import Refused, authenticate
from graphql_api.schema import schema

logger = logging.getLogger("graphql_api.websocket")

REFUSED_CLOSE_CODE = 4403
INVALID_MESSAGE_CLOSE_CODE = 4400
TOO_DEEP = "WebSocket message nests too deeply"
OPERATION_TYPES = ("subscribe", "start")


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


def too_many_operations(limit: int) -> GraphQLError:
    return GraphQLError(
        f"This connection already runs {limit} operations "
        "(GRAPHQL_MAX_SUBSCRIPTIONS_PER_CONNECTION): complete one, or open another connection.",
        extensions={"code": GRAPHQL_VALIDATION_FAILED},
    )


class ApiWebSocketAdapter(ChannelsWebSocketAdapter):
    async def close(self, code: int, reason: str) -> None:
        refusal = self.ws_consumer.refusal
        if code == REFUSED_CLOSE_CODE and refusal is not None:
            reason = refusal
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


class ApiWebSocketConsumer(GraphQLWSConsumer):
    """One WebSocket connection. `access` is None until connection_init authenticated it;
    `refusal` is why it was refused, if it was."""

    websocket_adapter_class = ApiWebSocketAdapter
    graphql_transport_ws_handler_class = TransportWSHandler
    graphql_ws_handler_class = LegacyWSHandler
    access = None
    refusal = None
    token_authenticated = False

    async def connect(self) -> None:
        # In embedded mode the publish hook must deliver on this loop (see automation/live.py).
        attach_event_loop(asyncio.get_running_loop())
        self.max_subscriptions_per_connection = settings.GRAPHQL_MAX_SUBSCRIPTIONS_PER_CONNECTION
        self.user = AnonymousUser()
        await super().connect()

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
        self.access = access
        self.user = access.user
        self.scope["user"] = access.user
        return await super().on_ws_connect(context)


def websocket_application():
    consumer = ApiWebSocketConsumer.as_asgi(
        schema=schema,
        allowed_origins=settings.WEBSOCKET_ALLOWED_ORIGINS,
    )
    return AuthMiddlewareStack(URLRouter([re_path(r"^graphql/?$", consumer)]))
