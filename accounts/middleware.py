"""Bearer-token authentication and the acting-user context for HTTP requests."""

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.utils.functional import SimpleLazyObject

from accounts.current import acting_as
from accounts.models import ApiToken

BEARER_HINT = 'use "Authorization: Bearer <token>".'
NO_TOKEN = f'No token after "Bearer": {BEARER_HINT}'
WRONG_SCHEME = f"Unsupported Authorization scheme: {BEARER_HINT}"


def parse_authorization(header_value: str | None) -> tuple[str | None, str | None]:
    """(raw token, problem) of an Authorization value.

    `Bearer <token>` gives the token; no value at all gives (None, None): anonymous. Anything
    else (`Bearer` alone, `Token x`, `Basic x`, garbage) gives the problem, a message with the
    hint to use `Bearer <token>`: such a client means to authenticate, and must learn why it
    did not rather than be served as anonymous.
    """
    if header_value is None:
        return None, None
    scheme, _, value = header_value.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None, WRONG_SCHEME
    if not value.strip():
        return None, NO_TOKEN
    return value.strip(), None


def bearer_token(header_value: str | None) -> str | None:
    """The raw token of an `Authorization: Bearer <token>` value, or None."""
    return parse_authorization(header_value)[0]


class BearerTokenMiddleware:
    """An `Authorization: Bearer` header wins over the session. A bad token means anonymous
    here; the API refuses it (graphql_api.permissions.current_user), as it refuses any other
    Authorization value (`request.authorization_problem`) when there is no session.

    CSRF protects what a browser sends on its own: the session cookie. A request with a bearer
    token, or with no session cookie at all, carries no such ambient authority, so Django's CSRF
    check is waived for it (a script may POST `{ me { id } }` anonymously and get `null`).
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        raw, request.authorization_problem = parse_authorization(
            request.headers.get("Authorization")
        )
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
