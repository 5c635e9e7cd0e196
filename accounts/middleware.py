"""Bearer-token authentication and the acting-user context for HTTP requests."""

from django.conf import settings
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
    """An `Authorization: Bearer` header wins over the session. A bad token means anonymous.

    CSRF protects what a browser sends on its own: the session cookie. A request with a bearer
    token, or with no session cookie at all, carries no such ambient authority, so Django's CSRF
    check is waived for it (a script may POST `{ me { id } }` anonymously and get `null`).
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        raw = bearer_token(request.headers.get("Authorization"))
        if raw is not None:
            request.user = SimpleLazyObject(lambda: ApiToken.authenticate(raw) or AnonymousUser())
            request.token_authenticated = True
            request._dont_enforce_csrf_checks = True
        elif settings.SESSION_COOKIE_NAME not in request.COOKIES:
            request._dont_enforce_csrf_checks = True
        return self.get_response(request)


class CurrentUserMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        with acting_as(getattr(request, "user", None)):
            return self.get_response(request)
