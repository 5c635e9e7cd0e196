"""WebSocket routing for GraphQL subscriptions on /graphql/."""

from channels.auth import AuthMiddlewareStack
from channels.routing import URLRouter
from django.conf import settings
from django.urls import re_path
from strawberry.channels import GraphQLWSConsumer

from graphql_api.schema import schema


def websocket_application():
    consumer = GraphQLWSConsumer.as_asgi(
        schema=schema, allowed_origins=settings.WEBSOCKET_ALLOWED_ORIGINS
    )
    return AuthMiddlewareStack(URLRouter([re_path(r"^graphql/?$", consumer)]))
