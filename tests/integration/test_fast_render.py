"""Live run events rendered directly (graphql_api/fast_render.py) answer exactly what the normal
execution answers, for every selection, and the normal execution answers the rest.

Each event is rendered twice with the schema's own executor (graphql_api/shared_render.py): once
as the server does, once with the direct path switched off; the two answers (data and errors)
must be equal. The events are the messages real runs published (PENDING, RUNNING, the outcome,
a skipped run, a dry run), made into the objects subscriptions yield (subscriptions.log_of).
"""

import pytest
from asgiref.sync import sync_to_async
from django.db import transaction
from graphql import parse
from graphql.execution.middleware import MiddlewareManager
from strawberry_django.optimizer import DjangoOptimizerExtension

from automation.api import AutomationLog
from automation.live.events import log_message
from automation.runs.execute import execute_run
from automation.runs.manual import run_rule
from automation.triggers.outbox import emit_event
from graphql_api import fast_render
from graphql_api.schema import schema
from graphql_api.shared_render import SharedRenderExecutor
from graphql_api.subscriptions import log_of
from tests.factories import AutomationRuleFactory, ProductFactory
from tests.integration.test_live_subscriptions import Client, subscribed

pytestmark = pytest.mark.django_db(transaction=True)

PLAIN = [
    "id",
    "seq",
    "status",
    "trigger",
    "event",
    "ruleRevision",
    "dryRun",
    "conditionsMet",
    "depth",
    "createdAt",
    "startedAt",
    "finishedAt",
    "scheduledFor",
    "resumeAt",
]
ROOT = "automationLogs(organization: $org)"


def document(selection: str, root: str = ROOT) -> str:
    return f"subscription($org: ID!) {{ {root} {{ {selection} }} }}"


# Selections the direct path renders: plain columns, aliases, __typename, in any order.
DIRECT = [
    "id seq status",
    " ".join(PLAIN),
    " ".join(reversed(PLAIN)),
    "__typename id",
    "a: id b: status c: seq __typename",
    "status",
    "createdAt startedAt finishedAt resumeAt scheduledFor",
    "conditionsMet dryRun depth ruleRevision",
    "event trigger",
    "id changes context",  # JSON columns, loaded from the live message
]
DIRECT_DOCUMENTS = [document(s) for s in DIRECT] + [
    "subscription Named($org: ID!) { logs: automationLogs(organization: $org) { id status } }",
    'subscription { automationLogs(organization: "1", statuses: [SUCCEEDED]) { id } }',
]

# Selections it leaves to the normal execution (each checked to give the same answer anyway).
EXECUTED = [
    document("id rule { id name }"),  # a relation
    document("id objectType objectId error durationMs cursor"),  # fields with resolvers
    document("id conditionTrace { path passed } actionLogs { order status }"),
    document("id organization { id }"),  # a relation outside the message: a query
    document("id status @include(if: true)"),  # a directive
    document("id ... on AutomationLog { status }"),  # an inline fragment
    document("id ...Run") + " fragment Run on AutomationLog { seq status }",
    document("id id"),  # one key twice
    document("id a: seq a: seq"),
    document("id", root=f"{ROOT} @include(if: true)"),
    "subscription($org: ID!) { automationLogs(organization: $org) { id } "
    "other: automationLogs(organization: $org) { id } }",  # invalid: two root fields
    "subscription($org: ID!) { actionUpdates(organization: $org) { logId seq } }",
]


def make_events(organization) -> list:
    """The messages of real runs, as subscriptions build them: a run through its states, a
    skipped run, a dry run."""
    messages = []
    rule = AutomationRuleFactory(
        organization=organization,
        actions=[{"action_type": "UPDATE_RECORD", "parameters": {"fields": {"description": "x"}}}],
    )
    product = ProductFactory(organization=organization, status="ACTIVE")
    with transaction.atomic():
        (log,) = emit_event(product, "UPDATED", {"status": {"old": "DRAFT", "new": "ACTIVE"}})
    messages.append(log_message(log))
    execute_run(log.pk)
    log = AutomationLog.objects.select_related("rule").get(pk=log.pk)
    messages.append(log_message(log))
    log.status, log.finished_at = "RUNNING", None
    messages.append(log_message(log))
    skipped = AutomationRuleFactory(
        organization=organization,
        conditions=[{"field_name": "status", "operator": "EQUALS", "value": "DISCONTINUED"}],
    )
    with transaction.atomic():
        (other,) = [log for log in emit_event(product, "UPDATED", {}) if log.rule_id == skipped.pk]
    execute_run(other.pk)
    messages.append(log_message(AutomationLog.objects.select_related("rule").get(pk=other.pk)))
    dry = run_rule(rule, object_id=product.pk, dry_run=True, user=None)
    messages.append(log_message(AutomationLog.objects.select_related("rule").get(pk=dry.pk)))
    for position, message in enumerate(messages, 1):
        message["position"] = position
    return messages


def executor_for(query: str, organization_id: int):
    executor = SharedRenderExecutor.build(
        schema._schema,
        parse(query),
        context_value={},
        raw_variable_values={"org": str(organization_id)},
        middleware=MiddlewareManager(DjangoOptimizerExtension()),
    )
    assert not isinstance(executor, list), executor  # the documents are valid
    return executor


async def render(query: str, organization_id: int, message: dict, *, direct: bool) -> tuple:
    executor = executor_for(query, organization_id)
    if not direct:
        executor.fast_plan = None
    event = executor.build_per_event_executor(log_of(message))
    result = event.execute_operation(False)
    if executor.is_awaitable(result):
        result = await result
    errors = [error.formatted for error in result.errors or ()]
    return result.data, errors, executor.fast_plan


@pytest.mark.parametrize("query", DIRECT_DOCUMENTS)
async def test_a_plain_selection_is_rendered_directly_as_the_execution_renders_it(
    organization, query
):
    messages = await sync_to_async(make_events)(organization)
    for message in messages:
        direct = await render(query, organization.pk, message, direct=True)
        executed = await render(query, organization.pk, message, direct=False)
        assert direct[2] is not None, "the direct path should take this selection"
        assert fast_render.render(direct[2], log_of(message), 100_000) is not None
        assert direct[:2] == executed[:2]
        assert direct[1] == []


@pytest.mark.parametrize("query", EXECUTED)
async def test_any_other_selection_is_executed(organization, query):
    if "actionUpdates" in query or "other:" in query:
        executor = SharedRenderExecutor.build(
            schema._schema,
            parse(query),
            context_value={},
            raw_variable_values={"org": str(organization.pk)},
        )
        if isinstance(executor, list):
            return  # refused before execution: nothing to render
        assert fast_render.plan_for(executor) is None
        return
    messages = await sync_to_async(make_events)(organization)
    assert fast_render.plan_for(executor_for(query, organization.pk)) is None
    for message in messages[:2]:
        direct = await render(query, organization.pk, message, direct=True)
        executed = await render(query, organization.pk, message, direct=False)
        assert direct[:2] == executed[:2]


async def test_an_event_the_direct_path_cannot_render_is_executed(organization):
    """A column missing from the message (deferred: a query), a null where the type says
    non-null, an answer over GRAPHQL_MAX_RESPONSE_BYTES: the normal execution answers."""
    messages = await sync_to_async(make_events)(organization)
    query = document("id seq status createdAt")
    plan = fast_render.plan_for(executor_for(query, organization.pk))
    assert plan is not None

    run = log_of(messages[0])
    assert fast_render.render(plan, run, 10_000) is not None
    del run.__dict__["created_at"]  # deferred now
    assert fast_render.render(plan, run, 10_000) is None

    run = log_of(messages[0])
    run.__dict__["seq"] = None  # Int!
    assert fast_render.render(plan, run, 10_000) is None
    result = await render(query, organization.pk, {**messages[0]}, direct=True)
    assert result[1] == []

    run = log_of(messages[0])
    assert fast_render.render(plan, run, 20) is None  # too large for the limit
    assert fast_render.render(plan, object(), 10_000) is None  # not a run


async def test_a_response_too_large_is_refused_as_before(organization, settings):
    settings.GRAPHQL_MAX_RESPONSE_BYTES = 40
    messages = await sync_to_async(make_events)(organization)
    query = document("id seq status createdAt")
    direct = await render(query, organization.pk, messages[1], direct=True)
    executed = await render(query, organization.pk, messages[1], direct=False)
    assert direct[:2] == executed[:2]
    assert direct[0] is None and "RESPONSE_TOO_LARGE" in str(direct[1])


async def test_delivery_executes_no_field_for_a_plain_selection(organization, editor, monkeypatch):
    """Over a real WebSocket (in-process ASGI): a plain selection is answered without
    graphql-core executing a single field of the run; a selection with a relation still is.
    Counted, never timed."""
    from graphql.execution.executor import Executor

    executed = []
    original = Executor.execute_fields

    def counting(self, parent_type, *args, **kwargs):
        if parent_type.name == "AutomationLog":
            executed.append(self.operation.selection_set.selections[0].alias)
        return original(self, parent_type, *args, **kwargs)

    monkeypatch.setattr(Executor, "execute_fields", counting)
    plain, related = Client(editor.raw_token), Client(editor.raw_token)
    await plain.connect()
    await related.connect()
    org = {"org": str(organization.pk)}
    await subscribed(plain, "1", document("id seq status"), org)
    await subscribed(related, "1", document("id rule { name }"), org)

    product = await sync_to_async(ProductFactory)(organization=organization, status="ACTIVE")
    await sync_to_async(AutomationRuleFactory)(organization=organization)

    def write():
        with transaction.atomic():
            return emit_event(product, "UPDATED", {})

    (log,) = await sync_to_async(write)()
    got = (await plain.receive())["payload"]["data"]["automationLogs"]
    assert got == {"id": str(log.pk), "seq": 0, "status": "PENDING"}
    other = (await related.receive())["payload"]["data"]["automationLogs"]
    assert other["id"] == str(log.pk)
    assert len(executed) == 1  # the subscription with a relation only
    await plain.close()
    await related.close()
