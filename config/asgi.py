"""ASGI entry point: HTTP (Django, including /graphql/) and WebSocket (/graphql/ subscriptions)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402

from automation.hooks import HookBodyLimit  # noqa: E402
from graphql_api.websocket import websocket_application  # noqa: E402

application = ProtocolTypeRouter(
    {
        # Webhook bodies are capped before Django reads them (automation/hooks.py).
        "http": HookBodyLimit(django_asgi_app),
        "websocket": websocket_application(),
    }
)
