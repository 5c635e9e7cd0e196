"""The contract's error codes, and the one place every GraphQL error gets its `extensions.code`.

Resolvers and services raise plain exceptions: the API's own (`ApiError` subclasses below),
Django's `ValidationError` (keyed by input path) and `ObjectDoesNotExist`, and the run service's
`RunConflict` / `RunObjectNotFound`. `ErrorCodes`, a schema extension, turns each into the public
shape after the operation; anything it does not recognise is an unexpected server error, shown as
"Internal server error" with a correlation id that the server log carries with the traceback.
"""

import logging
import uuid

from django.core.exceptions import ObjectDoesNotExist
from django.core.exceptions import ValidationError as DjangoValidationError
from graphql.error import GraphQLError
from strawberry.extensions import MaskErrors

logger = logging.getLogger("graphql_api.errors")

UNAUTHENTICATED = "UNAUTHENTICATED"
PERMISSION_DENIED = "PERMISSION_DENIED"
NOT_FOUND = "NOT_FOUND"
VALIDATION_ERROR = "VALIDATION_ERROR"
CONFLICT = "CONFLICT"
RATE_LIMITED = "RATE_LIMITED"
RESPONSE_TOO_LARGE = "RESPONSE_TOO_LARGE"
CURSOR_EXPIRED = "CURSOR_EXPIRED"
GRAPHQL_VALIDATION_FAILED = "GRAPHQL_VALIDATION_FAILED"
INTERNAL_SERVER_ERROR = "INTERNAL_SERVER_ERROR"

MASKED_MESSAGE = "Internal server error"


class ApiError(Exception):
    """A public error: its message and extensions reach the client unchanged."""

    code = INTERNAL_SERVER_ERROR
    default_message = "Error"

    def __init__(self, message: str | None = None, **extensions):
        super().__init__(message or self.default_message)
        self.extensions = {"code": self.code, **extensions}


class Unauthenticated(ApiError):
    code = UNAUTHENTICATED
    default_message = "Authentication required."


class PermissionDenied(ApiError):
    code = PERMISSION_DENIED
    default_message = "Your role does not allow this operation."


class NotFound(ApiError):
    code = NOT_FOUND
    default_message = "Not found."


class Conflict(ApiError):
    code = CONFLICT
    default_message = "The record's state does not allow this now."


class RateLimited(ApiError):
    code = RATE_LIMITED
    default_message = "Too many attempts. Try again later."

    def __init__(self, retry_after: int, message: str | None = None):
        super().__init__(message, retryAfter=int(retry_after))


class CursorExpired(ApiError):
    """A subscription's `after` cursor is older than the run stream keeps
    (AUTOMATION_STREAM_RETENTION_HOURS): the events after it are no longer all there."""

    code = CURSOR_EXPIRED

    def __init__(self, oldest_cursor: str):
        super().__init__(
            "This cursor is older than the events the stream keeps "
            "(AUTOMATION_STREAM_RETENTION_HOURS): reload, then subscribe after a newer cursor "
            "(logs { streamCursor }); oldestCursor is the oldest one still accepted.",
            oldestCursor=oldest_cursor,
        )


class ResponseTooLarge(ApiError):
    """An answer that grew over GRAPHQL_MAX_RESPONSE_BYTES while it was built (answer_size.py):
    the whole operation is refused, with no data."""

    code = RESPONSE_TOO_LARGE

    @classmethod
    def for_limit(cls, limit: int) -> "ResponseTooLarge":
        return cls(
            f"The answer would be larger than {limit:,} bytes (GRAPHQL_MAX_RESPONSE_BYTES). Ask "
            "for fewer items (first, limit) or fewer fields, especially JSON ones (context, "
            "changes, result, actual, expected).",
            maximumBytes=limit,
        )


class InvalidInput(ApiError):
    code = VALIDATION_ERROR
    default_message = "Invalid input."

    def __init__(self, fields: dict[str, list[str]], message: str | None = None):
        super().__init__(message, fields=fields)


def validation_fields(exc: DjangoValidationError) -> dict[str, list[str]]:
    """{input path: [messages]} of a Django ValidationError (non-field errors under "input")."""
    if hasattr(exc, "error_dict"):
        return {
            ("input" if key == "__all__" else key): messages
            for key, messages in exc.message_dict.items()
        }
    return {"input": exc.messages}


def _run_errors():
    """The run service's public exceptions, imported lazily (the run module is optional here)."""
    try:
        from automation import api as runs
    except ImportError:
        return (), ()
    return (getattr(runs, "RunConflict", ()),), (getattr(runs, "RunObjectNotFound", ()),)


def public_error(exc: BaseException) -> ApiError | None:
    """The public form of a known exception, or None for an unexpected one."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, DjangoValidationError):
        return InvalidInput(validation_fields(exc))
    if isinstance(exc, ObjectDoesNotExist):
        return NotFound()
    conflicts, not_found = _run_errors()
    if conflicts and isinstance(exc, conflicts):
        return Conflict(str(exc) or None)
    if not_found and isinstance(exc, not_found):
        return NotFound()
    return None


class ErrorCodes(MaskErrors):
    """Give every error of a result its `extensions.code`, masking the unexpected ones."""

    def _process_errors(self, errors: list[GraphQLError]) -> list[GraphQLError]:
        return [self.normalize(error) for error in errors]

    def _process_result(self, result: object) -> None:
        # MaskErrors tests every result against a runtime-checkable Protocol: slow, and done once
        # per event and connection (about 4 % of the server's time in bench 6's profile).
        errors = getattr(result, "errors", None)
        if errors:
            result.errors = self._process_errors(errors)

    def normalize(self, error: GraphQLError) -> GraphQLError:
        original = error.original_error
        if isinstance(original, ApiError) and error.path is None:
            # Refused as a whole, not at a field: an answer too large, a busy user.
            return self._rebuild(error, str(original), dict(original.extensions))
        if original is None or error.path is None:
            # Refused before execution, so nothing ran: syntax, unknown fields, bad variables
            # (even when a scalar's parser raised: those have no path), and Strawberry's depth,
            # alias and token limiters. Every resolver error has a path.
            extensions = {**(error.extensions or {}), "code": GRAPHQL_VALIDATION_FAILED}
            return self._rebuild(error, error.message, extensions)
        public = public_error(original)
        if public is not None:
            return self._rebuild(error, str(public), dict(public.extensions))
        correlation_id = uuid.uuid4().hex
        logger.error(
            "Unexpected error in GraphQL path %s (correlationId=%s)",
            ".".join(str(part) for part in error.path or ()),
            correlation_id,
            exc_info=(type(original), original, original.__traceback__),
            extra={"correlation_id": correlation_id},  # a field of its own with LOG_FORMAT=json
        )
        return self._rebuild(
            error,
            MASKED_MESSAGE,
            {"code": INTERNAL_SERVER_ERROR, "correlationId": correlation_id},
        )

    @staticmethod
    def _rebuild(error: GraphQLError, message: str, extensions: dict) -> GraphQLError:
        return GraphQLError(
            message=message,
            nodes=error.nodes,
            source=error.source,
            positions=error.positions,
            path=error.path,
            original_error=None,
            extensions=extensions,
        )
