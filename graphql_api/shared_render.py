"""A live event is rendered once per distinct subscription, for every connection that has it.

graphql-core executes a subscription's selection set once per event and per subscription, so 500
connections with the same subscription rendered the same event 500 times (bench 6). An event's
object that all those subscriptions share (built once per message, graphql_api/fanout.py) is
marked `shareable`: it carries a table of renders, and `SharedRenderExecutor`, the schema's
executor, looks there first for an equal subscription's render of it.

Equal subscriptions render equally: the key is the document, the operation, the variables, and
the user and credential of the connection (a type may show something per user, e.g. the
organization's `viewerRole`). Access is not decided here: each subscription filters the event
and re-checks its user's membership before yielding it to the executor. A render with errors is
not shared: each connection renders it again itself, and gets its own masked error.
"""

import asyncio

from django.conf import settings
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from graphql_api import fast_render
from graphql_api.answer_size import AnswerSizeLimit

RENDERS = "_shared_renders"


def shareable(obj):
    """Mark an event's object, shared by the subscriptions it is handed to, as rendered once."""
    setattr(obj, RENDERS, {})
    return obj


def subscription_key(executor) -> tuple | None:
    """What makes two subscriptions render an event alike, or None when it cannot be told."""
    location = executor.operation.loc
    context = executor.context_value  # a WebSocket connection's (graphql_api/websocket.py)
    access = getattr(context.get("ws"), "access", None) if isinstance(context, dict) else None
    if location is None or access is None:
        return None
    name = executor.operation.name.value if executor.operation.name else None
    variables = repr(sorted(executor.variable_values.coerced.items()))
    return (location.source.body, name, variables, access.user.pk, access.token_hash)


class SharedRenderExecutor(AnswerSizeLimit, StrawberryGraphQLCoreExecutionContext):
    """Strawberry's executor; a subscription event of a `shareable` object is rendered once,
    directly when its selection allows it (graphql_api/fast_render.py). Every answer is counted
    against GRAPHQL_MAX_RESPONSE_BYTES (graphql_api/answer_size.py)."""

    share_key: tuple | None = None
    fast_plan: "fast_render.Plan | None | bool" = False  # False: not worked out yet

    def build_per_event_executor(self, payload):
        if self.share_key is None:
            # Once per subscription; each event's executor is a copy of this one.
            self.share_key = subscription_key(self) or ()
        if self.fast_plan is False:
            self.fast_plan = fast_render.plan_for(self)
        return super().build_per_event_executor(payload)

    def _render(self, serially):
        """This event's answer: directly when the plan and the event allow it, else executed."""
        if self.fast_plan:
            limit = settings.GRAPHQL_MAX_RESPONSE_BYTES
            data = fast_render.render(self.fast_plan, self.root_value, limit)
            if data is not None:
                return self.build_response(data)
        return super().execute_operation(serially)

    def execute_operation(self, serially=None):
        renders = getattr(self.root_value, RENDERS, None) if self.share_key else None
        if renders is None:
            return self._render(serially)
        shared = renders.get(self.share_key)
        if shared is None:
            result = self._render(serially)
            if not self.is_awaitable(result):
                if not result.errors:
                    renders[self.share_key] = result
                return result
            # Rendering waits on the database (a deferred field): the others wait for this one.
            shared = renders[self.share_key] = asyncio.ensure_future(result)
            return asyncio.shield(shared)
        if isinstance(shared, asyncio.Future):
            return self._shared_or_own(shared, serially)
        return shared

    async def _shared_or_own(self, shared: asyncio.Future, serially):
        try:
            result = await asyncio.shield(shared)
        except asyncio.CancelledError:
            if not shared.cancelled():
                raise  # this connection's operation is being cancelled
            result = None
        except Exception:
            result = None
        # The first render failed or has errors: this connection renders on its own.
        if result is None or result.errors:
            result = self._render(serially)
            if self.is_awaitable(result):
                result = await result
        return result
