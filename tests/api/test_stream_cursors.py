"""Stream cursors in queries: `logs { streamCursor }` is the organization's latest event as of
the query, read before the page; a queried run's `cursor` is its latest event's, in one query
for a whole page."""

import pytest
from django.db import transaction
from django.test.utils import CaptureQueriesContext

from automation.core.system_models import StreamEvent
from automation.live import events as live
from automation.live import journal
from tests.factories import AutomationLogFactory, AutomationRuleFactory

pytestmark = pytest.mark.django_db(transaction=True)

PAGE = """query($org: ID, $first: Int) {
  logs(organization: $org, first: $first) { streamCursor edges { node { id seq cursor } } }
}"""


def publish(log, times=1):
    for _ in range(times):
        with transaction.atomic():
            live.publish_log(log)


def test_stream_cursor_is_the_latest_event_and_each_run_its_own_latest(gql, editor, organization):
    rule = AutomationRuleFactory(organization=organization)
    first, second = AutomationLogFactory(rule=rule), AutomationLogFactory(rule=rule)
    publish(first, 2)  # positions 1, 2
    publish(second)  # 3
    publish(first)  # 4
    page = gql(PAGE, {"org": organization.pk}, token=editor).ok()["logs"]
    assert page["streamCursor"] == journal.encode(organization.pk, 4)
    cursors = {edge["node"]["id"]: edge["node"]["cursor"] for edge in page["edges"]}
    assert cursors == {
        str(first.pk): journal.encode(organization.pk, 4),
        str(second.pk): journal.encode(organization.pk, 3),
    }


def test_an_organization_without_events_starts_at_zero_and_no_organization_has_none(
    gql, editor, organization
):
    page = gql(PAGE, {"org": organization.pk}, token=editor).ok()["logs"]
    assert page["streamCursor"] == journal.encode(organization.pk, 0)
    assert gql(PAGE, {}, token=editor).ok()["logs"]["streamCursor"] is None


def test_a_run_whose_events_were_purged_has_the_oldest_cursor(gql, editor, organization):
    rule = AutomationRuleFactory(organization=organization)
    old, new = AutomationLogFactory(rule=rule), AutomationLogFactory(rule=rule)
    publish(old)
    publish(new, 2)
    StreamEvent.objects.filter(position=1).delete()  # as retention does, oldest first
    page = gql(PAGE, {"org": organization.pk}, token=editor).ok()["logs"]
    cursors = {edge["node"]["id"]: edge["node"]["cursor"] for edge in page["edges"]}
    # No event of `old` after position 1 exists: 1 orders it as its real last event did.
    assert cursors[str(old.pk)] == journal.encode(organization.pk, 1)
    assert cursors[str(new.pk)] == journal.encode(organization.pk, 3)


def test_cursors_of_a_page_cost_one_query_and_none_when_not_asked(gql, editor, organization):
    from django.db import connection

    rule = AutomationRuleFactory(organization=organization)
    for log in [AutomationLogFactory(rule=rule) for _ in range(5)]:
        publish(log)
    plain = "query($org: ID) { logs(organization: $org) { edges { node { id seq } } } }"
    gql(plain, {"org": organization.pk}, token=editor).ok()  # the token's first use is written
    with CaptureQueriesContext(connection) as without:
        gql(plain, {"org": organization.pk}, token=editor).ok()
    with CaptureQueriesContext(connection) as with_cursors:
        gql(PAGE, {"org": organization.pk}, token=editor).ok()
    # streamCursor: the head; cursor: every run's latest event at once.
    assert len(with_cursors) == len(without) + 2
    assert not any("streamevent" in query["sql"].lower() for query in without.captured_queries)
