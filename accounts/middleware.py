"""Bearer-token authentication and the acting-user context for HTTP requests."""

from django.contrib.auth.models import AnonymousUser
from django.utils.functional import SimpleLazyObject

from accounts.current import acting_as
from accounts.models import ApiToken


def bearer_token(header_value: str | None) -> str | None:
    """The raw token of an `Authorization: Bearer <token>` value, or None."""
    if not header_value:
        return None
    scheme, _, value = header_value.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


class BearerTokenMiddleware:
    """An `Authorization: Bearer` header wins over the session. A bad token means anonymous."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        raw = bearer_token(request.headers.get("Authorization"))
        if raw is not None:
            request.user = SimpleLazyObject(lambda: ApiToken.authenticate(raw) or AnonymousUser())
            request.token_authenticated = True
            # Token clients are not browsers: CSRF protects cookie sessions only.
            request._dont_enforce_csrf_checks = True
        return self.get_response(request)


class CurrentUserMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        with acting_as(getattr(request, "user", None)):
            return self.get_response(request)
