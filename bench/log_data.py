"""Run logs by the hundred thousand, fast: one INSERT ... SELECT over a number series per call.

Benchmark 9 and the plan tests (tests/integration/test_log_plans.py) need tables of run logs as
a busy organization has them: some 1.1 KB of JSON a row, 20 rules, a month and more of history,
mostly SUCCEEDED, a few FAILED, PARTIAL and dry runs, chains and retries. Saving them one by one
takes minutes; here the database makes the rows itself (PostgreSQL: generate_series, SQLite: a
recursive CTE), about 200,000 a minute on 2 cores. Row n of a fill is newer than row n - 1 and
has the next id, as the engine writes them; its fields come from n, spread so that filters of
one value select what the comments say.
"""

import datetime
import json

from django.contrib.contenttypes.models import ContentType
from django.db import connection, transaction

from automation.core.models import AutomationLog
from automation.core.system_models import StreamEvent, StreamHead

# Shares of the rows, in hundredths, from (n * a prime) % 100.
STATUSES = (  # 78 % SUCCEEDED, 12 % SKIPPED, 5 % FAILED, 5 % PARTIAL
    (78, "SUCCEEDED"),
    (90, "SKIPPED"),
    (95, "FAILED"),
    (100, "PARTIAL"),
)
TRIGGERS = ((85, "EVENT"), (95, "SCHEDULE"), (98, "WEBHOOK"), (100, "MANUAL"))
DRY_RUN_EVERY = 100  # 1 % dry runs
CATEGORY_EVERY = 10  # 10 % of the runs are about a category, the rest about a product
RECORDS = 200  # object ids 1..200: a record has a page of runs or more at 20,000 logs
CHAIN_EVERY = 50  # every 50th run was caused by the run before it (parent and root)
RETRY_EVERY = 200  # and every 200th retries the run 5 before it

CONTEXT = {
    "object": {
        "id": 1,
        "name": "Watering can, galvanised steel, 10 litres",
        "description": "A sturdy can for the garden. " * 12,
        "status": "ACTIVE",
        "price": "12.50",
        "stock": 3,
        "category": 1,
        "created_at": "2026-12-02T09:52:24.958207+00:00",
        "updated_at": "2026-12-02T09:52:31.621256+00:00",
    },
    "user": {"id": 1, "username": "alice"},
}
ACTION_LOGS = [
    {
        "order": 0,
        "action_type": "UPDATE_RECORD",
        "status": "SUCCEEDED",
        "attempt": 1,
        "duration_ms": 16.234,
        "result": {"model": "catalog.product", "id": 1, "updated": ["description"]},
        "error": None,
    },
    {
        "order": 1,
        "action_type": "CALL_WEBHOOK",
        "status": "SUCCEEDED",
        "attempt": 1,
        "duration_ms": 120.5,
        "result": {"status_code": 200, "url": "https://hooks.example.com/services/T000/B000"},
        "error": None,
    },
]
TRACE = [
    {
        "path": "conditions.conditions.0",
        "field": "stock",
        "operator": "LESS_THAN",
        "expected": 5,
        "actual": 3,
        "passed": True,
        "error": None,
    }
]
CHANGES = {"stock": {"old": 10, "new": 3}}
FAILURE = "Action 2 of 2 (actions.1, CALL_WEBHOOK) failed: HTTP 502"


def fill_logs(organization, rule_ids: list[int], count: int, *, days: float, now=None) -> None:
    """`count` finished logs of `organization`'s rules, created evenly over the `days` before
    `now` (the newest at `now`), in one statement."""
    now = now or datetime.datetime.now(datetime.UTC)
    start = now - datetime.timedelta(days=days)
    step_us = days * 86_400_000_000 / count
    product, category = (
        ContentType.objects.get(app_label="catalog", model=model).pk
        for model in ("product", "category")
    )
    base = (AutomationLog.objects.order_by("-pk").values_list("pk", flat=True).first() or 0) + 1
    postgres = connection.vendor == "postgresql"
    jsonb = "::jsonb" if postgres else ""
    n = "n"
    created = (
        f"(%s::timestamptz + ({n} * %s) * interval '1 microsecond')"
        if postgres
        else f"(strftime('%%Y-%%m-%%d %%H:%%M:%%S', (%s + {n} * %s) / 1000000, 'unixepoch') "
        f"|| printf('.%%06d', (%s + {n} * %s) %% 1000000))"
    )
    start_us = int(start.timestamp() * 1_000_000)
    created_params = [start, step_us] if postgres else [start_us, int(step_us)] * 2
    rules = ", ".join(f"({i}, {int(pk)})" for i, pk in enumerate(rule_ids))
    series = (
        "SELECT generate_series(1::bigint, %s::bigint) AS n"
        if postgres
        else "SELECT 1 AS n UNION ALL SELECT n + 1 FROM series WHERE n < %s"
    )
    table = connection.ops.quote_name(AutomationLog._meta.db_table)
    sql = f"""
        WITH RECURSIVE series(n) AS ({series}),
        rules(i, id) AS (VALUES {rules}),
        rows AS (
            SELECT n, {created} AS created_at,
                   ({n} * 7919) %% 100 AS s, ({n} * 104729) %% 100 AS t FROM series
        )
        INSERT INTO {table} (
            id, created_at, updated_at, organization_id, rule_id, trigger, event,
            content_type_id, object_id, status, seq, rule_revision, dry_run, conditions_met,
            condition_trace, changes, context, action_logs, error, depth, parent_log_id,
            root_log_id, retry_of_id, started_at, finished_at
        )
        SELECT %s + n, created_at, created_at, %s, rules.id,
            {_case("t", TRIGGERS)},
            CASE WHEN t < {TRIGGERS[0][0]} THEN 'UPDATED' END,
            CASE WHEN (n * 65537) %% {CATEGORY_EVERY} = 0 THEN %s ELSE %s END,
            CAST((n * 48271) %% {RECORDS} + 1 AS TEXT),
            {_case("s", STATUSES)},
            7, 1, (n * 31337) %% {DRY_RUN_EVERY} = 0, TRUE,
            %s{jsonb}, %s{jsonb}, %s{jsonb}, %s{jsonb},
            CASE WHEN s >= {STATUSES[1][0]} THEN %s ELSE '' END,
            CASE WHEN n %% {CHAIN_EVERY} = 0 THEN 1 ELSE 0 END,
            CASE WHEN n %% {CHAIN_EVERY} = 0 AND n > 1 THEN %s + n - 1 END,
            CASE WHEN n %% {CHAIN_EVERY} = 0 AND n > 1 THEN %s + n - 1 END,
            CASE WHEN n %% {RETRY_EVERY} = 7 AND n > 5 THEN %s + n - 5 END,
            created_at, created_at
        FROM rows JOIN rules ON rules.i = n %% {len(rule_ids)}
    """
    params = [
        count,
        *created_params,
        base,
        organization.pk,
        category,
        product,
        json.dumps(TRACE),
        json.dumps(CHANGES),
        json.dumps(CONTEXT),
        json.dumps(ACTION_LOGS),
        FAILURE,
        base,
        base,
        base,
    ]
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, params)
        if postgres:
            cursor.execute(
                f"SELECT setval(pg_get_serial_sequence('{AutomationLog._meta.db_table}', 'id'), "
                f"(SELECT MAX(id) FROM {table}))"
            )


def _case(column: str, shares) -> str:
    """The value whose share of 100 holds `column` (0-99)."""
    whens = " ".join(f"WHEN {column} < {upto} THEN '{value}'" for upto, value in shares[:-1])
    return f"CASE {whens} ELSE '{shares[-1][1]}' END"


def fill_journal(organization, count: int, *, hours: float, now=None) -> None:
    """`count` stream events of `organization` (about its newest logs), created evenly over
    the `hours` before `now`, after its stream's head."""
    now = now or datetime.datetime.now(datetime.UTC)
    newest = list(
        AutomationLog.objects.filter(organization=organization)
        .order_by("-created_at", "-id")
        .values_list("pk", "rule_id")[: max(count // 4, 1)]
    )
    head, _ = StreamHead.objects.get_or_create(organization_id=organization.pk)
    step = datetime.timedelta(hours=hours) / count
    StreamEvent.objects.bulk_create(
        (
            StreamEvent(
                organization_id=organization.pk,
                position=head.position + offset,
                kind=StreamEvent.LOG,
                log_id=newest[(count - offset) // 4 % len(newest)][0],
                rule_id=newest[(count - offset) // 4 % len(newest)][1],
                created_at=now - step * (count - offset),
                message='{"log":{"status":"SUCCEEDED"}}',
            )
            for offset in range(1, count + 1)
        ),
        batch_size=2_000,
    )
    StreamHead.objects.filter(pk=head.pk).update(position=head.position + count)


def analyze() -> None:
    """Fresh planner statistics on PostgreSQL, as autovacuum would have them a minute after a
    fill. Nothing on SQLite: the embedded server never runs ANALYZE, so neither does the bench
    (its plans come from the indexes alone)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {connection.ops.quote_name(AutomationLog._meta.db_table)}")
