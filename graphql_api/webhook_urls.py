"""A WEBHOOK rule's URL as the API shows it (`Rule.webhookUrl`): absolute, on
AUTOMATION_WEBHOOK_BASE_URL when it is set, else on the address the API request came to (over
WebSocket, the connection's Host, checked against ALLOWED_HOSTS like an HTTP request's). The token
in it is the credential that runs the rule, so only members who may change the rule read it.
"""

from django.conf import settings
from django.http.request import validate_host
from django.urls import reverse

from accounts.choices import ROLE_RANK, Role
from automation.api import choices


def webhook_url(info, rule) -> str | None:
    """The URL of `rule` for the caller: None for other rules and for VIEWERs."""
    from graphql_api.permissions import role_in

    if rule.trigger_type != choices.TriggerType.WEBHOOK or not rule.webhook_token:
        return None
    role = role_in(info, rule.organization_id)
    if role is None or ROLE_RANK[Role(role)] < ROLE_RANK[Role.EDITOR]:
        return None
    path = reverse("webhook", kwargs={"token": rule.webhook_token})
    if settings.AUTOMATION_WEBHOOK_BASE_URL:
        return settings.AUTOMATION_WEBHOOK_BASE_URL + path
    request = info.context.request
    if hasattr(request, "build_absolute_uri"):
        return request.build_absolute_uri(path)
    return _over_websocket(info, path)


def _over_websocket(info, path: str) -> str | None:
    consumer = info.context.get("ws") if isinstance(info.context, dict) else None
    scope = getattr(consumer, "scope", None) or {}
    host = dict(scope.get("headers") or ()).get(b"host", b"").decode("latin-1")
    if not host or not validate_host(host.rsplit(":", 1)[0], settings.ALLOWED_HOSTS):
        return None
    scheme = "https" if scope.get("scheme") == "wss" else "http"
    return f"{scheme}://{host}{path}"
