"""Log queries: keyset pagination stable under inserts, filters, typed traces and action logs."""

import datetime

import pytest
from django.utils import timezone

from automation.core.choices import RunStatus, TriggerType
from tests.factories import AutomationLogFactory, AutomationRuleFactory, MembershipFactory

pytestmark = pytest.mark.django_db

PAGE = """query($first: Int, $after: String, $filter: LogFilter) {
  logs(first: $first, after: $after, filter: $filter) {
    totalCount
    pageInfo { hasNextPage endCursor }
    edges { cursor node { id status createdAt } }
  }
}"""


def test_pagination_while_logs_are_inserted_has_no_duplicates_and_no_gaps(
    gql, editor, organization
):
    rule = AutomationRuleFactory(organization=organization)
    base = timezone.now() - datetime.timedelta(hours=1)
    # Some logs share a created_at, so the id must break ties.
    original = [
        AutomationLogFactory(rule=rule, created_at=base + datetime.timedelta(seconds=index // 3))
        for index in range(25)
    ]
    seen, after, pages = [], None, 0
    while True:
        page = gql(PAGE, {"first": 7, "after": after}, token=editor).ok()["logs"]
        seen.extend(edge["node"]["id"] for edge in page["edges"])
        pages += 1
        # New runs arrive between pages (newer than everything seen).
        AutomationLogFactory(rule=rule)
        AutomationLogFactory(rule=rule)
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert pages == 4
    assert len(seen) == len(set(seen)), "duplicates"
    expected = [
        str(log.pk)
        for log in sorted(original, key=lambda log: (log.created_at, log.pk), reverse=True)
    ]
    assert seen == expected


def test_newest_first_total_count_and_first_cap(gql, editor, organization):
    rule = AutomationRuleFactory(organization=organization)
    old = AutomationLogFactory(rule=rule, created_at=timezone.now() - datetime.timedelta(days=1))
    new = AutomationLogFactory(rule=rule)
    page = gql(PAGE, {"first": 1}, token=editor).ok()["logs"]
    assert page["totalCount"] == 2
    assert [e["node"]["id"] for e in page["edges"]] == [str(new.pk)]
    rest = gql(PAGE, {"first": 5, "after": page["pageInfo"]["endCursor"]}, token=editor).ok()[
        "logs"
    ]
    assert [e["node"]["id"] for e in rest["edges"]] == [str(old.pk)]
    assert rest["pageInfo"] == {"hasNextPage": False, "endCursor": rest["edges"][0]["cursor"]}

    error = gql(PAGE, {"first": 201}, token=editor).error()
    assert error["extensions"] == {
        "code": "VALIDATION_ERROR",
        "fields": {"first": ["Must be between 0 and 200."]},
    }
    bad_cursor = gql(PAGE, {"first": 5, "after": "garbage!"}, token=editor).error()
    assert bad_cursor["extensions"]["fields"] == {"after": ["Invalid cursor."]}


def test_log_filter(gql, editor, organization):
    rule = AutomationRuleFactory(organization=organization)
    other_rule = AutomationRuleFactory(organization=organization, manual_rule=True)
    failed = AutomationLogFactory(rule=rule, status=RunStatus.FAILED, object_id="7")
    succeeded = AutomationLogFactory(rule=rule, status=RunStatus.SUCCEEDED, object_id="8")
    manual = AutomationLogFactory(
        rule=other_rule, trigger=TriggerType.MANUAL, status=RunStatus.FAILED
    )

    def ids(log_filter):
        page = gql(PAGE, {"filter": log_filter}, token=editor).ok()["logs"]
        return {edge["node"]["id"] for edge in page["edges"]}

    assert ids({"rule": str(rule.pk)}) == {str(failed.pk), str(succeeded.pk)}
    assert ids({"statuses": ["FAILED"]}) == {str(failed.pk), str(manual.pk)}
    assert ids({"trigger": "MANUAL"}) == {str(manual.pk)}
    assert ids({"objectType": "catalog.product", "objectId": "8"}) == {str(succeeded.pk)}
    assert (
        ids({"createdAfter": (timezone.now() + datetime.timedelta(minutes=1)).isoformat()}) == set()
    )
    assert (
        len(ids({"createdBefore": (timezone.now() + datetime.timedelta(minutes=1)).isoformat()}))
        == 3
    )


def test_dry_runs_are_filtered_and_paged_with_stable_cursors(gql, editor, organization):
    rule = AutomationRuleFactory(organization=organization)
    base = timezone.now() - datetime.timedelta(hours=1)
    # Real and dry runs interleaved, some sharing a created_at, so cursors cross both kinds.
    logs = [
        AutomationLogFactory(
            rule=rule,
            dry_run=index % 3 == 0,
            created_at=base + datetime.timedelta(seconds=index // 2),
        )
        for index in range(12)
    ]

    def newest_first(kept):
        return [
            str(log.pk)
            for log in sorted(kept, key=lambda log: (log.created_at, log.pk), reverse=True)
        ]

    def walk(log_filter):
        seen, after = [], None
        while True:
            variables = {"first": 2, "after": after, "filter": log_filter}
            page = gql(PAGE, variables, token=editor).ok()["logs"]
            seen.extend(edge["node"]["id"] for edge in page["edges"])
            total = page["totalCount"]
            if not page["pageInfo"]["hasNextPage"]:
                return seen, total
            after = page["pageInfo"]["endCursor"]

    dry = [log for log in logs if log.dry_run]
    real = [log for log in logs if not log.dry_run]
    assert walk({"dryRun": True}) == (newest_first(dry), 4)
    assert walk({"dryRun": False}) == (newest_first(real), 8)
    assert walk({"dryRun": None}) == (newest_first(logs), 12)
    assert walk({}) == (newest_first(logs), 12)
    assert walk({"dryRun": True, "rule": str(rule.pk)}) == (newest_first(dry), 4)


def test_trace_and_action_logs_are_typed(gql, editor, organization):
    rule = AutomationRuleFactory(organization=organization)
    parent = AutomationLogFactory(rule=rule)
    log = AutomationLogFactory(
        rule=rule,
        parent_log=parent,
        root_log=parent,
        depth=1,
        status=RunStatus.PARTIAL,
        conditions_met=True,
        condition_trace=[
            {
                "path": "conditions.groups.1.conditions.0",
                "field": "stock",
                "operator": "LESS_THAN",
                "expected": 5,
                "actual": 3,
                "passed": True,
                "error": None,
            }
        ],
        action_logs=[
            {
                "order": 0,
                "action_type": "CALL_WEBHOOK",
                "status": "FAILED",
                "attempt": 3,
                "started_at": "2026-01-01T10:00:00+00:00",
                "finished_at": "2026-01-01T10:00:01.500000+00:00",
                "duration_ms": 1500.0,
                "result": {"status_code": 502},
                "error": "HTTP 502",
            }
        ],
        started_at=timezone.now() - datetime.timedelta(seconds=2),
        finished_at=timezone.now(),
    )
    data = gql(
        """query($id: ID!) { log(id: $id) {
            id status depth conditionsMet objectType durationMs parentLog { id } rootLog { id }
            conditionTrace { path field operator expected actual passed error }
            actionLogs { order actionType status attempt startedAt finishedAt durationMs result error }
        } }""",
        {"id": str(log.pk)},
        token=editor,
    ).ok()["log"]
    assert data["status"] == "PARTIAL"
    assert data["parentLog"] == {"id": str(parent.pk)} == data["rootLog"]
    assert data["objectType"] == "catalog.product"
    assert 1900 < data["durationMs"] < 2500
    assert data["conditionTrace"] == [
        {
            "path": "conditions.groups.1.conditions.0",
            "field": "stock",
            "operator": "LESS_THAN",
            "expected": 5,
            "actual": 3,
            "passed": True,
            "error": None,
        }
    ]
    action = data["actionLogs"][0]
    assert action["actionType"] == "CALL_WEBHOOK"
    assert action["status"] == "FAILED"
    assert action["attempt"] == 3
    assert action["startedAt"].startswith("2026-01-01T10:00:00")
    assert action["durationMs"] == 1500.0
    assert action["result"] == {"status_code": 502}
    assert action["error"] == "HTTP 502"


# --- At scale (issue 24): counts only when asked and capped, lists read per value ------------

COUNTED = """query($org: ID, $filter: LogFilter, $first: Int) {
  logs(organization: $org, filter: $filter, first: $first) {
    totalCount totalCountExact edges { node { id } }
  }
}"""


def _logs_sql(captured) -> list[str]:
    return [q["sql"] for q in captured if "automation_automationlog" in q["sql"]]


def test_total_count_is_exact_up_to_its_cap_then_says_at_least(
    gql, editor, organization, monkeypatch
):
    from graphql_api import pagination

    monkeypatch.setattr(pagination, "TOTAL_COUNT_CAP", 3)
    rule = AutomationRuleFactory(organization=organization)
    for status in ("FAILED", "FAILED", "PARTIAL", "PARTIAL", "SUCCEEDED"):
        AutomationLogFactory(rule=rule, status=status)
    org = str(organization.pk)

    def count(log_filter):
        page = gql(COUNTED, {"org": org, "filter": log_filter, "first": 1}, token=editor).ok()
        return page["logs"]["totalCount"], page["logs"]["totalCountExact"]

    assert count({}) == (3, False)  # 5 match: "at least 3"
    assert count({"statuses": ["FAILED"]}) == (2, True)
    assert count({"statuses": ["SUCCEEDED", "FAILED"]}) == (3, True)  # two parts, 1 + 2
    assert count({"statuses": ["FAILED", "PARTIAL"]}) == (3, False)  # 2 + 2, past the cap
    assert count({"statuses": []}) == (0, True)


def test_a_page_counts_only_when_total_count_is_selected(gql, editor, organization):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    rule = AutomationRuleFactory(organization=organization)
    AutomationLogFactory(rule=rule)
    plain = """query($org: ID) { logs(organization: $org, first: 5) { edges { node { id } } } }"""
    with CaptureQueriesContext(connection) as captured:
        gql(plain, {"org": str(organization.pk)}, token=editor).ok()
    assert [sql for sql in _logs_sql(captured) if "COUNT(" in sql] == []
    with CaptureQueriesContext(connection) as captured:
        page = gql(COUNTED, {"org": str(organization.pk)}, token=editor).ok()["logs"]
    counts = [sql for sql in _logs_sql(captured) if "COUNT(" in sql]
    assert len(counts) == 1 and "LIMIT 10001" in counts[0]  # bounded, and run once for both
    assert (page["totalCount"], page["totalCountExact"]) == (1, True)


def test_lists_of_statuses_and_organizations_page_newest_first_across_values(
    gql, make_member, organization, other_organization
):
    """Each status (and each organization) is read on its own and merged: the merged pages
    are the same newest-first walk an IN list gave, ties on created_at broken by id."""
    from accounts.choices import Role

    user = make_member(organization, Role.VIEWER)
    MembershipFactory(user=user, organization=other_organization, role=Role.VIEWER)
    rules = [AutomationRuleFactory(organization=org) for org in (organization, other_organization)]
    base = timezone.now() - datetime.timedelta(hours=1)
    logs = []
    for index in range(18):
        rule = rules[index % 2]
        status = ("FAILED", "PARTIAL", "SUCCEEDED")[index // 2 % 3]
        when = base + datetime.timedelta(seconds=index // 4)  # ties across statuses and orgs
        logs.append(AutomationLogFactory(rule=rule, status=status, created_at=when))

    def walk(variables):
        seen, after = [], None
        while True:
            page = gql(PAGE, {**variables, "first": 4, "after": after}, token=user).ok()["logs"]
            seen.extend(edge["node"]["id"] for edge in page["edges"])
            if not page["pageInfo"]["hasNextPage"]:
                return seen
            after = page["pageInfo"]["endCursor"]

    def newest_first(kept):
        ordered = sorted(kept, key=lambda log: (log.created_at, log.pk), reverse=True)
        return [str(log.pk) for log in ordered]

    wanted = {"FAILED", "PARTIAL"}
    assert walk({"filter": {"statuses": ["FAILED", "PARTIAL", "FAILED"]}}) == newest_first(
        [log for log in logs if log.status in wanted]
    )
    assert walk({}) == newest_first(logs)  # both organizations, merged


def test_object_id_alone_matches_that_id_of_every_automatable_model(gql, editor, organization):
    from django.contrib.contenttypes.models import ContentType

    from catalog.models import Category

    rule = AutomationRuleFactory(organization=organization)
    product_run = AutomationLogFactory(rule=rule, object_id="5")
    category_run = AutomationLogFactory(
        rule=rule, object_id="5", content_type=ContentType.objects.get_for_model(Category)
    )
    AutomationLogFactory(rule=rule, object_id="6")
    page = gql(PAGE, {"filter": {"objectId": "5"}}, token=editor).ok()["logs"]
    assert [edge["node"]["id"] for edge in page["edges"]] == [
        str(category_run.pk),
        str(product_run.pk),
    ]
    assert page["totalCount"] == 2


def test_a_rule_of_another_organization_than_the_one_asked_for_has_no_logs_there(
    gql, make_member, organization, other_organization
):
    from accounts.choices import Role

    user = make_member(organization, Role.VIEWER)
    MembershipFactory(user=user, organization=other_organization, role=Role.VIEWER)
    theirs = AutomationRuleFactory(organization=other_organization)
    AutomationLogFactory(rule=theirs)
    asked = {"org": str(organization.pk), "filter": {"rule": str(theirs.pk)}}
    assert gql(COUNTED, asked, token=user).ok()["logs"] == {
        "totalCount": 0,
        "totalCountExact": True,
        "edges": [],
    }
    asked["org"] = str(other_organization.pk)
    assert gql(COUNTED, asked, token=user).ok()["logs"]["totalCount"] == 1


def test_a_rule_moved_to_another_organization_does_not_show_the_old_one_s_logs(
    gql, make_member, organization, other_organization
):
    """The admin can move a rule; its earlier logs stay in the organization that ran them."""
    from accounts.choices import Role

    rule = AutomationRuleFactory(organization=organization)
    AutomationLogFactory(rule=rule)
    rule.organization = other_organization
    rule.save()
    newcomer = make_member(other_organization, Role.VIEWER)
    variables = {"org": str(other_organization.pk), "filter": {"rule": str(rule.pk)}}
    assert gql(COUNTED, variables, token=newcomer).ok()["logs"]["edges"] == []
    del variables["org"]
    assert gql(COUNTED, variables, token=newcomer).ok()["logs"]["totalCount"] == 0
