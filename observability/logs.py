"""The log format: plain text, or with LOG_FORMAT=json one JSON object per line
(python-json-logger), carrying the ids of what a record is about.

While a run executes, `context(run_id=..., rule_id=..., organization_id=..., correlation_id=...)`
holds its ids, and ContextFilter copies them onto every record logged meanwhile, from any module,
so a JSON line of a webhook's retry names its run without each call passing it. A record's own
`extra=` wins over the context. The correlation id of a run is its run key (the webhook's
Idempotency-Key, the e-mail's Message-ID); of a GraphQL error, the correlationId its answer shows.
"""

import contextlib
import contextvars
import logging

from pythonjsonlogger.json import JsonFormatter

CONTEXT_FIELDS = ("run_id", "rule_id", "organization_id", "correlation_id")

_context: contextvars.ContextVar[dict | None] = contextvars.ContextVar("log_context", default=None)


@contextlib.contextmanager
def context(**ids):
    """Records logged inside the block carry `ids` (None values are left out)."""
    current = _context.get()
    merged = {**(current or {}), **{key: value for key, value in ids.items() if value is not None}}
    token = _context.set(merged)
    try:
        yield
    finally:
        _context.reset(token)


class ContextFilter(logging.Filter):
    """Adds the ids of the current `context()` to each record that does not carry them."""

    def filter(self, record: logging.LogRecord) -> bool:
        ids = _context.get()
        if ids:
            for key, value in ids.items():
                if not hasattr(record, key):
                    setattr(record, key, value)
        return True


def json_formatter() -> JsonFormatter:
    """One JSON object per record: time, level, logger, message, the ids, any `extra=` field,
    and the traceback as text (`exc_info`)."""
    return JsonFormatter(
        "%(levelname)s %(name)s %(message)s",
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp="time",  # ISO 8601, UTC
    )
