"""Every documented `logs` filter reads an index range in the keyset's order, on the database
the suite runs against (PostgreSQL with DATABASE_URL, SQLite without): the query plan of each
page, first and after a cursor, has an index scan bounded by the filter (and by the cursor), no
sort and no scan of the whole table; so do the bounded count and the purge's walk (issue 24).

The logs are the benchmark's (bench/log_data.py), 20,000 on PostgreSQL with fresh statistics
(ANALYZE), as the planner sees a busy organization's table; 2,000 on SQLite, which keeps no
statistics (the embedded server never runs ANALYZE) and plans from the indexes alone.
"""

import json
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from automation.core.models import AutomationLog
from automation.runs.retention import purge_logs
from bench import log_data
from tests.factories import AutomationRuleFactory

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

POSTGRES = connection.vendor == "postgresql"
TABLE = AutomationLog._meta.db_table
PAGE = """query($org: ID, $filter: LogFilter, $after: String) {
  logs(organization: $org, filter: $filter, first: 50, after: $after) {
    totalCount edges { node { id rule { name } } } pageInfo { endCursor }
  }
}"""
# Logs few enough for PostgreSQL to sort after reading them through the filter's index.
FEW = 1_000
# (filter, the indexes that serve it): every filter the README's logs section documents.
FILTERS = {
    "none": ({}, {"log_org_created_idx"}),
    "rule": ({"rule": "RULE"}, {"log_rule_org_idx"}),
    "one status": ({"statuses": ["FAILED"]}, {"log_org_status_idx"}),
    "statuses": ({"statuses": ["FAILED", "PARTIAL"]}, {"log_org_status_idx"}),
    "trigger": ({"trigger": "WEBHOOK"}, {"log_org_trigger_idx"}),
    "objectType": ({"objectType": "catalog.category"}, {"log_type_idx"}),
    "record": ({"objectType": "catalog.product", "objectId": "17"}, {"log_record_idx"}),
    "objectId": ({"objectId": "17"}, {"log_record_idx"}),
    "createdAfter": ({"createdAfter": "2000-01-01T00:00:00Z"}, {"log_org_created_idx"}),
    "createdBefore": ({"createdBefore": "2100-01-01T00:00:00Z"}, {"log_org_created_idx"}),
    "dryRun": ({"dryRun": True}, {"log_org_dry_run_idx"}),
    # Nearly every log is a real run: either index is a bounded range with few rows filtered.
    "real runs": ({"dryRun": False}, {"log_org_dry_run_idx", "log_org_created_idx"}),
}


@pytest.fixture
def table(organization, editor):
    rules = [AutomationRuleFactory(organization=organization) for _ in range(20)]
    log_data.fill_logs(
        organization, [rule.pk for rule in rules], 20_000 if POSTGRES else 2_000, days=40
    )
    log_data.analyze()
    return rules


def reads(captured) -> list[str]:
    """The statements that read logs in the keyset's order (the page, its parts), or count."""
    return [
        query["sql"]
        for query in captured
        if f'"{TABLE}"' in query["sql"] and ("LIMIT" in query["sql"] or "COUNT(" in query["sql"])
    ]


def plan(sql: str) -> list[dict]:
    """Each node of the plan: {"type", "index", "cond", "table"} (PostgreSQL), or each line of
    SQLite's EXPLAIN QUERY PLAN as {"type": the line}."""
    with connection.cursor() as cursor:
        if not POSTGRES:
            cursor.execute("EXPLAIN QUERY PLAN " + sql)
            return [{"type": row[-1]} for row in cursor.fetchall()]
        cursor.execute("EXPLAIN (FORMAT JSON) " + sql)
        found = []

        def walk(node):
            found.append(
                {
                    "type": node["Node Type"],
                    "index": node.get("Index Name"),
                    "cond": node.get("Index Cond", ""),
                    "table": node.get("Relation Name"),
                    "rows": node.get("Plan Rows"),
                }
            )
            for child in node.get("Plans", ()):
                walk(child)

        raw = cursor.fetchone()[0]
        walk((json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"])
        return found


def assert_bounded_index_read(sql: str, indexes: set, after_cursor: bool = False) -> None:
    """The statement reads the logs only through `indexes`, in their order (no sort), and,
    `after_cursor`, from the cursor on: the row value (created_at, id) bounds the index scan
    (SQLite shows its first column)."""
    nodes = plan(sql)
    shown = json.dumps(nodes, indent=1)
    if POSTGRES:
        scans = [node for node in nodes if node["table"] == TABLE]
        assert scans, shown
        for node in scans:
            assert node["type"] in ("Index Scan", "Index Only Scan"), shown
            assert node["index"] in indexes, shown
            assert not after_cursor or "ROW(created_at, id) <" in node["cond"], shown
        # No sort (a Merge Append merges ordered parts), unless the planner expects so few logs
        # in the filter's range that reading them all and sorting is cheaper (a record with a
        # short history): then the range is small, and with more logs it reads in order.
        if [node for node in nodes if "Sort" in node["type"]]:
            assert all(node["rows"] <= FEW for node in scans), shown
        return
    lines = [node["type"] for node in nodes]
    scans = [line for line in lines if re.search(rf"\b{TABLE}\b", line)]
    assert scans, shown
    for line in scans:
        match = re.match(rf"SEARCH {TABLE} USING (?:COVERING )?INDEX (\w+) \((.*)\)", line)
        assert match and match.group(1) in indexes, shown
        assert not after_cursor or "created_at<" in match.group(2), shown
    if "UNION ALL" not in sql:
        assert not [line for line in lines if "TEMP B-TREE" in line], shown


def test_each_documented_filter_reads_an_index_range_first_and_after_a_cursor(
    gql, editor, organization, table, subtests
):
    """One table for all filters (filling it is most of the test's time)."""
    for name, (log_filter, indexes) in FILTERS.items():
        with subtests.test(filter=name):
            if log_filter.get("rule") == "RULE":
                log_filter = {"rule": str(table[3].pk)}
            check_pages(gql, editor, organization, log_filter, indexes)


def check_pages(gql, editor, organization, log_filter, indexes):
    variables = {"org": str(organization.pk), "filter": log_filter}
    with CaptureQueriesContext(connection) as captured:
        first = gql(PAGE, variables, token=editor).ok()["logs"]
    assert first["edges"]  # the data exercises the filter
    *pages, count = reads(captured.captured_queries)
    assert pages and "COUNT(" in count
    for sql in pages:
        assert_bounded_index_read(sql, indexes)
    assert_bounded_count(count)

    variables["after"] = first["pageInfo"]["endCursor"]
    with CaptureQueriesContext(connection) as captured:
        gql(PAGE, variables, token=editor).ok()
    *pages, _ = reads(captured.captured_queries)
    for sql in pages:
        assert_bounded_index_read(sql, indexes, after_cursor=True)


def assert_bounded_count(sql: str) -> None:
    """The count stops at its cap: a LIMIT under the aggregate (PostgreSQL), an index search
    under the counted subquery (SQLite)."""
    nodes = plan(sql)
    shown = json.dumps(nodes, indent=1)
    if POSTGRES:
        assert [node for node in nodes if node["type"] == "Limit"], shown
    else:
        assert not [node for node in nodes if f"SCAN {TABLE}" in node["type"]], shown


def test_the_purge_walks_the_expiry_index_without_sorting(table):
    with CaptureQueriesContext(connection) as captured:
        assert sum(purge_logs(batch_size=200).values()) > 200
    walks = [
        query["sql"]
        for query in captured.captured_queries
        if "UNION ALL" in query["sql"] and '"status"' in query["sql"] and "LIMIT" in query["sql"]
    ]
    assert len(walks) > 1  # batches
    for sql in walks:
        assert_bounded_index_read(sql, {"log_expiry_idx"})
    assert_bounded_index_read(walks[-1], {"log_expiry_idx"}, after_cursor=True)
