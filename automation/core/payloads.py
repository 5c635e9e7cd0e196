"""A WEBHOOK run's payload: the JSON object a caller sent, which its conditions (`payload.a.b`)
and templates (`{{ payload.x }}`) read. One check for every way in: the endpoint
(automation/hooks.py) and a dry run's sample payload (runRule), so a sample the endpoint would
refuse is refused too.

A payload is stored in its run's log (`context.payload`) and walked by the evaluator, so it is
bounded: an object, at most MAX_DEPTH levels deep, at most AUTOMATION_WEBHOOK_MAX_BODY_BYTES as
compact UTF-8 JSON, and text that PostgreSQL can store (no lone UTF-16 surrogates such as
"\\ud800", which JSON allows and jsonb refuses; U+0000 is removed when the log is written).
"""

import json

from django.conf import settings

# As deep as action parameters may nest (actions/base.py): real payloads (GitHub's, Stripe's) use
# fewer than ten levels.
MAX_DEPTH = 20


def payload_problem(value) -> str | None:
    """Why `value` cannot be a run's payload, or None when it can. Never recursive: a payload
    nested thousands of levels deep is refused, not crashed on."""
    if not isinstance(value, dict):
        return f"The payload must be a JSON object, not {_kind(value)}."
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"The payload nests deeper than {MAX_DEPTH} levels."
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
    try:
        size = len(
            json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
        )
    except UnicodeEncodeError:
        return "The payload holds text that is not valid Unicode (a lone surrogate escape)."
    except (TypeError, ValueError):
        return "The payload is not JSON."
    limit = settings.AUTOMATION_WEBHOOK_MAX_BODY_BYTES
    if size > limit:
        return (
            f"The payload takes {size} bytes as JSON; the limit is {limit} "
            "(AUTOMATION_WEBHOOK_MAX_BODY_BYTES)."
        )
    return None


def _kind(value) -> str:
    return {
        list: "a list",
        str: "text",
        bool: "true/false",
        int: "a number",
        float: "a number",
        type(None): "null",
    }.get(type(value), type(value).__name__)
