"""Drill: queries whose answers were megabytes (issue 17, item 4), sent by a VIEWER over HTTP.

Each is refused clearly, reads no more than it needs, and holds a bounded amount of memory while
it is refused (traced allocations, not the clock or the machine's load).
"""

import json
import tracemalloc

import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext

from accounts.choices import Role
from automation.core.models import AutomationLog, AutomationRule
from automation.runs.execute import execute_run
from tests.factories import ProductFactory

pytestmark = pytest.mark.django_db

# 20 logs of about 100 KB of context each: 2 MB a page, 60 MB for the 30 aliases.
LOGS = 20
CONTEXT_BYTES = 100_000
LIMIT = 1_000_000


def post(user, query, variables=None):
    response = Client().post(
        "/graphql/",
        data=json.dumps({"query": query, "variables": variables or {}}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {user.raw_token}",
    )
    assert response.status_code == 200, response.content[:300]
    return response, json.loads(response.content)


@pytest.fixture
def viewer(organization, make_member):
    return make_member(organization, Role.VIEWER)


@pytest.fixture
def big_logs(organization):
    rule = AutomationRule.objects.create(
        organization=organization, name="Big", trigger_type="MANUAL"
    )
    AutomationLog.objects.bulk_create(
        AutomationLog(
            rule=rule,
            organization=organization,
            trigger="MANUAL",
            rule_revision=rule.revision,
            context={"record": {"description": str(n % 10) * CONTEXT_BYTES}},
            changes={"description": {"old": "", "new": "x" * 1_000}},
            action_logs=[],
        )
        for n in range(LOGS)
    )
    return rule


def _log_reads(captured) -> int:
    return sum(
        1
        for query in captured.captured_queries
        if "automation_automationlog" in query["sql"] and "COUNT(" not in query["sql"].upper()
    )


@override_settings(GRAPHQL_MAX_RESPONSE_BYTES=LIMIT)
def test_thirty_aliases_of_logs_with_their_contexts_stop_at_the_byte_limit(viewer, big_logs):
    """The issue's shape: 30 aliases of `logs { context changes actionLogs { result } }`
    answered 691 MB after 55 s and 2.4 GB of server memory. Now the first alias goes over the
    limit, nothing else is read, and the server holds a few pages at most."""
    entry = "a%d: logs { edges { node { context changes actionLogs { result } } } }"
    query = "{ " + " ".join(entry % n for n in range(30)) + " }"
    tracemalloc.start()
    try:
        with CaptureQueriesContext(connection) as captured:
            response, body = post(viewer, query)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert body["data"] is None
    (error,) = body["errors"]
    assert error["extensions"] == {"code": "RESPONSE_TOO_LARGE", "maximumBytes": LIMIT}
    assert "fewer" in error["message"]
    assert len(response.content) < 2_000
    assert _log_reads(captured) == 1
    # One page read (2 MB of JSON, decoded) and less than the limit built; 30 pages were 60 MB.
    assert peak < 20 * LIMIT, peak


def test_products_come_200_at_most_per_list(viewer, organization):
    """49,000 products in 10 aliases answered 144 MB: a list of products is a page now."""
    ProductFactory.create_batch(250, organization=organization, category=None)
    org = {"org": str(organization.pk)}
    aliases = " ".join(f"p{n}: products(organization: $org) {{ id }}" for n in range(10))
    _, body = post(viewer, f"query($org: ID!) {{ {aliases} }}", org)
    assert not body.get("errors"), body
    assert [len(body["data"][f"p{n}"]) for n in range(10)] == [200] * 10
    _, body = post(
        viewer, "query($org: ID!) { products(organization: $org, limit: 50000) { id } }", org
    )
    (error,) = body["errors"]
    assert error["extensions"]["code"] == "VALIDATION_ERROR"
    assert error["extensions"]["fields"] == {"limit": ["Must be between 0 and 200."]}


@override_settings(GRAPHQL_EXPENSIVE_QUERY_COST=1_000, GRAPHQL_EXPENSIVE_QUERIES_PER_USER=1)
def test_costly_queries_beyond_the_users_leases_are_rate_limited(viewer, big_logs):
    from django.core.cache import cache

    from graphql_api import ratelimit

    query = "{ logs(first: 200) { edges { node { id conditionTrace { field } } } } }"
    key, token = ratelimit.take_expensive_query_lease(viewer.pk)  # another process's
    try:
        with CaptureQueriesContext(connection) as captured:
            _, body = post(viewer, query)
        (error,) = body["errors"]
        assert error["extensions"]["code"] == "RATE_LIMITED"
        assert error["extensions"]["retryAfter"] > 0
        assert body["data"] is None
        assert _log_reads(captured) == 0
    finally:
        ratelimit.give_back_lease(key, token)
    assert cache.get(key) is None
    _, body = post(viewer, query)
    assert not body.get("errors"), body["errors"]


@pytest.mark.django_db(transaction=True)
@override_settings(GRAPHQL_MAX_RESPONSE_BYTES=200)
async def test_a_live_event_over_the_byte_limit_is_an_error_and_the_stream_goes_on(
    organization, editor
):
    from tests.integration.test_live_subscriptions import Client as LiveClient
    from tests.integration.test_live_subscriptions import make_run, subscribed

    query = """subscription($org: ID!) { automationLogs(organization: $org) {
      id seq status context } }"""
    client = LiveClient(editor.raw_token)
    await client.connect()
    await subscribed(client, "logs", query, {"org": str(organization.pk)})
    _, log = await make_run(organization)
    await sync_to_async(execute_run)(log.pk)
    first = await client.receive()
    assert first["type"] == "next"
    assert first["payload"]["data"] is None
    (error,) = first["payload"]["errors"]
    assert error["extensions"] == {"code": "RESPONSE_TOO_LARGE", "maximumBytes": 200}
    second = await client.receive()  # the connection and the subscription carry on
    assert second["type"] == "next" and second["payload"]["errors"]
    await client.close()
