"""WebSocket routing for GraphQL on /graphql/: subscriptions over graphql-transport-ws and graphql-ws.

`ApiWebSocketConsumer` is Strawberry's Channels consumer plus authentication at connection_init
(graphql_api/live_auth.py): a refused connection is closed with 4403 (graphql-transport-ws) or
answered with connection_error (graphql-ws) by Strawberry, on our ConnectionRejectionError.

Browser origins: a same-origin page (GraphiQL served by this server) and non-browser clients
(no Origin header) are always let through by Strawberry; other origins must be listed in the
WEBSOCKET_ALLOWED_ORIGINS setting, since a cross-site page would otherwise ride on the user's
session cookie.
"""

import asyncio
import logging

from channels.auth import AuthMiddlewareStack
from channels.routing import URLRouter
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.urls import re_path
from strawberry.channels import GraphQLWSConsumer
from strawberry.exceptions import ConnectionRejectionError

from automation.live import attach_event_loop
from graphql_api.live_auth import authenticate
from graphql_api.schema import schema

logger = logging.getLogger("graphql_api.websocket")

REFUSED = {
    "message": "Authentication required: a valid token or a session.",
    "code": "UNAUTHENTICATED",
}


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


class ApiWebSocketConsumer(GraphQLWSConsumer):
    """One WebSocket connection. `access` is None until connection_init authenticated it."""

    access = None
    token_authenticated = False

    async def connect(self) -> None:
        # In embedded mode the publish hook must deliver on this loop (see automation/live.py).
        attach_event_loop(asyncio.get_running_loop())
        self.user = AnonymousUser()
        await super().connect()

    async def get_context(self, request, response) -> ConnectionContext:
        return ConnectionContext(request=request, ws=request)

    async def on_ws_connect(self, context):
        access = await authenticate(context.get("connection_params"), self.scope)
        if access is None:
            raise ConnectionRejectionError(REFUSED)
        self.access = access
        self.user = access.user
        self.scope["user"] = access.user
        return await super().on_ws_connect(context)


def websocket_application():
    consumer = ApiWebSocketConsumer.as_asgi(
        schema=schema, allowed_origins=settings.WEBSOCKET_ALLOWED_ORIGINS
    )
    return AuthMiddlewareStack(URLRouter([re_path(r"^graphql/?$", consumer)]))
